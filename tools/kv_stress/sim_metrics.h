// tools/kv_stress/sim_metrics.h
//
// Internal to the simulator: the op kinds whose latencies are reported, and
// the small accumulators both models share (per-step samples, latency
// reservoirs, the invariant checker). Not part of any API.
//
// Thread safety: one simulation thread.
#ifndef PAGEDKV_TOOLS_KV_STRESS_SIM_METRICS_H_
#define PAGEDKV_TOOLS_KV_STRESS_SIM_METRICS_H_

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress::internal {

using Clock = std::chrono::steady_clock;

// The manager calls the paged server makes (append_slots: one batched call
// per step for every running row).
enum OpKind : int {
  kOpAddSequence,
  kOpAppendSlots,
  kOpFork,
  kOpTruncate,
  kOpFree,
  kOpPreempt,
  kOpReadmit,
  kOpSwapOut,
  kOpSwapIn,
  kNumOps
};
constexpr std::string_view kOpNames[kNumOps] = {
    "add_sequence", "append_slots", "fork",     "truncate", "free",
    "preempt",      "readmit",      "swap_out", "swap_in"};

// Per-model running sums of the per-step samples.
struct Sampler {
  int64_t samples = 0;
  double sum_running = 0;
  double sum_utilization = 0;
  double sum_fragmentation = 0;
  double sum_shared = 0;

  void Add(ModelReport& r, int32_t running, int32_t rows, int32_t waiting,
           double utilization, double fragmentation, double logical_ratio,
           int32_t shared) {
    ++samples;
    sum_running += running;
    sum_utilization += utilization;
    sum_fragmentation += fragmentation;
    sum_shared += shared;
    r.peak_running = std::max(r.peak_running, running);
    r.peak_rows = std::max(r.peak_rows, rows);
    r.peak_waiting = std::max(r.peak_waiting, waiting);
    r.peak_utilization = std::max(r.peak_utilization, utilization);
    r.peak_logical_tokens_ratio =
        std::max(r.peak_logical_tokens_ratio, logical_ratio);
    r.peak_shared_blocks = std::max(r.peak_shared_blocks, shared);
  }
  void Finish(ModelReport& r) const {
    if (samples == 0) return;
    r.mean_running = sum_running / samples;
    r.mean_utilization = sum_utilization / samples;
    r.mean_fragmentation = sum_fragmentation / samples;
    r.mean_shared_blocks = sum_shared / samples;
  }
};

// Latency samples of one op kind: exact count and mean, and a uniform
// reservoir of at most kMaxSamples for the percentiles (bounded memory on
// long runs). Its own generator keeps the simulation's draws untouched.
struct LatencySamples {
  static constexpr size_t kMaxSamples = size_t{1} << 18;
  int64_t count = 0;
  double sum_ns = 0;
  std::vector<int64_t> samples;
  Rng rng{0x5eed};

  void Add(int64_t ns) {
    ++count;
    sum_ns += static_cast<double>(ns);
    if (samples.size() < kMaxSamples) {
      samples.push_back(ns);
    } else if (const int64_t k = rng.Below(count);
               k < static_cast<int64_t>(kMaxSamples)) {
      samples[k] = ns;
    }
  }
};

// Collects invariant failures with their step.
struct Checker {
  int64_t checks = 0;
  int64_t failures = 0;
  int64_t first_failure_step = -1;
  std::vector<std::string> messages;

  void Expect(bool ok, int64_t step, const std::string& what) {
    if (ok) return;
    ++failures;
    if (first_failure_step < 0) first_failure_step = step;
    if (messages.size() < 10) {
      messages.push_back(absl::StrFormat("step %d: %s", step, what));
    }
  }
};

}  // namespace pagedkv::kv_stress::internal

#endif  // PAGEDKV_TOOLS_KV_STRESS_SIM_METRICS_H_
