#include "delivery/job.h"

#include <algorithm>

namespace sluice::delivery {

std::string RouteKey(const RouteConfig& route) {
  switch (route.type) {
    case RouteType::kSmarthost:
      return "smarthost:" + route.name;
    case RouteType::kLmtp:
      return "lmtp:" + route.name;
    case RouteType::kMaildir:
      return "maildir:" + route.name;
    case RouteType::kMx:
      break;
  }
  return "mx:" + route.name;
}

void JobGrouper::Add(size_t rcpt, const std::string& key, const RouteConfig* route,
                     const std::string& domain, std::vector<MxTarget> mx_targets) {
  // A round has a handful of destinations: a linear search keeps the order for free.
  auto it = std::find_if(jobs_.begin(), jobs_.end(), [&key](const Job& j) { return j.key == key; });
  if (it == jobs_.end()) {
    Job& job = jobs_.emplace_back();
    job.id = id_;
    job.owner = owner_;
    job.key = key;
    job.route = route;
    job.domain = domain;
    job.mx_targets = std::move(mx_targets);
    job.message.sender = envelope_.sender;
    job.message.body_type = static_cast<smtp::BodyType>(envelope_.body_type);
    job.message.smtputf8 = envelope_.smtputf8;
    job.message.ret = static_cast<smtp::Ret>(envelope_.ret);
    job.message.envid = envelope_.envid;
    job.message.body = body_;  // null: the worker reads it from the spool
    it = jobs_.end() - 1;
  }
  const queue::Recipient& r = envelope_.recipients[rcpt];
  it->rcpts.push_back(rcpt);
  it->message.recipients.push_back({r.address, r.notify, r.orcpt});
}

}  // namespace sluice::delivery
