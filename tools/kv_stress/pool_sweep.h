// tools/kv_stress/pool_sweep.h
//
// How the prefix-cache hit rate moves with pool size: --pool_sweep names the
// sizes, RunPoolSweep replays the same workload (a trace, in books-only mode
// a fraction of a second per size) once per size and keeps each run's
// prefix-cache figures. A bigger pool keeps more freed blocks cached, so
// the hit rate climbs toward the trace's infinite-cache bound
// (trace_bound.h); it is not guaranteed monotone, because a bigger pool
// also admits more requests at once, which changes the order blocks are
// freed and reused in.
//
//   absl::StatusOr<std::vector<int32_t>> sizes =
//       ParsePoolSweep("8GiB,16GiB,4096", config.layout.block_bytes());
//   absl::StatusOr<std::vector<SweepPoint>> points =
//       RunPoolSweep(config, *sizes);
//
// Thread safety: pure functions; RunPoolSweep runs one simulation at a time.
#ifndef PAGEDKV_TOOLS_KV_STRESS_POOL_SWEEP_H_
#define PAGEDKV_TOOLS_KV_STRESS_POOL_SWEEP_H_

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

// Parses a comma-separated list of pool sizes: "<n>GiB" (or "<n>G", "<n>g";
// n may have a fraction) is n GiB of blocks of block_bytes, rounded down; a
// bare integer is blocks. Returns them in the order given; InvalidArgument
// naming the entry for an empty, malformed, zero-block or over-large one.
absl::StatusOr<std::vector<int32_t>> ParsePoolSweep(std::string_view text,
                                                    size_t block_bytes);

// Runs `config` at each pool size (pool_blocks replaced; its sweep, the
// comparison and the time series off) and returns one point per size.
// Errors as RunSimulation's.
absl::StatusOr<std::vector<SweepPoint>> RunPoolSweep(
    const SimConfig& config, absl::Span<const int32_t> pool_blocks);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_POOL_SWEEP_H_
