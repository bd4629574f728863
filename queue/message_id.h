#pragma once

// Message ids: 128 bits, time-sortable, unique across restarts without coordination
// (docs/architecture.md "The spool"). hi = unix microseconds;
// lo = node(16) << 48 | shard(16) << 32 | counter(32).

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::queue {

struct MessageId {
  uint64_t hi = 0;
  uint64_t lo = 0;

  // Crockford base32 (0-9 A-Z without I L O U), fixed 26 characters, upper case. The 128 bits are
  // written big-endian after two zero bits, so the strings sort exactly like the ids.
  std::string ToString() const;
  // Accepts what ToString() prints, lower case too, and Crockford's aliases (I/L = 1, O = 0).
  static std::optional<MessageId> Parse(std::string_view text);

  // RocksDB key: big-endian hi then lo, so bytewise key order is time order.
  std::array<char, 16> Key() const;
  static std::optional<MessageId> FromKey(std::string_view key);

  uint16_t node() const {
    return static_cast<uint16_t>(lo >> 48);
  }
  uint16_t shard() const {
    return static_cast<uint16_t>(lo >> 32);
  }
  uint32_t counter() const {
    return static_cast<uint32_t>(lo);
  }

  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const MessageId&) const = default;
};

// One per shard; not thread-safe. Ids are strictly increasing per generator: when the clock stands
// still or goes back, hi stays and the counter advances (hi + 1 if the counter would wrap at the
// same hi). The counter starts at a random value and never resets, so even a clock that went back
// across a restart collides only if it also lands on the same counter value.
class MessageIdGenerator {
 public:
  MessageIdGenerator(uint16_t node, uint16_t shard);
  // For tests: an injected wall clock in unix microseconds and a fixed counter start.
  MessageIdGenerator(uint16_t node, uint16_t shard, std::function<uint64_t()> now_us,
                     uint32_t counter_start);

  MessageId Next();

 private:
  std::function<uint64_t()> now_us_;
  uint64_t node_shard_;  // node << 48 | shard << 32
  uint32_t counter_;
  MessageId last_;
};

}  // namespace sluice::queue

template <>
struct std::hash<sluice::queue::MessageId> {
  size_t operator()(const sluice::queue::MessageId& id) const noexcept {
    return std::hash<uint64_t>()(id.hi ^ (id.lo * 0x9E3779B97F4A7C15ULL));
  }
};
