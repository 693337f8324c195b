// tools/kv_stress/kv_stress_main.cc
//
// kv_stress: the memory-pressure stress tool, the project's main command.
// It simulates a continuous-batching server over the real caches and one
// shared pool (see simulator.h for the serving behaviours it reproduces),
// runs the same workload against a contiguous max_len reservation model,
// checks invariants every --check_every steps, and prints a table.
//
//   bazel run -c opt //tools/kv_stress -- --preset=chat --seed=1
//     --json_out=kv.json --svg_out=kv.svg
//
// Numeric flags left at -1 (strings left empty) take the preset's value.
// Relative output paths are resolved against the directory `bazel run` was
// started in (BUILD_WORKING_DIRECTORY), and each written file's absolute path
// is printed on stderr.
// Exit codes: 0 ok, 1 an invariant failed (the step is printed), 2 bad flags
// or an unexpected error. Not a benchmark: timings are for orientation.
//
// Thread safety: a single-threaded program.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"
#include "tensor/dtype.h"
#include "tools/common/paths.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/report.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/workload.h"

ABSL_FLAG(std::string, preset, "chat", "Workload preset: chat|beam|long|tiny");
ABSL_FLAG(uint64_t, seed, 1, "Random seed (the run is deterministic for it)");
ABSL_FLAG(int64_t, steps, -1, "Scheduler steps to run");
ABSL_FLAG(double, duration_s, 0,
          "If > 0, also stop after this many seconds (not deterministic)");
ABSL_FLAG(int64_t, pool_mb, -1, "Pool size in MiB (both models)");
ABSL_FLAG(int32_t, pool_blocks, -1, "Pool size in blocks (overrides pool_mb)");
ABSL_FLAG(int32_t, layers, -1, "Layers");
ABSL_FLAG(int32_t, kv_heads, -1, "KV heads");
ABSL_FLAG(int32_t, head_dim, -1, "Head dimension");
ABSL_FLAG(std::string, dtype, "", "float32|float16|bfloat16");
ABSL_FLAG(int32_t, block_tokens, -1, "Tokens per block");
ABSL_FLAG(int32_t, max_len, -1,
          "Contiguous model's reservation per row (>= max prompt + output)");
ABSL_FLAG(double, arrival_rate, -1, "Mean arrivals per step (Poisson)");
ABSL_FLAG(std::string, prompt_dist, "", "lognormal|uniform|fixed");
ABSL_FLAG(double, prompt_median, -1, "Prompt length median");
ABSL_FLAG(double, prompt_sigma, -1, "Prompt lognormal sigma");
ABSL_FLAG(int32_t, prompt_max, -1, "Max prompt tokens");
ABSL_FLAG(std::string, output_dist, "", "lognormal|uniform|fixed");
ABSL_FLAG(double, output_median, -1, "Output length median");
ABSL_FLAG(double, output_sigma, -1, "Output lognormal sigma");
ABSL_FLAG(int32_t, output_max, -1, "Max output tokens");
ABSL_FLAG(double, beam_pct, -1, "Percent of beam-search requests");
ABSL_FLAG(double, fork_pct, -1, "Percent of parallel-sampling requests");
ABSL_FLAG(double, crop_pct, -1, "Percent of sliding-window (Crop) requests");
ABSL_FLAG(int32_t, beam_width, -1, "Beam width");
ABSL_FLAG(int32_t, fork_samples, -1, "Samples per parallel-sampling request");
ABSL_FLAG(int32_t, crop_window, -1, "Sliding window of Crop requests");
ABSL_FLAG(std::string, policy, "", "Preemption: newest_first|least_progress");
ABSL_FLAG(int64_t, check_every, -1, "Check invariants every N steps");
ABSL_FLAG(int32_t, max_running, -1, "Max running requests");
ABSL_FLAG(int32_t, max_waiting, -1, "Max waiting requests (else refused)");
ABSL_FLAG(double, watermark_pct, -1, "Free blocks kept at admission, %");
ABSL_FLAG(std::string, json_out, "",
          "Write the JSON report to this file (none if empty); a relative "
          "path is taken from the directory `bazel run` was started in");
ABSL_FLAG(std::string, svg_out, "",
          "Write the SVG plot to this file (none if empty); a relative path "
          "is taken from the directory `bazel run` was started in");

namespace pagedkv::kv_stress {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

template <typename T, typename F>
void Override(const absl::Flag<F>& flag, T* field) {
  const F v = absl::GetFlag(flag);
  if (v >= 0) *field = static_cast<T>(v);
}

absl::StatusOr<SimConfig> ConfigFromFlags() {
  absl::StatusOr<SimConfig> preset = PresetConfig(absl::GetFlag(FLAGS_preset));
  if (!preset.ok()) return preset.status();
  SimConfig c = *preset;
  const size_t preset_pool_bytes = c.pool_bytes();
  c.workload.seed = absl::GetFlag(FLAGS_seed);
  Override(FLAGS_steps, &c.steps);
  if (kSanitized && absl::GetFlag(FLAGS_steps) < 0) {
    c.steps = std::min<int64_t>(c.steps, 300);  // Smaller under sanitizers.
  }
  c.duration_s = absl::GetFlag(FLAGS_duration_s);
  Override(FLAGS_layers, &c.layout.num_layers);
  Override(FLAGS_kv_heads, &c.layout.num_kv_heads);
  Override(FLAGS_head_dim, &c.layout.head_dim);
  Override(FLAGS_block_tokens, &c.layout.block_tokens);
  if (const std::string d = absl::GetFlag(FLAGS_dtype); !d.empty()) {
    std::optional<DType> dtype = ParseDType(d);
    if (!dtype.has_value()) {
      return absl::InvalidArgumentError("unknown --dtype " + d);
    }
    c.layout.dtype = *dtype;
  }
  if (absl::Status s = c.layout.Validate(); !s.ok()) return s;
  // The memory budget stays the preset's unless a pool flag says otherwise.
  size_t pool_bytes = preset_pool_bytes;
  if (absl::GetFlag(FLAGS_pool_mb) > 0) {
    pool_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_pool_mb)) << 20;
  }
  c.pool_blocks = static_cast<int32_t>(pool_bytes / c.layout.block_bytes());
  Override(FLAGS_pool_blocks, &c.pool_blocks);
  Override(FLAGS_max_len, &c.max_len);
  WorkloadOptions& w = c.workload;
  Override(FLAGS_arrival_rate, &w.arrivals_per_step);
  for (auto [flag, spec] : {std::pair{&FLAGS_prompt_dist, &w.prompt},
                            std::pair{&FLAGS_output_dist, &w.output}}) {
    if (const std::string d = absl::GetFlag(*flag); !d.empty()) {
      std::optional<LengthDist> dist = ParseLengthDist(d);
      if (!dist.has_value()) {
        return absl::InvalidArgumentError("unknown length dist " + d);
      }
      spec->dist = *dist;
    }
  }
  Override(FLAGS_prompt_median, &w.prompt.median);
  Override(FLAGS_prompt_sigma, &w.prompt.sigma);
  Override(FLAGS_prompt_max, &w.prompt.max_tokens);
  Override(FLAGS_output_median, &w.output.median);
  Override(FLAGS_output_sigma, &w.output.sigma);
  Override(FLAGS_output_max, &w.output.max_tokens);
  Override(FLAGS_beam_pct, &w.beam_pct);
  Override(FLAGS_fork_pct, &w.fork_pct);
  Override(FLAGS_crop_pct, &w.crop_pct);
  Override(FLAGS_beam_width, &w.beam_width);
  Override(FLAGS_fork_samples, &w.fork_samples);
  Override(FLAGS_crop_window, &w.crop_window);
  if (const std::string p = absl::GetFlag(FLAGS_policy); !p.empty()) {
    std::optional<PreemptionPolicy> policy = ParsePolicy(p);
    if (!policy.has_value()) {
      return absl::InvalidArgumentError("unknown --policy " + p);
    }
    c.policy = *policy;
  }
  Override(FLAGS_check_every, &c.check_every);
  Override(FLAGS_max_running, &c.max_running);
  Override(FLAGS_max_waiting, &c.max_waiting);
  Override(FLAGS_watermark_pct, &c.watermark_pct);
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

int Main() {
  absl::StatusOr<SimConfig> config = ConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "kv_stress: %s\n", config.status().ToString().c_str());
    return 2;
  }
  const bool tty = isatty(fileno(stderr)) != 0;
  double last_print = -1;
  auto progress = [&](const Progress& p) {
    if (p.elapsed_s - last_print < 0.2 && p.step != p.steps) return;
    last_print = p.elapsed_s;
    std::fputs(
        fmt::format("\r[{:6.1f}s] step {}/{}  running {} (contiguous {})  "
                    "waiting {}  util {:5.1f}%  preemptions {}   ",
                    p.elapsed_s, p.step, p.steps, p.paged_running,
                    p.contiguous_running, p.paged_waiting,
                    100 * p.paged_utilization, p.preemptions)
            .c_str(),
        stderr);
  };
  absl::StatusOr<SimResult> result =
      tty ? RunSimulation(*config, progress) : RunSimulation(*config);
  if (tty) std::fputs("\n", stderr);
  if (!result.ok()) {
    std::fprintf(stderr, "kv_stress: %s\n", result.status().ToString().c_str());
    return 2;
  }
  std::fputs(FormatTable(*result).c_str(), stdout);
  std::fflush(stdout);
  // Under `bazel run` the tool runs in its runfiles tree: relative paths are
  // meant from where the user stands (tools/common/paths.h).
  if (const std::string path = tools::UserPath(absl::GetFlag(FLAGS_json_out));
      !path.empty()) {
    if (absl::Status s = WriteFile(path, ToJson(*result).dump(2) + "\n");
        !s.ok()) {
      std::fprintf(stderr, "kv_stress: %s\n", s.ToString().c_str());
      return 2;
    }
    std::fprintf(stderr, "kv_stress: wrote the JSON report to %s\n",
                 path.c_str());
  }
  if (const std::string path = tools::UserPath(absl::GetFlag(FLAGS_svg_out));
      !path.empty()) {
    if (absl::Status s = WriteFile(path, RenderSvg(*result)); !s.ok()) {
      std::fprintf(stderr, "kv_stress: %s\n", s.ToString().c_str());
      return 2;
    }
    std::fprintf(stderr, "kv_stress: wrote the SVG plot to %s\n", path.c_str());
  }
  if (result->invariant_failures > 0) {
    std::fprintf(stderr,
                 "kv_stress: %lld invariant failure(s), first at step %lld\n",
                 static_cast<long long>(result->invariant_failures),
                 static_cast<long long>(result->first_failure_step));
    for (const std::string& m : result->failure_messages) {
      std::fprintf(stderr, "  %s\n", m.c_str());
    }
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace pagedkv::kv_stress

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pagedkv::kv_stress::Main();
}
