#include "delivery/dns/resolver.h"

#include <ares.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <utility>

#include <arpa/nameser.h>
#include <netinet/in.h>

#include "base/log.h"

namespace sluice::delivery {
namespace {

// RFC 6891 §6.2.5 / DNS flag day 2020: a payload that avoids IP fragmentation.
constexpr int kEdnsPayload = 1232;
// Address records read per answer; the rest of a larger RRset is ignored.
constexpr int kMaxAddressesPerAnswer = 32;

Result<void> InitLibrary() {
  // ares_library_init is not thread-safe in 1.18 and is a no-op on Linux
  // apart from bookkeeping; once per process, never cleaned up.
  static std::once_flag once;
  static int status = ARES_SUCCESS;
  std::call_once(once, [] { status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (status != ARES_SUCCESS) {
    return MakeError(std::string("ares_library_init: ") + ares_strerror(status));
  }
  return {};
}

// Statuses of a finished query that mean "the name does not exist".
bool IsNoSuchName(int status) {
  return status == ARES_ENOTFOUND || status == ARES_EBADNAME;
}

std::string StripBrackets(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::string(host);
}

}  // namespace

// One c-ares socket: its poll request on the ring. Owned by the Resolver
// (polls_ while c-ares uses the socket, retiring_ afterwards until the last
// completion), or by the ring alone once the Resolver is gone.
class Resolver::PollSlot final : public io::CompletionHandler {
 public:
  PollSlot(Resolver* owner, int fd) : owner_(owner), fd_(fd) {
  }

  void OnCompletion(int32_t res, uint32_t /*flags*/) override {
    if (owner_ == nullptr) {
      // Orphaned by ~Resolver: nothing but the ring refers to us, and this
      // one-shot poll's completion is its last (deferred deletion).
      delete this;
      return;
    }
    owner_->OnPollDone(*this, res);
  }
  void Orphan() {
    owner_ = nullptr;
  }

  int fd() const {
    return fd_;
  }

  uint32_t want = 0;       // POLLIN/POLLOUT c-ares asked for; 0 once retired
  uint32_t armed = 0;      // events of the request in flight
  uint64_t user_data = 0;  // of the request in flight
  bool in_flight = false;
  bool cancel_sent = false;
  bool retired = false;  // c-ares closed the socket; the fd number may be reused

 private:
  Resolver* owner_;
  const int fd_;
};

// Queries started together and awaited together: the awaiting coroutine is
// scheduled once the last of them has an answer. Lives in the coroutine
// frame; c-ares holds pointers to its queries until their callbacks ran, which
// every path (answer, timeout, ares_cancel, ares_destroy) guarantees before
// the frame can move past the co_await.
class Resolver::QueryBatch {
 public:
  struct Query {
    QueryBatch* batch = nullptr;
    int status = ARES_ECANCELLED;
    std::vector<unsigned char> answer;
  };

  explicit QueryBatch(Resolver& resolver) : resolver_(resolver) {
  }
  QueryBatch(const QueryBatch&) = delete;
  QueryBatch& operator=(const QueryBatch&) = delete;

  // Starts a query (its callback may run inline, e.g. for a bad name).
  const Query& Add(const std::string& name, int type) {
    Query& q = queries_.emplace_back();
    q.batch = this;
    if (resolver_.channel_ == nullptr) {
      q.status = ARES_EDESTRUCTION;
      return q;
    }
    ++pending_;
    ++resolver_.pending_queries_;
    ++resolver_.stats_.queries;
    // ares_query, not ares_search: MX domains and targets are absolute names.
    ares_query(resolver_.channel_, name.c_str(), ns_c_in, type, &QueryBatch::OnAnswer, &q);
    resolver_.UpdateTimer();
    return q;
  }

  bool await_ready() const noexcept {
    return pending_ == 0;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    waiter_ = h;
  }
  void await_resume() const noexcept {
  }

 private:
  // Runs inside ares_process_fd / ares_cancel / ares_destroy (or ares_query):
  // record and schedule only.
  static void OnAnswer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    Query* q = static_cast<Query*>(arg);
    q->status = status;
    if (abuf != nullptr && alen > 0) {
      q->answer.assign(abuf, abuf + alen);
    }
    QueryBatch* batch = q->batch;
    --batch->resolver_.pending_queries_;
    if (--batch->pending_ == 0 && batch->waiter_) {
      batch->resolver_.shard_.Schedule(batch->waiter_);
    }
  }

  Resolver& resolver_;
  std::deque<Query> queries_;  // stable addresses: c-ares holds &Query
  size_t pending_ = 0;
  std::coroutine_handle<> waiter_;
};

struct Resolver::AddressAnswer {
  std::vector<io::IpAddress> addresses;  // A first, then AAAA
  int64_t ttl = -1;                      // smallest address TTL, -1 if none
  bool no_such_domain = false;           // both queries said NXDOMAIN
  bool temporary = false;                // a query failed temporarily
  std::string error;
};

namespace {

// Folds one finished A or AAAA query into `out`. (Query and Answer are the
// Resolver's private QueryBatch::Query and AddressAnswer.)
template <typename Query, typename Answer>
void AddAddresses(const Query& q, bool v6, int* not_found, Answer* out) {
  auto add = [out](const sockaddr* sa, int ttl) {
    out->addresses.push_back(io::IpAddress::FromSockaddr(sa));
    const int64_t t = std::max(ttl, 0);
    out->ttl = out->ttl < 0 ? t : std::min(out->ttl, t);
  };
  auto fail = [out, v6](const std::string& why) {
    out->temporary = true;
    if (!out->error.empty()) {
      out->error += "; ";
    }
    out->error += (v6 ? "AAAA: " : "A: ") + why;
  };
  if (IsNoSuchName(q.status)) {
    ++*not_found;
    return;
  }
  if (q.status == ARES_ENODATA) {
    return;
  }
  if (q.status != ARES_SUCCESS) {
    fail(ares_strerror(q.status));
    return;
  }
  const int alen = static_cast<int>(q.answer.size());
  int n = kMaxAddressesPerAnswer;
  int status;
  if (v6) {
    std::array<ares_addr6ttl, kMaxAddressesPerAnswer> ttls{};
    status = ares_parse_aaaa_reply(q.answer.data(), alen, nullptr, ttls.data(), &n);
    for (int i = 0; status == ARES_SUCCESS && i < n; ++i) {
      sockaddr_in6 sin6{};
      sin6.sin6_family = AF_INET6;
      static_assert(sizeof(sin6.sin6_addr) == sizeof(ttls[i].ip6addr));
      std::memcpy(&sin6.sin6_addr, &ttls[i].ip6addr, sizeof(sin6.sin6_addr));
      add(reinterpret_cast<const sockaddr*>(&sin6), ttls[i].ttl);
    }
  } else {
    std::array<ares_addrttl, kMaxAddressesPerAnswer> ttls{};
    status = ares_parse_a_reply(q.answer.data(), alen, nullptr, ttls.data(), &n);
    for (int i = 0; status == ARES_SUCCESS && i < n; ++i) {
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_addr = ttls[i].ipaddr;
      add(reinterpret_cast<const sockaddr*>(&sin), ttls[i].ttl);
    }
  }
  // ENODATA: only CNAMEs in the answer.
  if (status != ARES_SUCCESS && status != ARES_ENODATA) {
    fail(std::string("malformed answer (") + ares_strerror(status) + ")");
  }
}

}  // namespace

Resolver::Resolver(io::Shard& shard, ResolverOptions options)
    : shard_(shard), options_(std::move(options)), rng_(std::random_device{}()) {
}

Resolver::~Resolver() {
  Shutdown();
  Reap();
  for (std::unique_ptr<PollSlot>& slot : retiring_) {
    // Cancelled but not completed yet: the ring still refers to the handler.
    slot->Orphan();
    static_cast<void>(slot.release());
  }
}

Result<void> Resolver::Init() {
  if (channel_ != nullptr || shut_down_) {
    return MakeError("resolver already initialised");
  }
  if (auto r = InitLibrary(); !r) {
    return r;
  }
  ares_options opts{};
  opts.sock_state_cb = &Resolver::OnSocketState;
  opts.sock_state_cb_data = this;
  opts.timeout = static_cast<int>(options_.timeout.count());
  opts.tries = options_.tries;
  // EDNS0 with a fragmentation-safe payload; c-ares retries over TCP on TC.
  opts.flags = ARES_FLAG_EDNS | (options_.tcp_only ? ARES_FLAG_USEVC : 0);
  opts.ednspsz = kEdnsPayload;
  // DNS only ("b"), never /etc/hosts ("f"): no file reads on the shard, and
  // MX targets must come from DNS.
  static char dns_only_lookups[] = "b";
  opts.lookups = dns_only_lookups;
  const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS |
                   ARES_OPT_EDNSPSZ | ARES_OPT_LOOKUPS;
  ares_channel channel = nullptr;
  int status = ares_init_options(&channel, &opts, mask);
  if (status != ARES_SUCCESS) {
    return MakeError(std::string("ares_init_options: ") + ares_strerror(status));
  }
  if (!options_.servers.empty()) {
    std::string csv;
    for (const std::string& s : options_.servers) {
      if (!csv.empty()) {
        csv += ',';
      }
      csv += s;
    }
    status = ares_set_servers_ports_csv(channel, csv.c_str());
    if (status != ARES_SUCCESS) {
      ares_destroy(channel);
      return MakeError("bad DNS servers \"" + csv + "\": " + ares_strerror(status), EINVAL);
    }
  }
  channel_ = channel;
  return {};
}

void Resolver::Shutdown() {
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  if (channel_ != nullptr) {
    ares_channel channel = channel_;
    // Every pending query's callback runs now with ARES_ECANCELLED; the
    // callbacks only schedule their coroutines.
    ares_cancel(channel);
    channel_ = nullptr;
    // Closes the sockets; c-ares reports each as (fd, 0, 0), which retires
    // its poll slot and cancels the poll.
    ares_destroy(channel);
  }
  shard_.timers().Cancel(timer_);
  timer_ = {};
  // c-ares reported every socket closed; retire anything it did not.
  for (auto& [fd, slot] : polls_) {
    slot->retired = true;
    slot->want = 0;
    CancelPoll(*slot);
    retiring_.push_back(std::move(slot));
  }
  polls_.clear();
  Reap();
}

bool Resolver::idle() const {
  if (pending_queries_ != 0) {
    return false;
  }
  for (const std::unique_ptr<PollSlot>& slot : retiring_) {
    if (slot->in_flight) {
      return false;
    }
  }
  if (shut_down_) {
    for (const auto& [fd, slot] : polls_) {
      if (slot->in_flight) {
        return false;
      }
    }
  }
  return true;
}

void Resolver::OnSocketState(void* data, int fd, int readable, int writable) {
  static_cast<Resolver*>(data)->SocketState(fd, readable != 0, writable != 0);
}

void Resolver::SocketState(int fd, bool readable, bool writable) {
  const uint32_t want = (readable ? uint32_t{POLLIN} : 0) | (writable ? uint32_t{POLLOUT} : 0);
  auto it = polls_.find(fd);
  if (want == 0) {
    // c-ares is about to close fd. The poll still holds the old file, and
    // the fd number may come back for a new socket at once, so the slot
    // leaves the map now and is freed after its last completion.
    if (it == polls_.end()) {
      return;
    }
    std::unique_ptr<PollSlot> slot = std::move(it->second);
    polls_.erase(it);
    slot->retired = true;
    slot->want = 0;
    CancelPoll(*slot);
    retiring_.push_back(std::move(slot));
    return;
  }
  if (it == polls_.end()) {
    it = polls_.emplace(fd, std::make_unique<PollSlot>(this, fd)).first;
  }
  PollSlot& slot = *it->second;
  slot.want = want;
  if (!slot.in_flight) {
    ArmPoll(slot);
  } else if ((want & ~slot.armed) != 0) {
    // c-ares wants more than the poll in flight waits for (a TCP socket with
    // a query to write): cancel it; the completion re-arms with `want`.
    CancelPoll(slot);
  }
}

void Resolver::ArmPoll(PollSlot& slot) {
  io_uring_sqe* sqe = shard_.GetSqe();
  // One-shot IORING_OP_POLL_ADD (kernel 5.1); re-armed in OnPollDone.
  io_uring_prep_poll_add(sqe, slot.fd(), slot.want);
  slot.user_data = shard_.Arm(sqe, &slot);
  slot.armed = slot.want;
  slot.in_flight = true;
  slot.cancel_sent = false;
}

void Resolver::CancelPoll(PollSlot& slot) {
  if (!slot.in_flight || slot.cancel_sent) {
    return;
  }
  shard_.Cancel(slot.user_data);
  slot.cancel_sent = true;
}

void Resolver::OnPollDone(PollSlot& slot, int32_t res) {
  slot.in_flight = false;
  slot.armed = 0;
  if (slot.retired || channel_ == nullptr) {
    return;  // freed by Reap()
  }
  if (res > 0) {
    const auto events = static_cast<uint32_t>(res);
    const uint32_t failed = POLLERR | POLLHUP;
    // An error is reported to c-ares as readiness: its read or write then
    // fails and it moves the query to the next server.
    const int read_fd = (slot.want & POLLIN) != 0 && (events & (POLLIN | failed)) != 0
                            ? slot.fd()
                            : ARES_SOCKET_BAD;
    const int write_fd = (slot.want & POLLOUT) != 0 && (events & (POLLOUT | failed)) != 0
                             ? slot.fd()
                             : ARES_SOCKET_BAD;
    // May call SocketState: retire this slot (it then stays in retiring_, so
    // `slot` remains valid) or change `want`, or arm it again.
    if (read_fd != ARES_SOCKET_BAD || write_fd != ARES_SOCKET_BAD) {
      Process(read_fd, write_fd);
    }
  } else if (res < 0 && res != -ECANCELED) {
    // Not expected for a poll on a socket c-ares owns. Do not spin on it:
    // c-ares' own timeout moves the query on (and re-reports the socket).
    spdlog::warn("dns: poll on fd {} failed: {}", slot.fd(), std::strerror(-res));
    return;
  }
  if (!slot.retired && !slot.in_flight && slot.want != 0) {
    ArmPoll(slot);
  }
}

void Resolver::Reap() {
  std::erase_if(retiring_, [](const std::unique_ptr<PollSlot>& s) { return !s->in_flight; });
}

void Resolver::Process(int read_fd, int write_fd) {
  if (channel_ == nullptr) {
    return;
  }
  ares_process_fd(channel_, read_fd, write_fd);
  UpdateTimer();
}

void Resolver::UpdateTimer() {
  if (timer_) {
    shard_.timers().Cancel(timer_);
    timer_ = {};
  }
  if (channel_ == nullptr) {
    return;
  }
  timeval tv{};
  if (ares_timeout(channel_, nullptr, &tv) == nullptr) {
    return;  // no query pending
  }
  const Duration delay = std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
  timer_ = shard_.timers().Add(shard_.Now() + delay, this);
}

void Resolver::OnTimer() {
  timer_ = {};
  Reap();
  // ares_process(3): with both fds ARES_SOCKET_BAD, only timeouts are handled.
  Process(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

uint32_t Resolver::ClampTtl(int64_t ttl) const {
  if (ttl < 0) {
    return options_.min_ttl;
  }
  return static_cast<uint32_t>(
      std::clamp<int64_t>(ttl, options_.min_ttl, std::max(options_.min_ttl, options_.max_ttl)));
}

template <typename Entry>
void Resolver::CacheInsert(std::unordered_map<std::string, Entry>& cache, const std::string& key,
                           Entry entry) {
  if (options_.max_cache_entries == 0) {
    return;
  }
  if (cache.size() >= options_.max_cache_entries && !cache.contains(key)) {
    const MonoTime now = shard_.Now();
    std::erase_if(cache, [&](const auto& kv) { return kv.second.expires <= now; });
    while (cache.size() >= options_.max_cache_entries) {
      cache.erase(cache.begin());
    }
  }
  cache.insert_or_assign(key, std::move(entry));
}

MxLookup Resolver::MxFailure(MxLookup::Status status, std::string error) {
  if (status == MxLookup::Status::kTempFail) {
    ++stats_.failures;
  }
  MxLookup lookup;
  lookup.status = status;
  lookup.error = std::move(error);
  return lookup;
}

io::Task<std::vector<Resolver::AddressAnswer>> Resolver::ResolveAll(
    std::vector<std::string> names) {
  // A and AAAA of every name at once.
  QueryBatch batch(*this);
  std::vector<std::pair<const QueryBatch::Query*, const QueryBatch::Query*>> queries;
  queries.reserve(names.size());
  for (const std::string& name : names) {
    const QueryBatch::Query& a = batch.Add(name, ns_t_a);
    const QueryBatch::Query& aaaa = batch.Add(name, ns_t_aaaa);
    queries.emplace_back(&a, &aaaa);
  }
  co_await batch;
  std::vector<AddressAnswer> answers(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    AddressAnswer& out = answers[i];
    int not_found = 0;
    AddAddresses(*queries[i].first, false, &not_found, &out);
    AddAddresses(*queries[i].second, true, &not_found, &out);
    out.no_such_domain = not_found == 2;
  }
  co_return answers;
}

io::Task<MxLookup> Resolver::LookupMx(std::string domain) {
  using Status = MxLookup::Status;
  Reap();
  const std::string key = NormalizeDnsName(domain);
  if (key.empty()) {
    co_return MxFailure(Status::kNoSuchDomain, "empty domain name");
  }
  if (auto it = mx_cache_.find(key); it != mx_cache_.end()) {
    if (it->second.expires > shard_.Now()) {
      ++stats_.cache_hits;
      MxLookup hit = it->second.lookup;
      // RFC 5321 §5.1: a fresh random order among equal preferences per lookup.
      hit.targets = OrderMxTargets(std::move(hit.targets), options_.self_names, rng_);
      co_return hit;
    }
    mx_cache_.erase(it);
  }
  if (channel_ == nullptr) {
    co_return MxFailure(Status::kTempFail, "DNS resolver is shut down");
  }

  QueryBatch batch(*this);
  const QueryBatch::Query& mx = batch.Add(key, ns_t_mx);
  co_await batch;
  if (shut_down_) {
    co_return MxFailure(Status::kTempFail, "DNS resolver is shut down");
  }

  std::vector<MxTarget> records;
  int64_t ttl = -1;
  bool implicit = false;
  switch (mx.status) {
    case ARES_SUCCESS: {
      Result<MxAnswer> answer = ParseMxAnswer(mx.answer.data(), mx.answer.size());
      if (!answer) {
        co_return MxFailure(Status::kTempFail, key + ": " + answer.error().message);
      }
      if (IsNullMx(*answer)) {
        // RFC 7505 §3: the domain accepts no mail.
        MxLookup null_mx = MxFailure(Status::kNullMx, key + " does not accept mail (null MX)");
        CacheInsert(
            mx_cache_, key,
            MxCacheEntry{null_mx, shard_.Now() + std::chrono::seconds(options_.negative_ttl)});
        co_return null_mx;
      }
      if (answer->records.empty()) {
        implicit = true;  // a CNAME whose target has no MX records
        break;
      }
      ttl = answer->ttl;
      records = std::move(answer->records);
      break;
    }
    case ARES_ENODATA:
      implicit = true;
      break;
    case ARES_ENOTFOUND:
    case ARES_EBADNAME: {
      // RFC 5321 §5.1: a non-existent domain is an error, not a retry.
      MxLookup nxdomain = MxFailure(
          Status::kNoSuchDomain,
          key + (mx.status == ARES_EBADNAME ? ": not a valid domain name" : ": no such domain"));
      CacheInsert(
          mx_cache_, key,
          MxCacheEntry{nxdomain, shard_.Now() + std::chrono::seconds(options_.negative_ttl)});
      co_return nxdomain;
    }
    default:
      co_return MxFailure(Status::kTempFail,
                          key + ": MX lookup failed: " + ares_strerror(mx.status));
  }

  if (implicit) {
    // RFC 5321 §5.1: no MX records at all: the domain itself, preference 0.
    records.push_back(MxTarget{key, 0, {}});
  } else {
    // A "." among other records (RFC 7505 §3 forbids the mix) and IP
    // literals (targets are host names, RFC 5321 §5.1, RFC 2181 §10.3) lead
    // nowhere. Never fall back to the domain's own A records.
    std::erase_if(records, [](const MxTarget& r) {
      return r.host.empty() || io::IpAddress::Parse(r.host).has_value();
    });
    if (records.empty()) {
      co_return MxFailure(Status::kNoAddresses, key + ": no usable MX target");
    }
    records = OrderMxTargets(std::move(records), options_.self_names, rng_);
    if (records.empty()) {
      co_return MxFailure(Status::kNoAddresses,
                          key + ": the best MX is this host (RFC 5321 §5.1: mail would loop)");
    }
  }

  // The destination is named by every MX host, resolved or not (the order is random among
  // equal preferences, so a truncated list would name a different site each time).
  std::vector<std::string> all_hosts;
  all_hosts.reserve(records.size());
  for (const MxTarget& r : records)
    all_hosts.push_back(r.host);
  std::string site = SiteKey(std::move(all_hosts));

  // Best first, a batch at a time, until mx_address_limit addresses are known (Postfix's
  // smtp_mx_address_limit), looking at no more than twice that many targets.
  const size_t limit = std::max<size_t>(options_.mx_address_limit, 1);
  const size_t max_targets = std::min(records.size(), 2 * limit);
  MxLookup result;
  result.status = Status::kOk;
  result.site = std::move(site);
  bool temporary = false;
  std::string skipped;
  size_t have = 0;
  size_t next = 0;
  while (have < limit && next < max_targets) {
    const size_t count = std::min(limit - have, max_targets - next);
    std::vector<std::string> names;
    names.reserve(count);
    for (size_t i = next; i < next + count; ++i)
      names.push_back(records[i].host);
    std::vector<AddressAnswer> addresses = co_await ResolveAll(std::move(names));
    if (shut_down_) {
      co_return MxFailure(Status::kTempFail, "DNS resolver is shut down");
    }
    for (size_t k = 0; k < count; ++k) {
      AddressAnswer& a = addresses[k];
      MxTarget& target = records[next + k];
      if (a.addresses.empty()) {
        // A target without addresses is skipped (RFC 5321 §5.1 tries the next).
        temporary = temporary || a.temporary;
        if (!skipped.empty()) {
          skipped += "; ";
        }
        skipped += target.host + ": " +
                   (a.temporary ? a.error
                                : (a.no_such_domain ? std::string("no such host")
                                                    : std::string("no A/AAAA records")));
        continue;
      }
      if (have >= limit)
        continue;
      if (a.ttl >= 0) {
        ttl = ttl < 0 ? a.ttl : std::min(ttl, a.ttl);
      }
      if (a.addresses.size() > limit - have)
        a.addresses.resize(limit - have);
      have += a.addresses.size();
      target.addresses = std::move(a.addresses);
      result.targets.push_back(std::move(target));
    }
    next += count;
  }
  if (result.targets.empty()) {
    const Status status = temporary ? Status::kTempFail : Status::kNoAddresses;
    co_return MxFailure(status, implicit
                                    ? key + " has no MX and no address records (" + skipped + ")"
                                    : key + ": no MX target has an address (" + skipped + ")");
  }
  if (!skipped.empty()) {
    result.error = "skipped MX targets: " + skipped;
  }
  CacheInsert(mx_cache_, key,
              MxCacheEntry{result, shard_.Now() + std::chrono::seconds(ClampTtl(ttl))});
  co_return result;
}

io::Task<Result<std::vector<io::IpAddress>>> Resolver::LookupHost(std::string host) {
  Reap();
  if (std::optional<io::IpAddress> literal = io::IpAddress::Parse(StripBrackets(host))) {
    co_return std::vector<io::IpAddress>{*literal};
  }
  const std::string key = NormalizeDnsName(host);
  if (key.empty()) {
    co_return MakeError("empty host name", ENOENT);
  }
  if (auto it = host_cache_.find(key); it != host_cache_.end()) {
    if (it->second.expires > shard_.Now()) {
      ++stats_.cache_hits;
      co_return it->second.addresses;
    }
    host_cache_.erase(it);
  }
  if (channel_ == nullptr) {
    ++stats_.failures;
    co_return MakeError("DNS resolver is shut down", ECANCELED);
  }
  std::vector<std::string> names{key};
  std::vector<AddressAnswer> answers = co_await ResolveAll(std::move(names));
  AddressAnswer& a = answers.front();
  if (shut_down_) {
    ++stats_.failures;
    co_return MakeError("DNS resolver is shut down", ECANCELED);
  }
  if (!a.addresses.empty()) {
    CacheInsert(host_cache_, key,
                HostCacheEntry{a.addresses, shard_.Now() + std::chrono::seconds(ClampTtl(a.ttl))});
    co_return std::move(a.addresses);
  }
  if (a.temporary) {
    ++stats_.failures;
    co_return MakeError(key + ": " + a.error, EAGAIN);
  }
  co_return MakeError(key + (a.no_such_domain ? ": no such host" : ": no A/AAAA records"), ENOENT);
}

}  // namespace sluice::delivery
