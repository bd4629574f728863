#include "queue/detail/spool_writer.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "base/log.h"

namespace sluice::queue::detail {
namespace {

// One WriteBatch is one WAL record held in memory twice (queue + batch); past this size the
// drained queue is written as several batches (each synced) so a burst of large bodies does not
// build a multi-hundred-MiB record.
constexpr size_t kMaxBatchBytes = 32 << 20;

// KumoMTA's stall loop (engineering-notes §1.1): 500 µs doubling to 50 ms.
constexpr std::chrono::microseconds kFirstBackoff{500};
constexpr std::chrono::microseconds kMaxBackoff{50'000};

rocksdb::Slice KeySlice(const std::array<char, 16>& key) {
  return rocksdb::Slice(key.data(), key.size());
}

void Release(std::string& s) { std::string().swap(s); }

}  // namespace

SpoolWriter::SpoolWriter(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta,
                         rocksdb::ColumnFamilyHandle* body, const SpoolOptions& options)
    : db_(db), meta_(meta), body_(body), options_(options) {}

SpoolWriter::~SpoolWriter() { Stop(); }

void SpoolWriter::Start() {
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
  if (admit != Admit::kAccepted) body = std::move(op.body);  // the caller may try again
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
  if (admit != Admit::kAccepted) meta = std::move(op.meta);  // refused: the caller keeps it
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
    if (stopping_) return Admit::kUnhealthy;
    if (pending_messages_ >= options_.max_pending_messages) return Admit::kFull;
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
  if (wake) wake_.notify_one();
  return Admit::kAccepted;
}

Admit SpoolWriter::SubmitTransaction(SpoolOp op) {
  if (!accepting_.load(std::memory_order_acquire) || unhealthy_.load(std::memory_order_acquire)) {
    return Admit::kUnhealthy;
  }
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Admit::kUnhealthy;
    queue_.push_back(std::move(op));
    wake = writer_waiting_;
  }
  if (wake) wake_.notify_one();
  return Admit::kAccepted;
}

void SpoolWriter::Submit(SpoolOp op) {
  if (unhealthy_.load(std::memory_order_acquire)) return;
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
  if (wake) wake_.notify_one();
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
  if (thread_.joinable()) thread_.join();
}

void SpoolWriter::SetPausedForTesting(bool paused) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    paused_ = paused;
  }
  wake_.notify_one();
}

void SpoolWriter::Run() {
  std::vector<SpoolOp> ops;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      while ((queue_.empty() || paused_) && !stopping_) {
        writer_waiting_ = true;
        wake_.wait(lock);
        writer_waiting_ = false;
      }
      // Stopping: everything admitted before stopping_ was set is in queue_ and gets committed.
      if (queue_.empty()) return;
      ops.swap(queue_);
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
    if (begin < ops.size()) CommitRange(ops, begin, ops.size());
    ops.clear();  // keeps the capacity for the next swap
  }
}

void SpoolWriter::CommitRange(std::vector<SpoolOp>& ops, size_t begin, size_t end) {
  if (unhealthy_.load(std::memory_order_acquire)) {
    // The DB went read-only with its background error; writing again cannot succeed.
    Complete(ops, begin, end, CommitStatus::kIoError);
    return;
  }
  rocksdb::WriteBatch batch;
  bool sync = false;
  for (size_t i = begin; i < end; ++i) {
    SpoolOp& op = ops[i];
    if (op.kind == SpoolOp::Kind::kTransaction) {
      // A bounce and the update of the message it reports on: atomic and durable together
      // (DESIGN.md §7), so a crash can neither lose the bounce nor send it twice.
      for (SpoolOp& part : op.parts) AddToBatch(batch, part);
      sync = options_.sync;
      continue;
    }
    if (op.kind == SpoolOp::Kind::kEnqueue) sync = options_.sync;
    AddToBatch(batch, op);
  }
  const auto started = std::chrono::steady_clock::now();
  const CommitStatus status = WriteWithBackoff(batch, sync);
  batches_.fetch_add(1, std::memory_order_relaxed);
  if (options_.on_batch) {
    size_t messages = 0;
    for (size_t i = begin; i < end; ++i) {
      if (ops[i].kind == SpoolOp::Kind::kEnqueue) ++messages;
    }
    options_.on_batch(messages, std::chrono::duration<double>(
                                    std::chrono::steady_clock::now() - started)
                                    .count());
  }
  Complete(ops, begin, end, status);
}

void SpoolWriter::AddToBatch(rocksdb::WriteBatch& batch, SpoolOp& op) {
  const auto key = op.id.Key();
  rocksdb::Status s;
  switch (op.kind) {
    case SpoolOp::Kind::kEnqueue:
      // Both families in one batch: one WAL record, atomic, one fsync (DESIGN.md §7).
      s = batch.Put(meta_, KeySlice(key), op.meta);
      if (s.ok()) s = batch.Put(body_, KeySlice(key), rocksdb::Slice(op.body_bytes()));
      break;
    case SpoolOp::Kind::kRemove:
      // Delete, not SingleDelete: the API cannot prove a key was written exactly once.
      s = batch.Delete(meta_, KeySlice(key));
      if (s.ok()) s = batch.Delete(body_, KeySlice(key));
      break;
    case SpoolOp::Kind::kUpdate:
      s = batch.Put(meta_, KeySlice(key), op.meta);
      break;
    case SpoolOp::Kind::kTransaction:
      SLUICE_BUG("nested spool transaction");
      return;
  }
  // WriteBatch only fails past its max_bytes (unset, so unlimited): a bug of ours.
  if (!s.ok()) SLUICE_BUG(s.ToString().c_str());
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
      s = db_->Write(wo, &batch);
    }
    if (s.ok()) return CommitStatus::kOk;
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
    // so we latch too; the operator restarts and WAL replay decides what is durable. Requests of
    // this batch get kIoError (451): if some of it did reach the disk, the client's retry makes a
    // duplicate, never a loss.
    spdlog::error("spool: write failed, spool is now unhealthy: {}", s.ToString());
    unhealthy_.store(true, std::memory_order_release);
    return CommitStatus::kIoError;
  }
}

void SpoolWriter::Complete(std::vector<SpoolOp>& ops, size_t begin, size_t end,
                           CommitStatus status) {
  size_t messages = 0;
  size_t bytes = 0;
  uint64_t updates = 0;
  for (size_t i = begin; i < end; ++i) {
    if (ops[i].kind == SpoolOp::Kind::kEnqueue) {
      ++messages;
      bytes += ops[i].admitted_bytes;
    } else if (ops[i].kind != SpoolOp::Kind::kTransaction) {
      ++updates;
    }
  }
  {
    // Release the admission budget before the callbacks, so a sink that wakes a producer finds
    // room.
    std::lock_guard lock(mu_);
    pending_messages_ -= messages;
    pending_bytes_ -= bytes;
  }
  switch (status) {
    case CommitStatus::kOk:
      committed_.fetch_add(messages, std::memory_order_relaxed);
      break;
    case CommitStatus::kTimedOut:
    case CommitStatus::kShuttingDown:
      timed_out_.fetch_add(messages, std::memory_order_relaxed);
      dropped_updates_.fetch_add(updates, std::memory_order_relaxed);
      break;
    case CommitStatus::kIoError:
      failed_.fetch_add(messages, std::memory_order_relaxed);
      dropped_updates_.fetch_add(updates, std::memory_order_relaxed);
      break;
  }
  for (size_t i = begin; i < end; ++i) {
    const SpoolOp::Kind kind = ops[i].kind;
    if (kind == SpoolOp::Kind::kEnqueue || kind == SpoolOp::Kind::kTransaction) {
      ops[i].sink->OnCommitted(ops[i].token, status);
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
  std::lock_guard lock(mu_);
  stats.pending_messages = pending_messages_;
  stats.pending_bytes = pending_bytes_;
}

}  // namespace sluice::queue::detail
