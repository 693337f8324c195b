// bench/serving/kv_cache_manager_benchmark.cc
//
// The serving manager's step costs (DESIGN.md "Serving manager" targets),
// each next to a baseline measured in the same run:
//
//   BM_DecodeStep             one batched AppendSlots: 1 token for each of
//                             256 sequences at 1,024 tokens (target <= 10 us)
//   BM_DecodeStepPerSequence  the same step as 256 single-sequence calls
//   BM_DecodeStepNaive        the baseline: a hash map of std::vector tables
//                             and one BlockPool::TryAllocate per new block,
//                             slot mapping built per call (what a direct
//                             port of vLLM's Python block manager does)
//   BM_AdmitPrefill           AddSequence of a 1,024-token prompt (admission
//                             + 64 blocks + slots; target <= 1 us), against
//                             BM_AdmitPrefillNaive
//   BM_Free                   Free of a 1,024-token sequence (target <=
//                             0.5 us), against BM_FreeNaive
//   BM_SwapOutIn              host mode: swap a 1,024-token sequence of 2 MiB
//                             blocks out and back in (target >= 0.8 of a
//                             cold memcpy of the same bytes, both ways),
//                             against BM_ColdMemcpy of those bytes
//
//   bazel run -c opt //bench/serving:kv_cache_manager_benchmark --
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// BM_AdmitPrefill and BM_Free time only the call (manual time: the column
// to read is Time; their CPU column also holds the untimed Free / Add).
// Measured (issue #10; medians of 3 rounds of 9 repetitions, the old and
// new binaries alternated, 2-core machine shared with other builds):
//   BM_AdmitPrefill  0.66 us (target <= 1 us: met), 0.27x BM_AdmitPrefillNaive
//                    (was 1.59 us, 0.50x): slot_mapping filled after one
//                    resize without a divide per block, 64 blocks taken in
//                    one walk of the free list.
//   BM_Free          0.25 us (target <= 0.5 us: met), 0.72x BM_FreeNaive
//                    (was 0.40 us, 0.83x): one hash lookup, the table
//                    released back to front in one loop with the per-block
//                    release inlined (the naive baseline's per-block
//                    Release got that inlining too: 0.48 -> 0.34 us).
//
// Thread safety: single-threaded benchmarks.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

constexpr int32_t kBlockTokens = 16;
constexpr int64_t kContext = 1024;
constexpr int32_t kSteps = 64;  // Decode steps between resets.

KVLayout Llama8BLayout() {
  return KVLayout{.num_layers = 32,
                  .num_kv_heads = 8,
                  .head_dim = 128,
                  .dtype = DType::kFloat16,
                  .block_tokens = kBlockTokens};
}

std::unique_ptr<KVCacheManager> BooksOnly(int32_t num_blocks) {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> m =
      KVCacheManager::Create({.layout = Llama8BLayout(),
                              .num_blocks = num_blocks,
                              .storage = StorageMode::kBooksOnly,
                              .watermark = 0});
  PKV_CHECK(m.ok(), "%s", m.status().ToString());
  return *std::move(m);
}

int32_t BlocksFor(int64_t tokens) {
  return static_cast<int32_t>((tokens + kBlockTokens - 1) / kBlockTokens);
}

// Decode: every iteration appends one token to each of `seqs` sequences in
// one call. Every kSteps iterations the sequences are truncated back to
// kContext tokens (untimed), so the pool never runs out.
void BM_DecodeStep(benchmark::State& state) {
  const int32_t seqs = static_cast<int32_t>(state.range(0));
  std::unique_ptr<KVCacheManager> m =
      BooksOnly(seqs * (BlocksFor(kContext + kSteps) + 1));
  StepOutput out;
  std::vector<SlotRequest> step;
  for (int32_t s = 0; s < seqs; ++s) {
    PKV_CHECK(m->AddSequence(s, kContext, 4096, &out).ok(), "add");
    step.push_back({.seq = s, .num_tokens = 1});
  }
  int32_t done = 0;
  for (auto _ : state) {
    PKV_CHECK(m->AppendSlots(step, &out).ok(), "append");
    benchmark::DoNotOptimize(out.slot_mapping.data());
    if (++done == kSteps) {
      state.PauseTiming();
      for (int32_t s = 0; s < seqs; ++s) {
        PKV_CHECK(m->Truncate(s, kContext).ok(), "truncate");
      }
      done = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * seqs);
  state.counters["seqs"] = seqs;
}
BENCHMARK(BM_DecodeStep)->Arg(256)->ArgName("seqs");

void BM_DecodeStepPerSequence(benchmark::State& state) {
  const int32_t seqs = static_cast<int32_t>(state.range(0));
  std::unique_ptr<KVCacheManager> m =
      BooksOnly(seqs * (BlocksFor(kContext + kSteps) + 1));
  StepOutput out;
  for (int32_t s = 0; s < seqs; ++s) {
    PKV_CHECK(m->AddSequence(s, kContext, 4096, &out).ok(), "add");
  }
  int32_t done = 0;
  for (auto _ : state) {
    for (int32_t s = 0; s < seqs; ++s) {
      const SlotRequest one{.seq = s, .num_tokens = 1};
      PKV_CHECK(m->AppendSlots({&one, 1}, &out).ok(), "append");
      benchmark::DoNotOptimize(out.slot_mapping.data());
    }
    if (++done == kSteps) {
      state.PauseTiming();
      for (int32_t s = 0; s < seqs; ++s) {
        PKV_CHECK(m->Truncate(s, kContext).ok(), "truncate");
      }
      done = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * seqs);
}
BENCHMARK(BM_DecodeStepPerSequence)->Arg(256)->ArgName("seqs");

// The baseline's books: per sequence a vector of block ids and a length.
struct NaiveSequence {
  std::vector<BlockId> blocks;
  int64_t num_tokens = 0;
};

class NaiveManager {
 public:
  explicit NaiveManager(int32_t num_blocks)
      : pool_(*BlockPool::Create({.num_blocks = num_blocks})) {}

  // Returns the slot mapping of `n` new tokens of `seq`, allocating blocks
  // one TryAllocate at a time.
  std::vector<int64_t> Append(int64_t seq, int64_t n) {
    NaiveSequence& s = sequences_[seq];
    std::vector<int64_t> slots;
    for (int64_t i = 0; i < n; ++i, ++s.num_tokens) {
      if (s.num_tokens % kBlockTokens == 0) {
        std::optional<BlockId> id = pool_->TryAllocate();
        PKV_CHECK(id.has_value(), "naive pool ran out");
        s.blocks.push_back(*id);
      }
      slots.push_back(int64_t{s.blocks.back().value()} * kBlockTokens +
                      s.num_tokens % kBlockTokens);
    }
    return slots;
  }
  void Truncate(int64_t seq, int64_t n) {
    NaiveSequence& s = sequences_[seq];
    while (static_cast<int64_t>(s.blocks.size()) > BlocksFor(n)) {
      pool_->Release(s.blocks.back());
      s.blocks.pop_back();
    }
    s.num_tokens = n;
  }
  void Free(int64_t seq) {
    auto it = sequences_.find(seq);
    for (auto b = it->second.blocks.rbegin(); b != it->second.blocks.rend();
         ++b) {
      pool_->Release(*b);
    }
    sequences_.erase(it);
  }

 private:
  std::unique_ptr<BlockPool> pool_;
  absl::flat_hash_map<int64_t, NaiveSequence> sequences_;
};

void BM_DecodeStepNaive(benchmark::State& state) {
  const int32_t seqs = static_cast<int32_t>(state.range(0));
  NaiveManager m(seqs * (BlocksFor(kContext + kSteps) + 1));
  for (int32_t s = 0; s < seqs; ++s) m.Append(s, kContext);
  int32_t done = 0;
  for (auto _ : state) {
    for (int32_t s = 0; s < seqs; ++s) {
      std::vector<int64_t> slots = m.Append(s, 1);
      benchmark::DoNotOptimize(slots.data());
    }
    if (++done == kSteps) {
      state.PauseTiming();
      for (int32_t s = 0; s < seqs; ++s) m.Truncate(s, kContext);
      done = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * seqs);
}
BENCHMARK(BM_DecodeStepNaive)->Arg(256)->ArgName("seqs");

// Admission + prefill allocation of one 1,024-token prompt, timed alone
// (the Free that keeps the pool steady is not timed: manual timing).
void BM_AdmitPrefill(benchmark::State& state) {
  std::unique_ptr<KVCacheManager> m = BooksOnly(4 * BlocksFor(kContext));
  StepOutput out;
  out.slot_mapping.reserve(kContext);
  int64_t id = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const bool ok = m->AddSequence(id, kContext, 256, &out).ok();
    const auto stop = std::chrono::steady_clock::now();
    PKV_CHECK(ok, "add");
    benchmark::DoNotOptimize(out.slot_mapping.data());
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    PKV_CHECK(m->Free(id++).ok(), "free");
  }
}
BENCHMARK(BM_AdmitPrefill)->UseManualTime();

void BM_AdmitPrefillNaive(benchmark::State& state) {
  NaiveManager m(4 * BlocksFor(kContext));
  int64_t id = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<int64_t> slots = m.Append(id, kContext);
    const auto stop = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(slots.data());
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    m.Free(id++);
  }
}
BENCHMARK(BM_AdmitPrefillNaive)->UseManualTime();

void BM_Free(benchmark::State& state) {
  std::unique_ptr<KVCacheManager> m = BooksOnly(4 * BlocksFor(kContext));
  StepOutput out;
  int64_t id = 0;
  for (auto _ : state) {
    PKV_CHECK(m->AddSequence(id, kContext, 0, &out).ok(), "add");
    const auto start = std::chrono::steady_clock::now();
    const bool ok = m->Free(id++).ok();
    const auto stop = std::chrono::steady_clock::now();
    PKV_CHECK(ok, "free");
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
}
BENCHMARK(BM_Free)->UseManualTime();

void BM_FreeNaive(benchmark::State& state) {
  NaiveManager m(4 * BlocksFor(kContext));
  int64_t id = 0;
  for (auto _ : state) {
    m.Append(id, kContext);
    const auto start = std::chrono::steady_clock::now();
    m.Free(id++);
    const auto stop = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
}
BENCHMARK(BM_FreeNaive)->UseManualTime();

// Swap: a 1,024-token sequence (64 blocks of 2 MiB = 128 MiB) out to the
// host tier and back. Both pools are 4x the sequence, so successive swaps
// walk different blocks (cold: 128 MiB is far past the last-level cache).
void BM_SwapOutIn(benchmark::State& state) {
  const int32_t blocks = BlocksFor(kContext);
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
      KVCacheManager::Create({.layout = Llama8BLayout(),
                              .num_blocks = 4 * blocks,
                              .watermark = 0,
                              .num_host_blocks = 4 * blocks});
  PKV_CHECK(made.ok(), "%s", made.status().ToString());
  KVCacheManager& m = **made;
  // Touch every byte once so no page fault is timed.
  for (BlockId b(0); b.value() < m.kv_pool()->num_blocks();
       b = BlockId(b.value() + 1)) {
    std::memset(m.kv_pool()->BlockData(b), 1, m.kv_pool()->block_bytes());
  }
  StepOutput out;
  int64_t id = 0;
  // Sequences 0-2 keep the pool's other blocks busy, so the swapped one's
  // blocks rotate through the pool.
  for (int i = 0; i < 3; ++i) {
    PKV_CHECK(m.AddSequence(id++, kContext, 0, &out).ok(), "add");
  }
  PKV_CHECK(m.AddSequence(id, kContext, 0, &out).ok(), "add");
  // Warm the host pool's pages too.
  for (int i = 0; i < 4; ++i) {
    PKV_CHECK(m.SwapOut(id).ok() && m.SwapIn(id).ok(), "swap");
  }
  for (auto _ : state) {
    PKV_CHECK(m.SwapOut(id).ok(), "swap out");
    PKV_CHECK(m.SwapIn(id).ok(), "swap in");
  }
  const int64_t bytes =
      2 * int64_t{blocks} * static_cast<int64_t>(m.kv_pool()->block_bytes());
  state.SetBytesProcessed(state.iterations() * bytes);
}
BENCHMARK(BM_SwapOutIn)->Unit(benchmark::kMillisecond);

// The same bytes as BM_SwapOutIn (2 x 128 MiB) copied with memcpy between
// buffers 4x that size, walking fresh (cold) destinations.
void BM_ColdMemcpy(benchmark::State& state) {
  const size_t block = Llama8BLayout().block_bytes();
  const size_t seq_bytes = static_cast<size_t>(BlocksFor(kContext)) * block;
  std::vector<char> a(4 * seq_bytes, 1);
  std::vector<char> b(4 * seq_bytes, 2);
  size_t at = 0;
  for (auto _ : state) {
    std::memcpy(b.data() + at, a.data() + (at + seq_bytes) % a.size(),
                seq_bytes);
    std::memcpy(a.data() + (at + 2 * seq_bytes) % a.size(), b.data() + at,
                seq_bytes);
    benchmark::DoNotOptimize(b.data());
    at = (at + seq_bytes) % b.size();
  }
  state.SetBytesProcessed(state.iterations() * 2 *
                          static_cast<int64_t>(seq_bytes));
}
BENCHMARK(BM_ColdMemcpy)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace pagedkv
