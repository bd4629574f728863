#pragma once

// A spool record set aside because it cannot be read: an envelope that does not decode, or a key
// that is not a message id. sluiced moves such a record at start, with its body, from the `meta`
// and `body` column families to `quarantine` (one synced batch), so that one bad record neither
// stops the relay nor is silently dropped. `sluicectl quarantine` lists, shows and exports them.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "queue/message_id.h"

namespace sluice::queue {

struct QuarantinedRecord {
  std::string key;  // the record's key in `meta`: 16 bytes for a message id
  uint64_t quarantined_at_us = 0;
  std::string reason;  // why it could not be read
  std::string meta;    // the stored envelope bytes, as found
  bool has_body = false;
  std::string body;  // the stored body, if there was one under the key

  // The message id when the key is one.
  std::optional<MessageId> id() const {
    return MessageId::FromKey(key);
  }
  // The id as printed in "queued as", or "x" and the key in hex for a key that is not an id.
  std::string Name() const;
};

// The value stored under the record's key in the quarantine family (versioned, length-prefixed).
std::string EncodeQuarantined(const QuarantinedRecord& record);
Result<QuarantinedRecord> DecodeQuarantined(std::string_view key, std::string_view value);

// The key that QuarantinedRecord::Name() printed; nullopt if it is neither form.
std::optional<std::string> QuarantineKeyFromName(std::string_view name);

}  // namespace sluice::queue
