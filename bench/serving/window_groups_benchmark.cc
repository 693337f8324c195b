// Decode steps of a books-only KVCacheManager with layer groups
// (Options::layer_groups), against the plain (ungrouped) decode step in the
// same run:
//
//   BM_PlainDecodeStep        one AppendSlots of 1 token for each of 256
//                             sequences, no groups (the baseline).
//   BM_GroupedDecodeStep      the same step with 6 layer groups: windows:0
//                             all full (six tables, no window), windows:5
//                             Gemma-3 style (1 full + 5 window groups of
//                             1,024 tokens). Their difference per sequence is
//                             the window maintenance (the release of blocks
//                             that fell out of the windows); context:1024 vs
//                             32768 shows it does not grow with the length.
//   BM_GroupedDecodeStepCaching
//                             windows:5 at 1,024 tokens with prefix caching
//                             on, sequences added with token ids (caching:1),
//                             against caching off (caching:0).
//
// Every kSteps iterations the sequences are freed and admitted again at
// `context` tokens (untimed), so the pool never runs out.
//
//   BM_Admit2048              prefix caching: AddSequence + Free of a
//                             2,048-token prompt another running sequence
//                             committed, hit (caching:1) or not (caching:0),
//                             with groups:0 (one table) or groups:6 (1 full
//                             + 5 window groups of 1,024: the anchor's 127
//                             blocks and each window group's 65 are
//                             pinned, holes below).
//
//   bazel run -c opt //bench/serving:window_groups_benchmark -- \
//     --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

constexpr int32_t kBlockTokens = 16;
constexpr int32_t kSteps = 64;  // Decode steps between resets.
constexpr int32_t kGroups = 6;

int32_t BlocksFor(int64_t tokens) {
  return static_cast<int32_t>((tokens + kBlockTokens - 1) / kBlockTokens);
}

// 48 layers (Gemma-3-12B's KV geometry), grouped or not.
std::unique_ptr<KVCacheManager> Manager(int32_t num_blocks,
                                        std::vector<LayerGroup> groups,
                                        bool caching = false) {
  KVCacheManager::Options o{.layout = {.num_layers = 48,
                                       .num_kv_heads = 8,
                                       .head_dim = 256,
                                       .dtype = DType::kFloat16,
                                       .block_tokens = kBlockTokens},
                            .num_blocks = num_blocks,
                            .storage = StorageMode::kBooksOnly,
                            .watermark = 0};
  o.layer_groups = std::move(groups);
  o.prefix_caching.enabled = caching;
  absl::StatusOr<std::unique_ptr<KVCacheManager>> m = KVCacheManager::Create(o);
  PKV_CHECK(m.ok(), "%s", m.status().ToString());
  return *std::move(m);
}

// Distinct prompts: prefix caching never hits.
std::vector<int32_t> PromptOf(int32_t s, int64_t context) {
  std::vector<int32_t> ids(context);
  for (int64_t t = 0; t < context; ++t) {
    ids[t] = static_cast<int32_t>(s * context + t);
  }
  return ids;
}

// With ids, each sequence is added with its token ids (a prefix-caching
// sequence, whose steps check its tails for copy-on-write); else by count.
void Admit(KVCacheManager& m, int32_t seqs, int64_t context, StepOutput* out,
           bool ids = false) {
  for (int32_t s = 0; s < seqs; ++s) {
    if (m.contains(s)) PKV_CHECK(m.Free(s).ok(), "free");
  }
  for (int32_t s = 0; s < seqs; ++s) {
    const absl::Status st =
        ids ? m.AddSequence(s, PromptOf(s, context), 1 << 20, out)
            : m.AddSequence(s, context, 1 << 20, out);
    PKV_CHECK(st.ok(), "add: %s", st.ToString());
  }
  // One step so every window group is at its decode bound before timing.
  std::vector<SlotRequest> step;
  for (int32_t s = 0; s < seqs; ++s) step.push_back({.seq = s, .num_tokens = 1});
  PKV_CHECK(m.AppendSlots(step, out).ok(), "append");
}

void RunDecode(benchmark::State& state, KVCacheManager& m, int32_t seqs,
               int64_t context, bool ids = false) {
  StepOutput out;
  Admit(m, seqs, context, &out, ids);
  std::vector<SlotRequest> step;
  for (int32_t s = 0; s < seqs; ++s) step.push_back({.seq = s, .num_tokens = 1});
  int32_t done = 0;
  for (auto _ : state) {
    PKV_CHECK(m.AppendSlots(step, &out).ok(), "append");
    benchmark::DoNotOptimize(out.slot_mapping.data());
    if (++done == kSteps) {
      state.PauseTiming();
      Admit(m, seqs, context, &out, ids);
      done = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * seqs);
}

void BM_PlainDecodeStep(benchmark::State& state) {
  const int32_t seqs = static_cast<int32_t>(state.range(0));
  const int64_t context = state.range(1);
  std::unique_ptr<KVCacheManager> m =
      Manager(seqs * (BlocksFor(context + kSteps + 1) + 1), {});
  RunDecode(state, *m, seqs, context);
}
BENCHMARK(BM_PlainDecodeStep)
    ->ArgsProduct({{256}, {1024, 32768}})
    ->ArgNames({"seqs", "context"});

void BM_GroupedDecodeStep(benchmark::State& state) {
  const int32_t seqs = static_cast<int32_t>(state.range(0));
  const int64_t context = state.range(1);
  const int32_t windows = static_cast<int32_t>(state.range(2));
  std::vector<LayerGroup> groups(kGroups, LayerGroup{.num_layers = 8});
  for (int32_t g = 1; g <= windows; ++g) groups[g].sliding_window = 1024;
  std::unique_ptr<KVCacheManager> m = Manager(
      seqs * kGroups * (BlocksFor(context + kSteps + 1) + 1), groups);
  RunDecode(state, *m, seqs, context);
  state.counters["released"] =
      static_cast<double>(m->window_released_blocks());
}
BENCHMARK(BM_GroupedDecodeStep)
    ->ArgsProduct({{256}, {1024, 32768}, {0, 5}})
    ->ArgNames({"seqs", "context", "windows"});

// The same step, 1 full + 5 window groups at 1,024 tokens, with prefix
// caching on and the sequences added with their token ids (caching:1;
// the steps give none, as a server that keeps them does) or by count
// (caching:0): what caching costs a grouped step at a 0% hit rate.
void BM_GroupedDecodeStepCaching(benchmark::State& state) {
  constexpr int32_t kSeqs = 256;
  constexpr int64_t kContext = 1024;
  const bool caching = state.range(0) != 0;
  std::vector<LayerGroup> groups(kGroups, LayerGroup{.num_layers = 8});
  for (int32_t g = 1; g < kGroups; ++g) groups[g].sliding_window = 1024;
  std::unique_ptr<KVCacheManager> m = Manager(
      kSeqs * kGroups * (BlocksFor(kContext + kSteps + 1) + 1), groups,
      caching);
  RunDecode(state, *m, kSeqs, kContext, caching);
}
BENCHMARK(BM_GroupedDecodeStepCaching)->Arg(0)->Arg(1)->ArgNames({"caching"});

void BM_Admit2048(benchmark::State& state) {
  const bool grouped = state.range(0) != 0;
  const bool caching = state.range(1) != 0;
  std::vector<LayerGroup> groups;
  if (grouped) {
    groups.assign(kGroups, LayerGroup{.num_layers = 8, .sliding_window = 1024});
    groups[0].sliding_window = 0;
  }
  std::unique_ptr<KVCacheManager> m =
      Manager(4 * kGroups * BlocksFor(2048), groups, caching);
  std::vector<int32_t> prompt(2048);
  for (int32_t i = 0; i < 2048; ++i) prompt[i] = 1000 + i;
  StepOutput out;
  PKV_CHECK(m->AddSequence(1, prompt, 16, &out).ok(), "add");
  if (caching) {
    const TokenCommit c[] = {{.seq = 1, .num_tokens = 2048}};
    PKV_CHECK(m->CommitTokens(c).ok(), "commit");
  }
  for (auto _ : state) {
    PKV_CHECK(m->AddSequence(2, prompt, 16, &out).ok(), "add");
    benchmark::DoNotOptimize(out.slot_mapping.data());
    PKV_CHECK(m->Free(2).ok(), "free");
  }
  state.counters["cached_tokens"] = static_cast<double>(out.num_cached_tokens);
}
BENCHMARK(BM_Admit2048)
    ->ArgsProduct({{0, 6}, {0, 1}})
    ->ArgNames({"groups", "caching"});

}  // namespace
}  // namespace pagedkv
