#include "delivery/delivery_context.h"

namespace sluice::delivery {

std::string DeliveryContext::DestinationLabel(const std::string& domain) const {
  return delivery::DestinationLabel(config, domain);
}

DeliveryTelemetry::DestinationSeries& DeliveryContext::SeriesFor(const std::string& label) {
  auto it = series.find(label);
  if (it == series.end())
    it = series.emplace(label, tel.Series(label)).first;
  return it->second;
}

}  // namespace sluice::delivery
