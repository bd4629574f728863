#pragma once

// The RocksDB instance behind the spool: options (every one with its default and crash semantics),
// column families and the read path shared by Spool (read-write) and SpoolReader (secondary).

#include <cstdint>
#include <functional>
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

namespace sluice::queue::detail {

inline constexpr char kMetaFamily[] = "meta";
inline constexpr char kBodyFamily[] = "body";
inline constexpr char kQuarantineFamily[] = "quarantine";

rocksdb::DBOptions MakeDbOptions();
// default (unused, RocksDB requires it), meta, body, quarantine; in that order.
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
    return handles_[1];
  }
  rocksdb::ColumnFamilyHandle* body() {
    return handles_[2];
  }
  // Null for a secondary instance of a spool that has never had one (made by an older sluiced).
  rocksdb::ColumnFamilyHandle* quarantine() {
    return handles_.size() > 3 ? handles_[3] : nullptr;
  }

  Result<Envelope> ReadEnvelope(const MessageId& id);
  Result<std::string> ReadBody(const MessageId& id);
  // A record that cannot be read: its key as stored, its value, and why.
  using BadRecordFn =
      std::function<void(std::string_view key, std::string_view value, const std::string& why)>;
  // In id order. Without on_bad, an unreadable record ends the scan with an Error naming it;
  // with it, such records are reported and skipped.
  Result<void> ForEach(const std::function<bool(const MessageId&, const Envelope&)>& fn,
                       const BadRecordFn& on_bad = nullptr);
  // Read-write only: moves the record under `key` (the envelope bytes as found, and the body if
  // any) to the quarantine family, in one synced batch.
  Result<QuarantinedRecord> Quarantine(std::string_view key, std::string_view meta,
                                       const std::string& reason);
  Result<void> ForEachQuarantined(const std::function<bool(const QuarantinedRecord&)>& fn);
  Result<QuarantinedRecord> ReadQuarantined(const std::string& key);
  Result<uint64_t> CountQuarantined();
  // Number of keys in meta (one per message); reads keys only.
  Result<uint64_t> Count();
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
  Mode mode_ = Mode::kReadWrite;
};

}  // namespace sluice::queue::detail
