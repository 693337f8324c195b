// Several KVCacheManagers, one per thread, on one KVPool made with
// PoolConcurrency::kShared (Options::pool): the setup of a server that runs
// one scheduler per model replica over one memory budget. Each thread runs
// its own seeded random workload (manager_worker.h) and checks the bytes of
// its sequences after every step. Half the managers admit by reservation:
// their started requests must never run out, however greedy the other
// threads are. At the end every block is free.
//
// Run under ThreadSanitizer as well (tags = ["threads"]).
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_pool.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/cache/serving/manager_worker.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::ManagerWorker;
using ::pagedkv::testing::SmallLayout;

constexpr int kThreads = 4;
constexpr int kSteps = 2500;
constexpr int32_t kPoolBlocks = 64;

TEST(KVCacheManagerThreadsTest, ManagersOnASharedPoolKeepTheirBytesApart) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = SmallLayout(),
                      .num_blocks = kPoolBlocks,
                      .concurrency = PoolConcurrency::kShared});
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<std::unique_ptr<ManagerWorker>> workers;
  for (int i = 0; i < kThreads; ++i) {
    workers.push_back(std::make_unique<ManagerWorker>(pool->get(), i));
  }
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back(
        [&w] { w->Run([](int step) { return step < kSteps; }); });
  }
  for (std::thread& t : threads) t.join();

  int64_t appends = 0;
  int64_t copies = 0;
  int64_t exhausted = 0;
  for (const auto& w : workers) {
    EXPECT_EQ(w->error(), "");
    appends += w->appends();
    copies += w->cow_copies();
    exhausted += w->exhausted();
  }
  // The workload did run: many steps, forks that diverged, and a pool small
  // enough that the managers ran out now and then.
  EXPECT_GT(appends, kThreads * kSteps / 8);
  EXPECT_GT(copies, 0);
  EXPECT_GT(exhausted, 0);
  EXPECT_EQ((*pool)->num_blocks(), kPoolBlocks);
  testing::ExpectEveryBlockFree((*pool)->books());
}

}  // namespace
}  // namespace pagedkv
