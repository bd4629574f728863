#include "gateway/server.h"

#include <algorithm>
#include <condition_variable>

#include "base/clock.h"
#include "base/log.h"
#include "gateway/shard_context.h"

namespace sluice::gateway {

Server::Server(const Config& config, queue::Spool& spool, metrics::Registry& registry,
               metrics::EventLog* events)
    : config_(config),
      spool_(spool),
      registry_(registry),
      events_(events),
      telemetry_(registry, config, events),
      delivery_telemetry_(registry, events, config.admin.max_destination_series),
      body_budget_(config.max_body_memory, config.max_body_memory_per_client),
      pool_(config.delivery.workers),
      drained_(new std::atomic<bool>[config.shards]),
      listener_connections_(new std::atomic<size_t>[config.listeners.size()]) {
  for (size_t i = 0; i < config.listeners.size(); ++i)
    listener_connections_[i] = 0;
  for (unsigned i = 0; i < config.shards; ++i)
    drained_[i] = false;
}

Server::~Server() {
  Shutdown();
  Wait();
}

Result<void> Server::Start() {
  if (auto r = LoadSecurity(); !r)
    return r;
  running_ = true;  // before the listeners open: sessions check it
  for (unsigned i = 0; i < config_.shards; ++i) {
    shards_.push_back(std::make_unique<ShardContext>(*this, i));
  }
  // One TLS client context for outbound delivery: its session cache is
  // shared by all shards (resumption per destination host).
  std::shared_ptr<tls::ClientContext> client_tls;
  if (auto ctx = tls::ClientContext::Create(tls::ClientOptions{}); ctx) {
    client_tls = *ctx;
  } else {
    spdlog::warn("outbound TLS disabled: {}", ctx.error().message);
  }
  for (auto& s : shards_)
    s->delivery().SetTlsContext(client_tls);
  std::vector<delivery::DeliveryShard*> peers;
  for (auto& s : shards_)
    peers.push_back(&s->delivery());
  for (auto& s : shards_)
    s->delivery().SetPeers(peers, &delivery_posts_, &body_cache_bytes_);
  for (unsigned i = 0; i < config_.shards; ++i) {
    threads_.emplace_back([this, i] { ShardMain(i); });
  }
  std::unique_lock lock(start_mu_);
  start_cv_.wait(lock, [this] { return started_ == config_.shards || !start_error_.empty(); });
  if (!start_error_.empty())
    return MakeError(start_error_);
  ready_ = true;
  return {};
}

void Server::ShardMain(unsigned id) {
  ShardContext& ctx = *shards_[id];
  auto init = ctx.shard().Init();
  if (init)
    init = ctx.Start();
  {
    std::lock_guard lock(start_mu_);
    if (!init) {
      if (start_error_.empty())
        start_error_ = init.error().message;
    } else {
      ++started_;
      if (id == 0) {
        spdlog::info("shard 0: io_uring ring with {}", ctx.shard().ring_features());
      }
    }
  }
  start_cv_.notify_all();
  if (!init)
    return;
  ctx.shard().Run();
}

Result<void> Server::LoadSecurity() {
  std::vector<ListenerSecurity> loaded(config_.listeners.size());
  for (size_t i = 0; i < config_.listeners.size(); ++i) {
    const ListenerConfig& l = config_.listeners[i];
    if (l.tls != ListenerConfig::Tls::kNone) {
      tls::ServerOptions o;
      o.certificates.push_back({l.certificate, l.private_key});
      if (!l.rsa_certificate.empty()) {
        o.certificates.push_back({l.rsa_certificate, l.rsa_private_key});
      }
      o.min_version = l.tls13_only ? tls::kTls13 : tls::kTls12;
      for (const ListenerConfig::SniCertificate& c : l.sni) {
        tls::ServerOptions::SniEntry entry;
        entry.name = c.name;
        entry.certificates.push_back({c.certificate, c.private_key});
        if (!c.rsa_certificate.empty()) {
          entry.certificates.push_back({c.rsa_certificate, c.rsa_private_key});
        }
        o.sni.push_back(std::move(entry));
      }
      auto ctx = tls::ServerContext::Create(o);
      if (!ctx)
        return MakeError("listener '" + l.name + "': " + ctx.error().message);
      loaded[i].tls = *ctx;
    }
    if (l.auth != ListenerConfig::Auth::kOff) {
      auto users = auth::UserDb::Load(l.users_file);
      if (!users)
        return MakeError("listener '" + l.name + "': " + users.error().message);
      loaded[i].users = *users;
    }
  }
  std::lock_guard lock(security_mu_);
  security_ = std::move(loaded);
  return {};
}

std::shared_ptr<tls::ServerContext> Server::TlsContext(size_t listener) const {
  std::lock_guard lock(security_mu_);
  return listener < security_.size() ? security_[listener].tls : nullptr;
}

std::shared_ptr<const auth::UserDb> Server::Users(size_t listener) const {
  std::lock_guard lock(security_mu_);
  return listener < security_.size() ? security_[listener].users : nullptr;
}

void Server::AdoptRecovered(const queue::MessageId& id, queue::Envelope env) {
  if (!running_.load() || shards_.empty())
    return;  // the next start finds it in the spool
  ShardContext* owner = shards_[id.shard() % shards_.size()].get();
  owner->shard().Post(
      [owner, id, e = std::move(env)]() mutable { owner->delivery().Adopt(id, std::move(e)); });
}

bool Server::AllDrained() const {
  // Flags first, then the counter: a post that made a drained shard busy
  // again was counted before it ran and is uncounted only after.
  for (unsigned i = 0; i < config_.shards; ++i) {
    if (!drained_[i].load())
      return false;
  }
  return delivery_posts_.load() == 0;
}

std::pair<bool, std::string> Server::Ready() const {
  if (!running_.load() || !ready_.load()) {
    return {false, "not running (starting or shutting down)"};
  }
  if (!spool_.healthy()) {
    return {false,
            "spool unhealthy after a write error (it reopens by itself once "
            "spool.min_free_bytes are free)"};
  }
  if (spool_.disk_low()) {
    return {false, "spool file system below spool.min_free_bytes: new mail gets 452 4.3.1"};
  }
  return {true, ""};
}

void Server::CollectShards(metrics::Exposition& out) {
  using metrics::MetricType;
  struct Field {
    const char* name;
    const char* help;
    MetricType type;
    double (*get)(const io::ShardStats&);
  };
  static const Field kFields[] = {
      {"sluice_uring_enobufs_total", "Multishot receives that ran out of provided buffers.",
       MetricType::kCounter,
       [](const io::ShardStats& s) { return static_cast<double>(s.enobufs.load()); }},
      {"sluice_uring_cq_overflow_total", "Event-loop iterations that saw the CQ overflow flag.",
       MetricType::kCounter,
       [](const io::ShardStats& s) { return static_cast<double>(s.cq_overflow.load()); }},
      {"sluice_shard_loop_iterations_total", "Event-loop iterations.", MetricType::kCounter,
       [](const io::ShardStats& s) { return static_cast<double>(s.loop_iterations.load()); }},
      {"sluice_tls_abrupt_eof_total", "TLS connections the peer closed without close_notify.",
       MetricType::kCounter,
       [](const io::ShardStats& s) { return static_cast<double>(s.tls_abrupt_eof.load()); }},
      {"sluice_shard_busy_seconds_total",
       "Time the shard's loop spent working (not waiting in io_uring_enter); rate() is the "
       "loop utilisation.",
       MetricType::kCounter,
       [](const io::ShardStats& s) { return static_cast<double>(s.busy_ns.load()) / 1e9; }},
  };
  for (const Field& f : kFields) {
    out.Family(f.name, f.help, f.type);
    for (auto& s : shards_) {
      out.Sample(f.name, {{"shard", std::to_string(s->shard().id())}}, f.get(s->shard().stats()));
    }
  }
  out.Family("sluice_bugs_total",
             "Broken invariants of Sluice's own code seen and survived (logged as BUG; a debug "
             "build aborts instead). Anything above 0 is worth a bug report.",
             MetricType::kCounter);
  out.Sample("sluice_bugs_total", {},
             static_cast<double>(g_bug_count.load(std::memory_order_relaxed)));
  out.Family("sluice_smtpd_body_memory_bytes",
             "Message bytes held in memory while they are received (bounded by "
             "server.max_body_memory).",
             MetricType::kGauge);
  out.Sample("sluice_smtpd_body_memory_bytes", {}, static_cast<double>(body_budget_.used()));
  out.Family("sluice_smtpd_body_memory_clients",
             "Client networks holding part of the body memory now.", MetricType::kGauge);
  out.Sample("sluice_smtpd_body_memory_clients", {}, static_cast<double>(body_budget_.clients()));
}

void Server::CollectQueue(metrics::Exposition& out) {
  using metrics::MetricType;
  // Ask every shard (its data is shard-owned) and wait a little; a shard
  // that does not answer in time (busy, or stopping) is left out.
  struct Request {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<delivery::DeliveryShard::QueueSnapshot> snaps;
    size_t answered = 0;
  };
  auto req = std::make_shared<Request>();
  const size_t n = shards_.size();
  req->snaps.resize(n);
  if (running_.load() && ready_.load()) {
    for (size_t i = 0; i < n; ++i) {
      ShardContext* ctx = shards_[i].get();
      ctx->shard().Post([req, ctx, i] {
        auto snap = ctx->delivery().Snapshot();
        std::lock_guard lock(req->mu);
        req->snaps[i] = snap;
        ++req->answered;
        req->cv.notify_all();
      });
    }
    std::unique_lock lock(req->mu);
    req->cv.wait_for(lock, std::chrono::seconds(2), [&] { return req->answered == n; });
  }
  std::lock_guard lock(req->mu);
  delivery::DeliveryShard::QueueSnapshot total;
  for (const auto& snap : req->snaps) {
    total.queues += snap.queues;
    total.active += snap.active;
    total.in_flight.scheduled += snap.in_flight.scheduled;
    total.in_flight.deferred += snap.in_flight.deferred;
  }
  // The queue's size: the spool's counters, exact and without a scan (queue/schedule.h). A
  // message in a round is counted by the spool in its state; here it is in_flight instead.
  const queue::QueueCounts counts = spool_.counts();
  auto less = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
  const uint64_t scheduled = less(counts.scheduled, total.in_flight.scheduled);
  const uint64_t deferred = less(counts.deferred, total.in_flight.deferred);
  const uint64_t in_flight = total.in_flight.scheduled + total.in_flight.deferred;
  struct PerDestination {
    uint64_t messages = 0;
    uint64_t oldest_received_us = 0;
  };
  std::unordered_map<std::string, PerDestination> destinations;
  for (const auto& [domain, d] : counts.domains) {
    // A message to two domains of one route counts once per domain.
    PerDestination& t = destinations[delivery::DestinationLabel(
        config_.delivery, domain.empty() ? config_.hostname : domain)];
    t.messages += d.messages;
    if (t.oldest_received_us == 0 || d.oldest_received_us < t.oldest_received_us)
      t.oldest_received_us = d.oldest_received_us;
  }
  const double now = static_cast<double>(UnixMicros());
  auto age = [now](uint64_t received) {
    return received == 0 ? 0.0 : std::max(0.0, (now - static_cast<double>(received)) / 1e6);
  };
  out.Family("sluice_queue_messages", "Messages in the queue, by state.", MetricType::kGauge);
  out.Sample("sluice_queue_messages", {{"state", "scheduled"}}, static_cast<double>(scheduled));
  out.Sample("sluice_queue_messages", {{"state", "deferred"}}, static_cast<double>(deferred));
  out.Sample("sluice_queue_messages", {{"state", "in_flight"}}, static_cast<double>(in_flight));
  out.Family("sluice_queue_oldest_message_age_seconds",
             "Age of the oldest message still waiting for delivery, to the minute (counted from "
             "the start of the minute it arrived in; 0 when the queue is empty).",
             MetricType::kGauge);
  out.Sample("sluice_queue_oldest_message_age_seconds", {}, age(counts.oldest_received_us));
  out.Family("sluice_delivery_active_messages",
             "Messages held in memory for delivery: the active window, bounded by "
             "delivery.max_active_messages; the rest of the queue waits on disk only.",
             MetricType::kGauge);
  out.Sample("sluice_delivery_active_messages", {}, static_cast<double>(total.active));
  out.Family("sluice_delivery_destinations",
             "Destination queues held in memory (one per MX site, smarthost, LMTP server or "
             "maildir mailed recently; idle ones are dropped after "
             "delivery.destination_idle_expiry).",
             MetricType::kGauge);
  out.Sample("sluice_delivery_destinations", {}, static_cast<double>(total.queues));
  out.Family("sluice_delivery_body_cache_bytes",
             "Bytes of message bodies held in memory for their first delivery attempt "
             "(bounded by delivery.body_cache_bytes).",
             MetricType::kGauge);
  out.Sample("sluice_delivery_body_cache_bytes", {},
             static_cast<double>(body_cache_bytes_.load(std::memory_order_relaxed)));
  // Bounded: the destinations with the most messages, the rest as "other".
  std::vector<std::pair<std::string, PerDestination>> by;
  by.reserve(destinations.size());
  for (auto& e : destinations)
    by.emplace_back(e.first, e.second);
  std::sort(by.begin(), by.end(), [](const auto& a, const auto& b) {
    return a.second.messages != b.second.messages ? a.second.messages > b.second.messages
                                                  : a.first < b.first;
  });
  const size_t keep = config_.admin.max_destination_series;
  if (by.size() > keep) {
    PerDestination other;
    for (size_t i = keep; i < by.size(); ++i) {
      other.messages += by[i].second.messages;
      if (other.oldest_received_us == 0 ||
          by[i].second.oldest_received_us < other.oldest_received_us) {
        other.oldest_received_us = by[i].second.oldest_received_us;
      }
    }
    by.resize(keep);
    by.emplace_back("other", other);
  }
  out.Family("sluice_queue_destination_messages",
             "Messages waiting for a destination (top destinations; the rest as \"other\").",
             MetricType::kGauge);
  for (const auto& [label, d] : by) {
    out.Sample("sluice_queue_destination_messages", {{"destination", label}},
               static_cast<double>(d.messages));
  }
  out.Family("sluice_queue_destination_oldest_message_age_seconds",
             "Age of the oldest message waiting for a destination.", MetricType::kGauge);
  for (const auto& [label, d] : by) {
    out.Sample("sluice_queue_destination_oldest_message_age_seconds", {{"destination", label}},
               age(d.oldest_received_us));
  }
}

void Server::Shutdown() {
  running_ = false;
  for (auto& s : shards_) {
    ShardContext* ctx = s.get();
    ctx->shard().Post([ctx] { ctx->BeginShutdown(); });
  }
}

void Server::Wait() {
  for (auto& t : threads_) {
    if (t.joinable())
      t.join();
  }
}

std::string Server::ClientKey(const io::IpAddress& ip) const {
  const io::IpAddress net =
      ip.Network(ip.is_v4() ? config_.client_ipv4_prefix : config_.client_ipv6_prefix);
  std::string key(reinterpret_cast<const char*>(net.bytes().data()), ip.is_v4() ? 4 : 16);
  return key;
}

std::string Server::ClientNetwork(const io::IpAddress& ip) const {
  const unsigned prefix = ip.is_v4() ? config_.client_ipv4_prefix : config_.client_ipv6_prefix;
  if (prefix >= (ip.is_v4() ? 32u : 128u))
    return ip.ToString();
  return ip.Network(prefix).ToString() + "/" + std::to_string(prefix);
}

Server::Admission Server::AdmitConnection(size_t listener, const std::string& client) {
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
  std::string key = client;
  key.push_back(static_cast<char>(listener));
  {
    std::lock_guard lock(per_ip_mu_);
    size_t& n = per_ip_[key];
    if (n >= l.max_connections_per_ip) {
      if (n == 0)
        per_ip_.erase(key);
      listener_connections_[listener].fetch_sub(1);
      total_connections_.fetch_sub(1);
      return Admission::kTooManyFromIp;
    }
    ++n;
  }
  return Admission::kOk;
}

void Server::ReleaseConnection(size_t listener, const std::string& client) {
  std::string key = client;
  key.push_back(static_cast<char>(listener));
  {
    std::lock_guard lock(per_ip_mu_);
    auto it = per_ip_.find(key);
    if (it != per_ip_.end() && --it->second == 0)
      per_ip_.erase(it);
  }
  listener_connections_[listener].fetch_sub(1);
  total_connections_.fetch_sub(1);
}

}  // namespace sluice::gateway
