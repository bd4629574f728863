#include "queue/message_id.h"

#include <random>

#include "base/ascii.h"
#include "base/clock.h"

namespace sluice::queue {
namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr size_t kTextLength = 26;  // ceil(128 / 5)

// Value of a Crockford base32 digit, or -1.
int DigitValue(char c) {
  if (IsAsciiDigit(c))
    return c - '0';
  c = AsciiUpper(c);
  switch (c) {
    case 'O':
      return 0;
    case 'I':
    case 'L':
      return 1;
    case 'U':
      return -1;
    default:
      break;
  }
  for (int i = 10; i < 32; ++i) {
    if (kAlphabet[i] == c)
      return i;
  }
  return -1;
}

void PutBigEndian(uint64_t v, char* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

uint64_t GetBigEndian(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

}  // namespace

std::string MessageId::ToString() const {
  std::string out(kTextLength, '0');
  uint64_t h = hi;
  uint64_t l = lo;
  for (size_t i = kTextLength; i-- > 0;) {
    out[i] = kAlphabet[l & 31];
    l = (l >> 5) | (h << 59);
    h >>= 5;
  }
  return out;
}

std::optional<MessageId> MessageId::Parse(std::string_view text) {
  if (text.size() != kTextLength)
    return std::nullopt;
  uint64_t h = 0;
  uint64_t l = 0;
  for (size_t i = 0; i < kTextLength; ++i) {
    const int d = DigitValue(text[i]);
    if (d < 0)
      return std::nullopt;
    if (i == 0 && d > 7)
      return std::nullopt;  // 26 * 5 = 130 bits: the top two must be zero
    h = (h << 5) | (l >> 59);
    l = (l << 5) | static_cast<uint64_t>(d);
  }
  return MessageId{h, l};
}

std::array<char, 16> MessageId::Key() const {
  std::array<char, 16> key{};
  PutBigEndian(hi, key.data());
  PutBigEndian(lo, key.data() + 8);
  return key;
}

std::optional<MessageId> MessageId::FromKey(std::string_view key) {
  if (key.size() != 16)
    return std::nullopt;
  return MessageId{GetBigEndian(key.data()), GetBigEndian(key.data() + 8)};
}

MessageIdGenerator::MessageIdGenerator(uint16_t node, uint16_t shard)
    : MessageIdGenerator(node, shard, &UnixMicros, std::random_device()()) {
}

MessageIdGenerator::MessageIdGenerator(uint16_t node, uint16_t shard,
                                       std::function<uint64_t()> now_us, uint32_t counter_start)
    : now_us_(std::move(now_us)),
      node_shard_(static_cast<uint64_t>(node) << 48 | static_cast<uint64_t>(shard) << 32),
      counter_(counter_start) {
}

MessageId MessageIdGenerator::Next() {
  const uint64_t now = now_us_();
  ++counter_;  // wraps; never reset, see the header
  MessageId id{now > last_.hi ? now : last_.hi, node_shard_ | counter_};
  if (id <= last_) {
    // Same microsecond (or the clock went back) and the counter wrapped: move hi forward.
    id.hi = last_.hi + 1;
  }
  last_ = id;
  return id;
}

}  // namespace sluice::queue
