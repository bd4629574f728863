#include "queue/detail/spool_db.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/file_system.h>
#include <rocksdb/listener.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>

#include "base/clock.h"
#include "base/log.h"

namespace sluice::queue::detail {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// LZ4 if this librocksdb has it (Debian's does): cheap on CPU the 2-core target needs for TLS.
// Snappy and zstd cost more; no compression is the fallback.
rocksdb::CompressionType CheapCompression() {
  const auto supported = rocksdb::GetSupportedCompressions();
  if (std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end()) {
    return rocksdb::kLZ4Compression;
  }
  return rocksdb::kNoCompression;
}

// Memory that must not grow with the queue (docs/architecture.md "The active window"): one
// block cache for every family (by default each family's table factory makes its own 32 MiB
// cache), and the index and filter blocks of the SSTs in it instead of beside it (by default
// every open SST keeps its index in memory: ~100 MB for a 10-million-message spool, growing
// with it). L0's are pinned: the files the hot path reads.
rocksdb::BlockBasedTableOptions TableOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  t.cache_index_and_filter_blocks = true;
  t.pin_l0_filter_and_index_blocks_in_cache = true;
  return t;
}

// Settings the families share.
rocksdb::ColumnFamilyOptions BaseFamilyOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(TableOptions(cache)));
  o.compression = CheapCompression();  // default Snappy
  // Default 2. Four lets flushes fall behind briefly before writes stall.
  o.max_write_buffer_number = 4;
  // Default false in 7.8. Sizes levels from the bottom up, so a spool that drains to almost
  // nothing does not keep space amplification of a large tree.
  o.level_compaction_dynamic_level_bytes = true;
  // Default: none. A spool deletes every key it writes; an SST in which at least 512 of any 1,024
  // consecutive entries are tombstones is compacted early, so scans from the head stay fast
  // (docs/design.md §5.6).
  o.table_properties_collector_factories.push_back(
      rocksdb::NewCompactOnDeletionCollectorFactory(1024, 512, 0.5));
  // Default ~30 days for leveled compaction (0xfffffffffffffffe = "auto"). One day pushes old
  // SSTs, and the tombstones in them, through compaction even when nothing else triggers it.
  o.periodic_compaction_seconds = 24 * 60 * 60;
  return o;
}

rocksdb::ColumnFamilyOptions MetaFamilyOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o = BaseFamilyOptions(cache);
  // Default 64 MiB. Envelopes are ~300 B: 64 MiB holds ~200k of them, so most messages are born
  // and deleted inside the memtable and never reach an SST.
  o.write_buffer_size = 64 * kMiB;
  return o;
}

rocksdb::ColumnFamilyOptions ScheduleFamilyOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o = BaseFamilyOptions(cache);
  // Default 64 MiB. Keys are 26 bytes with empty values (about 70 bytes in a memtable): 16 MiB
  // holds ~240k, and the index of a 10-million-message queue is ~260 MB of keys on disk.
  o.write_buffer_size = 16 * kMiB;
  // Every key is written once and deleted once, read by seeks from a cursor, never from the head.
  return o;
}

rocksdb::ColumnFamilyOptions BodyFamilyOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o = BaseFamilyOptions(cache);
  // Default 64 MiB. Sizing rule (docs/design.md §5.6): ingest rate × time to delivery below
  // this, so bodies die in the memtable; 128 MiB ≈ 13 s of 10 MB/s.
  o.write_buffer_size = 128 * kMiB;
  // Integrated BlobDB (all defaults off / 256 MiB; docs/design.md §5.6). Bodies of 4 KiB and
  // more go to blob files at flush, so compaction moves only small blob references instead of
  // rewriting multi-MiB bodies at every level. Blob files are written and synced by flush like
  // SSTs; before flush the WAL holds the body, so crash semantics are unchanged.
  o.enable_blob_files = true;
  o.min_blob_size = 4096;
  // Smaller files become all-garbage (and are deleted without rewrite) sooner.
  o.blob_file_size = 64 * kMiB;
  o.blob_compression_type = rocksdb::kNoCompression;  // default; bodies are often compressed
  o.enable_blob_garbage_collection = true;
  o.blob_garbage_collection_age_cutoff = 0.25;  // default 0.25: relocate the oldest quarter
  // Default 1.0 (off). Schedules compactions for the oldest files once half their bytes are dead.
  o.blob_garbage_collection_force_threshold = 0.5;
  return o;
}

// RocksDB's info log through spdlog instead of its LOG file in the spool directory. On a full
// disk the file logger is itself a way to die: after one failed write to LOG, the next log line
// trips an assertion in Debian's librocksdb (WritableFileWriter's "previous error" assert is
// compiled in). Its chatter (flush and compaction reports) goes to debug.
class SpdlogLogger final : public rocksdb::Logger {
 public:
  SpdlogLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {
  }
  using rocksdb::Logger::Logv;
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel())
      return;
    char buf[1024];
    va_list copy;
    va_copy(copy, ap);
    // RocksDB's own format string, as its Logger interface hands it over.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    const int n = std::vsnprintf(buf, sizeof buf, format, copy);
#pragma GCC diagnostic pop
    va_end(copy);
    if (n < 0)
      return;
    const std::string_view line(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
    switch (level) {
      case rocksdb::InfoLogLevel::DEBUG_LEVEL:
      case rocksdb::InfoLogLevel::INFO_LEVEL:
      case rocksdb::InfoLogLevel::HEADER_LEVEL:
        spdlog::debug("rocksdb: {}", line);
        break;
      case rocksdb::InfoLogLevel::WARN_LEVEL:
        spdlog::warn("rocksdb: {}", line);
        break;
      default:
        spdlog::error("rocksdb: {}", line);
        break;
    }
  }
};

}  // namespace

// Records background errors and turns RocksDB's own recovery off. Its automatic recovery after
// ENOSPC (a retry every 5 s once space returns) resumes on a WAL writer that already failed when
// no memtable has data, and the next write then aborts on the same assertion (RocksDB issues
// #11643, #12998; fixed after 7.8). The spool closes and reopens the DB instead.
class ErrorListener final : public rocksdb::EventListener {
 public:
  void OnBackgroundError(rocksdb::BackgroundErrorReason /*reason*/,
                         rocksdb::Status* bg_error) override {
    std::lock_guard lock(mu_);
    if (error_.empty())
      error_ = bg_error->ToString();
    spdlog::error("spool: RocksDB background error: {}", bg_error->ToString());
  }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status /*error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
  std::string error() const {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  mutable std::mutex mu_;
  std::string error_;  // the first one
};

namespace {

Error StatusError(const std::string& what, const rocksdb::Status& s) {
  int code = EIO;
  if (s.IsNotFound())
    code = ENOENT;
  if (s.IsNoSpace())
    code = ENOSPC;
  return MakeError(what + ": " + s.ToString(), code);
}

}  // namespace

rocksdb::DBOptions MakeDbOptions() {
  rocksdb::DBOptions o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  // The WAL stays on (we never set WriteOptions::disableWAL) and every enqueue batch is written
  // with sync=true, so a completed enqueue survives kill -9 and power loss.
  // Default kPointInTimeRecovery: replay stops at the first corrupt record, i.e. a torn tail
  // written by a crash mid-write; every record whose sync returned lies before it.
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // Defaults, spelled out: fdatasync (not fsync) on sync, WAL written at each Write (not
  // buffered until FlushWAL), no incremental WAL sync (we sync every group anyway).
  o.use_fsync = false;
  o.manual_wal_flush = false;
  o.wal_bytes_per_sync = 0;
  // Default 0. Incremental sync_file_range of SST and blob files every 1 MiB, so flushes do not
  // dump hundreds of MiB on the ext4 journal at once and stall the WAL fdatasync behind it
  // (measured p99 148 → 94 ms at 30k msgs/s, docs/design.md §5.6). Not a durability setting.
  o.bytes_per_sync = 1 * kMiB;
  // Default 2; the target has 2 cores.
  o.max_background_jobs = 2;
  // Default 0 (= 4 × total write buffers). Forces a flush of the family pinning the oldest WAL
  // once WALs exceed 512 MiB, so a cold family cannot keep old WALs alive. The WAL is what a
  // start replays before the first greeting (~1.7 s per 330 MB measured; the memtables, 216 MiB
  // together, flush before this bound in steady ingest), whatever the queue's length.
  o.max_total_wal_size = 512 * kMiB;
  // Default false. Obsolete-file deletion happens in background jobs instead of in the caller,
  // so the writer thread and readers do not pay for unlinks.
  o.avoid_unnecessary_blocking_io = true;
  // Default 0 (no cap). Caps all memtables together (meta 64 + body 128 MiB, up to 4 each).
  o.db_write_buffer_size = 512 * kMiB;
  // Default 1000 info LOG files. (Unused: the info log goes to spdlog, see SpdlogLogger.)
  o.keep_log_file_num = 10;
  o.info_log = std::make_shared<SpdlogLogger>();
  // Default INT_MAX. No automatic resume after a background error: see ErrorListener.
  o.max_bgerror_resume_count = 0;
  // Default false. Replaying the WAL at start does not flush the recovered memtables (the WAL is
  // kept until they flush normally), so a restart on a nearly full disk needs almost no space
  // instead of as much again as the WAL holds. Crash semantics are unchanged: the WAL stays the
  // durable copy until the flush.
  o.avoid_flush_during_recovery = true;
  // Statistics stay off (statistics = nullptr, the default): the few gauges we export are DB
  // properties, which cost nothing until read.
  return o;
}

std::vector<rocksdb::ColumnFamilyDescriptor> MakeColumnFamilies() {
  // 64 MiB for the whole spool: the hot path reads memtables; the cache serves the index blocks
  // and the due work a refill reads.
  std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(64 * kMiB);
  rocksdb::ColumnFamilyOptions small;
  small.table_factory.reset(rocksdb::NewBlockBasedTableFactory(TableOptions(cache)));
  // Default 64 MiB; these hold a few keys per recipient domain, or nothing.
  small.write_buffer_size = 8 * kMiB;
  return {
      {rocksdb::kDefaultColumnFamilyName, small},
      {kMetaFamily, MetaFamilyOptions(cache)},
      {kBodyFamily, BodyFamilyOptions(cache)},
      // Rare, small, read by operators.
      {kQuarantineFamily, small},
      {kScheduleFamily, ScheduleFamilyOptions(cache)},
      // A few keys per recipient domain, rewritten with every batch (each version stays in the
      // memtable until a flush: a small one flushes often and keeps the WAL short).
      {kCountersFamily, small},
  };
}

Result<std::unique_ptr<SpoolDb>> SpoolDb::Open(
    const std::string& path, Mode mode, const std::shared_ptr<rocksdb::FileSystem>& file_system,
    const std::string& secondary_path) {
  std::unique_ptr<SpoolDb> spool_db(new SpoolDb());
  spool_db->mode_ = mode;
  rocksdb::DBOptions options = MakeDbOptions();
  spool_db->errors_ = std::make_shared<ErrorListener>();
  options.listeners.push_back(spool_db->errors_);
  if (file_system != nullptr) {
    spool_db->env_ = rocksdb::NewCompositeEnv(file_system);
    options.env = spool_db->env_.get();
  }
  rocksdb::Status s;
  if (mode == Mode::kReadWrite) {
    s = rocksdb::DB::Open(options, path, MakeColumnFamilies(), &spool_db->handles_, &spool_db->db_);
  } else {
    // A reader has nothing to say about the primary's stalls and flushes.
    options.info_log->SetInfoLogLevel(rocksdb::InfoLogLevel::ERROR_LEVEL);
    options.create_if_missing = false;
    options.create_missing_column_families = false;
    options.max_open_files = -1;  // required for secondary instances (db.h)
    // A secondary cannot create families: open the ones the spool has (the quarantine family
    // appears the first time a current sluiced opens it).
    std::vector<std::string> existing;
    s = rocksdb::DB::ListColumnFamilies(options, path, &existing);
    if (!s.ok())
      return StatusError("open spool " + path, s);
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (rocksdb::ColumnFamilyDescriptor& f : MakeColumnFamilies()) {
      if (std::find(existing.begin(), existing.end(), f.name) != existing.end()) {
        families.push_back(std::move(f));
      } else if (f.name != kQuarantineFamily && f.name != kScheduleFamily &&
                 f.name != kCountersFamily) {
        return MakeError("open spool " + path + ": no column family '" + f.name + "'", EINVAL);
      }
    }
    s = rocksdb::DB::OpenAsSecondary(options, path, secondary_path, families, &spool_db->handles_,
                                     &spool_db->db_);
  }
  if (!s.ok())
    return StatusError("open spool " + path, s);
  for (rocksdb::ColumnFamilyHandle* h : spool_db->handles_) {
    const std::string& name = h->GetName();
    if (name == kMetaFamily)
      spool_db->meta_ = h;
    if (name == kBodyFamily)
      spool_db->body_ = h;
    if (name == kQuarantineFamily)
      spool_db->quarantine_ = h;
    if (name == kScheduleFamily)
      spool_db->sched_ = h;
    if (name == kCountersFamily)
      spool_db->counters_ = h;
  }
  return spool_db;
}

SpoolDb::~SpoolDb() {
  Close(/*sync_wal=*/false);
}

void SpoolDb::Close(bool sync_wal) {
  if (db_ == nullptr)
    return;
  if (sync_wal && mode_ == Mode::kReadWrite) {
    // Unsynced removals and updates are in the OS page cache already (manual_wal_flush=false);
    // this makes them survive a power loss right after a clean shutdown too.
    rocksdb::Status s = db_->SyncWAL();
    if (!s.ok())
      spdlog::warn("spool: SyncWAL at close: {}", s.ToString());
  }
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    rocksdb::Status s = db_->DestroyColumnFamilyHandle(h);
    if (!s.ok())
      spdlog::warn("spool: closing column family: {}", s.ToString());
  }
  handles_.clear();
  meta_ = body_ = quarantine_ = sched_ = counters_ = nullptr;
  rocksdb::Status s = db_->Close();
  if (!s.ok())
    spdlog::warn("spool: close: {}", s.ToString());
  delete db_;
  db_ = nullptr;
}

Result<std::string> SpoolDb::Get(rocksdb::ColumnFamilyHandle* family, const MessageId& id) {
  const auto key = id.Key();
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), family, rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound())
    return MakeError("no message " + id.ToString() + " in the spool", ENOENT);
  if (!s.ok())
    return StatusError("read " + id.ToString(), s);
  return value;
}

Result<Envelope> SpoolDb::ReadEnvelope(const MessageId& id) {
  Result<std::string> raw = Get(meta(), id);
  if (!raw.ok())
    return raw.error();
  Result<Envelope> envelope = DecodeEnvelope(*raw);
  if (!envelope.ok()) {
    return MakeError(id.ToString() + ": " + envelope.error().message, EINVAL);
  }
  return envelope;
}

Result<std::string> SpoolDb::ReadBody(const MessageId& id) {
  return Get(body(), id);
}

Result<void> SpoolDb::ForEach(const std::function<bool(const MessageId&, const Envelope&)>& fn,
                              const BadRecordFn& on_bad, const rocksdb::Snapshot* snapshot,
                              std::string* resume) {
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  // A full scan (recovery, admin): do not evict hot blocks, read SSTs in large chunks
  // (docs/design.md §5.7: 1M entries in 0.27 s).
  ro.fill_cache = false;
  ro.readahead_size = 2 * kMiB;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta()));
  if (resume != nullptr && !resume->empty()) {
    it->Seek(*resume);
    if (it->Valid() && it->key() == rocksdb::Slice(*resume))
      it->Next();  // the last one visited
  } else {
    it->SeekToFirst();
  }
  for (; it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    const rocksdb::Slice value = it->value();
    if (resume != nullptr)
      resume->assign(key.data(), key.size());
    const std::string_view key_view(key.data(), key.size());
    const std::string_view value_view(value.data(), value.size());
    std::optional<MessageId> id = MessageId::FromKey(key_view);
    if (!id) {
      const std::string why =
          "meta key of " + std::to_string(key.size()) + " bytes is not a message id";
      if (!on_bad)
        return MakeError("spool: " + why, EINVAL);
      on_bad(key_view, value_view, why);
      continue;
    }
    Result<Envelope> envelope = DecodeEnvelope(value_view);
    if (!envelope.ok()) {
      if (!on_bad)
        return MakeError(id->ToString() + ": " + envelope.error().message, EINVAL);
      on_bad(key_view, value_view, "envelope does not decode: " + envelope.error().message);
      continue;
    }
    if (!fn(*id, *envelope))
      return {};
  }
  if (!it->status().ok())
    return StatusError("spool scan", it->status());
  return {};
}

Result<QuarantinedRecord> SpoolDb::Quarantine(std::string_view key, std::string_view meta_value,
                                              const std::string& reason) {
  if (mode_ != Mode::kReadWrite || quarantine() == nullptr) {
    return MakeError("spool: quarantine needs the read-write spool", EINVAL);
  }
  QuarantinedRecord record;
  record.key.assign(key);
  record.quarantined_at_us = UnixMicros();
  record.reason = reason;
  record.meta.assign(meta_value);
  const rocksdb::Slice k(key.data(), key.size());
  // Only the record as it was found, and never over an earlier quarantine of the same key (its
  // body would be lost): the caller serializes quarantines, so these checks are not racy.
  std::string current;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta(), k, &current);
  if (s.IsNotFound() || (s.ok() && current != meta_value))
    return MakeError("spool: the record changed or is gone since it was read", EALREADY);
  if (!s.ok())
    return StatusError("spool: reading the record to quarantine", s);
  std::string earlier;
  s = db_->Get(rocksdb::ReadOptions(), quarantine(), k, &earlier);
  if (s.ok())
    return MakeError("spool: a record under this key is in the quarantine already", EEXIST);
  s = db_->Get(rocksdb::ReadOptions(), body(), k, &record.body);
  if (s.ok()) {
    record.has_body = true;
  } else if (!s.IsNotFound()) {
    return StatusError("spool: reading the body to quarantine", s);
  }
  rocksdb::WriteBatch batch;
  s = batch.Put(quarantine(), k, EncodeQuarantined(record));
  if (s.ok())
    s = batch.Delete(meta(), k);
  if (s.ok())
    s = batch.Delete(body(), k);
  // Synced: the record must never be in neither place after a crash (the batch is atomic).
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (s.ok())
    s = db_->Write(wo, &batch);
  if (!s.ok())
    return StatusError("spool: quarantine", s);
  return record;
}

Result<void> SpoolDb::ForEachQuarantined(const std::function<bool(const QuarantinedRecord&)>& fn) {
  if (quarantine() == nullptr)
    return {};
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), quarantine()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    Result<QuarantinedRecord> r =
        DecodeQuarantined(std::string_view(it->key().data(), it->key().size()),
                          std::string_view(it->value().data(), it->value().size()));
    if (!r.ok())
      return MakeError("spool quarantine: " + r.error().message, EINVAL);
    if (!fn(*r))
      return {};
  }
  if (!it->status().ok())
    return StatusError("spool quarantine scan", it->status());
  return {};
}

Result<QuarantinedRecord> SpoolDb::ReadQuarantined(const std::string& key) {
  if (quarantine() == nullptr)
    return MakeError("nothing is quarantined", ENOENT);
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), quarantine(), key, &value);
  if (s.IsNotFound())
    return MakeError("no such quarantined record", ENOENT);
  if (!s.ok())
    return StatusError("spool quarantine read", s);
  return DecodeQuarantined(key, value);
}

Result<uint64_t> SpoolDb::CountQuarantined() {
  if (quarantine() == nullptr)
    return uint64_t{0};
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), quarantine()));
  uint64_t n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next())
    ++n;
  if (!it->status().ok())
    return StatusError("spool quarantine scan", it->status());
  return n;
}

Result<uint64_t> SpoolDb::Count() {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  ro.readahead_size = 2 * kMiB;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta()));
  uint64_t n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next())
    ++n;
  if (!it->status().ok())
    return StatusError("spool scan", it->status());
  return n;
}

Result<SpoolDb::Counters> SpoolDb::ReadCounters(const rocksdb::Snapshot* snapshot) {
  return ReadCountersFrom(db_, counters(), snapshot);
}

Result<SpoolDb::Counters> ReadCountersFrom(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family,
                                           const rocksdb::Snapshot* snapshot) {
  SpoolDb::Counters out;
  if (family == nullptr)
    return out;
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, family));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    const std::string_view value(it->value().data(), it->value().size());
    if (key == kIndexVersionKey) {
      out.indexed = value == kIndexVersion;
      continue;
    }
    std::optional<CounterKey> k = DecodeCounterKey(key);
    std::optional<uint64_t> v = DecodeCount(value);
    if (!k || !v) {
      spdlog::warn("spool: ignoring a malformed queue counter ({} bytes)", key.size());
      continue;
    }
    out.values[*k] = *v;
  }
  if (!it->status().ok())
    return StatusError("spool counters", it->status());
  return out;
}

Result<DueScan> SpoolDb::ScanDue(const DueQuery& query) {
  DueScan scan;
  if (sched() == nullptr) {
    scan.exhausted = true;
    return scan;
  }
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  struct Release {
    rocksdb::DB* db;
    const rocksdb::Snapshot* snapshot;
    ~Release() {
      db->ReleaseSnapshot(snapshot);
    }
  } release{db_, snapshot};
  rocksdb::ReadOptions ro;
  ro.snapshot = snapshot;
  // Never walk past the prefix: the next prefix belongs to another shard.
  const uint32_t next_prefix = uint32_t{query.prefix} + 1;
  const char upper_bytes[2] = {static_cast<char>(next_prefix >> 8),
                               static_cast<char>(next_prefix & 0xff)};
  const rocksdb::Slice upper(upper_bytes, 2);
  if (next_prefix <= 0xffff)
    ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, sched()));
  const ScheduleKey from = MakeScheduleKey(query.prefix, query.from_due_us, query.from_id);
  std::vector<ScheduleEntry> keys;
  bool stopped = false;
  // Seek from the cursor, never from the head of the prefix: what lies before it was delivered
  // and is a run of tombstones until compaction drops them.
  for (it->Seek(rocksdb::Slice(from.data(), from.size())); it->Valid(); it->Next()) {
    std::optional<ScheduleEntry> e =
        ParseScheduleKey(std::string_view(it->key().data(), it->key().size()));
    if (!e || e->prefix != query.prefix)
      continue;  // not ours to judge (a malformed key is never one of the spool's)
    if (e->due_us > query.until_due_us) {
      scan.exhausted = true;
      scan.next_due_us = e->due_us;
      stopped = true;
      break;
    }
    if (keys.size() == query.limit) {
      scan.resume = *e;
      stopped = true;
      break;
    }
    keys.push_back(*e);
  }
  if (!it->status().ok())
    return StatusError("spool schedule scan", it->status());
  if (!stopped)
    scan.exhausted = true;  // the end of the prefix

  std::vector<std::array<char, 16>> id_keys;
  std::vector<rocksdb::Slice> slices;
  id_keys.reserve(keys.size());
  for (const ScheduleEntry& e : keys)
    id_keys.push_back(e.id.Key());
  slices.reserve(keys.size());
  for (const auto& k : id_keys)
    slices.emplace_back(k.data(), k.size());
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  if (!keys.empty()) {
    db_->MultiGet(ro, meta(), slices.size(), slices.data(), values.data(), statuses.data());
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const ScheduleEntry& e = keys[i];
    if (statuses[i].IsNotFound()) {
      scan.stale.push_back(MakeScheduleKey(e.prefix, e.due_us, e.id));
      continue;
    }
    if (!statuses[i].ok())
      return StatusError("read " + e.id.ToString(), statuses[i]);
    const std::string_view value(values[i].data(), values[i].size());
    Result<Envelope> env = DecodeEnvelope(value);
    if (!env.ok()) {
      scan.unreadable.emplace_back(std::string(slices[i].data(), slices[i].size()),
                                   std::string(value));
      scan.stale.push_back(MakeScheduleKey(e.prefix, e.due_us, e.id));
      continue;
    }
    if (env->next_due_us != e.due_us) {
      scan.stale.push_back(MakeScheduleKey(e.prefix, e.due_us, e.id));
      continue;
    }
    scan.messages.push_back({e.id, e.due_us, std::move(*env)});
  }
  return scan;
}

Result<std::vector<uint16_t>> SpoolDb::SchedulePrefixes() {
  std::vector<uint16_t> prefixes;
  if (sched() == nullptr)
    return prefixes;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), sched()));
  uint32_t next = 0;
  while (next <= 0xffff) {
    const char seek[2] = {static_cast<char>(next >> 8), static_cast<char>(next & 0xff)};
    it->Seek(rocksdb::Slice(seek, 2));
    if (!it->Valid())
      break;
    std::optional<ScheduleEntry> e =
        ParseScheduleKey(std::string_view(it->key().data(), it->key().size()));
    const auto* raw = reinterpret_cast<const unsigned char*>(it->key().data());
    const uint32_t prefix = it->key().size() >= 2 ? (uint32_t{raw[0]} << 8 | raw[1]) : next;
    if (e)
      prefixes.push_back(e->prefix);
    next = prefix + 1;
  }
  if (!it->status().ok())
    return StatusError("spool schedule prefixes", it->status());
  return prefixes;
}

std::string SpoolDb::background_error() const {
  return errors_ ? errors_->error() : "";
}

uint64_t SpoolDb::IntProperty(const char* name) {
  uint64_t value = 0;
  if (!db_->GetIntProperty(name, &value))
    return 0;
  return value;
}

}  // namespace sluice::queue::detail
