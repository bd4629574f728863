#include "gateway/server.h"

#include <condition_variable>

#include "base/log.h"
#include "gateway/shard_context.h"

namespace sluice::gateway {

Server::Server(const Config& config, queue::Spool& spool)
    : config_(config),
      spool_(spool),
      pool_(config.delivery.workers),
      drained_(new std::atomic<bool>[config.shards]),
      listener_connections_(new std::atomic<size_t>[config.listeners.size()]) {
  for (size_t i = 0; i < config.listeners.size(); ++i) listener_connections_[i] = 0;
  for (unsigned i = 0; i < config.shards; ++i) drained_[i] = false;
}

Server::~Server() {
  Shutdown();
  Wait();
}

Result<void> Server::Start(std::vector<std::pair<queue::MessageId, queue::Envelope>> recovered) {
  for (unsigned i = 0; i < config_.shards; ++i) {
    shards_.push_back(std::make_unique<ShardContext>(*this, i));
  }
  std::vector<delivery::DeliveryShard*> peers;
  for (auto& s : shards_) peers.push_back(&s->delivery());
  for (auto& s : shards_) s->delivery().SetPeers(peers, &delivery_posts_);
  recovered_.resize(config_.shards);
  for (auto& entry : recovered) {
    recovered_[entry.first.shard() % config_.shards].push_back(std::move(entry));
  }
  for (unsigned i = 0; i < config_.shards; ++i) {
    threads_.emplace_back([this, i] { ShardMain(i); });
  }
  std::unique_lock lock(start_mu_);
  start_cv_.wait(lock, [this] { return started_ == config_.shards || !start_error_.empty(); });
  if (!start_error_.empty()) return MakeError(start_error_);
  return {};
}

void Server::ShardMain(unsigned id) {
  ShardContext& ctx = *shards_[id];
  auto init = ctx.shard().Init();
  if (init) init = ctx.Start(std::move(recovered_[id]));
  {
    std::lock_guard lock(start_mu_);
    if (!init) {
      if (start_error_.empty()) start_error_ = init.error().message;
    } else {
      ++started_;
      if (id == 0) {
        spdlog::info("shard 0: io_uring ring with {}", ctx.shard().ring_features());
      }
    }
  }
  start_cv_.notify_all();
  if (!init) return;
  ctx.shard().Run();
}

bool Server::AllDrained() const {
  // Flags first, then the counter: a post that made a drained shard busy
  // again was counted before it ran and is uncounted only after.
  for (unsigned i = 0; i < config_.shards; ++i) {
    if (!drained_[i].load()) return false;
  }
  return delivery_posts_.load() == 0;
}

void Server::Shutdown() {
  for (auto& s : shards_) {
    ShardContext* ctx = s.get();
    ctx->shard().Post([ctx] { ctx->BeginShutdown(); });
  }
}

void Server::Wait() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

Server::Admission Server::AdmitConnection(size_t listener, const io::IpAddress& ip) {
  const ListenerConfig& l = config_.listeners[listener];
  if (total_connections_.fetch_add(1) >= config_.max_connections) {
    total_connections_.fetch_sub(1);
    return Admission::kTooManyTotal;
  }
  if (listener_connections_[listener].fetch_add(1) >= l.max_connections) {
    listener_connections_[listener].fetch_sub(1);
    total_connections_.fetch_sub(1);
    return Admission::kTooManyListener;
  }
  std::string key(reinterpret_cast<const char*>(ip.bytes().data()), ip.is_v4() ? 4 : 16);
  key.push_back(static_cast<char>(listener));
  {
    std::lock_guard lock(per_ip_mu_);
    size_t& n = per_ip_[key];
    if (n >= l.max_connections_per_ip) {
      if (n == 0) per_ip_.erase(key);
      listener_connections_[listener].fetch_sub(1);
      total_connections_.fetch_sub(1);
      return Admission::kTooManyFromIp;
    }
    ++n;
  }
  return Admission::kOk;
}

void Server::ReleaseConnection(size_t listener, const io::IpAddress& ip) {
  std::string key(reinterpret_cast<const char*>(ip.bytes().data()), ip.is_v4() ? 4 : 16);
  key.push_back(static_cast<char>(listener));
  {
    std::lock_guard lock(per_ip_mu_);
    auto it = per_ip_.find(key);
    if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
  }
  listener_connections_[listener].fetch_sub(1);
  total_connections_.fetch_sub(1);
}

}  // namespace sluice::gateway
