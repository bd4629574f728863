#include "delivery/delivery_telemetry.h"

namespace sluice::delivery {

DeliveryTelemetry::DeliveryTelemetry(metrics::Registry& r, metrics::EventLog* events,
                                     size_t max_destinations)
    : attempts_(r.AddCounter("sluice_delivery_attempts_total",
                             "Recipient delivery attempts, by destination and outcome.",
                             {"destination", "result"})),
      connections_(r.AddGauge("sluice_delivery_connections",
                              "Outbound connections open now, by destination.", {"destination"})),
      connection_failures_(r.AddCounter(
          "sluice_delivery_connection_failures_total",
          "Outbound connections that could not be opened or greeted, by destination.",
          {"destination"})),
      tls_(r.AddCounter("sluice_delivery_tls_total",
                        "Outbound connections by TLS outcome (verified, unverified, failed, "
                        "not_offered, skipped_broken).",
                        {"result"})),
      events_(events) {
  for (const char* result : {"verified", "unverified", "failed", "not_offered", "skipped_broken"}) {
    tls_.WithLabels({result});
  }
  attempts_.SetMaxSeries(max_destinations * 3);
  connections_.SetMaxSeries(max_destinations);
  connection_failures_.SetMaxSeries(max_destinations);
  delivery_seconds_ =
      &r.AddHistogram("sluice_delivery_duration_seconds",
                      "From acceptance (250) to delivery, per delivered recipient.", {},
                      metrics::ExponentialBuckets(0.01, 2, 24))
           .WithLabels({});
  auto& dns = r.AddCounter("sluice_dns_lookups_total", "DNS lookups for delivery, by outcome.",
                           {"type", "result"});
  auto& dns_seconds = r.AddHistogram("sluice_dns_lookup_duration_seconds",
                                     "DNS lookup latency (cache hits included).", {"type"},
                                     metrics::ExponentialBuckets(0.0001, 2, 18));
  const char* types[] = {"mx", "host"};
  const char* results[] = {"ok", "nxdomain", "nullmx", "noaddress", "tempfail"};
  for (size_t t = 0; t < 2; ++t) {
    for (size_t k = 0; k < 5; ++k) dns_[t][k] = &dns.WithLabels({types[t], results[k]});
    dns_seconds_[t] = &dns_seconds.WithLabels({types[t]});
  }
  auto& dsn = r.AddCounter("sluice_dsn_generated_total",
                           "Delivery status notifications queued, by action.", {"action"});
  const char* actions[] = {"failed", "delayed", "delivered", "relayed"};
  for (size_t a = 0; a < 4; ++a) dsn_[a] = &dsn.WithLabels({actions[a]});
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

void DeliveryTelemetry::Dns(unsigned shard, DnsType type, MxLookup::Status status,
                            double seconds) {
  size_t k = 4;
  switch (status) {
    case MxLookup::Status::kOk:
      k = 0;
      break;
    case MxLookup::Status::kNoSuchDomain:
      k = 1;
      break;
    case MxLookup::Status::kNullMx:
      k = 2;
      break;
    case MxLookup::Status::kNoAddresses:
      k = 3;
      break;
    case MxLookup::Status::kTempFail:
      k = 4;
      break;
  }
  const size_t t = type == DnsType::kMx ? 0 : 1;
  dns_[t][k]->Inc(shard);
  dns_seconds_[t]->Observe(shard, seconds);
}

}  // namespace sluice::delivery
