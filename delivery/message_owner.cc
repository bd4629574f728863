#include "delivery/message_owner.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "base/log.h"
#include "delivery/delivery_events.h"
#include "delivery/delivery_shard.h"
#include "delivery/dsn/dsn.h"

namespace sluice::delivery {

namespace {

// A body held in memory for a message's first attempt, counted against the process-wide
// delivery.body_cache_bytes until released.
class CachedBody {
 public:
  CachedBody() = default;
  CachedBody(std::shared_ptr<const std::string> body, std::atomic<int64_t>* used)
      : body_(std::move(body)), used_(used) {
  }
  ~CachedBody() {
    Release();
  }
  CachedBody(CachedBody&& o) noexcept
      : body_(std::move(o.body_)), used_(std::exchange(o.used_, nullptr)) {
  }
  CachedBody& operator=(CachedBody&& o) noexcept {
    if (this != &o) {
      Release();
      body_ = std::move(o.body_);
      used_ = std::exchange(o.used_, nullptr);
    }
    return *this;
  }

  const std::shared_ptr<const std::string>& get() const {
    return body_;
  }
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

struct MessageOwner::Message final : public io::TimerHandler {
  Message(MessageOwner* o, const queue::MessageId& id, queue::Envelope env)
      : owner(o), state(id, std::move(env)) {
  }

  MessageOwner* owner;
  MessageState state;
  CachedBody body;  // until the first round ends; empty: read from the spool
  io::TimerWheel::Id timer;
  unsigned jobs_out = 0;     // jobs (and the routing itself) not yet answered this round
  bool round_retry = false;  // the round in progress is a retry (for the in-flight counts)
  uint64_t leaving_seq = 0;  // leaves memory once the spool has written op leaving_seq

  void OnTimer() override {
    timer = {};
    MessageOwner* o = owner;
    const queue::MessageId mid = state.id();
    // Never start work from inside the wheel's walk: go through the mailbox.
    o->ctx_.shard.Post([o, mid] {
      auto it = o->messages_.find(mid);
      if (it != o->messages_.end())
        o->Dispatch(*it->second);
    });
  }
};

class MessageOwner::Ticker final : public io::TimerHandler {
 public:
  explicit Ticker(MessageOwner* owner) : owner_(owner) {
  }
  void Arm() {
    timer_ = owner_->ctx_.shard.timers().Add(owner_->ctx_.shard.Now() + kTick, this);
  }
  void Cancel() {
    owner_->ctx_.shard.timers().Cancel(timer_);
    timer_ = {};
  }
  void OnTimer() override {
    timer_ = {};
    MessageOwner* o = owner_;
    o->ctx_.shard.Post([o] { o->Tick(); });
  }

 private:
  MessageOwner* owner_;
  io::TimerWheel::Id timer_;
};

MessageOwner::MessageOwner(DeliveryContext& ctx, DeliveryShard& shard)
    : ctx_(ctx), shard_(shard), rng_(std::random_device{}()) {
}

MessageOwner::~MessageOwner() {
  for (auto& [id, m] : messages_)
    ctx_.shard.timers().Cancel(m->timer);
  if (ticker_)
    ticker_->Cancel();
}

uint64_t MessageOwner::RetryDelay(uint32_t attempts) {
  std::uniform_real_distribution<double> jitter(kMinJitter, kMaxJitter);
  return RetryDelayMicros(ctx_.config, attempts, jitter(rng_));
}

void MessageOwner::Configure(unsigned shards, size_t max_active) {
  shards_ = std::max(1u, shards);
  max_active_ = std::max<size_t>(max_active, 1);
}

void MessageOwner::Start() {
  LaneFor(static_cast<uint16_t>(ctx_.index));
  seen_generation_ = ctx_.spool.rescan_generation();
  ticker_ = std::make_unique<Ticker>(this);
  ticker_->Arm();
  MaybeRefill();
}

MessageOwner::Lane& MessageOwner::LaneFor(uint16_t prefix) {
  for (Lane& lane : lanes_) {
    if (lane.prefix == prefix)
      return lane;
  }
  Lane lane;
  lane.prefix = prefix;
  lane.cursor.prefix = prefix;
  lanes_.push_back(lane);
  next_wake_ = 0;  // read it from the start
  return lanes_.back();
}

void MessageOwner::NoteUnheld(const queue::MessageId& id, uint64_t due_us) {
  Lane& lane = LaneFor(id.shard());
  const queue::ScheduleEntry key{id.shard(), due_us, id};
  if (key < lane.cursor) {
    lane.cursor = key;
    lane.exhausted = false;
  }
  if (refilling_) {
    // The scan out now may have taken its snapshot before this key was written.
    unheld_.push_back({key, scan_epoch_});
    wake_floor_ = std::min(wake_floor_, due_us);
  }
  next_wake_ = std::min(next_wake_, due_us);
}

MessageOwner::Message& MessageOwner::Hold(const queue::MessageId& id, queue::Envelope envelope) {
  auto m = std::make_unique<Message>(this, id, std::move(envelope));
  Message& ref = *m;
  messages_[id] = std::move(m);
  recent_.erase(id);
  return ref;
}

void MessageOwner::Release(const queue::MessageId& id, uint64_t seq) {
  messages_.erase(id);
  // A scan whose snapshot predates op `seq` would see the message as it was: it skips it.
  if (seq != 0) {
    recent_[id] = seq;
    // Kept only while some scan could still see the old state: bounded by the ops the writer
    // has not written yet, not by how many messages left memory.
    if (recent_.size() >= recent_prune_at_)
      PruneRecent();
  }
  if (messages_.size() <= max_active_ / 2)
    MaybeRefill();
}

void MessageOwner::Leave(Message& m, uint64_t seq) {
  // Held (and counted in the window) until its update is written: a key a scan could miss, or
  // a stale envelope it could load, never exists outside memory.
  m.leaving_seq = std::max<uint64_t>(seq, 1);
  leaving_.push_back(m.state.id());
  ReleaseWritten();
}

void MessageOwner::ReleaseWritten() {
  const uint64_t applied = ctx_.spool.applied_seq();
  std::vector<std::pair<queue::MessageId, uint64_t>> done;
  std::erase_if(leaving_, [&](const queue::MessageId& id) {
    auto it = messages_.find(id);
    if (it == messages_.end() || it->second->leaving_seq == 0)
      return true;  // gone, or back in a round (its timer came first)
    if (it->second->leaving_seq > applied)
      return false;
    done.emplace_back(id, it->second->leaving_seq);
    return true;
  });
  for (const auto& [id, seq] : done) {
    auto it = messages_.find(id);
    if (it == messages_.end())
      continue;  // listed twice (it left, came due, and left again before either was written)
    ctx_.shard.timers().Cancel(it->second->timer);
    NoteUnheld(id, it->second->state.envelope().next_due_us);
    Release(id, seq);
  }
}

void MessageOwner::PruneRecent() {
  // What every later scan sees as written needs no guard any more. (A scan out now took the
  // number it compares with before its snapshot: an entry pruned here is older than that.)
  if (refilling_)
    return;
  const uint64_t applied = ctx_.spool.applied_seq();
  std::erase_if(recent_, [applied](const auto& entry) { return entry.second <= applied; });
  recent_prune_at_ = std::max<size_t>(4096, 2 * recent_.size());
}

void MessageOwner::Tick() {
  if (ctx_.stopping)
    return;
  ticker_->Arm();
  PruneRecent();
  ReleaseWritten();
  MaybeRefill();
}

void MessageOwner::MaybeRefill() {
  if (refilling_ || ctx_.stopping || messages_.size() >= max_active_)
    return;
  const uint64_t now = ctx_.WallMicros();
  const bool behind =
      std::any_of(lanes_.begin(), lanes_.end(), [](const Lane& lane) { return !lane.exhausted; });
  const bool rescan = ctx_.spool.rescan_generation() != seen_generation_ || !discovered_;
  if (!behind && !rescan && next_wake_ > now + kLookaheadMicros)
    return;
  Refill();
}

io::Detached MessageOwner::Refill() {
  refilling_ = true;
  wake_floor_ = UINT64_MAX;
  uint64_t next_wake = UINT64_MAX;
  queue::Spool* spool = &ctx_.spool;
  const uint64_t generation = spool->rescan_generation();
  if (generation != seen_generation_) {
    // Keys may have appeared behind the cursors (an old spool's index completed, an op lost):
    // read every lane from its head, and look for prefixes again.
    seen_generation_ = generation;
    for (Lane& lane : lanes_) {
      lane.cursor = {lane.prefix, 0, {}};
      lane.exhausted = false;
    }
    discovered_ = false;
  }
  if (!discovered_) {
    // Prefixes other than our own exist when the shard count was larger before a restart.
    auto read = ctx_.pool.Run(ctx_.shard, [spool] { return spool->SchedulePrefixes(); });
    Result<std::vector<uint16_t>> prefixes = co_await read;
    if (prefixes.ok()) {
      discovered_ = true;
      for (uint16_t p : *prefixes) {
        if (p % shards_ == ctx_.index)
          LaneFor(p);
      }
    }
  }
  // Lanes take turns at being read first.
  const size_t lanes = lanes_.size();
  const size_t first = lanes == 0 ? 0 : refills_++ % lanes;
  bool failed = false;
  for (size_t k = 0; k < lanes && !ctx_.stopping; ++k) {
    const size_t i = (first + k) % lanes;
    const uint64_t now = ctx_.WallMicros();
    queue::DueQuery q;
    q.prefix = lanes_[i].prefix;
    q.from_due_us = lanes_[i].cursor.due_us;
    q.from_id = lanes_[i].cursor.id;
    q.until_due_us = now + kLookaheadMicros;
    const size_t room = max_active_ > messages_.size() ? max_active_ - messages_.size() : 0;
    q.limit = std::min(room, kScanBatch);
    if (q.limit == 0) {
      next_wake = 0;  // more to read once there is room
      break;
    }
    ++scan_epoch_;
    auto read = ctx_.pool.Run(ctx_.shard, [spool, q] { return spool->ScanDue(q); });
    Result<queue::DueScan> scan = co_await read;
    Lane& lane = lanes_[i];
    if (!scan.ok()) {
      // (A spool being reopened after a write error, say.) Try again in a second.
      if (now >= scan_error_logged_ + 10'000'000) {
        spdlog::error("delivery: reading the schedule index failed: {}", scan.error().message);
        scan_error_logged_ = now;
      }
      failed = true;
      break;
    }
    // The window may have filled while the scan was out (new mail adopted meanwhile): what
    // does not fit stays on disk, and the cursor stops before it.
    std::optional<queue::ScheduleEntry> full_at;
    for (queue::DueMessage& due : scan->messages) {
      if (ctx_.stopping)
        break;
      if (messages_.size() >= max_active_) {
        full_at = queue::ScheduleEntry{q.prefix, due.due_us, due.id};
        break;
      }
      if (messages_.count(due.id) != 0)
        continue;  // held already (adopted when it arrived, or in a round)
      auto recent = recent_.find(due.id);
      if (recent != recent_.end() && recent->second > scan->applied_seq)
        continue;  // what the scan saw is older than what this owner last wrote
      Message& m = Hold(due.id, std::move(due.envelope));
      if (!m.state.HasPending()) {
        messages_.erase(due.id);
        ctx_.spool.Remove(due.id);  // finished before a crash, removal lost: finish it now
        continue;
      }
      Schedule(m);
    }
    queue::ScheduleEntry cursor = scan->resume;
    if (full_at) {
      cursor = *full_at;
      next_wake = 0;
    } else if (scan->exhausted) {
      cursor = {q.prefix, q.until_due_us + 1, {}};
      if (scan->next_due_us != 0)
        next_wake = std::min(next_wake, scan->next_due_us);
    } else {
      next_wake = 0;  // not done: read on as soon as there is room
    }
    // Keys noted while this scan was out may be missing from its snapshot: the cursor stays
    // at or before them.
    bool clamped = false;
    for (const Unheld& u : unheld_) {
      if (u.key.prefix == q.prefix && u.epoch == scan_epoch_ && u.key < cursor) {
        cursor = u.key;
        clamped = true;
      }
    }
    lane.cursor = cursor;
    lane.exhausted = scan->exhausted && !clamped && !full_at;
  }
  unheld_.clear();
  // Keys noted while the scans were out are due then at the latest.
  next_wake = std::min(next_wake, wake_floor_);
  refilling_ = false;
  PruneRecent();
  if (failed) {
    next_wake_ = std::min(next_wake, ctx_.WallMicros() + 1'000'000);
    co_return;
  }
  next_wake_ = next_wake;
  if (next_wake_ == 0 && messages_.size() < max_active_)
    ctx_.shard.Post([this] { MaybeRefill(); });
}

void MessageOwner::Adopt(const queue::MessageId& id, queue::Envelope envelope,
                         std::shared_ptr<const std::string> body) {
  if (messages_.count(id) != 0 || recent_.count(id) != 0)
    return;  // held already, or just released (a reopened spool's find)
  const uint64_t due = envelope.next_due_us;
  if (messages_.size() >= max_active_ || ctx_.stopping) {
    // The window is full: the spool's index has it, and a refill reads it in its turn.
    NoteUnheld(id, due);  // committed before it was adopted
    return;
  }
  Message& held = Hold(id, std::move(envelope));
  if (!held.state.HasPending()) {
    messages_.erase(id);
    ctx_.spool.Remove(id);
    return;
  }
  // Nothing unheld lies between the cursor and a new message due now (the last scan read all
  // that was due, and every key written since is held or later): keep the cursor after it, so
  // the next scan does not walk over the keys of mail delivered meanwhile.
  Lane& lane = LaneFor(id.shard());
  const queue::ScheduleEntry key{id.shard(), due, id};
  if (!refilling_ && lane.exhausted && lane.cursor <= key && next_wake_ > due) {
    lane.cursor = key;
    ++lane.cursor.id.lo;
    if (lane.cursor.id.lo == 0)
      ++lane.cursor.id.hi;
  }
  Message* m = &held;
  if (body && body_cache_ != nullptr) {
    // The allocation, not the length: the session's buffer grew by doubling.
    const auto size = static_cast<int64_t>(body->capacity());
    if (body_cache_->fetch_add(size, std::memory_order_relaxed) + size <=
        ctx_.config.body_cache_bytes) {
      m->body = CachedBody(std::move(body), body_cache_);
    } else {
      body_cache_->fetch_sub(size, std::memory_order_relaxed);
    }
  }
  Schedule(*m);
}

void MessageOwner::Schedule(Message& m) {
  // The due time is stored as wall-clock time (it survives a restart); the wheel runs on the
  // monotonic clock.
  ctx_.shard.timers().Cancel(m.timer);
  const uint64_t delay_us = m.state.DelayUntilDue(ctx_.WallMicros());
  m.timer = ctx_.shard.timers().Add(ctx_.shard.Now() + std::chrono::microseconds(delay_us), &m);
}

void MessageOwner::Dispatch(Message& m) {
  if (ctx_.stopping || m.state.in_round())
    return;
  std::vector<size_t> pending = m.state.PendingRecipients();
  if (pending.empty())
    return;
  ++rounds_in_flight_;
  m.leaving_seq = 0;  // due before its update was written: it stays
  m.round_retry = m.state.envelope().attempts > 0;
  ++(m.round_retry ? in_flight_.deferred : in_flight_.scheduled);
  const uint64_t now = ctx_.WallMicros();
  if (m.state.Expired(now)) {
    // RFC 3463 4.4.7: delivery time expired. Bounce what is left.
    for (size_t i : m.state.Expire(now)) {
      const queue::Recipient& r = m.state.envelope().recipients[i];
      spdlog::info("expired id={} to=<{}> last=\"{}\"", m.state.id().ToString(), r.address,
                   r.last_reply);
      LogExpired(ctx_.tel.events(), m.state, i, now);
    }
    FinishRound(m.state.id());
    return;
  }
  m.state.Begin();
  Route(m.state.id(), std::move(pending));
}

io::Detached MessageOwner::Route(queue::MessageId id, std::vector<size_t> recipients) {
  Message* m = messages_.at(id).get();
  // The routing itself holds the round open: results posted while a DNS lookup below is
  // pending must not finish the round early.
  ++m->jobs_out;
  const DeliveryConfig& config = ctx_.config;
  JobGrouper grouper(id, ctx_.index, m->state.envelope(), m->body.get());
  std::unordered_map<std::string, MxLookup> mx_cache;  // per round, by domain
  for (size_t i : recipients) {
    const queue::Recipient& r = m->state.envelope().recipients[i];
    std::string domain = DomainOf(r.address);
    if (domain.empty())
      domain = ctx_.hostname;  // <postmaster>
    const RouteConfig* route = config.routes.empty() ? nullptr : FindRoute(config.routes, domain);
    if (!config.routes.empty() && route == nullptr) {
      // No route for this domain: a configuration gap, not a remote answer.
      PostResult(id, {i}, smtp::MakeReply(554, "5.4.4", "no route to domain " + domain));
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
            PostResult(
                id, {i},
                smtp::MakeReply(550, "5.1.2", "cannot deliver to address literal " + domain));
            continue;
          }
          key = "literal:" + ip->ToString();
          targets.push_back(MxTarget{ip->ToString(), 0, {*ip}});
          break;
        }
        // Domains that share MX hosts share one destination (KumoMTA's "site"): the key is the
        // set of MX host names.
        auto found = mx_cache.find(domain);
        if (found == mx_cache.end()) {
          const MonoTime started = ctx_.shard.Now();
          MxLookup looked = co_await ctx_.resolver->LookupMx(domain);
          ctx_.tel.Dns(ctx_.index, DeliveryTelemetry::DnsType::kMx, looked.status,
                       std::chrono::duration<double>(ctx_.shard.Now() - started).count());
          found = mx_cache.emplace(domain, std::move(looked)).first;
          m = messages_.at(id).get();
        }
        const MxLookup& mx = found->second;
        if (mx.status != MxLookup::Status::kOk) {
          PostResult(id, {i}, MxFailureReply(domain, mx));
          continue;
        }
        key = mx.site;
        targets = mx.targets;
        break;
      }
      case RouteType::kSmarthost:
      case RouteType::kLmtp:
      case RouteType::kMaildir:
        key = RouteKey(*route);
        break;
    }
    grouper.Add(i, key, route, domain, std::move(targets));
  }
  for (Job& job : grouper.Take()) {
    ++m->jobs_out;
    shard_.SendJob(std::move(job));
  }
  if (--m->jobs_out == 0)
    FinishRound(id);
}

void MessageOwner::PostResult(const queue::MessageId& id, std::vector<size_t> rcpts,
                              const smtp::Reply& reply) {
  Message& m = *messages_.at(id);
  JobResult r;
  r.id = id;
  const std::string domain = DomainOf(m.state.envelope().recipients[rcpts.front()].address);
  r.destination = ctx_.DestinationLabel(domain.empty() ? ctx_.hostname : domain);
  r.replies.assign(rcpts.size(), reply);
  r.rcpts = std::move(rcpts);
  ++m.jobs_out;
  shard_.SendResult(ctx_.index, std::move(r));
}

void MessageOwner::OnJobResult(JobResult result) {
  auto it = messages_.find(result.id);
  if (it == messages_.end()) {
    SLUICE_BUG("delivery result for an unknown message");
    return;
  }
  Message& m = *it->second;
  DeliveryTelemetry::DestinationSeries& series = ctx_.SeriesFor(result.destination);
  const uint64_t now_us = ctx_.WallMicros();
  const MessageState::Attempt attempt{result.remote, result.final_delivery, result.peer_dsn};
  const char* relay = result.remote.empty() ? "-" : result.remote.c_str();
  for (size_t k = 0; k < result.rcpts.size() && k < result.replies.size(); ++k) {
    const size_t rcpt = result.rcpts[k];
    const smtp::Reply& reply = result.replies[k];
    const Outcome outcome = m.state.Record(rcpt, reply, attempt, result.destination);
    const queue::Recipient& r = m.state.envelope().recipients[rcpt];
    if (outcome != Outcome::kDeferred) {
      LogFinalOutcome(ctx_.tel.events(), outcome, m.state, rcpt, result, reply.code, now_us);
    }
    switch (outcome) {
      case Outcome::kDelivered:
        series.delivered->Inc(ctx_.index);
        ctx_.tel.delivery_seconds().Observe(
            ctx_.index, static_cast<double>(now_us - m.state.envelope().received_at_us) / 1e6);
        break;
      case Outcome::kBounced:
        series.bounced->Inc(ctx_.index);
        break;
      case Outcome::kDeferred:
        series.deferred->Inc(ctx_.index);
        break;
    }
    spdlog::info("{} id={} to=<{}> relay={} reply=\"{}\"", ToString(outcome),
                 m.state.id().ToString(), r.address, relay, r.last_reply);
  }
  if (m.jobs_out > 0 && --m.jobs_out == 0)
    FinishRound(m.state.id());
}

io::Detached MessageOwner::FinishRound(queue::MessageId id) {
  auto it = messages_.find(id);
  if (it == messages_.end())
    co_return;
  ++finishing_;
  Message* m = it->second.get();
  const uint64_t now = ctx_.WallMicros();
  MessageState::RoundEnd end = m->state.End();
  bool pending = end.pending;
  if (end.double_bounce) {
    spdlog::warn("double bounce id={}: the null-sender message failed; dropped", id.ToString());
  }

  bool committed = false;
  uint64_t committed_seq = 0;  // the bounce transaction's
  if (!end.notices.empty()) {
    // Named awaiters, trivially-destructible captures: g++ 12 mis-destroys lambda temporaries
    // inside co_await expressions (GCC PR 95599 family).
    std::shared_ptr<const std::string> original = m->body.get();
    if (!original) {
      queue::Spool* spool = &ctx_.spool;
      auto read = ctx_.pool.Run(ctx_.shard, [spool, id] { return spool->ReadBody(id); });
      Result<std::string> stored = co_await read;
      if (stored.ok()) {
        original = std::make_shared<const std::string>(std::move(*stored));
      } else {
        // The report still goes out, without the original message.
        spdlog::warn("cannot read the body of {} for its report: {}", id.ToString(),
                     stored.error().message);
      }
    }
    const queue::Envelope& env = m->state.envelope();
    DsnInput in;
    in.reporting_mta = ctx_.hostname;
    in.original_sender = env.sender;
    in.envid = env.envid;
    in.ret = static_cast<smtp::Ret>(env.ret);
    in.arrival_us = env.received_at_us;
    in.smtputf8 = env.smtputf8;
    const std::string empty;
    in.original_message = original ? *original : empty;
    for (const MessageState::Notice& n : end.notices) {
      const queue::Recipient& r = env.recipients[n.rcpt];
      DsnRecipient dr;
      dr.final_recipient = r.address;
      dr.original_recipient = r.orcpt;
      dr.action = n.action;
      dr.status = n.status;
      dr.remote_mta = n.remote;
      dr.diagnostic = n.diagnostic;
      dr.last_attempt_us = now;
      in.recipients.push_back(std::move(dr));
    }
    Dsn dsn = BuildDsn(in, now);
    queue::Envelope bounce =
        MakeBounceEnvelope(env, dsn.message.size(), ctx_.hostname, ctx_.config, now);
    const queue::MessageId bounce_id = ctx_.ids.Next();

    if (pending)
      m->state.Retry(now, RetryDelay(env.attempts));
    // The report and the failure it reports are one synced batch: both or neither.
    std::vector<queue::Spool::Change> changes(2);
    changes[0].kind = queue::Spool::Change::Kind::kPut;
    changes[0].id = bounce_id;
    changes[0].meta = queue::EncodeEnvelope(bounce);
    changes[0].body = dsn.message;
    changes[1].id = id;
    if (pending) {
      changes[1].kind = queue::Spool::Change::Kind::kUpdateEnvelope;
      changes[1].meta = queue::EncodeEnvelope(m->state.envelope());
    } else {
      changes[1].kind = queue::Spool::Change::Kind::kRemove;
    }
    const uint64_t token = ctx_.commits.Reserve();
    queue::CommitStatus status = queue::CommitStatus::kIoError;
    if (ctx_.spool.Commit(std::move(changes), &ctx_.commits, token, &committed_seq) ==
        queue::Admit::kAccepted) {
      status = co_await ctx_.commits.Wait(token);
    } else {
      ctx_.commits.Cancel(token);
    }
    if (status == queue::CommitStatus::kOk) {
      committed = true;
      for (const MessageState::Notice& n : end.notices)
        ctx_.tel.Dsn(ctx_.index, n.action);
      LogDsn(ctx_.tel.events(), bounce_id, m->state, end.notices.front().action,
             end.notices.size());
      spdlog::info("bounce id={} for={} to=<{}>", bounce_id.ToString(), id.ToString(),
                   m->state.envelope().sender);
      Adopt(bounce_id, std::move(bounce));
    } else {
      // Not recorded: these recipients are tried again later and bounce then.
      spdlog::warn("could not queue the bounce for {}: {}; will retry", id.ToString(),
                   queue::ToString(status));
      m->state.Unreport(end.notices);
      pending = true;
    }
  }
  m->body.Release();  // only the first attempt is served from memory
  --rounds_in_flight_;
  --finishing_;
  --(m->round_retry ? in_flight_.deferred : in_flight_.scheduled);

  if (!pending) {
    // Unsynced: a lost removal means a duplicate, never a loss. (A committed bounce
    // transaction removed it already.)
    Release(id, committed ? committed_seq : ctx_.spool.Remove(id));
    co_return;
  }
  uint64_t seq = committed_seq;
  if (!committed) {
    m->state.Retry(now, RetryDelay(m->state.envelope().attempts));
    seq = ctx_.spool.UpdateEnvelope(id, queue::EncodeEnvelope(m->state.envelope()));
  }
  LogDeferrals(ctx_.tel.events(), m->state, now);
  m->state.Finish();
  const uint64_t due = m->state.envelope().next_due_us;
  if (!ctx_.stopping)
    Schedule(*m);
  if (due > now + kLookaheadMicros) {
    // Out of memory until it is due again, once its update is written: the index brings it
    // back.
    Leave(*m, seq);
  }
}

void MessageOwner::BeginShutdown() {
  for (auto& [id, m] : messages_) {
    ctx_.shard.timers().Cancel(m->timer);
    m->timer = {};
  }
  if (ticker_)
    ticker_->Cancel();
}

}  // namespace sluice::delivery
