// The owner's per-message state machine in virtual time: a ManualClock stands for the shard's
// clock, and a "restart" is the envelope going through the spool's encoding and back.
#include "delivery/message_state.h"

#include <gtest/gtest.h>

#include "base/clock.h"
#include "smtp/params.h"

namespace sluice::delivery {
namespace {

using std::chrono::seconds;
constexpr uint64_t kSecond = kMicrosPerSecond;

const smtp::Reply kOk = smtp::MakeReply(250, "2.0.0", "queued as X");
const smtp::Reply kLater = smtp::MakeReply(451, "4.4.1", "try later");
const smtp::Reply kNoUser = smtp::MakeReply(550, "5.1.1", "no such user");
const MessageState::Attempt kRelayed{"mx.example[192.0.2.1]:25", false, false};

class MessageStateTest : public ::testing::Test {
 protected:
  MessageStateTest() {
    config_.retry_initial = seconds(300);
    config_.retry_max = seconds(3600);
    config_.max_age = seconds(5 * 86400);
  }

  // A message as the gateway queues it at the clock's current time.
  queue::Envelope Queued(std::vector<std::string> recipients,
                         std::string sender = "a@example.com") {
    queue::Envelope env;
    env.sender = std::move(sender);
    for (std::string& r : recipients) {
      env.recipients.push_back({std::move(r), 0, "", queue::RecipientState::kPending, 0, ""});
    }
    env.received_at_us = clock_.WallMicros();
    env.next_due_us = env.received_at_us;
    env.expires_at_us =
        env.received_at_us + static_cast<uint64_t>(config_.max_age.count()) * kSecond;
    return env;
  }
  uint64_t Now() const {
    return clock_.WallMicros();
  }
  // One round in which every pending recipient gets `reply`; then the retry, as MessageOwner
  // schedules it (jitter 1 here).
  MessageState::RoundEnd Round(MessageState& m, const smtp::Reply& reply) {
    m.Begin();
    for (size_t i : m.PendingRecipients())
      m.Record(i, reply, kRelayed, "example");
    MessageState::RoundEnd end = m.End();
    if (end.pending)
      m.Retry(Now(), RetryDelayMicros(config_, m.envelope().attempts, 1.0));
    m.Finish();
    return end;
  }

  DeliveryConfig config_;
  ManualClock clock_;
};

TEST_F(MessageStateTest, NewMessageIsDueAtOnce) {
  MessageState m({1, 1}, Queued({"b@example.net"}));
  EXPECT_TRUE(m.HasPending());
  EXPECT_EQ(m.DelayUntilDue(Now()), 0u);
  EXPECT_FALSE(m.Expired(Now()));
}

TEST_F(MessageStateTest, RetriesBackOffDoublingUpToTheCap) {
  MessageState m({1, 1}, Queued({"b@example.net"}));
  const std::vector<uint64_t> expected = {300, 600, 1200, 2400, 3600, 3600};
  for (size_t round = 0; round < expected.size(); ++round) {
    const MessageState::RoundEnd end = Round(m, kLater);
    EXPECT_TRUE(end.pending);
    EXPECT_TRUE(end.notices.empty());  // a deferral is not reported (no DELAY DSNs)
    EXPECT_EQ(m.envelope().attempts, round + 1);
    EXPECT_EQ(m.envelope().recipients[0].attempts, round + 1);
    EXPECT_EQ(m.envelope().recipients[0].last_reply, "451 4.4.1 try later");
    EXPECT_EQ(m.DelayUntilDue(Now()), expected[round] * kSecond) << "round " << round;
    // Not due a second early; due at the time.
    clock_.Advance(seconds(expected[round] - 1));
    EXPECT_EQ(m.DelayUntilDue(Now()), kSecond);
    clock_.Advance(seconds(1));
    EXPECT_EQ(m.DelayUntilDue(Now()), 0u);
  }
}

TEST_F(MessageStateTest, ExpiresAtMaxAgeWithTheLastErrorInTheReport) {
  MessageState m({1, 1}, Queued({"b@example.net", "c@example.net"}));
  Round(m, kLater);
  clock_.Advance(seconds(5 * 86400 - 1));
  EXPECT_FALSE(m.Expired(Now()));
  clock_.Advance(seconds(1));
  ASSERT_TRUE(m.Expired(Now()));
  const std::vector<size_t> expired = m.Expire(Now());
  EXPECT_EQ(expired, (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(m.in_round());
  const MessageState::RoundEnd end = m.End();
  EXPECT_FALSE(end.pending);
  ASSERT_EQ(end.notices.size(), 2u);
  EXPECT_EQ(end.notices[0].status, "4.4.7");  // RFC 3463: delivery time expired
  EXPECT_EQ(end.notices[0].action, DsnAction::kFailed);
  EXPECT_EQ(end.notices[0].diagnostic,
            "message expired after 5 days in the queue; last error: 451 4.4.1 try later");
  EXPECT_EQ(m.envelope().recipients[1].state, queue::RecipientState::kBounced);
}

TEST_F(MessageStateTest, ExpiryIsNotReportedToWhoeverAskedForNoReport) {
  queue::Envelope env = Queued({"b@example.net", "c@example.net"});
  env.recipients[0].notify = smtp::kNotifyNever;
  MessageState m({1, 1}, std::move(env));
  clock_.Advance(seconds(5 * 86400));
  EXPECT_EQ(m.Expire(Now()).size(), 2u);  // both expire
  const MessageState::RoundEnd end = m.End();
  ASSERT_EQ(end.notices.size(), 1u);  // only one is reported
  EXPECT_EQ(end.notices[0].rcpt, 1u);
}

TEST_F(MessageStateTest, MixedRepliesSettleEachRecipient) {
  MessageState m({1, 1}, Queued({"ok@x.example", "nouser@x.example", "busy@x.example"}));
  m.Begin();
  EXPECT_EQ(m.Record(0, kOk, kRelayed, "x.example"), Outcome::kDelivered);
  EXPECT_EQ(m.Record(1, kNoUser, kRelayed, "x.example"), Outcome::kBounced);
  EXPECT_EQ(m.Record(2, kLater, kRelayed, "x.example"), Outcome::kDeferred);
  ASSERT_EQ(m.deferrals().size(), 1u);
  EXPECT_EQ(m.deferrals()[0].rcpt, 2u);
  EXPECT_EQ(m.deferrals()[0].code, 451);
  const MessageState::RoundEnd end = m.End();
  EXPECT_TRUE(end.pending);
  EXPECT_EQ(m.PendingRecipients(), (std::vector<size_t>{2}));
  ASSERT_EQ(end.notices.size(), 1u);  // default NOTIFY: failures only
  EXPECT_EQ(end.notices[0].rcpt, 1u);
  EXPECT_EQ(end.notices[0].status, "5.1.1");
  EXPECT_EQ(end.notices[0].remote, "mx.example");
  m.Finish();
  EXPECT_TRUE(m.deferrals().empty());
}

TEST_F(MessageStateTest, SuccessIsReportedOnlyWhenAskedAndNotCarriedOn) {
  queue::Envelope env = Queued({"b@example.net", "c@example.net"});
  env.recipients[0].notify = smtp::kNotifySuccess;
  env.recipients[1].notify = smtp::kNotifySuccess;
  MessageState m({1, 1}, std::move(env));
  m.Begin();
  m.Record(0, kOk, {"maildir:/m", true, false}, "local");      // final delivery: "delivered"
  m.Record(1, kOk, {"mx[192.0.2.1]:25", false, true}, "net");  // the next hop reports
  const MessageState::RoundEnd end = m.End();
  EXPECT_FALSE(end.pending);
  ASSERT_EQ(end.notices.size(), 1u);
  EXPECT_EQ(end.notices[0].action, DsnAction::kDelivered);
}

TEST_F(MessageStateTest, NeverReportsOnAReport) {
  MessageState m({1, 1}, Queued({"a@example.com"}, /*sender=*/""));
  m.Begin();
  m.Record(0, kNoUser, kRelayed, "example.com");
  const MessageState::RoundEnd end = m.End();
  EXPECT_TRUE(end.double_bounce);
  EXPECT_TRUE(end.notices.empty());
  EXPECT_FALSE(end.pending);
}

TEST_F(MessageStateTest, UnreportedFailuresArePendingAgain) {
  MessageState m({1, 1}, Queued({"b@example.net", "c@example.net"}));
  m.Begin();
  m.Record(0, kNoUser, kRelayed, "example.net");
  m.Record(1, kOk, kRelayed, "example.net");
  MessageState::RoundEnd end = m.End();
  EXPECT_FALSE(end.pending);
  // The bounce could not be queued: the failure is not final until it is reported.
  m.Unreport(end.notices);
  EXPECT_EQ(m.PendingRecipients(), (std::vector<size_t>{0}));
  EXPECT_EQ(m.envelope().recipients[1].state, queue::RecipientState::kDelivered);
}

TEST_F(MessageStateTest, DueTimeSurvivesARestart) {
  MessageState m({1, 1}, Queued({"b@example.net", "c@example.net"}));
  m.Begin();
  m.Record(0, kOk, kRelayed, "example.net");
  m.Record(1, kLater, kRelayed, "example.net");
  m.End();
  m.Retry(Now(), 600 * kSecond);
  m.Finish();
  const std::string stored = queue::EncodeEnvelope(m.envelope());

  // Down for 100 s: the monotonic clock starts over, the wall clock does not.
  clock_.Advance(seconds(100));
  Result<queue::Envelope> decoded = queue::DecodeEnvelope(stored);
  ASSERT_TRUE(decoded.ok());
  MessageState recovered({1, 1}, std::move(*decoded));
  EXPECT_EQ(recovered.DelayUntilDue(Now()), 500 * kSecond);
  EXPECT_EQ(recovered.PendingRecipients(),
            (std::vector<size_t>{1}));  // the delivered one stays done
  EXPECT_EQ(recovered.envelope().attempts, 1u);

  // Down past the due time: due at once, never "in the past".
  clock_.Advance(seconds(3600));
  EXPECT_EQ(recovered.DelayUntilDue(Now()), 0u);
  // A wall clock stepped back (NTP) only delays the attempt by the step.
  clock_.SetWall(Now() - 4000 * kSecond);
  EXPECT_GT(recovered.DelayUntilDue(Now()), 0u);
}

}  // namespace
}  // namespace sluice::delivery
