#include "delivery/delivery_config.h"

#include <charconv>

#include "base/ascii.h"

namespace sluice::delivery {

namespace {

bool DomainMatches(std::string_view pattern, std::string_view domain) {
  if (pattern == "*")
    return true;
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return domain.size() > suffix.size() && EndsWithIgnoreCase(domain, suffix);
  }
  return EqualsIgnoreCase(pattern, domain);
}

}  // namespace

const char* ToString(RouteType type) {
  switch (type) {
    case RouteType::kMx:
      return "mx";
    case RouteType::kSmarthost:
      return "smarthost";
    case RouteType::kLmtp:
      return "lmtp";
    case RouteType::kMaildir:
      return "maildir";
  }
  return "mx";
}

std::string DestinationLabel(const DeliveryConfig& config, const std::string& domain) {
  const RouteConfig* route = config.routes.empty() ? nullptr : FindRoute(config.routes, domain);
  if (route == nullptr)
    return config.routes.empty() ? domain : "unrouted";
  return route->type == RouteType::kMx ? domain : route->name;
}

const RouteConfig* FindRoute(const std::vector<RouteConfig>& routes, std::string_view domain) {
  if (!domain.empty() && domain.back() == '.')
    domain.remove_suffix(1);
  for (const RouteConfig& r : routes) {
    for (const std::string& d : r.domains) {
      if (DomainMatches(d, domain))
        return &r;
    }
  }
  return nullptr;
}

std::optional<double> ParseRate(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos)
    return std::nullopt;
  double count = 0;
  const std::string_view num = text.substr(0, slash);
  auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), count);
  if (ec != std::errc() || ptr != num.data() + num.size() || count <= 0)
    return std::nullopt;
  const std::string_view unit = text.substr(slash + 1);
  if (unit == "s" || unit == "sec")
    return count;
  if (unit == "m" || unit == "min")
    return count / 60;
  if (unit == "h" || unit == "hour")
    return count / 3600;
  return std::nullopt;
}

}  // namespace sluice::delivery
