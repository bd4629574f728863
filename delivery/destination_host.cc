#include "delivery/destination_host.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "base/log.h"
#include "delivery/delivery_shard.h"
#include "delivery/dsn/maildir.h"
#include "delivery/outcome.h"

namespace sluice::delivery {

namespace {

// Chaining (the next envelope behind a final dot) only after bodies up to this size.
constexpr size_t kChainBodyLimit = 1 << 20;

struct ParkAwaiter {
  IdleWaiter* w;
  bool await_ready() const noexcept {
    return false;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    w->handle = h;
  }
  void await_resume() const noexcept {
  }
};

smtp::Reply ShuttingDown() {
  return smtp::MakeReply(451, "4.3.2", "delivery is shutting down");
}

}  // namespace

DestinationHost::DestinationHost(DeliveryContext& ctx, DeliveryShard& shard)
    : ctx_(ctx), shard_(shard) {
  const DeliveryConfig& config = ctx_.config;
  client_options_.helo_name = config.helo_name.empty() ? ctx_.hostname : config.helo_name;
  client_options_.greeting_timeout = config.command_timeout;
  client_options_.helo_timeout = config.command_timeout;
  client_options_.mail_timeout = config.command_timeout;
  client_options_.rcpt_timeout = config.command_timeout;
  client_options_.data_init_timeout = config.command_timeout;
  client_options_.data_block_timeout = config.data_timeout;
  client_options_.data_done_timeout = config.data_timeout;
  client_options_.tls_timeout = config.tls_timeout;
}

DestinationHost::~DestinationHost() {
  ctx_.shard.timers().Cancel(sweeper_.timer);
}

void DestinationHost::Start() {
  sweeper_.host = this;
  sweeper_.Arm();
}

void DestinationHost::Sweeper::Arm() {
  const auto interval =
      std::clamp<std::chrono::seconds>(host->ctx_.config.destination_idle_expiry / 2,
                                       std::chrono::seconds(1), std::chrono::seconds(30));
  timer = host->ctx_.shard.timers().Add(host->ctx_.shard.Now() + interval, this);
}

void DestinationHost::Sweeper::OnTimer() {
  timer = {};
  host->SweepIdle();
  if (!host->ctx_.stopping)
    Arm();
}

void DestinationHost::SweepIdle() {
  // Destinations are made on demand for every MX site, smarthost or maildir a message goes to;
  // without this, a relay that has mailed a million domains would keep a million queues.
  const uint64_t now = ctx_.WallMicros();
  const uint64_t expiry =
      static_cast<uint64_t>(ctx_.config.destination_idle_expiry.count()) * kMicrosPerSecond;
  std::erase_if(destinations_,
                [now, expiry](const auto& entry) { return entry.second->Expired(now, expiry); });
  tls_fallback_.Sweep(now);
  ctx_.TrimSeriesCache();
}

void DestinationHost::Enqueue(Job job) {
  auto [it, fresh] = destinations_.try_emplace(job.key);
  if (fresh)
    it->second = std::make_unique<Destination>(job, ctx_.DestinationLabel(job.domain));
  Destination& d = *it->second;
  const uint64_t now = ctx_.WallMicros();
  d.last_used_us = now;
  if (!job.mx_targets.empty())
    d.mx_targets = job.mx_targets;
  if (ctx_.stopping) {
    Report(job, {ShuttingDown()}, "");
    return;
  }
  if (d.backoff.Failing(now)) {
    Report(job, {d.backoff.reply()}, d.backoff.remote());
    return;
  }
  d.ready.push_back(std::move(job));
  WakeWorker(d);
}

void DestinationHost::WakeWorker(Destination& d) {
  while (!d.idle.empty()) {
    IdleWaiter* w = d.idle.back();
    d.idle.pop_back();
    if (w->Resume(true))
      return;  // a parked connection takes it
  }
  MaybeStartWorker(d);
}

void DestinationHost::MaybeStartWorker(Destination& d) {
  if (!ctx_.stopping && d.WantsWorker())
    RunWorker(&d);
}

void DestinationHost::Report(const Job& job, std::vector<smtp::Reply> replies,
                             const std::string& remote, bool peer_dsn) {
  JobResult r;
  r.destination = ctx_.DestinationLabel(job.domain);
  const RouteType type = job.route ? job.route->type : RouteType::kMx;
  r.final_delivery = type == RouteType::kMaildir || type == RouteType::kLmtp;
  r.peer_dsn = peer_dsn;
  r.id = job.id;
  r.rcpts = job.rcpts;
  if (replies.size() == 1 && job.rcpts.size() > 1)
    replies.resize(job.rcpts.size(), replies[0]);
  r.replies = std::move(replies);
  r.remote = remote;
  shard_.SendResult(job.owner, std::move(r));
}

void DestinationHost::DeferAll(Destination& d, const smtp::Reply& reply,
                               const std::string& remote) {
  while (!d.ready.empty()) {
    Report(d.ready.front(), {reply}, remote);
    d.ready.pop_front();
  }
}

io::Task<bool> DestinationHost::TakeJob(Destination* d, Job* job) {
  for (;;) {
    if (!d->ready.empty()) {
      *job = std::move(d->ready.front());
      d->ready.pop_front();
      co_return true;
    }
    if (ctx_.stopping)
      co_return false;
    IdleWaiter w;
    w.shard = &ctx_.shard;
    w.timer = ctx_.shard.timers().Add(ctx_.shard.Now() + ctx_.config.idle_timeout, &w);
    d->idle.push_back(&w);
    co_await ParkAwaiter{&w};
    ctx_.shard.timers().Cancel(w.timer);
    std::erase(d->idle, &w);
    if (!d->ready.empty())
      continue;
    if (!w.woken)
      co_return false;  // idle timeout or shutdown
  }
}

io::Task<std::vector<DestinationHost::Address>> DestinationHost::Addresses(Destination* d,
                                                                           smtp::Reply* failure) {
  std::vector<Address> out;
  *failure = smtp::MakeReply(451, "4.4.1", "no address to connect to for " + d->key);
  if (d->type == RouteType::kMx) {
    for (const MxTarget& t : d->mx_targets) {
      for (const io::IpAddress& ip : t.addresses)
        out.push_back({t.host, ip});
    }
  } else {
    const MonoTime started = ctx_.shard.Now();
    auto ips = co_await ctx_.resolver->LookupHost(d->route->host);
    ctx_.tel.Dns(ctx_.index, DeliveryTelemetry::DnsType::kHost,
                 ips.ok() ? MxLookup::Status::kOk
                          : (ips.error().code == ENOENT ? MxLookup::Status::kNoSuchDomain
                                                        : MxLookup::Status::kTempFail),
                 std::chrono::duration<double>(ctx_.shard.Now() - started).count());
    if (!ips.ok()) {
      *failure = smtp::MakeReply(451, "4.4.3",
                                 "cannot resolve " + d->route->host + ": " + ips.error().message);
      co_return out;
    }
    for (const io::IpAddress& ip : *ips)
      out.push_back({d->route->host, ip});
  }
  // RFC 5321 §5.1: try at least two addresses; we try up to mx_address_limit (an MX lookup
  // yields no more than that; a smarthost's name may have more).
  out.resize(std::min<size_t>(out.size(), std::max(ctx_.config.mx_address_limit, 1u)));
  co_return out;
}

ClientOptions DestinationHost::OptionsFor(const Destination& d, const std::string& host,
                                          bool* skipped_tls) {
  ClientOptions options = client_options_;
  options.lmtp = d.type == RouteType::kLmtp;
  const RouteConfig* route = d.route;
  options.tls_policy = route ? route->tls : ClientOptions::TlsPolicy::kOpportunistic;
  options.tls_context = tls_context_;
  options.tls_server_name =
      route && !route->tls_server_name.empty() ? route->tls_server_name : host;
  if (route && !route->auth_user.empty()) {
    options.auth_user = route->auth_user;
    options.auth_password = route->auth_password;
  }
  *skipped_tls = false;
  if (options.tls_policy == ClientOptions::TlsPolicy::kOpportunistic &&
      tls_fallback_.Skip(host, ctx_.WallMicros())) {
    options.tls_policy = ClientOptions::TlsPolicy::kDisabled;
    *skipped_tls = true;
  }
  return options;
}

io::Task<bool> DestinationHost::Open(Destination* d, Session* session, smtp::Reply* failure) {
  const std::vector<Address> addresses = co_await Addresses(d, failure);
  const uint16_t port = d->route ? d->route->port : 25;
  DeliveryTelemetry::DestinationSeries& series = ctx_.SeriesFor(d->label);
  unsigned sessions = 0;  // hosts that answered
  bool plain_retry = false;
  for (size_t next = 0; next < addresses.size() && !ctx_.stopping;) {
    const Address& a = addresses[next++];
    auto addr = io::SocketAddress::Parse(a.ip.ToString(), port);
    if (!addr.ok())
      continue;
    session->remote = a.host + "[" + a.ip.ToString() + "]:" + std::to_string(port);
    Result<int> fd = co_await io::ConnectTcp(ctx_.shard, *addr, ctx_.config.connect_timeout);
    if (!fd.ok()) {
      *failure = smtp::MakeReply(451, "4.4.1",
                                 "connect to " + session->remote + ": " + fd.error().message);
      continue;
    }
    if (!plain_retry)
      ++sessions;
    plain_retry = false;
    session->conn = std::make_unique<io::Connection>(ctx_.shard, *fd);
    session->conn->Start();
    d->connections.push_back(session->conn.get());
    series.connections->Add(ctx_.index, 1);

    bool skipped_tls = false;
    const ClientOptions options = OptionsFor(*d, a.host, &skipped_tls);
    session->client = std::make_unique<SmtpClient>(*session->conn, options);
    const smtp::Reply hello = co_await session->client->Handshake();
    if (options.tls_policy != ClientOptions::TlsPolicy::kDisabled || skipped_tls) {
      const SmtpClient& c = *session->client;
      ctx_.tel.Tls(ctx_.index, skipped_tls        ? "skipped_broken"
                               : c.tls_failed()   ? "failed"
                               : c.tls_verified() ? "verified"
                               : c.secure()       ? "unverified"
                                                  : "not_offered");
    }
    if (hello.code >= 200 && hello.code < 300)
      co_return true;

    *failure =
        hello.code >= 500
            ? smtp::MakeReply(451, "4.4.1", session->remote + " refused us: " + OneLine(hello))
            : hello;
    // Credentials never go in plaintext, so a route with AUTH gains nothing from the fallback:
    // defer and try TLS again next time.
    const bool retry_plain = session->client->tls_failed() && options.auth_user.empty() &&
                             options.tls_policy == ClientOptions::TlsPolicy::kOpportunistic;
    co_await Close(d, session);
    if (retry_plain) {
      spdlog::info(
          "destination {}: TLS with {} failed ({}); retrying in plaintext and skipping TLS with "
          "it for an hour",
          d->key, a.host, OneLine(*failure));
      tls_fallback_.MarkBroken(a.host, ctx_.WallMicros());
      --next;  // the same address again; not another session
      plain_retry = true;
      continue;
    }
    if (sessions >= ctx_.config.mx_session_limit)
      break;
  }
  co_return false;
}

io::Task<void> DestinationHost::Close(Destination* d, Session* session) {
  std::erase(d->connections, session->conn.get());
  ctx_.SeriesFor(d->label).connections->Add(ctx_.index, -1);
  co_await session->conn->Close();
  session->client.reset();
  session->conn.reset();
}

io::Task<void> DestinationHost::Transfer(Destination* d, Session* session) {
  SmtpClient& client = *session->client;
  unsigned sent = 0;
  Job job;
  std::optional<Job> next;  // taken from the queue: its envelope rides behind job's content
  for (;;) {
    if (next) {
      job = std::move(*next);
      next.reset();
    } else {
      const bool got = co_await TakeJob(d, &job);
      if (!got)
        break;
    }
    if (const uint64_t wait = d->rate.Reserve(ctx_.WallMicros()); wait > 0) {
      co_await io::Sleep(ctx_.shard, std::chrono::microseconds(wait));
    }
    if (!job.message.body) {
      queue::Spool* spool = &ctx_.spool;
      const queue::MessageId id = job.id;
      auto read = ctx_.pool.Run(ctx_.shard, [spool, id] { return spool->ReadBody(id); });
      Result<std::string> body = co_await read;
      if (!body.ok()) {
        Report(job,
               {smtp::MakeReply(451, "4.3.0",
                                "cannot read the message from the spool: " + body.error().message)},
               "");
        continue;
      }
      job.message.body = std::make_shared<const std::string>(std::move(*body));
    }
    // The next job goes out behind this one's content when it is ready to go: queued, its body
    // in memory (nothing to wait for between its DATA and its content), no rate limit to wait
    // for, and room on this connection. Not behind a large body: its transfer time dwarfs the
    // round trip saved, and the next job would wait for it here instead of going to another
    // connection.
    if (!d->rate.limited() && !ctx_.stopping && sent + 1 < d->max_messages_per_connection &&
        client.capabilities().pipelining && !d->ready.empty() && d->ready.front().message.body &&
        job.message.body->size() <= kChainBodyLimit) {
      next.emplace(std::move(d->ready.front()));
      d->ready.pop_front();
    }
    TransactionResult result = co_await client.Send(job.message, next ? &next->message : nullptr);
    job.message.body.reset();
    Report(job, std::move(result.recipients), session->remote, client.capabilities().dsn);
    if (!result.connection_usable || ++sent >= d->max_messages_per_connection || ctx_.stopping) {
      if (next) {
        // Its content was never sent, so it was not delivered: back to the queue (or, when
        // stopping, deferred like every other queued job).
        if (ctx_.stopping) {
          Report(*next, {ShuttingDown()}, "");
        } else {
          d->ready.push_front(std::move(*next));
          WakeWorker(*d);  // a parked connection, or a new one, takes it now
        }
      }
      break;
    }
  }
  co_await client.Quit();
}

io::Detached DestinationHost::RunWorker(Destination* d) {
  ++d->workers;
  ++workers_;
  if (d->type == RouteType::kMaildir) {
    Job job;
    for (;;) {
      const bool got = co_await TakeJob(d, &job);
      if (!got)
        break;
      co_await DeliverMaildir(d, std::move(job));
    }
  } else {
    Session session;
    smtp::Reply failure;
    const bool connected = co_await Open(d, &session, &failure);
    if (!connected) {
      ctx_.SeriesFor(d->label).connection_failures->Inc(ctx_.index);
      d->backoff.Fail(
          failure, session.remote, ctx_.WallMicros(),
          static_cast<uint64_t>(ctx_.config.destination_backoff.count()) * kMicrosPerSecond);
      spdlog::warn("destination {}: {}", d->key, OneLine(failure));
      DeferAll(*d, failure, session.remote);
    } else {
      co_await Transfer(d, &session);
      co_await Close(d, &session);
    }
  }
  --d->workers;
  --workers_;
  d->last_used_us = ctx_.WallMicros();
  if (!ctx_.stopping && !d->ready.empty())
    MaybeStartWorker(*d);
}

std::vector<smtp::Reply> DestinationHost::MaildirBlocking(const std::string& root, const Job& job) {
  std::vector<smtp::Reply> out;
  Result<std::string> stored = std::string();
  if (!job.message.body)
    stored = ctx_.spool.ReadBody(job.id);
  for (const OutboundRecipient& rcpt : job.message.recipients) {
    if (!stored.ok()) {
      out.push_back(smtp::MakeReply(
          451, "4.3.0", "cannot read the message from the spool: " + stored.error().message));
      continue;
    }
    const std::string& body = job.message.body ? *job.message.body : *stored;
    auto path = DeliverToMaildir(root, body, job.message.sender, rcpt.address);
    if (path.ok()) {
      out.push_back(smtp::MakeReply(250, "2.0.0", "delivered to maildir " + *path));
    } else {
      out.push_back(smtp::MakeReply(451, "4.3.0", "maildir " + root + ": " + path.error().message));
    }
  }
  return out;
}

io::Task<void> DestinationHost::DeliverMaildir(Destination* d, Job job) {
  // fsync-heavy work goes to the pool; the coroutine frame keeps `job` alive.
  const std::string& root = d->route->path;
  const Job* j = &job;
  auto work = ctx_.pool.Run(ctx_.shard, [this, &root, j] { return MaildirBlocking(root, *j); });
  std::vector<smtp::Reply> replies = co_await work;
  Report(job, std::move(replies), "maildir:" + root);
}

void DestinationHost::BeginShutdown() {
  for (auto& [key, d] : destinations_) {
    DeferAll(*d, ShuttingDown(), "");
    for (IdleWaiter* w : d->idle)
      w->Resume(false);  // "no job": the worker says QUIT
    d->idle.clear();
  }
}

void DestinationHost::Abort() {
  for (auto& [key, d] : destinations_) {
    for (io::Connection* c : d->connections)
      c->Abort();
  }
}

}  // namespace sluice::delivery
