#include "queue/detail/spool_writer.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include <sys/statvfs.h>

#include "base/log.h"
#include "queue/detail/spool_db.h"

namespace sluice::queue::detail {
namespace {

// One WriteBatch is one WAL record held in memory twice (queue + batch); past this size the
// drained queue is written as several batches (each synced) so a burst of large bodies does not
// build a multi-hundred-MiB record.
constexpr size_t kMaxBatchBytes = 32 << 20;

// Write stalls (docs/design.md §5.4): 500 µs doubling to 50 ms.
constexpr std::chrono::microseconds kFirstBackoff{500};
constexpr std::chrono::microseconds kMaxBackoff{50'000};

rocksdb::Slice KeySlice(const std::array<char, 16>& key) {
  return rocksdb::Slice(key.data(), key.size());
}

void Release(std::string& s) {
  std::string().swap(s);
}

}  // namespace

SpoolWriter::SpoolWriter(SpoolHandles handles, const SpoolOptions& options, ReopenFn reopen)
    : options_(options), reopen_(std::move(reopen)), handles_(handles) {
  LoadCounters();
}

void SpoolWriter::LoadCounters() {
  Result<SpoolDb::Counters> loaded = ReadCountersFrom(handles_.db, handles_.counters);
  std::lock_guard lock(counters_mu_);
  if (!loaded.ok()) {
    spdlog::error("spool: cannot read the queue counters: {}", loaded.error().message);
    counters_.clear();
    return;
  }
  counters_ = std::move(loaded->values);
}

QueueCounts SpoolWriter::counts() const {
  std::lock_guard lock(counters_mu_);
  return SumCounts(counters_);
}

SpoolWriter::~SpoolWriter() {
  Stop();
}

void SpoolWriter::Start() {
  RefreshDisk();  // right from the start: a daemon started on a full disk takes no mail
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sluice-spool");
    Run();
  });
}

Admit SpoolWriter::Enqueue(const MessageId& id, std::string&& meta, std::string&& body,
                           CompletionSink* sink, uint64_t token) {
  SpoolOp op;
  op.body = std::move(body);
  const Admit admit = Enqueue(id, std::move(meta), op, sink, token);
  if (admit != Admit::kAccepted)
    body = std::move(op.body);  // the caller may try again
  return admit;
}

Admit SpoolWriter::Enqueue(const MessageId& id, std::string&& meta,
                           std::shared_ptr<const std::string> body, CompletionSink* sink,
                           uint64_t token) {
  SpoolOp op;
  op.shared_body = std::move(body);
  return Enqueue(id, std::move(meta), op, sink, token);
}

Admit SpoolWriter::Enqueue(const MessageId& id, std::string&& meta, SpoolOp& op,
                           CompletionSink* sink, uint64_t token) {
  op.kind = SpoolOp::Kind::kEnqueue;
  op.id = id;
  op.meta = std::move(meta);
  op.sink = sink;
  op.token = token;
  const Admit admit = Push(op);
  if (admit != Admit::kAccepted)
    meta = std::move(op.meta);  // refused: the caller keeps it
  return admit;
}

Admit SpoolWriter::Push(SpoolOp& op) {
  if (!accepting_.load(std::memory_order_acquire) || unhealthy_.load(std::memory_order_acquire)) {
    return Admit::kUnhealthy;
  }
  const size_t bytes = op.meta.size() + op.body_bytes().size();
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_)
      return Admit::kUnhealthy;
    if (pending_messages_ >= options_.max_pending_messages)
      return Admit::kFull;
    // A message larger than the whole byte bound still goes in when nothing else is pending;
    // otherwise it could never be accepted.
    if (pending_messages_ > 0 && pending_bytes_ + bytes > options_.max_pending_bytes) {
      return Admit::kFull;
    }
    ++pending_messages_;
    pending_bytes_ += bytes;
    op.admitted_bytes = bytes;
    op.seq = next_seq_++;
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake)
    wake_.notify_one();
  return Admit::kAccepted;
}

Admit SpoolWriter::SubmitTransaction(SpoolOp op, uint64_t* seq) {
  if (!accepting_.load(std::memory_order_acquire) || unhealthy_.load(std::memory_order_acquire)) {
    return Admit::kUnhealthy;
  }
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_)
      return Admit::kUnhealthy;
    op.seq = next_seq_++;
    if (seq != nullptr)
      *seq = op.seq;
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake)
    wake_.notify_one();
  return Admit::kAccepted;
}

uint64_t SpoolWriter::Submit(SpoolOp op) {
  // Taken also while unhealthy: the writer keeps it (bounded) until the DB is reopened.
  bool wake = false;
  uint64_t seq = 0;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped_updates_.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    seq = op.seq = next_seq_++;
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake)
    wake_.notify_one();
  return seq;
}

void SpoolWriter::Stop() {
  std::lock_guard stop_lock(stop_mu_);
  accepting_.store(false, std::memory_order_release);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    paused_ = false;
  }
  wake_.notify_one();
  if (thread_.joinable())
    thread_.join();
}

void SpoolWriter::SetPausedForTesting(bool paused) {
  {
    std::lock_guard lock(mu_);
    if (stopping_)
      return;
    paused_ = paused;
  }
  wake_.notify_one();
}

void SpoolWriter::SetRecoveredHandler(std::function<void(const MessageId&, Envelope)> handler) {
  std::lock_guard lock(recovered_mu_);
  recovered_ = std::move(handler);
}

void SpoolWriter::Run() {
  std::vector<SpoolOp> ops;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if ((queue_.empty() || paused_) && !stopping_) {
        // At least once a second: the disk is sampled and a failed DB reopened even when no
        // mail arrives.
        writer_waiting_ = true;
        wake_.wait_for(lock, std::chrono::seconds(1));
        writer_waiting_ = false;
      }
      // Stopping: everything admitted before stopping_ was set is in queue_ and gets committed.
      if (stopping_ && queue_.empty()) {
        if (!deferred_.empty()) {
          // Not written before the DB closes: a lost removal means a duplicate after the
          // restart, a lost update an earlier retry.
          spdlog::warn(
              "spool: {} removals/updates still waiting for room are dropped at "
              "shutdown",
              deferred_.size());
          dropped_updates_.fetch_add(deferred_.size(), std::memory_order_relaxed);
          deferred_.clear();
        }
        return;
      }
      if (!paused_ || stopping_)
        ops.swap(queue_);
    }
    if (std::chrono::steady_clock::now() - last_disk_check_ >= std::chrono::seconds(1)) {
      RefreshDisk();
    }
    if (!healthy())
      TryRecover();
    deferring_ = false;
    if (healthy() && !deferred_.empty()) {
      // What waited for room or for the reopen, oldest first, before anything newer.
      std::vector<SpoolOp> waiting;
      waiting.swap(deferred_);
      deferred_count_.store(0, std::memory_order_relaxed);
      waiting.insert(waiting.end(), std::make_move_iterator(ops.begin()),
                     std::make_move_iterator(ops.end()));
      ops.swap(waiting);
    }
    size_t begin = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      bytes += ops[i].meta.size() + ops[i].body_bytes().size();
      if (bytes >= kMaxBatchBytes) {
        CommitRange(ops, begin, i + 1);
        begin = i + 1;
        bytes = 0;
      }
    }
    if (begin < ops.size())
      CommitRange(ops, begin, ops.size());
    ops.clear();  // keeps the capacity for the next swap
  }
}

void SpoolWriter::RefreshDisk() {
  last_disk_check_ = std::chrono::steady_clock::now();
  struct statvfs vfs {};
  if (statvfs(options_.path.c_str(), &vfs) != 0)
    return;
  const uint64_t free = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  free_bytes_.store(free, std::memory_order_relaxed);
  const bool low = options_.min_free_bytes > 0 && free < options_.min_free_bytes;
  if (low != disk_low_.exchange(low, std::memory_order_acq_rel)) {
    if (low) {
      spdlog::warn(
          "spool: {} MiB free on {}'s file system, below spool.min_free_bytes ({} MiB): "
          "new mail gets 452 4.3.1 until there is room",
          free >> 20, options_.path, options_.min_free_bytes >> 20);
    } else {
      spdlog::info("spool: {} MiB free on {}'s file system again: taking mail", free >> 20,
                   options_.path);
    }
  }
}

SpoolWriter::Current SpoolWriter::Lookup(BatchState& state, const MessageId& id) {
  auto found = state.overlay.find(id);
  if (found != state.overlay.end())
    return found->second;
  Current current;
  const auto key = id.Key();
  std::string value;
  // The memtable or the block cache almost always: a few microseconds.
  const rocksdb::Status s =
      handles_.db->Get(rocksdb::ReadOptions(), handles_.meta, KeySlice(key), &value);
  if (s.IsNotFound())
    return current;
  // A read error: treat it as stored (write the update rather than lose it), unplaced.
  current.exists = true;
  if (s.ok()) {
    Result<Envelope> env = DecodeEnvelope(value);
    if (env.ok())
      current.placement = PlacementOf(*env);
  }
  return current;
}

void SpoolWriter::Defer(SpoolOp&& op) {
  if (deferred_.size() >= kMaxDeferred) {
    dropped_updates_.fetch_add(1, std::memory_order_relaxed);
    // What readers of the index were told is applied may now never be: they start over.
    rescan_generation_.fetch_add(1, std::memory_order_acq_rel);
    return;
  }
  deferred_.push_back(std::move(op));
  deferred_count_.store(deferred_.size(), std::memory_order_relaxed);
}

void SpoolWriter::TryRecover() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_reopen_try_ < kReopenInterval)
    return;
  last_reopen_try_ = now;
  RefreshDisk();
  // The reopen itself needs little (the WAL is replayed without a flush); new mail then needs
  // min_free_bytes anyway.
  constexpr uint64_t kMinReopenFree = 8ull << 20;
  const uint64_t need = std::max(options_.min_free_bytes, kMinReopenFree);
  const uint64_t free = free_bytes_.load(std::memory_order_relaxed);
  if (free < need)
    return;
  Result<SpoolHandles> handles = reopen_();
  if (!handles.ok()) {
    spdlog::warn("spool: reopening after the write error failed ({}); trying again in {} s",
                 handles.error().message, kReopenInterval.count());
    return;
  }
  handles_ = *handles;
  // What the failed batches changed is in the counters only if it is in the DB.
  LoadCounters();
  reopens_.fetch_add(1, std::memory_order_relaxed);
  unhealthy_.store(false, std::memory_order_release);
  spdlog::info("spool: reopened after the write error ({} MiB free); healthy again", free >> 20);
  // The enqueues of the failed batches were answered 451, yet may be in the WAL after all (the
  // write reached the log before the sync failed). What the reopened DB holds is durable: hand it
  // to delivery rather than leave it unknown until the next restart.
  std::function<void(const MessageId&, Envelope)> handler;
  {
    std::lock_guard lock(recovered_mu_);
    handler = recovered_;
  }
  for (const MessageId& id : uncertain_) {
    const auto key = id.Key();
    std::string value;
    rocksdb::Status st =
        handles_.db->Get(rocksdb::ReadOptions(), handles_.meta, KeySlice(key), &value);
    if (!st.ok())
      continue;
    Result<Envelope> env = DecodeEnvelope(value);
    if (!env.ok() || !handler)
      continue;
    spdlog::warn("spool: message {} of a failed write is in the spool after all; delivering it",
                 id.ToString());
    handler(id, std::move(*env));
  }
  uncertain_.clear();
}

void SpoolWriter::CommitRange(std::vector<SpoolOp>& ops, size_t begin, size_t end) {
  RefreshDisk();  // one statvfs per batch: never let RocksDB be the one to find the disk full
  const bool unhealthy = unhealthy_.load(std::memory_order_acquire);
  const bool low = disk_low_.load(std::memory_order_acquire);
  // Removals and updates are small and free space in the end; they are written down to a
  // quarter of min_free_bytes.
  const bool reserve_gone =
      options_.min_free_bytes > 0 &&
      free_bytes_.load(std::memory_order_relaxed) < options_.min_free_bytes / 4;
  std::vector<CommitStatus> status(end - begin, CommitStatus::kOk);
  BatchState state;
  bool sync = false;
  std::vector<size_t> written;
  for (size_t i = begin; i < end; ++i) {
    SpoolOp& op = ops[i];
    const bool new_mail =
        op.kind == SpoolOp::Kind::kEnqueue || op.kind == SpoolOp::Kind::kTransaction;
    if (new_mail) {
      if (unhealthy) {
        // The DB went read-only with its error; writing again cannot succeed before a reopen.
        status[i - begin] = CommitStatus::kIoError;
        continue;
      }
      if (low) {
        status[i - begin] = CommitStatus::kNoSpace;
        continue;
      }
      sync = options_.sync;
    } else if (unhealthy || reserve_gone || deferring_) {
      // Once one waits, every later one waits behind it (until the next drain puts them all
      // back in front): an update must never be written after a removal it preceded.
      deferring_ = true;
      Defer(std::move(op));
      continue;
    }
    if (op.kind == SpoolOp::Kind::kTransaction) {
      // A bounce and the update of the message it reports on: atomic and durable together
      // (docs/design.md §5.5), so a crash can neither lose the bounce nor send it twice.
      for (SpoolOp& part : op.parts)
        AddToBatch(state, part);
    } else {
      if (!AddToBatch(state, op)) {
        dropped_updates_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
    }
    written.push_back(i);
  }
  if (!written.empty()) {
    std::map<CounterKey, uint64_t> counted = AddCounters(state);
    const auto started = std::chrono::steady_clock::now();
    const CommitStatus result = WriteWithBackoff(state.batch, sync);
    batches_.fetch_add(1, std::memory_order_relaxed);
    if (result == CommitStatus::kOk) {
      for (size_t i : written) {
        if (ops[i].kind == SpoolOp::Kind::kMarkIndexed)
          rescan_generation_.fetch_add(1, std::memory_order_acq_rel);
      }
      std::lock_guard lock(counters_mu_);
      for (auto& [key, value] : counted) {
        if (value == 0) {
          counters_.erase(key);
        } else {
          counters_[key] = value;
        }
      }
    }
    size_t messages = 0;
    for (size_t i : written) {
      status[i - begin] = result;
      if (ops[i].kind == SpoolOp::Kind::kEnqueue) {
        ++messages;
        if (result == CommitStatus::kIoError)
          uncertain_.push_back(ops[i].id);
      } else if (ops[i].kind == SpoolOp::Kind::kTransaction && result == CommitStatus::kIoError) {
        // A bounce whose commit was reported failed may be durable after all: then the reopen
        // hands it on (and the update or removal of its original was written with it).
        for (const SpoolOp& part : ops[i].parts) {
          if (part.kind == SpoolOp::Kind::kEnqueue)
            uncertain_.push_back(part.id);
        }
      }
    }
    if (result != CommitStatus::kOk) {
      // Nothing of the batch was written (a stall past the deadline), or it may not have been
      // (a write error): its removals, updates and index ops are written again, in order and
      // with their sequence numbers, once the spool can (after the reopen). Readers of the
      // index rely on an op being written once applied_seq has passed it. Writing one twice
      // is harmless: each is computed against what is stored.
      for (size_t i : written) {
        if (ops[i].kind != SpoolOp::Kind::kEnqueue && ops[i].kind != SpoolOp::Kind::kTransaction) {
          Defer(std::move(ops[i]));
        }
      }
      deferring_ = true;  // and everything after them in this drain waits behind them
    }
    if (options_.on_batch) {
      options_.on_batch(
          messages,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
  }
  PublishApplied(ops[end - 1].seq);
  Complete(ops, begin, end, status);
}

void SpoolWriter::PublishApplied(uint64_t last) {
  // Ops still waiting for room were submitted before some that were written: the published
  // number stops below the oldest of them.
  uint64_t applied = last;
  for (const SpoolOp& op : deferred_) {
    if (op.seq != 0 && op.seq <= applied)
      applied = op.seq - 1;
  }
  if (applied > applied_seq_.load(std::memory_order_relaxed)) {
    {
      std::lock_guard lock(applied_mu_);
      applied_seq_.store(applied, std::memory_order_release);
    }
    applied_cv_.notify_all();
  }
}

bool SpoolWriter::WaitApplied(uint64_t seq, std::chrono::milliseconds timeout,
                              const std::atomic<bool>* stop) {
  std::unique_lock lock(applied_mu_);
  // Woken by every advance; `stop` is looked at at least every 100 ms.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (applied_seq_.load(std::memory_order_acquire) < seq) {
    if (stop != nullptr && stop->load(std::memory_order_relaxed))
      return false;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline)
      return false;
    applied_cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(
                                   deadline - now, std::chrono::milliseconds(100)));
  }
  return true;
}

bool SpoolWriter::AddToBatch(BatchState& state, SpoolOp& op) {
  const auto key = op.id.Key();
  rocksdb::WriteBatch& batch = state.batch;
  rocksdb::Status s;
  auto put_schedule = [&](const Placement& p) {
    const ScheduleKey k = MakeScheduleKey(op.id, p.due_us);
    return batch.Put(handles_.sched, rocksdb::Slice(k.data(), k.size()), rocksdb::Slice());
  };
  auto delete_schedule = [&](const Placement& p) {
    const ScheduleKey k = MakeScheduleKey(op.id, p.due_us);
    return batch.Delete(handles_.sched, rocksdb::Slice(k.data(), k.size()));
  };
  switch (op.kind) {
    case SpoolOp::Kind::kEnqueue: {
      // Envelope, body and schedule key in one batch: one WAL record, atomic, one fsync
      // (docs/design.md §5.1).
      s = batch.Put(handles_.meta, KeySlice(key), op.meta);
      if (s.ok())
        s = batch.Put(handles_.body, KeySlice(key), rocksdb::Slice(op.body_bytes()));
      Current now{true, std::nullopt};
      if (Result<Envelope> env = DecodeEnvelope(op.meta); env.ok()) {
        now.placement = PlacementOf(*env);
        if (s.ok())
          s = put_schedule(*now.placement);
        AddCounts(*now.placement, +1, state.delta);
      }
      state.overlay[op.id] = std::move(now);
      break;
    }
    case SpoolOp::Kind::kRemove: {
      const Current before = Lookup(state, op.id);
      // Delete, not SingleDelete: the API cannot prove a key was written exactly once.
      s = batch.Delete(handles_.meta, KeySlice(key));
      if (s.ok())
        s = batch.Delete(handles_.body, KeySlice(key));
      if (before.placement) {
        if (s.ok())
          s = delete_schedule(*before.placement);
        AddCounts(*before.placement, -1, state.delta);
      }
      state.overlay[op.id] = Current{};
      break;
    }
    case SpoolOp::Kind::kUpdate: {
      const Current before = Lookup(state, op.id);
      if (!before.exists) {
        // Removed meanwhile (e.g. by a bounce transaction whose failure was reported, but which
        // the reopened DB holds after all): writing the envelope alone would make a message
        // without a body.
        return false;
      }
      s = batch.Put(handles_.meta, KeySlice(key), op.meta);
      Current now{true, std::nullopt};
      if (Result<Envelope> env = DecodeEnvelope(op.meta); env.ok())
        now.placement = PlacementOf(*env);
      const bool moved =
          !before.placement || !now.placement || before.placement->due_us != now.placement->due_us;
      if (before.placement) {
        if (s.ok() && moved)
          s = delete_schedule(*before.placement);
        AddCounts(*before.placement, -1, state.delta);
      }
      if (now.placement) {
        if (s.ok() && moved)
          s = put_schedule(*now.placement);
        AddCounts(*now.placement, +1, state.delta);
      }
      state.overlay[op.id] = std::move(now);
      break;
    }
    case SpoolOp::Kind::kIndex: {
      const Current current = Lookup(state, op.id);
      if (!current.placement)
        return true;  // gone meanwhile, or unreadable (the audit quarantines it)
      const ScheduleKey k = MakeScheduleKey(op.id, current.placement->due_us);
      std::string ignored;
      const rocksdb::Status found = handles_.db->Get(rocksdb::ReadOptions(), handles_.sched,
                                                     rocksdb::Slice(k.data(), k.size()), &ignored);
      if (!found.IsNotFound())
        return true;  // indexed already (or unreadable: leave it)
      // An unindexed message was never counted either (both are written with the envelope).
      s = put_schedule(*current.placement);
      AddCounts(*current.placement, +1, state.delta);
      break;
    }
    case SpoolOp::Kind::kAdjustCounts:
      for (const auto& [k, d] : op.adjust)
        state.delta[k] += d;
      break;
    case SpoolOp::Kind::kDropStale: {
      const std::optional<ScheduleEntry> entry = ParseScheduleKey(op.meta);
      if (!entry)
        return true;
      const Current current = Lookup(state, entry->id);
      if (current.placement && current.placement->due_us == entry->due_us &&
          entry->prefix == entry->id.shard()) {
        return true;  // it is the message's key after all (rewritten since the scan)
      }
      s = batch.Delete(handles_.sched, op.meta);
      break;
    }
    case SpoolOp::Kind::kMarkIndexed:
      s = batch.Put(handles_.counters,
                    rocksdb::Slice(kIndexVersionKey.data(), kIndexVersionKey.size()),
                    rocksdb::Slice(kIndexVersion.data(), kIndexVersion.size()));
      break;
    case SpoolOp::Kind::kTransaction:
      SLUICE_BUG("nested spool transaction");
      return false;
  }
  // WriteBatch only fails past its max_bytes (unset, so unlimited): a bug of ours.
  if (!s.ok())
    SLUICE_BUG(s.ToString().c_str());
  // The batch holds its own copy now; free ours so a burst is not held in memory twice. (An
  // update's envelope is kept until the write is known to have worked: a failed batch writes it
  // again later.)
  if (op.kind == SpoolOp::Kind::kEnqueue) {
    Release(op.meta);
    Release(op.body);
    op.shared_body.reset();
  }
  return true;
}

std::map<CounterKey, uint64_t> SpoolWriter::AddCounters(BatchState& state) {
  std::map<CounterKey, uint64_t> values;
  std::lock_guard lock(counters_mu_);
  for (const auto& [key, delta] : state.delta) {
    if (delta == 0)
      continue;
    auto found = counters_.find(key);
    const int64_t before = found == counters_.end() ? 0 : static_cast<int64_t>(found->second);
    int64_t after = before + delta;
    if (after < 0) {
      // A message counted out that was never counted in: a bug of ours (the index and the
      // counters are written with the envelope, always together).
      SLUICE_BUG("queue counter below zero");
      after = 0;
    }
    const std::string k = EncodeCounterKey(key);
    rocksdb::Status s = after == 0 ? state.batch.Delete(handles_.counters, k)
                                   : state.batch.Put(handles_.counters, k,
                                                     EncodeCount(static_cast<uint64_t>(after)));
    if (!s.ok())
      SLUICE_BUG(s.ToString().c_str());
    values[key] = static_cast<uint64_t>(after);
  }
  return values;
}

CommitStatus SpoolWriter::WriteWithBackoff(rocksdb::WriteBatch& batch, bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  // Never let RocksDB sleep in Write (its delayed-write throttle): a stall answers Incomplete and
  // we decide how long to wait, and when to give the clients a 451 instead.
  wo.no_slowdown = true;
  const auto deadline = std::chrono::steady_clock::now() + options_.stall_deadline;
  auto backoff = kFirstBackoff;
  for (;;) {
    rocksdb::Status s;
    if (options_.inject_stall && options_.inject_stall()) {
      s = rocksdb::Status::Incomplete("injected write stall");
    } else {
      s = handles_.db->Write(wo, &batch);
    }
    if (s.ok())
      return CommitStatus::kOk;
    if (s.IsIncomplete()) {
      // Nothing of the batch was written; trying again is safe.
      stalls_.fetch_add(1, std::memory_order_relaxed);
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        spdlog::warn("spool: write stalled for more than {} ms, failing {} bytes temporarily",
                     options_.stall_deadline.count(), batch.GetDataSize());
        return CommitStatus::kTimedOut;
      }
      std::this_thread::sleep_for(
          std::min<std::chrono::steady_clock::duration>(backoff, deadline - now));
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    // EIO, ENOSPC, a failed fsync: RocksDB latches a background error and the DB turns
    // read-only. Retrying an fsync is never safe (the kernel may have dropped the dirty pages),
    // so we latch too, and close and reopen the DB once there is room (TryRecover): WAL replay
    // decides what is durable. Requests of this batch get kIoError (451): if some of it did reach
    // the disk, the client's retry makes a duplicate, never a loss.
    spdlog::error("spool: write failed, spool is unhealthy until it is reopened: {}", s.ToString());
    unhealthy_.store(true, std::memory_order_release);
    last_reopen_try_ = std::chrono::steady_clock::now();
    return CommitStatus::kIoError;
  }
}

void SpoolWriter::Complete(std::vector<SpoolOp>& ops, size_t begin, size_t end,
                           const std::vector<CommitStatus>& status) {
  size_t messages = 0;
  size_t bytes = 0;
  for (size_t i = begin; i < end; ++i) {
    if (ops[i].kind == SpoolOp::Kind::kEnqueue) {
      ++messages;
      bytes += ops[i].admitted_bytes;
    }
  }
  {
    // Release the admission budget before the callbacks, so a sink that wakes a producer finds
    // room.
    std::lock_guard lock(mu_);
    pending_messages_ -= messages;
    pending_bytes_ -= bytes;
  }
  for (size_t i = begin; i < end; ++i) {
    const SpoolOp::Kind kind = ops[i].kind;
    const CommitStatus st = status[i - begin];
    if (kind == SpoolOp::Kind::kEnqueue) {
      switch (st) {
        case CommitStatus::kOk:
          committed_.fetch_add(1, std::memory_order_relaxed);
          break;
        case CommitStatus::kTimedOut:
        case CommitStatus::kShuttingDown:
          timed_out_.fetch_add(1, std::memory_order_relaxed);
          break;
        case CommitStatus::kIoError:
          failed_.fetch_add(1, std::memory_order_relaxed);
          break;
        case CommitStatus::kNoSpace:
          no_space_.fetch_add(1, std::memory_order_relaxed);
          break;
      }
    }
    // (Removals and updates of a failed batch wait to be written again; see CommitRange.)
  }
  for (size_t i = begin; i < end; ++i) {
    const SpoolOp::Kind kind = ops[i].kind;
    if (kind == SpoolOp::Kind::kEnqueue || kind == SpoolOp::Kind::kTransaction) {
      ops[i].sink->OnCommitted(ops[i].token, status[i - begin]);
    }
  }
}

void SpoolWriter::FillStats(SpoolStats& stats) const {
  stats.batches = batches_.load(std::memory_order_relaxed);
  stats.committed_messages = committed_.load(std::memory_order_relaxed);
  stats.timed_out_messages = timed_out_.load(std::memory_order_relaxed);
  stats.failed_messages = failed_.load(std::memory_order_relaxed);
  stats.stalls = stalls_.load(std::memory_order_relaxed);
  stats.dropped_updates = dropped_updates_.load(std::memory_order_relaxed);
  stats.free_bytes = free_bytes_.load(std::memory_order_relaxed);
  stats.disk_low = disk_low_.load(std::memory_order_relaxed);
  stats.no_space_messages = no_space_.load(std::memory_order_relaxed);
  stats.deferred_updates = deferred_count_.load(std::memory_order_relaxed);
  stats.reopens = reopens_.load(std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  stats.pending_messages = pending_messages_;
  stats.pending_bytes = pending_bytes_;
}

}  // namespace sluice::queue::detail
