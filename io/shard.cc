#include "io/shard.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <sys/eventfd.h>
#include <sys/mman.h>

#include "base/log.h"

namespace sluice::io {

namespace {
// The shard whose loop runs on this thread (null elsewhere).
thread_local Shard* tls_running_shard = nullptr;
}  // namespace

namespace {

std::string RingSetupAdvice(int err) {
  switch (err) {
    case EPERM:
      return "io_uring is disabled for this process: check the sysctl kernel.io_uring_disabled "
             "(must be 0, or 1 with this user in kernel.io_uring_group) and the container's "
             "seccomp profile (io_uring_setup must be allowed)";
    case ENOSYS:
      return "the kernel has no io_uring (needs Linux 5.19 or later, 6.1+ recommended), or a "
             "seccomp filter blocks io_uring_setup";
    case ENOMEM:
      return "not enough locked memory for the ring: raise RLIMIT_MEMLOCK (ulimit -l, systemd "
             "LimitMEMLOCK=) or lower shard ring sizes";
    default:
      return std::string("io_uring_queue_init failed: ") + std::strerror(err);
  }
}

}  // namespace

// Drains the mailbox when the eventfd fires; re-arms itself.
class Shard::WakeReader final : public CompletionHandler {
 public:
  explicit WakeReader(Shard& shard) : shard_(shard) {
  }
  void OnCompletion(int32_t res, uint32_t /*flags*/) override {
    if (res < 0 && res != -EINTR && res != -ECANCELED) {
      spdlog::error("shard {}: eventfd read failed: {}", shard_.id(), std::strerror(-res));
    }
    shard_.ArmWakeRead();
  }

 private:
  Shard& shard_;
};

Shard::Shard(unsigned id, ShardOptions options)
    : id_(id),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : &SystemClock::Instance()),
      timers_(clock_->Now()) {
}

Shard::~Shard() {
  if (ring_ready_) {
    if (buf_ring_) {
      (void)io_uring_unregister_buf_ring(&ring_, kRecvBufferGroup);
    }
    io_uring_queue_exit(&ring_);
  }
  if (buf_ring_)
    munmap(buf_ring_, buf_ring_bytes_);
  std::free(recv_buffers_);
  if (wake_fd_ >= 0)
    ::close(wake_fd_);
}

Result<void> Shard::SetupRing() {
  // Preferred flags (docs/design.md §6.1), probed rather than guessed from
  // uname: SINGLE_ISSUER (6.0) + DEFER_TASKRUN (6.1) run completions only when
  // this thread enters the kernel; COOP_TASKRUN (5.19) and TASKRUN_FLAG avoid
  // IPIs; SUBMIT_ALL (5.18) keeps submitting after a failed SQE; CQSIZE (5.5).
  struct Attempt {
    unsigned flags;
    const char* name;
  };
  const Attempt attempts[] = {
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN |
           IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
       "SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN"},
      {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
       "COOP_TASKRUN"},
      {0, "plain"},
  };
  int last = 0;
  for (const Attempt& a : attempts) {
    io_uring_params p{};
    p.flags = a.flags | IORING_SETUP_CQSIZE;
    p.cq_entries = options_.cq_entries;
    last = io_uring_queue_init_params(options_.sq_entries, &ring_, &p);
    if (last == 0) {
      ring_ready_ = true;
      ring_features_ = a.name;
      if (!(p.features & IORING_FEAT_NODROP)) {
        spdlog::warn("shard {}: kernel lacks IORING_FEAT_NODROP; CQ overflow would drop events",
                     id_);
      }
      return {};
    }
    if (last != -EINVAL)
      break;  // EINVAL: flag unknown to this kernel, try fewer
  }
  return MakeError(RingSetupAdvice(-last), -last);
}

Result<void> Shard::SetupRecvBuffers() {
  // liburing 2.3 has no io_uring_setup_buf_ring (2.4): map and register the
  // ring by hand (docs/design.md §6.2). Needs kernel 5.19.
  const unsigned n = options_.recv_buffers;
  buf_ring_bytes_ = size_t{n} * sizeof(io_uring_buf);
  void* mem =
      mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED)
    return MakeError("mmap of buffer ring failed", errno);
  buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_ring_init(buf_ring_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
  reg.ring_entries = n;
  reg.bgid = kRecvBufferGroup;
  int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (ret != 0) {
    munmap(buf_ring_, buf_ring_bytes_);
    buf_ring_ = nullptr;
    return MakeError(std::string("io_uring_register_buf_ring failed (kernel 5.19+ needed): ") +
                         std::strerror(-ret),
                     -ret);
  }
  if (posix_memalign(reinterpret_cast<void**>(&recv_buffers_), 4096,
                     size_t{n} * options_.recv_buffer_size) != 0) {
    return MakeError("cannot allocate receive buffers", ENOMEM);
  }
  const int mask = io_uring_buf_ring_mask(n);
  for (unsigned i = 0; i < n; ++i) {
    io_uring_buf_ring_add(buf_ring_, recv_buffers_ + size_t{i} * options_.recv_buffer_size,
                          options_.recv_buffer_size, static_cast<unsigned short>(i), mask,
                          static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, static_cast<int>(n));
  return {};
}

Result<void> Shard::Init() {
  if (auto r = SetupRing(); !r)
    return r;
  if (auto r = SetupRecvBuffers(); !r)
    return r;
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0)
    return MakeError("eventfd failed", errno);
  wake_handler_ = std::make_unique<WakeReader>(*this);
  ArmWakeRead();
  timers_ = TimerWheel(clock_->Now());
  return {};
}

void Shard::ArmWakeRead() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof(wake_value_), 0);
  Arm(sqe, wake_handler_.get());
}

io_uring_sqe* Shard::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

uint64_t Shard::Arm(io_uring_sqe* sqe, CompletionHandler* handler) {
  uint32_t index;
  if (!free_slots_.empty()) {
    index = free_slots_.back();
    free_slots_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  OpSlot& slot = slots_[index];
  slot.handler = handler;
  const uint64_t user_data = (uint64_t{slot.generation} << 32) | index;
  io_uring_sqe_set_data64(sqe, user_data);
  return user_data;
}

void Shard::Cancel(uint64_t user_data) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel64(sqe, user_data, 0);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void Shard::CancelFd(int fd) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, kIgnoreUserData);
}

void Shard::ReturnRecvBuffer(unsigned bid) {
  io_uring_buf_ring_add(buf_ring_, recv_buffers_ + size_t{bid} * options_.recv_buffer_size,
                        options_.recv_buffer_size, static_cast<unsigned short>(bid),
                        io_uring_buf_ring_mask(options_.recv_buffers), 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
}

void Shard::Dispatch(const io_uring_cqe* cqe) {
  const uint64_t user_data = io_uring_cqe_get_data64(cqe);
  if (user_data == kIgnoreUserData)
    return;
  const uint32_t index = static_cast<uint32_t>(user_data);
  const uint32_t generation = static_cast<uint32_t>(user_data >> 32);
  if (index >= slots_.size() || slots_[index].generation != generation ||
      slots_[index].handler == nullptr) {
    stats_.stale_cqes.store(stats_.stale_cqes.load(std::memory_order_relaxed) + 1,
                            std::memory_order_relaxed);
    if (cqe->flags & IORING_CQE_F_BUFFER)
      ReturnRecvBuffer(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    SLUICE_BUG("completion for a freed op slot");
    return;
  }
  CompletionHandler* handler = slots_[index].handler;
  if (!(cqe->flags & IORING_CQE_F_MORE)) {
    // Last completion of this request: the slot can be reused.
    OpSlot& slot = slots_[index];
    slot.handler = nullptr;
    if (++slot.generation == 0)
      slot.generation = 1;
    free_slots_.push_back(index);
  }
  handler->OnCompletion(cqe->res, cqe->flags);
}

void Shard::RunReady() {
  // Handles scheduled while running are run in the same pass.
  while (!ready_.empty()) {
    auto h = ready_.front();
    ready_.pop_front();
    h.resume();
  }
}

void Shard::Post(std::function<void()> fn) {
  bool was_empty;
  {
    std::lock_guard lock(mailbox_mu_);
    was_empty = mailbox_.empty();
    mailbox_.push_back(std::move(fn));
  }
  mailbox_pending_.store(true, std::memory_order_release);
  // From the shard's own thread (a delivery job for a destination it hosts, a result for a
  // message it owns) no wake is needed: the loop looks at mailbox_pending_ before it waits.
  if (was_empty && tls_running_shard != this) {
    // One wake per batch of posts; the shard swaps the whole vector.
    const uint64_t one = 1;
    ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    (void)n;  // EAGAIN means the counter is already non-zero: a wake is pending
  }
}

void Shard::DrainMailbox() {
  if (!mailbox_pending_.exchange(false, std::memory_order_acquire))
    return;
  {
    std::lock_guard lock(mailbox_mu_);
    mailbox_work_.swap(mailbox_);
  }
  for (auto& fn : mailbox_work_)
    fn();
  mailbox_work_.clear();
}

void Shard::Run() {
  tls_running_shard = this;
  // Loop utilisation = busy time / wall time (sluice_shard_busy_seconds_total).
  auto busy_start = std::chrono::steady_clock::now();
  while (!quit_) {
    DrainMailbox();
    timers_.Advance(clock_->Now());
    RunReady();
    if (quit_)
      break;

    const Duration wait = timers_.NextTimeout(clock_->Now());
    __kernel_timespec ts{};
    __kernel_timespec* tsp = nullptr;
    if (mailbox_pending_.load(std::memory_order_acquire)) {
      tsp = &ts;  // zero: just submit and reap
    } else if (wait >= Duration::zero()) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
      ts.tv_sec = ns / 1'000'000'000;
      ts.tv_nsec = ns % 1'000'000'000;
      tsp = &ts;
    }
    io_uring_cqe* cqe = nullptr;
    const auto wait_start = std::chrono::steady_clock::now();
    stats_.busy_ns.store(stats_.busy_ns.load(std::memory_order_relaxed) +
                             static_cast<uint64_t>((wait_start - busy_start).count()),
                         std::memory_order_relaxed);
    int ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
    busy_start = std::chrono::steady_clock::now();
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      spdlog::error("shard {}: io_uring_submit_and_wait failed: {}", id_, std::strerror(-ret));
    }
    if (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_CQ_OVERFLOW) {
      stats_.cq_overflow.store(stats_.cq_overflow.load(std::memory_order_relaxed) + 1,
                               std::memory_order_relaxed);
    }
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      Dispatch(cqe);
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    stats_.loop_iterations.store(stats_.loop_iterations.load(std::memory_order_relaxed) + 1,
                                 std::memory_order_relaxed);
  }
  // Submit what the last iteration queued (closes, cancels).
  io_uring_submit(&ring_);
  tls_running_shard = nullptr;  // later posts from this thread must wake whoever runs it next
}

}  // namespace sluice::io
