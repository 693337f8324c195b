// tools/kv_stress/simulator.h
//
// The kv_stress simulation: one step loop that drives two servers with the
// same request stream (WorkloadGenerator, or a Mooncake trace) and the same
// memory budget, under one set of scheduling rules (scheduling.h: queue
// order, max_running, the prefill budget, crops).
//
//  - The paged server is a user of the library's serving manager
//    (KVCacheManager, cache/serving/): one sequence per row, all on one
//    pool. It admits with the manager's CanAdmit (watermark or reservation
//    mode), prefills through AddSequence, gives every running row its decode
//    slot with one batched AppendSlots per step, forks rows for beams and
//    parallel samples (a beam step frees the rows it drops and forks the
//    ones it keeps twice), truncates sliding-window requests back to their
//    window, and frees finished ones. When AppendSlots runs out of blocks it
//    preempts a victim (PreemptionPolicy) by recompute (Preempt, then
//    Readmit) or by swap to the host tier (SwapOut, then SwapIn; recompute
//    when the tier is full), requeued at the front. A request that cannot
//    fit even alone is refused.
//    Storage: in host mode the manager owns the KV bytes and the server
//    writes every token's K and V (each with a stamp, kv_stamps.h, read back
//    at every check through the block tables); in books-only mode there are
//    no KV bytes (copies the manager asks for are confirmed at once), so
//    real model geometries and long traces run in seconds.
//  - The contiguous model is what a non-paged server does with the same
//    bytes: pure bookkeeping in which every admitted request reserves
//    max_len tokens per row up front (a sliding-window request reserves its
//    window). It admits, decodes and completes by the same rules.
//
// What is measured (per model, sampled at the end of every step):
//  - logical tokens: sum over running requests of rows * length (a prompt
//    shared by n fork rows counts n times);
//  - live tokens: token slots that hold a visible token, each physical slot
//    counted once (paged: distinct blocks of a request, shared blocks once;
//    contiguous: equal to logical tokens, since it copies for beams/forks);
//  - utilization = live tokens / capacity tokens (capacity = pool blocks *
//    block_tokens, the same bytes for both models);
//  - internal fragmentation = (allocated slots - live tokens) / allocated
//    slots (paged: used blocks * block_tokens; contiguous: reserved slots).
//
// Consistency checks (every check_every steps and at the end): the
// manager's own CheckInvariants() (aborts on a breach), plus counted checks:
// every row's state and length in the manager equal the server's books, the
// running rows' distinct blocks add up to the pool's used blocks, the token
// ledger balances (prefilled + forked + decoded - cropped - freed == tokens
// of the requests held, running or preempted), in host mode each running
// row's stamps at its first, last and a few random positions are the ones
// written for it, and the contiguous model never reserves past capacity.
//
// Not a benchmark: timings are reported for orientation, never asserted.
// Several paged servers behind a router, sharing a remote tier, are
// replicas.h's (SimConfig::replicas, SimConfig::remote).
//
//   absl::StatusOr<SimConfig> config = PresetConfig("tiny");
//   config->steps = 200;
//   absl::StatusOr<SimResult> result = RunSimulation(*config);
//   if (result.ok() && result->invariant_failures == 0) { ... }
//
// Prefix caching (prefix_caching): the paged server gives the manager every
// token's id, commits what it wrote (after prefill, and at each decode step
// the tokens held before it), prefills only the uncached part of a prompt,
// and, in host mode, reads back the stamps of every hit block at admission;
// sampling then counts blocks shared between requests once.
//
// Thread safety: RunSimulation is self-contained; concurrent calls share
// nothing (each makes its own manager). It uses one thread.
#ifndef PAGEDKV_TOOLS_KV_STRESS_SIMULATOR_H_
#define PAGEDKV_TOOLS_KV_STRESS_SIMULATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/request_source.h"
#include "tools/kv_stress/shared_prefix_workload.h"
#include "tools/kv_stress/trace_bound.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {

// The most replicas a run may simulate (each has its own pool).
inline constexpr int32_t kMaxReplicas = 64;

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
  // Steps to run (0: no limit, for a trace: until it is drained and the
  // paged server is idle; the contiguous model's backlog is then reported
  // as its waiting requests); when duration_s > 0 the run also stops at that
  // wall time (then it is no longer deterministic in its step count).
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
  // The paged server's manager and what preemption does.
  StorageMode storage = StorageMode::kHost;
  AdmissionMode admission = AdmissionMode::kWatermark;
  PreemptionMode preemption = PreemptionMode::kRecompute;
  // Blocks of the host swap tier (kSwap); 0: as many as the pool.
  int32_t host_blocks = 0;
  // The model whose geometry `layout` has (model_presets.h, or a window
  // model of window_capacity.h), or "" when the geometry is the preset's
  // own.
  std::string model;
  // The paged server's layer groups (KVCacheManager::Options::layer_groups;
  // set by a window model): empty, every layer in one table; else a block
  // holds one group's layers (block_layout()) and window groups release
  // what falls out of their window. Books-only, without replicas or a
  // remote tier (Validate). The contiguous model keeps every layer's KV
  // for the whole reservation, as a server without paged windows does.
  std::vector<LayerGroup> layer_groups;
  // A Mooncake trace to replay instead of the generator ("": none), its
  // milliseconds per step, and how many of its requests (0: all).
  std::string trace_path;
  double trace_step_ms = 30;
  int64_t trace_max_requests = 0;
  // Prefix caching in the manager (Options::prefix_caching): requests give
  // their token ids (prefix_tokens.h), the server commits what it wrote,
  // and a prompt's cached prefix is not computed again (host mode: the hit
  // blocks' stamps are read back at admission).
  bool prefix_caching = false;
  // Multi-turn sessions over shared system prompts instead of the generator
  // (shared_prefix_workload.h); its seed is workload.seed.
  std::optional<SharedPrefixOptions> sessions;
  // Also run the same workload with prefix caching off (RunExperiment) and
  // report both.
  bool compare_without_prefix_caching = false;
  // Pool sizes in blocks to replay the workload at as well (RunExperiment),
  // each reporting its prefix-cache hit rate.
  std::vector<int32_t> pool_sweep;
  // Simulated server replicas (replicas.h): requests are routed round-robin
  // over `replicas` paged servers, each with its own pool and manager, all
  // stepping on one clock. With `remote` they share a remote tier: ""
  // (none: each replica alone), "memory" (an InMemoryBlockStore in this
  // process), "redis://HOST:PORT" or "unix:/PATH/redis.sock" (a Redis
  // server; each replica opens its own read and write connections).
  // Either makes the config replicated(): kv_stress runs it with
  // RunReplicas instead of the paged/contiguous comparison, and
  // RunSimulation refuses it.
  int32_t replicas = 1;
  std::string remote;
  // Also run the replicas with the remote tier off (each replica alone) and
  // report what the tier saved as a same-run ratio.
  bool compare_without_remote = false;
  bool replicated() const { return replicas > 1 || !remote.empty(); }
  // Host mode: random stamp positions read back per running row at each
  // check (besides the first and last).
  int32_t stamp_samples = 4;
  // Consistency checks every this many steps (and after the last); 0: only
  // after the last.
  int64_t check_every = 100;

  // Returns InvalidArgument for an inconsistent configuration (bad layout,
  // empty pool, max_len below max prompt + max output without a trace,
  // watermark_pct outside [0, 100), ...).
  absl::Status Validate() const;
  // The host tier's blocks when preemption swaps, else 0.
  int32_t swap_tier_blocks() const {
    if (preemption != PreemptionMode::kSwap) return 0;
    return host_blocks > 0 ? host_blocks : pool_blocks;
  }
  // The layout of one block: `layout`, or with layer groups one group's
  // layers of it (GroupBlockLayout). REQUIRES: valid layer_groups.
  KVLayout block_layout() const {
    return layer_groups.empty() ? layout
                                : GroupBlockLayout(layout, layer_groups);
  }
  // Total bytes of the pool (the memory budget of both models).
  size_t pool_bytes() const {
    return static_cast<size_t>(pool_blocks) * block_layout().block_bytes();
  }
  // Tokens of every layer's KV that pool_bytes() holds: the contiguous
  // model's capacity (pool_blocks * block_tokens without groups).
  int64_t contiguous_capacity_tokens() const {
    return static_cast<int64_t>(pool_bytes() * layout.block_tokens /
                                layout.block_bytes());
  }
};

// The names PresetConfig accepts.
inline constexpr std::string_view kPresetNames[] = {
    "chat", "beam", "long", "tiny", "mooncake", "shared_prefix"};

// Returns the preset "chat", "beam", "long", "tiny", "mooncake" (the
// Mooncake trace in ../shared/traces, books-only, Llama-3.1-8B on 32 GiB,
// prefix caching on) or "shared_prefix" (multi-turn sessions over four
// system prompts, host mode, prefix caching on and compared with off);
// InvalidArgument for another name.
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
  // Paged only: preemptions by swap, and swap preemptions that recomputed
  // because the host tier was full.
  int64_t swap_preemptions = 0;
  int64_t swap_fallbacks = 0;
  int64_t swap_outs = 0;  // Rows swapped out / in.
  int64_t swap_ins = 0;
  int64_t swapped_blocks = 0;  // Both directions.
  // Bytes the swaps copied (books-only: that the caller's copies move).
  int64_t swapped_bytes = 0;
  int64_t tokens_recomputed = 0;   // Row-tokens recomputed at readmission.
  int64_t stamp_checks = 0;        // Host mode: stamps read back.
  int64_t refused_queue_full = 0;  // Arrivals with the waiting queue full.
  int64_t refused_too_large = 0;   // Requests that cannot fit even alone.
  int64_t admissions_refused = 0;  // The sum of the two above.
  int64_t tokens_prefilled = 0;    // Prompt tokens served (recomputes too).
  // Paged only: of those, tokens served from the prefix cache (prompt hits
  // at admission, rehits at readmission) and tokens computed (the rest).
  int64_t prefill_tokens_cached = 0;
  int64_t prefill_tokens_computed = 0;
  int64_t hit_stamp_checks = 0;  // Host mode: hit blocks' stamps read.
  // With a remote tier (replicas.h): of prefill_tokens_cached, the tokens
  // loaded from the tier at admission, and of hit_stamp_checks, the stamps
  // of those blocks read back and how many were wrong.
  int64_t prefill_tokens_remote = 0;
  // Tokens Readmit loaded from the tier (recompute preemption re-hits; in
  // prefill_tokens_cached, not in prefill_tokens_remote).
  int64_t readmit_tokens_remote = 0;
  int64_t remote_hit_stamp_checks = 0;
  int64_t remote_hit_stamp_failures = 0;
  PrefixCacheStats prefix;     // The manager's, at the end.
  int64_t tokens_decoded = 0;  // Decode tokens, all rows.
  double tokens_per_step = 0;  // (prefilled + decoded) / steps.
  double tokens_per_s = 0;     // (prefilled + decoded) / run wall time.
  int64_t ops = 0;             // Cache operations (paged only).
  double ops_per_s = 0;        // ops / run wall time.
  int64_t cow_copies = 0;
  int64_t cow_bytes = 0;
  int64_t kv_bytes_written = 0;
  int32_t peak_shared_blocks = 0;
  double mean_shared_blocks = 0;
  // Token ledger, in row-tokens (see the file comment).
  int64_t ledger_written = 0;  // Prefilled + forked + decoded.
  int64_t ledger_cropped = 0;
  int64_t ledger_freed = 0;  // Completed, refused, or a beam dropped.
  // Logical tokens of the requests held at the end (running, or preempted
  // and waiting with their tokens remembered).
  int64_t final_tokens = 0;
  std::vector<OpLatency> latencies;  // Paged only.
};

// One run of a pool sweep (RunExperiment): the workload at one pool size.
struct SweepPoint {
  int32_t pool_blocks = 0;
  size_t pool_bytes = 0;
  PrefixCacheStats prefix;
  int64_t prefill_tokens_computed = 0;
  int64_t preemptions = 0;
  int64_t completed = 0;
  int64_t steps_run = 0;
  double wall_s = 0;
  int64_t invariant_failures = 0;
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
  // RunExperiment's extras: the paged server with prefix caching off on the
  // same workload (compare_without_prefix_caching), the infinite-cache
  // bound of a trace, and the pool sweep's runs in pool order.
  std::optional<ModelReport> without_prefix_caching;
  int64_t without_prefix_caching_steps = 0;
  std::optional<PrefixBound> bound;
  std::vector<SweepPoint> sweep;
  // On a quantized layout (config.layout.storage int8 or fp8), RunExperiment
  // also runs the paged server on the same workload and the same pool bytes
  // in unquantized blocks of the layout's dtype: the capacity the 8-bit
  // blocks bought, measured in the same invocation.
  std::optional<ModelReport> unquantized;
  int32_t unquantized_pool_blocks = 0;
  size_t unquantized_block_bytes = 0;
  int64_t unquantized_steps = 0;
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
  int64_t swap_preemptions = 0;
};

// Returns the workload of `config`: its trace, its sessions or the
// generator. Errors as MooncakeTrace::Load's.
absl::StatusOr<std::unique_ptr<RequestSource>> MakeRequestSource(
    const SimConfig& config);

// Runs the simulation (one paged server; a replicated() config is
// InvalidArgument: RunReplicas runs it). Returns InvalidArgument for a bad
// config, ResourceExhausted if the pool's memory cannot be allocated, and
// Internal if a cache operation fails for another reason than a full pool (a
// bug). Invariant failures are not errors: they are counted in the result.
absl::StatusOr<SimResult> RunSimulation(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress = nullptr);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_SIMULATOR_H_
