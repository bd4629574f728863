#include "metrics/event_log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <cmath>

#include "base/log.h"
#include "metrics/detail/utf8.h"
#include "metrics/registry.h"

namespace sluice::metrics {

// ----- Event -----

namespace {

void AppendDigits(std::string& out, unsigned value, int width) {
  char buf[16];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0 || n < width);
  while (n > 0) {
    out += buf[--n];
  }
}

}  // namespace

std::string Event::FormatTimestamp(std::chrono::system_clock::time_point ts) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  const int64_t us = duration_cast<microseconds>(ts.time_since_epoch()).count();
  int64_t secs = us / 1000000;
  int64_t frac = us % 1000000;
  if (frac < 0) {  // before 1970: floor, not truncate
    frac += 1000000;
    secs -= 1;
  }
  const time_t t = static_cast<time_t>(secs);
  tm parts{};
  gmtime_r(&t, &parts);
  std::string out;
  out.reserve(27);
  AppendDigits(out, static_cast<unsigned>(parts.tm_year + 1900), 4);
  out += '-';
  AppendDigits(out, static_cast<unsigned>(parts.tm_mon + 1), 2);
  out += '-';
  AppendDigits(out, static_cast<unsigned>(parts.tm_mday), 2);
  out += 'T';
  AppendDigits(out, static_cast<unsigned>(parts.tm_hour), 2);
  out += ':';
  AppendDigits(out, static_cast<unsigned>(parts.tm_min), 2);
  out += ':';
  AppendDigits(out, static_cast<unsigned>(parts.tm_sec), 2);
  out += '.';
  AppendDigits(out, static_cast<unsigned>(frac), 6);
  out += 'Z';
  return out;
}

void Event::AppendJsonString(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = detail::Utf8SequenceLength(text, i);
    if (len == 0) {
      out += detail::kReplacementChar;
      i += 1;
      continue;
    }
    if (len > 1) {
      out.append(text.substr(i, len));
      i += len;
      continue;
    }
    const char c = text[i++];
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          // RFC 8259 §7: control characters must be escaped.
          out += "\\u00";
          out += kHex[static_cast<unsigned char>(c) >> 4];
          out += kHex[static_cast<unsigned char>(c) & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

Event::Event(std::string_view type) : Event(type, std::chrono::system_clock::now()) {
}

Event::Event(std::string_view type, std::chrono::system_clock::time_point ts) {
  buf_.reserve(256);
  buf_ += "{\"ts\":\"";
  buf_ += FormatTimestamp(ts);
  buf_ += "\",\"event\":";
  AppendJsonString(buf_, type);
}

void Event::Key(std::string_view key) {
  buf_ += ',';
  AppendJsonString(buf_, key);
  buf_ += ':';
}

Event& Event::Str(std::string_view key, std::string_view value) {
  Key(key);
  AppendJsonString(buf_, value);
  return *this;
}

Event& Event::Int(std::string_view key, int64_t value) {
  Key(key);
  char tmp[24];
  buf_.append(tmp, std::to_chars(tmp, tmp + sizeof(tmp), value).ptr);
  return *this;
}

Event& Event::Num(std::string_view key, double value) {
  Key(key);
  if (!std::isfinite(value)) {
    buf_ += "null";  // RFC 8259 §6: NaN and Infinity are not permitted
    return *this;
  }
  char tmp[32];
  buf_.append(tmp, std::to_chars(tmp, tmp + sizeof(tmp), value).ptr);
  return *this;
}

Event& Event::Bool(std::string_view key, bool value) {
  Key(key);
  buf_ += value ? "true" : "false";
  return *this;
}

Event& Event::StrList(std::string_view key, const std::vector<std::string>& values) {
  Key(key);
  buf_ += '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) {
      buf_ += ',';
    }
    AppendJsonString(buf_, values[i]);
  }
  buf_ += ']';
  return *this;
}

std::string Event::ToJson() const {
  return buf_ + "}";
}

std::string Event::TakeLine() && {
  buf_ += "}\n";
  return std::move(buf_);
}

// ----- EventLog -----

namespace {

constexpr std::string_view kStdout = "-";

int OpenForAppend(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

}  // namespace

Result<std::unique_ptr<EventLog>> EventLog::Open(std::string path, EventLogOptions options) {
  int fd = STDOUT_FILENO;
  if (path != kStdout) {
    fd = OpenForAppend(path);
    if (fd < 0) {
      const int err = errno;
      return MakeError("cannot open event log " + path + ": " + strerror(err), err);
    }
  }
  return std::unique_ptr<EventLog>(new EventLog(std::move(path), fd, options));
}

EventLog::EventLog(std::string path, int fd, EventLogOptions options)
    : path_(std::move(path)), options_(options), fd_(fd) {
  if (options_.metrics != nullptr) {
    written_metric_ = &options_.metrics
                           ->AddCounter("sluice_eventlog_events_written_total",
                                        "Events written to the JSON event log.")
                           .WithLabels({});
    dropped_metric_ = &options_.metrics
                           ->AddCounter("sluice_eventlog_events_dropped_total",
                                        "Events lost by the JSON event log: queue full, written "
                                        "after shutdown, or a failed write.")
                           .WithLabels({});
  }
  pending_.reserve(std::min<size_t>(options_.max_events, 4096));
  writer_ = std::thread([this] { Run(); });
}

EventLog::~EventLog() {
  Stop();
}

void EventLog::CountDropped(uint64_t n) {
  dropped_.fetch_add(n, std::memory_order_relaxed);
  if (dropped_metric_ != nullptr) {
    dropped_metric_->Inc(options_.metrics->other_thread(), n);
  }
}

void EventLog::Write(Event event) {
  std::string line = std::move(event).TakeLine();
  bool notify = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || pending_.size() >= options_.max_events ||
        pending_bytes_ + line.size() > options_.max_bytes) {
      // Drop the newest event: the log must never hold up mail.
    } else {
      pending_bytes_ += line.size();
      pending_.push_back(std::move(line));
      // Wake the writer early when half full, so a burst does not wait for the timer and drop.
      if (!wake_requested_ && (pending_.size() * 2 >= options_.max_events ||
                               pending_bytes_ * 2 >= options_.max_bytes)) {
        wake_requested_ = true;
        notify = true;
      }
      line.clear();
    }
  }
  if (!line.empty()) {
    CountDropped(1);
  }
  if (notify) {
    wake_.notify_one();
  }
}

void EventLog::Reopen() {
  reopen_requested_.store(true, std::memory_order_release);
}

void EventLog::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mutex_);
  if (!writer_.joinable()) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  writer_.join();
  if (fd_ >= 0 && path_ != kStdout) {
    ::close(fd_);
  }
  fd_ = -1;
}

void EventLog::Run() {
  std::vector<std::string> batch;
  batch.reserve(pending_.capacity());
  for (;;) {
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, options_.flush_interval,
                     [this] { return stopping_ || wake_requested_; });
      wake_requested_ = false;
      batch.swap(pending_);
      pending_bytes_ = 0;
      stopping = stopping_;
    }
    // Checked after taking the batch: an event queued after Reopen() returned is in this batch
    // or a later one, and goes to the new file.
    if (reopen_requested_.exchange(false, std::memory_order_acq_rel)) {
      ReopenNow();
    }
    WriteBatch(batch);
    batch.clear();
    if (stopping) {
      return;  // Write() refuses new events once stopping_ is set: nothing is left behind
    }
  }
}

void EventLog::ReopenNow() {
  if (path_ == kStdout) {
    return;
  }
  const int fd = OpenForAppend(path_);
  if (fd < 0) {
    // Keep writing to the old file rather than losing events.
    spdlog::warn("event log: cannot reopen {}: {}; still writing to the old file", path_,
                 strerror(errno));
    return;
  }
  ::close(fd_);
  fd_ = fd;
}

void EventLog::WriteBatch(std::vector<std::string>& batch) {
  if (batch.empty()) {
    return;
  }
  out_.clear();
  for (const std::string& line : batch) {
    out_ += line;
  }
  size_t done = 0;
  while (done < out_.size()) {
    const ssize_t n = ::write(fd_, out_.data() + done, out_.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    done += static_cast<size_t>(n);
  }
  // Count whole lines: a line cut by a failed write counts as dropped.
  uint64_t ok_lines = 0;
  size_t offset = 0;
  for (const std::string& line : batch) {
    offset += line.size();
    if (offset > done) {
      break;
    }
    ++ok_lines;
  }
  written_.fetch_add(ok_lines, std::memory_order_relaxed);
  if (written_metric_ != nullptr) {
    written_metric_->Inc(options_.metrics->other_thread(), ok_lines);
  }
  if (ok_lines < batch.size()) {
    const int err = errno;
    CountDropped(batch.size() - ok_lines);
    // Rate-limited: a full disk must not flood the human log.
    if (write_errors_++ % 1000 == 0) {
      spdlog::error("event log: write to {} failed: {}; {} events lost", path_, strerror(err),
                    batch.size() - ok_lines);
    }
  }
  if (out_.capacity() > (4u << 20)) {
    std::string().swap(out_);  // do not keep a burst's buffer forever
  }
}

}  // namespace sluice::metrics
