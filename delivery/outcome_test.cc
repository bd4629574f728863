#include "delivery/outcome.h"

#include <gtest/gtest.h>

#include "smtp/params.h"

namespace sluice::delivery {
namespace {

constexpr uint64_t kSecond = kMicrosPerSecond;

TEST(OutcomeTest, ReplyClassDecidesTheRecipientState) {
  EXPECT_EQ(OutcomeOf(smtp::MakeReply(250, "2.0.0", "ok")), Outcome::kDelivered);
  EXPECT_EQ(OutcomeOf(smtp::MakeReply(251, "", "forwarded")), Outcome::kDelivered);
  EXPECT_EQ(OutcomeOf(smtp::MakeReply(550, "5.1.1", "no such user")), Outcome::kBounced);
  EXPECT_EQ(OutcomeOf(smtp::MakeReply(554, "", "no")), Outcome::kBounced);
  EXPECT_EQ(OutcomeOf(smtp::MakeReply(451, "4.4.1", "later")), Outcome::kDeferred);
  // Not a final reply, or no reply at all (the connection failed): tried again.
  EXPECT_EQ(OutcomeOf(smtp::MakeReply(354, "", "go ahead")), Outcome::kDeferred);
  EXPECT_EQ(OutcomeOf(smtp::Reply{}), Outcome::kDeferred);
  EXPECT_STREQ(ToString(Outcome::kDelivered), "delivered");
  EXPECT_STREQ(ToString(Outcome::kDeferred), "deferred");
  EXPECT_STREQ(ToString(Outcome::kBounced), "bounced");
}

TEST(OutcomeTest, RetryDelayDoublesUpToTheCap) {
  DeliveryConfig config;
  config.retry_initial = std::chrono::seconds(300);
  config.retry_max = std::chrono::seconds(3600);
  const std::vector<uint64_t> expected = {300, 300, 600, 1200, 2400, 3600, 3600, 3600};
  for (uint32_t attempts = 0; attempts < expected.size(); ++attempts) {
    EXPECT_EQ(RetryDelayMicros(config, attempts, 1.0), expected[attempts] * kSecond)
        << "after " << attempts << " attempts";
  }
  // No overflow however many attempts a message has had.
  EXPECT_EQ(RetryDelayMicros(config, 4'000'000'000u, 1.0), 3600 * kSecond);
}

TEST(OutcomeTest, JitterSpreadsTheDelayByTenPercent) {
  DeliveryConfig config;
  config.retry_initial = std::chrono::seconds(100);
  config.retry_max = std::chrono::seconds(1000);
  EXPECT_EQ(RetryDelayMicros(config, 1, kMinJitter), 90 * kSecond);
  EXPECT_EQ(RetryDelayMicros(config, 1, kMaxJitter), 110 * kSecond);
  // The cap is applied before the jitter: capped messages still spread out.
  EXPECT_EQ(RetryDelayMicros(config, 20, kMaxJitter), 1100 * kSecond);
}

TEST(OutcomeTest, FailureDsnFollowsNotify) {
  EXPECT_TRUE(WantsFailureDsn(0));  // RFC 3461 §4.1: absent = FAILURE,DELAY
  EXPECT_TRUE(WantsFailureDsn(smtp::kNotifyFailure));
  EXPECT_TRUE(WantsFailureDsn(smtp::kNotifyFailure | smtp::kNotifySuccess));
  EXPECT_FALSE(WantsFailureDsn(smtp::kNotifyNever));
  EXPECT_FALSE(WantsFailureDsn(smtp::kNotifySuccess));
  EXPECT_FALSE(WantsFailureDsn(smtp::kNotifyDelay));
}

TEST(OutcomeTest, SuccessDsnOnlyWhereThisRelayIsTheLastToKnow) {
  const uint8_t success = smtp::kNotifySuccess;
  // Final delivery (maildir, LMTP): "delivered", whatever the peer said.
  EXPECT_TRUE(WantsSuccessDsn(success, /*final_delivery=*/true, /*peer_dsn=*/true));
  // Relayed to a hop without DSN: "relayed".
  EXPECT_TRUE(WantsSuccessDsn(success, false, false));
  // Relayed to a hop with DSN: it reports, not us.
  EXPECT_FALSE(WantsSuccessDsn(success, false, true));
  EXPECT_FALSE(WantsSuccessDsn(0, true, false));
  EXPECT_FALSE(WantsSuccessDsn(smtp::kNotifyFailure, true, false));
}

TEST(OutcomeTest, TextHelpers) {
  EXPECT_EQ(OneLine(smtp::MakeReply(451, "4.4.1", "line one\nline two")),
            "451 4.4.1 line one line two");
  EXPECT_EQ(OneLine(smtp::MakeReply(250, "", "")), "250");
  EXPECT_EQ(StatusOf(smtp::MakeReply(550, "5.1.1", "x")), "5.1.1");
  EXPECT_EQ(StatusOf(smtp::MakeReply(550, "", "x")), "5.0.0");
  EXPECT_EQ(StatusOf(smtp::MakeReply(421, "", "x")), "4.0.0");
  EXPECT_EQ(RemoteMtaOf("mx.example.com[192.0.2.1]:25"), "mx.example.com");
  EXPECT_EQ(RemoteMtaOf("maildir:/var/mail"), "");
  EXPECT_EQ(RemoteMtaOf(""), "");
  EXPECT_EQ(AgeText(59 * kSecond), "59 seconds");
  EXPECT_EQ(AgeText(3 * 3600 * kSecond), "3 hours");
  EXPECT_EQ(AgeText(5 * 86400 * kSecond), "5 days");
  EXPECT_EQ(DomainOf("User@Example.COM"), "example.com");
  EXPECT_EQ(DomainOf("a@b@c.example"), "c.example");
  EXPECT_EQ(DomainOf("postmaster"), "");
}

TEST(OutcomeTest, MxFailuresMapToTheRightReply) {
  MxLookup mx;
  mx.status = MxLookup::Status::kNoSuchDomain;
  mx.error = "NXDOMAIN";
  EXPECT_EQ(MxFailureReply("nx.example", mx).code, 550);
  mx.status = MxLookup::Status::kNullMx;
  const smtp::Reply null_mx = MxFailureReply("null.example", mx);
  EXPECT_EQ(null_mx.code, 556);  // RFC 7505 §3
  EXPECT_EQ(null_mx.enhanced, "5.1.10");
  mx.status = MxLookup::Status::kTempFail;
  EXPECT_EQ(MxFailureReply("slow.example", mx).code, 451);
}

TEST(OutcomeTest, BounceGoesFromTheNullSenderToTheSenderAndIsNeverReportedOn) {
  DeliveryConfig config;
  config.bounce_max_age = std::chrono::seconds(2 * 86400);
  queue::Envelope original;
  original.sender = "alice@example.com";
  original.recipients.push_back({"bob@example.net", 0, "", queue::RecipientState::kBounced, 1, ""});
  const uint64_t now = 1'800'000'000 * kSecond;
  const queue::Envelope bounce = MakeBounceEnvelope(original, 1234, "relay.example", config, now);
  EXPECT_EQ(bounce.sender, "");
  ASSERT_EQ(bounce.recipients.size(), 1u);
  EXPECT_EQ(bounce.recipients[0].address, "alice@example.com");
  EXPECT_EQ(bounce.recipients[0].notify, smtp::kNotifyNever);
  EXPECT_EQ(bounce.recipients[0].state, queue::RecipientState::kPending);
  EXPECT_EQ(bounce.next_due_us, now);
  EXPECT_EQ(bounce.expires_at_us, now + 2 * 86400 * kSecond);
  EXPECT_EQ(bounce.body_size, 1234u);
  EXPECT_EQ(bounce.helo, "relay.example");
}

}  // namespace
}  // namespace sluice::delivery
