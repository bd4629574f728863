#pragma once

// The durable spool (docs/design.md §1 promise 1, §5): one RocksDB instance with column families
// `meta` (envelopes) and `body` (message bytes), written by one writer thread that merges every
// queued request into one synced WriteBatch (group commit, docs/design.md §5.2).
//
// Threads: Enqueue/Remove/UpdateEnvelope/reads may be called from any thread. Completions arrive
// on the writer thread. Shutdown may be called from any thread except the writer (a sink must not
// call it).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "queue/quarantine.h"
#include "queue/schedule.h"

namespace rocksdb {
class FileSystem;
}

namespace sluice::queue {

namespace detail {
class SpoolDb;
class SpoolWriter;
struct SpoolHandles;
}  // namespace detail

struct SpoolOptions {
  std::string path;  // the RocksDB directory; created (with parents) if missing
  // Admission bound: enqueue requests queued to the writer and not yet durable. Past either bound
  // Enqueue answers kFull (the session stops reading and later answers 451). A single message
  // larger than max_pending_bytes is still admitted when nothing else is pending.
  size_t max_pending_messages = 10000;
  size_t max_pending_bytes = 256 << 20;
  // A RocksDB write stall (Status::Incomplete under no_slowdown) longer than this completes the
  // batch's requests with kTimedOut; nothing of that batch is written.
  std::chrono::milliseconds stall_deadline{10000};
  // fsync (fdatasync of the WAL) before completion. false only for benchmarks: it breaks the
  // "250 means on disk" promise.
  bool sync = true;
  // Free space on the spool's file system below which new mail is refused, as Postfix's
  // queue_minfree: enqueues and bounce transactions complete kNoSpace without being written (the
  // session answers 452 4.3.1). Updates and removals are still written down to a quarter of it;
  // below that they wait in memory (bounded) until there is room. RocksDB should never see
  // ENOSPC: its error paths on a full disk are where Debian's librocksdb (assertions on) can
  // abort. 0 disables the check. After a write error the DB is reopened once this much is free.
  uint64_t min_free_bytes = 1ull << 30;

  // Called on the writer thread after every batch write: the enqueues in it and how long the
  // write (with its fsync) took. For metrics; must be cheap and must not block.
  std::function<void(size_t messages, double seconds)> on_batch;

  // Test hooks. Leave them unset in production.
  // A file system wrapper (fault injection); null = RocksDB's default POSIX file system.
  std::shared_ptr<rocksdb::FileSystem> file_system;
  // Called before each write attempt on the writer thread; true = behave as if RocksDB answered
  // Status::Incomplete (a write stall) without writing.
  std::function<bool()> inject_stall;
};

// kNoSpace: not written because the file system is below min_free_bytes (452 4.3.1).
enum class CommitStatus { kOk, kTimedOut, kIoError, kShuttingDown, kNoSpace };
const char* ToString(CommitStatus status);

// Receives completions. Called ON THE WRITER THREAD: implementations must only hand the result to
// their owner (e.g. push to a queue + wake), never block.
class CompletionSink {
 public:
  virtual ~CompletionSink() = default;
  virtual void OnCommitted(uint64_t token, CommitStatus status) = 0;
};

enum class Admit { kAccepted, kFull, kUnhealthy };

// Counters for metrics. Writer counters are cumulative since Open; RocksDB gauges are read when
// stats() is called (absent once the spool is shut down).
struct SpoolStats {
  uint64_t batches = 0;             // WriteBatches written (successfully or not)
  uint64_t committed_messages = 0;  // enqueues completed kOk
  uint64_t timed_out_messages = 0;  // enqueues completed kTimedOut
  uint64_t failed_messages = 0;     // enqueues completed kIoError
  uint64_t stalls = 0;              // write attempts answered Status::Incomplete
  uint64_t dropped_updates = 0;     // Remove/UpdateEnvelope lost to a stall timeout or IO error
  uint64_t pending_messages = 0;    // admitted, not yet durable
  uint64_t pending_bytes = 0;
  // RocksDB properties (docs/design.md §5.6).
  uint64_t write_stopped = 0;                      // rocksdb.is-write-stopped
  uint64_t delayed_write_rate = 0;                 // rocksdb.actual-delayed-write-rate
  uint64_t estimate_pending_compaction_bytes = 0;  // rocksdb.estimate-pending-compaction-bytes
  uint64_t running_compactions = 0;                // rocksdb.num-running-compactions
  uint64_t memtable_bytes = 0;                     // rocksdb.cur-size-all-mem-tables
  uint64_t background_errors = 0;                  // rocksdb.background-errors
  // Disk space (sampled by the writer at least once a second).
  uint64_t free_bytes = 0;         // available to us on the spool's file system
  bool disk_low = false;           // free_bytes < min_free_bytes
  uint64_t no_space_messages = 0;  // enqueues completed kNoSpace
  uint64_t deferred_updates = 0;   // removals/updates waiting for room or for a reopen
  uint64_t reopens = 0;            // the DB closed and reopened after a write error
};

class Spool {
 public:
  // Creates the directory, opens or creates the DB with its column families (replaying the WAL),
  // reads the queue counters (no scan of the messages), starts the writer thread.
  static Result<std::unique_ptr<Spool>> Open(const SpoolOptions& options);
  ~Spool();  // calls Shutdown()

  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Non-blocking, thread-safe. Takes the strings (moves from them) only on kAccepted, so a caller
  // refused with kFull can retry with the same message. kFull when the admission bound is
  // reached, kUnhealthy after an IO error latched or once Shutdown has begun. On kAccepted exactly
  // one OnCommitted(token, ...) call follows, on the writer thread, after the batch holding this
  // message was written (and fsync'd when options.sync).
  Admit Enqueue(const MessageId& id, std::string&& meta, std::string&& body, CompletionSink* sink,
                uint64_t token);
  // The same with a body the caller shares (it keeps it for the first delivery attempt, so that
  // attempt does not read it back); the spool drops its reference once the batch is built.
  Admit Enqueue(const MessageId& id, std::string&& meta, std::shared_ptr<const std::string> body,
                CompletionSink* sink, uint64_t token);

  // False once a write failed with anything but a stall (ENOSPC that got past min_free_bytes,
  // EIO): the writer then closes the DB and reopens it as soon as min_free_bytes are free again
  // (RocksDB's own resume is off, see spool_db.cc), and it is true again. Stays true during and
  // after a clean Shutdown.
  bool healthy() const;
  // The file system is below min_free_bytes: new mail gets 452 4.3.1 (sessions ask at MAIL).
  bool disk_low() const;
  // Called on the writer thread for a message whose enqueue failed with a write error (its client
  // got 451) but which the reopened DB holds after all: durable, so it must be delivered. Set
  // before the spool takes mail; the handler must only hand it on (post to a shard).
  void SetRecoveredHandler(std::function<void(const MessageId&, Envelope)> handler);
  uint64_t recovered_messages() const {
    return recovered_messages_;
  }

  // Stops accepting (Enqueue → kUnhealthy), commits everything already queued (each request still
  // gets its completion), joins the writer, syncs the WAL and closes the DB. Idempotent; reads
  // after it return an Error.
  void Shutdown();

  // Read path (admin, delivery). Only durable data is visible: a Put becomes visible when its
  // synced write returns. Unknown id → Error with code ENOENT.
  Result<Envelope> ReadEnvelope(const MessageId& id);
  Result<std::string> ReadBody(const MessageId& id);
  // Calls fn for each message in id order; stops early if fn returns false. An undecodable
  // envelope ends the scan with an Error naming the id.
  Result<void> ForEach(const std::function<bool(const MessageId&, const Envelope&)>& fn);

  // The background pass after a start (docs/architecture.md "Start and recovery"), while the
  // relay already runs: walks every envelope in id order and moves every record that cannot be
  // read (an envelope that does not decode, a key that is not a message id) with its body to the
  // quarantine column family, in a synced batch each, logging it: one bad record must neither
  // stop the relay nor vanish. In a spool made before the schedule index existed it also indexes
  // and counts every message (through the writer, so that delivery finds them) and marks the
  // spool indexed once all are. Returns how many records were quarantined. `stop` ends it early
  // (shutdown); it is safe to run again.
  struct AuditReport {
    uint64_t messages = 0;
    uint64_t quarantined = 0;
    uint64_t indexed = 0;  // messages that had no schedule key
  };
  Result<AuditReport> Audit(const std::atomic<bool>* stop = nullptr);
  // Every message is in the schedule index (false only until Audit finishes on an old spool).
  bool indexed() const {
    return indexed_.load(std::memory_order_acquire);
  }

  // The queue's size by state and recipient domain (queue/schedule.h), as written so far; no
  // scan. Thread-safe.
  QueueCounts counts() const;
  // Due work of one schedule prefix (queue/schedule.h), from one snapshot. Keys that name no
  // message (or not at that time) are dropped and unreadable records quarantined on the way.
  // Sets DueScan::applied_seq. Any thread; blocking (run it on the blocking pool).
  Result<DueScan> ScanDue(const DueQuery& query);
  // The schedule prefixes with at least one key. Blocking.
  Result<std::vector<uint16_t>> SchedulePrefixes();
  // Removals and updates are numbered in submission order (their return value); every one up to
  // this number has been written, or dropped.
  uint64_t applied_seq() const;
  // Changes when readers of the index must start over from the head of every prefix and look
  // for new prefixes (an op was lost, or an old spool's index was completed).
  uint64_t rescan_generation() const;
  // Records in the quarantine family now (sluice_spool_quarantined_messages).
  uint64_t quarantined_messages() const {
    return quarantined_.load(std::memory_order_relaxed);
  }

  // Unsynced, batched through the same writer (they ride on the next group fsync). A lost update
  // after a crash causes a retry or a duplicate, never a loss. Ignored after Shutdown or once
  // unhealthy.
  // The envelope, body and schedule key go together; so do an envelope and its schedule key.
  // Return the op's sequence number (applied_seq); 0 after Shutdown.
  uint64_t Remove(const MessageId& id);
  uint64_t UpdateEnvelope(const MessageId& id, std::string meta);

  // A group of changes written atomically in one synced batch, with one completion (like
  // Enqueue's). Delivery uses it to queue a bounce together with the update or removal of the
  // message it reports on. Outside the admission bound (bounces are few and must not wait behind
  // inbound mail); kUnhealthy once an IO error latched or Shutdown began.
  struct Change {
    enum class Kind : uint8_t { kPut, kUpdateEnvelope, kRemove };
    Kind kind = Kind::kPut;
    MessageId id;
    std::string meta;  // kPut, kUpdateEnvelope
    std::string body;  // kPut
  };
  // `seq`: the transaction's sequence number (applied_seq), when accepted.
  Admit Commit(std::vector<Change> changes, CompletionSink* sink, uint64_t token,
               uint64_t* seq = nullptr);

  SpoolStats stats() const;

  // Test only: while paused the writer takes nothing from its queue, so admission bounds and
  // Shutdown draining can be tested deterministically. Shutdown un-pauses.
  void PauseWriterForTesting(bool paused);

 private:
  Spool();
  // Writer thread, after a write error: closes the DB (without syncing the failed WAL) and opens
  // it again; readers wait on db_mu_ meanwhile.
  Result<detail::SpoolHandles> Reopen();
  // Moves one unreadable record to the quarantine (logged); false if it could not be.
  bool QuarantineRecord(const std::string& key, const std::string& value, const std::string& why);

  // Shared by readers, exclusive for closing the DB in Shutdown.
  mutable std::shared_mutex db_mu_;
  std::unique_ptr<detail::SpoolDb> db_;  // null after Shutdown (or while a reopen fails)
  SpoolOptions options_;
  std::unique_ptr<detail::SpoolWriter> writer_;
  uint64_t recovered_messages_ = 0;
  std::atomic<uint64_t> quarantined_{0};
  std::atomic<bool> indexed_{false};
  uint64_t reopens_ = 0;  // guarded by db_mu_
  std::mutex quarantine_mu_;
  std::once_flag shutdown_once_;
};

// Read-only access for sluicectl while the daemon runs. Takes no lock and never writes to the
// spool. It sees the spool as of Open (WAL included); open a new reader to see newer messages.
class SpoolReader {
 public:
  static Result<std::unique_ptr<SpoolReader>> Open(const std::string& path);
  ~SpoolReader();

  Result<Envelope> ReadEnvelope(const MessageId& id);
  Result<std::string> ReadBody(const MessageId& id);
  // Records that cannot be read (sluiced quarantines them when it starts) are passed to
  // on_unreadable (its key printed as QuarantinedRecord::Name() does, and why) and skipped.
  Result<void> ForEach(const std::function<bool(const MessageId&, const Envelope&)>& fn,
                       const std::function<void(const std::string& name, const std::string& why)>&
                           on_unreadable = nullptr);
  Result<uint64_t> Count();
  // The queue counters as the spool holds them (no scan); `indexed` false on a spool that has
  // not been indexed yet (its counters are then incomplete).
  Result<QueueCounts> Counts(bool* indexed = nullptr);
  // The quarantine (see Spool::Audit).
  Result<void> ForEachQuarantined(const std::function<bool(const QuarantinedRecord&)>& fn);
  // By QuarantinedRecord::Name().
  Result<QuarantinedRecord> ReadQuarantined(std::string_view name);

 private:
  SpoolReader();
  std::unique_ptr<detail::SpoolDb> db_;
};

}  // namespace sluice::queue
