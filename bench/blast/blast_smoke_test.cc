// Runs the generator's library code against a minimal SMTP sink on loopback
// (plain blocking sockets, one thread per connection) and checks the counts
// on both sides and the JSON report.

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "bench/blast/blast.h"

namespace sluice::blast {
namespace {

// Accepts SMTP sessions and swallows messages. RCPT TO addresses starting
// with reject_prefix get 550.
class SmtpSink {
 public:
  explicit SmtpSink(std::string reject_prefix = "") : reject_prefix_(std::move(reject_prefix)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0 ||
        listen(listen_fd_, 256) != 0) {
      return;
    }
    socklen_t len = sizeof(sin);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~SmtpSink() {
    stop_ = true;
    if (acceptor_.joinable())
      acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (std::thread& t : sessions_)
      t.join();
    close(listen_fd_);
  }

  uint16_t port() const {
    return port_;
  }
  int messages() const {
    return messages_.load();
  }
  int pipelined_batches() const {
    return pipelined_.load();
  }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0)
        continue;
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0)
        continue;
      std::lock_guard<std::mutex> lock(mu_);
      sessions_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  static bool SendText(int fd, const std::string& s) {
    return send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
  }

  void Serve(int fd) {
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SendText(fd, "220 sink ESMTP\r\n");
    std::string in;
    bool in_data = false;
    int good_rcpts = 0;
    char buf[16384];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0)
        break;
      in.append(buf, static_cast<size_t>(n));
      std::string out;
      size_t pos = 0;
      int commands = 0;
      bool quit = false;
      for (size_t nl; (nl = in.find("\r\n", pos)) != std::string::npos; pos = nl + 2) {
        const std::string line = in.substr(pos, nl - pos);
        if (in_data) {
          if (line == ".") {
            in_data = false;
            messages_.fetch_add(1);
            out += "250 2.0.0 queued\r\n";
          }
          continue;
        }
        ++commands;
        if (line.rfind("EHLO", 0) == 0) {
          out += "250-sink\r\n250-PIPELINING\r\n250 SIZE 10000000\r\n";
        } else if (line.rfind("MAIL FROM:", 0) == 0) {
          good_rcpts = 0;
          out += "250 2.1.0 ok\r\n";
        } else if (line.rfind("RCPT TO:<", 0) == 0) {
          if (!reject_prefix_.empty() &&
              line.compare(9, reject_prefix_.size(), reject_prefix_) == 0) {
            out += "550 5.1.1 no such user\r\n";
          } else {
            ++good_rcpts;
            out += "250 2.1.5 ok\r\n";
          }
        } else if (line == "DATA") {
          if (good_rcpts > 0) {
            in_data = true;
            out += "354 go ahead\r\n";
          } else {
            out += "554 5.5.1 no valid recipients\r\n";
          }
        } else if (line == "RSET") {
          out += "250 2.0.0 ok\r\n";
        } else if (line == "QUIT") {
          out += "221 2.0.0 bye\r\n";
          quit = true;
          break;
        } else {
          out += "500 5.5.2 what\r\n";
        }
      }
      in.erase(0, pos);
      if (commands >= 3)
        pipelined_.fetch_add(1);
      if (!out.empty() && !SendText(fd, out))
        break;
      if (quit)
        break;
    }
    close(fd);
  }

  const std::string reject_prefix_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> sessions_;  // guarded by mu_
  std::atomic<int> messages_{0};
  std::atomic<int> pipelined_{0};
};

BlastOptions SinkOptions(uint16_t port) {
  BlastOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.connections = 8;
  o.messages = 200;
  o.size = 2048;
  o.timeout_s = 5;
  return o;
}

TEST(BlastSmokeTest, OneMessagePerConnection) {
  SmtpSink sink;
  ASSERT_NE(sink.port(), 0);
  BlastOptions o = SinkOptions(sink.port());
  o.recipients = 2;
  Result<BlastReport> r = RunBlast(o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sent, 200u);
  EXPECT_EQ(r->accepted, 200u);
  EXPECT_EQ(r->rejected, 0u);
  EXPECT_EQ(r->errors, 0u);
  EXPECT_EQ(r->connections, 200u);
  EXPECT_EQ(r->latency.count(), 200u);
  EXPECT_GT(r->latency.ValueAtQuantile(0.5), 0u);
  EXPECT_EQ(r->bytes, 200 * (MakeMessage(o).size() + 3));
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(sink.messages(), 200);

  const std::string json = FormatJson(o, *r);
  for (const char* key :
       {"\"target\":", "\"sent\":200", "\"accepted\":200", "\"rejected\":0", "\"errors\":0",
        "\"elapsed_s\":", "\"messages_per_s\":", "\"mb_per_s\":", "\"latency_us\":{",
        "\"p50\":", "\"p90\":", "\"p99\":", "\"p999\":", "\"ok\":true"}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  }
  EXPECT_EQ(json.back(), '\n');
  EXPECT_NE(FormatTable(o, *r).find("accepted"), std::string::npos);
}

TEST(BlastSmokeTest, PersistentPipelinedSessionsOnTwoShards) {
  SmtpSink sink;
  ASSERT_NE(sink.port(), 0);
  BlastOptions o = SinkOptions(sink.port());
  o.per_connection = 0;
  o.pipelining = true;
  o.threads = 2;
  Result<BlastReport> r = RunBlast(o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->accepted, 200u);
  EXPECT_EQ(r->errors, 0u);
  // Persistent: never more than one connection per session. A session that
  // finds every message claimed before it starts does not connect at all (the
  // other shard's sessions can take all 200 first), so fewer is fine.
  EXPECT_GE(r->connections, 1u);
  EXPECT_LE(r->connections, 8u);
  EXPECT_EQ(sink.messages(), 200);
  // MAIL, RCPT and DATA arrived in one read at least once per message.
  EXPECT_GE(sink.pipelined_batches(), 100);
}

TEST(BlastSmokeTest, RejectedRecipientsAreCounted) {
  // Recipients are u<ticket % 1000>@...: "u1" matches u1, u10..u19, u100..u199.
  SmtpSink sink("u1");
  ASSERT_NE(sink.port(), 0);
  BlastOptions o = SinkOptions(sink.port());
  o.per_connection = 5;
  Result<BlastReport> r = RunBlast(o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sent, 200u);
  EXPECT_EQ(r->rejected, 111u);
  EXPECT_EQ(r->accepted, 89u);
  EXPECT_EQ(r->errors, 0u);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(sink.messages(), 89);
  EXPECT_NE(FormatJson(o, *r).find("\"ok\":false"), std::string::npos);
}

TEST(BlastSmokeTest, RefusedConnectionsEndTheRun) {
  // A port that was just free: bind, learn it, close.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  socklen_t len = sizeof(sin);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  close(fd);
  BlastOptions o = SinkOptions(ntohs(sin.sin_port));
  o.max_errors = 20;
  Result<BlastReport> r = RunBlast(o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_GE(r->errors, 20u);
  EXPECT_EQ(r->sent, 0u);
  EXPECT_FALSE(r->ok());
  ASSERT_FALSE(r->error_samples.empty());
  EXPECT_NE(r->error_samples[0].find("refused"), std::string::npos) << r->error_samples[0];
}

TEST(BlastSmokeTest, RejectsUnboundedRun) {
  BlastOptions o;
  o.messages = 0;
  EXPECT_FALSE(RunBlast(o).ok());
}

}  // namespace
}  // namespace sluice::blast
