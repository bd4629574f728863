// MX selection (RFC 5321 §5.1) and MX answer parsing, without I/O.

#include "delivery/dns/mx.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace sluice::delivery {
namespace {

std::vector<MxTarget> Records(const std::vector<std::pair<std::string, uint16_t>>& list) {
  std::vector<MxTarget> out;
  out.reserve(list.size());
  for (const auto& [host, pref] : list) {
    out.push_back(MxTarget{host, pref, {}});
  }
  return out;
}

std::vector<std::string> Hosts(const std::vector<MxTarget>& targets) {
  std::vector<std::string> out;
  out.reserve(targets.size());
  for (const MxTarget& t : targets) {
    out.push_back(t.host);
  }
  return out;
}

TEST(OrderMxTargetsTest, SortsByPreferenceLowestFirst) {
  std::mt19937 rng(1);
  auto out = OrderMxTargets(Records({{"c", 30}, {"a", 10}, {"b", 20}}), {}, rng);
  EXPECT_EQ(Hosts(out), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(out[0].preference, 10);
  EXPECT_EQ(out[2].preference, 30);
}

TEST(OrderMxTargetsTest, EmptyInputGivesEmptyOutput) {
  std::mt19937 rng(1);
  EXPECT_TRUE(OrderMxTargets({}, {"me.example"}, rng).empty());
}

TEST(OrderMxTargetsTest, EqualPreferencesAreRandomizedAcrossSeeds) {
  // RFC 5321 §5.1: equal preferences MUST be randomized. Over many seeds
  // every order of a tie shows up, and ties never cross preference levels.
  std::set<std::vector<std::string>> seen;
  for (uint32_t seed = 0; seed < 200; ++seed) {
    std::mt19937 rng(seed);
    auto out =
        OrderMxTargets(Records({{"z", 5}, {"a", 10}, {"b", 10}, {"c", 10}, {"y", 1}}), {}, rng);
    ASSERT_EQ(out.size(), 5u);
    EXPECT_EQ(out[0].host, "y");
    EXPECT_EQ(out[1].host, "z");
    for (size_t i = 2; i < 5; ++i) {
      EXPECT_EQ(out[i].preference, 10);
    }
    seen.insert(Hosts(out));
  }
  EXPECT_EQ(seen.size(), 6u);  // all 3! orders of a, b, c
}

TEST(OrderMxTargetsTest, TwoWayTieTakesBothOrders) {
  int first_a = 0;
  for (uint32_t seed = 0; seed < 100; ++seed) {
    std::mt19937 rng(seed);
    auto out = OrderMxTargets(Records({{"a", 0}, {"b", 0}}), {}, rng);
    ASSERT_EQ(out.size(), 2u);
    if (out[0].host == "a") {
      ++first_a;
    }
  }
  EXPECT_GT(first_a, 0);
  EXPECT_LT(first_a, 100);
}

TEST(OrderMxTargetsTest, SelfDiscardsOwnPreferenceAndAbove) {
  std::mt19937 rng(7);
  auto out = OrderMxTargets(Records({{"backup.example", 20},
                                     {"me.example", 20},
                                     {"primary.example", 10},
                                     {"peer.example", 20},
                                     {"last.example", 30}}),
                            {"ME.example."}, rng);
  EXPECT_EQ(Hosts(out), (std::vector<std::string>{"primary.example"}));
}

TEST(OrderMxTargetsTest, SelfAtLowestPreferenceLeavesNothing) {
  std::mt19937 rng(7);
  auto out =
      OrderMxTargets(Records({{"me.example", 10}, {"other.example", 10}, {"backup.example", 20}}),
                     {"relay.local", "me.example"}, rng);
  EXPECT_TRUE(out.empty());
}

TEST(OrderMxTargetsTest, SelfUsesOurLowestPreference) {
  // Listed twice: the lower preference (10) is ours; 10 and above go.
  std::mt19937 rng(3);
  auto out = OrderMxTargets(
      Records({{"me.example", 30}, {"a.example", 5}, {"me.example", 10}, {"b.example", 20}}),
      {"me.example"}, rng);
  EXPECT_EQ(Hosts(out), (std::vector<std::string>{"a.example"}));
}

TEST(OrderMxTargetsTest, SelfNotListedKeepsEverything) {
  std::mt19937 rng(3);
  auto out = OrderMxTargets(Records({{"a.example", 5}, {"b.example", 20}}), {"me.example"}, rng);
  EXPECT_EQ(out.size(), 2u);
}

TEST(OrderMxTargetsTest, DuplicateHostKeepsLowestPreference) {
  std::mt19937 rng(3);
  auto out =
      OrderMxTargets(Records({{"a.example", 30}, {"A.example.", 10}, {"b.example", 20}}), {}, rng);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].preference, 10);
  EXPECT_EQ(out[1].host, "b.example");
}

TEST(NormalizeDnsNameTest, LowerCaseWithoutTrailingDot) {
  EXPECT_EQ(NormalizeDnsName("MX1.Example.COM."), "mx1.example.com");
  EXPECT_EQ(NormalizeDnsName("."), "");
  EXPECT_EQ(NormalizeDnsName(""), "");
}

// ---- Raw answers -----------------------------------------------------------

void PutName(std::vector<unsigned char>* out, const std::string& name) {
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) {
      dot = name.size();
    }
    out->push_back(static_cast<unsigned char>(dot - start));
    out->insert(out->end(), name.begin() + static_cast<std::ptrdiff_t>(start),
                name.begin() + static_cast<std::ptrdiff_t>(dot));
    start = dot + 1;
  }
  out->push_back(0);
}

void Put16(std::vector<unsigned char>* out, uint16_t v) {
  out->push_back(static_cast<unsigned char>(v >> 8));
  out->push_back(static_cast<unsigned char>(v));
}

void Put32(std::vector<unsigned char>* out, uint32_t v) {
  Put16(out, static_cast<uint16_t>(v >> 16));
  Put16(out, static_cast<uint16_t>(v));
}

struct Rr {
  std::string name;
  uint16_t type;
  uint32_t ttl;
  std::vector<unsigned char> rdata;
};

Rr Mx(const std::string& owner, uint16_t pref, const std::string& target, uint32_t ttl) {
  Rr rr{owner, 15, ttl, {}};
  Put16(&rr.rdata, pref);
  PutName(&rr.rdata, target);
  return rr;
}

Rr Cname(const std::string& owner, const std::string& target, uint32_t ttl) {
  Rr rr{owner, 5, ttl, {}};
  PutName(&rr.rdata, target);
  return rr;
}

std::vector<unsigned char> Answer(const std::string& qname, const std::vector<Rr>& answers) {
  std::vector<unsigned char> m;
  Put16(&m, 0x1234);  // id
  Put16(&m, 0x8180);  // QR RD RA, NOERROR
  Put16(&m, 1);
  Put16(&m, static_cast<uint16_t>(answers.size()));
  Put16(&m, 0);
  Put16(&m, 0);
  PutName(&m, qname);
  Put16(&m, 15);
  Put16(&m, 1);
  for (const Rr& rr : answers) {
    PutName(&m, rr.name);
    Put16(&m, rr.type);
    Put16(&m, 1);
    Put32(&m, rr.ttl);
    Put16(&m, static_cast<uint16_t>(rr.rdata.size()));
    m.insert(m.end(), rr.rdata.begin(), rr.rdata.end());
  }
  return m;
}

TEST(ParseMxAnswerTest, RecordsAndSmallestTtl) {
  auto msg = Answer("example.org", {Mx("example.org", 10, "MX1.example.org", 600),
                                    Mx("example.org", 20, "mx2.example.org", 300)});
  auto parsed = ParseMxAnswer(msg.data(), msg.size());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->records.size(), 2u);
  EXPECT_EQ(parsed->records[0].host, "mx1.example.org");
  EXPECT_EQ(parsed->records[0].preference, 10);
  EXPECT_EQ(parsed->records[1].host, "mx2.example.org");
  EXPECT_EQ(parsed->ttl, 300u);
  EXPECT_FALSE(IsNullMx(*parsed));
}

TEST(ParseMxAnswerTest, CnameTtlCounts) {
  auto msg = Answer("alias.org", {Cname("alias.org", "example.org", 30),
                                  Mx("example.org", 10, "mx1.example.org", 600)});
  auto parsed = ParseMxAnswer(msg.data(), msg.size());
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->records.size(), 1u);
  EXPECT_EQ(parsed->ttl, 30u);
}

TEST(ParseMxAnswerTest, CnameWithoutMxHasNoRecords) {
  auto msg = Answer("alias.org", {Cname("alias.org", "example.org", 30)});
  auto parsed = ParseMxAnswer(msg.data(), msg.size());
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->records.empty());
}

TEST(ParseMxAnswerTest, NullMx) {
  // RFC 7505: "0 ." alone. This is the exact answer dnsmasq 2.90 sends for
  // --mx-host=nullmx.test,.,0 (compressed owner name).
  const std::vector<unsigned char> dnsmasq = {
      0x12, 0x34, 0x85, 0x80, 0,   1,   0,   1, 0,   0,   0,   0,                    // header
      6,    'n',  'u',  'l',  'l', 'm', 'x', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1,  // question
      0xc0, 0x0c, 0,    15,   0,   1,   0,   0, 0,   0,   0,   3,   0, 0, 0};        // 0 .
  auto parsed = ParseMxAnswer(dnsmasq.data(), dnsmasq.size());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->records.size(), 1u);
  EXPECT_EQ(parsed->records[0].host, "");
  EXPECT_TRUE(IsNullMx(*parsed));

  // A "." among real records is not a null MX (the resolver drops the ".").
  auto mixed = Answer("example.org",
                      {Mx("example.org", 0, "", 60), Mx("example.org", 10, "mx1.example.org", 60)});
  auto parsed_mixed = ParseMxAnswer(mixed.data(), mixed.size());
  ASSERT_TRUE(parsed_mixed.ok());
  EXPECT_EQ(parsed_mixed->records.size(), 2u);
  EXPECT_FALSE(IsNullMx(*parsed_mixed));
}

TEST(ParseMxAnswerTest, HugeTtlIsZero) {
  // RFC 2181 §8: a TTL with the top bit set is treated as zero.
  auto msg = Answer("example.org", {Mx("example.org", 10, "mx1.example.org", 0x80000000u)});
  auto parsed = ParseMxAnswer(msg.data(), msg.size());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->ttl, 0u);
}

TEST(ParseMxAnswerTest, TruncatedAtEveryByteNeverCrashes) {
  // Network input: every prefix is either an error or a consistent answer.
  auto msg = Answer("example.org", {Cname("example.org", "mail.example.org", 30),
                                    Mx("mail.example.org", 10, "mx1.example.org", 600),
                                    Mx("mail.example.org", 20, "mx2.example.org", 300)});
  for (size_t n = 0; n < msg.size(); ++n) {
    std::vector<unsigned char> prefix(msg.begin(), msg.begin() + static_cast<std::ptrdiff_t>(n));
    auto parsed = ParseMxAnswer(prefix.data(), prefix.size());
    EXPECT_FALSE(parsed.ok() && parsed->records.size() == 2) << "prefix " << n;
    EXPECT_EQ(MinAnswerTtl(prefix.data(), prefix.size(), 15), -1) << "prefix " << n;
  }
  EXPECT_EQ(MinAnswerTtl(msg.data(), msg.size(), 15), 30);
}

TEST(MxLookupTest, PermanentOnlyForNxdomainAndNullMx) {
  MxLookup l;
  for (auto s :
       {MxLookup::Status::kOk, MxLookup::Status::kNoAddresses, MxLookup::Status::kTempFail}) {
    l.status = s;
    EXPECT_FALSE(l.permanent()) << ToString(s);
  }
  for (auto s : {MxLookup::Status::kNoSuchDomain, MxLookup::Status::kNullMx}) {
    l.status = s;
    EXPECT_TRUE(l.permanent()) << ToString(s);
  }
}

TEST(AddressLiteral, Ipv4AndIpv6) {
  EXPECT_EQ(AddressLiteralIp("[192.0.2.1]")->ToString(), "192.0.2.1");
  EXPECT_EQ(AddressLiteralIp("[IPv6:2001:db8::1]")->ToString(), "2001:db8::1");
  EXPECT_EQ(AddressLiteralIp("[ipv6:::1]")->ToString(), "::1");
  EXPECT_FALSE(AddressLiteralIp("[::1]"));             // IPv6 needs its tag
  EXPECT_FALSE(AddressLiteralIp("[IPv6:192.0.2.1]"));  // and IPv4 must not have it
  EXPECT_FALSE(AddressLiteralIp("[x-foo:bar]"));       // general literal: no standard tag
  EXPECT_FALSE(AddressLiteralIp("[192.0.2.256]"));
  EXPECT_FALSE(AddressLiteralIp("example.com"));
  EXPECT_FALSE(AddressLiteralIp("[]"));
  EXPECT_FALSE(AddressLiteralIp("[192.0.2.1"));
}

TEST(SiteKey, SortedUniqueAndBounded) {
  EXPECT_EQ(SiteKey({"b.test", "a.test", "b.test"}), "mx:a.test,b.test,");
  std::vector<std::string> many;
  many.reserve(2900);
  for (int i = 0; i < 2900; ++i)
    many.push_back("mx" + std::to_string(i) + ".example.test");
  const std::string key = SiteKey(many);
  EXPECT_LE(key.size(), kMaxSiteKey);
  EXPECT_NE(key.find("(2900 hosts)#"), std::string::npos) << key;
  std::reverse(many.begin(), many.end());
  EXPECT_EQ(SiteKey(many), key);  // order does not matter
  many.pop_back();
  EXPECT_NE(SiteKey(many), key);  // the set does
}

}  // namespace
}  // namespace sluice::delivery
