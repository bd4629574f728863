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
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <gtest/gtest.h>
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
