// tools/kv_stress/simulator.h
//
// The kv_stress simulation: one step loop that drives two servers with the
// same request stream (WorkloadGenerator) and the same memory budget.
//
//  - The paged server is a continuous-batching scheduler over the real
//    library: one DynamicKVCache per running request, all on one shared
//    KVPool, with real KV bytes. It reproduces arrivals, admission while the
//    pool has room for the prompt (plus a watermark), prefill of varied
//    lengths, one-token decode steps across all layers, beam search
//    (BatchRepeatInterleave after prefill, ReorderCache with duplicates every
//    step), parallel-sampling forks (BatchRepeatInterleave sharing the
//    prompt, copy-on-write on the first decode), sliding windows with Crop,
//    completion, and preemption when an Update returns ResourceExhausted
//    (the victim, chosen by a PreemptionPolicy, is Reset and requeued to
//    recompute from its prompt; a request that does not fit even alone is
//    refused).
//  - The contiguous model is what a non-paged server does with the same
//    bytes: pure bookkeeping in which every admitted request reserves
//    max_len tokens per row up front (a sliding-window request reserves its
//    window). It admits, decodes and completes by the same rules.
//
// What is measured (per model, sampled at the end of every step):
//  - logical tokens: sum over running requests of rows * length (a prompt
//    shared by n fork rows counts n times);
//  - live tokens: token slots that hold a visible token, each physical slot
//    counted once (paged: distinct blocks of a cache, shared blocks once;
//    contiguous: equal to logical tokens, since it copies for beams/forks);
//  - utilization = live tokens / capacity tokens (capacity = pool blocks *
//    block_tokens, the same bytes for both models);
//  - internal fragmentation = (allocated slots - live tokens) / allocated
//    slots (paged: used blocks * block_tokens; contiguous: reserved slots).
//
// Consistency checks (every check_every steps and at the end): the library's
// own CheckInvariants() on every cache and on the pool's books (these abort
// on a breach), plus counted checks: each cache's batch and per-layer lengths
// equal the scheduler's books, the token ledger balances (prefilled + forked
// + decoded - cropped - freed == logical tokens now), the caches' distinct
// blocks add up to the pool's used blocks, and the contiguous model never
// reserves past its capacity.
//
// Not a benchmark: timings are reported for orientation, never asserted.
//
//   absl::StatusOr<SimConfig> config = PresetConfig("tiny");
//   config->steps = 200;
//   absl::StatusOr<SimResult> result = RunSimulation(*config);
//   if (result.ok() && result->invariant_failures == 0) { ... }
//
// Thread safety: RunSimulation is self-contained; concurrent calls share
// nothing (each makes its own pool). It uses one thread.
#ifndef PAGEDKV_TOOLS_KV_STRESS_SIMULATOR_H_
#define PAGEDKV_TOOLS_KV_STRESS_SIMULATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {

struct SimConfig {
  std::string preset = "chat";
  WorkloadOptions workload;
  KVLayout layout{.num_layers = 8,
                  .num_kv_heads = 4,
                  .head_dim = 64,
                  .dtype = DType::kFloat16,
                  .block_tokens = 16};
  // Blocks in the shared pool (the contiguous model gets the same bytes).
  int32_t pool_blocks = 4096;
  // Steps to run; when duration_s > 0 the run also stops at that wall time
  // (then it is no longer deterministic in its step count).
  int64_t steps = 40000;
  double duration_s = 0;
  // Tokens per row the contiguous model reserves (max prompt + max output).
  int32_t max_len = 4096;
  // Scheduler limits, as a serving engine has them.
  int32_t max_running = 256;
  int32_t max_waiting = 1024;
  int32_t max_prefill_tokens_per_step = 8192;
  // Free blocks kept back at admission, in percent of the pool (at least 1).
  double watermark_pct = 1.0;
  PreemptionPolicy policy = PreemptionPolicy::kNewestFirst;
  // Consistency checks every this many steps (and after the last); 0: only
  // after the last.
  int64_t check_every = 100;

  // Returns InvalidArgument for an inconsistent configuration (bad layout,
  // empty pool, max_len below max prompt + max output without crop, ...).
  absl::Status Validate() const;
  // Total bytes of the pool (the memory budget of both models).
  size_t pool_bytes() const {
    return static_cast<size_t>(pool_blocks) * layout.block_bytes();
  }
};

// The names PresetConfig accepts.
inline constexpr std::string_view kPresetNames[] = {"chat", "beam", "long",
                                                    "tiny"};

// Returns the preset "chat", "beam", "long" or "tiny"; InvalidArgument for
// another name.
absl::StatusOr<SimConfig> PresetConfig(std::string_view name);

// Latency of one kind of cache operation, in microseconds.
struct OpLatency {
  std::string op;
  int64_t count = 0;
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
};

struct ModelReport {
  int32_t peak_running = 0;  // Requests.
  double mean_running = 0;
  int32_t peak_rows = 0;  // Sequences counting beams/samples.
  int32_t final_running = 0;
  int32_t final_waiting = 0;
  int32_t peak_waiting = 0;
  double peak_utilization = 0;  // Live tokens / capacity tokens.
  double mean_utilization = 0;
  double mean_fragmentation = 0;         // Internal, see the file comment.
  double peak_logical_tokens_ratio = 0;  // Peak logical tokens / capacity.
  int64_t admitted = 0;                  // Admissions, including readmissions.
  int64_t completed = 0;
  int64_t preemptions = 0;
  int64_t refused_queue_full = 0;  // Arrivals with the waiting queue full.
  int64_t refused_too_large = 0;   // Requests that cannot fit even alone.
  int64_t admissions_refused = 0;  // The sum of the two above.
  int64_t tokens_prefilled = 0;    // Prompt tokens written (recomputes too).
  int64_t tokens_decoded = 0;      // Decode tokens, all rows.
  double tokens_per_step = 0;      // (prefilled + decoded) / steps.
  double tokens_per_s = 0;         // (prefilled + decoded) / run wall time.
  int64_t ops = 0;                 // Cache operations (paged only).
  double ops_per_s = 0;            // ops / run wall time.
  int64_t cow_copies = 0;
  int64_t cow_bytes = 0;
  int64_t kv_bytes_written = 0;
  int32_t peak_shared_blocks = 0;
  double mean_shared_blocks = 0;
  // Token ledger, in row-tokens (see the file comment).
  int64_t ledger_written = 0;  // Prefilled + forked + decoded.
  int64_t ledger_cropped = 0;
  int64_t ledger_freed = 0;          // Completed, preempted or refused.
  int64_t final_tokens = 0;          // Logical tokens of the running requests.
  std::vector<OpLatency> latencies;  // Paged only.
};

// One sample of the time series (end of a step).
struct TimePoint {
  int64_t step = 0;
  double paged_utilization = 0;
  double contiguous_utilization = 0;
  int32_t paged_running = 0;
  int32_t contiguous_running = 0;
};

struct SimResult {
  SimConfig config;
  ModelReport paged;
  ModelReport contiguous;
  int64_t steps_run = 0;
  double wall_s = 0;
  int64_t invariant_checks = 0;
  int64_t invariant_failures = 0;
  int64_t first_failure_step = -1;
  std::vector<std::string> failure_messages;  // The first few.
  // Peak running requests, paged / contiguous (0 if contiguous ran none).
  double capacity_ratio = 0;
  std::vector<TimePoint> series;
};

// What the progress callback sees after each step.
struct Progress {
  int64_t step = 0;
  int64_t steps = 0;
  double elapsed_s = 0;
  int32_t paged_running = 0;
  int32_t paged_waiting = 0;
  int32_t contiguous_running = 0;
  double paged_utilization = 0;
  int64_t preemptions = 0;
};

// Runs the simulation. Returns InvalidArgument for a bad config,
// ResourceExhausted if the pool's memory cannot be allocated, and Internal if
// a cache operation fails for another reason than a full pool (a bug).
// Invariant failures are not errors: they are counted in the result.
absl::StatusOr<SimResult> RunSimulation(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress = nullptr);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_SIMULATOR_H_
