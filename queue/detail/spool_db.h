#pragma once

// The RocksDB instance behind the spool: options (every one with its default and crash semantics),
// column families and the read path shared by Spool (read-write) and SpoolReader (secondary).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>

#include "base/result.h"
#include "queue/envelope.h"
#include "queue/message_id.h"
#include "queue/quarantine.h"
#include "queue/schedule.h"

namespace sluice::queue::detail {

inline constexpr char kMetaFamily[] = "meta";
inline constexpr char kBodyFamily[] = "body";
inline constexpr char kQuarantineFamily[] = "quarantine";
// The schedule index and the queue counters (queue/schedule.h).
inline constexpr char kScheduleFamily[] = "sched";
inline constexpr char kCountersFamily[] = "counters";

rocksdb::DBOptions MakeDbOptions();
// default (unused, RocksDB requires it), meta, body, quarantine, sched, counters; in that order.
std::vector<rocksdb::ColumnFamilyDescriptor> MakeColumnFamilies();

class SpoolDb {
 public:
  enum class Mode {
    kReadWrite,
    // RocksDB secondary instance: no lock, no writes, safe while a primary has the DB open
    // (db.h: a read-only instance opened alongside a primary "has undefined behavior").
    kSecondary,
  };

  // file_system: null = default. secondary_path: the secondary instance's own directory (its info
  // log); required for kSecondary.
  static Result<std::unique_ptr<SpoolDb>> Open(
      const std::string& path, Mode mode, const std::shared_ptr<rocksdb::FileSystem>& file_system,
      const std::string& secondary_path);
  ~SpoolDb();  // Close()

  SpoolDb(const SpoolDb&) = delete;
  SpoolDb& operator=(const SpoolDb&) = delete;

  rocksdb::DB* db() {
    return db_;
  }
  rocksdb::ColumnFamilyHandle* meta() {
    return meta_;
  }
  rocksdb::ColumnFamilyHandle* body() {
    return body_;
  }
  // These three are null for a secondary instance of a spool that has never had them (made by
  // an older sluiced); a read-write instance creates them.
  rocksdb::ColumnFamilyHandle* quarantine() {
    return quarantine_;
  }
  rocksdb::ColumnFamilyHandle* sched() {
    return sched_;
  }
  rocksdb::ColumnFamilyHandle* counters() {
    return counters_;
  }

  Result<Envelope> ReadEnvelope(const MessageId& id);
  Result<std::string> ReadBody(const MessageId& id);
  // A record that cannot be read: its key as stored, its value, and why.
  using BadRecordFn =
      std::function<void(std::string_view key, std::string_view value, const std::string& why)>;
  // In id order. Without on_bad, an unreadable record ends the scan with an Error naming it;
  // with it, such records are reported and skipped.
  // `snapshot`: read as of it (null: now). `resume`: start after this key (empty: from the
  // start), and set to the last key visited (so a scan can go on in chunks).
  Result<void> ForEach(const std::function<bool(const MessageId&, const Envelope&)>& fn,
                       const BadRecordFn& on_bad = nullptr,
                       const rocksdb::Snapshot* snapshot = nullptr, std::string* resume = nullptr);
  // Read-write only: moves the record under `key` (the envelope bytes as found, and the body if
  // any) to the quarantine family, in one synced batch.
  Result<QuarantinedRecord> Quarantine(std::string_view key, std::string_view meta,
                                       const std::string& reason);
  Result<void> ForEachQuarantined(const std::function<bool(const QuarantinedRecord&)>& fn);
  Result<QuarantinedRecord> ReadQuarantined(const std::string& key);
  Result<uint64_t> CountQuarantined();
  // Number of keys in meta (one per message); reads keys only.
  Result<uint64_t> Count();
  // Every counter in the counters family (queue/schedule.h), and whether the index version mark
  // is there.
  struct Counters {
    std::map<CounterKey, uint64_t> values;
    bool indexed = false;
  };
  Result<Counters> ReadCounters(const rocksdb::Snapshot* snapshot = nullptr);
  // Due work of one prefix (queue/schedule.h); one snapshot for the index and the envelopes.
  Result<DueScan> ScanDue(const DueQuery& query);
  // The schedule prefixes that have at least one key (one seek per prefix found).
  Result<std::vector<uint16_t>> SchedulePrefixes();
  uint64_t IntProperty(const char* name);
  // A background error RocksDB reported (a flush or compaction that failed, e.g. ENOSPC), as
  // text; empty if none. Automatic recovery is off: the spool reopens the DB instead.
  std::string background_error() const;

  // Closes; idempotent. sync_wal (read-write only) first syncs the WAL so unsynced removals and
  // updates survive a power loss too. Pass false after a write error: Debian's librocksdb is built
  // with assertions, and SyncWAL on a WAL whose sync failed aborts the process
  // (WritableFileWriter::AssertFalseAndGetStatusForPrevError).
  void Close(bool sync_wal);

 private:
  SpoolDb() = default;
  Result<std::string> Get(rocksdb::ColumnFamilyHandle* family, const MessageId& id);

  std::unique_ptr<rocksdb::Env> env_;  // owns the file system wrapper; outlives db_
  std::shared_ptr<class ErrorListener> errors_;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* body_ = nullptr;
  rocksdb::ColumnFamilyHandle* quarantine_ = nullptr;
  rocksdb::ColumnFamilyHandle* sched_ = nullptr;
  rocksdb::ColumnFamilyHandle* counters_ = nullptr;
  Mode mode_ = Mode::kReadWrite;
};

// SpoolDb::ReadCounters on raw handles (the writer reloads them after a reopen).
Result<SpoolDb::Counters> ReadCountersFrom(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family,
                                           const rocksdb::Snapshot* snapshot = nullptr);

}  // namespace sluice::queue::detail
