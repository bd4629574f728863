#include "delivery/destination.h"

#include <algorithm>

namespace sluice::delivery {

uint64_t RateLimiter::Reserve(uint64_t now_us) {
  if (rate_ <= 0)
    return 0;
  const double now = static_cast<double>(now_us);
  const double slot = std::max(next_us_, now);
  next_us_ = slot + 1e6 / rate_;
  return slot > now ? static_cast<uint64_t>(slot - now) : 0;
}

void DestinationBackoff::Fail(const smtp::Reply& reply, std::string remote, uint64_t now_us,
                              uint64_t backoff_us) {
  if (reply.code < 500)
    until_us_ = now_us + backoff_us;
  reply_ = reply;
  remote_ = std::move(remote);
}

bool TlsFallback::Skip(const std::string& host, uint64_t now_us) {
  auto it = until_.find(host);
  if (it == until_.end())
    return false;
  if (it->second <= now_us) {
    until_.erase(it);
    return false;
  }
  return true;
}

void TlsFallback::Sweep(uint64_t now_us) {
  std::erase_if(until_, [now_us](const auto& entry) { return entry.second <= now_us; });
}

bool IdleWaiter::Resume(bool by_job) {
  if (scheduled)
    return false;
  scheduled = true;
  woken = by_job;
  shard->timers().Cancel(timer);
  timer = {};
  shard->Schedule(handle);
  return true;
}

Destination::Destination(const Job& first, std::string metric_label)
    : key(first.key),
      route(first.route),
      type(first.route != nullptr ? first.route->type : RouteType::kMx),
      domain(first.domain),
      label(std::move(metric_label)) {
  if (route != nullptr) {
    max_connections = std::max(1u, route->max_connections);
    max_messages_per_connection = std::max(1u, route->max_messages_per_connection);
    rate = RateLimiter(route->max_message_rate);
  }
}

bool Destination::Expired(uint64_t now_us, uint64_t expiry_us) const {
  return ready.empty() && workers == 0 && idle.empty() && connections.empty() &&
         !backoff.Failing(now_us) && now_us - last_used_us >= expiry_us;
}

bool Destination::WantsWorker() const {
  if (ready.empty() || workers >= max_connections)
    return false;
  return ready.size() > workers || type == RouteType::kMaildir;
}

}  // namespace sluice::delivery
