// Drives a real io_uring shard on loopback: multishot accept, multishot recv
// into the inbox, sends, timers, cross-thread posts and close.

#include "io/shard.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/ascii.h"
#include "base/wait_for.h"
#include "io/blocking_pool.h"
#include "io/connection.h"
#include "io/listener.h"
#include "io/stream_transform.h"
#include "io/net.h"
#include "io/task.h"

namespace sluice::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

uint16_t PortOf(int fd) {
  sockaddr_in sin{};
  socklen_t len = sizeof(sin);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  return ntohs(sin.sin_port);
}

int ConnectTo(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

std::string ReadLine(int fd) {
  std::string out;
  char c;
  while (out.size() < 1 << 20 && read(fd, &c, 1) == 1) {
    out.push_back(c);
    if (c == '\n') break;
  }
  return out;
}

// Echoes lines back upper-cased until "QUIT"; counts closes.
struct EchoServer {
  Shard* shard;
  std::atomic<size_t> bulk_bytes{0};

  // Counts bytes until `total`, then answers "OK\n". Consumes after every
  // wake, like a DATA reader, so the inbox fills past its high-water mark
  // and recv pauses and resumes many times.
  Detached CountBytes(int fd, size_t total) {
    auto conn = std::make_unique<Connection>(*shard, fd);
    conn->Start();
    size_t got = 0;
    while (got < total) {
      const size_t n = conn->inbox().size();
      got += n;
      conn->Consume(n);
      if (got >= total) break;
      const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
      if (st != ReadStatus::kData) break;
    }
    bulk_bytes.store(got);
    bool ok = co_await conn->SendAll(got >= total ? "OK\n" : "SHORT\n", seconds(5));
    (void)ok;
    co_await conn->Close();
    closed.fetch_add(1);
  }

  std::atomic<int> closed{0};
  std::atomic<int> timeouts{0};

  Detached Serve(int fd, Duration idle) {
    auto conn = std::make_unique<Connection>(*shard, fd);
    conn->Start();
    bool quit = false;
    while (!quit) {
      std::string_view in = conn->inbox();
      const size_t nl = in.find('\n');
      if (nl == std::string_view::npos) {
        const ReadStatus st = co_await conn->WaitForData(idle, true);
        if (st == ReadStatus::kTimeout) {
          timeouts.fetch_add(1);
          bool ok = co_await conn->SendAll("TIMEOUT\r\n", seconds(5));
          (void)ok;
          break;
        }
        if (st != ReadStatus::kData) break;
        continue;
      }
      std::string line(in.substr(0, nl + 1));
      conn->Consume(nl + 1);
      if (line.rfind("QUIT", 0) == 0) quit = true;
      AsciiUpperInPlace(&line);
      bool ok = co_await conn->SendAll(line, seconds(5));
      if (!ok) break;
    }
    co_await conn->Close();
    closed.fetch_add(1);
  }
};

class ShardTest : public ::testing::Test {
 protected:
  void StartShard(Duration idle, size_t bulk = 0) {
    auto addr = SocketAddress::Parse("127.0.0.1", 0);
    ASSERT_TRUE(addr.ok());
    auto lfd = ListenTcp(*addr, 128);
    ASSERT_TRUE(lfd.ok()) << lfd.error().message;
    port_ = PortOf(*lfd);
    std::atomic<bool> ready{false};
    thread_ = std::thread([this, fd = *lfd, idle, bulk, &ready] {
      // Tiny buffers exercise ENOBUFS; the bulk test needs batches big
      // enough to pass the inbox high-water mark in one loop iteration.
      shard_ = std::make_unique<Shard>(
          0, bulk > 0 ? ShardOptions{.recv_buffers = 64, .recv_buffer_size = 16384}
                      : ShardOptions{.recv_buffers = 8, .recv_buffer_size = 64});
      auto r = shard_->Init();
      if (!r) {
        init_error_ = r.error().message;
        ready = true;
        return;
      }
      server_.shard = shard_.get();
      listener_ = std::make_unique<Listener>(*shard_, fd,
                                             [this, idle, bulk](int cfd) {
                                               if (bulk > 0) {
                                                 server_.CountBytes(cfd, bulk);
                                               } else {
                                                 server_.Serve(cfd, idle);
                                               }
                                             });
      listener_->Start();
      ready = true;
      shard_->Run();
      listener_.reset();
    });
    while (!ready) std::this_thread::yield();
    ASSERT_EQ(init_error_, "");
  }
  void TearDown() override {
    if (thread_.joinable()) {
      shard_->Post([this] { StopAll(); });
      thread_.join();
    }
  }

  // Stops the listener, waits for its accept request to end, ends the loop.
  Detached StopAll() {
    listener_->Stop();
    while (!listener_->stopped()) co_await Sleep(*shard_, milliseconds(1));
    shard_->Quit();
  }

  std::unique_ptr<Shard> shard_;
  std::unique_ptr<Listener> listener_;
  EchoServer server_;
  std::thread thread_;
  uint16_t port_ = 0;
  std::string init_error_;
};

TEST_F(ShardTest, EchoesLinesAcrossSmallBuffers) {
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

TEST_F(ShardTest, ManyConcurrentConnections) {
  StartShard(seconds(10));
  std::vector<int> fds;
  for (int i = 0; i < 50; ++i) {
    int fd = ConnectTo(port_);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    std::string msg = "conn" + std::to_string(i) + "\n";
    ASSERT_EQ(write(fds[i], msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    EXPECT_EQ(ReadLine(fds[i]), "CONN" + std::to_string(i) + "\n");
    close(fds[i]);
  }
  WaitFor([&] { return server_.closed.load() >= 50; }, seconds(5));
  EXPECT_EQ(server_.closed.load(), 50);
}

TEST_F(ShardTest, IdleTimeoutFires) {
  StartShard(milliseconds(200));
  int fd = ConnectTo(port_);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ReadLine(fd), "TIMEOUT\r\n");
  close(fd);
  EXPECT_EQ(server_.timeouts.load(), 1);
}

TEST_F(ShardTest, BulkTransferSurvivesInboxBackpressure) {
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
      if (n <= 0) break;
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
    if (getsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0) nodelay = on;
    auto conn = std::make_unique<Connection>(*shard, *fd);
    conn->Start();
    bool sent = co_await conn->SendAll("ping\n", seconds(5));
    if (sent) {
      while (conn->inbox().find('\n') == std::string_view::npos) {
        const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
        if (st != ReadStatus::kData) break;
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

TEST_F(ShardTest, AbortCancelsTheSendInFlightAndTheRecv) {
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
    if (s.conn != nullptr) s.conn->Abort();
  });
  // Close() waits for both requests (the multishot recv and the send) to end:
  // it only returns if both were cancelled.
  ASSERT_TRUE(WaitFor([&] { return s.done.load(); }, seconds(5)));
  EXPECT_EQ(s.sent_ok.load(), 0);
  close(peer);
  close(*lfd);
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

TEST_F(ShardTest, ConnectTcpReachesAServerAndReportsRefusal) {
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
    for (char c : plain) cipher->push_back(static_cast<char>(c ^ 0x20));
    return true;
  }
  std::string TakeOutput() override { return std::exchange(out_, {}); }
  bool handshake_done() const override { return done_; }
  bool failed() const override { return failed_; }
  bool peer_closed() const override { return false; }
  void Close() override {}
  std::string error() const override { return failed_ ? "bad hello" : ""; }

 private:
  std::string hello_, out_;
  bool done_ = false, failed_ = false;
};

struct TransformServer {
  Shard* shard;
  std::atomic<bool> done{false};
  std::atomic<bool> handshake_ok{false};
  std::string got;

  Detached Serve(int fd) {
    auto conn = std::make_unique<Connection>(*shard, fd);
    conn->Start();
    // Plain phase: wait for "START\n", answer, then switch (like STARTTLS).
    while (conn->inbox().find('\n') == std::string_view::npos) {
      const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
      if (st != ReadStatus::kData) break;
    }
    conn->DiscardInbox();
    bool ok = co_await conn->SendAll("GO\n", seconds(5));
    conn->StartTransform(std::make_unique<XorTransform>());
    ok = ok && co_await conn->Handshake(seconds(5));
    handshake_ok = ok;
    if (ok) {
      while (conn->inbox().find('\n') == std::string_view::npos) {
        const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
        if (st != ReadStatus::kData) break;
      }
      got = std::string(conn->inbox());
      bool sent = co_await conn->SendAll("pong\n", seconds(5));
      (void)sent;
    }
    co_await conn->Close();
    done = true;
  }
};

struct PoolProbe {
  std::atomic<bool> done{false};
  std::thread::id worker;
  std::thread::id resumed_on;
  int value = 0;

  Detached Run(Shard* shard, BlockingPool* pool) {
    int v = co_await pool->Run(*shard, [this] {
      worker = std::this_thread::get_id();
      return 42;
    });
    value = v;
    resumed_on = std::this_thread::get_id();
    done = true;
  }
};

TEST_F(ShardTest, BlockingPoolResumesOnTheShard) {
  StartShard(seconds(10));
  BlockingPool pool(2);
  PoolProbe probe;
  std::thread::id shard_tid;
  shard_->Post([&] {
    shard_tid = std::this_thread::get_id();
    probe.Run(shard_.get(), &pool);
  });
  WaitFor([&] { return probe.done.load(); }, seconds(5));
  ASSERT_TRUE(probe.done);
  EXPECT_EQ(probe.value, 42);
  EXPECT_EQ(probe.resumed_on, shard_tid);
  EXPECT_NE(probe.worker, shard_tid);
}

// Ends the loop once the test session is over.
Detached StopWhenDone(Shard* shard, Listener* listener, TransformServer* server) {
  while (!server->done) co_await Sleep(*shard, milliseconds(5));
  listener->Stop();
  while (!listener->stopped()) co_await Sleep(*shard, milliseconds(1));
  shard->Quit();
}

TEST(TransformTest, UpgradesMidStreamAndDropsInjectedPlaintext) {
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
  while (!ready) std::this_thread::yield();
  int fd = ConnectTo(port);
  ASSERT_GE(fd, 0);
  // "INJECTED" arrives with START in one packet: it must never reach the
  // upgraded stream (the STARTTLS injection defence, CVE-2011-0411).
  ASSERT_EQ(write(fd, "START\nINJECTED\n", 15), 15);
  EXPECT_EQ(ReadLine(fd), "GO\n");
  ASSERT_EQ(write(fd, "HI\n", 3), 3);
  EXPECT_EQ(ReadLine(fd), "OK\n");
  std::string ping = "ping\n";
  for (char& c : ping) c = static_cast<char>(c ^ 0x20);
  ASSERT_EQ(write(fd, ping.data(), ping.size()), static_cast<ssize_t>(ping.size()));
  std::string reply;
  char c;
  while (reply.size() < 5 && read(fd, &c, 1) == 1) reply.push_back(static_cast<char>(c ^ 0x20));
  EXPECT_EQ(reply, "pong\n");
  close(fd);
  t.join();
  EXPECT_TRUE(server.handshake_ok.load());
  EXPECT_EQ(server.got, "ping\n");
}

TEST_F(ShardTest, PostRunsOnShardThread) {
  StartShard(seconds(10));
  std::atomic<int> ran{0};
  std::thread::id shard_tid;
  shard_->Post([&] { shard_tid = std::this_thread::get_id(); });
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) shard_->Post([&] { ran.fetch_add(1); });
    });
  }
  for (auto& t : posters) t.join();
  WaitFor([&] { return ran.load() >= 4000; }, seconds(5));
  EXPECT_EQ(ran.load(), 4000);
  EXPECT_NE(shard_tid, std::this_thread::get_id());
}

}  // namespace
}  // namespace sluice::io
