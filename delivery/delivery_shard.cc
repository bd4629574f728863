#include "delivery/delivery_shard.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include "base/clock.h"
#include "base/log.h"
#include "delivery/dsn/dsn.h"
#include "delivery/dsn/maildir.h"
#include "smtp/params.h"

namespace sluice::delivery {

namespace {

// Chaining (the next envelope behind a final dot) only after bodies up to this size.
constexpr size_t kChainBodyLimit = 1 << 20;

}  // namespace

namespace {

constexpr uint64_t kMicros = 1'000'000;

std::string DomainOf(const std::string& address) {
  const size_t at = address.rfind('@');
  std::string d = at == std::string::npos ? std::string() : address.substr(at + 1);
  for (char& c : d) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return d;
}

bool WantsFailureDsn(uint8_t notify) {
  if (notify == 0) return true;  // RFC 3461 §4.1: absent means FAILURE,DELAY
  if (notify & smtp::kNotifyNever) return false;
  return notify & smtp::kNotifyFailure;
}

std::string StatusOf(const smtp::Reply& r) {
  if (!r.enhanced.empty()) return r.enhanced;
  return r.code >= 500 ? "5.0.0" : "4.0.0";
}

// "3 seconds", "5 hours", "5 days": for the expiry diagnostic.
std::string AgeText(uint64_t us) {
  const uint64_t s = us / kMicros;
  if (s < 2 * 3600) return std::to_string(s) + " seconds";
  if (s < 2 * 86400) return std::to_string(s / 3600) + " hours";
  return std::to_string(s / 86400) + " days";
}

// The host part of a connection label "host[ip]:port" (RFC 3464 §2.3.5:
// Remote-MTA is a host name); nothing for local deliveries.
std::string RemoteMtaOf(const std::string& label) {
  if (label.empty() || label.rfind("maildir:", 0) == 0) return "";
  return label.substr(0, label.find('['));
}

std::string OneLine(const smtp::Reply& r) {
  std::string text = std::to_string(r.code);
  if (!r.enhanced.empty()) text += " " + r.enhanced;
  std::string body = r.text;
  std::replace(body.begin(), body.end(), '\n', ' ');
  if (!body.empty()) text += " " + body;
  return text;
}

}  // namespace

// One queued message, owned by this shard.
namespace {

// A body held in memory for a message's first attempt, counted against the
// process-wide delivery.body_cache_bytes until released.
class CachedBody {
 public:
  CachedBody() = default;
  CachedBody(std::shared_ptr<const std::string> body, std::atomic<int64_t>* used)
      : body_(std::move(body)), used_(used) {}
  ~CachedBody() { Release(); }
  CachedBody(CachedBody&& o) noexcept
      : body_(std::move(o.body_)), used_(std::exchange(o.used_, nullptr)) {}
  CachedBody& operator=(CachedBody&& o) noexcept {
    if (this != &o) {
      Release();
      body_ = std::move(o.body_);
      used_ = std::exchange(o.used_, nullptr);
    }
    return *this;
  }

  const std::shared_ptr<const std::string>& get() const { return body_; }
  // Jobs may still hold the bytes for a moment; the budget is given back now.
  void Release() {
    if (used_ != nullptr && body_) {
      used_->fetch_sub(static_cast<int64_t>(body_->capacity()), std::memory_order_relaxed);
    }
    used_ = nullptr;
    body_.reset();
  }

 private:
  std::shared_ptr<const std::string> body_;
  std::atomic<int64_t>* used_ = nullptr;
};

}  // namespace

struct DeliveryShard::Message final : public io::TimerHandler {
  DeliveryShard* owner = nullptr;
  queue::MessageId id;
  queue::Envelope env;
  CachedBody body;  // until the first round ends; empty: read from the spool
  io::TimerWheel::Id timer;
  bool in_round = false;   // jobs out, or finishing
  unsigned jobs_out = 0;
  // A recipient outcome the sender asked to hear about (RFC 3461 NOTIFY).
  struct Notice {
    size_t rcpt;
    std::string status;
    std::string diagnostic;
    std::string remote;
    DsnAction action = DsnAction::kFailed;
  };
  std::vector<Notice> notices;  // this round, for the DSN
  struct Deferral {
    size_t rcpt;
    std::string destination;
    std::string remote;
    int code;
  };
  std::vector<Deferral> deferrals;  // this round, for the event log

  void OnTimer() override {
    timer = {};
    DeliveryShard* o = owner;
    const queue::MessageId mid = id;
    // Never start work from inside the wheel's walk: go through the mailbox.
    o->shard_.Post([o, mid] {
      auto it = o->messages_.find(mid);
      if (it != o->messages_.end()) o->Dispatch(*it->second);
    });
  }
};

// One message and the recipients of it that go to one destination.
struct DeliveryShard::Job {
  queue::MessageId id;
  unsigned owner = 0;
  std::vector<size_t> rcpts;  // indexes into the owner's envelope
  OutboundMessage message;    // body filled in by the worker
  std::string key;            // destination
  const RouteConfig* route = nullptr;  // null: MX by default
  std::string domain;
  std::vector<MxTarget> mx_targets;  // MX routes: where to connect, in order
};

struct DeliveryShard::JobResult {
  queue::MessageId id;
  std::vector<size_t> rcpts;
  std::vector<smtp::Reply> replies;
  std::string remote;
  std::string destination;      // metric label
  bool final_delivery = false;  // maildir or LMTP: the mailbox itself accepted it
  bool peer_dsn = false;        // the next hop offered DSN (it reports from now on)
};

namespace {

// Parks a worker until a job arrives, the idle timeout passes, or shutdown.
// Exactly one of these resumes it: `scheduled` guards against a second.
struct IdleWaiter final : public io::TimerHandler {
  io::Shard* shard = nullptr;
  std::coroutine_handle<> handle;
  io::TimerWheel::Id timer;
  bool scheduled = false;
  bool woken = false;  // by a job

  void OnTimer() override {
    timer = {};
    Resume(false);
  }
  bool Resume(bool by_job) {
    if (scheduled) return false;
    scheduled = true;
    woken = by_job;
    shard->timers().Cancel(timer);
    timer = {};
    shard->Schedule(handle);
    return true;
  }
};

}  // namespace

struct DeliveryShard::Destination {
  std::string key;
  const RouteConfig* route = nullptr;
  RouteType type = RouteType::kMx;
  std::string domain;
  std::string label;  // metric label
  unsigned max_connections = 20;
  unsigned max_messages_per_connection = 100;
  double rate = 0;  // messages/s, 0 = unlimited
  double next_send_us = 0;
  std::vector<MxTarget> mx_targets;  // from the latest job (the owner resolved them)

  std::deque<Job> ready;
  unsigned workers = 0;
  std::vector<IdleWaiter*> idle;
  uint64_t failing_until_us = 0;
  smtp::Reply failure;
  std::string failure_remote;
  std::vector<io::Connection*> connections;  // open, for Abort()
  uint64_t last_used_us = 0;                 // a job queued or a worker ended (SweepIdle)
};

struct ParkAwaiter {
  IdleWaiter* w;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept { w->handle = h; }
  void await_resume() const noexcept {}
};

DeliveryShard::DeliveryShard(io::Shard& shard, unsigned index, const DeliveryConfig& config,
                             std::string hostname, queue::Spool& spool, io::BlockingPool& pool,
                             queue::MessageIdGenerator& ids, DeliveryTelemetry& telemetry)
    : shard_(shard),
      index_(index),
      config_(config),
      hostname_(std::move(hostname)),
      spool_(spool),
      pool_(pool),
      ids_(ids),
      tel_(telemetry),
      rng_(std::random_device{}()) {
  client_options_.helo_name = config_.helo_name.empty() ? hostname_ : config_.helo_name;
  client_options_.greeting_timeout = config_.command_timeout;
  client_options_.helo_timeout = config_.command_timeout;
  client_options_.mail_timeout = config_.command_timeout;
  client_options_.rcpt_timeout = config_.command_timeout;
  client_options_.data_init_timeout = config_.command_timeout;
  client_options_.data_block_timeout = config_.data_timeout;
  client_options_.data_done_timeout = config_.data_timeout;
  client_options_.tls_timeout = config_.tls_timeout;
}

DeliveryShard::~DeliveryShard() {
  shard_.timers().Cancel(sweeper_.timer);
}

Result<void> DeliveryShard::Start() {
  ResolverOptions ro;
  ro.servers = config_.dns_servers;
  ro.self_names = {hostname_};
  ro.mx_address_limit = config_.mx_address_limit;
  resolver_ = std::make_unique<Resolver>(shard_, ro);
  if (auto r = resolver_->Init(); !r)
    return r;
  sweeper_.owner = this;
  sweeper_.Arm();
  return {};
}

void DeliveryShard::Sweeper::Arm() {
  const auto interval =
      std::clamp<std::chrono::seconds>(owner->config_.destination_idle_expiry / 2,
                                       std::chrono::seconds(1), std::chrono::seconds(30));
  timer = owner->shard_.timers().Add(owner->shard_.Now() + interval, this);
}

void DeliveryShard::Sweeper::OnTimer() {
  timer = {};
  owner->SweepIdle();
  if (!owner->stopping_)
    Arm();
}

void DeliveryShard::CrossPost(DeliveryShard& to, std::function<void()> fn) {
  // Counted until it has run, so that shutdown can tell "nothing in flight
  // between shards" (see quiescent()).
  in_flight_->fetch_add(1, std::memory_order_acq_rel);
  std::atomic<int64_t>* counter = in_flight_;
  to.shard_.Post([counter, f = std::move(fn)] {
    f();
    counter->fetch_sub(1, std::memory_order_acq_rel);
  });
}

unsigned DeliveryShard::ShardFor(const std::string& key) const {
  return static_cast<unsigned>(std::hash<std::string>{}(key) % peers_.size());
}

uint64_t DeliveryShard::Backoff(uint32_t attempts) {
  // retry_initial · 2^(attempts-1), capped, ±10% jitter (engineering-notes §4.4).
  const double initial = static_cast<double>(config_.retry_initial.count());
  const double cap = static_cast<double>(config_.retry_max.count());
  const double exp = std::min<double>(attempts > 0 ? attempts - 1 : 0, 30);
  double delay = std::min(initial * std::pow(2.0, exp), cap);
  std::uniform_real_distribution<double> jitter(0.9, 1.1);
  delay *= jitter(rng_);
  return static_cast<uint64_t>(delay * kMicros);
}

// ---------------------------------------------------------------------------
// Owner side

void DeliveryShard::Adopt(const queue::MessageId& id, queue::Envelope envelope,
                          std::shared_ptr<const std::string> body) {
  // Delivery off (an ingest-only node, or tests that inspect the spool): the
  // spool is the queue and nothing is kept in memory.
  if (!config_.enabled) return;
  auto m = std::make_unique<Message>();
  m->owner = this;
  m->id = id;
  m->env = std::move(envelope);
  const bool pending = std::any_of(
      m->env.recipients.begin(), m->env.recipients.end(),
      [](const queue::Recipient& r) { return r.state == queue::RecipientState::kPending; });
  if (!pending) {
    spool_.Remove(id);  // finished before a crash, removal lost: finish it now
    return;
  }
  if (body && body_cache_ != nullptr && !stopping_) {
    // The allocation, not the length: the session's buffer grew by doubling.
    const auto size = static_cast<int64_t>(body->capacity());
    if (body_cache_->fetch_add(size, std::memory_order_relaxed) + size <=
        config_.body_cache_bytes) {
      m->body = CachedBody(std::move(body), body_cache_);
    } else {
      body_cache_->fetch_sub(size, std::memory_order_relaxed);
    }
  }
  Message& ref = *m;
  messages_[id] = std::move(m);
  if (stopping_) return;
  Schedule(ref, ref.env.next_due_us);
}

void DeliveryShard::Schedule(Message& m, uint64_t due_us) {
  shard_.timers().Cancel(m.timer);
  const uint64_t now = UnixMicros();
  const uint64_t delay_us = due_us > now ? due_us - now : 0;
  m.timer = shard_.timers().Add(shard_.Now() + std::chrono::microseconds(delay_us), &m);
}

void DeliveryShard::Dispatch(Message& m) {
  if (stopping_ || m.in_round) return;
  const uint64_t now = UnixMicros();
  std::vector<size_t> pending;
  for (size_t i = 0; i < m.env.recipients.size(); ++i) {
    if (m.env.recipients[i].state == queue::RecipientState::kPending) pending.push_back(i);
  }
  if (pending.empty()) return;
  m.in_round = true;
  ++rounds_in_flight_;
  if (m.env.expires_at_us != 0 && now >= m.env.expires_at_us) {
    // RFC 3463 4.4.7: delivery time expired. Bounce what is left.
    for (size_t i : pending) {
      queue::Recipient& r = m.env.recipients[i];
      r.state = queue::RecipientState::kBounced;
      ++stats_.bounced;
      m.notices.push_back({i, "4.4.7",
                          "message expired after " + AgeText(now - m.env.received_at_us) +
                              " in the queue; last error: " +
                              (r.last_reply.empty() ? "none" : r.last_reply),
                          "", DsnAction::kFailed});
      spdlog::info("expired id={} to=<{}> last=\"{}\"", m.id.ToString(), r.address, r.last_reply);
      if (metrics::EventLog* log = tel_.events()) {
        metrics::Event e("expired");
        e.Str("id", m.id.ToString())
            .Str("sender", m.env.sender)
            .Str("recipient", r.address)
            .Str("reply", r.last_reply)
            .Int("attempts", static_cast<int64_t>(m.env.attempts))
            .Num("delay_s", static_cast<double>(now - m.env.received_at_us) / 1e6);
        log->Write(std::move(e));
      }
    }
    FinishRound(m.id);
    return;
  }
  Route(m.id, std::move(pending));
}

io::Detached DeliveryShard::Route(queue::MessageId id, std::vector<size_t> recipients) {
  Message* m = messages_.at(id).get();
  // The routing itself holds the round open: results posted while a DNS
  // lookup below is pending must not finish the round early.
  ++m->jobs_out;
  std::unordered_map<std::string, Job> jobs;
  std::vector<std::string> order;
  std::unordered_map<std::string, MxLookup> mx_cache;  // per round, by domain
  for (size_t i : recipients) {
    const queue::Recipient& r = m->env.recipients[i];
    std::string domain = DomainOf(r.address);
    if (domain.empty()) domain = hostname_;  // <postmaster>
    const RouteConfig* route = config_.routes.empty() ? nullptr : FindRoute(config_.routes, domain);
    if (!config_.routes.empty() && route == nullptr) {
      // No route for this domain: a configuration gap, not a remote answer.
      PostResult(id, {i}, smtp::MakeReply(554, "5.4.4", "no route to domain " + domain), "");
      continue;
    }
    std::string key;
    std::vector<MxTarget> targets;
    const RouteType type = route ? route->type : RouteType::kMx;
    switch (type) {
      case RouteType::kMx: {
        if (!domain.empty() && domain.front() == '[') {
          // RFC 5321 §5.1: an address literal is delivered to that address, without DNS.
          // (Only trusted clients could relay to one: gateway RelayAllowed.)
          const std::optional<io::IpAddress> ip = AddressLiteralIp(domain);
          if (!ip) {
            PostResult(id, {i},
                       smtp::MakeReply(550, "5.1.2", "cannot deliver to address literal " + domain),
                       "");
            continue;
          }
          key = "literal:" + ip->ToString();
          targets.push_back(MxTarget{ip->ToString(), 0, {*ip}});
          break;
        }
        // Domains that share MX hosts share one destination (KumoMTA's
        // "site"): the key is the set of MX host names.
        auto found = mx_cache.find(domain);
        if (found == mx_cache.end()) {
          const MonoTime started = shard_.Now();
          MxLookup looked = co_await resolver_->LookupMx(domain);
          tel_.Dns(index_, DeliveryTelemetry::DnsType::kMx, looked.status,
                   std::chrono::duration<double>(shard_.Now() - started).count());
          found = mx_cache.emplace(domain, std::move(looked)).first;
          m = messages_.at(id).get();
        }
        const MxLookup& mx = found->second;
        if (mx.status != MxLookup::Status::kOk) {
          PostResult(id, {i}, MxFailure(domain, mx), "");
          continue;
        }
        key = mx.site;
        targets = mx.targets;
        break;
      }
      case RouteType::kSmarthost:
        key = "smarthost:" + route->name;
        break;
      case RouteType::kLmtp:
        key = "lmtp:" + route->name;
        break;
      case RouteType::kMaildir:
        key = "maildir:" + route->name;
        break;
    }
    auto [it, fresh] = jobs.try_emplace(key);
    Job& job = it->second;
    if (fresh) {
      order.push_back(key);
      job.id = id;
      job.owner = index_;
      job.key = key;
      job.route = route;
      job.domain = domain;
      job.mx_targets = std::move(targets);
      job.message.sender = m->env.sender;
      job.message.body_type = static_cast<smtp::BodyType>(m->env.body_type);
      job.message.smtputf8 = m->env.smtputf8;
      job.message.ret = static_cast<smtp::Ret>(m->env.ret);
      job.message.envid = m->env.envid;
      job.message.body = m->body.get();  // null: the worker reads it from the spool
    }
    job.rcpts.push_back(i);
    job.message.recipients.push_back({r.address, r.notify, r.orcpt});
  }
  for (const std::string& key : order) {
    Job& job = jobs[key];
    ++m->jobs_out;
    DeliveryShard* dest = &Peer(ShardFor(key));
    CrossPost(*dest, [dest, j = std::move(job)]() mutable { dest->Enqueue(std::move(j)); });
  }
  if (--m->jobs_out == 0) FinishRound(id);
}

void DeliveryShard::PostResult(const queue::MessageId& id, std::vector<size_t> rcpts,
                               const smtp::Reply& reply, const std::string& remote) {
  JobResult r;
  r.id = id;
  {
    const Message& m = *messages_.at(id);
    const std::string domain = DomainOf(m.env.recipients[rcpts.front()].address);
    r.destination = DestinationLabel(domain.empty() ? hostname_ : domain);
  }
  r.replies.assign(rcpts.size(), reply);
  r.rcpts = std::move(rcpts);
  r.remote = remote;
  ++messages_.at(id)->jobs_out;
  CrossPost(*this, [this, res = std::move(r)]() mutable { OnJobResult(std::move(res)); });
}

smtp::Reply DeliveryShard::MxFailure(const std::string& domain, const MxLookup& mx) {
  switch (mx.status) {
    case MxLookup::Status::kNoSuchDomain:
      return smtp::MakeReply(550, "5.1.2", "domain " + domain + " not found: " + mx.error);
    case MxLookup::Status::kNullMx:
      // RFC 7505 §3: a null MX means the domain accepts no mail.
      return smtp::MakeReply(556, "5.1.10", "domain " + domain + " does not accept mail (null MX)");
    default:
      return smtp::MakeReply(451, "4.4.3", "DNS lookup for " + domain + " failed: " + mx.error);
  }
}

void DeliveryShard::OnJobResult(JobResult result) {
  auto it = messages_.find(result.id);
  if (it == messages_.end()) {
    SLUICE_BUG("delivery result for an unknown message");
    return;
  }
  Message& m = *it->second;
  DeliveryTelemetry::DestinationSeries& series = SeriesFor(result.destination);
  const uint64_t now_us = UnixMicros();
  for (size_t k = 0; k < result.rcpts.size() && k < result.replies.size(); ++k) {
    queue::Recipient& r = m.env.recipients[result.rcpts[k]];
    const smtp::Reply& reply = result.replies[k];
    r.last_reply = OneLine(reply);
    ++stats_.attempts;
    const char* outcome = reply.code >= 200 && reply.code < 300 ? "delivered"
                          : reply.code >= 500                   ? "bounced"
                                                                : "deferred";
    const bool deferred = reply.code < 200 || (reply.code >= 300 && reply.code < 500);
    if (deferred && tel_.events() != nullptr) {
      // Written when the round ends and the next attempt is known.
      m.deferrals.push_back({result.rcpts[k], result.destination, result.remote, reply.code});
    } else if (metrics::EventLog* log = tel_.events()) {
      metrics::Event e(outcome);
      e.Str("id", m.id.ToString())
          .Str("sender", m.env.sender)
          .Str("recipient", r.address)
          .Str("destination", result.destination)
          .Str("remote", result.remote)
          .Int("code", reply.code)
          .Str("reply", r.last_reply)
          .Int("attempts", static_cast<int64_t>(m.env.attempts + 1))
          .Num("delay_s", static_cast<double>(now_us - m.env.received_at_us) / 1e6);
      log->Write(std::move(e));
    }
    if (reply.code >= 200 && reply.code < 300) {
      r.state = queue::RecipientState::kDelivered;
      ++stats_.delivered;
      series.delivered->Inc(index_);
      tel_.delivery_seconds().Observe(
          index_, static_cast<double>(now_us - m.env.received_at_us) / 1e6);
      // RFC 3461 §5.2.2: NOTIFY=SUCCESS gets "delivered" from a final
      // delivery (maildir, LMTP) and "relayed" when the next hop cannot
      // carry the request on (no DSN extension); otherwise the next hop
      // reports.
      if ((r.notify & smtp::kNotifySuccess) && !(r.notify & smtp::kNotifyNever) &&
          (result.final_delivery || !result.peer_dsn)) {
        m.notices.push_back({result.rcpts[k], StatusOf(reply), r.last_reply,
                             RemoteMtaOf(result.remote),
                             result.final_delivery ? DsnAction::kDelivered : DsnAction::kRelayed});
      }
      spdlog::info("delivered id={} to=<{}> relay={} reply=\"{}\"", m.id.ToString(), r.address,
                   result.remote.empty() ? "-" : result.remote, r.last_reply);
    } else if (reply.code >= 500) {
      r.state = queue::RecipientState::kBounced;
      ++stats_.bounced;
      series.bounced->Inc(index_);
      if (WantsFailureDsn(r.notify)) {
        m.notices.push_back({result.rcpts[k], StatusOf(reply), r.last_reply,
                             RemoteMtaOf(result.remote), DsnAction::kFailed});
      }
      spdlog::info("bounced id={} to=<{}> relay={} reply=\"{}\"", m.id.ToString(), r.address,
                   result.remote.empty() ? "-" : result.remote, r.last_reply);
    } else {
      ++r.attempts;
      ++stats_.deferred;
      series.deferred->Inc(index_);
      spdlog::info("deferred id={} to=<{}> relay={} reply=\"{}\"", m.id.ToString(), r.address,
                   result.remote.empty() ? "-" : result.remote, r.last_reply);
    }
  }
  if (m.jobs_out > 0 && --m.jobs_out == 0) FinishRound(m.id);
}

namespace {
struct CommitWait {
  std::coroutine_handle<>* slot;
  bool ready;
  bool await_ready() const noexcept { return ready; }
  void await_suspend(std::coroutine_handle<> h) noexcept { *slot = h; }
  void await_resume() const noexcept {}
};
}  // namespace

void DeliveryShard::OnCommitted(uint64_t token, queue::CommitStatus status) {
  // Writer thread: hand over to the shard.
  shard_.Post([this, token, status] {
    auto it = commits_.find(token);
    if (it == commits_.end()) return;
    it->second.status = status;
    it->second.done = true;
    if (it->second.waiter) shard_.Schedule(it->second.waiter);
  });
}

io::Detached DeliveryShard::FinishRound(queue::MessageId id) {
  auto it = messages_.find(id);
  if (it == messages_.end()) co_return;
  ++finishing_;
  Message* m = it->second.get();
  ++m->env.attempts;
  const uint64_t now = UnixMicros();
  bool pending = false;
  for (const queue::Recipient& r : m->env.recipients) {
    pending = pending || r.state == queue::RecipientState::kPending;
  }

  std::vector<Message::Notice> to_report = std::move(m->notices);
  m->notices.clear();
  if (!to_report.empty() && m->env.sender.empty()) {
    // Never bounce a bounce (RFC 3461 §6.2 and common sense: no loops).
    spdlog::warn("double bounce id={}: the null-sender message failed; dropped", id.ToString());
    to_report.clear();
  }

  bool committed = false;
  if (!to_report.empty()) {
    // Named awaiter, trivially-destructible captures: g++ 12 mis-destroys
    // lambda temporaries inside co_await expressions (GCC PR 95599 family).
    std::shared_ptr<const std::string> original = m->body.get();
    if (!original) {
      auto read = pool_.Run(shard_, [this, id] { return ReadBodyBlocking(id); });
      std::optional<std::string> stored = co_await read;
      if (stored) original = std::make_shared<const std::string>(std::move(*stored));
    }
    DsnInput in;
    in.reporting_mta = hostname_;
    in.original_sender = m->env.sender;
    in.envid = m->env.envid;
    in.ret = static_cast<smtp::Ret>(m->env.ret);
    in.arrival_us = m->env.received_at_us;
    in.smtputf8 = m->env.smtputf8;
    const std::string empty;
    in.original_message = original ? *original : empty;
    for (const Message::Notice& f : to_report) {
      const queue::Recipient& r = m->env.recipients[f.rcpt];
      DsnRecipient dr;
      dr.final_recipient = r.address;
      dr.original_recipient = r.orcpt;
      dr.action = f.action;
      dr.status = f.status;
      dr.remote_mta = f.remote;
      dr.diagnostic = f.diagnostic;
      dr.last_attempt_us = now;
      in.recipients.push_back(std::move(dr));
    }
    Dsn dsn = BuildDsn(in, now);

    queue::Envelope bounce;
    bounce.sender = "";
    bounce.recipients.push_back({m->env.sender, smtp::kNotifyNever, "", queue::RecipientState::kPending, 0, ""});
    bounce.received_at_us = now;
    bounce.next_due_us = now;
    bounce.expires_at_us = now + static_cast<uint64_t>(config_.bounce_max_age.count()) * kMicros;
    bounce.body_size = dsn.message.size();
    bounce.client_ip = "127.0.0.1";
    bounce.helo = hostname_;
    bounce.listener = "bounce";
    const queue::MessageId bounce_id = ids_.Next();

    if (pending) m->env.next_due_us = now + Backoff(m->env.attempts);
    std::vector<queue::Spool::Change> changes(2);
    changes[0].kind = queue::Spool::Change::Kind::kPut;
    changes[0].id = bounce_id;
    changes[0].meta = queue::EncodeEnvelope(bounce);
    changes[0].body = dsn.message;
    changes[1].id = id;
    if (pending) {
      changes[1].kind = queue::Spool::Change::Kind::kUpdateEnvelope;
      changes[1].meta = queue::EncodeEnvelope(m->env);
    } else {
      changes[1].kind = queue::Spool::Change::Kind::kRemove;
    }
    const uint64_t token = next_token_++;
    commits_[token] = {};
    queue::CommitStatus status = queue::CommitStatus::kIoError;
    if (spool_.Commit(std::move(changes), this, token) == queue::Admit::kAccepted) {
      PendingCommit& pc = commits_[token];
      co_await CommitWait{&pc.waiter, pc.done};
      status = commits_[token].status;
    }
    commits_.erase(token);
    if (status == queue::CommitStatus::kOk) {
      committed = true;
      ++stats_.dsns;
      for (const Message::Notice& f : to_report) tel_.Dsn(index_, f.action);
      if (metrics::EventLog* log = tel_.events()) {
        metrics::Event e("dsn");
        static constexpr const char* kActions[] = {"failed", "delayed", "delivered", "relayed"};
        e.Str("id", bounce_id.ToString())
            .Str("for_id", id.ToString())
            .Str("to", m->env.sender)
            .Str("action", kActions[static_cast<size_t>(to_report.front().action)])
            .Int("recipients", static_cast<int64_t>(to_report.size()));
        log->Write(std::move(e));
      }
      spdlog::info("bounce id={} for={} to=<{}>", bounce_id.ToString(), id.ToString(),
                   m->env.sender);
      Adopt(bounce_id, std::move(bounce));
    } else {
      // Not recorded: these recipients are tried again later and bounce then.
      spdlog::warn("could not queue the bounce for {}: {}; will retry", id.ToString(),
                   queue::ToString(status));
      for (const Message::Notice& f : to_report) {
        if (f.action == DsnAction::kFailed) {
          m->env.recipients[f.rcpt].state = queue::RecipientState::kPending;
        }
      }
      pending = true;
    }
  }
  m->in_round = false;
  m->body.Release();  // only the first attempt is served from memory
  --rounds_in_flight_;
  --finishing_;

  if (!pending) {
    if (!committed) spool_.Remove(id);  // unsynced: a lost removal means a duplicate, never a loss
    messages_.erase(id);
    co_return;
  }
  if (!committed) {
    m->env.next_due_us = now + Backoff(m->env.attempts);
    spool_.UpdateEnvelope(id, queue::EncodeEnvelope(m->env));
  }
  if (metrics::EventLog* log = tel_.events()) {
    for (const Message::Deferral& d : m->deferrals) {
      const queue::Recipient& r = m->env.recipients[d.rcpt];
      metrics::Event e("deferred");
      e.Str("id", id.ToString())
          .Str("sender", m->env.sender)
          .Str("recipient", r.address)
          .Str("destination", d.destination)
          .Str("remote", d.remote)
          .Int("code", d.code)
          .Str("reply", r.last_reply)
          .Int("attempts", static_cast<int64_t>(m->env.attempts))
          .Num("delay_s", static_cast<double>(now - m->env.received_at_us) / 1e6)
          .Num("next_attempt_s",
               static_cast<double>(m->env.next_due_us > now ? m->env.next_due_us - now : 0) / 1e6);
      log->Write(std::move(e));
    }
  }
  m->deferrals.clear();
  if (!stopping_) Schedule(*m, m->env.next_due_us);
}

// ---------------------------------------------------------------------------
// Destination side

void DeliveryShard::Enqueue(Job job) {
  auto [it, fresh] = destinations_.try_emplace(job.key);
  if (fresh) {
    auto d = std::make_unique<Destination>();
    d->key = job.key;
    d->route = job.route;
    d->type = job.route ? job.route->type : RouteType::kMx;
    d->domain = job.domain;
    d->label = DestinationLabel(job.domain);
    if (job.route) {
      d->max_connections = std::max(1u, job.route->max_connections);
      d->max_messages_per_connection = std::max(1u, job.route->max_messages_per_connection);
      d->rate = job.route->max_message_rate;
    }
    it->second = std::move(d);
  }
  Destination& d = *it->second;
  d.last_used_us = UnixMicros();
  if (!job.mx_targets.empty()) d.mx_targets = job.mx_targets;
  if (stopping_) {
    Report(job, {smtp::MakeReply(451, "4.3.2", "delivery is shutting down")}, "");
    return;
  }
  if (d.failing_until_us > UnixMicros()) {
    // RFC 5321 §4.5.4.1: remember unreachable hosts instead of burning an
    // attempt per message.
    Report(job, {d.failure}, d.failure_remote);
    return;
  }
  d.ready.push_back(std::move(job));
  WakeWorker(d);
}

void DeliveryShard::WakeWorker(Destination& d) {
  while (!d.idle.empty()) {
    IdleWaiter* w = d.idle.back();
    d.idle.pop_back();
    if (w->Resume(true)) return;  // a parked connection takes it
  }
  MaybeStartWorker(d);
}

void DeliveryShard::MaybeStartWorker(Destination& d) {
  if (stopping_ || d.ready.empty() || d.workers >= d.max_connections) return;
  // One new connection per job waiting beyond what running workers will take.
  if (d.ready.size() <= d.workers && d.type != RouteType::kMaildir) return;
  RunWorker(&d);
}

void DeliveryShard::Report(const Job& job, std::vector<smtp::Reply> replies,
                           const std::string& remote, bool peer_dsn) {
  JobResult r;
  r.destination = DestinationLabel(job.domain);
  const RouteType type = job.route ? job.route->type : RouteType::kMx;
  r.final_delivery = type == RouteType::kMaildir || type == RouteType::kLmtp;
  r.peer_dsn = peer_dsn;
  r.id = job.id;
  r.rcpts = job.rcpts;
  if (replies.size() == 1 && job.rcpts.size() > 1) replies.resize(job.rcpts.size(), replies[0]);
  r.replies = std::move(replies);
  r.remote = remote;
  DeliveryShard* owner = &Peer(job.owner);
  CrossPost(*owner,
            [owner, res = std::move(r)]() mutable { owner->OnJobResult(std::move(res)); });
}

void DeliveryShard::DeferAll(Destination& d, const smtp::Reply& reply, const std::string& remote) {
  while (!d.ready.empty()) {
    Report(d.ready.front(), {reply}, remote);
    d.ready.pop_front();
  }
}

io::Task<bool> DeliveryShard::TakeJob(Destination* d, Job* job) {
  for (;;) {
    if (!d->ready.empty()) {
      *job = std::move(d->ready.front());
      d->ready.pop_front();
      co_return true;
    }
    if (stopping_) co_return false;
    IdleWaiter w;
    w.shard = &shard_;
    w.timer = shard_.timers().Add(shard_.Now() + config_.idle_timeout, &w);
    d->idle.push_back(&w);
    co_await ParkAwaiter{&w};
    shard_.timers().Cancel(w.timer);
    std::erase(d->idle, &w);
    if (!d->ready.empty()) continue;
    if (!w.woken) co_return false;  // idle timeout or shutdown
  }
}

io::Task<bool> DeliveryShard::Connect(Destination* d, size_t* next, io::Connection** out_conn,
                                      std::string* remote, smtp::Reply* failure,
                                      std::string* host) {
  struct Target {
    std::string host;
    io::IpAddress ip;
  };
  std::vector<Target> targets;
  uint16_t port = d->route ? d->route->port : 25;
  if (d->type == RouteType::kMx) {
    for (const MxTarget& t : d->mx_targets) {
      for (const io::IpAddress& ip : t.addresses) targets.push_back({t.host, ip});
    }
  } else {
    const MonoTime started = shard_.Now();
    auto ips = co_await resolver_->LookupHost(d->route->host);
    tel_.Dns(index_, DeliveryTelemetry::DnsType::kHost,
             ips.ok() ? MxLookup::Status::kOk
                      : (ips.error().code == ENOENT ? MxLookup::Status::kNoSuchDomain
                                                    : MxLookup::Status::kTempFail),
             std::chrono::duration<double>(shard_.Now() - started).count());
    if (!ips.ok()) {
      *failure = smtp::MakeReply(451, "4.4.3", "cannot resolve " + d->route->host + ": " +
                                                   ips.error().message);
      co_return false;
    }
    for (const io::IpAddress& ip : *ips) targets.push_back({d->route->host, ip});
  }
  if (*next == 0) {
    *failure = smtp::MakeReply(451, "4.4.1", "no address to connect to for " + d->key);
  }
  // RFC 5321 §5.1: try at least two addresses; we try up to mx_address_limit (an MX lookup
  // yields no more than that; a smarthost's name may have more).
  const size_t limit = std::min<size_t>(targets.size(), std::max(config_.mx_address_limit, 1u));
  while (*next < limit && !stopping_) {
    const Target& t = targets[(*next)++];
    auto addr = io::SocketAddress::Parse(t.ip.ToString(), port);
    if (!addr.ok()) continue;
    *remote = t.host + "[" + t.ip.ToString() + "]:" + std::to_string(port);
    *host = t.host;
    ++stats_.connections;
    Result<int> fd = co_await io::ConnectTcp(shard_, *addr, config_.connect_timeout);
    if (!fd.ok()) {
      ++stats_.connection_failures;
      *failure = smtp::MakeReply(451, "4.4.1", "connect to " + *remote + ": " + fd.error().message);
      continue;
    }
    *out_conn = new io::Connection(shard_, *fd);
    (*out_conn)->Start();
    co_return true;
  }
  co_return false;
}

io::Detached DeliveryShard::RunWorker(Destination* d) {
  ++d->workers;
  ++workers_;
  if (d->type == RouteType::kMaildir) {
    Job job;
    for (;;) {
      const bool got = co_await TakeJob(d, &job);
      if (!got) break;
      co_await DeliverMaildir(d, std::move(job));
    }
  } else {
    io::Connection* raw = nullptr;
    std::string remote;
    smtp::Reply failure;
    bool connected = false;
    std::unique_ptr<io::Connection> conn;
    std::unique_ptr<SmtpClient> client;
    ClientOptions options = client_options_;
    options.lmtp = d->type == RouteType::kLmtp;
    // Connect and greet. With opportunistic TLS, a host whose handshake
    // fails is remembered (broken_tls_) and reached again in plaintext.
    // Address after address until one greets us, trying no more than mx_session_limit hosts
    // that answered (Postfix's smtp_mx_session_limit); a TLS failure on an opportunistic route
    // retries the same address in plaintext once, and that retry is not another session.
    size_t next_address = 0;
    unsigned sessions = 0;
    bool plain_retry = false;
    while (!connected) {
      std::string host;
      const bool ok = co_await Connect(d, &next_address, &raw, &remote, &failure, &host);
      if (!ok) break;
      if (!plain_retry)
        ++sessions;
      plain_retry = false;
      conn.reset(raw);
      d->connections.push_back(conn.get());
      SeriesFor(d->label).connections->Add(index_, 1);
      ClientOptions attempt = options;
      const RouteConfig* route = d->route;
      attempt.tls_policy = route ? route->tls : ClientOptions::TlsPolicy::kOpportunistic;
      attempt.tls_context = tls_context_;
      attempt.tls_server_name =
          route && !route->tls_server_name.empty() ? route->tls_server_name : host;
      if (route && !route->auth_user.empty()) {
        attempt.auth_user = route->auth_user;
        attempt.auth_password = route->auth_password;
      }
      const uint64_t now = UnixMicros();
      auto broken = broken_tls_.find(host);
      if (broken != broken_tls_.end() && broken->second <= now) {
        broken_tls_.erase(broken);
        broken = broken_tls_.end();
      }
      bool skipped_tls = false;
      if (broken != broken_tls_.end() &&
          attempt.tls_policy == ClientOptions::TlsPolicy::kOpportunistic) {
        attempt.tls_policy = ClientOptions::TlsPolicy::kDisabled;
        skipped_tls = true;
      }
      client = std::make_unique<SmtpClient>(*conn, attempt);
      smtp::Reply hello = co_await client->Handshake();
      if (attempt.tls_policy != ClientOptions::TlsPolicy::kDisabled || skipped_tls) {
        const char* result = skipped_tls             ? "skipped_broken"
                             : client->tls_failed()  ? "failed"
                             : client->tls_verified() ? "verified"
                             : client->secure()       ? "unverified"
                                                      : "not_offered";
        tel_.Tls(index_, result);
      }
      if (hello.code >= 200 && hello.code < 300) {
        connected = true;
        break;
      }
      failure = hello.code >= 500 ? smtp::MakeReply(451, "4.4.1", remote + " refused us: " + OneLine(hello))
                                  : hello;
      std::erase(d->connections, conn.get());
      SeriesFor(d->label).connections->Add(index_, -1);
      co_await conn->Close();
      // Credentials never go in plaintext, so a route with AUTH gains
      // nothing from the fallback: defer and try TLS again next time.
      const bool retry_plain = client->tls_failed() && attempt.auth_user.empty() &&
                               attempt.tls_policy == ClientOptions::TlsPolicy::kOpportunistic;
      client.reset();
      conn.reset();
      if (retry_plain) {
        // RFC 7435: opportunistic TLS must not make mail undeliverable.
        spdlog::info(
            "destination {}: TLS with {} failed ({}); retrying in plaintext and "
            "skipping TLS with it for an hour",
            d->key, host, OneLine(failure));
        broken_tls_[host] = now + 3600 * kMicros;
        --next_address;  // the same address again
        plain_retry = true;
        continue;
      }
      if (sessions >= config_.mx_session_limit)
        break;
    }
    if (!connected) {
      ++stats_.connection_failures;
      SeriesFor(d->label).connection_failures->Inc(index_);
      if (failure.code < 500) {
        d->failing_until_us = UnixMicros() +
                              static_cast<uint64_t>(config_.destination_backoff.count()) * kMicros;
      }
      d->failure = failure;
      d->failure_remote = remote;
      spdlog::warn("destination {}: {}", d->key, OneLine(failure));
      DeferAll(*d, failure, remote);
    } else {
      unsigned sent = 0;
      Job job;
      Job next;
      bool have_next = false;  // `next` was taken and its envelope rides behind job's content
      for (;;) {
        if (have_next) {
          job = std::move(next);
          have_next = false;
        } else {
          const bool got = co_await TakeJob(d, &job);
          if (!got) break;
        }
        if (d->rate > 0) {
          // Reserve the next slot before sleeping, so workers of the same
          // destination queue up one interval apart instead of all waking
          // for the same instant.
          const double now = static_cast<double>(UnixMicros());
          const double slot = std::max(d->next_send_us, now);
          d->next_send_us = slot + 1e6 / d->rate;
          if (slot > now) {
            co_await io::Sleep(shard_,
                               std::chrono::microseconds(static_cast<int64_t>(slot - now)));
          }
        }
        if (!job.message.body) {
          const queue::MessageId id = job.id;
          auto read = pool_.Run(shard_, [this, id] { return ReadBodyBlocking(id); });
          std::optional<std::string> body = co_await read;
          if (!body) {
            Report(job,
                   {smtp::MakeReply(451, "4.3.0", "cannot read the message from the spool")}, "");
            continue;
          }
          job.message.body = std::make_shared<const std::string>(std::move(*body));
        }
        // The next job goes out behind this one's content when it is ready to go: queued, its
        // body in memory (nothing to wait for between its DATA and its content), no rate limit
        // to wait for, and room on this connection.
        // Not behind a large body: its transfer time dwarfs the round trip saved, and the next
        // job would wait for it here instead of going to another connection.
        if (d->rate == 0 && !stopping_ && sent + 1 < d->max_messages_per_connection &&
            client->capabilities().pipelining && !d->ready.empty() &&
            d->ready.front().message.body && job.message.body->size() <= kChainBodyLimit) {
          next = std::move(d->ready.front());
          d->ready.pop_front();
          have_next = true;
        }
        TransactionResult result =
            co_await client->Send(job.message, have_next ? &next.message : nullptr);
        job.message.body.reset();
        Report(job, std::move(result.recipients), remote, client->capabilities().dsn);
        if (!result.connection_usable || ++sent >= d->max_messages_per_connection || stopping_) {
          if (have_next) {
            // Its content was never sent, so it was not delivered: back to the queue (or, when
            // stopping, deferred like every other queued job).
            if (stopping_) {
              Report(next, {smtp::MakeReply(451, "4.3.2", "delivery is shutting down")}, "");
            } else {
              d->ready.push_front(std::move(next));
              WakeWorker(*d);  // a parked connection, or a new one, takes it now
            }
            have_next = false;
          }
          break;
        }
      }
      co_await client->Quit();
      std::erase(d->connections, conn.get());
      SeriesFor(d->label).connections->Add(index_, -1);
      co_await conn->Close();
    }
  }
  --d->workers;
  --workers_;
  d->last_used_us = UnixMicros();
  if (!stopping_ && !d->ready.empty()) MaybeStartWorker(*d);
}

void DeliveryShard::SweepIdle() {
  // Destinations are made on demand for every MX site, smarthost or maildir a message goes to;
  // without this, a relay that has mailed a million domains would keep a million queues.
  const uint64_t now = UnixMicros();
  const uint64_t expiry = static_cast<uint64_t>(config_.destination_idle_expiry.count()) * kMicros;
  std::erase_if(destinations_, [now, expiry](const auto& entry) {
    const Destination& d = *entry.second;
    return d.ready.empty() && d.workers == 0 && d.idle.empty() && d.connections.empty() &&
           d.failing_until_us <= now && now - d.last_used_us >= expiry;
  });
  std::erase_if(broken_tls_, [now](const auto& entry) { return entry.second <= now; });
  // Cached metric handles by destination label: past the registry's bound every new label
  // resolves to the shared "other" series, but the cache would still hold one entry per label.
  if (series_.size() > kMaxCachedSeries)
    series_.clear();
}

std::optional<std::string> DeliveryShard::ReadBodyBlocking(const queue::MessageId& id) {
  auto body = spool_.ReadBody(id);
  if (!body.ok()) return std::nullopt;
  return std::move(*body);
}

std::vector<smtp::Reply> DeliveryShard::MaildirBlocking(const std::string& root, const Job& job) {
  std::vector<smtp::Reply> out;
  Result<std::string> stored = std::string();
  if (!job.message.body) stored = spool_.ReadBody(job.id);
  for (const OutboundRecipient& rcpt : job.message.recipients) {
    if (!stored.ok()) {
      out.push_back(smtp::MakeReply(451, "4.3.0", "cannot read the message from the spool"));
      continue;
    }
    const std::string& body = job.message.body ? *job.message.body : *stored;
    auto path = DeliverToMaildir(root, body, job.message.sender, rcpt.address);
    if (path.ok()) {
      out.push_back(smtp::MakeReply(250, "2.0.0", "delivered to maildir " + *path));
    } else {
      out.push_back(
          smtp::MakeReply(451, "4.3.0", "maildir " + root + ": " + path.error().message));
    }
  }
  return out;
}

io::Task<void> DeliveryShard::DeliverMaildir(Destination* d, Job job) {
  // fsync-heavy work goes to the pool; the coroutine frame keeps `job` alive.
  const std::string& root = d->route->path;
  const Job* j = &job;
  auto work = pool_.Run(shard_, [this, &root, j] { return MaildirBlocking(root, *j); });
  std::vector<smtp::Reply> replies = co_await work;
  Report(job, std::move(replies), "maildir:" + root);
}

// ---------------------------------------------------------------------------
// Shutdown

void DeliveryShard::BeginShutdown() {
  if (stopping_) return;
  stopping_ = true;
  for (auto& [id, m] : messages_) {
    shard_.timers().Cancel(m->timer);
    m->timer = {};
  }
  for (auto& [key, d] : destinations_) {
    DeferAll(*d, smtp::MakeReply(451, "4.3.2", "delivery is shutting down"), "");
    for (IdleWaiter* w : d->idle) w->Resume(false);  // "no job": the worker says QUIT
    d->idle.clear();
  }
}

void DeliveryShard::Abort() {
  for (auto& [key, d] : destinations_) {
    for (io::Connection* c : d->connections) c->Abort();
  }
}

bool DeliveryShard::quiescent() const {
  // Local work only. After BeginShutdown nothing new starts here (no
  // dispatch, no new workers), so once this is true it can only become false
  // again through a post from a peer, and those are counted: the gateway
  // quits a shard only when every shard is quiescent and in_flight() is 0.
  return workers_ == 0 && finishing_ == 0 && rounds_in_flight_ == 0 && commits_.empty();
}

std::string DeliveryShard::DestinationLabel(const std::string& domain) const {
  const RouteConfig* route = config_.routes.empty() ? nullptr : FindRoute(config_.routes, domain);
  if (route == nullptr) return config_.routes.empty() ? domain : "unrouted";
  return route->type == RouteType::kMx ? domain : route->name;
}

DeliveryTelemetry::DestinationSeries& DeliveryShard::SeriesFor(const std::string& label) {
  auto it = series_.find(label);
  if (it == series_.end()) it = series_.emplace(label, tel_.Series(label)).first;
  return it->second;
}

DeliveryShard::QueueSnapshot DeliveryShard::Snapshot() const {
  QueueSnapshot snap;
  snap.queues = destinations_.size();
  for (const auto& [id, m] : messages_) {
    const uint64_t received = m->env.received_at_us;
    if (m->in_round) {
      ++snap.in_flight;
    } else if (m->env.attempts > 0) {
      ++snap.deferred;
    } else {
      ++snap.scheduled;
    }
    if (snap.oldest_received_us == 0 || received < snap.oldest_received_us) {
      snap.oldest_received_us = received;
    }
    std::string last;
    for (const queue::Recipient& r : m->env.recipients) {
      if (r.state != queue::RecipientState::kPending) continue;
      std::string domain = DomainOf(r.address);
      std::string label = DestinationLabel(domain.empty() ? hostname_ : domain);
      if (label == last) continue;  // count a message once per destination (mostly)
      last = label;
      QueueSnapshot::PerDestination& d = snap.destinations[label];
      ++d.messages;
      if (d.oldest_received_us == 0 || received < d.oldest_received_us) {
        d.oldest_received_us = received;
      }
    }
  }
  return snap;
}

void DeliveryShard::StopResolver() {
  if (resolver_) resolver_->Shutdown();
}

bool DeliveryShard::stopped() const { return !resolver_ || resolver_->idle(); }

}  // namespace sluice::delivery
