#include "io/net.h"

#include <gtest/gtest.h>

namespace sluice::io {
namespace {

TEST(CidrTest, V4Prefixes) {
  auto c = Cidr::Parse("127.0.0.0/8");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->Contains(*IpAddress::Parse("127.0.0.1")));
  EXPECT_TRUE(c->Contains(*IpAddress::Parse("127.255.1.2")));
  EXPECT_FALSE(c->Contains(*IpAddress::Parse("128.0.0.1")));
  auto c2 = Cidr::Parse("192.168.1.0/25");
  ASSERT_TRUE(c2);
  EXPECT_TRUE(c2->Contains(*IpAddress::Parse("192.168.1.127")));
  EXPECT_FALSE(c2->Contains(*IpAddress::Parse("192.168.1.128")));
  auto all = Cidr::Parse("0.0.0.0/0");
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->Contains(*IpAddress::Parse("8.8.8.8")));
  EXPECT_FALSE(all->Contains(*IpAddress::Parse("::1")));
}

TEST(CidrTest, V6AndMapped) {
  auto c = Cidr::Parse("::1/128");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->Contains(*IpAddress::Parse("::1")));
  EXPECT_FALSE(c->Contains(*IpAddress::Parse("::2")));
  auto v4 = Cidr::Parse("127.0.0.0/8");
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
  EXPECT_TRUE(v4->Contains(*IpAddress::Parse("::ffff:127.0.0.1")));
  auto net = Cidr::Parse("2001:db8::/32");
  ASSERT_TRUE(net);
  EXPECT_TRUE(net->Contains(*IpAddress::Parse("2001:db8:1::5")));
  EXPECT_FALSE(net->Contains(*IpAddress::Parse("2001:db9::5")));
}

TEST(CidrTest, RejectsGarbage) {
  EXPECT_FALSE(Cidr::Parse("127.0.0.0/33"));
  EXPECT_FALSE(Cidr::Parse("127.0.0.0/"));
  EXPECT_FALSE(Cidr::Parse("127.0.0/8"));
  EXPECT_FALSE(Cidr::Parse("localhost"));
  EXPECT_FALSE(Cidr::Parse("::1/129"));
  EXPECT_FALSE(Cidr::Parse("10.0.0.0/8x"));
  ASSERT_TRUE(Cidr::Parse("10.1.2.3"));
  EXPECT_EQ(Cidr::Parse("10.1.2.3")->ToString(), "10.1.2.3/32");
}

TEST(SocketAddressTest, ParsesBothFamilies) {
  auto a = SocketAddress::Parse("127.0.0.1", 2525);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->ToString(), "127.0.0.1:2525");
  auto b = SocketAddress::Parse("[::1]", 25);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->ToString(), "[::1]:25");
  EXPECT_FALSE(SocketAddress::Parse("example.com", 25).ok());
}

}  // namespace
}  // namespace sluice::io
