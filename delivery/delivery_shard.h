#pragma once

// DeliveryShard: the delivery half of one shard, and the wiring between its two sides
// (docs/architecture.md "Delivery"):
// - MessageOwner (message_owner.h): the messages this shard accepted, their due times, grouping
//   per destination, outcomes and spool updates.
// - DestinationHost (destination_host.h): the destinations whose keys hash to this shard, their
//   queues, workers and connections.
// A Job goes from an owner to the host of its destination, a JobResult comes back; both cross
// shards as closures posted to the other shard's mailbox (CrossPost), counted so that shutdown
// can tell when nothing is in flight between shards.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "delivery/delivery_config.h"
#include "delivery/delivery_context.h"
#include "delivery/delivery_telemetry.h"
#include "delivery/destination_host.h"
#include "delivery/job.h"
#include "delivery/message_owner.h"
#include "io/blocking_pool.h"
#include "io/shard.h"
#include "queue/commit_waiter.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "queue/spool.h"

namespace sluice::delivery {

class DeliveryShard final {
 public:
  DeliveryShard(io::Shard& shard, unsigned index, const DeliveryConfig& config,
                std::string hostname, queue::Spool& spool, io::BlockingPool& pool,
                queue::CommitWaiter& commits, queue::MessageIdGenerator& ids,
                DeliveryTelemetry& telemetry);
  ~DeliveryShard();
  DeliveryShard(const DeliveryShard&) = delete;
  DeliveryShard& operator=(const DeliveryShard&) = delete;

  // Before Start(): the TLS client context shared by all shards (null: no outbound TLS;
  // opportunistic routes then send in plaintext).
  void SetTlsContext(std::shared_ptr<tls::ClientContext> ctx) {
    host_.SetTlsContext(std::move(ctx));
  }
  // Before any Start(): every shard's DeliveryShard, indexed by shard, the process-wide count of
  // posts between them not yet run, and the process-wide bytes of bodies held for first
  // attempts (body_cache_bytes).
  void SetPeers(std::vector<DeliveryShard*> peers, std::atomic<int64_t>* in_flight,
                std::atomic<int64_t>* body_cache) {
    peers_ = std::move(peers);
    in_flight_ = in_flight;
    owner_.SetBodyCache(body_cache);
    // delivery.max_active_messages is process-wide; each shard holds its share.
    const size_t shards = peers_.empty() ? 1 : peers_.size();
    owner_.Configure(static_cast<unsigned>(shards),
                     (ctx_.config.max_active_messages + shards - 1) / shards);
  }
  // On the shard thread.
  Result<void> Start();
  // On the owner's thread: a message that was just queued (or a bounce, or one a reopened spool
  // found). `body`, when given, is the message as spooled; it is kept for the first attempt if
  // the body cache has room (else read back from the spool). Delivery off: nothing is kept, the
  // spool is the queue.
  void Adopt(const queue::MessageId& id, queue::Envelope envelope,
             std::shared_ptr<const std::string> body = nullptr);
  // Stop starting work; idle connections close; in-flight transactions end.
  void BeginShutdown();
  // Grace over: abort what is left.
  void Abort();
  bool quiescent() const {
    return owner_.quiescent() && host_.quiescent();
  }
  // After quiescent(): cancel DNS work; the shard may quit once stopped().
  void StopResolver();
  bool stopped() const;

  // For the queue gauges (the queue's size comes from the spool's counters): computed on the
  // shard thread (post a closure that calls it), merged by the scraper. O(1).
  struct QueueSnapshot {
    uint64_t queues = 0;  // destinations (queues) held in memory
    uint64_t active = 0;  // messages held in memory (the window)
    MessageOwner::InFlight in_flight;
  };
  QueueSnapshot Snapshot() const;
  // The metric label for a recipient domain: the route's name, or the domain itself for MX
  // routes.
  std::string DestinationLabel(const std::string& domain) const {
    return ctx_.DestinationLabel(domain);
  }
  size_t messages() const {
    return owner_.messages();
  }

  // Between the sides, on any shard's thread: a job to the shard hosting its destination, a
  // result to the shard owning its message.
  void SendJob(Job job);
  void SendResult(unsigned owner, JobResult result);

 private:
  void CrossPost(DeliveryShard& to, std::function<void()> fn);
  unsigned ShardFor(const std::string& key) const;

  DeliveryContext ctx_;
  MessageOwner owner_;
  DestinationHost host_;
  std::vector<DeliveryShard*> peers_;
  std::atomic<int64_t>* in_flight_ = nullptr;
};

}  // namespace sluice::delivery
