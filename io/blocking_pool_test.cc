// BlockingPool: work runs on a pool thread and the coroutine resumes on its shard.

#include "io/blocking_pool.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "base/wait_for.h"
#include "io/shard.h"
#include "io/task.h"
#include "io/testing/echo_shard.h"

namespace sluice::io {
namespace {

using std::chrono::seconds;

class BlockingPoolTest : public testing::EchoShardTest {};

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

TEST_F(BlockingPoolTest, ResumesOnTheShard) {
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

}  // namespace
}  // namespace sluice::io
