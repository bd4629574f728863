// Listener: the multishot accept hands every connection of a burst to the shard.

#include "io/listener.h"

#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/wait_for.h"
#include "io/testing/echo_shard.h"
#include "io/testing/loopback.h"

namespace sluice::io {
namespace {

using std::chrono::seconds;
using testing::ConnectTo;
using testing::ReadLine;

class ListenerTest : public testing::EchoShardTest {};

TEST_F(ListenerTest, ManyConcurrentConnections) {
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

}  // namespace
}  // namespace sluice::io
