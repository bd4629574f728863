#include "queue/spool.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <rocksdb/file_system.h>
#include <sys/wait.h>

#include "base/log.h"
#include "base/temp_dir.h"
#include "base/wait_for.h"
#include "queue/detail/spool_db.h"
#include "queue/testing/test_messages.h"

extern char** environ;

namespace sluice::queue {
namespace {

using namespace std::chrono_literals;

using sluice::TempDir;

// Collects completions; waits with a deadline, never sleeps.
class TestSink final : public CompletionSink {
 public:
  void OnCommitted(uint64_t token, CommitStatus status) override {
    std::lock_guard lock(mu_);
    results_.emplace(token, status);
    ++calls_;
    cv_.notify_all();
  }

  bool WaitFor(size_t n, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return calls_ >= n; });
  }

  std::map<uint64_t, CommitStatus> results() {
    std::lock_guard lock(mu_);
    return results_;
  }
  size_t calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, CommitStatus> results_;
  size_t calls_ = 0;
};

SpoolOptions Options(const std::string& path) {
  SpoolOptions options;
  options.path = path;
  return options;
}

std::unique_ptr<Spool> OpenOrDie(const SpoolOptions& options) {
  Result<std::unique_ptr<Spool>> spool = Spool::Open(options);
  SLUICE_CHECK(spool.ok());
  return std::move(*spool);
}

using testing::MakeBody;
using testing::MakeEnvelope;

struct Stored {
  Envelope envelope;
  std::string body;
};

std::map<MessageId, Stored> ReadAll(Spool& spool) {
  std::map<MessageId, Stored> all;
  Result<void> r = spool.ForEach([&](const MessageId& id, const Envelope& e) {
    Result<std::string> body = spool.ReadBody(id);
    SLUICE_CHECK(body.ok());
    all[id] = Stored{e, std::move(*body)};
    return true;
  });
  SLUICE_CHECK(r.ok());
  return all;
}

TEST(SpoolTest, ConcurrentEnqueueIsDurableAndRecoveredByteExact) {
  TempDir dir;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 400;
  std::map<MessageId, Stored> expected;
  std::mutex expected_mu;
  TestSink sink;
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    EXPECT_EQ(spool->recovered_messages(), 0u);
    EXPECT_TRUE(spool->healthy());
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        MessageIdGenerator gen(1, static_cast<uint16_t>(t));
        for (int i = 0; i < kPerThread; ++i) {
          const uint64_t token = static_cast<uint64_t>(t) * kPerThread + i;
          const MessageId id = gen.Next();
          Envelope e = MakeEnvelope(token);
          // Sizes on both sides of min_blob_size (4096), up to 64 KiB.
          std::string body = MakeBody(token, (token * 7919) % (64 << 10));
          {
            std::lock_guard lock(expected_mu);
            expected[id] = Stored{e, body};
          }
          ASSERT_EQ(spool->Enqueue(id, EncodeEnvelope(e), std::move(body), &sink, token),
                    Admit::kAccepted);
        }
      });
    }
    for (std::thread& th : threads)
      th.join();
    ASSERT_TRUE(sink.WaitFor(kThreads * kPerThread));
    std::map<uint64_t, CommitStatus> results = sink.results();
    ASSERT_EQ(results.size(), static_cast<size_t>(kThreads * kPerThread));
    for (const auto& [token, status] : results)
      EXPECT_EQ(status, CommitStatus::kOk) << token;
    const SpoolStats stats = spool->stats();
    EXPECT_EQ(stats.committed_messages, static_cast<uint64_t>(kThreads * kPerThread));
    EXPECT_EQ(stats.pending_messages, 0u);
    EXPECT_EQ(stats.pending_bytes, 0u);
    EXPECT_GE(stats.batches, 1u);
    // Visible through the open spool once completed.
    EXPECT_EQ(ReadAll(*spool).size(), expected.size());
  }
  EXPECT_EQ(sink.calls(), static_cast<size_t>(kThreads * kPerThread)) << "exactly one per token";

  std::unique_ptr<Spool> reopened = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(reopened->recovered_messages(), expected.size());
  std::map<MessageId, Stored> found = ReadAll(*reopened);
  ASSERT_EQ(found.size(), expected.size());
  for (const auto& [id, want] : expected) {
    auto it = found.find(id);
    ASSERT_NE(it, found.end()) << id.ToString();
    EXPECT_EQ(it->second.envelope, want.envelope) << id.ToString();
    EXPECT_TRUE(it->second.body == want.body) << id.ToString();
    Result<Envelope> e = reopened->ReadEnvelope(id);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(*e, want.envelope);
  }
}

TEST(SpoolTest, ForEachIsInIdOrderAndStopsEarly) {
  TempDir dir;
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  TestSink sink;
  std::vector<MessageId> ids;
  for (uint64_t i = 0; i < 50; ++i) {
    // Enqueued out of order.
    const MessageId id{1000 + (i * 37) % 50, i};
    ids.push_back(id);
    ASSERT_EQ(spool->Enqueue(id, EncodeEnvelope(MakeEnvelope(i)), "b", &sink, i), Admit::kAccepted);
  }
  ASSERT_TRUE(sink.WaitFor(50));
  std::sort(ids.begin(), ids.end());
  std::vector<MessageId> seen;
  ASSERT_TRUE(spool
                  ->ForEach([&](const MessageId& id, const Envelope&) {
                    seen.push_back(id);
                    return true;
                  })
                  .ok());
  EXPECT_EQ(seen, ids);
  seen.clear();
  ASSERT_TRUE(spool
                  ->ForEach([&](const MessageId& id, const Envelope&) {
                    seen.push_back(id);
                    return seen.size() < 3;
                  })
                  .ok());
  EXPECT_EQ(seen.size(), 3u);
}

TEST(SpoolTest, AuditQuarantinesUnreadableRecordsAndCorrectsTheCounters) {
  TempDir dir;
  TestSink sink;
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    for (uint64_t i = 1; i <= 3; ++i) {
      ASSERT_EQ(spool->Enqueue({20, i}, EncodeEnvelope(MakeEnvelope(i)), MakeBody(i, 50), &sink, i),
                Admit::kAccepted);
    }
    ASSERT_TRUE(sink.WaitFor(3));
  }
  {
    // What a bug or a damaged disk could leave: an envelope that does not decode, and a key that
    // is not a message id.
    auto db = detail::SpoolDb::Open(dir.spool(), detail::SpoolDb::Mode::kReadWrite, nullptr, "");
    ASSERT_TRUE(db.ok()) << db.error().message;
    const auto key = MessageId{20, 2}.Key();
    ASSERT_TRUE((*db)
                    ->db()
                    ->Put({}, (*db)->meta(), rocksdb::Slice(key.data(), key.size()), "\xff garbage")
                    .ok());
    ASSERT_TRUE((*db)->db()->Put({}, (*db)->meta(), "short", "x").ok());
  }
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(spool->quarantined_messages(), 0u);
  EXPECT_EQ(spool->counts().messages(), 3u);  // as counted when they were queued
  Result<Spool::AuditReport> report = spool->Audit();
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->quarantined, 2u);
  EXPECT_EQ(report->messages, 2u);
  EXPECT_EQ(report->indexed, 0u);
  std::vector<MessageId> good;
  ASSERT_TRUE(spool
                  ->ForEach([&](const MessageId& id, const Envelope& e) {
                    EXPECT_EQ(e, MakeEnvelope(id.counter()));
                    good.push_back(id);
                    return true;
                  })
                  .ok());
  EXPECT_EQ(good, (std::vector<MessageId>{{20, 1}, {20, 3}}));
  EXPECT_EQ(spool->quarantined_messages(), 2u);
  // The record that became unreadable was counted; the recount took it out.
  ASSERT_TRUE(WaitFor([&] { return spool->counts().messages() == 2; }, 10s));
  // Gone from the queue, body included; kept in the quarantine.
  EXPECT_EQ(spool->ReadEnvelope({20, 2}).error().code, ENOENT);
  EXPECT_EQ(spool->ReadBody({20, 2}).error().code, ENOENT);
  spool->Shutdown();
  Result<std::unique_ptr<SpoolReader>> reader = SpoolReader::Open(dir.spool());
  ASSERT_TRUE(reader.ok());
  std::vector<QuarantinedRecord> set_aside;
  ASSERT_TRUE((*reader)
                  ->ForEachQuarantined([&](const QuarantinedRecord& r) {
                    set_aside.push_back(r);
                    return true;
                  })
                  .ok());
  ASSERT_EQ(set_aside.size(), 2u);
  const QuarantinedRecord& bad = set_aside[0].id() ? set_aside[0] : set_aside[1];
  EXPECT_EQ(bad.Name(), (MessageId{20, 2}).ToString());
  EXPECT_EQ(bad.meta, "\xff garbage");
  EXPECT_TRUE(bad.has_body);
  EXPECT_EQ(bad.body, MakeBody(2, 50));
  EXPECT_NE(bad.reason.find("envelope does not decode"), std::string::npos) << bad.reason;
  auto by_name = (*reader)->ReadQuarantined("x73686f7274");  // "short"
  ASSERT_TRUE(by_name.ok()) << by_name.error().message;
  EXPECT_FALSE(by_name->has_body);
  // A second start finds nothing new to set aside.
  std::unique_ptr<Spool> again = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(again->quarantined_messages(), 2u);
  EXPECT_EQ(again->counts().messages(), 2u);
  EXPECT_EQ(again->Audit()->quarantined, 0u);
}

// The schedule index and the counters follow every change, in the same batch.
Envelope DueAt(uint64_t n, uint64_t due_us, const std::string& domain = "example.com") {
  Envelope e = MakeEnvelope(n);
  e.recipients[0].address = "rcpt" + std::to_string(n) + "@" + domain;
  e.next_due_us = due_us;
  return e;
}

std::vector<std::pair<uint64_t, MessageId>> ScanAll(Spool& spool, uint16_t prefix = 0) {
  DueQuery q;
  q.prefix = prefix;
  q.until_due_us = UINT64_MAX;
  q.limit = 1000;
  Result<DueScan> scan = spool.ScanDue(q);
  SLUICE_CHECK(scan.ok());
  std::vector<std::pair<uint64_t, MessageId>> out;
  for (const DueMessage& m : scan->messages)
    out.emplace_back(m.due_us, m.id);
  return out;
}

TEST(SpoolTest, ScheduleIndexAndCountersFollowEveryChange) {
  TempDir dir;
  TestSink sink;
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    EXPECT_TRUE(spool->indexed());
    ASSERT_EQ(spool->Enqueue({30, 1}, EncodeEnvelope(DueAt(1, 300)), "b1", &sink, 1),
              Admit::kAccepted);
    ASSERT_EQ(
        spool->Enqueue({30, 2}, EncodeEnvelope(DueAt(2, 100, "other.example")), "b2", &sink, 2),
        Admit::kAccepted);
    ASSERT_EQ(spool->Enqueue({30, 3}, EncodeEnvelope(DueAt(3, 200)), "b3", &sink, 3),
              Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(3));
    using Due = std::vector<std::pair<uint64_t, MessageId>>;
    EXPECT_EQ(ScanAll(*spool), (Due{{100, {30, 2}}, {200, {30, 3}}, {300, {30, 1}}}));
    QueueCounts counts = spool->counts();
    EXPECT_EQ(counts.scheduled, 3u);
    EXPECT_EQ(counts.deferred, 0u);
    EXPECT_EQ(counts.domains["example.com"].messages, 2u);
    EXPECT_EQ(counts.domains["other.example"].messages, 1u);

    // A retry moves the key and makes the message deferred; a removal takes all of it away.
    Envelope retried = DueAt(2, 500, "other.example");
    retried.attempts = 1;
    spool->UpdateEnvelope({30, 2}, EncodeEnvelope(retried));
    const uint64_t seq = spool->Remove({30, 3});
    EXPECT_GT(seq, 0u);
    ASSERT_TRUE(WaitFor([&] { return spool->applied_seq() >= seq; }));
    EXPECT_EQ(ScanAll(*spool), (Due{{300, {30, 1}}, {500, {30, 2}}}));
    counts = spool->counts();
    EXPECT_EQ(counts.scheduled, 1u);
    EXPECT_EQ(counts.deferred, 1u);
    EXPECT_EQ(counts.domains["example.com"].messages, 1u);
    EXPECT_EQ(counts.domains["other.example"].messages, 1u);
    // Removing what is gone changes nothing.
    const uint64_t again = spool->Remove({30, 3});
    ASSERT_TRUE(WaitFor([&] { return spool->applied_seq() >= again; }));
    EXPECT_EQ(spool->counts().messages(), 2u);
  }
  // The counters are in the spool: a restart knows them without reading an envelope.
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(spool->recovered_messages(), 2u);
  const QueueCounts counts = spool->counts();
  EXPECT_EQ(counts.scheduled, 1u);
  EXPECT_EQ(counts.deferred, 1u);
  EXPECT_EQ(ScanAll(*spool).size(), 2u);
  // And sluicectl reads the same numbers without the daemon's help.
  spool->Shutdown();
  Result<std::unique_ptr<SpoolReader>> reader = SpoolReader::Open(dir.spool());
  ASSERT_TRUE(reader.ok());
  bool indexed = false;
  Result<QueueCounts> read = (*reader)->Counts(&indexed);
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(indexed);
  EXPECT_EQ(read->deferred, 1u);
  EXPECT_EQ(read->domains.at("other.example").messages, 1u);
}

TEST(SpoolTest, ScanDueStopsAtTheLimitAndAtTheDueTime) {
  TempDir dir;
  TestSink sink;
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  for (uint64_t i = 1; i <= 5; ++i) {
    ASSERT_EQ(spool->Enqueue({40, i}, EncodeEnvelope(DueAt(i, i * 10)), "b", &sink, i),
              Admit::kAccepted);
  }
  ASSERT_TRUE(sink.WaitFor(5));
  DueQuery q;
  q.until_due_us = 35;
  q.limit = 2;
  Result<DueScan> first = spool->ScanDue(q);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->messages.size(), 2u);
  EXPECT_EQ(first->messages[0].envelope, DueAt(1, 10));
  EXPECT_FALSE(first->exhausted);
  EXPECT_EQ(first->resume.due_us, 30u);
  q.from_due_us = first->resume.due_us;
  q.from_id = first->resume.id;
  Result<DueScan> second = spool->ScanDue(q);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->messages.size(), 1u);
  EXPECT_EQ(second->messages[0].id, (MessageId{40, 3}));
  EXPECT_TRUE(second->exhausted);
  EXPECT_EQ(second->next_due_us, 40u);  // when to look again
  q.prefix = 1;                         // another shard's prefix: nothing
  Result<DueScan> other = spool->ScanDue(q);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->messages.empty());
  EXPECT_TRUE(other->exhausted);
  EXPECT_EQ(other->next_due_us, 0u);
}

TEST(SpoolTest, StaleScheduleKeysAreDropped) {
  TempDir dir;
  { std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool())); }
  {
    auto db = detail::SpoolDb::Open(dir.spool(), detail::SpoolDb::Mode::kReadWrite, nullptr, "");
    ASSERT_TRUE(db.ok());
    const ScheduleKey k = MakeScheduleKey(MessageId{50, 1}, 7);
    ASSERT_TRUE((*db)->db()->Put({}, (*db)->sched(), rocksdb::Slice(k.data(), k.size()), "").ok());
  }
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  EXPECT_TRUE(ScanAll(*spool).empty());
  Result<std::vector<uint16_t>> prefixes = spool->SchedulePrefixes();
  ASSERT_TRUE(prefixes.ok());
  EXPECT_EQ(*prefixes, std::vector<uint16_t>{0});
  // Dropped through the writer.
  ASSERT_TRUE(WaitFor([&] { return spool->SchedulePrefixes()->empty(); }));
}

TEST(SpoolTest, AuditIndexesASpoolMadeBeforeTheIndex) {
  TempDir dir;
  TestSink sink;
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    for (uint64_t i = 1; i <= 5; ++i) {
      ASSERT_EQ(spool->Enqueue({60, i}, EncodeEnvelope(DueAt(i, i)), "b", &sink, i),
                Admit::kAccepted);
    }
    ASSERT_TRUE(sink.WaitFor(5));
  }
  {
    // What an older sluiced left: envelopes and bodies, no index, no counters.
    auto db = detail::SpoolDb::Open(dir.spool(), detail::SpoolDb::Mode::kReadWrite, nullptr, "");
    ASSERT_TRUE(db.ok());
    for (rocksdb::ColumnFamilyHandle* family : {(*db)->sched(), (*db)->counters()}) {
      ASSERT_TRUE((*db)->db()->DropColumnFamily(family).ok());
    }
  }
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  EXPECT_FALSE(spool->indexed());
  EXPECT_EQ(spool->counts().messages(), 0u);
  EXPECT_TRUE(ScanAll(*spool).empty());
  Result<Spool::AuditReport> report = spool->Audit();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->indexed, 5u);
  EXPECT_TRUE(spool->indexed());
  ASSERT_TRUE(WaitFor([&] { return spool->counts().messages() == 5; }));
  ASSERT_TRUE(WaitFor([&] { return ScanAll(*spool).size() == 5; }));
  spool.reset();
  std::unique_ptr<Spool> again = OpenOrDie(Options(dir.spool()));
  EXPECT_TRUE(again->indexed());
  EXPECT_EQ(again->counts().messages(), 5u);
  Result<Spool::AuditReport> second = again->Audit();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->indexed, 0u);
  EXPECT_EQ(again->counts().messages(), 5u);
}

TEST(SpoolTest, UnknownIdIsAnError) {
  TempDir dir;
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  Result<Envelope> e = spool->ReadEnvelope(MessageId{1, 2});
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ENOENT);
  EXPECT_FALSE(spool->ReadBody(MessageId{1, 2}).ok());
}

TEST(SpoolTest, AdmissionBoundByMessagesReturnsFull) {
  TempDir dir;
  SpoolOptions options = Options(dir.spool());
  options.max_pending_messages = 3;
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  TestSink sink;
  spool->PauseWriterForTesting(true);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(spool->Enqueue({1, i}, "m", "b", &sink, i), Admit::kAccepted);
  }
  std::string meta = "meta3";
  std::string body = "body3";
  EXPECT_EQ(spool->Enqueue({1, 3}, std::move(meta), std::move(body), &sink, 3), Admit::kFull);
  // Refused: the caller keeps its message and may retry with it (what this test checks).
  EXPECT_EQ(meta, "meta3");  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(body, "body3");  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(spool->stats().pending_messages, 3u);
  spool->PauseWriterForTesting(false);
  ASSERT_TRUE(sink.WaitFor(3));
  // The budget is released on completion.
  EXPECT_EQ(spool->Enqueue({1, 4}, "m", "b", &sink, 4), Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(4));
  std::map<uint64_t, CommitStatus> results = sink.results();
  EXPECT_EQ(results.size(), 4u);
  EXPECT_EQ(results.count(3), 0u) << "a refused request gets no completion";
  for (const auto& [token, status] : results)
    EXPECT_EQ(status, CommitStatus::kOk);
}

TEST(SpoolTest, AdmissionBoundByBytesReturnsFullButAdmitsOneHugeMessage) {
  TempDir dir;
  SpoolOptions options = Options(dir.spool());
  options.max_pending_bytes = 1000;
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  TestSink sink;
  spool->PauseWriterForTesting(true);
  EXPECT_EQ(spool->Enqueue({1, 0}, "m", std::string(600, 'x'), &sink, 0), Admit::kAccepted);
  EXPECT_EQ(spool->Enqueue({1, 1}, "m", std::string(600, 'x'), &sink, 1), Admit::kFull);
  EXPECT_EQ(spool->Enqueue({1, 2}, "m", std::string(300, 'x'), &sink, 2), Admit::kAccepted);
  spool->PauseWriterForTesting(false);
  ASSERT_TRUE(sink.WaitFor(2));
  spool->PauseWriterForTesting(true);
  EXPECT_EQ(spool->Enqueue({1, 3}, "m", std::string(5000, 'x'), &sink, 3), Admit::kAccepted);
  spool->PauseWriterForTesting(false);
  ASSERT_TRUE(sink.WaitFor(3));
  Result<std::string> body = spool->ReadBody({1, 3});
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(body->size(), 5000u);
}

TEST(SpoolTest, SharedBodyIsStoredAndCountedAndTheCallerKeepsIt) {
  TempDir dir;
  SpoolOptions options = Options(dir.spool());
  options.max_pending_bytes = 1000;
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  TestSink sink;
  spool->PauseWriterForTesting(true);
  auto first = std::make_shared<const std::string>(std::string(600, 'a'));
  EXPECT_EQ(spool->Enqueue({2, 0}, "m0", first, &sink, 0), Admit::kAccepted);
  EXPECT_EQ(spool->stats().pending_bytes, 602u);
  auto second = std::make_shared<const std::string>(std::string(600, 'b'));
  std::string meta = "m1";
  EXPECT_EQ(spool->Enqueue({2, 1}, std::move(meta), second, &sink, 1), Admit::kFull);
  // NOLINTNEXTLINE(bugprone-use-after-move): refused, so the caller keeps it (what is tested)
  EXPECT_EQ(meta, "m1") << "refused: the caller keeps its envelope";
  EXPECT_EQ(second.use_count(), 1) << "refused: the spool holds no reference";
  spool->PauseWriterForTesting(false);
  ASSERT_TRUE(sink.WaitFor(1));
  EXPECT_EQ(first.use_count(), 1) << "committed: the spool dropped its reference";
  EXPECT_EQ(*first, std::string(600, 'a'));
  Result<std::string> body = spool->ReadBody({2, 0});
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, *first);
  EXPECT_EQ(spool->stats().pending_bytes, 0u);
}

TEST(SpoolTest, RemoveAndUpdateRideOnTheNextBatch) {
  TempDir dir;
  TestSink sink;
  const MessageId keep{10, 1};
  const MessageId gone{10, 2};
  Envelope updated = MakeEnvelope(1);
  updated.attempts = 3;
  updated.next_due_us = 99;
  updated.recipients[0].last_reply = "451 4.7.1 try later";
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    ASSERT_EQ(spool->Enqueue(keep, EncodeEnvelope(MakeEnvelope(1)), "body1", &sink, 1),
              Admit::kAccepted);
    ASSERT_EQ(spool->Enqueue(gone, EncodeEnvelope(MakeEnvelope(2)), "body2", &sink, 2),
              Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(2));
    spool->Remove(gone);
    spool->UpdateEnvelope(keep, EncodeEnvelope(updated));
    // The writer keeps queue order, so once a later enqueue completes the updates are applied.
    ASSERT_EQ(spool->Enqueue({10, 3}, EncodeEnvelope(MakeEnvelope(3)), "b3", &sink, 3),
              Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(3));
    EXPECT_EQ(spool->ReadEnvelope(gone).error().code, ENOENT);
    EXPECT_EQ(spool->ReadBody(gone).error().code, ENOENT);
    Result<Envelope> e = spool->ReadEnvelope(keep);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(*e, updated);
  }
  std::unique_ptr<Spool> reopened = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(reopened->recovered_messages(), 2u);
  EXPECT_FALSE(reopened->ReadEnvelope(gone).ok());
  Result<Envelope> e = reopened->ReadEnvelope(keep);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*e, updated);
  EXPECT_EQ(*reopened->ReadBody(keep), "body1");
}

TEST(SpoolTest, ShutdownDrainsQueuedRequestsAndRefusesNewOnes) {
  TempDir dir;
  TestSink sink;
  constexpr uint64_t kCount = 200;
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    spool->PauseWriterForTesting(true);
    for (uint64_t i = 0; i < kCount; ++i) {
      ASSERT_EQ(spool->Enqueue({5, i}, EncodeEnvelope(MakeEnvelope(i)), MakeBody(i, 100), &sink, i),
                Admit::kAccepted);
    }
    EXPECT_EQ(sink.calls(), 0u);
    spool->Shutdown();
    EXPECT_EQ(sink.calls(), kCount) << "Shutdown returns after every completion";
    for (const auto& [token, status] : sink.results())
      EXPECT_EQ(status, CommitStatus::kOk);
    EXPECT_EQ(spool->Enqueue({6, 0}, "m", "b", &sink, 999), Admit::kUnhealthy);
    EXPECT_FALSE(spool->ReadEnvelope({5, 0}).ok());
    spool->Shutdown();  // idempotent
  }
  EXPECT_EQ(sink.calls(), kCount);
  std::unique_ptr<Spool> reopened = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(reopened->recovered_messages(), kCount);
  EXPECT_EQ(*reopened->ReadBody({5, 7}), MakeBody(7, 100));
}

TEST(SpoolTest, ReaderSeesCommittedMessagesWhileSpoolIsOpen) {
  TempDir dir;
  TestSink sink;
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  for (uint64_t i = 0; i < 100; ++i) {
    ASSERT_EQ(
        spool->Enqueue({7, i}, EncodeEnvelope(MakeEnvelope(i)), MakeBody(i, i * 100), &sink, i),
        Admit::kAccepted);
  }
  ASSERT_TRUE(sink.WaitFor(100));
  Result<std::unique_ptr<SpoolReader>> reader = SpoolReader::Open(dir.spool());
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  EXPECT_EQ(*(*reader)->Count(), 100u);
  uint64_t n = 0;
  ASSERT_TRUE((*reader)
                  ->ForEach([&](const MessageId& id, const Envelope& e) {
                    EXPECT_EQ(id, (MessageId{7, n}));
                    EXPECT_EQ(e, MakeEnvelope(n));
                    ++n;
                    return true;
                  })
                  .ok());
  EXPECT_EQ(n, 100u);
  EXPECT_EQ(*(*reader)->ReadBody({7, 42}), MakeBody(42, 4200));
  EXPECT_EQ((*reader)->ReadEnvelope({8, 0}).error().code, ENOENT);
  // The spool keeps working while a reader is open.
  ASSERT_EQ(spool->Enqueue({7, 100}, "m", "b", &sink, 100), Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(101));
  EXPECT_EQ(sink.results()[100], CommitStatus::kOk);
}

TEST(SpoolTest, ReaderOfMissingSpoolFails) {
  TempDir dir;
  Result<std::unique_ptr<SpoolReader>> reader = SpoolReader::Open(dir.path() + "/nope");
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.error().code, ENOENT);
}

TEST(SpoolTest, StallLongerThanDeadlineTimesOutWithoutWriting) {
  TempDir dir;
  std::atomic<bool> stall{true};
  SpoolOptions options = Options(dir.spool());
  options.stall_deadline = 20ms;
  options.inject_stall = [&] { return stall.load(); };
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  TestSink sink;
  ASSERT_EQ(spool->Enqueue({1, 1}, "m", "b", &sink, 1), Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(1));
  EXPECT_EQ(sink.results()[1], CommitStatus::kTimedOut);
  EXPECT_TRUE(spool->healthy()) << "a stall is temporary";
  EXPECT_GE(spool->stats().stalls, 2u) << "backed off and retried before giving up";
  EXPECT_EQ(spool->stats().timed_out_messages, 1u);
  EXPECT_EQ(spool->ReadEnvelope({1, 1}).error().code, ENOENT);
  stall = false;
  ASSERT_EQ(spool->Enqueue({1, 2}, EncodeEnvelope(Envelope{}), "b", &sink, 2), Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(2));
  EXPECT_EQ(sink.results()[2], CommitStatus::kOk);
}

TEST(SpoolTest, ShortStallIsRetriedUntilItClears) {
  TempDir dir;
  std::atomic<int> stalls_left{3};
  SpoolOptions options = Options(dir.spool());
  options.inject_stall = [&] { return stalls_left.fetch_sub(1) > 0; };
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  TestSink sink;
  ASSERT_EQ(spool->Enqueue({1, 1}, EncodeEnvelope(Envelope{}), "b", &sink, 1), Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(1));
  EXPECT_EQ(sink.results()[1], CommitStatus::kOk);
  EXPECT_EQ(spool->stats().stalls, 3u);
  EXPECT_TRUE(spool->ReadEnvelope({1, 1}).ok());
}

// Fails every Sync/Fsync of files opened for writing (the WAL among them) once armed, like a disk
// returning EIO on fdatasync.
class FailingSyncFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit FailingSyncFs(const std::shared_ptr<rocksdb::FileSystem>& base)
      : rocksdb::FileSystemWrapper(base) {
  }
  static const char*
  kClassName() {  // NOLINT(readability-identifier-naming): the name RocksDB asks for
    return "FailingSyncFs";
  }
  const char* Name() const override {
    return kClassName();
  }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, &file, dbg);
    if (s.ok())
      *result = std::make_unique<File>(std::move(file), &armed_);
    return s;
  }

  void Arm(bool on) {
    armed_ = on;
  }

 private:
  class File final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> file, std::atomic<bool>* armed)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(file)), armed_(armed) {
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
      if (*armed_)
        return rocksdb::IOStatus::IOError("injected fdatasync failure");
      return FSWritableFileOwnerWrapper::Sync(options, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
      if (*armed_)
        return rocksdb::IOStatus::IOError("injected fsync failure");
      return FSWritableFileOwnerWrapper::Fsync(options, dbg);
    }

   private:
    std::atomic<bool>* armed_;
  };

  std::atomic<bool> armed_{false};
};

TEST(SpoolTest, IoErrorLatchesUnhealthy) {
  TempDir dir;
  auto fs = std::make_shared<FailingSyncFs>(rocksdb::FileSystem::Default());
  SpoolOptions options = Options(dir.spool());
  options.file_system = fs;
  TestSink sink;
  {
    std::unique_ptr<Spool> spool = OpenOrDie(options);
    ASSERT_EQ(spool->Enqueue({1, 1}, EncodeEnvelope(Envelope{}), "before", &sink, 1),
              Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(1));
    EXPECT_EQ(sink.results()[1], CommitStatus::kOk);

    fs->Arm(true);
    ASSERT_EQ(spool->Enqueue({1, 2}, EncodeEnvelope(Envelope{}), "during", &sink, 2),
              Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(2));
    EXPECT_EQ(sink.results()[2], CommitStatus::kIoError);
    EXPECT_FALSE(spool->healthy());
    EXPECT_EQ(spool->stats().failed_messages, 1u);
    EXPECT_EQ(spool->Enqueue({1, 3}, "m", "b", &sink, 3), Admit::kUnhealthy);
    spool->Remove({1, 1});  // ignored, must not crash
    // The committed message is still readable.
    EXPECT_EQ(*spool->ReadBody({1, 1}), "before");
    spool->Shutdown();
    fs->Arm(false);
  }
  EXPECT_EQ(sink.calls(), 2u);
  std::unique_ptr<Spool> reopened = OpenOrDie(Options(dir.spool()));
  EXPECT_TRUE(reopened->healthy());
  EXPECT_EQ(*reopened->ReadBody({1, 1}), "before");
}

TEST(SpoolTest, IoErrorReopensByItselfAndHandsOnWhatTurnedOutDurable) {
  TempDir dir;
  auto fs = std::make_shared<FailingSyncFs>(rocksdb::FileSystem::Default());
  SpoolOptions options = Options(dir.spool());
  options.file_system = fs;
  options.min_free_bytes = 1 << 20;
  TestSink sink;
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  std::mutex mu;
  std::vector<MessageId> handed_on;
  spool->SetRecoveredHandler([&](const MessageId& id, const Envelope&) {
    std::lock_guard lock(mu);
    handed_on.push_back(id);
  });
  ASSERT_EQ(spool->Enqueue({2, 1}, EncodeEnvelope(MakeEnvelope(1)), "one", &sink, 1),
            Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(1));
  fs->Arm(true);
  // The WAL append goes through, its fdatasync fails: the client gets 451, yet the record is in
  // the log.
  ASSERT_EQ(spool->Enqueue({2, 2}, EncodeEnvelope(MakeEnvelope(2)), "two", &sink, 2),
            Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(2));
  EXPECT_EQ(sink.results()[2], CommitStatus::kIoError);
  EXPECT_FALSE(spool->healthy());
  spool->Remove({2, 1});  // kept until the reopen
  fs->Arm(false);
  // No restart: the writer reopens the DB by itself (every kReopenInterval).
  // healthy() turns true just before the writer hands on what the reopened DB holds: wait for
  // both.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::lock_guard lock(mu);
        return spool->healthy() && !handed_on.empty();
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(spool->stats().reopens, 1u);
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(handed_on, (std::vector<MessageId>{{2, 2}}));
  }
  EXPECT_EQ(*spool->ReadBody({2, 2}), "two");
  ASSERT_EQ(spool->Enqueue({2, 3}, EncodeEnvelope(MakeEnvelope(3)), "three", &sink, 3),
            Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(3));
  EXPECT_EQ(sink.results()[3], CommitStatus::kOk);
  // The removal that waited was written after the reopen.
  EXPECT_EQ(spool->ReadBody({2, 1}).error().code, ENOENT);
}

TEST(SpoolTest, UpdateOfARemovedMessageDoesNotRecreateIt) {
  TempDir dir;
  TestSink sink;
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  ASSERT_EQ(spool->Enqueue({4, 1}, EncodeEnvelope(MakeEnvelope(1)), "one", &sink, 1),
            Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(1));
  spool->PauseWriterForTesting(true);  // both in one batch
  spool->Remove({4, 1});
  spool->UpdateEnvelope({4, 1}, EncodeEnvelope(MakeEnvelope(2)));
  spool->PauseWriterForTesting(false);
  // A synced enqueue after them: once it completes, both went through the writer.
  ASSERT_EQ(spool->Enqueue({4, 2}, EncodeEnvelope(MakeEnvelope(3)), "two", &sink, 2),
            Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(2));
  EXPECT_EQ(spool->ReadEnvelope({4, 1}).error().code, ENOENT);  // no envelope without a body
  EXPECT_EQ(spool->ReadBody({4, 1}).error().code, ENOENT);
  EXPECT_EQ(spool->stats().dropped_updates, 1u);
}

TEST(SpoolTest, BelowMinFreeNewMailIsRefusedWithoutWriting) {
  TempDir dir;
  SpoolOptions options = Options(dir.spool());
  options.min_free_bytes = uint64_t{1} << 60;  // no file system has that much
  TestSink sink;
  std::unique_ptr<Spool> spool = OpenOrDie(options);
  EXPECT_TRUE(spool->disk_low());
  ASSERT_EQ(spool->Enqueue({3, 1}, EncodeEnvelope(MakeEnvelope(1)), "one", &sink, 1),
            Admit::kAccepted);
  ASSERT_TRUE(sink.WaitFor(1));
  EXPECT_EQ(sink.results()[1], CommitStatus::kNoSpace);
  EXPECT_EQ(spool->ReadEnvelope({3, 1}).error().code, ENOENT);
  const SpoolStats stats = spool->stats();
  EXPECT_EQ(stats.no_space_messages, 1u);
  EXPECT_TRUE(stats.disk_low);
  EXPECT_GT(stats.free_bytes, 0u);
  EXPECT_TRUE(spool->healthy());  // nothing failed: RocksDB never saw the lack of space
}

// --- crash: kill -9 while enqueuing, then every acknowledged message must be there -------------

// Moves fd to a number >= 10 with close-on-exec set, so dup2 onto 3 in the child cannot collide.
int HighCloexecFd(int fd) {
  const int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
  SLUICE_CHECK(high >= 0);
  close(fd);
  return high;
}

TEST(SpoolCrashTest, KillNineLosesNoAcknowledgedMessage) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  fds[0] = HighCloexecFd(fds[0]);
  fds[1] = HighCloexecFd(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on fd 3 only; both original ends close at exec.
  posix_spawn_file_actions_adddup2(&actions, fds[1], 3);
  // meson passes the child program's path (queue/meson.build).
  const char* child_env = std::getenv("SLUICE_SPOOL_CRASH_CHILD");
  ASSERT_NE(child_env, nullptr) << "run through meson test: SLUICE_SPOOL_CRASH_CHILD is unset";
  std::string child = child_env;
  std::string spool_dir = dir.spool();
  char* argv[] = {child.data(), spool_dir.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, child.c_str(), &actions, nullptr, argv, environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);

  std::vector<uint64_t> acked;
  uint64_t token = 0;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (acked.size() < 3000 && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fds[0], POLLIN, 0};
    if (poll(&pfd, 1, 100) <= 0)
      continue;
    if (read(fds[0], &token, sizeof token) != sizeof token)
      break;
    acked.push_back(token);
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  // Acknowledgements written before the kill are still in the pipe.
  while (read(fds[0], &token, sizeof token) == sizeof token)
    acked.push_back(token);
  close(fds[0]);
  ASSERT_GE(acked.size(), 3000u) << "child died early";

  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  EXPECT_GE(spool->recovered_messages(), acked.size());
  for (uint64_t t : acked) {
    Result<Envelope> e = spool->ReadEnvelope({t + 1, 0});
    ASSERT_TRUE(e.ok()) << "acknowledged message " << t << " lost";
    EXPECT_EQ(*e, MakeEnvelope(t));
    Result<std::string> body = spool->ReadBody({t + 1, 0});
    ASSERT_TRUE(body.ok());
    EXPECT_TRUE(*body == MakeBody(t, 512 + t % 8192)) << t;
  }
}

TEST(SpoolTest, CommitWritesABounceAndRemovesTheOriginalAtomically) {
  TempDir dir;
  TestSink sink;
  const MessageId original{10, 1};
  const MessageId bounce{11, 1};
  const MessageId updated{12, 1};
  {
    std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
    ASSERT_EQ(spool->Enqueue(original, EncodeEnvelope(MakeEnvelope(1)), "original", &sink, 1),
              Admit::kAccepted);
    ASSERT_EQ(spool->Enqueue(updated, EncodeEnvelope(MakeEnvelope(2)), "keep", &sink, 2),
              Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(2));
    std::vector<Spool::Change> changes(3);
    changes[0].kind = Spool::Change::Kind::kPut;
    changes[0].id = bounce;
    changes[0].meta = EncodeEnvelope(MakeEnvelope(3));
    changes[0].body = "the bounce";
    changes[1].kind = Spool::Change::Kind::kRemove;
    changes[1].id = original;
    changes[2].kind = Spool::Change::Kind::kUpdateEnvelope;
    changes[2].id = updated;
    changes[2].meta = EncodeEnvelope(MakeEnvelope(4));
    ASSERT_EQ(spool->Commit(std::move(changes), &sink, 3), Admit::kAccepted);
    ASSERT_TRUE(sink.WaitFor(3));
    EXPECT_EQ(sink.results()[3], CommitStatus::kOk);
  }
  // Durable: visible after reopening.
  std::unique_ptr<Spool> spool = OpenOrDie(Options(dir.spool()));
  EXPECT_EQ(*spool->ReadBody(bounce), "the bounce");
  EXPECT_EQ(*spool->ReadEnvelope(bounce), MakeEnvelope(3));
  EXPECT_EQ(spool->ReadEnvelope(original).error().code, ENOENT);
  EXPECT_EQ(spool->ReadBody(original).error().code, ENOENT);
  EXPECT_EQ(*spool->ReadEnvelope(updated), MakeEnvelope(4));
  EXPECT_EQ(*spool->ReadBody(updated), "keep");
}

}  // namespace
}  // namespace sluice::queue
