#pragma once

// Minimal JSON output for sluicectl: strings escaped per RFC 8259 §7 (control characters as
// \u00XX), bytes that are not valid UTF-8 replaced by U+FFFD so the output is always valid JSON.

#include <cstdint>
#include <string>
#include <string_view>

#include "queue/envelope.h"
#include "queue/message_id.h"

namespace sluice::admin {

// Appends s as a quoted JSON string.
void AppendJsonString(std::string& out, std::string_view s);

// The whole envelope as one JSON object (one line), with the id.
std::string EnvelopeToJson(const queue::MessageId& id, const queue::Envelope& envelope);

// The `queue list --json` line: id, sender, recipients (addresses), size (body bytes),
// age (whole seconds since reception, relative to now_us).
std::string ListEntryToJson(const queue::MessageId& id, const queue::Envelope& envelope,
                            uint64_t now_us);

}  // namespace sluice::admin
