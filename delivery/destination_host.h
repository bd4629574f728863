#pragma once

// DestinationHost: the destination side of delivery on one shard. A destination (one queue per
// smarthost, LMTP server, maildir or MX site) lives on the shard its key hashes to, so its
// connection limit and rate hold across the process. Its workers are coroutines that open a
// connection (address after address, with the outbound TLS fallback), hand over jobs one after
// another on it (chaining the next envelope behind a final dot when they can) and send each
// job's per-recipient replies back to the message's owner.
//
// Where the next features go: egress sources and pools in Open (which local address, which
// helo), provider shaping in the Destination policies (destination.h) asked before each job.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "delivery/client/smtp_client.h"
#include "delivery/delivery_context.h"
#include "delivery/destination.h"
#include "delivery/job.h"
#include "io/connection.h"
#include "io/task.h"
#include "io/timer_wheel.h"

namespace sluice::delivery {

class DeliveryShard;

class DestinationHost {
 public:
  DestinationHost(DeliveryContext& ctx, DeliveryShard& shard);
  ~DestinationHost();
  DestinationHost(const DestinationHost&) = delete;
  DestinationHost& operator=(const DestinationHost&) = delete;

  // Before Start(): the TLS client context shared by all shards (null: no outbound TLS;
  // opportunistic routes then send in plaintext).
  void SetTlsContext(std::shared_ptr<tls::ClientContext> ctx) {
    tls_context_ = std::move(ctx);
  }
  // Arms the idle sweep.
  void Start();

  // A job for a destination hosted here.
  void Enqueue(Job job);

  // Shutdown: queued jobs are deferred back to their owners, parked connections say QUIT,
  // transactions in flight finish.
  void BeginShutdown();
  // Grace over: abort the connections left.
  void Abort();
  bool quiescent() const {
    return workers_ == 0;
  }
  size_t destinations() const {
    return destinations_.size();
  }

 private:
  // An open, greeted connection of a worker.
  struct Session {
    std::unique_ptr<io::Connection> conn;
    std::unique_ptr<SmtpClient> client;
    std::string remote;  // "host[ip]:port"
  };
  // Where a connection goes.
  struct Address {
    std::string host;
    io::IpAddress ip;
  };

  void WakeWorker(Destination& d);
  void MaybeStartWorker(Destination& d);
  io::Detached RunWorker(Destination* d);
  // Parks until a job is queued; false after the idle timeout or at shutdown.
  io::Task<bool> TakeJob(Destination* d, Job* job);
  // The addresses to try for a destination, best first: the MX targets the owner resolved, or
  // the route's host looked up now. Sets *failure when there are none.
  io::Task<std::vector<Address>> Addresses(Destination* d, smtp::Reply* failure);
  // Connects and greets, address after address until one answers with 2xx, trying no more than
  // mx_address_limit addresses and mx_session_limit hosts that answered (Postfix's
  // smtp_mx_address_limit and smtp_mx_session_limit). False with *failure when none did.
  io::Task<bool> Open(Destination* d, Session* session, smtp::Reply* failure);
  ClientOptions OptionsFor(const Destination& d, const std::string& host, bool* skipped_tls);
  // Hands jobs to an open session until the queue stays empty, the connection is spent or
  // shutdown.
  io::Task<void> Transfer(Destination* d, Session* session);
  io::Task<void> Close(Destination* d, Session* session);
  io::Task<void> DeliverMaildir(Destination* d, Job job);
  // Pool thread.
  std::vector<smtp::Reply> MaildirBlocking(const std::string& root, const Job& job);

  // Sends a job's replies to its owner (one reply for all recipients, or one each).
  void Report(const Job& job, std::vector<smtp::Reply> replies, const std::string& remote,
              bool peer_dsn = false);
  void DeferAll(Destination& d, const smtp::Reply& reply, const std::string& remote);

  // Drops idle, empty destinations (destination_idle_expiry), expired broken-TLS marks and,
  // past DeliveryContext::kMaxCachedSeries, the cached metric handles. Every half expiry, at
  // most every 30 s.
  void SweepIdle();
  struct Sweeper final : io::TimerHandler {
    DestinationHost* host = nullptr;
    io::TimerWheel::Id timer;
    void Arm();
    void OnTimer() override;
  };

  DeliveryContext& ctx_;
  DeliveryShard& shard_;
  ClientOptions client_options_;
  std::shared_ptr<tls::ClientContext> tls_context_;
  TlsFallback tls_fallback_;
  std::unordered_map<std::string, std::unique_ptr<Destination>> destinations_;
  unsigned workers_ = 0;
  Sweeper sweeper_;
};

}  // namespace sluice::delivery
