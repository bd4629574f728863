#pragma once

// MessageOwner: the owner side of delivery on one shard. Every queued message belongs to the
// shard that accepted it (recovered messages: id.shard() modulo the shard count). Its owner
//   - holds a bounded window of it in memory (docs/architecture.md "The active window"): the
//     messages due now or within a second, read from the spool's schedule index in due order
//     from a cursor, plus new mail while there is room; everything else waits on disk only;
//   - keeps the state (MessageState) of what it holds, and its due time in the timer wheel;
//   - at the due time routes its pending recipients: one Job per destination (grouping), each
//     posted to the shard that hosts that destination;
//   - takes the JobResults back, and when the round is over records it in the spool: finished
//     (removed), retried later (envelope updated with the next due time), or reported (an
//     RFC 3464 DSN committed in the same synced batch as the failure it reports).
//
// Where the next features go: holds and suppression are decided in Dispatch (before routing),
// priority lanes as schedule prefixes of their own read before the others in Refill,
// per-tenant accounting in Adopt.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "delivery/delivery_context.h"
#include "delivery/job.h"
#include "delivery/message_state.h"
#include "io/task.h"
#include "io/timer_wheel.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "queue/schedule.h"

namespace sluice::delivery {

class DeliveryShard;

class MessageOwner {
 public:
  MessageOwner(DeliveryContext& ctx, DeliveryShard& shard);
  ~MessageOwner();
  MessageOwner(const MessageOwner&) = delete;
  MessageOwner& operator=(const MessageOwner&) = delete;

  // Process-wide bytes of bodies held for first attempts (delivery.body_cache_bytes).
  void SetBodyCache(std::atomic<int64_t>* used) {
    body_cache_ = used;
  }

  // The shard count (which schedule prefixes are this shard's) and the window's bound.
  void Configure(unsigned shards, size_t max_active);
  // Starts reading due work from the spool (on the shard thread).
  void Start();
  // A message that was just queued (or a bounce, or one a reopened spool found). Held in memory
  // if the window has room, else left to the index. `body`, when given, is the message as
  // spooled; it is kept for the first attempt if the body cache has room.
  void Adopt(const queue::MessageId& id, queue::Envelope envelope,
             std::shared_ptr<const std::string> body = nullptr);
  // A destination's replies for one job.
  void OnJobResult(JobResult result);
  // Shutdown: no more attempts start; the spool keeps every message's state.
  void BeginShutdown();
  // No round of this shard is running, and no read of the index.
  bool quiescent() const {
    return rounds_in_flight_ == 0 && finishing_ == 0 && !refilling_;
  }

  // Messages held in memory (the window).
  size_t messages() const {
    return messages_.size();
  }
  // In a delivery round now, by the state the spool counts them in.
  struct InFlight {
    uint64_t scheduled = 0;  // first attempt
    uint64_t deferred = 0;   // a retry
  };
  InFlight in_flight() const {
    return in_flight_;
  }
  // Read ahead of the due time: a message due within this long is held (timer wheel precision
  // and the index's read cost), and one retried later than this leaves memory.
  static constexpr uint64_t kLookaheadMicros = 1'000'000;
  // How often the index is looked at when nothing else asks for it.
  static constexpr std::chrono::milliseconds kTick{500};
  // Messages read from the index per scan.
  static constexpr size_t kScanBatch = 2000;

 private:
  struct Message;
  // One schedule prefix this shard reads (its own, and those of shards a larger shard count
  // left behind): every key below `cursor` is held in memory, or was removed or moved by this
  // owner; keys at or after it may be held or not.
  struct Lane {
    uint16_t prefix = 0;
    queue::ScheduleEntry cursor;
    bool exhausted = false;  // the last scan read every key due up to its time
  };
  // A key noted (written and not held) while a scan was out: that scan's snapshot may not hold
  // it.
  struct Unheld {
    queue::ScheduleEntry key;
    uint64_t epoch = 0;
  };
  class Ticker;

  Lane& LaneFor(uint16_t prefix);
  // Holds a message read from the index or just adopted.
  Message& Hold(const queue::MessageId& id, queue::Envelope envelope);
  // A key of this shard's that is in the index (written) and not held: no cursor may pass it.
  void NoteUnheld(const queue::MessageId& id, uint64_t due_us);
  // Takes a message out of memory after its removal or update was submitted as `seq`.
  void Release(const queue::MessageId& id, uint64_t seq);
  // A message retried later than the lookahead leaves memory once op `seq` (its update) is
  // written (ReleaseWritten); until then it stays held.
  void Leave(Message& m, uint64_t seq);
  void ReleaseWritten();
  // Drops the recent_ entries every later scan sees written.
  void PruneRecent();
  // Reads due work from the index into the window, if it has room and there is any.
  void MaybeRefill();
  io::Detached Refill();
  void Tick();

  void Schedule(Message& m);
  void Dispatch(Message& m);
  // Groups the pending recipients by destination (resolving MX on the way) and posts the jobs.
  io::Detached Route(queue::MessageId id, std::vector<size_t> recipients);
  // A reply this shard gives itself (no route, DNS failure), as if a destination had answered.
  void PostResult(const queue::MessageId& id, std::vector<size_t> rcpts, const smtp::Reply& reply);
  io::Detached FinishRound(queue::MessageId id);
  uint64_t RetryDelay(uint32_t attempts);

  DeliveryContext& ctx_;
  DeliveryShard& shard_;
  std::atomic<int64_t>* body_cache_ = nullptr;
  std::mt19937_64 rng_;
  std::unordered_map<queue::MessageId, std::unique_ptr<Message>> messages_;
  unsigned rounds_in_flight_ = 0;
  unsigned finishing_ = 0;  // FinishRound coroutines running
  InFlight in_flight_;

  // The window.
  unsigned shards_ = 1;
  size_t max_active_ = 20000;
  std::vector<Lane> lanes_;
  bool refilling_ = false;
  // The earliest due time of a key not held and not behind a cursor (UINT64_MAX: none known).
  uint64_t next_wake_ = 0;
  uint64_t wake_floor_ = UINT64_MAX;  // the earliest due time noted while a refill is out
  std::vector<Unheld> unheld_;
  std::vector<queue::MessageId> leaving_;  // held until their update is written
  uint64_t seen_generation_ = 0;           // Spool::rescan_generation at the last refill
  bool discovered_ = false;                // the prefixes were read since that generation
  uint64_t refills_ = 0;
  uint64_t scan_error_logged_ = 0;
  uint64_t scan_epoch_ = 0;  // of the scan out now (refilling_)
  // Messages taken out of memory whose spool op (by sequence number) a scan may not see yet.
  std::unordered_map<queue::MessageId, uint64_t> recent_;
  size_t recent_prune_at_ = 4096;  // recent_'s size that makes Release prune it
  std::unique_ptr<Ticker> ticker_;
};

}  // namespace sluice::delivery
