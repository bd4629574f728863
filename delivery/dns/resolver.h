#pragma once

// Resolver: c-ares 1.18 driven by the shard's io_uring (docs/design.md §8.1)
// and MX selection per RFC 5321 §5.1 / RFC 7505.
//
// One Resolver (one c-ares channel) per shard; every method runs on the shard
// thread. c-ares 1.18 has no event thread and no cache, and a channel is not
// thread-safe, so the shard owns the channel outright:
//   - c-ares reports its sockets through ARES_OPT_SOCK_STATE_CB; each gets a
//     one-shot IORING_OP_POLL_ADD (kernel 5.1), re-armed after every
//     completion while c-ares still wants the socket, cancelled when it stops;
//   - readiness calls ares_process_fd() from the completion handler;
//   - ares_timeout() becomes one timer on the shard's wheel (10 ms ticks);
//     expiry calls ares_process_fd(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
//   - c-ares callbacks only record the answer and Schedule() the waiting
//     coroutine; nothing resumes inline and nothing blocks the shard.
//
// Caching: positive MX answers for one TTL per domain (the smallest TTL of the
// MX/CNAME answer records and of the address records of the targets kept,
// clamped to [min_ttl, max_ttl]); NXDOMAIN and null MX for negative_ttl.
// Temporary failures and kNoAddresses are not cached. LookupHost caches
// positive answers only. Equal-preference order is re-randomized on every hit.
//
// Lifetimes: the Resolver must outlive every LookupMx/LookupHost task it
// started. Shutdown() completes pending lookups (kTempFail / ECANCELED) and
// cancels the polls; the cancelled polls complete on a later loop iteration,
// so wait for idle() before destroying the Resolver (a Resolver destroyed
// earlier hands the remaining poll handlers to the ring, which frees them on
// their last completion).

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "delivery/dns/mx.h"
#include "io/net.h"
#include "io/shard.h"
#include "io/task.h"
#include "io/timer_wheel.h"

struct ares_channeldata;  // c-ares' channel (ares_channel), kept out of this header

namespace sluice::delivery {

struct ResolverOptions {
  // Name servers as "host:port" ("127.0.0.1:5353", "[::1]:53", or "10.0.0.1"
  // for port 53). Default empty: the servers of /etc/resolv.conf, read once by
  // Init() (a blocking file read: call Init() at startup, not per message).
  std::vector<std::string> servers;
  // Per try, per server (ARES_OPT_TIMEOUTMS). Default 3 s.
  std::chrono::milliseconds timeout{3000};
  // Attempts per server before a query fails (ARES_OPT_TRIES). Default 2.
  int tries = 2;
  // Cache lifetime clamps for positive answers, seconds. Defaults 60 / 3600.
  uint32_t min_ttl = 60;
  uint32_t max_ttl = 3600;
  // Cache lifetime of NXDOMAIN and null MX answers, seconds. Default 60.
  // Temporary failures are never cached.
  uint32_t negative_ttl = 60;
  // Our own host names. RFC 5321 §5.1: if one is an MX target, records at its
  // preference and above are discarded. Default empty.
  std::vector<std::string> self_names;
  // Queries over TCP only (ARES_FLAG_USEVC), e.g. where UDP/53 is filtered.
  // Default false: UDP, with c-ares' automatic TCP retry on truncation.
  bool tcp_only = false;
  // Cache entries per kind (MX, host) before expired entries are swept and,
  // if still full, arbitrary entries evicted. Default 10000.
  size_t max_cache_entries = 10000;
  // The addresses an MX lookup yields, in MX preference order (Postfix's smtp_mx_address_limit):
  // targets are resolved best first, a batch at a time, until this many addresses are known;
  // later targets are not looked up at all. At most 2 × this many targets are resolved, so a
  // domain listing thousands of MX hosts costs a bounded number of queries. Default 5.
  size_t mx_address_limit = 5;
};

class Resolver final : private io::TimerHandler {
 public:
  Resolver(io::Shard& shard, ResolverOptions options);
  ~Resolver() override;
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Creates the c-ares channel (ares_init_options with SOCK_STATE_CB, timeout,
  // tries, EDNS0 with a 1232-byte payload, DNS-only lookups) and sets the
  // servers. Reads /etc/resolv.conf when no servers are configured.
  Result<void> Init();

  // The MX targets of `domain` with their addresses, ordered for delivery, at most
  // mx_address_limit addresses in all. Never fails by other means than MxLookup::status.
  io::Task<MxLookup> LookupMx(std::string domain);

  // A and AAAA records of `host` (A first), e.g. for a smarthost. An IP
  // literal ("192.0.2.1", "2001:db8::1", "[2001:db8::1]") is returned as is,
  // without DNS. Error codes: ENOENT (no such host or no address records:
  // permanent), EAGAIN (temporary DNS failure), ECANCELED (shut down).
  io::Task<Result<std::vector<io::IpAddress>>> LookupHost(std::string host);

  // Completes every pending lookup (kTempFail / ECANCELED; their coroutines
  // resume from the loop, not inline), destroys the channel and cancels the
  // polls and the timer. Later lookups fail at once. Idempotent.
  void Shutdown();

  // No query pending and no poll request in flight.
  bool idle() const;

  struct Stats {
    uint64_t queries = 0;     // DNS queries handed to c-ares (one per type and name)
    uint64_t cache_hits = 0;  // lookups answered from the cache
    uint64_t failures = 0;    // lookups ending in kTempFail, EAGAIN or ECANCELED
  };
  const Stats& stats() const {
    return stats_;
  }

 private:
  class PollSlot;
  class QueryBatch;
  struct AddressAnswer;
  struct MxCacheEntry {
    MxLookup lookup;
    MonoTime expires;
  };
  struct HostCacheEntry {
    std::vector<io::IpAddress> addresses;
    MonoTime expires;
  };

  static void OnSocketState(void* data, int fd, int readable, int writable);
  void SocketState(int fd, bool readable, bool writable);
  void ArmPoll(PollSlot& slot);
  void CancelPoll(PollSlot& slot);
  void OnPollDone(PollSlot& slot, int32_t res);
  void Reap();
  void Process(int read_fd, int write_fd);
  void UpdateTimer();
  void OnTimer() override;

  io::Task<std::vector<AddressAnswer>> ResolveAll(std::vector<std::string> names);
  uint32_t ClampTtl(int64_t ttl) const;
  template <typename Entry>
  void CacheInsert(std::unordered_map<std::string, Entry>& cache, const std::string& key,
                   Entry entry);
  MxLookup MxFailure(MxLookup::Status status, std::string error);

  // Immutable after construction.
  io::Shard& shard_;
  const ResolverOptions options_;

  // Owned by the shard thread.
  ares_channeldata* channel_ = nullptr;
  bool shut_down_ = false;
  std::unordered_map<int, std::unique_ptr<PollSlot>> polls_;  // by fd, sockets c-ares uses
  std::vector<std::unique_ptr<PollSlot>> retiring_;           // sockets c-ares let go of
  io::TimerWheel::Id timer_;
  size_t pending_queries_ = 0;
  std::unordered_map<std::string, MxCacheEntry> mx_cache_;
  std::unordered_map<std::string, HostCacheEntry> host_cache_;
  std::mt19937 rng_;
  Stats stats_;
};

}  // namespace sluice::delivery
