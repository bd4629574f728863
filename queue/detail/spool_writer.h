#pragma once

// The spool writer thread: group commit (docs/design.md §5.2). Producers push onto a
// bounded queue under a mutex held for a push; the writer takes the whole queue in one swap,
// writes it as one WriteBatch (one WAL record, one fdatasync) and then delivers completions.
// While one batch syncs, the next accumulates, so the batch size adapts to the load by itself.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "base/result.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "queue/schedule.h"
#include "queue/spool.h"

namespace sluice::queue::detail {

struct SpoolOp {
  // kTransaction: `parts` (kEnqueue/kRemove/kUpdate without sinks) written
  // atomically in one synced batch, with one completion.
  // kIndex: put the message's schedule key and count the message, unless the key is there
  // already (a spool made before the index existed; Spool::Audit).
  // kAdjustCounts: add `adjust` to the counters (Spool::Audit's recount).
  // kDropStale: delete the schedule key in `meta` unless it is the message's current one.
  // kMarkIndexed: write the index version mark (after every kIndex before it).
  enum class Kind : uint8_t {
    kEnqueue,
    kRemove,
    kUpdate,
    kTransaction,
    kIndex,
    kDropStale,
    kMarkIndexed,
    kAdjustCounts
  };
  Kind kind = Kind::kEnqueue;
  MessageId id;
  uint64_t seq = 0;  // submission order (applied_seq)
  std::string meta;
  std::string body;
  // kEnqueue alternative to `body`: shared with the caller (delivery keeps it
  // in memory for the first attempt); the writer drops its reference once the
  // batch holds a copy.
  std::shared_ptr<const std::string> shared_body;
  CompletionSink* sink = nullptr;  // kEnqueue only
  uint64_t token = 0;
  size_t admitted_bytes = 0;   // what this op counts against max_pending_bytes (kEnqueue only)
  std::vector<SpoolOp> parts;  // kTransaction only
  std::map<CounterKey, int64_t> adjust;  // kAdjustCounts only

  std::string_view body_bytes() const {
    return shared_body ? *shared_body : body;
  }
};

// What the writer writes to. Replaced by a reopen after a write error.
struct SpoolHandles {
  rocksdb::DB* db = nullptr;
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* body = nullptr;
  rocksdb::ColumnFamilyHandle* sched = nullptr;
  rocksdb::ColumnFamilyHandle* counters = nullptr;
};

class SpoolWriter {
 public:
  // Closes the DB after a write error and opens it again (Spool::Reopen); writer thread only.
  using ReopenFn = std::function<Result<SpoolHandles>()>;

  // The handles must stay valid until Stop() or a reopen (Stop() before closing the DB).
  SpoolWriter(SpoolHandles handles, const SpoolOptions& options, ReopenFn reopen);
  ~SpoolWriter();  // Stop()

  SpoolWriter(const SpoolWriter&) = delete;
  SpoolWriter& operator=(const SpoolWriter&) = delete;

  void Start();
  Admit Enqueue(const MessageId& id, std::string&& meta, std::string&& body, CompletionSink* sink,
                uint64_t token);
  Admit Enqueue(const MessageId& id, std::string&& meta, std::shared_ptr<const std::string> body,
                CompletionSink* sink, uint64_t token);
  // Unsynced Remove / UpdateEnvelope (and the index's own ops); never refused, dropped after
  // Stop. Returns the op's sequence number (see applied_seq).
  uint64_t Submit(SpoolOp op);
  // A synced kTransaction with a completion; outside the admission bound. `seq`: its sequence
  // number, when accepted.
  Admit SubmitTransaction(SpoolOp op, uint64_t* seq = nullptr);
  // Refuses new work, commits what is queued, joins the thread. Idempotent; not from the writer.
  void Stop();

  bool healthy() const {
    return !unhealthy_.load(std::memory_order_acquire);
  }
  bool disk_low() const {
    return disk_low_.load(std::memory_order_acquire);
  }
  void SetRecoveredHandler(std::function<void(const MessageId&, Envelope)> handler);
  // Every op with a sequence number up to this one has been written (or will never be: dropped,
  // or lost with a failed batch); none after it that is still waiting for room.
  uint64_t applied_seq() const {
    return applied_seq_.load(std::memory_order_acquire);
  }
  // Blocks until applied_seq() >= seq, the timeout passes or *stop turns true; true on the first.
  bool WaitApplied(uint64_t seq, std::chrono::milliseconds timeout,
                   const std::atomic<bool>* stop = nullptr);
  // Raised when readers of the index must read it from the start again: a removal, update or
  // index op was dropped (more waiting than kMaxDeferred), so what applied_seq told them may
  // never be written; or the index of an old spool was completed (kMarkIndexed written), so
  // keys appeared behind their cursors.
  uint64_t rescan_generation() const {
    return rescan_generation_.load(std::memory_order_acquire);
  }
  // The queue counters as written so far (queue/schedule.h); thread-safe.
  QueueCounts counts() const;
  void SetPausedForTesting(bool paused);
  void FillStats(SpoolStats& stats) const;

  // Most removals/updates kept while they cannot be written; past it they are dropped (a lost
  // removal means a duplicate delivery after a restart, a lost update an earlier retry).
  static constexpr size_t kMaxDeferred = 100000;
  // A reopen is tried this often while unhealthy and enough space is free.
  static constexpr std::chrono::seconds kReopenInterval{2};

 private:
  void Run();
  // Samples the file system (statvfs); writer thread.
  void RefreshDisk();
  // Unhealthy: reopen once min_free_bytes are free, then write what waited and hand on the
  // messages of failed batches that turned out durable. Writer thread.
  void TryRecover();
  // Keeps a removal/update for later (bounded by kMaxDeferred).
  void Defer(SpoolOp&& op);
  // Fills in an enqueue whose body is already in op; moves meta only when accepted.
  Admit Enqueue(const MessageId& id, std::string&& meta, SpoolOp& op, CompletionSink* sink,
                uint64_t token);
  // Queues op if the admission bound allows; moves from op only then.
  Admit Push(SpoolOp& op);
  // Writes ops[begin, end) as one batch and completes its enqueues.
  void CommitRange(std::vector<SpoolOp>& ops, size_t begin, size_t end);
  // A message as the batch being built leaves it: stored or not, and its placement if its
  // envelope decodes.
  struct Current {
    bool exists = false;
    std::optional<Placement> placement;
  };
  struct BatchState {
    rocksdb::WriteBatch batch;
    std::unordered_map<MessageId, Current> overlay;
    std::map<CounterKey, int64_t> delta;
  };
  Current Lookup(BatchState& state, const MessageId& id);
  // False: the op is dropped (an update of a message removed meanwhile).
  bool AddToBatch(BatchState& state, SpoolOp& op);
  // Puts the counters the batch changed; returns their new values (applied after the write).
  std::map<CounterKey, uint64_t> AddCounters(BatchState& state);
  // (Re)reads the counters from the DB (start, reopen).
  void LoadCounters();
  // After ops up to `last` were written or deferred.
  void PublishApplied(uint64_t last);
  CommitStatus WriteWithBackoff(rocksdb::WriteBatch& batch, bool sync);
  // Completes ops[begin, end) with their statuses (status[i - begin]) and releases their
  // admission budget.
  void Complete(std::vector<SpoolOp>& ops, size_t begin, size_t end,
                const std::vector<CommitStatus>& status);

  // Immutable after construction.
  const SpoolOptions options_;
  const ReopenFn reopen_;

  // Writer thread only (replaced by a reopen).
  SpoolHandles handles_;
  std::vector<SpoolOp> deferred_;     // removals/updates waiting for room or a reopen
  std::vector<MessageId> uncertain_;  // enqueues of failed batches: durable or not?
  bool deferring_ = false;            // this drain deferred a removal/update already
  std::chrono::steady_clock::time_point last_disk_check_{};
  std::chrono::steady_clock::time_point last_reopen_try_{};

  // Written by the writer thread, read by counts().
  mutable std::mutex counters_mu_;
  std::map<CounterKey, uint64_t> counters_;

  // Written by producers and the writer, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<SpoolOp> queue_;
  size_t pending_messages_ = 0;  // admitted enqueues not yet completed (queued or being written)
  size_t pending_bytes_ = 0;
  bool writer_waiting_ = false;
  bool stopping_ = false;
  bool paused_ = false;
  uint64_t next_seq_ = 1;

  // Read lock-free by producers.
  std::atomic<bool> unhealthy_{false};
  std::atomic<uint64_t> applied_seq_{0};
  std::mutex applied_mu_;  // with applied_cv_: WaitApplied
  std::condition_variable applied_cv_;
  std::atomic<uint64_t> rescan_generation_{0};
  std::atomic<bool> accepting_{true};
  std::atomic<bool> disk_low_{false};
  std::atomic<uint64_t> free_bytes_{0};

  std::mutex recovered_mu_;
  std::function<void(const MessageId&, Envelope)> recovered_;  // guarded by recovered_mu_

  // Written only by the writer thread; read by stats().
  std::atomic<uint64_t> batches_{0};
  std::atomic<uint64_t> committed_{0};
  std::atomic<uint64_t> timed_out_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> stalls_{0};
  std::atomic<uint64_t> dropped_updates_{0};
  std::atomic<uint64_t> no_space_{0};
  std::atomic<uint64_t> deferred_count_{0};
  std::atomic<uint64_t> reopens_{0};

  std::mutex stop_mu_;  // serializes Stop()
  std::thread thread_;
};

}  // namespace sluice::queue::detail
