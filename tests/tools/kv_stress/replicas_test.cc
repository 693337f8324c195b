// kv_stress's multi-replica mode (replicas.h) on the in-process store:
// three replicas over the shared_prefix sessions share blocks through the
// tier (cross-replica hits, every loaded block's stamps right), requests are
// routed round-robin, the per-replica figures add up to the total, the run
// is deterministic, the comparison without the tier computes more, a
// books-only config runs in host mode with the same blocks, and bad
// configs are refused with the value named.
#include "tools/kv_stress/replicas.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tests/testing/status_matchers.h"
#include "tests/tools/kv_stress/small_replicas.h"
#include "tools/kv_stress/replica_report.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

SimConfig Small() { return SmallReplicas("memory", /*steps=*/300); }

const ReplicaRunResult& MemoryRun() {
  static const ReplicaRunResult* result = [] {
    SimConfig c = Small();
    c.compare_without_remote = true;
    absl::StatusOr<ReplicaRunResult> r = RunReplicas(c);
    PKV_CHECK(r.ok(), "replica run: %s", r.status().ToString());
    return new ReplicaRunResult(*std::move(r));
  }();
  return *result;
}

TEST(ReplicasTest, ReplicasHitBlocksAnotherReplicaComputedAndEveryStampChecks) {
  const ReplicaRunResult& r = MemoryRun();
  EXPECT_EQ(r.invariant_failures, 0);
  for (const std::string& m : r.failure_messages) ADD_FAILURE() << m;
  ASSERT_EQ(r.replicas.size(), 3u);
  const ReplicaStats& t = r.total;
  EXPECT_GT(t.remote_hit_blocks, 0);
  EXPECT_GT(t.local_hit_blocks, 0);
  // The first and last stamp of every loaded block, all right.
  EXPECT_EQ(t.remote_stamp_checks, 2 * t.loaded_blocks);  // Readmits too.
  EXPECT_EQ(t.remote_stamp_failures, 0);
  EXPECT_EQ(t.verify_failures, 0);
  EXPECT_EQ(t.store_dropped, 0);
  EXPECT_EQ(t.loaded_blocks * r.config.layout.block_tokens,
            t.remote_hit_blocks * r.config.layout.block_tokens +
                t.readmit_tokens_remote);
  EXPECT_EQ(t.loaded_bytes,
            t.loaded_blocks * int64_t(r.config.layout.block_bytes()));
  EXPECT_LE(t.local_hit_blocks + t.remote_hit_blocks, t.prompt_blocks);
  // The servers' own count of loaded tokens agrees with the tiers'.
  EXPECT_EQ(t.prefill_tokens_remote + t.readmit_tokens_remote,
            t.loaded_blocks * r.config.layout.block_tokens);
  // The small pools preempt by recompute, and readmissions re-hit the tier
  // (their loads are not prompt hits: local + remote stay within prompts).
  EXPECT_GT(t.preemptions, 0);
  EXPECT_GT(t.readmit_tokens_remote, 0);
  // Every replica both served and stored blocks through the tier.
  for (const ReplicaStats& s : r.replicas) {
    EXPECT_GT(s.remote_hit_blocks, 0);
    EXPECT_GT(s.stored_blocks, 0);
  }
}

TEST(ReplicasTest, RequestsAreRoutedRoundRobinAndReplicasAddUpToTheTotal) {
  const ReplicaRunResult& r = MemoryRun();
  ReplicaStats sum;
  int64_t most = 0, fewest = INT64_MAX;
  for (const ReplicaStats& s : r.replicas) {
    sum += s;
    most = std::max(most, s.requests);
    fewest = std::min(fewest, s.requests);
  }
  EXPECT_LE(most - fewest, 1);
  EXPECT_GT(fewest, 0);
  EXPECT_EQ(sum.requests, r.total.requests);
  EXPECT_EQ(sum.prompt_blocks, r.total.prompt_blocks);
  EXPECT_EQ(sum.local_hit_blocks, r.total.local_hit_blocks);
  EXPECT_EQ(sum.remote_hit_blocks, r.total.remote_hit_blocks);
  EXPECT_EQ(sum.prefill_tokens_computed, r.total.prefill_tokens_computed);
}

TEST(ReplicasTest, WithoutTheTierNothingIsRemoteAndMoreIsComputed) {
  const ReplicaRunResult& r = MemoryRun();
  ASSERT_TRUE(r.without_remote.has_value());
  const ReplicaStats& off = r.without_remote_total;
  EXPECT_EQ(off.remote_hit_blocks, 0);
  EXPECT_EQ(off.lookups, 0);
  EXPECT_EQ(off.stored_blocks, 0);
  EXPECT_EQ(off.requests, r.total.requests);  // The same workload.
  EXPECT_GT(off.prefill_tokens_computed, r.total.prefill_tokens_computed);
}

TEST(ReplicasTest, AMemoryRunIsDeterministic) {
  SimConfig c = Small();
  c.steps = 150;
  absl::StatusOr<ReplicaRunResult> a = RunReplicas(c);
  absl::StatusOr<ReplicaRunResult> b = RunReplicas(c);
  ASSERT_THAT(a.status(), IsOk());
  ASSERT_THAT(b.status(), IsOk());
  for (size_t i = 0; i < a->replicas.size(); ++i) {
    EXPECT_EQ(a->replicas[i].local_hit_blocks, b->replicas[i].local_hit_blocks);
    EXPECT_EQ(a->replicas[i].remote_hit_blocks,
              b->replicas[i].remote_hit_blocks);
    EXPECT_EQ(a->replicas[i].stored_blocks, b->replicas[i].stored_blocks);
  }
}

TEST(ReplicasTest, BooksOnlyRunsInHostModeWithTheSameBlocks) {
  SimConfig c = Small();
  c.steps = 100;
  c.storage = StorageMode::kBooksOnly;
  absl::StatusOr<ReplicaRunResult> r = RunReplicas(c);
  ASSERT_THAT(r.status(), IsOk());
  EXPECT_TRUE(r->host_geometry);
  EXPECT_EQ(r->config.storage, StorageMode::kHost);
  EXPECT_EQ(r->config.pool_blocks, c.pool_blocks);
  EXPECT_EQ(r->config.layout.block_tokens, c.layout.block_tokens);
  EXPECT_EQ(r->config.layout.block_bytes(),
            ReplicaHostLayout(c.layout.block_tokens).block_bytes());
  EXPECT_EQ(r->requested_layout.block_bytes(), c.layout.block_bytes());
  EXPECT_GT(r->total.remote_stamp_checks, 0);
  EXPECT_EQ(r->total.remote_stamp_failures, 0);
  const nlohmann::json j = ReplicaRunToJson(*r);
  EXPECT_FALSE(j["host_geometry"].is_null());
}

TEST(ReplicasTest, OneReplicaWithoutATierHasNoRemoteFigures) {
  SimConfig c = Small();
  c.steps = 100;
  c.replicas = 1;
  c.remote = "";
  absl::StatusOr<ReplicaRunResult> r = RunReplicas(c);
  ASSERT_THAT(r.status(), IsOk());
  EXPECT_EQ(r->total.remote_hit_blocks, 0);
  EXPECT_EQ(r->total.lookups, 0);
  EXPECT_EQ(r->key_namespace, "");
  EXPECT_GT(r->total.local_hit_blocks, 0);
}

TEST(ReplicasTest, JsonHoldsEachReplicaTheTotalAndTheSavings) {
  const ReplicaRunResult& r = MemoryRun();
  const nlohmann::json j = ReplicaRunToJson(r);
  const int32_t bt = r.config.layout.block_tokens;
  ASSERT_EQ(j["replicas"].size(), r.replicas.size());
  for (size_t i = 0; i < r.replicas.size(); ++i) {
    EXPECT_EQ(j["replicas"][i]["remote"]["hit_blocks"].get<int64_t>(),
              r.replicas[i].remote_hit_blocks);
    EXPECT_EQ(j["replicas"][i]["local"]["hit_tokens"].get<int64_t>(),
              r.replicas[i].local_hit_blocks * bt);
  }
  EXPECT_EQ(j["total"]["tier"]["loaded_blocks"].get<int64_t>(),
            r.total.loaded_blocks);
  EXPECT_EQ(j["remote"]["tokens_saved"].get<int64_t>(),
            r.total.remote_hit_blocks * bt);
  EXPECT_EQ(j["remote"]["tokens_saved_vs_off"].get<int64_t>(),
            r.without_remote_total.prefill_tokens_computed -
                r.total.prefill_tokens_computed);
  EXPECT_EQ(j["config"]["replicas"].get<int32_t>(), 3);
  EXPECT_THAT(FormatReplicaTable(r), HasSubstr("without the tier"));
}

TEST(ReplicasTest, BadConfigsAreRefusedNamingTheValue) {
  SimConfig c = Small();
  c.remote = "tcp://x";
  EXPECT_THAT(
      RunReplicas(c).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tcp://x")));
  c = Small();
  c.replicas = 0;
  EXPECT_THAT(RunReplicas(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0")));
  c = Small();
  c.prefix_caching = false;
  EXPECT_THAT(RunReplicas(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("prefix caching")));
  c = Small();
  c.remote = "redis://localhost:notaport";
  EXPECT_THAT(RunReplicas(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("redis://localhost:notaport")));
  c = Small();
  c.pool_sweep = {64, 128};
  EXPECT_THAT(
      RunReplicas(c).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pool_sweep")));
  // One server's runner refuses a replicated config.
  EXPECT_THAT(
      RunSimulation(Small()).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RunReplicas")));
}

}  // namespace
}  // namespace pagedkv::kv_stress
