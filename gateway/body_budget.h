#pragma once

// BodyBudget: the process-wide bound on message bytes held in memory while they are received
// (server.max_body_memory), with a share per client network (server.max_body_memory_per_client)
// so that one client cannot take all of it. A transaction's recipients count too: a thousand
// sessions of a thousand recipients each would otherwise hold 100 MB of envelopes.
//
// A session holds its message whole until the final dot; without this bound, 20 sessions from one
// address each 45 MB into an unfinished DATA cost 900 MiB. Sessions take room in steps as their
// buffer grows (BodyBudget::Lease) and give it back when the message is committed or dropped. A
// session that cannot get room answers 452 4.3.1.
//
// Shared by all shards: a mutex guards the per-client map; a message takes it a few times (its
// buffer grows geometrically), never per received chunk.

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace sluice::gateway {

class BodyBudget {
 public:
  BodyBudget(int64_t total, int64_t per_client);
  BodyBudget(const BodyBudget&) = delete;
  BodyBudget& operator=(const BodyBudget&) = delete;

  // Takes n bytes for `client`; false, taking nothing, if the total or the client's share would
  // pass its bound.
  bool Take(const std::string& client, int64_t n);
  void Give(const std::string& client, int64_t n);
  // Whether n more bytes would fit now (RFC 1870 SIZE at MAIL); takes nothing.
  bool Fits(const std::string& client, int64_t n) const;

  int64_t used() const;
  size_t clients() const;  // client networks holding room now
  int64_t total() const {
    return total_;
  }
  int64_t per_client() const {
    return per_client_;
  }

  // The room one session holds; gives it all back when reset or destroyed. Not thread-safe
  // itself (one session, one shard), the budget behind it is.
  class Lease {
   public:
    Lease(BodyBudget& budget, std::string client) : budget_(budget), client_(std::move(client)) {
    }
    ~Lease() {
      Reset();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    // Holds at least `bytes` in all; false (holding what it held) when the budget has no room.
    bool GrowTo(int64_t bytes);
    // Holds at most `bytes`, giving the rest back.
    void ShrinkTo(int64_t bytes);
    void Reset() {
      ShrinkTo(0);
    }
    int64_t held() const {
      return held_;
    }

   private:
    BodyBudget& budget_;
    const std::string client_;
    int64_t held_ = 0;
  };

 private:
  // Immutable after construction.
  const int64_t total_;
  const int64_t per_client_;

  mutable std::mutex mu_;
  int64_t used_ = 0;                                    // guarded by mu_
  std::unordered_map<std::string, int64_t> by_client_;  // guarded by mu_; no zero entries
};

}  // namespace sluice::gateway
