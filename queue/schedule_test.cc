#include "queue/schedule.h"

#include <gtest/gtest.h>

namespace sluice::queue {
namespace {

Envelope TwoDomains() {
  Envelope e;
  e.received_at_us = 3 * kCountBucketMicros + 5;
  e.next_due_us = 42;
  e.recipients.push_back({"a@Example.COM", 0, "", RecipientState::kPending, 0, ""});
  e.recipients.push_back({"b@example.com", 0, "", RecipientState::kPending, 0, ""});
  e.recipients.push_back({"c@other.example", 0, "", RecipientState::kDelivered, 0, ""});
  e.recipients.push_back({"postmaster", 0, "", RecipientState::kPending, 0, ""});
  return e;
}

TEST(ScheduleTest, PlacementHasTheDistinctDomainsOfPendingRecipients) {
  const Placement p = PlacementOf(TwoDomains());
  EXPECT_EQ(p.due_us, 42u);
  EXPECT_EQ(p.received_us, 3 * kCountBucketMicros + 5);
  EXPECT_FALSE(p.deferred);
  EXPECT_EQ(p.domains, (std::vector<std::string>{"", "example.com"}));
  Envelope tried = TwoDomains();
  tried.attempts = 1;
  EXPECT_TRUE(PlacementOf(tried).deferred);
}

TEST(ScheduleTest, KeysSortByPrefixThenDueThenId) {
  const MessageId a{100, uint64_t{7} << 32};  // shard 7
  const MessageId b{50, uint64_t{7} << 32};
  EXPECT_EQ(a.shard(), 7);
  const ScheduleKey early = MakeScheduleKey(a, 1000);
  const ScheduleKey late = MakeScheduleKey(b, 2000);
  const ScheduleKey same_due_later_id = MakeScheduleKey(a, 2000);
  EXPECT_LT(early, late);
  EXPECT_LT(late, same_due_later_id);             // b < a at the same due time
  EXPECT_LT(MakeScheduleKey(6, 9999, a), early);  // a lower prefix first
  const std::optional<ScheduleEntry> e =
      ParseScheduleKey(std::string_view(early.data(), early.size()));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->prefix, 7);
  EXPECT_EQ(e->due_us, 1000u);
  EXPECT_EQ(e->id, a);
  EXPECT_FALSE(ParseScheduleKey("short").has_value());
}

TEST(ScheduleTest, CounterKeysRoundTripAndRejectOtherShapes) {
  for (const CounterKey& k : {CounterKey{std::nullopt, false, 0}, CounterKey{std::nullopt, true, 7},
                              CounterKey{"example.com", true, 123456}, CounterKey{"", false, 1}}) {
    const std::string encoded = EncodeCounterKey(k);
    EXPECT_EQ(DecodeCounterKey(encoded), k) << encoded;
  }
  EXPECT_FALSE(DecodeCounterKey(kIndexVersionKey).has_value());
  EXPECT_FALSE(DecodeCounterKey(std::string("t\x02\0\0\0\0", 6)).has_value());
  EXPECT_FALSE(DecodeCounterKey(std::string("dexample.com", 12)).has_value());
  EXPECT_EQ(DecodeCount(EncodeCount(0x0102030405060708)), 0x0102030405060708u);
  EXPECT_FALSE(DecodeCount("1234567").has_value());
}

TEST(ScheduleTest, CountsSumPerStateAndDomainWithTheOldestMinute) {
  std::map<CounterKey, int64_t> delta;
  AddCounts(PlacementOf(TwoDomains()), +1, delta);
  Envelope later = TwoDomains();
  later.received_at_us += 10 * kCountBucketMicros;
  later.attempts = 2;
  AddCounts(PlacementOf(later), +1, delta);
  AddCounts(PlacementOf(later), +1, delta);
  AddCounts(PlacementOf(later), -1, delta);
  std::map<CounterKey, uint64_t> values;
  for (const auto& [k, v] : delta) {
    ASSERT_GE(v, 0);
    values[k] = static_cast<uint64_t>(v);
  }
  const QueueCounts counts = SumCounts(values);
  EXPECT_EQ(counts.scheduled, 1u);
  EXPECT_EQ(counts.deferred, 1u);
  EXPECT_EQ(counts.messages(), 2u);
  EXPECT_EQ(counts.oldest_received_us, 3 * kCountBucketMicros);
  ASSERT_EQ(counts.domains.size(), 2u);
  EXPECT_EQ(counts.domains.at("example.com").messages, 2u);
  EXPECT_EQ(counts.domains.at("").messages, 2u);
  EXPECT_EQ(counts.domains.at("example.com").oldest_received_us, 3 * kCountBucketMicros);
  EXPECT_EQ(SumCounts({}).oldest_received_us, 0u);
}

}  // namespace
}  // namespace sluice::queue
