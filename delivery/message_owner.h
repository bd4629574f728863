#pragma once

// MessageOwner: the owner side of delivery on one shard. Every queued message belongs to the
// shard that accepted it (recovered messages: id.shard() modulo the shard count). Its owner
//   - keeps its state (MessageState) and its due time in the shard's timer wheel;
//   - at the due time routes its pending recipients: one Job per destination (grouping), each
//     posted to the shard that hosts that destination;
//   - takes the JobResults back, and when the round is over records it in the spool: finished
//     (removed), retried later (envelope updated with the next due time), or reported (an
//     RFC 3464 DSN committed in the same synced batch as the failure it reports).
//
// Where the next features go: holds and suppression are decided in Dispatch (before routing),
// priority lanes in Schedule (which timer, which order), per-tenant accounting in Adopt.

#include <atomic>
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

  // A message that was just queued, or found in the spool at start. `body`, when given, is the
  // message as spooled; it is kept for the first attempt if the body cache has room.
  void Adopt(const queue::MessageId& id, queue::Envelope envelope,
             std::shared_ptr<const std::string> body = nullptr);
  // A destination's replies for one job.
  void OnJobResult(JobResult result);
  // Shutdown: no more attempts start; the spool keeps every message's state.
  void BeginShutdown();
  // No round of this shard is running.
  bool quiescent() const {
    return rounds_in_flight_ == 0 && finishing_ == 0;
  }

  size_t messages() const {
    return messages_.size();
  }
  struct Counts {
    uint64_t scheduled = 0;           // waiting for their first attempt
    uint64_t deferred = 0;            // waiting for a retry
    uint64_t in_flight = 0;           // being delivered now
    uint64_t oldest_received_us = 0;  // 0 = none
    struct PerDestination {
      uint64_t messages = 0;
      uint64_t oldest_received_us = 0;
    };
    std::unordered_map<std::string, PerDestination> destinations;
  };
  Counts Count() const;

 private:
  struct Message;

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
};

}  // namespace sluice::delivery
