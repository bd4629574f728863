#include "queue/envelope.h"

#include <limits>

namespace sluice::queue {
namespace {

constexpr uint8_t kVersion1 = 1;
constexpr uint8_t kFlagSmtputf8 = 1 << 0;
constexpr uint8_t kFlagTls = 1 << 1;
constexpr uint8_t kKnownFlags = kFlagSmtputf8 | kFlagTls;
// Smallest encoded recipient: empty address, notify, empty orcpt, state, attempts, empty reply.
constexpr size_t kMinRecipientBytes = 6;

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutString(std::string& out, std::string_view s) {
  PutVarint(out, s.size());
  out.append(s);
}

void PutByte(std::string& out, uint8_t b) {
  out.push_back(static_cast<char>(b));
}

// Reads from a view; the first failure sticks and every later read returns a zero value.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {
  }

  uint8_t Byte() {
    if (!Need(1))
      return 0;
    return static_cast<uint8_t>(data_[pos_++]);
  }

  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (!Need(1))
        return 0;
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      // The 10th byte may only carry the top bit of a 64-bit value.
      if (shift == 63 && b > 1)
        return Fail("varint overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0)
        return v;
    }
    return Fail("varint longer than 10 bytes");
  }

  uint32_t Varint32() {
    const uint64_t v = Varint();
    if (v > std::numeric_limits<uint32_t>::max())
      return static_cast<uint32_t>(Fail("u32 overflow"));
    return static_cast<uint32_t>(v);
  }

  std::string String() {
    const uint64_t n = Varint();
    if (!Need(n))
      return {};
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }

  size_t remaining() const {
    return data_.size() - pos_;
  }
  bool ok() const {
    return error_ == nullptr;
  }
  const char* error() const {
    return error_;
  }

  uint64_t Fail(const char* why) {
    if (error_ == nullptr)
      error_ = why;
    pos_ = data_.size();
    return 0;
  }

 private:
  bool Need(uint64_t n) {
    if (error_ != nullptr)
      return false;
    if (n > remaining()) {
      Fail("truncated");
      return false;
    }
    return true;
  }

  std::string_view data_;
  size_t pos_ = 0;
  const char* error_ = nullptr;
};

}  // namespace

const char* ToString(RecipientState state) {
  switch (state) {
    case RecipientState::kPending:
      return "pending";
    case RecipientState::kDelivered:
      return "delivered";
    case RecipientState::kBounced:
      return "bounced";
  }
  return "unknown";
}

std::string EncodeEnvelope(const Envelope& e) {
  std::string out;
  size_t estimate = 64 + e.sender.size() + e.envid.size() + e.auth_param.size() +
                    e.client_ip.size() + e.helo.size() + e.auth_user.size() + e.listener.size();
  for (const Recipient& r : e.recipients) {
    estimate += 16 + r.address.size() + r.orcpt.size() + r.last_reply.size();
  }
  out.reserve(estimate);
  PutByte(out, kVersion1);
  PutByte(out, static_cast<uint8_t>((e.smtputf8 ? kFlagSmtputf8 : 0) | (e.tls ? kFlagTls : 0)));
  PutByte(out, e.body_type);
  PutByte(out, e.ret);
  PutString(out, e.sender);
  PutString(out, e.envid);
  PutString(out, e.auth_param);
  PutVarint(out, e.received_at_us);
  PutVarint(out, e.next_due_us);
  PutVarint(out, e.expires_at_us);
  PutVarint(out, e.body_size);
  PutVarint(out, e.attempts);
  PutString(out, e.client_ip);
  PutString(out, e.helo);
  PutString(out, e.auth_user);
  PutString(out, e.listener);
  PutVarint(out, e.recipients.size());
  for (const Recipient& r : e.recipients) {
    PutString(out, r.address);
    PutByte(out, r.notify);
    PutString(out, r.orcpt);
    PutByte(out, static_cast<uint8_t>(r.state));
    PutVarint(out, r.attempts);
    PutString(out, r.last_reply);
  }
  return out;
}

Result<Envelope> DecodeEnvelope(std::string_view data) {
  Reader in(data);
  const uint8_t version = in.Byte();
  if (!in.ok())
    return MakeError("envelope: empty record");
  if (version != kVersion1) {
    return MakeError("envelope: unknown format version " + std::to_string(version));
  }
  Envelope e;
  const uint8_t flags = in.Byte();
  if ((flags & ~kKnownFlags) != 0)
    in.Fail("unknown flag bits");
  e.smtputf8 = (flags & kFlagSmtputf8) != 0;
  e.tls = (flags & kFlagTls) != 0;
  e.body_type = in.Byte();
  e.ret = in.Byte();
  e.sender = in.String();
  e.envid = in.String();
  e.auth_param = in.String();
  e.received_at_us = in.Varint();
  e.next_due_us = in.Varint();
  e.expires_at_us = in.Varint();
  e.body_size = in.Varint();
  e.attempts = in.Varint32();
  e.client_ip = in.String();
  e.helo = in.String();
  e.auth_user = in.String();
  e.listener = in.String();
  const uint64_t count = in.Varint();
  // Bound the reservation by what the remaining bytes can hold, so garbage cannot make us allocate.
  if (in.ok() && count > in.remaining() / kMinRecipientBytes)
    in.Fail("recipient count too large");
  if (in.ok())
    e.recipients.reserve(count);
  for (uint64_t i = 0; in.ok() && i < count; ++i) {
    Recipient& r = e.recipients.emplace_back();
    r.address = in.String();
    r.notify = in.Byte();
    r.orcpt = in.String();
    const uint8_t state = in.Byte();
    if (state > static_cast<uint8_t>(RecipientState::kBounced))
      in.Fail("bad recipient state");
    r.state = static_cast<RecipientState>(state);
    r.attempts = in.Varint32();
    r.last_reply = in.String();
  }
  if (in.ok() && in.remaining() != 0)
    in.Fail("trailing bytes");
  if (!in.ok())
    return MakeError(std::string("envelope: ") + in.error());
  return e;
}

}  // namespace sluice::queue
