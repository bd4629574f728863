// Shard: cross-thread posts run on the shard's own thread.

#include "io/shard.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/wait_for.h"
#include "io/testing/echo_shard.h"

namespace sluice::io {
namespace {

using std::chrono::seconds;

class ShardTest : public testing::EchoShardTest {};

TEST_F(ShardTest, PostRunsOnShardThread) {
  StartShard(seconds(10));
  std::atomic<int> ran{0};
  std::thread::id shard_tid;
  shard_->Post([&] { shard_tid = std::this_thread::get_id(); });
  std::vector<std::thread> posters;
  posters.reserve(4);
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        shard_->Post([&] { ran.fetch_add(1); });
    });
  }
  for (auto& t : posters)
    t.join();
  WaitFor([&] { return ran.load() >= 4000; }, seconds(5));
  EXPECT_EQ(ran.load(), 4000);
  EXPECT_NE(shard_tid, std::this_thread::get_id());
}

}  // namespace
}  // namespace sluice::io
