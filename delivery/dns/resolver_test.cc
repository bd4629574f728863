// Resolver against a real DNS server: dnsmasq on a loopback port, started and
// stopped by the test. The resolver runs on a real io_uring shard thread.

#include "delivery/dns/resolver.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "base/temp_dir.h"
#include "base/wait_for.h"
#include "io/shard.h"
#include "io/task.h"

extern char** environ;

namespace sluice::delivery {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kDnsmasq = "/usr/sbin/dnsmasq";

using sluice::WaitFor;

int BindUdp(uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

uint16_t LocalPort(int fd) {
  sockaddr_in sin{};
  socklen_t len = sizeof(sin);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  return ntohs(sin.sin_port);
}

// A loopback port free for both UDP and TCP right now (dnsmasq binds both).
uint16_t FreePort() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int udp = BindUdp(0);
    if (udp < 0) {
      continue;
    }
    const uint16_t port = LocalPort(udp);
    int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = bind(tcp, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) == 0;
    close(tcp);
    close(udp);
    if (ok) {
      return port;
    }
  }
  return 0;
}

// True once a DNS server on 127.0.0.1:port answers a query.
bool DnsAnswers(uint16_t port) {
  static const unsigned char kQuery[] = {0x42, 0x42, 0x01, 0x00, 0,   1,   0,   0,   0, 0,
                                         0,    0,    5,    'r',  'e', 'a', 'd', 'y', 4, 't',
                                         'e',  's',  't',  0,    0,   1,   0,   1};
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool answered = false;
  if (sendto(fd, kQuery, sizeof(kQuery), 0, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) > 0) {
    pollfd pfd{fd, POLLIN, 0};
    unsigned char buf[512];
    answered = poll(&pfd, 1, 50) == 1 && recv(fd, buf, sizeof(buf), 0) >= 12 && buf[0] == 0x42;
  }
  close(fd);
  return answered;
}

// dnsmasq serving the test zone from the command line alone. Stopped (SIGTERM,
// then reaped) by the destructor, so also when an assertion fails.
class Dnsmasq {
 public:
  ~Dnsmasq() {
    Stop();
  }

  // "" on success, else what went wrong (with dnsmasq's own log).
  std::string Start() {
    if (access(kDnsmasq, X_OK) != 0) {
      return std::string(kDnsmasq) +
             " is missing: install the Debian package dnsmasq-base (the live DNS tests need it)";
    }
    std::string last_error;
    for (int attempt = 0; attempt < 3; ++attempt) {  // a port race with another process
      port_ = FreePort();
      if (port_ == 0) {
        return "no free loopback port";
      }
      last_error = Spawn();
      if (last_error.empty()) {
        return "";
      }
      Stop();
    }
    return last_error;
  }

  void Stop() {
    if (pid_ <= 0) {
      return;
    }
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  uint16_t port() const {
    return port_;
  }
  std::string server() const {
    return "127.0.0.1:" + std::to_string(port_);
  }
  std::string log() const {
    std::ifstream in(dir_.path() + "/dnsmasq.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string Spawn() {
    std::vector<std::string> args = {
        kDnsmasq,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",  // none
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--port=" + std::to_string(port_),
        "--log-facility=-",  // stderr, into dnsmasq.log
        "--log-queries",
        // Everything under .test is ours: unknown names get NXDOMAIN, never forwarded.
        "--local=/test/",
        // Two MX at 10 (a tie to randomize), one at 20.
        "--mx-host=multi.test,mx1.multi.test,10",
        "--mx-host=multi.test,mx2.multi.test,10",
        "--mx-host=multi.test,mx3.multi.test,20",
        "--host-record=mx1.multi.test,127.0.0.11,300",
        "--host-record=mx2.multi.test,127.0.0.12,::12,300",
        "--host-record=mx3.multi.test,127.0.0.13,300",
        // No MX at all: implicit MX.
        "--host-record=implicit.test,127.0.0.20,300",
        // A CNAME to a name without MX: implicit MX through the alias.
        "--cname=alias.test,implicit.test",
        // RFC 7505 null MX, two ways of writing it.
        "--mx-host=nullmx.test,.,0",
        "--dns-rr=nullmx2.test,15,0000:00",
        // Exists (TXT) but has neither MX nor addresses.
        "--txt-record=noaddr.test,nothing here",
        // MX targets without addresses; one good target behind a dead one.
        "--mx-host=deadmx.test,gone.deadmx.test,10",
        "--mx-host=partial.test,gone.partial.test,5",
        "--mx-host=partial.test,mx1.multi.test,20",
    };
    // Sixty MX hosts at one preference, each with an address: far more than a delivery
    // considers (mx_address_limit).
    for (int i = 0; i < 60; ++i) {
      const std::string host = "mx" + std::to_string(i) + ".many.test";
      args.push_back("--mx-host=many.test," + host + ",10");
      args.push_back("--host-record=" + host + ",127.0.1." + std::to_string(i + 1) + ",300");
    }
    if (geteuid() == 0) {
      // As root dnsmasq would switch to "nobody"/"dip"; stay root in a container.
      args.push_back("--user=root");
      args.push_back("--group=root");
    }
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);

    const std::string log_path = dir_.path() + "/dnsmasq.log";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, kDnsmasq, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      return std::string("posix_spawn ") + kDnsmasq + ": " + std::strerror(rc);
    }
    const auto deadline = SteadyClock::now() + seconds(10);
    while (SteadyClock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return "dnsmasq exited at startup: " + log();
      }
      if (DnsAnswers(port_)) {
        return "";
      }
    }
    return "dnsmasq did not answer within 10 s: " + log();
  }

  TempDir dir_{"sluice-dns"};
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

// Coroutines that run one lookup on the shard and report to the test thread.
struct MxProbe {
  std::atomic<bool> done{false};
  MxLookup result;
  Duration elapsed{};

  io::Detached Run(Resolver* resolver, std::string domain) {
    const auto start = SteadyClock::now();
    MxLookup r = co_await resolver->LookupMx(std::move(domain));
    elapsed = SteadyClock::now() - start;
    result = std::move(r);
    done = true;
  }
};

struct HostProbe {
  std::atomic<bool> done{false};
  Result<std::vector<io::IpAddress>> result = MakeError("not run");

  io::Detached Run(Resolver* resolver, std::string host) {
    Result<std::vector<io::IpAddress>> r = co_await resolver->LookupHost(std::move(host));
    result = std::move(r);
    done = true;
  }
};

std::vector<std::string> Strings(const std::vector<io::IpAddress>& addresses) {
  std::vector<std::string> out;
  out.reserve(addresses.size());
  for (const io::IpAddress& a : addresses) {
    out.push_back(a.ToString());
  }
  return out;
}

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::atomic<bool> ready{false};
    thread_ = std::thread([this, &ready] {
      shard_ = std::make_unique<io::Shard>(0, io::ShardOptions{.recv_buffers = 8});
      auto r = shard_->Init();
      if (!r) {
        init_error_ = r.error().message;
      }
      ready = true;
      if (r) {
        shard_->Run();
      }
      // The loop has ended: the resolver was shut down and idle (TearDown).
      resolver_.reset();
    });
    while (!ready) {
      std::this_thread::yield();
    }
    ASSERT_EQ(init_error_, "");
  }

  void TearDown() override {
    if (!thread_.joinable()) {
      return;
    }
    std::atomic<bool> stopped{false};
    shard_->Post([this, &stopped] { StopAll(&stopped); });
    // Shutdown must leave nothing in flight: idle() within a few loop turns.
    EXPECT_TRUE(WaitFor([&] { return stopped.load(); }, seconds(10)));
    thread_.join();
    EXPECT_EQ(shard_->stats().stale_cqes.load(), 0u);
  }

  io::Detached StopAll(std::atomic<bool>* stopped) {
    if (resolver_) {
      resolver_->Shutdown();
      while (!resolver_->idle()) {
        co_await io::Sleep(*shard_, milliseconds(1));
      }
    }
    shard_->Quit();
    *stopped = true;
  }

  // Runs fn on the shard thread and waits for it.
  void OnShard(const std::function<void()>& fn) {
    std::atomic<bool> done{false};
    shard_->Post([&] {
      fn();
      done = true;
    });
    ASSERT_TRUE(WaitFor([&] { return done.load(); }, seconds(10)));
  }

  void MakeResolver(ResolverOptions options) {
    std::string error;
    OnShard([&] {
      resolver_ = std::make_unique<Resolver>(*shard_, std::move(options));
      auto r = resolver_->Init();
      if (!r) {
        error = r.error().message;
      }
    });
    ASSERT_EQ(error, "");
  }

  void StartDnsmasqAndResolver(ResolverOptions options = {}) {
    const std::string error = dnsmasq_.Start();
    // Never skipped: a missing dnsmasq is a broken test environment.
    ASSERT_EQ(error, "") << "cannot start dnsmasq";
    options.servers = {dnsmasq_.server()};
    options.timeout = milliseconds(1000);
    MakeResolver(std::move(options));
  }

  MxLookup LookupMx(const std::string& domain, Duration* elapsed = nullptr) {
    MxProbe probe;
    shard_->Post([&] { probe.Run(resolver_.get(), domain); });
    EXPECT_TRUE(WaitFor([&] { return probe.done.load(); }, seconds(20))) << domain;
    if (!probe.done) {
      std::abort();  // the probe still refers to this frame
    }
    if (elapsed != nullptr) {
      *elapsed = probe.elapsed;
    }
    return probe.result;
  }

  Result<std::vector<io::IpAddress>> LookupHost(const std::string& host) {
    HostProbe probe;
    shard_->Post([&] { probe.Run(resolver_.get(), host); });
    EXPECT_TRUE(WaitFor([&] { return probe.done.load(); }, seconds(20))) << host;
    if (!probe.done) {
      std::abort();
    }
    return probe.result;
  }

  Resolver::Stats Stats() {
    Resolver::Stats s;
    OnShard([&] { s = resolver_->stats(); });
    return s;
  }

  Dnsmasq dnsmasq_;
  std::unique_ptr<io::Shard> shard_;
  std::unique_ptr<Resolver> resolver_;  // created, used and destroyed on the shard thread
  std::thread thread_;
  std::string init_error_;
};

TEST_F(ResolverTest, MultipleMxOrderedWithAddresses) {
  StartDnsmasqAndResolver();
  MxLookup r = LookupMx("Multi.Test.");
  ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
  ASSERT_EQ(r.targets.size(), 3u);
  EXPECT_EQ(r.targets[0].preference, 10);
  EXPECT_EQ(r.targets[1].preference, 10);
  EXPECT_EQ(r.targets[2].preference, 20);
  EXPECT_EQ((std::set<std::string>{r.targets[0].host, r.targets[1].host}),
            (std::set<std::string>{"mx1.multi.test", "mx2.multi.test"}));
  EXPECT_EQ(r.targets[2].host, "mx3.multi.test");
  EXPECT_EQ(Strings(r.targets[2].addresses), (std::vector<std::string>{"127.0.0.13"}));
  for (const MxTarget& t : r.targets) {
    if (t.host == "mx2.multi.test") {
      // A first, then AAAA.
      EXPECT_EQ(Strings(t.addresses), (std::vector<std::string>{"127.0.0.12", "::12"}));
    }
    if (t.host == "mx1.multi.test") {
      EXPECT_EQ(Strings(t.addresses), (std::vector<std::string>{"127.0.0.11"}));
    }
  }
  EXPECT_FALSE(r.permanent());
}

TEST_F(ResolverTest, ManyMxAreBoundedInAddressesQueriesAndKey) {
  // Postfix's smtp_mx_address_limit: five addresses in preference order, and only the targets
  // needed for them are looked up (a domain listing thousands of MX hosts cost thousands of
  // queries per message before).
  StartDnsmasqAndResolver();
  MxLookup r = LookupMx("many.test");
  ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
  size_t addresses = 0;
  for (const MxTarget& t : r.targets)
    addresses += t.addresses.size();
  EXPECT_EQ(addresses, 5u);
  EXPECT_EQ(r.targets.size(), 5u);
  EXPECT_EQ(Stats().queries, 1u + 5u * 2u);  // MX, then A and AAAA for five targets
  // The site names every MX host, whatever subset was resolved: the same for every lookup
  // (the ties are shuffled each time), and bounded in length.
  EXPECT_LE(r.site.size(), kMaxSiteKey);
  EXPECT_EQ(r.site.rfind("mx:mx0.many.test,mx1.many.test,", 0), 0u) << r.site;
  EXPECT_NE(r.site.find("(60 hosts)#"), std::string::npos) << r.site;
  std::set<std::string> firsts;
  for (int i = 0; i < 20; ++i) {
    MxLookup again = LookupMx("many.test");
    ASSERT_EQ(again.status, MxLookup::Status::kOk);
    EXPECT_EQ(again.site, r.site);
    firsts.insert(again.targets.front().host);
  }
  EXPECT_GT(firsts.size(), 1u);  // RFC 5321 §5.1: equal preferences in random order
  MxLookup multi = LookupMx("multi.test");
  EXPECT_EQ(multi.site, "mx:mx1.multi.test,mx2.multi.test,mx3.multi.test,");
}

TEST_F(ResolverTest, AddressLimitCountsAddressesNotHosts) {
  ResolverOptions options;
  options.mx_address_limit = 2;
  StartDnsmasqAndResolver(options);
  for (int i = 0; i < 10; ++i) {
    MxLookup r = LookupMx("multi.test");
    ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
    size_t addresses = 0;
    for (const MxTarget& t : r.targets)
      addresses += t.addresses.size();
    EXPECT_EQ(addresses, 2u);
    // Never the preference-20 host while the two at 10 give enough.
    for (const MxTarget& t : r.targets)
      EXPECT_NE(t.host, "mx3.multi.test");
  }
}

TEST_F(ResolverTest, OverTcp) {
  // A TCP socket wants POLLOUT while a query waits to be written and POLLIN
  // after: the poll in flight is cancelled and re-armed with the wider mask.
  ResolverOptions options;
  options.tcp_only = true;
  StartDnsmasqAndResolver(options);
  MxLookup r = LookupMx("multi.test");
  ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
  EXPECT_EQ(r.targets.size(), 3u);
  MxLookup nx = LookupMx("nxd.test");
  EXPECT_EQ(nx.status, MxLookup::Status::kNoSuchDomain) << nx.error;
  auto host = LookupHost("mx2.multi.test");
  ASSERT_TRUE(host.ok()) << host.error().message;
  EXPECT_EQ(host->size(), 2u);
}

TEST_F(ResolverTest, SecondLookupIsACacheHitWithFreshTieOrder) {
  StartDnsmasqAndResolver();
  MxLookup first = LookupMx("multi.test");
  ASSERT_EQ(first.status, MxLookup::Status::kOk) << first.error;
  const Resolver::Stats before = Stats();
  EXPECT_EQ(before.cache_hits, 0u);
  EXPECT_EQ(before.queries, 7u);  // MX + A/AAAA for three targets
  std::set<std::string> leaders;
  for (int i = 0; i < 64; ++i) {
    MxLookup again = LookupMx("multi.test");
    ASSERT_EQ(again.status, MxLookup::Status::kOk);
    ASSERT_EQ(again.targets.size(), 3u);
    EXPECT_EQ(again.targets[2].host, "mx3.multi.test");
    leaders.insert(again.targets[0].host);
  }
  const Resolver::Stats after = Stats();
  EXPECT_EQ(after.cache_hits, 64u);
  EXPECT_EQ(after.queries, before.queries);  // nothing went to DNS
  // RFC 5321 §5.1: the tie at 10 is re-randomized on every lookup.
  EXPECT_EQ(leaders, (std::set<std::string>{"mx1.multi.test", "mx2.multi.test"}));
}

TEST_F(ResolverTest, TtlClampsBoundTheCache) {
  // max_ttl = 0 (and negative_ttl = 0): every entry is stale at once, so
  // each lookup goes to DNS again. (dnsmasq serves the MX with TTL 0 and the
  // addresses with 300 s; with the defaults the entry would live 60 s.)
  ResolverOptions options;
  options.min_ttl = 0;
  options.max_ttl = 0;
  options.negative_ttl = 0;
  StartDnsmasqAndResolver(options);
  ASSERT_EQ(LookupMx("multi.test").status, MxLookup::Status::kOk);
  ASSERT_EQ(LookupMx("multi.test").status, MxLookup::Status::kOk);
  ASSERT_EQ(LookupMx("nxd.test").status, MxLookup::Status::kNoSuchDomain);
  ASSERT_EQ(LookupMx("nxd.test").status, MxLookup::Status::kNoSuchDomain);
  const Resolver::Stats s = Stats();
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.queries, 2u * 7u + 2u);
}

TEST_F(ResolverTest, ImplicitMxWhenThereAreNoMxRecords) {
  StartDnsmasqAndResolver();
  MxLookup r = LookupMx("implicit.test");
  ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
  ASSERT_EQ(r.targets.size(), 1u);
  EXPECT_EQ(r.targets[0].host, "implicit.test");
  EXPECT_EQ(r.targets[0].preference, 0);
  EXPECT_EQ(Strings(r.targets[0].addresses), (std::vector<std::string>{"127.0.0.20"}));
}

TEST_F(ResolverTest, CnameIsFollowed) {
  StartDnsmasqAndResolver();
  MxLookup r = LookupMx("alias.test");
  ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
  ASSERT_EQ(r.targets.size(), 1u);
  EXPECT_EQ(Strings(r.targets[0].addresses), (std::vector<std::string>{"127.0.0.20"}));
}

TEST_F(ResolverTest, NoMxAndNoAddresses) {
  StartDnsmasqAndResolver();
  MxLookup r = LookupMx("noaddr.test");
  EXPECT_EQ(r.status, MxLookup::Status::kNoAddresses) << r.error;
  EXPECT_FALSE(r.permanent());
  EXPECT_TRUE(r.targets.empty());
}

TEST_F(ResolverTest, NxdomainIsPermanentAndCached) {
  StartDnsmasqAndResolver();
  MxLookup r = LookupMx("nxd.test");
  EXPECT_EQ(r.status, MxLookup::Status::kNoSuchDomain) << r.error;
  EXPECT_TRUE(r.permanent());
  EXPECT_NE(r.error.find("nxd.test"), std::string::npos) << r.error;
  MxLookup again = LookupMx("nxd.test");
  EXPECT_EQ(again.status, MxLookup::Status::kNoSuchDomain);
  const Resolver::Stats s = Stats();
  EXPECT_EQ(s.queries, 1u);
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_EQ(s.failures, 0u);
}

TEST_F(ResolverTest, NullMxIsPermanent) {
  StartDnsmasqAndResolver();
  for (const char* domain : {"nullmx.test", "nullmx2.test"}) {
    MxLookup r = LookupMx(domain);
    EXPECT_EQ(r.status, MxLookup::Status::kNullMx) << domain << ": " << r.error;
    EXPECT_TRUE(r.permanent());
    EXPECT_TRUE(r.targets.empty());
  }
  // No address lookups for a null MX.
  EXPECT_EQ(Stats().queries, 2u);
}

TEST_F(ResolverTest, MxTargetsWithoutAddressesAreSkippedNeverTheDomainsA) {
  StartDnsmasqAndResolver();
  MxLookup dead = LookupMx("deadmx.test");
  EXPECT_EQ(dead.status, MxLookup::Status::kNoAddresses) << dead.error;
  EXPECT_FALSE(dead.permanent());
  EXPECT_NE(dead.error.find("gone.deadmx.test"), std::string::npos) << dead.error;

  MxLookup partial = LookupMx("partial.test");
  ASSERT_EQ(partial.status, MxLookup::Status::kOk) << partial.error;
  ASSERT_EQ(partial.targets.size(), 1u);
  EXPECT_EQ(partial.targets[0].host, "mx1.multi.test");
  EXPECT_EQ(partial.targets[0].preference, 20);
  EXPECT_NE(partial.error.find("gone.partial.test"), std::string::npos) << partial.error;
}

class ResolverSelfNamesTest : public ResolverTest {};

TEST_F(ResolverSelfNamesTest, OwnPreferenceAndAboveAreDiscarded) {
  ResolverOptions options;
  options.self_names = {"MX3.multi.test"};
  StartDnsmasqAndResolver(options);
  MxLookup r = LookupMx("multi.test");
  ASSERT_EQ(r.status, MxLookup::Status::kOk) << r.error;
  ASSERT_EQ(r.targets.size(), 2u);
  EXPECT_EQ(r.targets[0].preference, 10);
  EXPECT_EQ(r.targets[1].preference, 10);
  EXPECT_EQ(Stats().queries, 5u);  // the discarded target is not resolved
}

TEST_F(ResolverSelfNamesTest, BestMxIsUs) {
  ResolverOptions options;
  options.self_names = {"mx2.multi.test"};
  StartDnsmasqAndResolver(options);
  MxLookup r = LookupMx("multi.test");
  EXPECT_EQ(r.status, MxLookup::Status::kNoAddresses);
  EXPECT_NE(r.error.find("loop"), std::string::npos) << r.error;
}

TEST_F(ResolverTest, LookupHostNameAndLiterals) {
  StartDnsmasqAndResolver();
  auto name = LookupHost("MX2.multi.test");
  ASSERT_TRUE(name.ok()) << name.error().message;
  EXPECT_EQ(Strings(*name), (std::vector<std::string>{"127.0.0.12", "::12"}));
  EXPECT_EQ(Stats().queries, 2u);

  auto v4 = LookupHost("192.0.2.7");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(Strings(*v4), (std::vector<std::string>{"192.0.2.7"}));
  auto v6 = LookupHost("[2001:db8::1]");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(Strings(*v6), (std::vector<std::string>{"2001:db8::1"}));
  EXPECT_EQ(Stats().queries, 2u);  // literals never reach DNS

  auto cached = LookupHost("mx2.multi.test");
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(Stats().cache_hits, 1u);

  auto missing = LookupHost("missing.test");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT) << missing.error().message;
}

TEST_F(ResolverTest, ConnectionRefusedIsTempFailWithinTimeoutTimesTries) {
  // A loopback port where nothing listens: ICMP port unreachable.
  const uint16_t dead = FreePort();
  ASSERT_NE(dead, 0);
  ResolverOptions options;
  options.servers = {"127.0.0.1:" + std::to_string(dead)};
  options.timeout = milliseconds(300);
  options.tries = 2;
  MakeResolver(options);
  Duration elapsed{};
  MxLookup r = LookupMx("multi.test", &elapsed);
  EXPECT_EQ(r.status, MxLookup::Status::kTempFail) << r.error;
  EXPECT_FALSE(r.permanent());
  EXPECT_LT(elapsed, milliseconds(300 * 2 + 500));
  // Temporary failures are not cached: the next lookup asks again.
  MxLookup again = LookupMx("multi.test");
  EXPECT_EQ(again.status, MxLookup::Status::kTempFail);
  const Resolver::Stats s = Stats();
  EXPECT_EQ(s.queries, 2u);
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.failures, 2u);

  auto host = LookupHost("mx1.multi.test");
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.error().code, EAGAIN) << host.error().message;
}

TEST_F(ResolverTest, SilentServerTimesOutThroughTheTimerWheel) {
  // A bound socket that never answers: only c-ares' timeouts end the query,
  // so this exercises ares_timeout() folded into the timer wheel.
  int black_hole = BindUdp(0);
  ASSERT_GE(black_hole, 0);
  ResolverOptions options;
  options.servers = {"127.0.0.1:" + std::to_string(LocalPort(black_hole))};
  options.timeout = milliseconds(200);
  options.tries = 2;
  MakeResolver(options);
  Duration elapsed{};
  MxLookup r = LookupMx("multi.test", &elapsed);
  close(black_hole);
  EXPECT_EQ(r.status, MxLookup::Status::kTempFail) << r.error;
  EXPECT_NE(r.error.find("Timeout"), std::string::npos) << r.error;
  // c-ares 1.18 doubles the timeout for each round over the server list:
  // 200 ms + 400 ms with one server and two tries.
  EXPECT_GE(elapsed, milliseconds(400));
  EXPECT_LT(elapsed, milliseconds(200 + 400 + 500));
}

TEST_F(ResolverTest, ShutdownCompletesQueriesInFlight) {
  int black_hole = BindUdp(0);
  ASSERT_GE(black_hole, 0);
  ResolverOptions options;
  options.servers = {"127.0.0.1:" + std::to_string(LocalPort(black_hole))};
  options.timeout = milliseconds(5000);
  MakeResolver(options);

  MxProbe mx;
  HostProbe host;
  shard_->Post([&] {
    mx.Run(resolver_.get(), "multi.test");
    host.Run(resolver_.get(), "mx1.multi.test");
  });
  // Wait until the queries are out (on the wire to the black hole).
  ASSERT_TRUE(WaitFor([&] { return Stats().queries == 3; }, seconds(5)));
  const auto start = SteadyClock::now();
  OnShard([&] {
    resolver_->Shutdown();
    // Completed, but resumed from the loop, never inline.
    EXPECT_FALSE(mx.done.load());
    EXPECT_FALSE(host.done.load());
  });
  ASSERT_TRUE(WaitFor([&] { return mx.done.load() && host.done.load(); }, seconds(2)));
  EXPECT_LT(SteadyClock::now() - start, seconds(1));
  EXPECT_EQ(mx.result.status, MxLookup::Status::kTempFail);
  EXPECT_NE(mx.result.error.find("shut down"), std::string::npos) << mx.result.error;
  ASSERT_FALSE(host.result.ok());
  EXPECT_EQ(host.result.error().code, ECANCELED);

  // The cancelled polls complete within a few loop turns: nothing in flight.
  bool idle = false;
  ASSERT_TRUE(WaitFor(
      [&] {
        OnShard([&] { idle = resolver_->idle(); });
        return idle;
      },
      seconds(5)));
  // Later lookups fail at once.
  MxLookup after = LookupMx("multi.test");
  EXPECT_EQ(after.status, MxLookup::Status::kTempFail);
  EXPECT_EQ(Stats().queries, 3u);
  close(black_hole);
}

TEST_F(ResolverTest, BadServerIsAnInitError) {
  ResolverOptions options;
  options.servers = {"not-an-address:53"};
  std::string error;
  OnShard([&] {
    resolver_ = std::make_unique<Resolver>(*shard_, options);
    auto r = resolver_->Init();
    if (!r) {
      error = r.error().message;
    }
  });
  EXPECT_NE(error, "");
}

}  // namespace
}  // namespace sluice::delivery
