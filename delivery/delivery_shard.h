#pragma once

// DeliveryShard: the delivery half of one shard.
//
// Two roles, both on the shard thread:
// - Owner of messages. Every queued message belongs to the shard that
//   accepted it (recovered messages: id.shard() modulo the shard count). The
//   owner keeps its envelope, its due time in the shard's timer wheel, and
//   decides what happens after each attempt: delivered, retry with backoff,
//   or bounce (an RFC 3464 DSN committed in the same synced batch that
//   records the failure).
// - Host of destinations. A destination is one queue per smarthost, LMTP
//   server, maildir or MX domain, living on the shard its key hashes to, so
//   its connection limit and rate hold across the process. Its workers are
//   coroutines that connect, hand over jobs (one message, the recipients that
//   go there) and send the per-recipient replies back to the owner.
//
// Shards talk only by posting closures to each other's mailboxes.

#include <atomic>
#include <cstdint>
#include <functional>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "delivery/client/smtp_client.h"
#include "delivery/delivery_config.h"
#include "delivery/delivery_telemetry.h"
#include "delivery/dns/resolver.h"
#include "io/blocking_pool.h"
#include "io/connection.h"
#include "io/shard.h"
#include "io/task.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "queue/spool.h"
#include "smtp/reply.h"

namespace sluice::delivery {

// Counters of one shard, written by that shard only.
struct DeliveryStats {
  uint64_t attempts = 0;           // recipient attempts finished
  uint64_t delivered = 0;          // recipients delivered
  uint64_t deferred = 0;           // recipient attempts deferred
  uint64_t bounced = 0;            // recipients failed permanently
  uint64_t dsns = 0;               // bounce messages queued
  uint64_t connections = 0;        // outbound connections opened
  uint64_t connection_failures = 0;
};

class DeliveryShard final : public queue::CompletionSink {
 public:
  DeliveryShard(io::Shard& shard, unsigned index, const DeliveryConfig& config,
                std::string hostname, queue::Spool& spool, io::BlockingPool& pool,
                queue::MessageIdGenerator& ids, DeliveryTelemetry& telemetry);
  ~DeliveryShard() override;

  // Before Start(): the TLS client context shared by all shards (null: no
  // outbound TLS; opportunistic routes then send in plaintext).
  void SetTlsContext(std::shared_ptr<tls::ClientContext> ctx) { tls_context_ = std::move(ctx); }
  // Before any Start(): every shard's DeliveryShard, indexed by shard, the
  // process-wide count of posts between them not yet run, and the
  // process-wide bytes of bodies held for first attempts (body_cache_bytes).
  void SetPeers(std::vector<DeliveryShard*> peers, std::atomic<int64_t>* in_flight,
                std::atomic<int64_t>* body_cache) {
    peers_ = std::move(peers);
    in_flight_ = in_flight;
    body_cache_ = body_cache;
  }
  // On the shard thread.
  Result<void> Start();
  // On the owner's thread: a message that was just queued, or found at start.
  // `body`, when given, is the message as spooled; it is kept for the first
  // attempt if the body cache has room (else read back from the spool).
  void Adopt(const queue::MessageId& id, queue::Envelope envelope,
             std::shared_ptr<const std::string> body = nullptr);
  // Stop starting work; idle connections close; in-flight transactions end.
  void BeginShutdown();
  // Grace over: abort what is left.
  void Abort();
  bool quiescent() const;
  // After quiescent(): cancel DNS work; the shard may quit once stopped().
  void StopResolver();
  bool stopped() const;

  const DeliveryStats& stats() const { return stats_; }

  // For the queue gauges: computed on the shard thread (post a closure that
  // calls it), merged by the scraper.
  struct QueueSnapshot {
    uint64_t scheduled = 0;  // waiting for their first attempt
    uint64_t deferred = 0;   // waiting for a retry
    uint64_t in_flight = 0;  // being delivered now
    uint64_t oldest_received_us = 0;  // 0 = none
    struct PerDestination {
      uint64_t messages = 0;
      uint64_t oldest_received_us = 0;
    };
    std::unordered_map<std::string, PerDestination> destinations;
    uint64_t queues = 0;  // destinations (queues) held in memory
  };
  QueueSnapshot Snapshot() const;
  // The metric label for a recipient domain: the route's name, or the domain
  // itself for MX routes.
  std::string DestinationLabel(const std::string& domain) const;
  size_t messages() const { return messages_.size(); }

  // queue::CompletionSink (writer thread).
  void OnCommitted(uint64_t token, queue::CommitStatus status) override;

 private:
  struct Message;
  struct Job;
  struct JobResult;
  struct Destination;

  // ---- owner side ----
  void Schedule(Message& m, uint64_t due_us);
  void Dispatch(Message& m);
  io::Detached Route(queue::MessageId id, std::vector<size_t> recipients);
  void PostResult(const queue::MessageId& id, std::vector<size_t> rcpts, const smtp::Reply& reply,
                  const std::string& remote);
  static smtp::Reply MxFailure(const std::string& domain, const MxLookup& mx);
  void OnJobResult(JobResult result);
  io::Detached FinishRound(queue::MessageId id);
  void Fail(Message& m, const std::vector<size_t>& recipients, const smtp::Reply& reply,
            const std::string& remote);

  // ---- destination side ----
  void Enqueue(Job job);
  void MaybeStartWorker(Destination& d);
  // A job was queued: resume a parked worker, else maybe start one.
  void WakeWorker(Destination& d);
  io::Detached RunWorker(Destination* d);
  // Connects to the destination's next address from *next on (advancing it past the one
  // connected to); false when none is left or reachable.
  io::Task<bool> Connect(Destination* d, size_t* next, io::Connection** out_conn,
                         std::string* remote, smtp::Reply* failure, std::string* host);
  io::Task<void> DeliverMaildir(Destination* d, Job job);
  // Pool-thread work.
  std::optional<std::string> ReadBodyBlocking(const queue::MessageId& id);
  std::vector<smtp::Reply> MaildirBlocking(const std::string& root, const Job& job);
  void Report(const Job& job, std::vector<smtp::Reply> replies, const std::string& remote,
              bool peer_dsn = false);
  void DeferAll(Destination& d, const smtp::Reply& reply, const std::string& remote);
  io::Task<bool> TakeJob(Destination* d, Job* job);

  // Drops idle, empty destinations (destination_idle_expiry), expired broken-TLS marks and,
  // past kMaxCachedSeries, the cached metric handles. Every half expiry, at most every 30 s.
  void SweepIdle();
  static constexpr size_t kMaxCachedSeries = 1024;
  struct Sweeper final : io::TimerHandler {
    DeliveryShard* owner = nullptr;
    io::TimerWheel::Id timer;
    void Arm();
    void OnTimer() override;
  };
  Sweeper sweeper_;

  DeliveryShard& Peer(unsigned index) { return *peers_[index]; }
  void CrossPost(DeliveryShard& to, std::function<void()> fn);
  unsigned ShardFor(const std::string& key) const;
  uint64_t Backoff(uint32_t attempts);

  io::Shard& shard_;
  const unsigned index_;
  const DeliveryConfig& config_;
  const std::string hostname_;
  queue::Spool& spool_;
  io::BlockingPool& pool_;
  queue::MessageIdGenerator& ids_;
  DeliveryTelemetry& tel_;
  std::unordered_map<std::string, DeliveryTelemetry::DestinationSeries> series_;  // by label
  DeliveryTelemetry::DestinationSeries& SeriesFor(const std::string& label);
  std::vector<DeliveryShard*> peers_;
  std::atomic<int64_t>* in_flight_ = nullptr;
  std::atomic<int64_t>* body_cache_ = nullptr;
  std::unique_ptr<Resolver> resolver_;
  std::shared_ptr<tls::ClientContext> tls_context_;
  std::unordered_map<std::string, uint64_t> broken_tls_;  // host → skip TLS until (µs)
  ClientOptions client_options_;
  std::mt19937_64 rng_;
  bool stopping_ = false;

  std::unordered_map<queue::MessageId, std::unique_ptr<Message>> messages_;
  std::unordered_map<std::string, std::unique_ptr<Destination>> destinations_;
  unsigned workers_ = 0;
  unsigned rounds_in_flight_ = 0;
  unsigned finishing_ = 0;  // FinishRound coroutines running

  // Bounce commits waiting for the spool writer: token → waiter.
  struct PendingCommit {
    std::coroutine_handle<> waiter;
    queue::CommitStatus status = queue::CommitStatus::kOk;
    bool done = false;
  };
  std::unordered_map<uint64_t, PendingCommit> commits_;
  uint64_t next_token_ = 1;

  DeliveryStats stats_;
};

}  // namespace sluice::delivery
