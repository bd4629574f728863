#pragma once

// Shard: one thread, one io_uring, the connections and timers that live on
// it. Nothing here is shared with other threads except the mailbox (Post).
//
// Completions are routed by user_data = generation << 32 | slot: the slot
// names a CompletionHandler that outlives the request (an awaiter in a
// suspended coroutine frame, or a connection that waits for its last
// completion before it is freed). A stale generation means a bug; the CQE is
// dropped (and its provided buffer returned).

#include <liburing.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "io/timer_wheel.h"

namespace sluice::io {

class CompletionHandler {
 public:
  // Called on the shard thread while the CQ is walked: record the result and
  // schedule work; never resume a coroutine or free the handler here.
  virtual void OnCompletion(int32_t res, uint32_t flags) = 0;

  virtual ~CompletionHandler() = default;
};

struct ShardOptions {
  unsigned sq_entries = 1024;
  // Multishot accept/recv post many CQEs per SQE; a big CQ keeps us far from
  // overflow (the kernel keeps overflowed CQEs since 5.5, IORING_FEAT_NODROP,
  // but that path is slow; we count it).
  unsigned cq_entries = 16384;
  // Provided buffer ring for plaintext recv: shared by all connections of the
  // shard, so idle connections hold no receive buffers.
  unsigned recv_buffers = 1024;  // power of two, <= 32768
  unsigned recv_buffer_size = 16384;
  // Time for the shard's timers and for the code on it (tests: a ManualClock). Null: the system
  // clocks. Must outlive the shard.
  const Clock* clock = nullptr;
};

// Counters owned by the shard thread, read by other threads with relaxed loads.
struct ShardStats {
  std::atomic<uint64_t> enobufs{0};      // multishot recv ran out of buffers
  std::atomic<uint64_t> cq_overflow{0};  // CQ overflow observed
  std::atomic<uint64_t> stale_cqes{0};   // CQE for a freed slot (a bug)
  std::atomic<uint64_t> loop_iterations{0};
  std::atomic<uint64_t> busy_ns{0};         // time not spent waiting in io_uring_enter
  std::atomic<uint64_t> tls_abrupt_eof{0};  // TLS peers that closed TCP without close_notify
};

class Shard {
 public:
  static constexpr uint64_t kIgnoreUserData = ~uint64_t{0};
  static constexpr uint16_t kRecvBufferGroup = 0;

  Shard(unsigned id, ShardOptions options);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Must run on the shard's own thread: IORING_SETUP_SINGLE_ISSUER binds the
  // ring to the task that creates it (kernel 6.0).
  Result<void> Init();
  // Runs the event loop until Quit(). On the shard thread.
  void Run();
  // Ends Run() after the current iteration. On the shard thread.
  void Quit() {
    quit_ = true;
  }

  unsigned id() const {
    return id_;
  }
  const char* ring_features() const {
    return ring_features_;
  }
  const ShardStats& stats() const {
    return stats_;
  }
  const Clock& clock() const {
    return *clock_;
  }
  MonoTime Now() const {
    return clock_->Now();
  }

  // ---- Shard-thread API ----
  // A free SQE (submits pending ones when the SQ is full).
  io_uring_sqe* GetSqe();
  // Ties an SQE to a handler; returns the user_data it was given.
  uint64_t Arm(io_uring_sqe* sqe, CompletionHandler* handler);
  // Cancels the request with that user_data (result -ECANCELED, or it already completed).
  void Cancel(uint64_t user_data);
  // Cancels every request on fd (IORING_ASYNC_CANCEL_FD|ALL, kernel 5.19).
  void CancelFd(int fd);
  // Resumes h from the event loop (never inline).
  void Schedule(std::coroutine_handle<> h) {
    ready_.push_back(h);
  }
  TimerWheel& timers() {
    return timers_;
  }

  // Provided receive buffers (buffer ring group kRecvBufferGroup).
  const char* RecvBuffer(unsigned bid) const {
    return recv_buffers_ + size_t{bid} * options_.recv_buffer_size;
  }
  void ReturnRecvBuffer(unsigned bid);

  // ---- Any thread ----
  // Runs fn on the shard thread soon. Never blocks on the shard.
  void Post(std::function<void()> fn);

 private:
  struct OpSlot {
    CompletionHandler* handler = nullptr;
    uint32_t generation = 1;
  };
  class WakeReader;

  Result<void> SetupRing();
  Result<void> SetupRecvBuffers();
  void ArmWakeRead();
  void Dispatch(const io_uring_cqe* cqe);
  void RunReady();
  void DrainMailbox();

  const unsigned id_;
  const ShardOptions options_;
  const Clock* clock_;
  const char* ring_features_ = "";
  io_uring ring_{};
  bool ring_ready_ = false;

  std::vector<OpSlot> slots_;
  std::vector<uint32_t> free_slots_;
  std::deque<std::coroutine_handle<>> ready_;
  TimerWheel timers_;
  bool quit_ = false;

  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  char* recv_buffers_ = nullptr;

  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;  // target of the eventfd read SQE
  std::unique_ptr<WakeReader> wake_handler_;

  std::mutex mailbox_mu_;
  std::vector<std::function<void()>> mailbox_;       // guarded by mailbox_mu_
  std::vector<std::function<void()>> mailbox_work_;  // shard thread only
  std::atomic<bool> mailbox_pending_{false};

  ShardStats stats_;
};

// A one-shot io_uring request awaited by a coroutine. Lives in the awaiting
// coroutine's frame, which stays suspended until the completion arrives.
//   UringOp op(shard);
//   io_uring_prep_connect(op.sqe(), fd, addr, len);
//   int res = co_await op;
class UringOp final : public CompletionHandler {
 public:
  explicit UringOp(Shard& shard) : shard_(shard), sqe_(shard.GetSqe()) {
    user_data_ = shard.Arm(sqe_, this);
  }
  io_uring_sqe* sqe() {
    return sqe_;
  }
  uint64_t user_data() const {
    return user_data_;
  }

  bool await_ready() const noexcept {
    return done_;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    waiter_ = h;
  }
  int32_t await_resume() const noexcept {
    return res_;
  }

  void OnCompletion(int32_t res, uint32_t flags) override {
    res_ = res;
    flags_ = flags;
    done_ = true;
    if (waiter_)
      shard_.Schedule(waiter_);
  }

 private:
  Shard& shard_;
  io_uring_sqe* sqe_;
  uint64_t user_data_ = 0;
  std::coroutine_handle<> waiter_;
  int32_t res_ = 0;
  uint32_t flags_ = 0;
  bool done_ = false;
};

// co_await Yield(shard): resumes from the back of the shard's ready queue, after everything
// already scheduled.
class Yield {
 public:
  explicit Yield(Shard& shard) : shard_(shard) {
  }
  bool await_ready() const noexcept {
    return false;
  }
  void await_suspend(std::coroutine_handle<> h) {
    shard_.Schedule(h);
  }
  void await_resume() const noexcept {
  }

 private:
  Shard& shard_;
};

// co_await Sleep(shard, d): resumes after d (timer wheel resolution).
class Sleep final : public TimerHandler {
 public:
  Sleep(Shard& shard, Duration d) : shard_(shard), d_(d) {
  }
  bool await_ready() const noexcept {
    return d_ <= Duration::zero();
  }
  void await_suspend(std::coroutine_handle<> h) {
    waiter_ = h;
    shard_.timers().Add(shard_.Now() + d_, this);
  }
  void await_resume() const noexcept {
  }
  void OnTimer() override {
    shard_.Schedule(waiter_);
  }

 private:
  Shard& shard_;
  Duration d_;
  std::coroutine_handle<> waiter_;
};

}  // namespace sluice::io
