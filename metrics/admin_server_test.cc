#include "metrics/admin_server.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "base/ascii.h"
#include "metrics/registry.h"

namespace sluice::metrics {
namespace {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A plain HTTP/1.1 client over a real socket: sends one request, reads until the server closes.
std::optional<HttpResponse> Request(const std::string& address, uint16_t port,
                                    const std::string& method, const std::string& path) {
  const bool v6 = address.find(':') != std::string::npos;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return std::nullopt;
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  int rc = -1;
  if (v6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    inet_pton(AF_INET6, address.c_str(), &sa.sin6_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  }
  if (rc != 0) {
    ::close(fd);
    return std::nullopt;
  }
  const std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return std::nullopt;
  }
  std::string raw;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);

  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos || !raw.starts_with("HTTP/1.")) {
    return std::nullopt;
  }
  HttpResponse response;
  response.status = std::stoi(raw.substr(9, 3));
  size_t pos = raw.find("\r\n") + 2;
  while (pos < header_end) {
    const size_t eol = raw.find("\r\n", pos);
    const std::string line = raw.substr(pos, eol - pos);
    const size_t colon = line.find(':');
    const std::string name = AsciiToLower(line.substr(0, colon));
    if (response.headers.contains(name)) {
      ADD_FAILURE() << "duplicate header " << name;
    }
    response.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    pos = eol + 2;
  }
  response.body = raw.substr(header_end + 4);
  return response;
}

class AdminServerTest : public ::testing::Test {
 protected:
  AdminServerTest()
      : registry_(2), server_(registry_, [this] {
          return ready_.load() ? std::pair<bool, std::string>{true, ""}
                               : std::pair<bool, std::string>{false, "spool not open"};
        }) {
    registry_.AddCounter("sluice_test_requests_total", "Requests.", {"code"})
        .WithLabels({"250"})
        .Inc(1, 12);
    registry_.AddHistogram("sluice_test_seconds", "Latency.", {}, {0.5})
        .WithLabels({})
        .Observe(0, 0.25);
  }

  void StartLoopback() {
    const Result<void> started = server_.Start("127.0.0.1", 0);
    ASSERT_TRUE(started.ok()) << started.error().message;
    ASSERT_NE(server_.port(), 0);
  }

  Registry registry_;
  std::atomic<bool> ready_{true};
  AdminServer server_;
};

TEST_F(AdminServerTest, ServesMetricsWithThePrometheusContentType) {
  StartLoopback();
  const auto r = Request("127.0.0.1", server_.port(), "GET", "/metrics");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers.at("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r->body, registry_.Scrape());
  EXPECT_EQ(r->headers.at("content-length"), std::to_string(r->body.size()));
  EXPECT_NE(r->body.find("sluice_test_requests_total{code=\"250\"} 12\n"), std::string::npos);
  EXPECT_NE(r->body.find("sluice_test_seconds_count 1\n"), std::string::npos);
  // Exactly one Date header, ours (IMF-fixdate), not a second one from civetweb.
  EXPECT_TRUE(r->headers.at("date").ends_with(" GMT")) << r->headers.at("date");
}

TEST_F(AdminServerTest, QueryStringsAreIgnored) {
  StartLoopback();
  const auto r = Request("127.0.0.1", server_.port(), "GET", "/metrics?name[]=x");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminServerTest, HeadHasHeadersButNoBody) {
  StartLoopback();
  const auto r = Request("127.0.0.1", server_.port(), "HEAD", "/metrics");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
}

TEST_F(AdminServerTest, Healthz) {
  StartLoopback();
  const auto r = Request("127.0.0.1", server_.port(), "GET", "/healthz");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok");
}

TEST_F(AdminServerTest, ReadyzFollowsTheReadyCallback) {
  StartLoopback();
  auto r = Request("127.0.0.1", server_.port(), "GET", "/readyz");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ready");
  ready_ = false;
  r = Request("127.0.0.1", server_.port(), "GET", "/readyz");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "spool not open");
}

TEST_F(AdminServerTest, UnknownPathsAre404AndOtherMethods405) {
  StartLoopback();
  for (const char* path : {"/", "/metricsx", "/metrics/x", "/index.html", "/../etc/passwd"}) {
    const auto r = Request("127.0.0.1", server_.port(), "GET", path);
    ASSERT_TRUE(r.has_value()) << path;
    EXPECT_EQ(r->status, 404) << path;
  }
  const auto post = Request("127.0.0.1", server_.port(), "POST", "/metrics");
  ASSERT_TRUE(post.has_value());
  EXPECT_EQ(post->status, 405);
}

TEST_F(AdminServerTest, ConcurrentScrapes) {
  StartLoopback();
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  clients.reserve(8);
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        const auto r = Request("127.0.0.1", server_.port(), "GET", "/metrics");
        if (r && r->status == 200 && r->body.ends_with("\n")) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : clients) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 160);
}

TEST_F(AdminServerTest, PortInUseIsAClearError) {
  // A listening socket holds the port (SO_REUSEADDR does not allow binding over a listener).
  const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(holder, 1), 0);
  socklen_t len = sizeof(sa);
  ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const uint16_t port = ntohs(sa.sin_port);

  const Result<void> started = server_.Start("127.0.0.1", port);
  ::close(holder);
  ASSERT_FALSE(started.ok());
  const std::string& message = started.error().message;
  EXPECT_NE(message.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << message;
  EXPECT_NE(message.find("in use"), std::string::npos) << message;
  EXPECT_EQ(server_.port(), 0);
}

TEST_F(AdminServerTest, SecondServerOnTheSamePortFails) {
  StartLoopback();
  Registry other_registry(1);
  AdminServer other(other_registry, nullptr);
  const Result<void> started = other.Start("127.0.0.1", server_.port());
  EXPECT_FALSE(started.ok());
}

TEST_F(AdminServerTest, RejectsAddressesThatAreNotLiterals) {
  for (const char* address : {"localhost", "", "127.0.0.1:80", "[::1]", "1.2.3"}) {
    const Result<void> started = server_.Start(address, 0);
    ASSERT_FALSE(started.ok()) << address;
    EXPECT_NE(started.error().message.find("address"), std::string::npos);
  }
}

TEST_F(AdminServerTest, ServesOverIpv6Loopback) {
  const int probe = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_addr = in6addr_loopback;
  const bool have_v6 =
      probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  if (probe >= 0) {
    ::close(probe);
  }
  if (!AdminServer::SupportsIpv6()) {
    // Debian 12's civetweb: a clear error, not a silent IPv4 fallback.
    const Result<void> started = server_.Start("::1", 0);
    ASSERT_FALSE(started.ok());
    EXPECT_NE(started.error().message.find("without IPv6"), std::string::npos)
        << started.error().message;
    return;
  }
  if (!have_v6) {
    FAIL() << "civetweb has IPv6 but this machine has no IPv6 loopback (::1)";
  }
  const Result<void> started = server_.Start("::1", 0);
  ASSERT_TRUE(started.ok()) << started.error().message;
  const auto r = Request("::1", server_.port(), "GET", "/healthz");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

TEST_F(AdminServerTest, StopReleasesThePortAndStartWorksAgain) {
  StartLoopback();
  const uint16_t port = server_.port();
  server_.Stop();
  server_.Stop();  // idempotent
  EXPECT_EQ(server_.port(), 0);
  EXPECT_FALSE(Request("127.0.0.1", port, "GET", "/healthz").has_value());
  const Result<void> again = server_.Start("127.0.0.1", port);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(server_.port(), port);
  const auto r = Request("127.0.0.1", port, "GET", "/healthz");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

// The daemon loads BoringSSL; OpenSSL 3 must never be mapped into it (docs/design.md §7).
// civetweb dlopens libssl.so/libcrypto.so only when initialised with TLS; we never do.
TEST_F(AdminServerTest, DoesNotLoadOpenSsl) {
  StartLoopback();
  ASSERT_TRUE(Request("127.0.0.1", server_.port(), "GET", "/metrics").has_value());
  std::ifstream maps("/proc/self/maps");
  ASSERT_TRUE(maps.is_open());
  std::string line;
  bool civetweb_mapped = false;
  while (std::getline(maps, line)) {
    EXPECT_EQ(line.find("libssl"), std::string::npos) << line;
    EXPECT_EQ(line.find("libcrypto"), std::string::npos) << line;
    civetweb_mapped = civetweb_mapped || line.find("libcivetweb") != std::string::npos;
  }
  EXPECT_TRUE(civetweb_mapped);  // the check looked at the right process
}

}  // namespace
}  // namespace sluice::metrics
