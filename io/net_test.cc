#include "io/net.h"

#include <unistd.h>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "io/testing/loopback.h"

namespace sluice::io {
namespace {

using testing::ConnectTo;
using testing::PortOf;

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

TEST(IpAddressTest, Network) {
  const IpAddress v6 = *IpAddress::Parse("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
  EXPECT_EQ(v6.Network(64).ToString(), "2001:db8:1:2::");
  EXPECT_EQ(v6.Network(56).ToString(), "2001:db8:1::");
  EXPECT_EQ(IpAddress::Parse("2001:db8:1:f::1")->Network(61).ToString(), "2001:db8:1:8::");
  EXPECT_EQ(v6.Network(128), v6);
  EXPECT_EQ(v6.Network(0).ToString(), "::");
  // Two hosts of one /64 are one network; the next /64 is another.
  EXPECT_EQ(IpAddress::Parse("2001:db8:1:2::1")->Network(64), v6.Network(64));
  EXPECT_NE(IpAddress::Parse("2001:db8:1:3::1")->Network(64), v6.Network(64));
  const IpAddress v4 = *IpAddress::Parse("192.0.2.77");
  EXPECT_EQ(v4.Network(32), v4);
  EXPECT_EQ(v4.Network(64), v4);  // past the width: the whole address
  EXPECT_EQ(v4.Network(24).ToString(), "192.0.2.0");
  EXPECT_EQ(v4.Network(25).ToString(), "192.0.2.0");
  EXPECT_EQ(IpAddress::Parse("192.0.2.200")->Network(25).ToString(), "192.0.2.128");
  EXPECT_TRUE(v4.Network(24).is_v4());
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

TEST(ListenTcpTest, AcceptedSocketsHaveNoDelay) {
  auto any = SocketAddress::Parse("127.0.0.1", 0);
  ASSERT_TRUE(any.ok());
  auto lfd = ListenTcp(*any, 4);
  ASSERT_TRUE(lfd.ok());
  const int c = ConnectTo(PortOf(*lfd));
  ASSERT_GE(c, 0);
  const int a = accept(*lfd, nullptr, nullptr);
  ASSERT_GE(a, 0);
  int on = 0;
  socklen_t len = sizeof(on);
  ASSERT_EQ(getsockopt(a, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
  EXPECT_EQ(on, 1) << "replies go out without Nagle delay";
  close(a);
  close(c);
  close(*lfd);
}

}  // namespace
}  // namespace sluice::io
