#include "queue/commit_waiter.h"

#include "base/log.h"

namespace sluice::queue {

uint64_t CommitWaiter::Reserve() {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Slot& s = slots_[index];
  s.in_use = true;
  s.done = false;
  s.waiter = nullptr;
  ++outstanding_;
  return (uint64_t{s.generation} << 32) | index;
}

void CommitWaiter::Cancel(uint64_t token) {
  Free(token);
}

void CommitWaiter::Free(uint64_t token) {
  const auto index = static_cast<uint32_t>(token);
  Slot& s = slots_[index];
  s.in_use = false;
  s.waiter = nullptr;
  if (++s.generation == 0)
    s.generation = 1;
  free_.push_back(index);
  --outstanding_;
}

void CommitWaiter::Awaiter::await_suspend(std::coroutine_handle<> h) {
  Slot& s = waiter_.slots_[static_cast<uint32_t>(token_)];
  if (s.done) {
    waiter_.shard_.Schedule(h);  // completed before we suspended
  } else {
    s.waiter = h;
  }
}

CommitStatus CommitWaiter::Awaiter::await_resume() {
  const CommitStatus status = waiter_.slots_[static_cast<uint32_t>(token_)].status;
  waiter_.Free(token_);
  return status;
}

void CommitWaiter::OnCommitted(uint64_t token, CommitStatus status) {
  // Writer thread: hand over, and wake the shard once per batch.
  bool was_empty;
  {
    std::lock_guard lock(done_mu_);
    was_empty = done_.empty();
    done_.emplace_back(token, status);
  }
  if (was_empty)
    shard_.Post([this] { Drain(); });
}

void CommitWaiter::Drain() {
  {
    std::lock_guard lock(done_mu_);
    done_work_.swap(done_);
  }
  for (const auto& [token, status] : done_work_) {
    const auto index = static_cast<uint32_t>(token);
    const auto generation = static_cast<uint32_t>(token >> 32);
    if (index >= slots_.size() || !slots_[index].in_use || slots_[index].generation != generation) {
      SLUICE_BUG("spool completion for an unknown token");
      continue;
    }
    Slot& s = slots_[index];
    s.status = status;
    s.done = true;
    if (s.waiter) {
      shard_.Schedule(s.waiter);
      s.waiter = nullptr;
    }
  }
  done_work_.clear();
}

}  // namespace sluice::queue
