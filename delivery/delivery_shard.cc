#include "delivery/delivery_shard.h"

#include <utility>

namespace sluice::delivery {

DeliveryShard::DeliveryShard(io::Shard& shard, unsigned index, const DeliveryConfig& config,
                             std::string hostname, queue::Spool& spool, io::BlockingPool& pool,
                             queue::CommitWaiter& commits, queue::MessageIdGenerator& ids,
                             DeliveryTelemetry& telemetry)
    : ctx_(shard, index, config, std::move(hostname), spool, pool, commits, ids, telemetry),
      owner_(ctx_, *this),
      host_(ctx_, *this) {
}

DeliveryShard::~DeliveryShard() = default;

Result<void> DeliveryShard::Start() {
  ResolverOptions ro;
  ro.servers = ctx_.config.dns_servers;
  ro.self_names = {ctx_.hostname};
  ro.mx_address_limit = ctx_.config.mx_address_limit;
  ctx_.resolver = std::make_unique<Resolver>(ctx_.shard, ro);
  if (auto r = ctx_.resolver->Init(); !r)
    return r;
  host_.Start();
  if (ctx_.config.enabled)
    owner_.Start();
  return {};
}

void DeliveryShard::Adopt(const queue::MessageId& id, queue::Envelope envelope,
                          std::shared_ptr<const std::string> body) {
  // Delivery off (an ingest-only node, or tests that inspect the spool): the spool is the queue
  // and nothing is kept in memory.
  if (!ctx_.config.enabled)
    return;
  owner_.Adopt(id, std::move(envelope), std::move(body));
}

void DeliveryShard::CrossPost(DeliveryShard& to, std::function<void()> fn) {
  // Counted until it has run, so that shutdown can tell "nothing in flight between shards"
  // (see quiescent()).
  in_flight_->fetch_add(1, std::memory_order_acq_rel);
  std::atomic<int64_t>* counter = in_flight_;
  to.ctx_.shard.Post([counter, f = std::move(fn)] {
    f();
    counter->fetch_sub(1, std::memory_order_acq_rel);
  });
}

unsigned DeliveryShard::ShardFor(const std::string& key) const {
  return static_cast<unsigned>(std::hash<std::string>{}(key) % peers_.size());
}

void DeliveryShard::SendJob(Job job) {
  DeliveryShard* to = peers_[ShardFor(job.key)];
  CrossPost(*to, [to, j = std::move(job)]() mutable { to->host_.Enqueue(std::move(j)); });
}

void DeliveryShard::SendResult(unsigned owner, JobResult result) {
  DeliveryShard* to = peers_[owner];
  CrossPost(*to, [to, r = std::move(result)]() mutable { to->owner_.OnJobResult(std::move(r)); });
}

void DeliveryShard::BeginShutdown() {
  if (ctx_.stopping)
    return;
  ctx_.stopping = true;
  owner_.BeginShutdown();
  host_.BeginShutdown();
}

void DeliveryShard::Abort() {
  host_.Abort();
}

void DeliveryShard::StopResolver() {
  if (ctx_.resolver)
    ctx_.resolver->Shutdown();
}

bool DeliveryShard::stopped() const {
  return !ctx_.resolver || ctx_.resolver->idle();
}

DeliveryShard::QueueSnapshot DeliveryShard::Snapshot() const {
  QueueSnapshot snap;
  snap.queues = host_.destinations();
  snap.active = owner_.messages();
  snap.in_flight = owner_.in_flight();
  return snap;
}

}  // namespace sluice::delivery
