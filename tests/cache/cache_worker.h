// tests/cache/cache_worker.h
//
// One thread's lucid-cache workload for the threaded tests: a DynamicKVCache
// on a shared KVPool (PoolConcurrency::kShared), appending, repeating rows,
// reordering (copy-on-write), cropping, resetting and running into the
// pool's end, each value tagged with the thread, so that reading back
// another thread's bytes (a block handed out twice, a copy from the wrong
// source) is counted as a failure. Uses layer 0 only; shapes follow the
// pool's layout.
//
//   int failures = 0;
//   std::thread t(
//       [&] { RunCacheWorker(pool, 0, [](int step) { return step < 400; },
//                            &failures); });
//   t.join();
//   EXPECT_EQ(failures, 0);
//
// Thread safety: each call runs on its own thread with its own cache.
#ifndef PAGEDKV_TESTS_CACHE_CACHE_WORKER_H_
#define PAGEDKV_TESTS_CACHE_CACHE_WORKER_H_

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_pool.h"
#include "tensor/factories.h"
#include "tensor/tensor.h"

namespace pagedkv::testing {

// Runs steps while keep_going(step); adds one to *failures per wrong value
// or unexpected error. Returns the number of steps run.
template <typename KeepGoing>
int RunCacheWorker(KVPool* pool, int thread, KeepGoing&& keep_going,
                   int* failures) {
  std::mt19937 rng(thread + 1);
  DynamicKVCache cache(pool);
  const KVLayout& l = pool->layout();
  const float tag = static_cast<float>(thread + 1);
  int step = 0;
  for (; keep_going(step); ++step) {
    const int64_t rows = cache.batch_size().value_or(1 + rng() % 2);
    const int64_t seq = 1 + rng() % 5;
    const Tensor key =
        *Full(l.dtype, {rows, l.num_kv_heads, seq, l.head_dim}, tag);
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
  return step;
}

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_CACHE_CACHE_WORKER_H_
