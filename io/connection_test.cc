// Connection on a real ring over loopback: multishot recv into the inbox across tiny provided
// buffers, inbox back-pressure, idle timeouts, Abort() of a send in flight, ConnectTcp, and a
// stream transform started mid-stream (STARTTLS).

#include "io/connection.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "base/wait_for.h"
#include "io/listener.h"
#include "io/net.h"
#include "io/shard.h"
#include "io/stream_transform.h"
#include "io/task.h"
#include "io/testing/echo_shard.h"
#include "io/testing/loopback.h"

namespace sluice::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ConnectTo;
using testing::PortOf;
using testing::ReadLine;

class ConnectionTest : public testing::EchoShardTest {};

TEST_F(ConnectionTest, EchoesLinesAcrossSmallBuffers) {
  StartShard(seconds(10));
  int fd = ConnectTo(port_);
  ASSERT_GE(fd, 0);
  // 8 buffers of 64 bytes: a 2 KiB line forces ENOBUFS and re-arms.
  std::string big(2000, 'a');
  big += "\n";
  ASSERT_EQ(write(fd, big.data(), big.size()), static_cast<ssize_t>(big.size()));
  std::string got = ReadLine(fd);
  EXPECT_EQ(got, std::string(2000, 'A') + "\n");
  // 2 KiB through 512 bytes of buffers: the multishot recv ran dry and was re-armed.
  EXPECT_GT(shard_->stats().enobufs.load(), 0u);
  ASSERT_EQ(write(fd, "hello\nQUIT\n", 11), 11);
  EXPECT_EQ(ReadLine(fd), "HELLO\n");
  EXPECT_EQ(ReadLine(fd), "QUIT\n");
  char c;
  EXPECT_EQ(read(fd, &c, 1), 0);  // server closed
  close(fd);
}

TEST_F(ConnectionTest, IdleTimeoutFires) {
  StartShard(milliseconds(200));
  int fd = ConnectTo(port_);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ReadLine(fd), "TIMEOUT\r\n");
  close(fd);
  EXPECT_EQ(server_.timeouts.load(), 1);
}

TEST_F(ConnectionTest, BulkTransferSurvivesInboxBackpressure) {
  // 8 MiB in 1 MiB writes: the inbox passes its high-water mark, recv is
  // cancelled and must come back however the cancel races the reader.
  constexpr size_t kTotal = 8 << 20;
  StartShard(seconds(10), kTotal);
  int fd = ConnectTo(port_);
  ASSERT_GE(fd, 0);
  std::thread writer([fd] {
    std::string chunk(1 << 20, 'x');
    for (size_t sent = 0; sent < kTotal;) {
      ssize_t n = write(fd, chunk.data(), std::min(chunk.size(), kTotal - sent));
      if (n <= 0)
        break;
      sent += static_cast<size_t>(n);
    }
  });
  EXPECT_EQ(ReadLine(fd), "OK\n");
  writer.join();
  EXPECT_EQ(server_.bulk_bytes.load(), kTotal);
  close(fd);
}

// Runs ConnectTcp on the shard and reports the result to the test thread.
struct ConnectProbe {
  std::atomic<bool> done{false};
  std::atomic<int> error{-1};
  std::atomic<int> nodelay{-1};
  std::string reply;

  Detached Run(Shard* shard, SocketAddress addr, Duration timeout) {
    Result<int> fd = co_await ConnectTcp(*shard, addr, timeout);
    if (!fd.ok()) {
      error = fd.error().code;
      done = true;
      co_return;
    }
    int on = 0;
    socklen_t len = sizeof(on);
    if (getsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0)
      nodelay = on;
    auto conn = std::make_unique<Connection>(*shard, *fd);
    conn->Start();
    bool sent = co_await conn->SendAll("ping\n", seconds(5));
    if (sent) {
      while (conn->inbox().find('\n') == std::string_view::npos) {
        const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
        if (st != ReadStatus::kData)
          break;
      }
      reply = std::string(conn->inbox());
    }
    co_await conn->Close();
    error = 0;
    done = true;
  }
};

// Sends more than the peer's socket buffers hold to a peer that never reads:
// the send stays in flight until Abort() cancels it.
struct BlockedSend {
  std::atomic<bool> sending{false};
  std::atomic<bool> done{false};
  std::atomic<int> sent_ok{-1};
  Connection* conn = nullptr;  // shard thread only

  Detached Run(Shard* shard, int fd) {
    auto c = std::make_unique<Connection>(*shard, fd);
    conn = c.get();
    c->Start();
    sending = true;
    const bool ok = co_await c->SendAll(std::string(64 << 20, 'x'), seconds(30));
    sent_ok = ok ? 1 : 0;
    co_await c->Close();
    conn = nullptr;
    done = true;
  }
};

TEST_F(ConnectionTest, AbortCancelsTheSendInFlightAndTheRecv) {
  StartShard(seconds(10));
  auto any = SocketAddress::Parse("127.0.0.1", 0);
  ASSERT_TRUE(any.ok());
  auto lfd = ListenTcp(*any, 4);
  ASSERT_TRUE(lfd.ok());
  const int peer = ConnectTo(PortOf(*lfd));
  ASSERT_GE(peer, 0);
  const int fd = accept(*lfd, nullptr, nullptr);
  ASSERT_GE(fd, 0);
  BlockedSend s;
  shard_->Post([&] { s.Run(shard_.get(), fd); });
  ASSERT_TRUE(WaitFor([&] { return s.sending.load(); }, seconds(5)));
  // The peer has bytes queued (it never reads them): the 64 MiB send is under way and cannot
  // finish.
  ASSERT_TRUE(WaitFor(
      [&] {
        int queued = 0;
        return ioctl(peer, FIONREAD, &queued) == 0 && queued > 0;
      },
      seconds(5)));
  EXPECT_FALSE(s.done.load());
  shard_->Post([&] {
    if (s.conn != nullptr)
      s.conn->Abort();
  });
  // Close() waits for both requests (the multishot recv and the send) to end:
  // it only returns if both were cancelled.
  ASSERT_TRUE(WaitFor([&] { return s.done.load(); }, seconds(5)));
  EXPECT_EQ(s.sent_ok.load(), 0);
  close(peer);
  close(*lfd);
}

TEST_F(ConnectionTest, ConnectTcpReachesAServerAndReportsRefusal) {
  StartShard(seconds(10));
  ConnectProbe ok;
  auto addr = SocketAddress::Parse("127.0.0.1", port_);
  ASSERT_TRUE(addr.ok());
  shard_->Post([&] { ok.Run(shard_.get(), *addr, seconds(5)); });
  WaitFor([&] { return ok.done.load(); }, seconds(5));
  ASSERT_TRUE(ok.done);
  EXPECT_EQ(ok.error.load(), 0);
  EXPECT_EQ(ok.reply, "PING\n");  // our own echo server answered
  EXPECT_EQ(ok.nodelay.load(), 1) << "outbound sockets send without Nagle delay";

  // A port nobody listens on: bind one, learn its number, close it.
  auto any = SocketAddress::Parse("127.0.0.1", 0);
  auto lfd = ListenTcp(*any, 1);
  ASSERT_TRUE(lfd.ok());
  const uint16_t dead_port = PortOf(*lfd);
  close(*lfd);
  ConnectProbe refused;
  auto dead = SocketAddress::Parse("127.0.0.1", dead_port);
  shard_->Post([&] { refused.Run(shard_.get(), *dead, seconds(5)); });
  WaitFor([&] { return refused.done.load(); }, seconds(5));
  ASSERT_TRUE(refused.done);
  EXPECT_EQ(refused.error.load(), ECONNREFUSED);
}

// A server that writes its answer in two writes with Nagle on (RFC 896), like an SMTP server
// that sends each pipelined reply on its own: the second write leaves only once the first
// segment is acknowledged. The client side sends "ping\n" and waits for "first\n" then
// "second\n", `rounds` times, each time from the kernel's delayed-ACK ("pingpong") mode, which
// an exchange puts a socket in; a stall is a second segment 35 ms or more after the first
// (Linux delays an ACK by 40 ms at least). Real time: what is measured is the kernel's timer.
struct TwoSegmentProbe {
  static constexpr int kRounds = 5;
  std::atomic<bool> done{false};
  std::atomic<int> rounds{0};
  std::atomic<int> stalls{0};

  static bool Has(Connection& c, std::string_view s) {
    return c.inbox().find(s) != std::string_view::npos;
  }

  Detached Run(Shard* shard, SocketAddress addr, bool quick_ack) {
    Result<int> fd = co_await ConnectTcp(*shard, addr, seconds(5));
    if (!fd.ok()) {
      done = true;
      co_return;
    }
    auto conn = std::make_unique<Connection>(*shard, *fd);
    conn->SetQuickAck(quick_ack);
    conn->Start();
    for (int i = 0; i < kRounds; ++i) {
      const int zero = 0;
      setsockopt(*fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero));  // into pingpong mode
      const bool sent = co_await conn->SendAll("ping\n", seconds(5));
      if (!sent)
        break;
      std::optional<std::chrono::steady_clock::time_point> first;  // when "first\n" was seen
      bool ok = true;
      for (int w = 0; w < 100 && ok && !Has(*conn, "second\n"); ++w) {
        ok = co_await conn->WaitForData(seconds(5), false) == ReadStatus::kData;
        if (!first && Has(*conn, "first\n"))
          first = std::chrono::steady_clock::now();
      }
      if (!ok || !first || !Has(*conn, "second\n"))
        break;
      if (std::chrono::steady_clock::now() - *first >= milliseconds(35))
        ++stalls;
      conn->Consume(conn->inbox().size());
      ++rounds;
    }
    co_await conn->Close();
    done = true;
  }
};

// The server side of TwoSegmentProbe, on the test's thread: a plain socket, Nagle on.
void AnswerInTwoWrites(int listen_fd) {
  const int fd = accept(listen_fd, nullptr, nullptr);
  ASSERT_GE(fd, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  for (int i = 0; i < TwoSegmentProbe::kRounds; ++i) {
    if (ReadLine(fd) != "ping\n")
      break;
    ASSERT_EQ(write(fd, "first\n", 6), 6);
    ASSERT_EQ(write(fd, "second\n", 7), 7);
  }
  close(fd);
}

int PlainListener(uint16_t* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(fd, 4) != 0)
    return -1;
  timeval tv{5, 0};  // accept gives up after 5 s
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  *port = PortOf(fd);
  return fd;
}

TEST_F(ConnectionTest, QuickAckReleasesAReplyHeldByNagle) {
  StartShard(seconds(10));
  for (const bool quick_ack : {true, false}) {
    SCOPED_TRACE(quick_ack ? "quick ACKs" : "delayed ACKs");
    uint16_t port = 0;
    const int lfd = PlainListener(&port);
    ASSERT_GE(lfd, 0);
    auto addr = SocketAddress::Parse("127.0.0.1", port);
    ASSERT_TRUE(addr.ok());
    TwoSegmentProbe probe;
    shard_->Post([&] { probe.Run(shard_.get(), *addr, quick_ack); });
    AnswerInTwoWrites(lfd);
    WaitFor([&] { return probe.done.load(); }, seconds(10));
    close(lfd);
    ASSERT_TRUE(probe.done);
    ASSERT_EQ(probe.rounds.load(), TwoSegmentProbe::kRounds);
    if (quick_ack) {
      // The ACK goes out when the client waits for the rest: no stall (one for a busy machine).
      EXPECT_LE(probe.stalls.load(), 1);
    } else {
      // The control: without it every second segment waits for the delayed ACK (but in one
      // round: Linux acknowledges the first data of a connection at once).
      EXPECT_GE(probe.stalls.load(), TwoSegmentProbe::kRounds - 1);
    }
  }
}

// A toy transform: the "handshake" is the client sending "HI\n", answered
// with "OK\n"; after that every byte is XORed with 0x20 both ways.
class XorTransform final : public StreamTransform {
 public:
  bool Receive(std::string_view cipher, std::string* plain) override {
    for (char c : cipher) {
      if (!done_) {
        hello_.push_back(c);
        if (hello_ == "HI\n") {
          done_ = true;
          out_ += "OK\n";
        } else if (std::string_view("HI\n").substr(0, hello_.size()) != hello_) {
          failed_ = true;
          return false;
        }
        continue;
      }
      plain->push_back(static_cast<char>(c ^ 0x20));
    }
    return true;
  }
  bool Send(std::string_view plain, std::string* cipher) override {
    for (char c : plain)
      cipher->push_back(static_cast<char>(c ^ 0x20));
    return true;
  }
  std::string TakeOutput() override {
    return std::exchange(out_, {});
  }
  bool handshake_done() const override {
    return done_;
  }
  bool failed() const override {
    return failed_;
  }
  bool peer_closed() const override {
    return false;
  }
  void Close() override {
  }
  std::string error() const override {
    return failed_ ? "bad hello" : "";
  }

 private:
  std::string hello_, out_;
  bool done_ = false, failed_ = false;
};

struct TransformServer {
  Shard* shard{};
  std::atomic<bool> done{false};
  std::atomic<bool> handshake_ok{false};
  std::string got;

  Detached Serve(int fd) {
    auto conn = std::make_unique<Connection>(*shard, fd);
    conn->Start();
    // Plain phase: wait for "START\n", answer, then switch (like STARTTLS).
    while (conn->inbox().find('\n') == std::string_view::npos) {
      const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
      if (st != ReadStatus::kData)
        break;
    }
    conn->DiscardInbox();
    bool ok = co_await conn->SendAll("GO\n", seconds(5));
    conn->StartTransform(std::make_unique<XorTransform>());
    ok = ok && co_await conn->Handshake(seconds(5));
    handshake_ok = ok;
    if (ok) {
      while (conn->inbox().find('\n') == std::string_view::npos) {
        const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
        if (st != ReadStatus::kData)
          break;
      }
      got = std::string(conn->inbox());
      bool sent = co_await conn->SendAll("pong\n", seconds(5));
      (void)sent;
    }
    co_await conn->Close();
    done = true;
  }
};

// Ends the loop once the test session is over.
Detached StopWhenDone(Shard* shard, Listener* listener, TransformServer* server) {
  while (!server->done)
    co_await Sleep(*shard, milliseconds(5));
  listener->Stop();
  while (!listener->stopped())
    co_await Sleep(*shard, milliseconds(1));
  shard->Quit();
}

TEST(ConnectionTransformTest, UpgradesMidStreamAndDropsInjectedPlaintext) {
  auto addr = SocketAddress::Parse("127.0.0.1", 0);
  auto lfd = ListenTcp(*addr, 16);
  ASSERT_TRUE(lfd.ok());
  const uint16_t port = PortOf(*lfd);
  Shard shard(0, ShardOptions{.recv_buffers = 16, .recv_buffer_size = 1024});
  TransformServer server;
  std::atomic<bool> ready{false};
  std::thread t([&] {
    ASSERT_TRUE(shard.Init().ok());
    server.shard = &shard;
    Listener listener(shard, *lfd, [&](int cfd) { server.Serve(cfd); });
    listener.Start();
    ready = true;
    StopWhenDone(&shard, &listener, &server);
    shard.Run();
  });
  while (!ready)
    std::this_thread::yield();
  int fd = ConnectTo(port);
  ASSERT_GE(fd, 0);
  // "INJECTED" arrives with START in one packet: it must never reach the
  // upgraded stream (the STARTTLS injection defence, CVE-2011-0411).
  ASSERT_EQ(write(fd, "START\nINJECTED\n", 15), 15);
  EXPECT_EQ(ReadLine(fd), "GO\n");
  ASSERT_EQ(write(fd, "HI\n", 3), 3);
  EXPECT_EQ(ReadLine(fd), "OK\n");
  std::string ping = "ping\n";
  for (char& c : ping)
    c = static_cast<char>(c ^ 0x20);
  ASSERT_EQ(write(fd, ping.data(), ping.size()), static_cast<ssize_t>(ping.size()));
  std::string reply;
  char c;
  while (reply.size() < 5 && read(fd, &c, 1) == 1)
    reply.push_back(static_cast<char>(c ^ 0x20));
  EXPECT_EQ(reply, "pong\n");
  close(fd);
  t.join();
  EXPECT_TRUE(server.handshake_ok.load());
  EXPECT_EQ(server.got, "ping\n");
}

}  // namespace
}  // namespace sluice::io
