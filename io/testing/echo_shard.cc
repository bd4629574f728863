#include "io/testing/echo_shard.h"

#include <chrono>
#include <string_view>
#include <utility>

#include "base/ascii.h"
#include "io/connection.h"
#include "io/net.h"
#include "io/testing/loopback.h"

namespace sluice::io::testing {

using std::chrono::milliseconds;
using std::chrono::seconds;

Detached EchoServer::CountBytes(int fd, size_t total) {
  auto conn = std::make_unique<Connection>(*shard, fd);
  conn->Start();
  size_t got = 0;
  while (got < total) {
    const size_t n = conn->inbox().size();
    got += n;
    conn->Consume(n);
    if (got >= total)
      break;
    const ReadStatus st = co_await conn->WaitForData(seconds(5), false);
    if (st != ReadStatus::kData)
      break;
  }
  bulk_bytes.store(got);
  bool ok = co_await conn->SendAll(got >= total ? "OK\n" : "SHORT\n", seconds(5));
  (void)ok;
  co_await conn->Close();
  closed.fetch_add(1);
}

Detached EchoServer::Serve(int fd, Duration idle) {
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
      if (st != ReadStatus::kData)
        break;
      continue;
    }
    std::string line(in.substr(0, nl + 1));
    conn->Consume(nl + 1);
    if (line.rfind("QUIT", 0) == 0)
      quit = true;
    AsciiUpperInPlace(&line);
    bool ok = co_await conn->SendAll(line, seconds(5));
    if (!ok)
      break;
  }
  co_await conn->Close();
  closed.fetch_add(1);
}

void EchoShardTest::StartShard(Duration idle, size_t bulk) {
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
    listener_ = std::make_unique<Listener>(*shard_, fd, [this, idle, bulk](int cfd) {
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
  while (!ready)
    std::this_thread::yield();
  ASSERT_EQ(init_error_, "");
}

void EchoShardTest::TearDown() {
  if (thread_.joinable()) {
    shard_->Post([this] { StopAll(); });
    thread_.join();
  }
}

Detached EchoShardTest::StopAll() {
  listener_->Stop();
  while (!listener_->stopped())
    co_await Sleep(*shard_, milliseconds(1));
  shard_->Quit();
}

}  // namespace sluice::io::testing
