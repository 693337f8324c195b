// Caches on one PoolConcurrency::kShared pool, each used by its own thread
// (cache_worker.h): appends, beam remaps with copy-on-write, crops, resets
// and pool exhaustion interleave through the pool's lock. Run under
// --config=tsan (tag "threads") as well as the default and sanitizer configs.
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_pool.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tests/cache/cache_worker.h"

namespace pagedkv {
namespace {

constexpr int kThreads = 4;
constexpr int kSteps = 400;

TEST(SharedPoolThreadsTest, CachesOnOnePoolKeepTheirOwnBytes) {
  std::unique_ptr<KVPool> pool =
      *KVPool::Create({.layout = KVLayout{1, 2, 4, DType::kFloat32, 4},
                       .num_blocks = 96,
                       .concurrency = PoolConcurrency::kShared});
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pool, &failures, t] {
      testing::RunCacheWorker(
          pool.get(), t, [](int step) { return step < kSteps; }, &failures[t]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(failures[t], 0) << "thread " << t;
  }
  // Every cache is gone: every block is free again.
  pool->books().CheckInvariants();
  EXPECT_EQ(pool->books().num_free_blocks(), 96);
  EXPECT_EQ(pool->books().num_reserved_blocks(), 0);
}

}  // namespace
}  // namespace pagedkv
