#pragma once

// Server: the shard threads, the listeners on each, connection accounting
// across shards, and the orderly shutdown.

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "auth/failure_throttle.h"
#include "auth/user_db.h"
#include "base/result.h"
#include "delivery/delivery_telemetry.h"
#include "gateway/body_budget.h"
#include "gateway/config.h"
#include "gateway/telemetry.h"
#include "io/blocking_pool.h"
#include "io/net.h"
#include "queue/spool.h"
#include "tls/context.h"

namespace sluice::gateway {

class ShardContext;

class Server {
 public:
  Server(const Config& config, queue::Spool& spool, metrics::Registry& registry,
         metrics::EventLog* events);
  ~Server();

  // Starts one thread per shard; each creates its ring and binds its own
  // SO_REUSEPORT listener per configured port. Returns once all are
  // listening, or the first error. Delivery reads the queued messages from
  // the spool's schedule index as they fall due (none is read before).
  Result<void> Start();
  // Any thread: stop accepting, 421 idle sessions, let DATA finish within the
  // grace period. Wait() returns when every shard has quit.
  void Shutdown();
  void Wait();

  const Config& config() const {
    return config_;
  }
  queue::Spool& spool() {
    return spool_;
  }
  Telemetry& telemetry() {
    return telemetry_;
  }
  delivery::DeliveryTelemetry& delivery_telemetry() {
    return delivery_telemetry_;
  }
  // Scrape-time collectors: per-shard reactor counters, queue gauges (asks
  // every shard for a snapshot and waits briefly).
  void CollectShards(metrics::Exposition& out);
  void CollectQueue(metrics::Exposition& out);
  // Listeners up and spool healthy.
  std::pair<bool, std::string> Ready() const;
  // False from the moment Shutdown() is called (any thread), before the
  // shards have heard about it.
  bool running() const {
    return running_.load();
  }
  metrics::Registry& registry() {
    return registry_;
  }
  metrics::EventLog* events() {
    return events_;
  }
  io::BlockingPool& pool() {
    return pool_;
  }
  ShardContext& shard(unsigned i) {
    return *shards_[i];
  }

  // TLS contexts and users files per listener. LoadSecurity() at start (an
  // error stops the daemon) and on SIGHUP (an error keeps the old ones and is
  // logged); connections take a reference when they start or upgrade.
  Result<void> LoadSecurity();
  std::shared_ptr<tls::ServerContext> TlsContext(size_t listener) const;
  std::shared_ptr<const auth::UserDb> Users(size_t listener) const;
  auth::FailureThrottle& auth_throttle() {
    return auth_throttle_;
  }

  // Any thread: hands a message found in the spool after the fact (see
  // queue::Spool::SetRecoveredHandler) to the shard that owns its id.
  void AdoptRecovered(const queue::MessageId& id, queue::Envelope env);

  // Shutdown: a shard may leave its loop only when every shard has drained
  // and no delivery post between shards is in flight.
  void SetDrained(unsigned shard, bool drained) {
    drained_[shard].store(drained);
  }
  bool AllDrained() const;

  // The key of a client for per-client accounting: its network (server.client_ipv4_prefix,
  // client_ipv6_prefix) as bytes, so that one IPv6 host cannot take a fresh key per address.
  std::string ClientKey(const io::IpAddress& ip) const;
  // The same network as text ("2001:db8:1:2::/64"), for logs.
  std::string ClientNetwork(const io::IpAddress& ip) const;

  // Connection accounting across shards (any shard thread). A session releases its slot as soon
  // as it has ended, before its socket is torn down, so a client that closes one connection and
  // opens the next at once finds the slot free.
  enum class Admission { kOk, kTooManyTotal, kTooManyListener, kTooManyFromIp };
  Admission AdmitConnection(size_t listener, const std::string& client);
  void ReleaseConnection(size_t listener, const std::string& client);

  // Message bytes being received, process-wide (server.max_body_memory).
  BodyBudget& body_budget() {
    return body_budget_;
  }

 private:
  void ShardMain(unsigned id);

  const Config& config_;
  queue::Spool& spool_;
  metrics::Registry& registry_;
  metrics::EventLog* events_;
  Telemetry telemetry_;
  delivery::DeliveryTelemetry delivery_telemetry_;
  std::atomic<bool> running_{false};  // Start() .. Shutdown()
  std::atomic<bool> ready_{false};    // every shard is listening
  // Before shards_: messages still holding cached bodies give their bytes back to it when the
  // shards are destroyed.
  std::atomic<int64_t> body_cache_bytes_{0};  // delivery.body_cache_bytes in use
  // Before shards_ too: sessions give their room back when they are destroyed.
  BodyBudget body_budget_;
  std::vector<std::unique_ptr<ShardContext>> shards_;
  // Declared after shards_ so it is destroyed first: its threads finish
  // their tasks (which post to shard mailboxes) while the shards still exist.
  io::BlockingPool pool_;
  std::vector<std::thread> threads_;

  std::mutex start_mu_;
  std::condition_variable start_cv_;
  unsigned started_ = 0;
  std::string start_error_;

  struct ListenerSecurity {
    std::shared_ptr<tls::ServerContext> tls;
    std::shared_ptr<const auth::UserDb> users;
  };
  mutable std::mutex security_mu_;
  std::vector<ListenerSecurity> security_;  // guarded by security_mu_
  auth::FailureThrottle auth_throttle_;

  std::atomic<int64_t> delivery_posts_{0};
  std::unique_ptr<std::atomic<bool>[]> drained_;

  std::atomic<size_t> total_connections_{0};
  std::unique_ptr<std::atomic<size_t>[]> listener_connections_;
  std::mutex per_ip_mu_;
  // key: the client key and the listener index
  std::unordered_map<std::string, size_t> per_ip_;  // guarded by per_ip_mu_
};

}  // namespace sluice::gateway
