#pragma once

// The JSON event log (docs/design.md §9.4): one JSON object per line (reception, delivery,
// deferral, bounce), for machines; the human log stays on stderr.
//
// Writing never blocks the caller: Write() appends to a bounded in-memory queue and a dedicated
// thread writes the queue to the file in one write per batch, at least every flush_interval and
// at Stop(). When the queue is full, the event is dropped and counted (dropped()); mail flow
// never waits for the log.
//
// Rotation: Reopen() (on SIGHUP) makes the writer thread reopen the file by its path before it
// writes the next batch, so logrotate can rename the file and signal us (no copytruncate).
// Events written after Reopen() returns go to the new file; the renamed file keeps everything
// written before.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/result.h"

namespace sluice::metrics {

class Counter;
class Registry;

// One event: a JSON object whose first fields are "ts" (RFC 3339, UTC, microseconds) and "event".
// Fields keep the order they are added in. Strings are escaped per RFC 8259 §7: `"` and `\`,
// control characters as \n, \r, \t or \u00XX; bytes that are not valid UTF-8 become U+FFFD.
// Numbers that JSON cannot represent (NaN, ±Inf) are written as null. Keys are not deduplicated.
class Event {
 public:
  explicit Event(std::string_view type);
  Event(std::string_view type, std::chrono::system_clock::time_point ts);

  Event& Str(std::string_view key, std::string_view value);
  Event& Int(std::string_view key, int64_t value);
  Event& Num(std::string_view key, double value);
  Event& Bool(std::string_view key, bool value);
  Event& StrList(std::string_view key, const std::vector<std::string>& values);

  // The JSON object, without a line end.
  std::string ToJson() const;
  // The line to write (object + "\n"); leaves the Event empty.
  std::string TakeLine() &&;

  // RFC 3339 UTC with microseconds: 2024-05-01T12:34:56.123456Z.
  static std::string FormatTimestamp(std::chrono::system_clock::time_point ts);
  static void AppendJsonString(std::string& out, std::string_view text);

 private:
  void Key(std::string_view key);
  std::string buf_;  // the object so far, without the closing brace
};

struct EventLogOptions {
  // Queue bounds: past either, Write() drops the event. Default 65536 events or 64 MiB.
  size_t max_events = 65536;
  size_t max_bytes = 64 << 20;
  // Longest time an event waits in memory before it is written (at least this often the writer
  // thread drains the queue and writes).
  std::chrono::milliseconds flush_interval{200};
  // If set, sluice_eventlog_events_written_total and sluice_eventlog_events_dropped_total are
  // registered there. The registry must outlive the EventLog.
  Registry* metrics = nullptr;
};

class EventLog {
 public:
  // path "-" means stdout (never reopened or closed). Otherwise the file is opened for append
  // (created 0640 if missing); an error names the path and errno.
  static Result<std::unique_ptr<EventLog>> Open(std::string path, EventLogOptions options = {});

  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  ~EventLog();  // Stop()

  // Any thread; never blocks on I/O. Holds a mutex only to append to (or swap) a vector.
  void Write(Event event);
  // Any thread, and async-signal-safe (only sets a flag): the writer reopens the path before its
  // next batch, within flush_interval.
  void Reopen();
  // Writes everything queued, closes the file and ends the writer thread. Later events are
  // dropped. Idempotent.
  void Stop();

  // Events lost: queue full, written after Stop(), or a failed write.
  uint64_t dropped() const {
    return dropped_.load(std::memory_order_relaxed);
  }
  // Events handed to the kernel (write(2) returned).
  uint64_t written() const {
    return written_.load(std::memory_order_relaxed);
  }
  const std::string& path() const {
    return path_;
  }

 private:
  EventLog(std::string path, int fd, EventLogOptions options);
  void Run();
  void WriteBatch(std::vector<std::string>& batch);
  void ReopenNow();
  void CountDropped(uint64_t n);

  // Immutable after Open.
  const std::string path_;
  const EventLogOptions options_;
  Counter* written_metric_ = nullptr;
  Counter* dropped_metric_ = nullptr;

  // Shared with Write() callers, under mutex_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::string> pending_;
  size_t pending_bytes_ = 0;
  bool stopping_ = false;
  bool wake_requested_ = false;

  // Written by any thread.
  std::atomic<bool> reopen_requested_{false};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> written_{0};

  // Owned by the writer thread (after Open).
  int fd_;
  std::string out_;
  uint64_t write_errors_ = 0;

  std::mutex stop_mutex_;  // serializes Stop()
  std::thread writer_;
};

}  // namespace sluice::metrics
