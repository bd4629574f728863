#include "io/listener.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace sluice::io {

Listener::Listener(Shard& shard, int listen_fd, AcceptFn on_accept)
    : shard_(shard), fd_(listen_fd), on_accept_(std::move(on_accept)) {
}

Listener::~Listener() {
  shard_.timers().Cancel(retry_timer_);
  if (armed_)
    SLUICE_BUG("listener freed with accept in flight");
  if (fd_ >= 0)
    ::close(fd_);
}

void Listener::Start() {
  Arm();
}

void Listener::Arm() {
  if (armed_ || stopping_)
    return;
  io_uring_sqe* sqe = shard_.GetSqe();
  io_uring_prep_multishot_accept(sqe, fd_, nullptr, nullptr, SOCK_CLOEXEC);
  user_data_ = shard_.Arm(sqe, this);
  armed_ = true;
}

void Listener::OnCompletion(int32_t res, uint32_t flags) {
  if (!(flags & IORING_CQE_F_MORE))
    armed_ = false;
  if (res >= 0) {
    if (stopping_) {
      ::close(res);  // raced with Stop(): never start a session
    } else {
      on_accept_(res);
    }
  } else if (res != -ECANCELED) {
    ++accept_errors_;
    spdlog::warn("shard {}: accept failed: {}", shard_.id(), std::strerror(-res));
  }
  if (stopping_) {
    if (!armed_ && fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    return;
  }
  if (!armed_) {
    if (res < 0) {
      // EMFILE/ENFILE/ENOMEM: back off briefly instead of spinning.
      retry_timer_ = shard_.timers().Add(shard_.Now() + std::chrono::milliseconds(100), this);
    } else {
      Arm();
    }
  }
}

void Listener::OnTimer() {
  retry_timer_ = {};
  Arm();
}

void Listener::Stop() {
  if (stopping_)
    return;
  stopping_ = true;
  shard_.timers().Cancel(retry_timer_);
  retry_timer_ = {};
  if (armed_) {
    shard_.Cancel(user_data_);
  } else if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace sluice::io
