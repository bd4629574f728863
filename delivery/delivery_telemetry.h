#pragma once

// What delivery reports: per-destination counters (bounded: top-N
// destinations, the rest "other"), latency histograms, DNS results, DSNs,
// and the JSON events that answer "where is my mail?".

#include <array>
#include <string>

#include "delivery/dns/mx.h"
#include "delivery/dsn/dsn.h"
#include "metrics/event_log.h"
#include "metrics/registry.h"

namespace sluice::delivery {

class DeliveryTelemetry {
 public:
  DeliveryTelemetry(metrics::Registry& registry, metrics::EventLog* events,
                    size_t max_destinations);

  struct DestinationSeries {
    metrics::Counter* delivered = nullptr;
    metrics::Counter* deferred = nullptr;
    metrics::Counter* bounced = nullptr;
    metrics::Gauge* connections = nullptr;
    metrics::Counter* connection_failures = nullptr;
  };
  // Takes the registry's mutex: callers cache the result per destination.
  DestinationSeries Series(const std::string& destination);

  enum class DnsType { kMx, kHost };
  void Dns(unsigned shard, DnsType type, MxLookup::Status status, double seconds);
  // Outbound TLS: verified, unverified, failed, not_offered, skipped_broken.
  void Tls(unsigned shard, std::string_view result) {
    tls_.WithLabels({result}).Inc(shard);
  }
  void Dsn(unsigned shard, DsnAction action) {
    dsn_[static_cast<size_t>(action)]->Inc(shard);
  }
  metrics::Histogram& delivery_seconds() {
    return *delivery_seconds_;
  }
  metrics::EventLog* events() {
    return events_;
  }

 private:
  metrics::CounterFamily& attempts_;
  metrics::GaugeFamily& connections_;
  metrics::CounterFamily& connection_failures_;
  metrics::CounterFamily& tls_;
  metrics::Histogram* delivery_seconds_;
  // By DnsType, then by MxLookup::Status.
  std::array<std::array<metrics::Counter*, 5>, 2> dns_{};
  std::array<metrics::Histogram*, 2> dns_seconds_{};
  std::array<metrics::Counter*, 4> dsn_{};
  metrics::EventLog* events_;
};

// "mx", "host": the `type` label of the DNS metrics.
const char* ToString(DeliveryTelemetry::DnsType type);

}  // namespace sluice::delivery
