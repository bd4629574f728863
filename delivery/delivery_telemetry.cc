#include "delivery/delivery_telemetry.h"

#include <iterator>

namespace sluice::delivery {
namespace {

// Every value of each enum that labels a series, so that all series exist from the start. The
// arrays of series are indexed by these values.
constexpr DeliveryTelemetry::DnsType kDnsTypes[] = {DeliveryTelemetry::DnsType::kMx,
                                                    DeliveryTelemetry::DnsType::kHost};
constexpr MxLookup::Status kDnsStatuses[] = {
    MxLookup::Status::kOk, MxLookup::Status::kNoSuchDomain, MxLookup::Status::kNullMx,
    MxLookup::Status::kNoAddresses, MxLookup::Status::kTempFail};
constexpr DsnAction kDsnActions[] = {DsnAction::kFailed, DsnAction::kDelayed, DsnAction::kDelivered,
                                     DsnAction::kRelayed};

}  // namespace

DeliveryTelemetry::DeliveryTelemetry(metrics::Registry& r, metrics::EventLog* events,
                                     size_t max_destinations)
    : attempts_(r.AddCounter("sluice_delivery_attempts_total",
                             "Recipient delivery attempts, by destination and outcome.",
                             {"destination", "result"})),
      connections_(r.AddGauge("sluice_delivery_connections",
                              "Outbound connections open now, by destination.", {"destination"})),
      connection_failures_(
          r.AddCounter("sluice_delivery_connection_failures_total",
                       "Outbound connections that could not be opened or greeted, by destination.",
                       {"destination"})),
      tls_(r.AddCounter("sluice_delivery_tls_total",
                        "Outbound connections by TLS outcome (verified, unverified, failed, "
                        "not_offered, skipped_broken).",
                        {"result"})),
      events_(events) {
  static_assert(std::size(kDnsTypes) == std::tuple_size_v<decltype(dns_)>);
  static_assert(std::size(kDnsStatuses) == std::tuple_size_v<decltype(dns_)::value_type>);
  static_assert(std::size(kDsnActions) == std::tuple_size_v<decltype(dsn_)>);
  for (const char* result : {"verified", "unverified", "failed", "not_offered", "skipped_broken"}) {
    tls_.WithLabels({result});
  }
  attempts_.SetMaxSeries(max_destinations * 3);
  connections_.SetMaxSeries(max_destinations);
  connection_failures_.SetMaxSeries(max_destinations);
  delivery_seconds_ = &r.AddHistogram("sluice_delivery_duration_seconds",
                                      "From acceptance (250) to delivery, per delivered recipient.",
                                      {}, metrics::ExponentialBuckets(0.01, 2, 24))
                           .WithLabels({});
  auto& dns = r.AddCounter("sluice_dns_lookups_total", "DNS lookups for delivery, by outcome.",
                           {"type", "result"});
  auto& dns_seconds = r.AddHistogram("sluice_dns_lookup_duration_seconds",
                                     "DNS lookup latency (cache hits included).", {"type"},
                                     metrics::ExponentialBuckets(0.0001, 2, 18));
  for (const DnsType type : kDnsTypes) {
    const size_t t = static_cast<size_t>(type);
    for (const MxLookup::Status status : kDnsStatuses) {
      dns_[t][static_cast<size_t>(status)] = &dns.WithLabels({ToString(type), ToString(status)});
    }
    dns_seconds_[t] = &dns_seconds.WithLabels({ToString(type)});
  }
  auto& dsn = r.AddCounter("sluice_dsn_generated_total",
                           "Delivery status notifications queued, by action.", {"action"});
  for (const DsnAction action : kDsnActions) {
    dsn_[static_cast<size_t>(action)] = &dsn.WithLabels({ToString(action)});
  }
}

DeliveryTelemetry::DestinationSeries DeliveryTelemetry::Series(const std::string& destination) {
  DestinationSeries s;
  s.delivered = &attempts_.WithLabels({destination, "delivered"});
  s.deferred = &attempts_.WithLabels({destination, "deferred"});
  s.bounced = &attempts_.WithLabels({destination, "bounced"});
  s.connections = &connections_.WithLabels({destination});
  s.connection_failures = &connection_failures_.WithLabels({destination});
  return s;
}

void DeliveryTelemetry::Dns(unsigned shard, DnsType type, MxLookup::Status status, double seconds) {
  const size_t t = static_cast<size_t>(type);
  dns_[t][static_cast<size_t>(status)]->Inc(shard);
  dns_seconds_[t]->Observe(shard, seconds);
}

const char* ToString(DeliveryTelemetry::DnsType type) {
  switch (type) {
    case DeliveryTelemetry::DnsType::kMx:
      return "mx";
    case DeliveryTelemetry::DnsType::kHost:
      return "host";
  }
  return "mx";
}

}  // namespace sluice::delivery
