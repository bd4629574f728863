#pragma once

// BlockingPool: a few threads for work that must never run on a shard
// (RocksDB reads of large bodies, maildir writes with fsync, crypt()).
// A shard coroutine awaits the result; the completion comes back through the
// shard's mailbox, so the coroutine resumes on its own shard.
//
//   auto read = pool.Run(shard, [this, id] { return ReadBody(id); });
//   std::optional<std::string> body = co_await read;
//
// The callable runs on a pool thread while the coroutine is suspended, so it
// may reference the coroutine's locals. Keep the awaiter a named variable and
// the lambda's captures trivial (pointers, ids): g++ 12 destroys non-trivial
// lambda temporaries inside a co_await expression wrongly (seen as a bad
// free; GCC PR 95599 family).

#include <condition_variable>
#include <coroutine>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "io/shard.h"

namespace sluice::io {

class BlockingPool {
 public:
  explicit BlockingPool(unsigned threads);
  ~BlockingPool();  // finishes queued work, joins
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  template <typename Fn>
  class Awaiter {
   public:
    Awaiter(BlockingPool& pool, Shard& shard, Fn fn)
        : pool_(pool), shard_(shard), fn_(std::move(fn)) {
    }
    bool await_ready() const noexcept {
      return false;
    }
    void await_suspend(std::coroutine_handle<> h) {
      pool_.Submit([this, h] {
        result_.emplace(fn_());
        shard_.Post([this, h] { shard_.Schedule(h); });
      });
    }
    auto await_resume() {
      return std::move(*result_);
    }

   private:
    BlockingPool& pool_;
    Shard& shard_;
    Fn fn_;
    std::optional<std::invoke_result_t<Fn>> result_;
  };

  // Runs fn() on a pool thread; the awaiting coroutine resumes on `shard`
  // with fn's result.
  template <typename Fn>
  Awaiter<Fn> Run(Shard& shard, Fn fn) {
    return Awaiter<Fn>(*this, shard, std::move(fn));
  }

  // Runs fn on a pool thread (fire and forget).
  void Submit(std::function<void()> fn);

 private:
  void Worker();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace sluice::io
