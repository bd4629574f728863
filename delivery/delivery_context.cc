#include "delivery/delivery_context.h"

namespace sluice::delivery {

std::string DeliveryContext::DestinationLabel(const std::string& domain) const {
  const RouteConfig* route = config.routes.empty() ? nullptr : FindRoute(config.routes, domain);
  if (route == nullptr)
    return config.routes.empty() ? domain : "unrouted";
  return route->type == RouteType::kMx ? domain : route->name;
}

DeliveryTelemetry::DestinationSeries& DeliveryContext::SeriesFor(const std::string& label) {
  auto it = series.find(label);
  if (it == series.end())
    it = series.emplace(label, tel.Series(label)).first;
  return it->second;
}

}  // namespace sluice::delivery
