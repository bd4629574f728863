#pragma once

// Destination: one queue of jobs per smarthost, LMTP server, maildir or MX site, and the
// policies that decide when its jobs may go: rate limit, backoff after failed connections, idle
// expiry. The policies are pure (times are parameters, wall-clock microseconds) and unit-tested
// in virtual time (destination_test.cc); DestinationHost runs the workers.
//
// Shaping rules (per-provider limits, warm-up) belong in these policies: they are asked before a
// job goes to a connection, and they are the place that knows the destination's state.

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "delivery/delivery_config.h"
#include "delivery/dns/mx.h"
#include "delivery/job.h"
#include "io/connection.h"
#include "io/shard.h"
#include "io/timer_wheel.h"
#include "smtp/reply.h"

namespace sluice::delivery {

// At most `rate` messages per second across every connection of a destination. A sender
// reserves the next slot before it waits, so workers of one destination queue up one interval
// apart instead of all waking for the same instant.
class RateLimiter {
 public:
  explicit RateLimiter(double rate = 0) : rate_(rate) {
  }
  bool limited() const {
    return rate_ > 0;
  }
  // Reserves the next slot; returns the wait before sending in it (0: send now).
  uint64_t Reserve(uint64_t now_us);

 private:
  double rate_;
  double next_us_ = 0;
};

// RFC 5321 §4.5.4.1: a destination whose connections all failed is remembered as failing for
// delivery.destination_backoff, and the jobs queued to it meanwhile are deferred with the same
// reply instead of each spending an attempt on a dead host.
class DestinationBackoff {
 public:
  bool Failing(uint64_t now_us) const {
    return now_us < until_us_;
  }
  // A temporary failure (4xx) backs off; a permanent one is only remembered as the last reply.
  void Fail(const smtp::Reply& reply, std::string remote, uint64_t now_us, uint64_t backoff_us);
  const smtp::Reply& reply() const {
    return reply_;
  }
  const std::string& remote() const {
    return remote_;
  }
  uint64_t until_us() const {
    return until_us_;
  }

 private:
  uint64_t until_us_ = 0;
  smtp::Reply reply_;
  std::string remote_;
};

// Opportunistic TLS (RFC 7435) must not make mail undeliverable: a host whose TLS handshake
// failed is reached in plaintext for a while (an hour), then TLS is tried again.
class TlsFallback {
 public:
  static constexpr uint64_t kSkipMicros = 3600ull * 1'000'000;
  // True while `host` is marked broken; an expired mark is forgotten.
  bool Skip(const std::string& host, uint64_t now_us);
  void MarkBroken(const std::string& host, uint64_t now_us) {
    until_[host] = now_us + kSkipMicros;
  }
  // Drops expired marks (the idle sweep).
  void Sweep(uint64_t now_us);
  size_t size() const {
    return until_.size();
  }

 private:
  std::unordered_map<std::string, uint64_t> until_;  // host → skip TLS until (µs)
};

// Parks a worker until a job arrives, the idle timeout passes, or shutdown. Exactly one of these
// resumes it: `scheduled` guards against a second.
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
  bool Resume(bool by_job);
};

struct Destination {
  std::string key;
  const RouteConfig* route = nullptr;
  RouteType type = RouteType::kMx;
  std::string domain;
  std::string label;  // metric label
  unsigned max_connections = 20;
  unsigned max_messages_per_connection = 100;
  RateLimiter rate;
  DestinationBackoff backoff;
  std::vector<MxTarget> mx_targets;  // from the latest job (the owner resolved them)

  std::deque<Job> ready;
  unsigned workers = 0;
  std::vector<IdleWaiter*> idle;
  std::vector<io::Connection*> connections;  // open, for Abort()
  uint64_t last_used_us = 0;                 // a job queued or a worker ended

  // Made for the first job to a key, with the route's limits.
  Destination(const Job& first, std::string metric_label);
  // Nothing queued, running or failing, and unused for `expiry`: may be forgotten (the next job
  // makes a new one).
  bool Expired(uint64_t now_us, uint64_t expiry_us) const;
  // One new connection per job waiting beyond what running workers will take, up to
  // max_connections (maildir: one worker per job, the writes are independent).
  bool WantsWorker() const;
};

}  // namespace sluice::delivery
