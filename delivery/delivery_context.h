#pragma once

// DeliveryContext: what both sides of one shard's delivery use (the owner of messages and the
// host of destinations): the shard and its clock, configuration, spool, blocking pool, commit
// waiter, message ids, resolver and telemetry. One per shard, owned by DeliveryShard, used on the
// shard thread only.

#include <memory>
#include <string>
#include <unordered_map>

#include "delivery/delivery_config.h"
#include "delivery/delivery_telemetry.h"
#include "delivery/dns/resolver.h"
#include "io/blocking_pool.h"
#include "io/shard.h"
#include "queue/commit_waiter.h"
#include "queue/message_id.h"
#include "queue/spool.h"

namespace sluice::delivery {

struct DeliveryContext {
  DeliveryContext(io::Shard& shard_in, unsigned index_in, const DeliveryConfig& config_in,
                  std::string hostname_in, queue::Spool& spool_in, io::BlockingPool& pool_in,
                  queue::CommitWaiter& commits_in, queue::MessageIdGenerator& ids_in,
                  DeliveryTelemetry& telemetry)
      : shard(shard_in),
        index(index_in),
        config(config_in),
        hostname(std::move(hostname_in)),
        spool(spool_in),
        pool(pool_in),
        commits(commits_in),
        ids(ids_in),
        tel(telemetry) {
  }

  // Wall-clock microseconds (the shard's clock): due times, queue ages, backoff marks.
  uint64_t WallMicros() const {
    return shard.clock().WallMicros();
  }
  // The metric label for a recipient domain: the route's name, or the domain itself for MX
  // routes ("unrouted" when routes are configured and none matches).
  std::string DestinationLabel(const std::string& domain) const;
  // Cached metric handles by label (the registry lookup takes a mutex).
  DeliveryTelemetry::DestinationSeries& SeriesFor(const std::string& label);
  // Past this many cached labels the cache is dropped (the idle sweep): past the registry's
  // bound every new label resolves to the shared "other" series anyway.
  static constexpr size_t kMaxCachedSeries = 1024;
  void TrimSeriesCache() {
    if (series.size() > kMaxCachedSeries)
      series.clear();
  }

  io::Shard& shard;
  const unsigned index;
  const DeliveryConfig& config;
  const std::string hostname;
  queue::Spool& spool;
  io::BlockingPool& pool;
  queue::CommitWaiter& commits;
  queue::MessageIdGenerator& ids;
  DeliveryTelemetry& tel;
  std::unique_ptr<Resolver> resolver;  // made by DeliveryShard::Start
  bool stopping = false;               // BeginShutdown was called: start no new work
  std::unordered_map<std::string, DeliveryTelemetry::DestinationSeries> series;
};

}  // namespace sluice::delivery
