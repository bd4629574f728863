#pragma once

// A shard on its own thread, a listener on a loopback port and a line-echo server behind it: the
// fixture of the io/ tests that drive real sockets through a real ring.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "io/listener.h"
#include "io/shard.h"
#include "io/task.h"

namespace sluice::io::testing {

// Echoes lines back upper-cased until "QUIT"; counts closes.
struct EchoServer {
  Shard* shard = nullptr;
  std::atomic<size_t> bulk_bytes{0};
  std::atomic<int> closed{0};
  std::atomic<int> timeouts{0};

  // Counts bytes until `total`, then answers "OK\n". Consumes after every
  // wake, like a DATA reader, so the inbox fills past its high-water mark
  // and recv pauses and resumes many times.
  Detached CountBytes(int fd, size_t total);
  // Answers "TIMEOUT\r\n" and closes when no line comes within `idle`.
  Detached Serve(int fd, Duration idle);
};

class EchoShardTest : public ::testing::Test {
 protected:
  // bulk > 0: every connection is served by CountBytes(bulk), else by Serve(idle).
  void StartShard(Duration idle, size_t bulk = 0);
  void TearDown() override;

  // Stops the listener, waits for its accept request to end, ends the loop.
  Detached StopAll();

  std::unique_ptr<Shard> shard_;
  std::unique_ptr<Listener> listener_;
  EchoServer server_;
  std::thread thread_;
  uint16_t port_ = 0;
  std::string init_error_;
};

}  // namespace sluice::io::testing
