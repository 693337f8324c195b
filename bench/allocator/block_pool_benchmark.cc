// Benchmarks of the pool's hot path: allocate + free per block, at several
// occupancies, single blocks and batches, with and without the kShared lock,
// and two threads contending for one kShared pool. Target: <= 10 ns per
// block (DESIGN.md "Performance targets").
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "base/check.h"
#include "benchmark/benchmark.h"

namespace pagedkv {
namespace {

constexpr int32_t kNumBlocks = 1 << 14;

std::unique_ptr<BlockPool> MakePool(int32_t num_blocks,
                                    PoolConcurrency concurrency) {
  BlockPool::Options options;
  options.num_blocks = num_blocks;
  options.concurrency = concurrency;
  absl::StatusOr<std::unique_ptr<BlockPool>> pool = BlockPool::Create(options);
  PKV_CHECK(pool.ok(), "%s", pool.status().ToString());
  return *std::move(pool);
}

// Steady-state decoding: per iteration, finishing sequences return `batch`
// blocks and new ones take `batch` blocks, while long-lived sequences keep
// the pool `occupancy_pct` percent full. batch 1 uses TryAllocate/Release;
// larger batches use Allocate/ReleaseAll (one lock per batch when shared).
void BM_AllocateRelease(benchmark::State& state) {
  const int32_t batch = static_cast<int32_t>(state.range(0));
  const int64_t occupancy_pct = state.range(1);
  const auto concurrency = static_cast<PoolConcurrency>(state.range(2));
  std::unique_ptr<BlockPool> pool = MakePool(kNumBlocks, concurrency);

  // Untimed setup: fill to the target occupancy, leaving room for one batch.
  const int64_t to_hold =
      std::min<int64_t>(kNumBlocks * occupancy_pct / 100, kNumBlocks - batch);
  absl::StatusOr<std::vector<BlockId>> long_lived =
      pool->Allocate(static_cast<int32_t>(to_hold));
  PKV_CHECK(long_lived.ok(), "%s", long_lived.status().ToString());

  if (batch == 1) {
    for (auto _ : state) {
      const std::optional<BlockId> id = pool->TryAllocate();
      benchmark::DoNotOptimize(id);
      pool->Release(*id);
    }
  } else {
    for (auto _ : state) {
      absl::StatusOr<std::vector<BlockId>> ids = pool->Allocate(batch);
      benchmark::DoNotOptimize(ids->data());
      pool->ReleaseAll(*ids);
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["free_blocks"] = pool->num_free_blocks();
}
BENCHMARK(BM_AllocateRelease)
    ->ArgsProduct({{1, 16}, {0, 50, 99}, {0, 1}})
    ->ArgNames({"batch", "occupancy_pct", "shared"});

// The same loop through a Reservation (a static cache's decode step).
void BM_ReservationAllocateRelease(benchmark::State& state) {
  const int32_t batch = static_cast<int32_t>(state.range(0));
  std::unique_ptr<BlockPool> pool =
      MakePool(kNumBlocks, PoolConcurrency::kSingleThread);
  absl::StatusOr<Reservation> reservation = pool->Reserve(1024);
  PKV_CHECK(reservation.ok(), "%s", reservation.status().ToString());
  for (auto _ : state) {
    absl::StatusOr<std::vector<BlockId>> ids = reservation->Allocate(batch);
    benchmark::DoNotOptimize(ids->data());
    pool->ReleaseAll(*ids);
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["reserved_blocks"] = pool->num_reserved_blocks();
}
BENCHMARK(BM_ReservationAllocateRelease)->Arg(16)->ArgName("batch");

// Two schedulers (threads) sharing one kShared pool, each allocating and
// freeing `batch` blocks per iteration: the cost of lock contention.
std::unique_ptr<BlockPool>& SharedPoolForThreads() {
  static auto* pool = new std::unique_ptr<BlockPool>(
      MakePool(kNumBlocks, PoolConcurrency::kShared));
  return *pool;
}

void BM_SharedPoolThreads(benchmark::State& state) {
  const int32_t batch = static_cast<int32_t>(state.range(0));
  BlockPool* pool = SharedPoolForThreads().get();
  for (auto _ : state) {
    absl::StatusOr<std::vector<BlockId>> ids = pool->Allocate(batch);
    benchmark::DoNotOptimize(ids->data());
    pool->ReleaseAll(*ids);
  }
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_SharedPoolThreads)
    ->Arg(1)
    ->Arg(16)
    ->ArgName("batch")
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

}  // namespace
}  // namespace pagedkv
