// kv_stress's prefix-caching experiments: the shared_prefix preset with
// caching on and off (hits only with it on, every hit's stamps right,
// invariants checked every step), a pool sweep on a small trace (the hit
// rate never falls as the pool grows), the JSON of both, and the same trace
// through a manager with sliding-window layer groups (a window model:
// books-only, the bound reached when nothing is evicted, the contiguous
// model sized by every layer's bytes).
#include "tools/kv_stress/experiment.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "cache/serving/layer_groups.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tests/testing/status_matchers.h"
#include "tools/kv_stress/report.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;

// The shared_prefix preset, shortened, checked after every step.
const SimResult& SharedPrefixResult() {
  static const SimResult* result = [] {
    absl::StatusOr<SimConfig> c = PresetConfig("shared_prefix");
    PKV_CHECK(c.ok(), "shared_prefix preset");
    c->steps = 500;
    c->check_every = 1;
    absl::StatusOr<SimResult> r = RunExperiment(*c);
    PKV_CHECK(r.ok(), "shared_prefix run: %s", r.status().ToString());
    return new SimResult(*std::move(r));
  }();
  return *result;
}

TEST(ExperimentTest, SharedPrefixHitsWithCachingOnAndNeverOff) {
  const SimResult& r = SharedPrefixResult();
  EXPECT_EQ(r.invariant_failures, 0) << r.failure_messages.size();
  for (const std::string& m : r.failure_messages) ADD_FAILURE() << m;
  EXPECT_GE(r.invariant_checks, 2 * 500);  // Both runs, every step.
  const ModelReport& on = r.paged;
  EXPECT_GT(on.prefix.hit_rate(), 0.3);
  EXPECT_GT(on.prefix.hit_blocks, 0);
  // Host mode: every hit block's stamps were read back, and were right.
  EXPECT_GT(on.hit_stamp_checks, 2 * on.prefix.hit_blocks - 1);
  EXPECT_EQ(on.prefill_tokens_cached + on.prefill_tokens_computed,
            on.tokens_prefilled);
  ASSERT_TRUE(r.without_prefix_caching.has_value());
  const ModelReport& off = *r.without_prefix_caching;
  EXPECT_EQ(off.prefix.hit_rate(), 0.0);
  EXPECT_EQ(off.prefix.queries, 0);
  EXPECT_EQ(off.prefill_tokens_cached, 0);
  EXPECT_EQ(off.prefill_tokens_computed, off.tokens_prefilled);
  // The same sessions: caching computes less prefill per token served.
  EXPECT_LT(double(on.prefill_tokens_computed) / on.tokens_prefilled,
            double(off.prefill_tokens_computed) / off.tokens_prefilled);
}

TEST(ExperimentTest, JsonHasThePrefixCacheFields) {
  const nlohmann::json j = ToJson(SharedPrefixResult());
  ASSERT_TRUE(j.contains("prefix_cache"));
  const nlohmann::json& p = j["prefix_cache"];
  for (const char* key :
       {"enabled", "hit_rate", "blocks_saved", "evictions", "hit_tokens",
        "query_tokens", "prefill_tokens_computed", "without_caching",
        "prefill_compute_ratio", "throughput_ratio", "sweep"}) {
    EXPECT_TRUE(p.contains(key)) << key;
  }
  EXPECT_EQ(p["enabled"], true);
  EXPECT_DOUBLE_EQ(p["hit_rate"].get<double>(),
                   SharedPrefixResult().paged.prefix.hit_rate());
  EXPECT_EQ(p["blocks_saved"].get<int64_t>(),
            SharedPrefixResult().paged.prefix.hit_blocks);
  EXPECT_EQ(p["without_caching"]["hit_rate"].get<double>(), 0.0);
  EXPECT_TRUE(j["config"]["prefix_caching"].get<bool>());
  EXPECT_TRUE(j["config"].contains("sessions"));
}

// A small trace: 60 requests, one at a time, each a random one of 8
// documents (2 to 4 shared 512-token blocks) plus a block of its own.
std::string WriteSmallTrace() {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path =
      std::string(dir != nullptr ? dir : "/tmp") + "/small_trace.jsonl";
  std::FILE* f = std::fopen(path.c_str(), "w");
  PKV_CHECK(f != nullptr, "cannot write %s", path);
  uint32_t x = 12345;
  auto next = [&x] { return x = x * 1664525u + 1013904223u; };
  for (int i = 0; i < 60; ++i) {
    const int doc = static_cast<int>((next() >> 16) % 8);
    const int blocks = 2 + doc % 3;
    std::string ids;
    for (int b = 0; b < blocks; ++b) {
      absl::StrAppendFormat(&ids, "%d, ", doc * 10 + b);
    }
    absl::StrAppendFormat(&ids, "%d", 1000 + i);
    std::fprintf(f,
                 "{\"timestamp\": %d, \"input_length\": %d, "
                 "\"output_length\": 4, \"hash_ids\": [%s]}\n",
                 i * 10000, (blocks + 1) * 512 - 100, ids.c_str());
  }
  PKV_CHECK(std::fclose(f) == 0, "cannot close %s", path);
  return path;
}

TEST(ExperimentTest, SweepHitRateNeverFallsAsThePoolGrows) {
  absl::StatusOr<SimConfig> c = PresetConfig("mooncake");
  ASSERT_THAT(c, IsOk());
  c->model = "";
  c->layout = {.num_layers = 2,
               .num_kv_heads = 2,
               .head_dim = 16,
               .dtype = DType::kFloat16,
               .block_tokens = 16};
  c->trace_path = WriteSmallTrace();
  c->trace_step_ms = 1000;  // 10 steps between arrivals: one at a time.
  c->check_every = 1;
  // A request is at most 5 * 512 tokens = 160 blocks.
  c->pool_blocks = 400;
  c->pool_sweep = {200, 400, 800, 1600, 3200};
  absl::StatusOr<SimResult> r = RunExperiment(*c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0);
  ASSERT_TRUE(r->bound.has_value());
  ASSERT_EQ(r->sweep.size(), 5u);
  double last = -1;
  for (const SweepPoint& p : r->sweep) {
    EXPECT_EQ(p.completed, 60) << p.pool_blocks;
    EXPECT_GE(p.prefix.hit_rate(), last) << p.pool_blocks << " blocks";
    // Never past what an infinite cache gets.
    EXPECT_LE(p.prefix.hit_tokens, r->bound->hit_tokens) << p.pool_blocks;
    last = p.prefix.hit_rate();
  }
  // 3200 blocks hold every document: the bound exactly.
  EXPECT_EQ(r->sweep.back().prefix.hit_tokens, r->bound->hit_tokens);
  EXPECT_LT(r->sweep.front().prefix.hit_rate(), last);
  // The main run is the 400-block point.
  EXPECT_EQ(r->paged.prefix.hit_tokens, r->sweep[1].prefix.hit_tokens);
  const nlohmann::json j = ToJson(*r);
  EXPECT_EQ(j["prefix_cache"]["sweep"].size(), 5u);
  EXPECT_DOUBLE_EQ(j["prefix_cache"]["bound"]["span_hit_rate"].get<double>(),
                   r->bound->span_hit_rate());
  EXPECT_THAT(RenderSweepSvg(*r), ::testing::HasSubstr("bound: "));
}

// The small trace on a model of 4 layers: with groups {full, window} of 2
// layers each, or {window, window} (no full group: the window anchor).
SimConfig SmallTraceWithGroups(std::vector<LayerGroup> groups) {
  absl::StatusOr<SimConfig> c = PresetConfig("mooncake");
  PKV_CHECK(c.ok(), "mooncake preset");
  c->model = "small-window-model";
  c->layout = {.num_layers = 4,
               .num_kv_heads = 2,
               .head_dim = 16,
               .dtype = DType::kFloat16,
               .block_tokens = 16};
  c->layer_groups = std::move(groups);
  c->trace_path = WriteSmallTrace();
  c->trace_step_ms = 1000;  // One request at a time.
  c->check_every = 1;
  return *c;
}

class WindowGroupsTraceTest
    : public ::testing::TestWithParam<std::vector<LayerGroup>> {};

TEST_P(WindowGroupsTraceTest, ReachesTheBoundWhenNothingIsEvicted) {
  SimConfig c = SmallTraceWithGroups(GetParam());
  // Every group holds every prompt token at its prefill commit, so all 60
  // prompts (at most 5 x 512 tokens, 160 blocks per group) stay cached in
  // 20,000 blocks of 2 groups: every repeat is a full hit.
  c.pool_blocks = 20000;
  absl::StatusOr<SimResult> r = RunExperiment(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0);
  for (const std::string& m : r->failure_messages) ADD_FAILURE() << m;
  EXPECT_EQ(r->paged.completed, 60);
  EXPECT_EQ(r->paged.prefix.evicted_blocks, 0);
  ASSERT_TRUE(r->bound.has_value());
  EXPECT_GT(r->bound->hit_tokens, 0);
  EXPECT_EQ(r->paged.prefix.hit_tokens, r->bound->hit_tokens);
}

TEST_P(WindowGroupsTraceTest, SmallPoolsHitLessButNeverPastTheBound) {
  SimConfig c = SmallTraceWithGroups(GetParam());
  c.pool_blocks = 400;  // A request of 160 blocks a group fits alone.
  c.pool_sweep = {400, 1000, 4000};
  absl::StatusOr<SimResult> r = RunExperiment(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0);
  ASSERT_TRUE(r->bound.has_value());
  ASSERT_EQ(r->sweep.size(), 3u);
  for (const SweepPoint& p : r->sweep) {
    EXPECT_EQ(p.completed, 60) << p.pool_blocks;
    EXPECT_LE(p.prefix.hit_tokens, r->bound->hit_tokens) << p.pool_blocks;
  }
  EXPECT_LT(r->sweep.front().prefix.hit_tokens,
            r->sweep.back().prefix.hit_tokens);
  EXPECT_GT(r->sweep.front().prefix.evicted_blocks, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Groups, WindowGroupsTraceTest,
    ::testing::Values(
        std::vector<LayerGroup>{{.num_layers = 2},
                                {.num_layers = 2, .sliding_window = 64}},
        std::vector<LayerGroup>{{.num_layers = 2, .sliding_window = 100},
                                {.num_layers = 2, .sliding_window = 64}}),
    [](const ::testing::TestParamInfo<std::vector<LayerGroup>>& info) {
      return info.param[0].is_window() ? std::string("WindowsOnly")
                                       : std::string("FullAndWindow");
    });

TEST(WindowGroupsConfigTest, ABlockHoldsOneGroupAndTheContiguousModelAll) {
  SimConfig c = SmallTraceWithGroups(
      {{.num_layers = 2}, {.num_layers = 2, .sliding_window = 64}});
  c.pool_blocks = 1000;
  // 2 of 4 layers: half a block's bytes, so 1,000 blocks are 500 blocks'
  // worth of every layer's tokens.
  EXPECT_EQ(c.block_layout().num_layers, 2);
  EXPECT_EQ(c.block_layout().block_bytes() * 2, c.layout.block_bytes());
  EXPECT_EQ(c.pool_bytes(), 1000 * c.block_layout().block_bytes());
  EXPECT_EQ(c.contiguous_capacity_tokens(), 500 * 16);
  c.layer_groups.clear();
  EXPECT_EQ(c.contiguous_capacity_tokens(), 1000 * 16);
  const nlohmann::json j = ConfigToJson(c);
  EXPECT_TRUE(j["layer_groups"].empty());
}

TEST(WindowGroupsConfigTest, HostModeRemoteAndReplicasAreRefused) {
  const std::vector<LayerGroup> groups = {
      {.num_layers = 2}, {.num_layers = 2, .sliding_window = 64}};
  SimConfig c = SmallTraceWithGroups(groups);
  EXPECT_THAT(c.Validate(), IsOk());
  c.storage = StorageMode::kHost;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.Validate().message(), ::testing::HasSubstr("books-only"));
  c = SmallTraceWithGroups(groups);
  c.remote = "memory";
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallTraceWithGroups(groups);
  c.replicas = 2;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallTraceWithGroups({{.num_layers = 3}, {.num_layers = 1}});
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WindowGroupsConfigTest, TheJsonNamesTheGroups) {
  SimConfig c = SmallTraceWithGroups(
      {{.num_layers = 2}, {.num_layers = 2, .sliding_window = 64}});
  const nlohmann::json j = ConfigToJson(c);
  ASSERT_EQ(j["layer_groups"].size(), 2u);
  EXPECT_EQ(j["layer_groups"][0]["sliding_window"], 0);
  EXPECT_EQ(j["layer_groups"][1]["sliding_window"], 64);
  EXPECT_EQ(j["layer_groups"][1]["layers"], 2);
  EXPECT_EQ(j["block_bytes"], c.block_layout().block_bytes());
}

}  // namespace
}  // namespace pagedkv::kv_stress
