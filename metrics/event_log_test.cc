#include "metrics/event_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "base/temp_dir.h"
#include "base/wait_for.h"
#include "metrics/registry.h"

namespace sluice::metrics {
namespace {

using std::chrono::system_clock;

system_clock::time_point Ts(int64_t micros) {
  return system_clock::time_point(std::chrono::microseconds(micros));
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
  }
  return lines;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every line parses as JSON, checked by an independent parser (Python's json module).
void ExpectJsonLines(const std::string& path) {
  const std::string command =
      "python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1], "
      "encoding=\"utf-8\")]' " +
      path;
  EXPECT_EQ(std::system(command.c_str()), 0) << "invalid JSON line in " << path;
}

using sluice::WaitFor;

TEST(EventTest, TimestampAndTypeComeFirst) {
  // 2024-05-01T12:34:56.000123Z
  const Event e("delivery", Ts(1714566896000123));
  EXPECT_EQ(e.ToJson(), R"({"ts":"2024-05-01T12:34:56.000123Z","event":"delivery"})");
  EXPECT_EQ(Event::FormatTimestamp(Ts(0)), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(Event::FormatTimestamp(Ts(-1)), "1969-12-31T23:59:59.999999Z");
}

TEST(EventTest, FieldsKeepTheirOrderAndTypes) {
  Event e("reception", Ts(0));
  e.Str("id", "01HX")
      .Int("size", -42)
      .Num("delay", 0.25)
      .Bool("tls", true)
      .StrList("rcpt", {"a@example.org", "b@example.org"});
  e.Num("nan", std::nan("")).Int("big", INT64_MIN).StrList("none", {});
  EXPECT_EQ(e.ToJson(),
            R"({"ts":"1970-01-01T00:00:00.000000Z","event":"reception","id":"01HX","size":-42,)"
            R"("delay":0.25,"tls":true,"rcpt":["a@example.org","b@example.org"],"nan":null,)"
            R"("big":-9223372036854775808,"none":[]})");
}

TEST(EventTest, EscapesStringsPerRfc8259) {
  Event e("x", Ts(0));
  e.Str("q", "say \"hi\" \\ there");
  e.Str("ctl", "a\nb\rc\td\x01\x1f\x7f");
  e.Str("utf8", "caf\xc3\xa9 \xf0\x9f\x93\xa7");
  e.Str("bad", "\xff\xc3(\xed\xa0\x80");
  e.Str("k\"ey", "");
  EXPECT_EQ(e.ToJson(),
            "{\"ts\":\"1970-01-01T00:00:00.000000Z\",\"event\":\"x\","
            "\"q\":\"say \\\"hi\\\" \\\\ there\","
            "\"ctl\":\"a\\nb\\rc\\td\\u0001\\u001f\x7f\","
            "\"utf8\":\"caf\xc3\xa9 \xf0\x9f\x93\xa7\","
            "\"bad\":\"\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\","
            "\"k\\\"ey\":\"\"}");
}

TEST(EventLogTest, StopFlushesEverythingAsValidJsonLines) {
  TempDir dir;
  const std::string path = dir.path() + "/events.log";
  auto log = EventLog::Open(path, {.flush_interval = std::chrono::hours(1)});
  ASSERT_TRUE(log.ok()) << log.error().message;
  for (int i = 0; i < 1000; ++i) {
    (*log)->Write(std::move(Event("reception")
                                .Int("n", i)
                                .Str("from", "odd \"sender\"\n\xff")
                                .StrList("rcpt", {"x@y"})));
  }
  (*log)->Stop();  // the timer never fired: only Stop() wrote
  EXPECT_EQ((*log)->written(), 1000u);
  EXPECT_EQ((*log)->dropped(), 0u);
  const auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 1000u);
  EXPECT_NE(lines[999].find("\"n\":999"), std::string::npos);
  ExpectJsonLines(path);
  (*log)->Write(Event("late"));  // after Stop: dropped, not written
  EXPECT_EQ((*log)->dropped(), 1u);
  EXPECT_EQ(ReadLines(path).size(), 1000u);
}

TEST(EventLogTest, FlushesWithinTheIntervalWithoutStop) {
  TempDir dir;
  const std::string path = dir.path() + "/events.log";
  auto log = EventLog::Open(path, {.flush_interval = std::chrono::milliseconds(20)});
  ASSERT_TRUE(log.ok());
  (*log)->Write(Event("one"));
  EXPECT_TRUE(WaitFor([&] { return ReadLines(path).size() == 1; }));
}

TEST(EventLogTest, AppendsToAnExistingFile) {
  TempDir dir;
  const std::string path = dir.path() + "/events.log";
  std::ofstream(path) << "{\"old\":1}\n";
  auto log = EventLog::Open(path);
  ASSERT_TRUE(log.ok());
  (*log)->Write(Event("new"));
  (*log)->Stop();
  const auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "{\"old\":1}");
}

TEST(EventLogTest, OpenReportsTheFailingPath) {
  auto log = EventLog::Open("/nonexistent-dir/events.log");
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.error().message.find("/nonexistent-dir/events.log"), std::string::npos);
  EXPECT_EQ(log.error().code, ENOENT);
}

// logrotate: rename the file, then Reopen(); later events go to a new file at the path and the
// renamed file keeps the earlier ones.
TEST(EventLogTest, ReopenAfterRenameWritesToTheNewFile) {
  TempDir dir;
  const std::string path = dir.path() + "/events.log";
  auto log = EventLog::Open(path, {.flush_interval = std::chrono::milliseconds(10)});
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 3; ++i) {
    (*log)->Write(std::move(Event("before").Int("i", i)));
  }
  ASSERT_TRUE(WaitFor([&] { return (*log)->written() == 3; }));
  ASSERT_EQ(::rename(path.c_str(), (path + ".1").c_str()), 0);
  (*log)->Reopen();
  for (int i = 0; i < 2; ++i) {
    (*log)->Write(std::move(Event("after").Int("i", i)));
  }
  (*log)->Stop();
  const auto old_lines = ReadLines(path + ".1");
  const auto new_lines = ReadLines(path);
  ASSERT_EQ(old_lines.size(), 3u);
  ASSERT_EQ(new_lines.size(), 2u);
  for (const auto& l : old_lines) {
    EXPECT_NE(l.find("\"before\""), std::string::npos);
  }
  for (const auto& l : new_lines) {
    EXPECT_NE(l.find("\"after\""), std::string::npos);
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

// A writer stuck on a slow sink (here: a pipe nobody reads) must not block Write(): once the
// tiny queue is full, events are dropped and counted. Every event is either written or dropped.
TEST(EventLogTest, DropsAndCountsWhenTheQueueIsFull) {
  TempDir dir;
  const std::string fifo = dir.path() + "/events.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Open the read end first (non-blocking) so the log's open for writing does not wait.
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  Registry registry(1);
  auto log = EventLog::Open(
      fifo,
      {.max_events = 8, .flush_interval = std::chrono::milliseconds(1), .metrics = &registry});
  ASSERT_TRUE(log.ok()) << log.error().message;

  constexpr int kEvents = 2000;
  const std::string payload(1000, 'x');  // 2 MB in all, far beyond the 64 KiB pipe buffer
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kEvents; ++i) {
    (*log)->Write(std::move(Event("bulk").Int("i", i).Str("p", payload)));
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(2));  // never waited for the stuck writer
  // At most: the pipe buffer (~64 events), one batch in flight and a full queue got through.
  EXPECT_GE((*log)->dropped(), static_cast<uint64_t>(kEvents - 200));

  // Drain the pipe while stopping; Stop() closes the write end, so the reader sees EOF.
  ASSERT_EQ(::fcntl(reader, F_SETFL, 0), 0);
  std::string received;
  std::thread drain([&] {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(reader, buf, sizeof(buf))) > 0) {
      received.append(buf, static_cast<size_t>(n));
    }
  });
  (*log)->Stop();
  drain.join();
  ::close(reader);
  const auto written = (*log)->written();
  EXPECT_EQ(written + (*log)->dropped(), static_cast<uint64_t>(kEvents));
  EXPECT_EQ(static_cast<uint64_t>(std::count(received.begin(), received.end(), '\n')), written);
  const std::string scrape = registry.Scrape();
  EXPECT_NE(scrape.find("sluice_eventlog_events_dropped_total " +
                        std::to_string((*log)->dropped()) + "\n"),
            std::string::npos)
      << scrape;
  EXPECT_NE(scrape.find("sluice_eventlog_events_written_total " + std::to_string(written) + "\n"),
            std::string::npos);
}

TEST(EventLogTest, AnEventLargerThanTheByteBoundIsDropped) {
  TempDir dir;
  const std::string path = dir.path() + "/events.log";
  auto log = EventLog::Open(path, {.max_bytes = 512});
  ASSERT_TRUE(log.ok());
  (*log)->Write(std::move(Event("big").Str("p", std::string(600, 'x'))));
  (*log)->Write(Event("small"));
  (*log)->Stop();
  EXPECT_EQ((*log)->dropped(), 1u);
  EXPECT_EQ((*log)->written(), 1u);
  EXPECT_NE(ReadAll(path).find("\"small\""), std::string::npos);
}

}  // namespace
}  // namespace sluice::metrics
