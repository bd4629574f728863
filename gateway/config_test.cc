#include "gateway/config.h"

#include <sched.h>

#include <gtest/gtest.h>

namespace sluice::gateway {
namespace {

TEST(ConfigTest, MinimalListenerGetsDefaults) {
  auto c = ParseConfig(R"(
[server]
hostname = "mx.example.net"
shards = 2
[spool]
path = "/tmp/s"
[[listener]]
name = "relay"
port = 2525
mynetworks = ["127.0.0.0/8", "::1"]
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->hostname, "mx.example.net");
  EXPECT_EQ(c->shards, 2u);
  EXPECT_EQ(c->spool.path, "/tmp/s");
  ASSERT_EQ(c->listeners.size(), 1u);
  const ListenerConfig& l = c->listeners[0];
  EXPECT_EQ(l.address, "127.0.0.1");
  EXPECT_EQ(l.port, 2525);
  EXPECT_EQ(l.mynetworks.size(), 2u);
  EXPECT_EQ(l.max_recipients, 1000u);
  EXPECT_EQ(l.max_message_size, 50ull << 20);
  EXPECT_EQ(l.command_timeout, Seconds(300));
  EXPECT_EQ(l.bare_newline, smtp::BareNewline::kReject);
}

TEST(ConfigTest, AutoShardsFollowsTheAffinityMaskLessOne) {
  cpu_set_t all;
  ASSERT_EQ(sched_getaffinity(0, sizeof(all), &all), 0);
  const int cpus = CPU_COUNT(&all);
  EXPECT_EQ(AutoShards(), cpus > 1 ? static_cast<unsigned>(cpus - 1) : 1u);
  int first = 0;
  while (!CPU_ISSET(first, &all))
    ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  EXPECT_EQ(AutoShards(), 1u) << "one CPU: one shard";
  ASSERT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);
  auto c = ParseConfig("[spool]\npath = \"/tmp/s\"\n[[listener]]\nport = 25\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->shards, AutoShards()) << "shards = 0 (the default) resolves to AutoShards()";
}

TEST(ConfigTest, ErrorsNameFileLineAndKey) {
  auto c = ParseConfig("[[listener]]\nport = 25\nmax_recipients = \"many\"\n", "bad.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message, "bad.toml:3: listener[0].max_recipients: expected an integer");

  auto typo = ParseConfig("[[listener]]\nport = 25\nmynetwork = []\n", "typo.toml");
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(typo.error().message, "typo.toml:3: listener[0].mynetwork: unknown setting");

  auto cidr = ParseConfig("[[listener]]\nport = 25\nmynetworks = [\"10.0.0.0/33\"]\n", "c.toml");
  ASSERT_FALSE(cidr.ok());
  EXPECT_NE(cidr.error().message.find("c.toml:3: listener[0].mynetworks"), std::string::npos);

  auto syntax = ParseConfig("[server\n", "s.toml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.error().message.rfind("s.toml:1:", 0), 0u);
}

TEST(ConfigTest, TlsAndAuthNeedTheirFiles) {
  auto no_cert = ParseConfig("[[listener]]\nport = 587\ntls = \"starttls\"\n", "x.toml");
  ASSERT_FALSE(no_cert.ok());
  EXPECT_NE(no_cert.error().message.find("needs certificate and private_key"), std::string::npos);
  auto plain_auth =
      ParseConfig("[[listener]]\nport = 2525\nauth = \"required\"\nusers_file = \"u\"\n", "y.toml");
  ASSERT_FALSE(plain_auth.ok());
  EXPECT_NE(plain_auth.error().message.find("only offered over TLS"), std::string::npos);
  auto ok = ParseConfig(
      "[[listener]]\nport = 587\ntls = \"starttls\"\ncertificate = \"c\"\n"
      "private_key = \"k\"\nauth = \"required\"\nusers_file = \"u\"\n"
      "tls_min_version = \"1.3\"\n",
      "z.toml");
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->listeners[0].tls, ListenerConfig::Tls::kStartTls);
  EXPECT_EQ(ok->listeners[0].auth, ListenerConfig::Auth::kRequired);
  EXPECT_TRUE(ok->listeners[0].tls13_only);
  auto low = ParseConfig(
      "[[listener]]\nport = 587\ntls = \"implicit\"\ncertificate = \"c\"\n"
      "private_key = \"k\"\ntls_min_version = \"1.1\"\n",
      "v.toml");
  EXPECT_FALSE(low.ok());
}

TEST(ConfigTest, RejectsBadValues) {
  EXPECT_FALSE(ParseConfig("", "e.toml").ok());  // no listener
  EXPECT_FALSE(ParseConfig("[[listener]]\nport = 70000\n", "p.toml").ok());
  EXPECT_FALSE(ParseConfig("[[listener]]\n", "p.toml").ok());  // port required
  EXPECT_FALSE(ParseConfig("[[listener]]\nport = 25\naddress = \"localhost\"\n", "a.toml").ok());
  EXPECT_FALSE(ParseConfig("[[listener]]\nport = 25\nbare_newline = \"ok\"\n", "b.toml").ok());
  EXPECT_FALSE(ParseConfig("[[listener]]\nport = 25\n[[listener]]\nport = 25\n", "dup.toml").ok());
  EXPECT_FALSE(
      ParseConfig("[server]\nlog_level = \"loud\"\n[[listener]]\nport = 25\n", "l.toml").ok());
  EXPECT_FALSE(ParseConfig("[spool]\npath = \"\"\n[[listener]]\nport = 25\n", "sp.toml").ok());
}

TEST(ConfigTest, HardeningDefaultsAndBounds) {
  auto c = ParseConfig("[[listener]]\nport = 25\n", "d.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const ListenerConfig& l = c->listeners[0];
  EXPECT_EQ(l.soft_error_limit, 10u);  // Postfix's smtpd_soft_error_limit
  EXPECT_EQ(l.hard_error_limit, 20u);  // smtpd_hard_error_limit
  EXPECT_EQ(l.error_sleep, Seconds(1));
  EXPECT_FALSE(l.allow_untrusted_routing);
  EXPECT_EQ(c->client_ipv4_prefix, 32u);
  EXPECT_EQ(c->client_ipv6_prefix, 64u);
  EXPECT_EQ(c->max_body_memory, int64_t{512} << 20);
  EXPECT_EQ(c->max_body_memory_per_client, int64_t{64} << 20);

  auto soft_above_hard = ParseConfig(
      "[[listener]]\nport = 25\nsoft_error_limit = 30\nhard_error_limit = 20\n", "e.toml");
  ASSERT_FALSE(soft_above_hard.ok());
  EXPECT_NE(soft_above_hard.error().message.find("e.toml:3: listener[0].soft_error_limit"),
            std::string::npos)
      << soft_above_hard.error().message;
  auto share_above_total = ParseConfig(
      "[server]\nmax_body_memory = 10485760\nmax_body_memory_per_client = 20971520\n"
      "[[listener]]\nport = 25\nmax_message_size = 1048576\n",
      "b.toml");
  ASSERT_FALSE(share_above_total.ok());
  EXPECT_NE(share_above_total.error().message.find("max_body_memory_per_client"),
            std::string::npos);
  // A client must be able to hold one message of the largest size it may send.
  auto share_below_message = ParseConfig(
      "[server]\nmax_body_memory_per_client = 8388608\n[[listener]]\nname = \"big\"\n"
      "port = 25\nmax_message_size = 8388608\n",
      "m.toml");
  ASSERT_FALSE(share_below_message.ok());
  EXPECT_NE(share_below_message.error().message.find("listener 'big': max_message_size"),
            std::string::npos)
      << share_below_message.error().message;
  EXPECT_FALSE(
      ParseConfig("[server]\nclient_ipv6_prefix = 129\n[[listener]]\nport = 25\n", "p.toml").ok());
  EXPECT_FALSE(ParseConfig("[[listener]]\nport = 25\nmax_errors = 10\n", "old.toml").ok());
}

TEST(ConfigTest, NormalizeAndRelayDomains) {
  auto c = ParseConfig(R"([[listener]]
port = 25
relay_domains = ["Example.COM", "*.example.org"]
bare_newline = "normalize"
)",
                       "n.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->listeners[0].relay_domains[0], "example.com");
  EXPECT_EQ(c->listeners[0].bare_newline, smtp::BareNewline::kNormalize);
}

TEST(ConfigTest, RouteTypes) {
  auto c = ParseConfig(R"([[listener]]
port = 25
[[route]]
domains = ["a.example"]
type = "mx"
[[route]]
domains = ["b.example"]
type = "smarthost"
host = "192.0.2.1"
[[route]]
domains = ["c.example"]
type = "lmtp"
host = "192.0.2.2"
[[route]]
domains = ["d.example"]
type = "maildir"
path = "/tmp/m"
)",
                       "r.toml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const std::vector<delivery::RouteConfig>& routes = c->delivery.routes;
  ASSERT_EQ(routes.size(), 4u);
  EXPECT_EQ(routes[0].type, delivery::RouteType::kMx);
  EXPECT_EQ(routes[0].port, 25);
  EXPECT_EQ(routes[1].type, delivery::RouteType::kSmarthost);
  EXPECT_EQ(routes[2].type, delivery::RouteType::kLmtp);
  EXPECT_EQ(routes[2].port, 24);  // LMTP's default port
  EXPECT_EQ(routes[3].type, delivery::RouteType::kMaildir);
  // The configuration's spelling is the one ToString gives back.
  const char* const spelled[] = {"mx", "smarthost", "lmtp", "maildir"};
  for (size_t i = 0; i < routes.size(); ++i) {
    EXPECT_STREQ(delivery::ToString(routes[i].type), spelled[i]);
  }

  auto bad = ParseConfig(R"([[listener]]
port = 25
[[route]]
domains = ["a.example"]
type = "MX"
)",
                         "bad.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("must be \"mx\", \"smarthost\", \"lmtp\" or \"maildir\""),
            std::string::npos)
      << bad.error().message;
}

}  // namespace
}  // namespace sluice::gateway
