#include "gateway/body_budget.h"

#include <algorithm>

#include "base/log.h"

namespace sluice::gateway {

BodyBudget::BodyBudget(int64_t total, int64_t per_client) : total_(total), per_client_(per_client) {
}

bool BodyBudget::Take(const std::string& client, int64_t n) {
  if (n <= 0)
    return true;
  std::lock_guard lock(mu_);
  if (used_ + n > total_)
    return false;
  auto it = by_client_.find(client);
  const int64_t mine = it == by_client_.end() ? 0 : it->second;
  if (mine + n > per_client_)
    return false;
  if (it == by_client_.end()) {
    by_client_.emplace(client, n);
  } else {
    it->second += n;
  }
  used_ += n;
  return true;
}

void BodyBudget::Give(const std::string& client, int64_t n) {
  if (n <= 0)
    return;
  std::lock_guard lock(mu_);
  auto it = by_client_.find(client);
  if (it == by_client_.end() || it->second < n || used_ < n) {
    SLUICE_BUG("body budget: giving back more than was taken");
    return;
  }
  used_ -= n;
  if ((it->second -= n) == 0)
    by_client_.erase(it);
}

bool BodyBudget::Fits(const std::string& client, int64_t n) const {
  std::lock_guard lock(mu_);
  if (used_ + n > total_)
    return false;
  auto it = by_client_.find(client);
  return (it == by_client_.end() ? 0 : it->second) + n <= per_client_;
}

int64_t BodyBudget::used() const {
  std::lock_guard lock(mu_);
  return used_;
}

size_t BodyBudget::clients() const {
  std::lock_guard lock(mu_);
  return by_client_.size();
}

bool BodyBudget::Lease::GrowTo(int64_t bytes) {
  if (bytes <= held_)
    return true;
  if (!budget_.Take(client_, bytes - held_))
    return false;
  held_ = bytes;
  return true;
}

void BodyBudget::Lease::ShrinkTo(int64_t bytes) {
  if (bytes >= held_)
    return;
  budget_.Give(client_, held_ - std::max<int64_t>(bytes, 0));
  held_ = std::max<int64_t>(bytes, 0);
}

}  // namespace sluice::gateway
