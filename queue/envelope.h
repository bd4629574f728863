#pragma once

// The envelope of a spooled message: what the `meta` column family stores under the message id
// (docs/architecture.md "The spool"). The body lives in the `body` column family under the same
// key.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace sluice::queue {

enum class RecipientState : uint8_t { kPending = 0, kDelivered = 1, kBounced = 2 };
// "pending", "delivered", "bounced" ("unknown" for a value outside the enum).
const char* ToString(RecipientState state);

struct Recipient {
  std::string address;
  uint8_t notify = 0;  // RFC 3461 NOTIFY bits (smtp codec's value)
  std::string orcpt;   // RFC 3461 ORCPT, as received ("" = none)
  RecipientState state = RecipientState::kPending;
  uint32_t attempts = 0;
  std::string last_reply;

  bool operator==(const Recipient&) const = default;
};

struct Envelope {
  std::string sender;     // "" = null sender <>
  uint8_t body_type = 0;  // smtp BodyType value
  bool smtputf8 = false;
  uint8_t ret = 0;  // smtp Ret value
  std::string envid;
  std::string auth_param;  // MAIL FROM AUTH= (RFC 4954 §5)
  std::vector<Recipient> recipients;
  uint64_t received_at_us = 0;
  uint64_t next_due_us = 0;
  uint64_t expires_at_us = 0;
  uint64_t body_size = 0;
  std::string client_ip;
  std::string helo;
  std::string auth_user;
  std::string listener;
  bool tls = false;
  uint32_t attempts = 0;

  bool operator==(const Envelope&) const = default;
};

// Binary format, version 1. varint = unsigned LEB128 (at most 10 bytes), str = varint length then
// the bytes. All multi-byte integers are varints; the format has no padding and no trailing data.
//
//   u8  version (= 1)
//   u8  flags: bit 0 smtputf8, bit 1 tls; other bits must be 0
//   u8  body_type
//   u8  ret
//   str sender, str envid, str auth_param
//   varint received_at_us, next_due_us, expires_at_us, body_size, attempts
//   str client_ip, str helo, str auth_user, str listener
//   varint recipient count, then per recipient:
//     str address, u8 notify, str orcpt, u8 state (0..2), varint attempts, str last_reply
//
// A new field means a new version number; DecodeEnvelope keeps reading every older version.
std::string EncodeEnvelope(const Envelope& envelope);

// Rejects truncated, overlong or otherwise malformed input with an Error; never crashes and never
// allocates more than the input size justifies.
Result<Envelope> DecodeEnvelope(std::string_view data);

}  // namespace sluice::queue
