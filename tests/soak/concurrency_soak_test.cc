// The concurrency soak: for a bounded wall time, threads drive lucid caches
// (cache_worker.h) and serving managers (manager_worker.h) on ONE shared
// pool at once: appends, copy-on-write remaps and forks, crops and
// truncations, preemption, swaps through each manager's host tier, and the
// pool running out under all of them. Every thread checks that every byte
// it can see is its own, and every failed call that it changed nothing; at
// the end every block of the pool is free and its books are consistent.
//
// The time comes from PKV_SOAK_SECONDS (default 3, for `bazel test //...`);
// CI runs it for longer under ThreadSanitizer (.ci/run). It has the
// "threads" tag, so every threaded configuration runs it.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_pool.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tests/cache/cache_worker.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/cache/serving/manager_worker.h"

namespace pagedkv {
namespace {

constexpr int kManagerThreads = 2;
constexpr int kCacheThreads = 2;
constexpr int32_t kPoolBlocks = 96;

double SoakSeconds() {
  const char* s = std::getenv("PKV_SOAK_SECONDS");
  if (s == nullptr) return 3;
  const double v = std::atof(s);
  return v > 0 ? v : 3;
}

TEST(ConcurrencySoakTest, CachesAndManagersShareOnePoolForTheWholeSoak) {
  const double seconds = SoakSeconds();
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = testing::SmallLayout(),
                      .num_blocks = kPoolBlocks,
                      .concurrency = PoolConcurrency::kShared});
  ASSERT_TRUE(pool.ok()) << pool.status();
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  // Each thread checks the clock every 64 steps.
  auto keep_going = [deadline](int step) {
    return step % 64 != 0 || std::chrono::steady_clock::now() < deadline;
  };

  std::vector<std::unique_ptr<testing::ManagerWorker>> managers;
  for (int i = 0; i < kManagerThreads; ++i) {
    managers.push_back(
        std::make_unique<testing::ManagerWorker>(pool->get(), i));
  }
  std::vector<int> cache_failures(kCacheThreads, 0);
  std::vector<int> cache_steps(kCacheThreads, 0);
  std::vector<std::thread> threads;
  for (auto& m : managers) {
    threads.emplace_back([&m, &keep_going] { m->Run(keep_going); });
  }
  for (int t = 0; t < kCacheThreads; ++t) {
    threads.emplace_back([&, t] {
      cache_steps[t] = testing::RunCacheWorker(pool->get(), 100 + t, keep_going,
                                               &cache_failures[t]);
    });
  }
  for (std::thread& t : threads) t.join();

  int64_t manager_steps = 0;
  int64_t exhausted = 0;
  for (const auto& m : managers) {
    EXPECT_EQ(m->error(), "");
    manager_steps += m->steps();
    exhausted += m->exhausted();
  }
  int64_t steps = manager_steps;
  for (int t = 0; t < kCacheThreads; ++t) {
    EXPECT_EQ(cache_failures[t], 0) << "cache thread " << t;
    steps += cache_steps[t];
  }
  std::printf(
      "soak: %.0f s, %lld manager steps, %lld cache steps, "
      "%lld calls that ran out\n",
      seconds, static_cast<long long>(manager_steps),
      static_cast<long long>(steps - manager_steps),
      static_cast<long long>(exhausted));
  // It did run, and the pool was small enough to run out.
  EXPECT_GT(manager_steps, 100);
  EXPECT_GT(steps - manager_steps, 100);
  EXPECT_GT(exhausted, 0);
  EXPECT_EQ((*pool)->num_blocks(), kPoolBlocks);
  testing::ExpectEveryBlockFree((*pool)->books());
}

}  // namespace
}  // namespace pagedkv
