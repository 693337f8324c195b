// tools/kv_stress/experiment.h
//
// What one kv_stress invocation runs: the simulation of `config`
// (RunSimulation), plus the prefix-caching extras the config asks for, all
// on the same workload:
//  - compare_without_prefix_caching: the run again with prefix caching off
//    (SimResult::without_prefix_caching), so hit rate, prefill tokens
//    computed and tokens per step can be set side by side;
//  - a trace: its infinite-cache bound (trace_bound.h, SimResult::bound);
//  - pool_sweep: the run at each pool size (pool_sweep.h, SimResult::sweep);
//  - a quantized layout (layout.storage int8 or fp8): the paged server again
//    on the same pool bytes in unquantized blocks (SimResult::unquantized),
//    so the capacity the 8-bit blocks buy is a same-run ratio.
//
//   absl::StatusOr<SimConfig> config = PresetConfig("shared_prefix");
//   absl::StatusOr<SimResult> r = RunExperiment(*config);
//   // r->paged.prefix.hit_rate() > 0 == r->without_prefix_caching->...
//
// Thread safety: as RunSimulation.
#ifndef PAGEDKV_TOOLS_KV_STRESS_EXPERIMENT_H_
#define PAGEDKV_TOOLS_KV_STRESS_EXPERIMENT_H_

#include <functional>

#include "absl/status/statusor.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

// Errors as RunSimulation's (and MooncakeTrace::Load's for the bound).
absl::StatusOr<SimResult> RunExperiment(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress = nullptr);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_EXPERIMENT_H_
