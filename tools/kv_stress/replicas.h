// tools/kv_stress/replicas.h
//
// kv_stress's multi-replica mode (SimConfig::replicas, SimConfig::remote):
// several simulated paged servers, each with its own pool and
// KVCacheManager, behind a round-robin router, optionally sharing one
// remote tier (cache/remote/). It measures what the tier is for: a prompt
// prefix that replica B computed is served to replica A from the shared
// store instead of being computed again.
//
//  - Routing: the workload's requests, in arrival order, go to replicas
//    0, 1, ..., N - 1, 0, ... (request k to replica k % N).
//  - Clock: one step loop; each step every replica steps in turn (0 first),
//    and after its step its tier's write-behind queue is drained (Flush), so
//    what a replica published in a step is in the store for every replica
//    stepping after it. That makes a "memory" run deterministic for a seed.
//  - Tier: every replica has its own RemoteTier (own known-set, own queue)
//    over the shared store: "memory" is one InMemoryBlockStore in this
//    process (thread-safe, shared by all tiers and their workers);
//    "redis://HOST:PORT" or "unix:/PATH" gives each replica its own read
//    and write connection (RedisBlockStore), as separate servers would
//    have. Keys live under a namespace unique to the run
//    (ReplicaRunResult::key_namespace), so blocks a previous run left in
//    the server are never counted as hits.
//  - Storage: the tier needs host storage (the manager loads bytes into its
//    blocks). A books-only config (the mooncake preset) runs in host mode
//    with ReplicaHostLayout (one layer, one head, 4 float32 dims: 512-byte
//    blocks of the same block_tokens) and the same pool_blocks per replica:
//    hit rates depend on block counts, not on bytes. The result says so
//    (host_geometry, requested_layout). Stamps are then written and checked
//    as in any host run.
//  - KV correctness: stamps (kv_stamps.h) are a function of the token ids
//    up to a position only, never of the replica, so a block replica A
//    loads from the tier must carry the stamps replica A expects: every
//    loaded block's first and last stamp is read back at admission
//    (ReplicaStats::remote_stamp_checks / remote_stamp_failures; a wrong
//    one is also an invariant failure).
//  - Comparison (compare_without_remote, or compare_without_prefix_caching
//    with a tier): the same replicas and workload again with no tier (each
//    replica alone), so what the tier saved is a same-run difference.
//
// The contiguous reservation model does not run in this mode.
//
//   SimConfig c = *PresetConfig("shared_prefix");
//   c.replicas = 3;
//   c.remote = "memory";
//   absl::StatusOr<ReplicaRunResult> r = RunReplicas(c);
//   // r->total.remote_hit_blocks > 0, r->total.remote_stamp_failures == 0
//
// Thread safety: RunReplicas is self-contained (its own stores and
// managers); it runs on the caller's thread plus one write-behind worker
// per replica with a tier.
#ifndef PAGEDKV_TOOLS_KV_STRESS_REPLICAS_H_
#define PAGEDKV_TOOLS_KV_STRESS_REPLICAS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/storage/kv_layout.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

// The host geometry a books-only config's replicas run with.
KVLayout ReplicaHostLayout(int32_t block_tokens);

// One replica's figures (or, summed, all of them). Blocks are full prompt
// blocks at admission (the prefix cache's query_blocks); a hit is local
// (this replica's own cache) or remote (loaded from the tier: another
// replica computed it).
struct ReplicaStats {
  int64_t requests = 0;  // Routed to it.
  int64_t completed = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens = 0;  // Prompts given at admission.
  int64_t prompt_blocks = 0;
  int64_t local_hit_blocks = 0;
  int64_t remote_hit_blocks = 0;
  int64_t prefill_tokens_computed = 0;  // Recomputes included.
  // Prompt tokens the server saw loaded at its admissions, and at its
  // readmissions after recompute preemption (it counts them itself: together
  // loaded_blocks * block_tokens).
  int64_t prefill_tokens_remote = 0;
  int64_t readmit_tokens_remote = 0;
  int64_t tokens_decoded = 0;
  int64_t hit_stamp_checks = 0;  // Of every hit block, local or remote.
  int64_t remote_stamp_checks = 0;
  int64_t remote_stamp_failures = 0;
  // The tier's counters (RemoteTierStats; zero without a tier).
  int64_t lookups = 0;
  int64_t lookup_blocks = 0;
  int64_t store_hit_blocks = 0;  // Leading blocks the store had.
  int64_t loaded_blocks = 0;     // Admissions' and readmissions' loads.
  int64_t loaded_bytes = 0;
  int64_t stored_blocks = 0;  // Puts that succeeded.
  int64_t stored_bytes = 0;
  int64_t stores_skipped = 0;  // Known to be remote already.
  int64_t store_dropped = 0;   // Write-behind queue full.
  int64_t store_failed = 0;
  int64_t verify_failures = 0;
  int64_t timeouts = 0;  // Both connections.
  int64_t errors = 0;

  ReplicaStats& operator+=(const ReplicaStats& o);
};

struct ReplicaRunResult {
  SimConfig config;  // As run (host mode; see host_geometry).
  // The config asked for books-only storage, so the replicas ran in host
  // mode with ReplicaHostLayout and the same pool_blocks; requested_layout
  // is the geometry asked for.
  bool host_geometry = false;
  KVLayout requested_layout;
  std::string key_namespace;  // The tier's keys ("" without a tier).
  std::vector<ReplicaStats> replicas;
  ReplicaStats total;
  int64_t steps_run = 0;
  double wall_s = 0;
  int64_t invariant_checks = 0;
  int64_t invariant_failures = 0;
  int64_t first_failure_step = -1;
  std::vector<std::string> failure_messages;  // The first few.
  // The comparison run without a tier (same replicas and workload).
  std::optional<std::vector<ReplicaStats>> without_remote;
  ReplicaStats without_remote_total;
  int64_t without_remote_steps = 0;
};

// Runs the replicas (and the comparison run the config asks for).
// InvalidArgument for a bad config or a --remote address that does not
// parse (naming it); ResourceExhausted when a pool cannot be allocated;
// Internal when a cache operation fails unexpectedly (a bug); Unavailable
// ("cannot connect to --remote=...") when the Redis server cannot be
// reached at start-up. A store that goes down during the run is not an
// error: lookups miss, puts fail, and both are counted.
absl::StatusOr<ReplicaRunResult> RunReplicas(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress = nullptr);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_REPLICAS_H_
