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
  // Recovery (docs/design.md §5.7): the WAL was replayed by Open; count what is there. The
  // delivery side rebuilds its schedule from the same scan later.
  Result<uint64_t> count = spool->db_->Count();
  if (!count.ok())
    return count.error();
  spool->recovered_messages_ = *count;
  Result<uint64_t> quarantined = spool->db_->CountQuarantined();
  if (!quarantined.ok())
    return quarantined.error();
  spool->quarantined_ = *quarantined;
  if (*quarantined > 0) {
    spdlog::warn("spool: {} record(s) in quarantine (sluicectl quarantine list)", *quarantined);
  }
  Spool* raw = spool.get();
  spool->writer_ = std::make_unique<detail::SpoolWriter>(
      detail::SpoolHandles{spool->db_->db(), spool->db_->meta(), spool->db_->body()}, options,
      [raw] { return raw->Reopen(); });
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
  return detail::SpoolHandles{db_->db(), db_->meta(), db_->body()};
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

Result<uint64_t> Spool::Recover(const std::function<void(const MessageId&, Envelope)>& fn) {
  struct Bad {
    std::string key, value, why;
  };
  std::vector<Bad> bad;
  {
    std::shared_lock lock(db_mu_);
    if (db_ == nullptr)
      return MakeError("spool is shut down", ESHUTDOWN);
    Result<void> scanned = db_->ForEach(
        [&fn](const MessageId& id, const Envelope& env) {
          fn(id, env);
          return true;
        },
        [&bad](std::string_view key, std::string_view value, const std::string& why) {
          bad.push_back({std::string(key), std::string(value), why});
        });
    if (!scanned.ok())
      return scanned.error();
  }
  uint64_t moved = 0;
  for (const Bad& b : bad) {
    std::shared_lock lock(db_mu_);
    if (db_ == nullptr)
      return MakeError("spool is shut down", ESHUTDOWN);
    Result<QuarantinedRecord> q = db_->Quarantine(b.key, b.value, b.why);
    if (!q.ok()) {
      // (A full disk, say.) The record stays where it is, unread; the relay still starts.
      QuarantinedRecord named;
      named.key = b.key;
      spdlog::error(
          "spool: record {} cannot be read ({}) and could not be quarantined ({}); "
          "left in place, tried again at the next start",
          named.Name(), b.why, q.error().message);
      continue;
    }
    ++moved;
    quarantined_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error(
        "spool: record {} cannot be read ({}); moved to the quarantine with its body ({} + {} "
        "bytes); see sluicectl quarantine show {}",
        q->Name(), b.why, q->meta.size(), q->body.size(), q->Name());
  }
  return moved;
}

Admit Spool::Commit(std::vector<Change> changes, CompletionSink* sink, uint64_t token) {
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
  return writer_->SubmitTransaction(std::move(op));
}

void Spool::Remove(const MessageId& id) {
  detail::SpoolOp op;
  op.kind = detail::SpoolOp::Kind::kRemove;
  op.id = id;
  writer_->Submit(std::move(op));
}

void Spool::UpdateEnvelope(const MessageId& id, std::string meta) {
  detail::SpoolOp op;
  op.kind = detail::SpoolOp::Kind::kUpdate;
  op.id = id;
  op.meta = std::move(meta);
  writer_->Submit(std::move(op));
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

}  // namespace sluice::queue
