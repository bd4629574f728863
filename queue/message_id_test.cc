#include "queue/message_id.h"

#include <cstring>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "base/ascii.h"

namespace sluice::queue {
namespace {

std::vector<MessageId> RandomIds(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<MessageId> ids;
  ids.push_back({0, 0});
  ids.push_back({~0ULL, ~0ULL});
  ids.push_back({0, ~0ULL});
  ids.push_back({~0ULL, 0});
  for (size_t i = 0; i < n; ++i) {
    // Mix full-range values with small ones so common prefixes occur.
    ids.push_back({rng() >> (rng() % 64), rng() >> (rng() % 64)});
  }
  return ids;
}

TEST(MessageIdTest, Base32RoundTripsAndHasFixedLength) {
  for (const MessageId& id : RandomIds(10000, 1)) {
    const std::string text = id.ToString();
    ASSERT_EQ(text.size(), 26u);
    std::optional<MessageId> parsed = MessageId::Parse(text);
    ASSERT_TRUE(parsed.has_value()) << text;
    EXPECT_EQ(*parsed, id) << text;
  }
  EXPECT_EQ((MessageId{0, 0}).ToString(), "00000000000000000000000000");
  EXPECT_EQ((MessageId{~0ULL, ~0ULL}).ToString(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
  EXPECT_EQ((MessageId{0, 1}).ToString(), "00000000000000000000000001");
  EXPECT_EQ((MessageId{0, 32}).ToString(), "00000000000000000000000010");
}

TEST(MessageIdTest, StringAndKeyOrderFollowIdOrder) {
  std::vector<MessageId> ids = RandomIds(2000, 2);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const MessageId& a = ids[i];
    const MessageId& b = ids[i + 1];
    const auto ka = a.Key();
    const auto kb = b.Key();
    const int key_cmp = std::memcmp(ka.data(), kb.data(), 16);
    const int str_cmp = a.ToString().compare(b.ToString());
    auto sign = [](int v) { return (v > 0) - (v < 0); };
    const int id_cmp = a < b ? -1 : (a == b ? 0 : 1);
    EXPECT_EQ(sign(key_cmp), id_cmp);
    EXPECT_EQ(sign(str_cmp), id_cmp);
  }
}

TEST(MessageIdTest, KeyRoundTrips) {
  for (const MessageId& id : RandomIds(1000, 3)) {
    const auto key = id.Key();
    std::optional<MessageId> back = MessageId::FromKey(std::string_view(key.data(), key.size()));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, id);
  }
  EXPECT_FALSE(MessageId::FromKey("short").has_value());
  EXPECT_FALSE(MessageId::FromKey(std::string(17, 'x')).has_value());
}

TEST(MessageIdTest, ParseRejectsMalformedText) {
  EXPECT_FALSE(MessageId::Parse("").has_value());
  EXPECT_FALSE(MessageId::Parse("0000000000000000000000000").has_value());    // 25
  EXPECT_FALSE(MessageId::Parse("000000000000000000000000000").has_value());  // 27
  EXPECT_FALSE(MessageId::Parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").has_value());   // > 128 bits
  EXPECT_FALSE(MessageId::Parse("0000000000000000000000000U").has_value());
  EXPECT_FALSE(MessageId::Parse("0000000000000000000000000-").has_value());
  std::string with_nul(26, '0');
  with_nul[13] = '\0';
  EXPECT_FALSE(MessageId::Parse(with_nul).has_value());
}

TEST(MessageIdTest, ParseAcceptsLowerCaseAndCrockfordAliases) {
  const MessageId id{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  const std::string lower = AsciiToLower(id.ToString());
  EXPECT_EQ(MessageId::Parse(lower), id);
  EXPECT_EQ(MessageId::Parse("0000000000000000000000000O"), (MessageId{0, 0}));
  EXPECT_EQ(MessageId::Parse("0000000000000000000000000i"), (MessageId{0, 1}));
  EXPECT_EQ(MessageId::Parse("0000000000000000000000000L"), (MessageId{0, 1}));
}

TEST(MessageIdTest, GeneratorPacksNodeShardAndTime) {
  MessageIdGenerator gen(
      0xABCD, 0x1234, [] { return uint64_t{1'700'000'000'000'000}; }, 41);
  const MessageId id = gen.Next();
  EXPECT_EQ(id.hi, 1'700'000'000'000'000u);
  EXPECT_EQ(id.node(), 0xABCD);
  EXPECT_EQ(id.shard(), 0x1234);
  EXPECT_EQ(id.counter(), 42u);
}

TEST(MessageIdTest, GeneratorIsStrictlyIncreasingWhenClockStandsStillOrGoesBack) {
  uint64_t now = 1000;
  MessageIdGenerator gen(
      1, 2, [&] { return now; }, 0);
  MessageId last = gen.Next();
  for (int i = 0; i < 1000; ++i) {
    if (i % 3 == 0)
      now -= 7;  // clock going back
    if (i % 5 == 0)
      now += 2;
    const MessageId id = gen.Next();
    ASSERT_GT(id, last) << i;
    ASSERT_GE(id.hi, last.hi);
    last = id;
  }
}

TEST(MessageIdTest, GeneratorCounterWrapAtSameMicrosecondMovesHiForward) {
  MessageIdGenerator gen(
      1, 2, [] { return uint64_t{5000}; }, 0xFFFFFFFEu);
  const MessageId a = gen.Next();  // counter 0xFFFFFFFF
  const MessageId b = gen.Next();  // counter wraps to 0: hi must move
  EXPECT_EQ(a.hi, 5000u);
  EXPECT_EQ(a.counter(), 0xFFFFFFFFu);
  EXPECT_EQ(b.hi, 5001u);
  EXPECT_EQ(b.counter(), 0u);
  EXPECT_GT(b, a);
  EXPECT_GT(gen.Next(), b);
}

TEST(MessageIdTest, GeneratorsOfDifferentShardsNeverCollide) {
  MessageIdGenerator a(7, 0);
  MessageIdGenerator b(7, 1);
  std::set<MessageId> seen;
  for (int i = 0; i < 20000; ++i) {
    ASSERT_TRUE(seen.insert(a.Next()).second);
    ASSERT_TRUE(seen.insert(b.Next()).second);
  }
}

}  // namespace
}  // namespace sluice::queue
