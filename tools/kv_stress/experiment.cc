// tools/kv_stress/experiment.cc
#include "tools/kv_stress/experiment.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "cache/storage/kv_layout.h"
#include "tools/kv_stress/mooncake_trace.h"
#include "tools/kv_stress/pool_sweep.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/trace_bound.h"

namespace pagedkv::kv_stress {

absl::StatusOr<SimResult> RunExperiment(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress) {
  PKV_ASSIGN_OR_RETURN(SimResult result, RunSimulation(config, progress));
  if (config.compare_without_prefix_caching && config.prefix_caching) {
    SimConfig off = config;
    off.prefix_caching = false;
    PKV_ASSIGN_OR_RETURN(SimResult r, RunSimulation(off));
    result.without_prefix_caching = r.paged;
    result.without_prefix_caching_steps = r.steps_run;
    // Both runs' checks count.
    result.invariant_checks += r.invariant_checks;
    result.invariant_failures += r.invariant_failures;
    for (const std::string& m : r.failure_messages) {
      result.failure_messages.push_back("(prefix caching off) " + m);
    }
    if (result.first_failure_step < 0) {
      result.first_failure_step = r.first_failure_step;
    }
  }
  if (config.layout.quantized() && !config.replicated()) {
    SimConfig base = config;
    base.layout.storage = KVStorage::kSame;
    const size_t bytes = base.block_layout().block_bytes();
    base.pool_blocks = static_cast<int32_t>(config.pool_bytes() / bytes);
    if (config.host_blocks > 0) {  // The same host tier bytes, too.
      base.host_blocks = std::max<int32_t>(
          1, static_cast<int32_t>(
                 int64_t{config.host_blocks} *
                 static_cast<int64_t>(config.block_layout().block_bytes()) /
                 static_cast<int64_t>(bytes)));
    }
    base.compare_without_prefix_caching = false;
    base.pool_sweep.clear();
    PKV_ASSIGN_OR_RETURN(SimResult r, RunSimulation(base));
    result.unquantized = r.paged;
    result.unquantized_pool_blocks = base.pool_blocks;
    result.unquantized_block_bytes = bytes;
    result.unquantized_steps = r.steps_run;
    result.invariant_checks += r.invariant_checks;
    result.invariant_failures += r.invariant_failures;
    for (const std::string& m : r.failure_messages) {
      result.failure_messages.push_back("(unquantized) " + m);
    }
    if (result.first_failure_step < 0) {
      result.first_failure_step = r.first_failure_step;
    }
  }
  if (!config.trace_path.empty()) {
    PKV_ASSIGN_OR_RETURN(
        MooncakeTrace trace,
        MooncakeTrace::Load({.path = config.trace_path,
                             .step_ms = config.trace_step_ms,
                             .max_requests = config.trace_max_requests}));
    result.bound =
        ComputePrefixBound(trace.requests(), config.layout.block_tokens);
  }
  if (!config.pool_sweep.empty()) {
    PKV_ASSIGN_OR_RETURN(result.sweep, RunPoolSweep(config, config.pool_sweep));
    for (const SweepPoint& p : result.sweep) {
      result.invariant_failures += p.invariant_failures;
    }
  }
  return result;
}

}  // namespace pagedkv::kv_stress
