// Cache operations at the DESIGN.md shapes (32 layers, 8 KV heads, head_dim
// 128, block_tokens 16, 4 beams), each measured four ways (argument `impl`):
// 0 = the paged cache, 1 = the HuggingFace-style contiguous baseline, 2 =
// memcpy of the bytes the operation must move (for zero-copy remaps: the
// bytes the baseline moves) between reused buffers, 3 = the same bytes into
// cold memory (a 1 GiB ring walked from a warm source). `dtype` is 0 =
// float16, 1 = float32.
//
// Every benchmark times one call per iteration with manual timing: an
// operation that changes the state it needs (select shrinks the batch, crop
// drops tokens, decode grows the cache) is put back by an untimed Restore()
// after the timed call, so there is no PauseTiming and setup stays outside the
// loop. The 8,192-token float32 baselines move gigabytes per call (about
// 10 GiB peak for repeat-interleave); filter with --benchmark_filter.
//
//   bazel run -c opt //bench/cache:kv_cache_benchmark --
//       --benchmark_filter='BM_ReorderCache/impl:0'   (paged only)
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "bench/cache/kv_cache_fixtures.h"
#include "bench/cache/workload.h"
#include "benchmark/benchmark.h"

namespace pagedkv::bench {
namespace {

void RunWorkload(benchmark::State& state, Op op) {
  WorkloadOptions options;
  options.op = op;
  options.impl = static_cast<Impl>(state.range(0));
  options.dtype = DTypeFromArg(state.range(1));
  if (op == Op::kAllocFree || op == Op::kFork256) {
    options.context = kForkBlocks * kBlockTokens;
  } else {
    options.context = state.range(2);
  }
  if (op == Op::kCrop) options.keep = state.range(3);

  absl::StatusOr<std::unique_ptr<Workload>> workload = MakeWorkload(options);
  if (!workload.ok()) {
    state.SkipWithError(workload.status().ToString().c_str());
    return;
  }
  Workload& w = **workload;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    w.Run();
    benchmark::ClobberMemory();
    const auto stop = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    w.Restore();
  }
  state.SetItemsProcessed(state.iterations() * w.items_per_run());
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(w.bytes_per_run()));
  for (const auto& [name, value] : w.Counters()) state.counters[name] = value;
}

void CacheGrid(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{0, 1, 2, 3}, {0, 1}, {512, 2048, 8192}})
      ->ArgNames({"impl", "dtype", "context"})
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

// Beam-search decode step: one token (4 beams x 8 heads x 128) appended to
// every layer of a dynamic cache whose beams share a `context` prefix.
void BM_DecodeAppend(benchmark::State& state) {
  RunWorkload(state, Op::kDecodeAppend);
}
BENCHMARK(BM_DecodeAppend)->Apply(CacheGrid);

// Chunked prefill: 512 tokens appended to every layer of one sequence that
// holds context - 512 tokens (context 512: the first chunk).
void BM_Prefill(benchmark::State& state) { RunWorkload(state, Op::kPrefill); }
BENCHMARK(BM_Prefill)->Apply(CacheGrid);

// Beam search's per-step ReorderCache of 4 beams (a permutation).
void BM_ReorderCache(benchmark::State& state) {
  RunWorkload(state, Op::kReorderCache);
}
BENCHMARK(BM_ReorderCache)->Apply(CacheGrid);

// Contrastive-search style BatchSelectIndices: keep rows {0, 2} of 4.
void BM_BatchSelectIndices(benchmark::State& state) {
  RunWorkload(state, Op::kBatchSelectIndices);
}
BENCHMARK(BM_BatchSelectIndices)->Apply(CacheGrid);

// Beam expansion after prefill: BatchRepeatInterleave(4) of one sequence.
void BM_BatchRepeatInterleave(benchmark::State& state) {
  RunWorkload(state, Op::kBatchRepeatInterleave);
}
BENCHMARK(BM_BatchRepeatInterleave)->Apply(CacheGrid);

// Sliding-window / speculative rollback Crop of one sequence: keep 1,024 of
// 4,096 tokens; two more cases free the same 3,072 tokens while keeping 256
// or 5,120, to show the cost does not depend on the tokens kept.
void BM_Crop(benchmark::State& state) { RunWorkload(state, Op::kCrop); }
BENCHMARK(BM_Crop)
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1}, {4096}, {1024}})
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1}, {3328}, {256}})
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1}, {8192}, {5120}})
    ->ArgNames({"impl", "dtype", "context", "keep"})
    // Restore re-appends 3,072 tokens (~0.1-1 s) after each microsecond
    // paged Crop: a fixed count keeps the run from taking hours.
    ->Iterations(10)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Attention input of one layer: Get(16) and GatherInto preallocated
// contiguous (4, 8, context, 128) key and value tensors.
void BM_Gather(benchmark::State& state) { RunWorkload(state, Op::kGather); }
BENCHMARK(BM_Gather)->Apply(CacheGrid);

// Static-cache decode step: one token into every layer of 4 beams in a
// StaticKVCache with max_cache_len = context + kDecodeSteps (256), each step
// into the next slot.
void BM_StaticAppend(benchmark::State& state) {
  RunWorkload(state, Op::kStaticAppend);
}
BENCHMARK(BM_StaticAppend)->Apply(CacheGrid);

// Books only: 1,024 single-block TryAllocate + Release pairs (items are
// pairs); baseline malloc + free of one block's bytes.
void BM_AllocFree(benchmark::State& state) {
  RunWorkload(state, Op::kAllocFree);
}
BENCHMARK(BM_AllocFree)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->ArgNames({"impl", "dtype"})
    ->UseManualTime()
    ->Unit(benchmark::kNanosecond);

// Books only: Fork of a 256-block table (beam split); baseline copies the 256
// blocks' bytes.
void BM_Fork256(benchmark::State& state) { RunWorkload(state, Op::kFork256); }
BENCHMARK(BM_Fork256)
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1}})
    ->ArgNames({"impl", "dtype"})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pagedkv::bench
