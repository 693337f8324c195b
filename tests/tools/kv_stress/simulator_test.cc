// Short seeded kv_stress runs: invariants hold in every manager mode, the
// figures are consistent (tokens written = tokens in the final state +
// tokens cropped + tokens freed), runs are deterministic, books-only mode
// schedules exactly as host mode, traces run to their end, and the chat
// preset's paged pool holds at least 3x the requests of the contiguous
// model.
#include "tools/kv_stress/simulator.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/report.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

SimConfig Tiny(uint64_t seed) {
  absl::StatusOr<SimConfig> c = PresetConfig("tiny");
  PKV_CHECK(c.ok(), "tiny preset");
  c->workload.seed = seed;
  return *c;
}

void ExpectLedgerBalances(const ModelReport& r) {
  EXPECT_EQ(r.ledger_written,
            r.final_tokens + r.ledger_cropped + r.ledger_freed);
}

// The JSON report without the wall-clock figures.
nlohmann::json WithoutTimings(nlohmann::json j) {
  j.erase("wall_s");
  for (const char* model : {"paged", "contiguous"}) {
    j[model].erase("tokens_per_s");
    j[model].erase("ops_per_s");
    for (auto& [op, lat] : j[model]["latency"].items()) {
      lat.erase("p50_us");
      lat.erase("p99_us");
      lat.erase("mean_us");
    }
  }
  return j;
}

TEST(SimulatorTest, TinyRunHoldsInvariantsAndBalancesItsLedger) {
  absl::StatusOr<SimResult> r = RunSimulation(Tiny(1));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0) << r->failure_messages.front();
  EXPECT_EQ(r->first_failure_step, -1);
  EXPECT_GT(r->invariant_checks, 2 * (400 / 10));
  EXPECT_EQ(r->steps_run, 400);
  ExpectLedgerBalances(r->paged);
  ExpectLedgerBalances(r->contiguous);
  // The tiny pool is under pressure and the mix exercises every operation.
  EXPECT_GT(r->paged.preemptions, 0);
  EXPECT_GT(r->paged.cow_copies, 0);
  EXPECT_GT(r->paged.peak_shared_blocks, 0);
  EXPECT_GT(r->paged.completed, 0);
  for (const OpLatency& op : r->paged.latencies) {
    // Recompute preemption: no swaps.
    if (op.op == "swap_out" || op.op == "swap_in") {
      EXPECT_EQ(op.count, 0) << op.op;
    } else {
      EXPECT_GT(op.count, 0) << op.op;
    }
  }
  EXPECT_GT(r->paged.tokens_recomputed, 0);
  EXPECT_GT(r->paged.stamp_checks, 0);
  EXPECT_EQ(r->contiguous.preemptions, 0);
  EXPECT_LE(r->paged.peak_utilization, 1.0);
  EXPECT_LE(r->contiguous.peak_utilization, 1.0);
  EXPECT_GT(r->paged.mean_utilization, r->contiguous.mean_utilization);
  EXPECT_EQ(r->series.size(), 400u);
  EXPECT_EQ(r->capacity_ratio,
            double(r->paged.peak_running) / r->contiguous.peak_running);
}

TEST(SimulatorTest, FiguresAreConsistent) {
  absl::StatusOr<SimResult> r = RunSimulation(Tiny(2));
  ASSERT_THAT(r, IsOk());
  for (const ModelReport* m : {&r->paged, &r->contiguous}) {
    EXPECT_EQ(m->admissions_refused,
              m->refused_queue_full + m->refused_too_large);
    EXPECT_GE(m->admitted, m->completed + m->final_running);
    EXPECT_GE(m->peak_running, m->final_running);
    EXPECT_GE(m->peak_rows, m->peak_running);
    EXPECT_GE(m->peak_utilization, m->mean_utilization);
    EXPECT_NEAR(m->tokens_per_step,
                double(m->tokens_prefilled + m->tokens_decoded) / 400, 1e-9);
  }
  // Every admission is either still running, completed, preempted (and
  // requeued) or refused while running.
  EXPECT_LE(r->paged.admitted, r->paged.completed + r->paged.final_running +
                                   r->paged.preemptions +
                                   r->paged.refused_too_large);
  EXPECT_GT(r->paged.kv_bytes_written, 0);
}

TEST(SimulatorTest, SameSeedGivesSameFigures) {
  absl::StatusOr<SimResult> a = RunSimulation(Tiny(5));
  absl::StatusOr<SimResult> b = RunSimulation(Tiny(5));
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(WithoutTimings(ToJson(*a)).dump(),
            WithoutTimings(ToJson(*b)).dump());
}

TEST(SimulatorTest, DifferentSeedsGiveDifferentFigures) {
  absl::StatusOr<SimResult> a = RunSimulation(Tiny(5));
  absl::StatusOr<SimResult> b = RunSimulation(Tiny(6));
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_NE(WithoutTimings(ToJson(*a))["paged"].dump(),
            WithoutTimings(ToJson(*b))["paged"].dump());
}

TEST(SimulatorTest, BothPoliciesHoldInvariants) {
  for (PreemptionPolicy policy :
       {PreemptionPolicy::kNewestFirst, PreemptionPolicy::kLeastProgress}) {
    SimConfig c = Tiny(9);
    c.policy = policy;
    c.check_every = 1;
    absl::StatusOr<SimResult> r = RunSimulation(c);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->invariant_failures, 0) << PolicyName(policy);
    EXPECT_GT(r->paged.preemptions, 0) << PolicyName(policy);
    ExpectLedgerBalances(r->paged);
  }
}

TEST(SimulatorTest, PoliciesChooseDifferentVictims) {
  SimConfig newest = Tiny(1);
  newest.policy = PreemptionPolicy::kNewestFirst;
  SimConfig least = Tiny(1);
  least.policy = PreemptionPolicy::kLeastProgress;
  absl::StatusOr<SimResult> a = RunSimulation(newest);
  absl::StatusOr<SimResult> b = RunSimulation(least);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  // Same arrivals, different schedules.
  EXPECT_NE(WithoutTimings(ToJson(*a))["paged"].dump(),
            WithoutTimings(ToJson(*b))["paged"].dump());
  EXPECT_EQ(WithoutTimings(ToJson(*a))["contiguous"].dump(),
            WithoutTimings(ToJson(*b))["contiguous"].dump());
}

TEST(SimulatorTest, RequestLargerThanThePoolIsRefused) {
  SimConfig c = Tiny(3);
  c.pool_blocks = 8;  // 128 tokens; prompts reach 256.
  absl::StatusOr<SimResult> r = RunSimulation(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0);
  EXPECT_GT(r->paged.refused_too_large, 0);
  EXPECT_GT(r->contiguous.refused_too_large, 0);
  ExpectLedgerBalances(r->paged);
}

TEST(SimulatorTest, ChatPresetHoldsThreeTimesTheContiguousRequests) {
  absl::StatusOr<SimConfig> c = PresetConfig("chat");
  ASSERT_THAT(c, IsOk());
  c->steps = 600;
  absl::StatusOr<SimResult> r = RunSimulation(*c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0);
  // 65536 tokens / 4096 per row; fork and beam requests reserve a row each.
  EXPECT_LE(r->contiguous.peak_running, 16);
  EXPECT_GT(r->contiguous.peak_running, 0);
  EXPECT_GE(r->capacity_ratio, 3.0);
  ExpectLedgerBalances(r->paged);
}

// Every manager mode on the tiny pool, checked after every step: the
// manager's invariants, the books, the ledger and (host) the KV stamps.
TEST(SimulatorTest, EveryManagerModeHoldsInvariants) {
  for (StorageMode storage : {StorageMode::kHost, StorageMode::kBooksOnly}) {
    for (AdmissionMode admission :
         {AdmissionMode::kWatermark, AdmissionMode::kReservation}) {
      for (PreemptionMode preemption :
           {PreemptionMode::kRecompute, PreemptionMode::kSwap}) {
        SimConfig c = Tiny(4);
        c.storage = storage;
        c.admission = admission;
        c.preemption = preemption;
        c.check_every = 1;
        const std::string mode =
            absl::StrCat(std::string(StorageModeName(storage)), "/",
                         std::string(AdmissionModeName(admission)), "/",
                         std::string(PreemptionModeName(preemption)));
        absl::StatusOr<SimResult> r = RunSimulation(c);
        ASSERT_THAT(r, IsOk()) << mode;
        EXPECT_EQ(r->invariant_failures, 0)
            << mode << ": " << r->failure_messages.front();
        EXPECT_EQ(r->invariant_checks, 2 * 401) << mode;  // Both models.
        EXPECT_GT(r->paged.completed, 0) << mode;
        ExpectLedgerBalances(r->paged);
        EXPECT_EQ(r->paged.stamp_checks > 0, storage == StorageMode::kHost)
            << mode;
        if (admission == AdmissionMode::kReservation) {
          // Guaranteed no evict: a started request never stalls.
          EXPECT_EQ(r->paged.preemptions, 0) << mode;
        } else {
          EXPECT_GT(r->paged.preemptions, 0) << mode;
        }
      }
    }
  }
}

// Regression (found by the CI soak): under kReservation a crop that would
// drop blocks a sibling keeps live is deferred, so a beam's rows can differ
// in length; a beam step that freed a row of one length and forked one of
// another left the ledger off by the difference (first at step 766).
TEST(SimulatorTest, RaggedBeamRowsKeepTheLedgerBalanced) {
  SimConfig c = Tiny(12);
  c.admission = AdmissionMode::kReservation;
  c.policy = PreemptionPolicy::kLeastProgress;
  c.steps = 800;
  c.check_every = 1;
  absl::StatusOr<SimResult> r = RunSimulation(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0) << r->failure_messages.front();
  ExpectLedgerBalances(r->paged);
}

TEST(SimulatorTest, SwapPreemptionSwapsEveryRowOutAndBackIn) {
  SimConfig c = Tiny(1);
  c.preemption = PreemptionMode::kSwap;
  absl::StatusOr<SimResult> r = RunSimulation(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0) << r->failure_messages.front();
  const ModelReport& p = r->paged;
  EXPECT_GT(p.swap_preemptions, 0);
  EXPECT_EQ(p.swap_preemptions + p.swap_fallbacks, p.preemptions);
  EXPECT_GE(p.swap_outs, p.swap_preemptions);
  // What went out came back, except rows still swapped out at the end.
  EXPECT_GE(p.swap_outs, p.swap_ins);
  EXPECT_GT(p.swapped_blocks, 0);
  EXPECT_EQ(p.swapped_bytes,
            p.swapped_blocks * static_cast<int64_t>(c.layout.block_bytes()));
  EXPECT_EQ(p.tokens_recomputed, 0);  // The tier is as large as the pool.
  ExpectLedgerBalances(p);
}

TEST(SimulatorTest, SmallHostTierFallsBackToRecompute) {
  SimConfig c = Tiny(1);
  c.preemption = PreemptionMode::kSwap;
  c.host_blocks = 4;  // Too small for most victims.
  absl::StatusOr<SimResult> r = RunSimulation(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0) << r->failure_messages.front();
  EXPECT_GT(r->paged.swap_fallbacks, 0);
  EXPECT_GT(r->paged.tokens_recomputed, 0);
  EXPECT_EQ(r->paged.swap_preemptions + r->paged.swap_fallbacks,
            r->paged.preemptions);
}

// The books do not depend on where the bytes are: books-only mode makes
// the very decisions host mode makes.
TEST(SimulatorTest, BooksOnlyMakesTheSameScheduleAsHost) {
  for (PreemptionMode preemption :
       {PreemptionMode::kRecompute, PreemptionMode::kSwap}) {
    SimConfig host = Tiny(7);
    host.preemption = preemption;
    SimConfig books = host;
    books.storage = StorageMode::kBooksOnly;
    absl::StatusOr<SimResult> a = RunSimulation(host);
    absl::StatusOr<SimResult> b = RunSimulation(books);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    nlohmann::json pa = WithoutTimings(ToJson(*a))["paged"];
    nlohmann::json pb = WithoutTimings(ToJson(*b))["paged"];
    EXPECT_GT(pa["kv_bytes_written"].get<int64_t>(), 0);
    EXPECT_EQ(pb["kv_bytes_written"].get<int64_t>(), 0);
    EXPECT_EQ(pb["stamp_checks"].get<int64_t>(), 0);
    for (const char* bytes_only :
         {"kv_bytes_written", "stamp_checks", "swapped_bytes"}) {
      pa.erase(bytes_only);
      pb.erase(bytes_only);
    }
    EXPECT_EQ(pa.dump(), pb.dump()) << PreemptionModeName(preemption);
  }
}

TEST(SimulatorTest, TraceRunsUntilDrainedAndCompletesEveryRequest) {
  const std::string path =
      std::string(std::getenv("TEST_TMPDIR")) + "/trace.jsonl";
  {
    std::ofstream out(path);
    for (int i = 0; i < 40; ++i) {
      out << "{\"timestamp\": " << i * 45
          << ", \"input_length\": " << 20 + 17 * (i % 7)
          << ", \"output_length\": " << 5 + i % 11 << ", \"hash_ids\": [" << i
          << "]}\n";
    }
  }
  SimConfig c = Tiny(1);
  c.trace_path = path;
  c.trace_step_ms = 10;  // One arrival every 4.5 steps.
  c.steps = 0;
  c.storage = StorageMode::kBooksOnly;
  absl::StatusOr<SimResult> r = RunSimulation(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0) << r->failure_messages.front();
  EXPECT_EQ(r->paged.completed, 40);
  EXPECT_EQ(r->paged.final_running, 0);
  EXPECT_EQ(r->paged.final_waiting, 0);
  // The last arrival is at step 175; it then needs its output steps.
  EXPECT_GT(r->steps_run, 175);
  EXPECT_LT(r->steps_run, 175 + 100);
  ExpectLedgerBalances(r->paged);

  c.trace_path = path + ".missing";
  EXPECT_THAT(RunSimulation(c), StatusIs(absl::StatusCode::kNotFound,
                                         HasSubstr("trace.jsonl.missing")));
}

// A trace's request longer than max_len (prompt + output) is refused by
// the contiguous model as too large, as a server with that context limit
// does; it used to be admitted and reported as an invariant failure (it
// outgrew its max_len reservation).
TEST(SimulatorTest, ContiguousModelRefusesTraceRequestsLongerThanMaxLen) {
  const std::string path =
      std::string(std::getenv("TEST_TMPDIR")) + "/long_trace.jsonl";
  {
    std::ofstream out(path);
    for (int i = 0; i < 12; ++i) {
      // Every third request needs 500 + 20 > max_len 512 tokens.
      out << "{\"timestamp\": " << i * 100
          << ", \"input_length\": " << (i % 3 == 0 ? 500 : 40)
          << ", \"output_length\": 20}\n";
    }
  }
  SimConfig c = Tiny(1);
  ASSERT_EQ(c.max_len, 512);
  c.trace_path = path;
  c.trace_step_ms = 10;
  c.steps = 0;
  c.storage = StorageMode::kBooksOnly;
  absl::StatusOr<SimResult> r = RunSimulation(c);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->invariant_failures, 0) << r->failure_messages.front();
  EXPECT_EQ(r->contiguous.refused_too_large, 4);
  EXPECT_EQ(r->contiguous.completed, 8);
  EXPECT_EQ(r->paged.completed, 12);
  ExpectLedgerBalances(r->contiguous);
}

TEST(SimConfigTest, EveryPresetIsValid) {
  for (const char* name : {"chat", "beam", "long", "tiny", "mooncake"}) {
    absl::StatusOr<SimConfig> c = PresetConfig(name);
    ASSERT_THAT(c, IsOk()) << name;
    EXPECT_THAT(c->Validate(), IsOk()) << name;
  }
}

TEST(SimConfigTest, UnknownPresetIsInvalidArgument) {
  EXPECT_THAT(PresetConfig("huge"), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("unknown preset")));
}

TEST(SimConfigTest, MaxLenBelowPromptPlusOutputIsInvalidArgument) {
  SimConfig c = Tiny(1);
  c.max_len = 100;
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("max_len 100")));
  EXPECT_THAT(RunSimulation(c), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SimConfigTest, BadManagerSettingsAreInvalidArgument) {
  SimConfig c = Tiny(1);
  c.watermark_pct = 100;
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("watermark_pct 100")));
  c = Tiny(1);
  c.host_blocks = -1;
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("host_blocks -1")));
  c = Tiny(1);
  c.steps = 0;  // No trace to end the run.
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("steps 0")));
  c.trace_path = "t.jsonl";
  c.trace_step_ms = 0;
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("trace_step_ms")));
}

TEST(SimConfigTest, MooncakePresetIsBooksOnlyOnLlama8B) {
  absl::StatusOr<SimConfig> c = PresetConfig("mooncake");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->storage, StorageMode::kBooksOnly);
  EXPECT_EQ(c->model, "llama-3.1-8b");
  EXPECT_EQ(c->layout.num_layers, 32);
  EXPECT_EQ(c->layout.num_kv_heads, 8);
  EXPECT_EQ(c->layout.head_dim, 128);
  EXPECT_EQ(c->pool_bytes(), size_t{32} << 30);
  EXPECT_EQ(c->steps, 0);
  EXPECT_THAT(c->trace_path, HasSubstr("mooncake_synthetic_trace.jsonl"));
}

TEST(SimConfigTest, EmptyPoolIsInvalidArgument) {
  SimConfig c = Tiny(1);
  c.pool_blocks = 0;
  EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("pool_blocks")));
}

}  // namespace
}  // namespace pagedkv::kv_stress
