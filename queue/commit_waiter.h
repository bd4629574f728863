#pragma once

// CommitWaiter: how a coroutine on a shard waits for the spool to make its write durable.
//
// The spool completes requests on its writer thread (CompletionSink::OnCommitted). A coroutine
// on a shard cannot be resumed from there: the waiter collects the completions under a lock,
// wakes the shard once per writer batch (io::Shard::Post), and resumes each waiting coroutine on
// the shard thread. One per shard, shared by everything on that shard that writes to the spool:
// sessions (the 250 after DATA) and delivery (a bounce committed with the failure it reports).
//
//   const uint64_t token = waiter.Reserve();
//   if (spool.Enqueue(id, meta, body, &waiter, token) != queue::Admit::kAccepted) {
//     waiter.Cancel(token);  // refused: no completion will come
//   } else {
//     queue::CommitStatus status = co_await waiter.Wait(token);
//   }
//
// Tokens are slot | generation << 32: a completion for a token that is not reserved (a bug in
// the spool) is counted by SLUICE_BUG and dropped, never resumes the wrong coroutine.

#include <coroutine>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "io/shard.h"
#include "queue/spool.h"

namespace sluice::queue {

class CommitWaiter final : public CompletionSink {
 public:
  explicit CommitWaiter(io::Shard& shard) : shard_(shard) {
  }
  CommitWaiter(const CommitWaiter&) = delete;
  CommitWaiter& operator=(const CommitWaiter&) = delete;

  class Awaiter {
   public:
    Awaiter(CommitWaiter& waiter, uint64_t token) : waiter_(waiter), token_(token) {
    }
    bool await_ready() const noexcept {
      return false;
    }
    void await_suspend(std::coroutine_handle<> h);
    CommitStatus await_resume();

   private:
    CommitWaiter& waiter_;
    uint64_t token_;
  };

  // Shard thread. A token for one Spool::Enqueue or Spool::Commit with this waiter as the sink.
  uint64_t Reserve();
  // Shard thread. The spool refused the request (Admit other than kAccepted): frees the token.
  void Cancel(uint64_t token);
  // Shard thread. co_await: the request's status; frees the token. Once per accepted request.
  Awaiter Wait(uint64_t token) {
    return Awaiter(*this, token);
  }
  // Shard thread. Tokens reserved and not yet freed (requests the spool has not answered, or
  // whose answer has not been taken).
  size_t outstanding() const {
    return outstanding_;
  }

  // CompletionSink, on the writer thread.
  void OnCommitted(uint64_t token, CommitStatus status) override;

 private:
  struct Slot {
    std::coroutine_handle<> waiter;
    CommitStatus status = CommitStatus::kOk;
    uint32_t generation = 1;
    bool done = false;
    bool in_use = false;
  };

  void Drain();
  void Free(uint64_t token);

  io::Shard& shard_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  size_t outstanding_ = 0;

  std::mutex done_mu_;
  std::vector<std::pair<uint64_t, CommitStatus>> done_;       // guarded by done_mu_
  std::vector<std::pair<uint64_t, CommitStatus>> done_work_;  // shard thread only
};

}  // namespace sluice::queue
