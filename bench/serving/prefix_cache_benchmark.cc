// bench/serving/prefix_cache_benchmark.cc
//
// The prefix cache's costs (issue #11 targets), each next to a baseline
// measured in the same run:
//
//   BM_HashBlock/xxh3         chained key of a 16-token block (<= 10 ns)
//   BM_HashBlock/sha256       the same with SHA-256 (<= 150 ns)
//   BM_TouchBlock             baseline: summing the block's 16 token ids
//   BM_LookupPerBlock         verified lookup of one block of a cached
//                             128-block chain (<= 30 ns per block)
//   BM_MatchPrompt2048        a 2,048-token prompt fully cached: keys and
//                             verified lookups of its 127 matchable blocks
//                             (<= 5 us)
//   BM_AdmitCached2048        AddSequence of that prompt (hash, match, pin
//                             127 blocks, 1 new block, slots) + Free, against
//   BM_AdmitUncached2048      the same prompt with caching off (128 blocks)
//   BM_Evict                  allocating blocks that are all cached and free
//                             (each evicted: O(1), <= 20 ns per block),
//                             against BM_AllocatePlain from the plain list
//   BM_DecodeStep/ids:I/commit:C/caching:0|1
//                             one AppendSlots of 1 token for each of 256
//                             sequences, prompts all distinct (a 0% hit
//                             rate): caching on must cost < 2% more than
//                             off. ids:1/commit:1 gives each step's token
//                             id and commit (decode blocks are keyed and
//                             published as they fill, vLLM's way);
//                             ids:1/commit:0 gives the ids and commits at
//                             the end; ids:0 gives neither (the server
//                             keeps them and publishes at the end, below)
//   BM_PublishAtEnd           ids:0's deferred cost: one CommitTokens giving
//                             256 sequences' 64 decoded ids each, keying and
//                             publishing their 4 blocks (per block)
//
//   bazel run -c opt //bench/serving:prefix_cache_benchmark --
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Thread safety: single-threaded benchmarks.
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/prefix/block_hash.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

constexpr int32_t kBlockTokens = 16;

KVLayout Llama8BLayout() {
  return KVLayout{.num_layers = 32,
                  .num_kv_heads = 8,
                  .head_dim = 128,
                  .dtype = DType::kFloat16,
                  .block_tokens = kBlockTokens};
}

std::unique_ptr<KVCacheManager> BooksOnly(int32_t num_blocks, bool caching) {
  KVCacheManager::Options o{.layout = Llama8BLayout(),
                            .num_blocks = num_blocks,
                            .storage = StorageMode::kBooksOnly,
                            .watermark = 0};
  o.prefix_caching.enabled = caching;
  absl::StatusOr<std::unique_ptr<KVCacheManager>> m = KVCacheManager::Create(o);
  PKV_CHECK(m.ok(), "%s", m.status().ToString());
  return *std::move(m);
}

std::vector<int32_t> Tokens(int64_t n, int32_t first) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// ---------------------------------------------------------------------------
// Keys

void BM_HashBlock(benchmark::State& state) {
  const BlockHasher& hasher =
      state.range(0) == 0 ? Xxh3BlockHasher() : Sha256BlockHasher();
  const std::vector<int32_t> tokens = Tokens(kBlockTokens, 7);
  BlockHash h = kRootBlockHash;
  for (auto _ : state) {
    h = hasher.Hash(h, tokens, {});  // Chained: each waits for the last.
    benchmark::DoNotOptimize(h);
  }
  state.SetLabel(hasher.name());
}
BENCHMARK(BM_HashBlock)->Arg(0)->Arg(1)->ArgName("sha256");

void BM_TouchBlock(benchmark::State& state) {
  const std::vector<int32_t> tokens = Tokens(kBlockTokens, 7);
  uint64_t h = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(tokens.data());
    for (int32_t t : tokens) h = h * 31 + static_cast<uint32_t>(t);
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_TouchBlock);

// ---------------------------------------------------------------------------
// Lookups

// A manager holding one committed sequence of `tokens` (its blocks stay in
// use, so every lookup hits without reviving).
struct CachedPrompt {
  explicit CachedPrompt(int64_t tokens, bool caching = true)
      : prompt(Tokens(tokens, 1000)), m(BooksOnly(4096, caching)) {
    StepOutput out;
    PKV_CHECK(m->AddSequence(1, prompt, 16, &out).ok(), "add");
    if (caching) {
      const TokenCommit c{.seq = 1, .num_tokens = tokens};
      PKV_CHECK(m->CommitTokens(absl::MakeConstSpan(&c, 1)).ok(), "commit");
    }
  }
  std::vector<int32_t> prompt;
  std::unique_ptr<KVCacheManager> m;
};

void BM_LookupPerBlock(benchmark::State& state) {
  constexpr int32_t kBlocks = 128;
  CachedPrompt cached(kBlocks * kBlockTokens);
  // The chain's keys, computed once: only the lookups are timed.
  std::vector<BlockHash> hashes;
  std::vector<BlockExtraKeys> keys(kBlocks);
  BlockHash h = kRootBlockHash;
  for (int32_t i = 0; i < kBlocks; ++i) {
    h = Xxh3BlockHasher().Hash(h,
                               absl::MakeConstSpan(cached.prompt)
                                   .subspan(i * kBlockTokens, kBlockTokens),
                               {});
    hashes.push_back(h);
  }
  const BlockPool::PrefixChain chain{hashes, cached.prompt, keys};
  const BlockPool& books = cached.m->books();
  for (auto _ : state) {
    const BlockPool::PrefixMatch m = books.MatchPrefix(chain);
    PKV_CHECK(m.blocks == kBlocks, "matched %d", m.blocks);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations() * kBlocks);  // Per block.
}
BENCHMARK(BM_LookupPerBlock);

void BM_MatchPrompt2048(benchmark::State& state) {
  CachedPrompt cached(2048);
  for (auto _ : state) {
    // CanAdmit with token ids: the keys of the matchable blocks and their
    // verified lookup, nothing pinned.
    benchmark::DoNotOptimize(cached.m->CanAdmit(cached.prompt, 16));
  }
}
BENCHMARK(BM_MatchPrompt2048);

void AdmitAndFree(benchmark::State& state, bool caching) {
  CachedPrompt cached(2048, caching);
  StepOutput out;
  for (auto _ : state) {
    PKV_CHECK(cached.m->AddSequence(2, cached.prompt, 16, &out).ok(), "add");
    benchmark::DoNotOptimize(out.slot_mapping.data());
    PKV_CHECK(cached.m->Free(2).ok(), "free");
  }
  state.counters["cached_tokens"] = static_cast<double>(out.num_cached_tokens);
}
void BM_AdmitCached2048(benchmark::State& state) { AdmitAndFree(state, true); }
void BM_AdmitUncached2048(benchmark::State& state) {
  AdmitAndFree(state, false);
}
BENCHMARK(BM_AdmitCached2048);
BENCHMARK(BM_AdmitUncached2048);

// ---------------------------------------------------------------------------
// Eviction

constexpr int32_t kEvictBlocks = 1 << 16;

// Fills a pool with kEvictBlocks published, free blocks (each a one-block
// chain), so allocating any block evicts one.
std::unique_ptr<BlockPool> CachedFreePool() {
  std::unique_ptr<BlockPool> pool =
      *BlockPool::Create({.num_blocks = kEvictBlocks});
  PKV_CHECK(pool->EnablePrefixCache({.block_tokens = kBlockTokens}).ok(), "on");
  std::vector<BlockId> blocks = *pool->Allocate(kEvictBlocks);
  std::vector<BlockPool::PrefixSwitch> switches;
  const BlockExtraKeys keys[1] = {};
  for (int32_t i = 0; i < kEvictBlocks; ++i) {
    const std::vector<int32_t> tokens = Tokens(kBlockTokens, i * kBlockTokens);
    const BlockHash h = Xxh3BlockHasher().Hash(kRootBlockHash, tokens, {});
    const BlockPool::PrefixChain chain{absl::MakeConstSpan(&h, 1), tokens,
                                       keys};
    PKV_CHECK(pool->Publish(absl::MakeConstSpan(&blocks[i], 1), BlockId(),
                            chain, &switches) == 1,
              "publish");
  }
  pool->ReleaseAllTailFirst(blocks);
  return pool;
}

void BM_Evict(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<BlockPool> pool = CachedFreePool();
    state.ResumeTiming();
    absl::StatusOr<std::vector<BlockId>> got = pool->Allocate(kEvictBlocks);
    benchmark::DoNotOptimize(got->data());
    state.PauseTiming();
    PKV_CHECK(pool->prefix_stats().evicted_blocks == kEvictBlocks, "evicted");
    pool->ReleaseAll(*got);
    pool.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kEvictBlocks);
}
BENCHMARK(BM_Evict)->Unit(benchmark::kMillisecond);

void BM_AllocatePlain(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<BlockPool> pool =
        *BlockPool::Create({.num_blocks = kEvictBlocks});
    state.ResumeTiming();
    absl::StatusOr<std::vector<BlockId>> got = pool->Allocate(kEvictBlocks);
    benchmark::DoNotOptimize(got->data());
    state.PauseTiming();
    pool->ReleaseAll(*got);
    pool.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kEvictBlocks);
}
BENCHMARK(BM_AllocatePlain)->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// Decode with caching on at a 0% hit rate

constexpr int64_t kContext = 1024;
constexpr int32_t kSteps = 64;  // Decode steps between resets.

void BM_DecodeStep(benchmark::State& state) {
  const bool per_step_ids = state.range(0) != 0;
  const bool per_step_commit = state.range(1) != 0;
  const bool caching = state.range(2) != 0;
  constexpr int32_t kSeqs = 256;
  std::unique_ptr<KVCacheManager> m =
      BooksOnly(kSeqs * ((kContext + kSteps) / kBlockTokens + 2), caching);
  StepOutput out;
  std::vector<SlotRequest> step;
  std::vector<int32_t> next(kSeqs);
  for (int32_t s = 0; s < kSeqs; ++s) {
    // Distinct prompts: nothing ever hits.
    const std::vector<int32_t> prompt = Tokens(kContext, s * 100000);
    PKV_CHECK(m->AddSequence(s, prompt, 4096, &out).ok(), "add");
    next[s] = s;
    step.push_back({.seq = s, .num_tokens = 1});
    if (per_step_ids) step.back().token_ids = absl::MakeConstSpan(&next[s], 1);
    if (per_step_commit) step.back().commit = kContext;
  }
  int32_t done = 0;
  for (auto _ : state) {
    PKV_CHECK(m->AppendSlots(step, &out).ok(), "append");
    benchmark::DoNotOptimize(out.slot_mapping.data());
    // What the step wrote is final; the next tokens are new ones (a block
    // is never computed twice, so nothing is deduplicated).
    if (per_step_commit) {
      for (SlotRequest& r : step) ++r.commit;
    }
    if (per_step_ids) {
      for (int32_t& t : next) t += kSeqs;
    }
    if (++done == kSteps) {
      state.PauseTiming();
      for (int32_t s = 0; s < kSeqs; ++s) {
        PKV_CHECK(m->Truncate(s, kContext).ok(), "truncate");
        if (per_step_commit) step[s].commit = kContext;
      }
      done = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * kSeqs);
  state.counters["hit_tokens"] =
      static_cast<double>(m->stats().prefix.hit_tokens);
}
BENCHMARK(BM_DecodeStep)
    ->Args({1, 1, 0})
    ->Args({1, 1, 1})
    ->Args({1, 0, 0})
    ->Args({1, 0, 1})
    ->Args({0, 0, 0})
    ->Args({0, 0, 1})
    ->ArgNames({"ids", "commit", "caching"});

void BM_PublishAtEnd(benchmark::State& state) {
  constexpr int32_t kSeqs = 256;
  std::unique_ptr<KVCacheManager> m =
      BooksOnly(kSeqs * ((kContext + kSteps) / kBlockTokens + 2), true);
  StepOutput out;
  std::vector<SlotRequest> step;
  for (int32_t s = 0; s < kSeqs; ++s) {
    const std::vector<int32_t> prompt = Tokens(kContext, s * 100000);
    PKV_CHECK(m->AddSequence(s, prompt, 4096, &out).ok(), "add");
    const TokenCommit prefill{.seq = s, .num_tokens = kContext};
    PKV_CHECK(m->CommitTokens(absl::MakeConstSpan(&prefill, 1)).ok(), "commit");
    step.push_back({.seq = s, .num_tokens = 1});
  }
  std::vector<int32_t> ids(static_cast<size_t>(kSeqs) * kSteps);
  std::vector<TokenCommit> commits(kSeqs);
  int32_t fresh = 1 << 30;  // Never a prompt's id: nothing deduplicates.
  for (auto _ : state) {
    state.PauseTiming();
    for (int32_t s = 0; s < kSeqs; ++s) {
      PKV_CHECK(m->Truncate(s, kContext).ok(), "truncate");
    }
    for (int32_t i = 0; i < kSteps; ++i) {
      PKV_CHECK(m->AppendSlots(step, &out).ok(), "append");
    }
    for (int32_t& id : ids) id = fresh++;
    for (int32_t s = 0; s < kSeqs; ++s) {
      commits[s] = {.seq = s,
                    .num_tokens = kContext + kSteps,
                    .token_ids = absl::MakeConstSpan(ids).subspan(
                        static_cast<size_t>(s) * kSteps, kSteps)};
    }
    state.ResumeTiming();
    PKV_CHECK(m->CommitTokens(commits).ok(), "commit");
  }
  state.SetItemsProcessed(state.iterations() * kSeqs * kSteps / kBlockTokens);
}
BENCHMARK(BM_PublishAtEnd)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pagedkv
