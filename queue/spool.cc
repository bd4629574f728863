#include "queue/spool.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <sys/statvfs.h>

#include "base/log.h"
#include "queue/detail/spool_db.h"
#include "queue/detail/spool_writer.h"

namespace sluice::queue {

namespace {

// Bytes in the write-ahead logs (*.log) of the spool directory: what a start has to replay.
uint64_t WalBytes(const std::string& path) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    if (entry.path().extension() == ".log" && entry.is_regular_file(ec)) {
      total += entry.file_size(ec);
    }
  }
  return total;
}

// Says what to free when the spool cannot be opened for lack of space.
Error NoSpaceToOpen(const std::string& path, const Error& cause) {
  struct statvfs vfs {};
  const uint64_t free =
      statvfs(path.c_str(), &vfs) == 0 ? static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize : 0;
  // Opening replays the WAL without flushing it (avoid_flush_during_recovery), then writes a new
  // MANIFEST and WAL; the recovered memtables flush soon after and need about the WAL's size.
  const uint64_t wal = WalBytes(path);
  const uint64_t need = wal + (64ull << 20);
  const uint64_t short_by = need > free ? need - free : 0;
  return MakeError("spool " + path + ": not enough free space to open it (" + cause.message +
                       "): " + std::to_string(free >> 20) + " MiB free on its file system; " +
                       "replaying its write-ahead log (" + std::to_string(wal >> 20) +
                       " MiB) and writing it out needs about " + std::to_string(need >> 20) +
                       " MiB: free at least " + std::to_string((short_by >> 20) + 1) +
                       " MiB there (do not delete files in the spool directory) and start again",
                   ENOSPC);
}

}  // namespace

const char* ToString(CommitStatus status) {
  switch (status) {
    case CommitStatus::kOk:
      return "ok";
    case CommitStatus::kTimedOut:
      return "timed out";
    case CommitStatus::kIoError:
      return "io error";
    case CommitStatus::kShuttingDown:
      return "shutting down";
    case CommitStatus::kNoSpace:
      return "no space (below spool.min_free_bytes)";
  }
  return "?";
}

Spool::Spool() = default;

Spool::~Spool() {
  Shutdown();
}

Result<std::unique_ptr<Spool>> Spool::Open(const SpoolOptions& options) {
  if (options.path.empty())
    return MakeError("spool: path is empty", EINVAL);
  std::error_code ec;
  std::filesystem::create_directories(options.path, ec);
  if (ec) {
    return MakeError("spool: cannot create " + options.path + ": " + ec.message(), ec.value());
  }
  Result<std::unique_ptr<detail::SpoolDb>> db = detail::SpoolDb::Open(
      options.path, detail::SpoolDb::Mode::kReadWrite, options.file_system, "");
  if (!db.ok()) {
    if (db.error().code == ENOSPC)
      return NoSpaceToOpen(options.path, db.error());
    return db.error();
  }

  std::unique_ptr<Spool> spool(new Spool());
  spool->options_ = options;
  spool->db_ = std::move(*db);
  // Recovery (docs/architecture.md "Start and recovery"): the WAL was replayed by Open. The
  // counters say how much is queued without reading any envelope; delivery reads its due work
  // from the schedule index as it goes.
  Result<detail::SpoolDb::Counters> counters = spool->db_->ReadCounters();
  if (!counters.ok())
    return counters.error();
  spool->recovered_messages_ = SumCounts(counters->values).messages();
  bool indexed = counters->indexed;
  if (!indexed) {
    // A new spool is indexed by construction; one with messages but no mark was made before the
    // index existed, and Audit indexes it.
    std::unique_ptr<rocksdb::Iterator> it(
        spool->db_->db()->NewIterator(rocksdb::ReadOptions(), spool->db_->meta()));
    it->SeekToFirst();
    if (!it->Valid() && it->status().ok()) {
      rocksdb::WriteOptions wo;
      wo.sync = true;
      rocksdb::Status st =
          spool->db_->db()->Put(wo, spool->db_->counters(),
                                rocksdb::Slice(kIndexVersionKey.data(), kIndexVersionKey.size()),
                                rocksdb::Slice(kIndexVersion.data(), kIndexVersion.size()));
      indexed = st.ok();
    } else {
      spdlog::warn("spool: made before the schedule index; indexing it in the background");
    }
  }
  spool->indexed_ = indexed;
  Result<uint64_t> quarantined = spool->db_->CountQuarantined();
  if (!quarantined.ok())
    return quarantined.error();
  spool->quarantined_ = *quarantined;
  if (*quarantined > 0) {
    spdlog::warn("spool: {} record(s) in quarantine (sluicectl quarantine list)", *quarantined);
  }
  Spool* raw = spool.get();
  spool->writer_ = std::make_unique<detail::SpoolWriter>(
      detail::SpoolHandles{spool->db_->db(), spool->db_->meta(), spool->db_->body(),
                           spool->db_->sched(), spool->db_->counters()},
      options, [raw] { return raw->Reopen(); });
  spool->writer_->Start();
  spdlog::info("spool: opened {} with {} messages", options.path, spool->recovered_messages_);
  return spool;
}

Admit Spool::Enqueue(const MessageId& id, std::string&& meta, std::string&& body,
                     CompletionSink* sink, uint64_t token) {
  return writer_->Enqueue(id, std::move(meta), std::move(body), sink, token);
}

Admit Spool::Enqueue(const MessageId& id, std::string&& meta,
                     std::shared_ptr<const std::string> body, CompletionSink* sink,
                     uint64_t token) {
  return writer_->Enqueue(id, std::move(meta), std::move(body), sink, token);
}

bool Spool::healthy() const {
  return writer_->healthy();
}

bool Spool::disk_low() const {
  return writer_->disk_low();
}

void Spool::SetRecoveredHandler(std::function<void(const MessageId&, Envelope)> handler) {
  writer_->SetRecoveredHandler(std::move(handler));
}

Result<detail::SpoolHandles> Spool::Reopen() {
  std::unique_lock lock(db_mu_);
  if (db_ != nullptr) {
    // Never SyncWAL a WAL whose write failed: that is one of the paths to the assertion.
    db_->Close(/*sync_wal=*/false);
    db_.reset();
  }
  Result<std::unique_ptr<detail::SpoolDb>> db = detail::SpoolDb::Open(
      options_.path, detail::SpoolDb::Mode::kReadWrite, options_.file_system, "");
  if (!db.ok())
    return db.error();  // readers get "spool is shut down" until the next try
  db_ = std::move(*db);
  ++reopens_;
  return detail::SpoolHandles{db_->db(), db_->meta(), db_->body(), db_->sched(), db_->counters()};
}

void Spool::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    // The writer first: it still needs the DB to commit what is queued. (writer_ is null only
    // when Open failed after opening the DB.)
    if (writer_ != nullptr)
      writer_->Stop();
    std::unique_lock lock(db_mu_);
    if (db_ != nullptr)
      db_->Close(/*sync_wal=*/writer_ != nullptr && writer_->healthy());
    db_.reset();
  });
}

Result<Envelope> Spool::ReadEnvelope(const MessageId& id) {
  std::shared_lock lock(db_mu_);
  if (db_ == nullptr)
    return MakeError("spool is shut down", ESHUTDOWN);
  return db_->ReadEnvelope(id);
}

Result<std::string> Spool::ReadBody(const MessageId& id) {
  std::shared_lock lock(db_mu_);
  if (db_ == nullptr)
    return MakeError("spool is shut down", ESHUTDOWN);
  return db_->ReadBody(id);
}

Result<void> Spool::ForEach(const std::function<bool(const MessageId&, const Envelope&)>& fn) {
  std::shared_lock lock(db_mu_);
  if (db_ == nullptr)
    return MakeError("spool is shut down", ESHUTDOWN);
  return db_->ForEach(fn);
}

Result<Spool::AuditReport> Spool::Audit(const std::atomic<bool>* stop) {
  AuditReport report;
  const bool migrating = !indexed();
  const uint64_t generation = writer_->rescan_generation();
  auto stopped = [stop] { return stop != nullptr && stop->load(std::memory_order_relaxed); };
  struct Bad {
    std::string key, value, why;
  };
  std::vector<Bad> bad;
  // The recount: the counters as of one snapshot against what the envelopes of the same
  // snapshot say. Every change after the snapshot moved the live counters by its own delta, so
  // adding the difference makes them exact, whatever happened meanwhile. (Not while migrating:
  // the index ops count what they index.)
  std::map<CounterKey, int64_t> found;
  std::map<CounterKey, uint64_t> recorded;
  const rocksdb::Snapshot* snapshot = nullptr;
  uint64_t opened = 0;
  {
    std::shared_lock lock(db_mu_);
    if (db_ == nullptr)
      return MakeError("spool is shut down", ESHUTDOWN);
    snapshot = db_->db()->GetSnapshot();
    opened = reopens_;
    Result<detail::SpoolDb::Counters> counters = db_->ReadCounters(snapshot);
    if (!counters.ok()) {
      db_->db()->ReleaseSnapshot(snapshot);
      return counters.error();
    }
    recorded = std::move(counters->values);
  }
  // In chunks, the lock held for one chunk at a time: a reopen after a write error (which takes
  // it exclusively) never waits for the whole pass, and the writer is never waited on under it.
  constexpr size_t kChunk = 10000;
  std::string resume;
  bool done = false;
  bool stalled = false;
  while (!done && !stalled && !stopped()) {
    std::vector<MessageId> to_index;
    {
      std::shared_lock lock(db_mu_);
      if (db_ == nullptr || reopens_ != opened) {
        // The snapshot went with the old DB: nothing to release. The next start audits again.
        return MakeError("spool audit: the spool was reopened; left for the next start", EAGAIN);
      }
      size_t n = 0;
      Result<void> scanned = db_->ForEach(
          [&](const MessageId& id, const Envelope& env) {
            ++report.messages;
            if (migrating) {
              to_index.push_back(id);
            } else {
              AddCounts(PlacementOf(env), +1, found);
            }
            return ++n < kChunk;
          },
          [&bad, &n](std::string_view key, std::string_view value, const std::string& why) {
            // Bounded by what is broken, which is rare; the records are small.
            bad.push_back({std::string(key), std::string(value), why});
            ++n;
          },
          snapshot, &resume);
      if (!scanned.ok()) {
        db_->db()->ReleaseSnapshot(snapshot);
        return scanned.error();
      }
      done = n < kChunk;
    }
    // The writer puts each key unless it is there already, and counts what it indexes. At most
    // one chunk of them waits in its queue.
    uint64_t last = 0;
    for (const MessageId& id : to_index) {
      detail::SpoolOp op;
      op.kind = detail::SpoolOp::Kind::kIndex;
      op.id = id;
      last = writer_->Submit(std::move(op));
      ++report.indexed;
    }
    // At most a chunk waits in the writer's queue (10 minutes: a writer stalled that long
    // leaves the rest to the next start).
    if (last != 0 && !writer_->WaitApplied(last, std::chrono::minutes(10), stop) && !stopped())
      stalled = true;
  }
  {
    std::shared_lock lock(db_mu_);
    if (db_ != nullptr && reopens_ == opened)
      db_->db()->ReleaseSnapshot(snapshot);
  }
  if (stalled)
    return MakeError("spool audit: the writer did not catch up; left for the next start",
                     ETIMEDOUT);
  if (stopped())
    return report;
  for (const Bad& b : bad)
    report.quarantined += QuarantineRecord(b.key, b.value, b.why) ? 1 : 0;
  if (!migrating) {
    detail::SpoolOp adjust;
    adjust.kind = detail::SpoolOp::Kind::kAdjustCounts;
    for (const auto& [key, value] : recorded)
      found[key] -= static_cast<int64_t>(value);
    for (const auto& [key, delta] : found) {
      if (delta != 0)
        adjust.adjust[key] = delta;
    }
    if (!adjust.adjust.empty()) {
      spdlog::warn("spool: {} queue counters were off (a record quarantined, or a bug); corrected",
                   adjust.adjust.size());
      writer_->Submit(std::move(adjust));
    }
    return report;
  }
  if (writer_->rescan_generation() != generation) {
    // An index op may have been dropped: not marked, indexed again at the next start.
    spdlog::warn("spool: the schedule index may be incomplete; it is completed at the next start");
    return report;
  }
  detail::SpoolOp mark;
  mark.kind = detail::SpoolOp::Kind::kMarkIndexed;
  writer_->Submit(std::move(mark));
  indexed_ = true;
  spdlog::info("spool: schedule index built ({} messages)", report.messages);
  return report;
}

bool Spool::QuarantineRecord(const std::string& key, const std::string& value,
                             const std::string& why) {
  // The audit and a refill's scan may both find the same record: one at a time, and the second
  // finds it gone (SpoolDb::Quarantine checks the record is still the one found).
  std::lock_guard quarantine_lock(quarantine_mu_);
  std::shared_lock lock(db_mu_);
  if (db_ == nullptr)
    return false;
  Result<QuarantinedRecord> q = db_->Quarantine(key, value, why);
  if (!q.ok() && (q.error().code == EALREADY || q.error().code == EEXIST))
    return false;  // found twice (by the audit and by a scan): done by the first
  if (!q.ok()) {
    // (A full disk, say.) The record stays where it is, unread; the relay still runs.
    QuarantinedRecord named;
    named.key = key;
    spdlog::error(
        "spool: record {} cannot be read ({}) and could not be quarantined ({}); "
        "left in place, tried again at the next start",
        named.Name(), why, q.error().message);
    return false;
  }
  quarantined_.fetch_add(1, std::memory_order_relaxed);
  spdlog::error(
      "spool: record {} cannot be read ({}); moved to the quarantine with its body ({} + {} "
      "bytes); see sluicectl quarantine show {}",
      q->Name(), why, q->meta.size(), q->body.size(), q->Name());
  return true;
}

QueueCounts Spool::counts() const {
  return writer_->counts();
}

uint64_t Spool::applied_seq() const {
  return writer_->applied_seq();
}

uint64_t Spool::rescan_generation() const {
  return writer_->rescan_generation();
}

Result<DueScan> Spool::ScanDue(const DueQuery& query) {
  // Taken before the snapshot: everything applied by then is in it.
  const uint64_t applied = writer_->applied_seq();
  Result<DueScan> scan = [&]() -> Result<DueScan> {
    std::shared_lock lock(db_mu_);
    if (db_ == nullptr)
      return MakeError("spool is shut down", ESHUTDOWN);
    return db_->ScanDue(query);
  }();
  if (!scan.ok())
    return scan;
  scan->applied_seq = applied;
  for (const auto& [key, value] : scan->unreadable)
    QuarantineRecord(key, value, "envelope does not decode");
  for (const ScheduleKey& key : scan->stale) {
    detail::SpoolOp op;
    op.kind = detail::SpoolOp::Kind::kDropStale;
    op.meta.assign(key.data(), key.size());
    writer_->Submit(std::move(op));
  }
  return scan;
}

Result<std::vector<uint16_t>> Spool::SchedulePrefixes() {
  std::shared_lock lock(db_mu_);
  if (db_ == nullptr)
    return MakeError("spool is shut down", ESHUTDOWN);
  return db_->SchedulePrefixes();
}

Admit Spool::Commit(std::vector<Change> changes, CompletionSink* sink, uint64_t token,
                    uint64_t* seq) {
  detail::SpoolOp op;
  op.kind = detail::SpoolOp::Kind::kTransaction;
  op.sink = sink;
  op.token = token;
  op.parts.reserve(changes.size());
  for (Change& c : changes) {
    detail::SpoolOp part;
    part.id = c.id;
    switch (c.kind) {
      case Change::Kind::kPut:
        part.kind = detail::SpoolOp::Kind::kEnqueue;
        part.meta = std::move(c.meta);
        part.body = std::move(c.body);
        break;
      case Change::Kind::kUpdateEnvelope:
        part.kind = detail::SpoolOp::Kind::kUpdate;
        part.meta = std::move(c.meta);
        break;
      case Change::Kind::kRemove:
        part.kind = detail::SpoolOp::Kind::kRemove;
        break;
    }
    op.parts.push_back(std::move(part));
  }
  return writer_->SubmitTransaction(std::move(op), seq);
}

uint64_t Spool::Remove(const MessageId& id) {
  detail::SpoolOp op;
  op.kind = detail::SpoolOp::Kind::kRemove;
  op.id = id;
  return writer_->Submit(std::move(op));
}

uint64_t Spool::UpdateEnvelope(const MessageId& id, std::string meta) {
  detail::SpoolOp op;
  op.kind = detail::SpoolOp::Kind::kUpdate;
  op.id = id;
  op.meta = std::move(meta);
  return writer_->Submit(std::move(op));
}

SpoolStats Spool::stats() const {
  SpoolStats stats;
  writer_->FillStats(stats);
  std::shared_lock lock(db_mu_);
  if (db_ != nullptr) {
    stats.write_stopped = db_->IntProperty("rocksdb.is-write-stopped");
    stats.delayed_write_rate = db_->IntProperty("rocksdb.actual-delayed-write-rate");
    stats.estimate_pending_compaction_bytes =
        db_->IntProperty("rocksdb.estimate-pending-compaction-bytes");
    stats.running_compactions = db_->IntProperty("rocksdb.num-running-compactions");
    stats.memtable_bytes = db_->IntProperty("rocksdb.cur-size-all-mem-tables");
    stats.background_errors = db_->IntProperty("rocksdb.background-errors");
  }
  return stats;
}

void Spool::PauseWriterForTesting(bool paused) {
  writer_->SetPausedForTesting(paused);
}

// --- SpoolReader ---------------------------------------------------------------------------------

namespace {

// A secondary instance needs a directory of its own for its info log; it holds nothing else.
Result<std::string> MakeSecondaryDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sluice-spool-reader-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return MakeError("spool reader: mkdtemp " + pattern + ": " + std::strerror(errno), errno);
  }
  return pattern;
}

}  // namespace

SpoolReader::SpoolReader() = default;

SpoolReader::~SpoolReader() = default;

Result<std::unique_ptr<SpoolReader>> SpoolReader::Open(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::path(path) / "CURRENT", ec)) {
    return MakeError("no spool at " + path, ENOENT);
  }
  Result<std::string> secondary = MakeSecondaryDir();
  if (!secondary.ok())
    return secondary.error();
  Result<std::unique_ptr<detail::SpoolDb>> db =
      detail::SpoolDb::Open(path, detail::SpoolDb::Mode::kSecondary, nullptr, *secondary);
  // The secondary's info log is only opened by Open; remove it now so nothing is left behind.
  // (RocksDB keeps the open LOG file descriptor, writing to an unlinked file.)
  std::filesystem::remove_all(*secondary, ec);
  if (!db.ok())
    return db.error();
  std::unique_ptr<SpoolReader> reader(new SpoolReader());
  reader->db_ = std::move(*db);
  return reader;
}

Result<Envelope> SpoolReader::ReadEnvelope(const MessageId& id) {
  return db_->ReadEnvelope(id);
}

Result<std::string> SpoolReader::ReadBody(const MessageId& id) {
  return db_->ReadBody(id);
}

Result<void> SpoolReader::ForEach(
    const std::function<bool(const MessageId&, const Envelope&)>& fn,
    const std::function<void(const std::string& name, const std::string& why)>& on_unreadable) {
  if (!on_unreadable)
    return db_->ForEach(fn);
  return db_->ForEach(
      fn, [&on_unreadable](std::string_view key, std::string_view, const std::string& why) {
        QuarantinedRecord named;
        named.key.assign(key);
        on_unreadable(named.Name(), why);
      });
}

Result<void> SpoolReader::ForEachQuarantined(
    const std::function<bool(const QuarantinedRecord&)>& fn) {
  return db_->ForEachQuarantined(fn);
}

Result<QuarantinedRecord> SpoolReader::ReadQuarantined(std::string_view name) {
  std::optional<std::string> key = QuarantineKeyFromName(name);
  if (!key)
    return MakeError("'" + std::string(name) + "' is not a quarantined record's name", EINVAL);
  return db_->ReadQuarantined(*key);
}

Result<uint64_t> SpoolReader::Count() {
  return db_->Count();
}

Result<QueueCounts> SpoolReader::Counts(bool* indexed) {
  Result<detail::SpoolDb::Counters> counters = db_->ReadCounters();
  if (!counters.ok())
    return counters.error();
  if (indexed != nullptr)
    *indexed = counters->indexed;
  return SumCounts(counters->values);
}

}  // namespace sluice::queue
