#include "auth/failure_throttle.h"

#include <algorithm>

namespace sluice::auth {

FailureThrottle::FailureThrottle(size_t max_failures, std::chrono::seconds window,
                                 size_t max_entries)
    : max_failures_(std::max<size_t>(max_failures, 1)),
      window_(window),
      max_entries_(std::max<size_t>(max_entries, 1)) {
  index_.reserve(std::min<size_t>(max_entries_, 1024));
}

size_t FailureThrottle::LiveFailures(std::string_view ip, Clock::time_point now) const {
  const auto it = index_.find(ip);
  if (it == index_.end()) {
    return 0;
  }
  const Entry& e = *it->second;
  return now - e.last_failure < window_ ? e.failures : 0;
}

std::chrono::milliseconds FailureThrottle::DelayFor(std::string_view ip,
                                                    Clock::time_point now) const {
  size_t n = 0;
  {
    std::lock_guard lock(mu_);
    n = LiveFailures(ip, now);
  }
  if (n == 0) {
    return std::chrono::milliseconds(0);
  }
  // 1 s, 2 s, 4 s, 8 s, 8 s, ...; the shift is bounded before it can overflow.
  const size_t shift = std::min<size_t>(n - 1, 4);
  return std::min(kFirstDelay * (int64_t{1} << shift), kMaxDelay);
}

bool FailureThrottle::Blocked(std::string_view ip, Clock::time_point now) const {
  std::lock_guard lock(mu_);
  return LiveFailures(ip, now) >= max_failures_;
}

void FailureThrottle::RecordFailure(std::string_view ip, Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (const auto it = index_.find(ip); it != index_.end()) {
    Entry& e = *it->second;
    e.failures = now - e.last_failure < window_ ? e.failures + 1 : 1;
    e.last_failure = now;
    lru_.splice(lru_.begin(), lru_, it->second);  // iterators stay valid
    return;
  }
  if (index_.size() >= max_entries_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(Entry{std::string(ip), 1, now});
  index_.emplace(lru_.front().key, lru_.begin());
}

size_t FailureThrottle::size() const {
  std::lock_guard lock(mu_);
  return index_.size();
}

}  // namespace sluice::auth
