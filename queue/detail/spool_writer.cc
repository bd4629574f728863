#include "queue/detail/spool_writer.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include <sys/statvfs.h>

#include "base/log.h"

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
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake)
    wake_.notify_one();
  return Admit::kAccepted;
}

Admit SpoolWriter::SubmitTransaction(SpoolOp op) {
  if (!accepting_.load(std::memory_order_acquire) || unhealthy_.load(std::memory_order_acquire)) {
    return Admit::kUnhealthy;
  }
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_)
      return Admit::kUnhealthy;
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake)
    wake_.notify_one();
  return Admit::kAccepted;
}

void SpoolWriter::Submit(SpoolOp op) {
  // Taken also while unhealthy: the writer keeps it (bounded) until the DB is reopened.
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped_updates_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake)
    wake_.notify_one();
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

bool SpoolWriter::Exists(const MessageId& id) {
  const auto key = id.Key();
  std::string ignored;
  // The memtable or the block cache almost always: a few microseconds.
  const rocksdb::Status s =
      handles_.db->Get(rocksdb::ReadOptions(), handles_.meta, KeySlice(key), &ignored);
  return !s.IsNotFound();  // a read error: write the update rather than lose it
}

void SpoolWriter::Defer(SpoolOp&& op) {
  if (deferred_.size() >= kMaxDeferred) {
    dropped_updates_.fetch_add(1, std::memory_order_relaxed);
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
  rocksdb::WriteBatch batch;
  bool sync = false;
  std::vector<size_t> written;
  std::vector<MessageId> removals;
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
    } else if (op.kind == SpoolOp::Kind::kUpdate &&
               (std::find(removals.begin(), removals.end(), op.id) != removals.end() ||
                !Exists(op.id))) {
      // Removed meanwhile (e.g. by a bounce transaction whose failure was reported, but which
      // the reopened DB holds after all): writing the envelope alone would make a message
      // without a body.
      dropped_updates_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (op.kind == SpoolOp::Kind::kTransaction) {
      // A bounce and the update of the message it reports on: atomic and durable together
      // (docs/design.md §5.5), so a crash can neither lose the bounce nor send it twice.
      for (SpoolOp& part : op.parts)
        AddToBatch(batch, part);
    } else {
      if (op.kind == SpoolOp::Kind::kRemove)
        removals.push_back(op.id);
      AddToBatch(batch, op);
    }
    written.push_back(i);
  }
  if (!written.empty()) {
    const auto started = std::chrono::steady_clock::now();
    const CommitStatus result = WriteWithBackoff(batch, sync);
    batches_.fetch_add(1, std::memory_order_relaxed);
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
    if (result == CommitStatus::kIoError) {
      // The removals of the failed batch are done again after the reopen (the ids are all that
      // is needed); a lost update only brings a retry forward.
      for (const MessageId& id : removals) {
        SpoolOp again;
        again.kind = SpoolOp::Kind::kRemove;
        again.id = id;
        Defer(std::move(again));
      }
    }
    if (options_.on_batch) {
      options_.on_batch(
          messages,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
  }
  Complete(ops, begin, end, status);
}

void SpoolWriter::AddToBatch(rocksdb::WriteBatch& batch, SpoolOp& op) {
  const auto key = op.id.Key();
  rocksdb::Status s;
  switch (op.kind) {
    case SpoolOp::Kind::kEnqueue:
      // Both families in one batch: one WAL record, atomic, one fsync (docs/design.md §5.1).
      s = batch.Put(handles_.meta, KeySlice(key), op.meta);
      if (s.ok())
        s = batch.Put(handles_.body, KeySlice(key), rocksdb::Slice(op.body_bytes()));
      break;
    case SpoolOp::Kind::kRemove:
      // Delete, not SingleDelete: the API cannot prove a key was written exactly once.
      s = batch.Delete(handles_.meta, KeySlice(key));
      if (s.ok())
        s = batch.Delete(handles_.body, KeySlice(key));
      break;
    case SpoolOp::Kind::kUpdate:
      s = batch.Put(handles_.meta, KeySlice(key), op.meta);
      break;
    case SpoolOp::Kind::kTransaction:
      SLUICE_BUG("nested spool transaction");
      return;
  }
  // WriteBatch only fails past its max_bytes (unset, so unlimited): a bug of ours.
  if (!s.ok())
    SLUICE_BUG(s.ToString().c_str());
  // The batch holds its own copy now; free ours so a burst is not held in memory twice.
  Release(op.meta);
  Release(op.body);
  op.shared_body.reset();
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
    } else if (kind != SpoolOp::Kind::kTransaction && st != CommitStatus::kOk &&
               st != CommitStatus::kIoError) {
      // (Removals of a failed batch wait for the reopen; see CommitRange.)
      dropped_updates_.fetch_add(1, std::memory_order_relaxed);
    }
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
