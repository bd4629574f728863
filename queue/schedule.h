#pragma once

// The schedule index and the queue counters: what the spool keeps beside every envelope so that
// delivery never has to hold the whole queue in memory and nobody has to scan it to count it
// (docs/architecture.md "The spool", "The active window").
//
// - `sched` column family: one key per queued message, prefix ‖ due ‖ id, written in the same
//   WriteBatch as the envelope whose next_due_us it mirrors. The prefix is the shard that made the
//   id (its owner), so each shard reads its own due work in due-time order with a seek.
// - `counters` column family: messages by state (scheduled: never attempted; deferred: attempted
//   and waiting) and by the minute they were received, in total and per recipient domain. The
//   writer keeps them in memory and writes their new values in the batch that changed them, so
//   they are exact after a crash too and loading them costs one pass over a few keys per domain.
//
// All of it is derived from the envelope alone (Placement), so the writer can compute the old
// and the new state of any message from what is stored.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "queue/envelope.h"
#include "queue/message_id.h"

namespace sluice::queue {

// The recipient's domain, lowercased (RFC 5321 §2.4): what follows the last '@'; "" when there is
// none (<postmaster>).
std::string DomainOf(std::string_view address);

// What the index and the counters record about one stored envelope.
struct Placement {
  uint64_t due_us = 0;       // next_due_us
  uint64_t received_us = 0;  // received_at_us
  bool deferred = false;     // attempted before (attempts > 0)
  // The distinct domains of the pending recipients, sorted. A message counts once per domain.
  std::vector<std::string> domains;

  bool operator==(const Placement&) const = default;
};
Placement PlacementOf(const Envelope& envelope);

// --- The schedule index ---------------------------------------------------------------------

inline constexpr size_t kScheduleKeySize = 2 + 8 + 16;
using ScheduleKey = std::array<char, kScheduleKeySize>;

// prefix (u16, big-endian) ‖ due_us (u64, big-endian) ‖ id.Key(): bytewise order is due order
// within a prefix, then id order.
ScheduleKey MakeScheduleKey(uint16_t prefix, uint64_t due_us, const MessageId& id);
inline ScheduleKey MakeScheduleKey(const MessageId& id, uint64_t due_us) {
  return MakeScheduleKey(id.shard(), due_us, id);
}

struct ScheduleEntry {
  uint16_t prefix = 0;
  uint64_t due_us = 0;
  MessageId id;

  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const ScheduleEntry&) const = default;
};
std::optional<ScheduleEntry> ParseScheduleKey(std::string_view key);

// One read of a prefix's due work (Spool::ScanDue): the keys in [from, until_due_us], in key
// order, at most `limit` of them, with their envelopes, all from one snapshot.
struct DueQuery {
  uint16_t prefix = 0;
  uint64_t from_due_us = 0;
  MessageId from_id;
  uint64_t until_due_us = 0;
  size_t limit = 1000;
};
struct DueMessage {
  MessageId id;
  uint64_t due_us = 0;
  Envelope envelope;
};
struct DueScan {
  std::vector<DueMessage> messages;
  // Every key up to until_due_us was read. Then next_due_us is the due time of the prefix's
  // first key beyond it (0: none); otherwise the next scan starts at `resume`.
  bool exhausted = false;
  uint64_t next_due_us = 0;
  ScheduleEntry resume;
  // Keys that name no stored message, or not at this due time (left behind; dropped by the
  // spool), and records whose envelope does not decode (quarantined by the spool).
  std::vector<ScheduleKey> stale;
  std::vector<std::pair<std::string, std::string>> unreadable;  // meta key, value
  // Spool::ScanDue: every removal and update submitted with a sequence number up to this one
  // was applied before the snapshot was taken.
  uint64_t applied_seq = 0;
};

// --- The counters ---------------------------------------------------------------------------

// Counts are kept per minute of reception: the oldest message's age is known to the minute
// without an ordered structure of every message.
inline constexpr uint64_t kCountBucketMicros = 60'000'000;

// One counter: messages of one state received in one minute, in total (`domain` unset) or
// waiting for one recipient domain.
struct CounterKey {
  std::optional<std::string> domain;
  bool deferred = false;
  uint32_t minute = 0;  // received_us / kCountBucketMicros

  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads a defaulted <=>
  auto operator<=>(const CounterKey&) const = default;
};
// 't' state minute, or 'd' domain '\0' state minute (minute big-endian). Keys of other shapes
// in the family (the index version below) are not counters.
std::string EncodeCounterKey(const CounterKey& key);
std::optional<CounterKey> DecodeCounterKey(std::string_view key);
std::string EncodeCount(uint64_t value);
std::optional<uint64_t> DecodeCount(std::string_view value);

// Marks a spool whose every message is in the schedule index (a spool made before the index
// existed is indexed once, in the background, then marked).
inline constexpr std::string_view kIndexVersionKey = "v";
inline constexpr std::string_view kIndexVersion = "1";

// Adds sign × the message's counters to `delta`.
void AddCounts(const Placement& placement, int sign, std::map<CounterKey, int64_t>& delta);

// The queue's size, from the counters.
struct QueueCounts {
  uint64_t scheduled = 0;
  uint64_t deferred = 0;
  uint64_t oldest_received_us = 0;  // start of the oldest minute with a message; 0 = empty
  struct Domain {
    uint64_t messages = 0;
    uint64_t oldest_received_us = 0;
  };
  std::map<std::string, Domain> domains;  // recipient domain → messages waiting for it

  uint64_t messages() const {
    return scheduled + deferred;
  }
};
QueueCounts SumCounts(const std::map<CounterKey, uint64_t>& counters);

}  // namespace sluice::queue
