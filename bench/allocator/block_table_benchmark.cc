// Benchmarks of block-table operations that replace KV copies: Fork (parallel
// sampling, beams), ReorderTables (beam reorder / batch select), the
// copy-on-write decision before a write (PrepareWrite) and a decode step's
// block append. Targets: fork of 256 blocks <= 1 us, 8 x 256 reorder <= 2 us
// (DESIGN.md "Performance targets").
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "base/check.h"
#include "benchmark/benchmark.h"

namespace pagedkv {
namespace {

std::unique_ptr<BlockPool> MakePool(int32_t num_blocks,
                                    PoolConcurrency concurrency) {
  BlockPool::Options options;
  options.num_blocks = num_blocks;
  options.concurrency = concurrency;
  absl::StatusOr<std::unique_ptr<BlockPool>> pool = BlockPool::Create(options);
  PKV_CHECK(pool.ok(), "%s", pool.status().ToString());
  return *std::move(pool);
}

BlockTable MakeTable(BlockPool* pool, int32_t num_blocks) {
  BlockTable table(pool);
  const absl::Status s = table.Grow(num_blocks);
  PKV_CHECK(s.ok(), "%s", s.ToString());
  return table;
}

// Parallel sampling: fork a prompt of `blocks` blocks, then drop the fork.
void BM_Fork(benchmark::State& state) {
  const int32_t blocks = static_cast<int32_t>(state.range(0));
  std::unique_ptr<BlockPool> pool =
      MakePool(blocks, static_cast<PoolConcurrency>(state.range(1)));
  const BlockTable table = MakeTable(pool.get(), blocks);
  for (auto _ : state) {
    BlockTable fork = table.Fork();
    benchmark::DoNotOptimize(fork.blocks().data());
  }  // The fork's destructor (one ReleaseAll) is timed too.
  state.SetItemsProcessed(state.iterations() * blocks);
  state.counters["shared_blocks"] = pool->stats().num_shared_blocks;
}
BENCHMARK(BM_Fork)
    ->ArgsProduct({{256, 8192}, {0, 1}})
    ->ArgNames({"blocks", "shared"});

// Beam search: each step reorders `beams` tables of `blocks` blocks in place
// by the chosen parents. skewed=0: a rotation, a pure permutation (no
// refcount touched; the workload of the former BM_GatherTables, which forked
// every row and released the old ones); skewed=1: beam 0 is chosen twice and
// beam 1 dropped, the usual beam-search shape.
void BM_ReorderTables(benchmark::State& state) {
  const int32_t beams = static_cast<int32_t>(state.range(0));
  const int32_t blocks = static_cast<int32_t>(state.range(1));
  const bool skewed = state.range(2) != 0;
  std::unique_ptr<BlockPool> pool =
      MakePool(beams * blocks, PoolConcurrency::kSingleThread);
  std::vector<BlockTable> tables;
  for (int32_t b = 0; b < beams; ++b) {
    tables.push_back(MakeTable(pool.get(), blocks));
  }
  std::vector<int32_t> indices(beams);
  for (int32_t b = 0; b < beams; ++b) indices[b] = (b + 1) % beams;
  if (skewed) indices[1] = indices[0];  // Reused every step: rows converge.
  for (auto _ : state) {
    ReorderTables(&tables, indices);
    benchmark::DoNotOptimize(tables.data());
  }
  state.SetItemsProcessed(state.iterations() * beams * blocks);
  state.counters["used_blocks"] = pool->num_used_blocks();
}
BENCHMARK(BM_ReorderTables)
    ->ArgsProduct({{8}, {256}, {0, 1}})
    ->ArgNames({"beams", "blocks", "skewed"});

// Decode append: before writing the last block, PrepareWrite decides
// whether it must be copied. private=1: the block is private (the common
// case: no copy, no block taken, no heap allocation). private=0: it is
// shared, so a block is taken and one CopyOp comes back holding the source;
// MarkDone releases it (the copy itself is the cache's and not timed here).
// Then the table is re-pointed at the shared block (one AddRef) and the
// private copy freed, as in the old BM_PrepareWrite, so the numbers compare.
void BM_PrepareWrite(benchmark::State& state) {
  const bool is_private = state.range(0) != 0;
  std::unique_ptr<BlockPool> pool =
      MakePool(64, PoolConcurrency::kSingleThread);
  BlockTable table = MakeTable(pool.get(), 16);
  BlockTable other = table.Fork();  // Shares every block with `table`.
  if (is_private) other.Clear();
  const int32_t last = table.num_blocks() - 1;
  const WriteTarget targets[] = {{&table, last}};
  WriteRequest request;
  request.targets = targets;
  int64_t copies = 0;
  for (auto _ : state) {
    absl::StatusOr<PendingCopies> pending = PrepareWrite(*pool, request);
    PKV_CHECK(pending.ok(), "%s", pending.status().ToString());
    benchmark::DoNotOptimize(pending->ops().data());
    copies += pending->size();
    pending->MarkDone();
    if (!is_private) {
      // Undo: share other's block again and free the private copy.
      table.DropBack(1);
      pool->AddRef(other[last]);
      table.Append(other[last]);
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["copies_per_write"] = benchmark::Counter(
      static_cast<double>(copies), benchmark::Counter::kAvgIterations);
  state.counters["free_blocks"] = pool->num_free_blocks();
}
BENCHMARK(BM_PrepareWrite)->Arg(1)->Arg(0)->ArgName("private");

// Decode growth: each iteration appends one block to a sequence; once it
// holds `blocks` blocks it finishes and a new (empty) sequence starts, timed
// and amortized. prepare_write=1: through PrepareWrite's TableGrowth (how the
// cache appends); 0: through BlockTable::Grow, the baseline. The growth of
// the table's vector is part of the cost.
void BM_AppendBlock(benchmark::State& state) {
  const int32_t blocks = static_cast<int32_t>(state.range(0));
  const bool prepare_write = state.range(1) != 0;
  std::unique_ptr<BlockPool> pool =
      MakePool(blocks, PoolConcurrency::kSingleThread);
  BlockTable table(pool.get());
  const TableGrowth growth[] = {{&table, 1}};
  WriteRequest request;
  request.growth = growth;
  for (auto _ : state) {
    if (table.num_blocks() == blocks) table = BlockTable(pool.get());
    if (prepare_write) {
      absl::StatusOr<PendingCopies> pending = PrepareWrite(*pool, request);
      PKV_CHECK(pending.ok(), "%s", pending.status().ToString());
    } else {
      const absl::Status s = table.Grow(1);
      PKV_CHECK(s.ok(), "%s", s.ToString());
    }
    benchmark::DoNotOptimize(table.blocks().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["used_blocks"] = pool->num_used_blocks();
}
BENCHMARK(BM_AppendBlock)
    ->ArgsProduct({{64, 4096}, {0, 1}})
    ->ArgNames({"blocks", "prepare_write"});

}  // namespace
}  // namespace pagedkv
