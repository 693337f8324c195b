// Caches on one PoolConcurrency::kShared pool, each used by its own thread:
// appends, beam remaps with copy-on-write, crops, resets and pool
// exhaustion interleave through the pool's lock. Run under --config=tsan
// (tag "threads") as well as the default and sanitizer configs.
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_pool.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

constexpr int kThreads = 4;
constexpr int kSteps = 400;

// One thread's life: a private cache on the shared pool. Every value it
// writes is tagged with the thread, so reading back another thread's bytes
// (a block handed out twice) fails the check.
void Worker(KVPool* pool, int thread, int* failures) {
  std::mt19937 rng(thread + 1);
  DynamicKVCache cache(pool);
  const float tag = static_cast<float>(thread + 1);
  for (int step = 0; step < kSteps; ++step) {
    const int64_t rows = cache.batch_size().value_or(1 + rng() % 2);
    const int64_t seq = 1 + rng() % 5;
    const Tensor key = *Full(DType::kFloat32, {rows, 2, seq, 4}, tag);
    absl::StatusOr<KVView> kv = cache.Update(key.view(), key.view(), 0);
    if (!kv.ok() &&
        kv.status().code() != absl::StatusCode::kResourceExhausted) {
      ++*failures;
    }
    switch (rng() % 6) {
      case 0:
        if (!cache.BatchRepeatInterleave(2).ok()) ++*failures;
        break;
      case 1: {
        const int64_t batch = cache.batch_size().value_or(0);
        if (batch > 0) {
          std::vector<int64_t> idx;
          for (int64_t i = 0; i < batch; ++i) idx.push_back(rng() % batch);
          if (batch > 2) idx.resize(2);
          if (!cache.ReorderCache(idx).ok()) ++*failures;
        }
        break;
      }
      case 2:
        if (!cache.Crop(rng() % 24).ok()) ++*failures;
        break;
      case 3:
        if (rng() % 4 == 0) cache.Reset();
        break;
      default:
        break;
    }
    // Everything visible is this thread's own data.
    absl::StatusOr<std::optional<KVView>> now = cache.Get(0);
    if (now.ok() && now->has_value()) {
      absl::StatusOr<KVTensors> dense = (**now).Gather();
      if (!dense.ok()) {
        ++*failures;
        continue;
      }
      for (float x : ToFloatVector(dense->key.view())) {
        if (x != tag) ++*failures;
      }
    }
  }
}

TEST(SharedPoolThreadsTest, CachesOnOnePoolKeepTheirOwnBytes) {
  std::unique_ptr<KVPool> pool =
      *KVPool::Create({.layout = KVLayout{1, 2, 4, DType::kFloat32, 4},
                       .num_blocks = 96,
                       .concurrency = PoolConcurrency::kShared});
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back(Worker, pool.get(), t, &failures[t]);
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
