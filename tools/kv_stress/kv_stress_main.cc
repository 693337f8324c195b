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
//   bazel run -c opt //tools/kv_stress -- --preset=shared_prefix
//   bazel run -c opt //tools/kv_stress -- --preset=mooncake
//     --pool_sweep=4GiB,8GiB,16GiB,32GiB,64GiB --svg_out=sweep.svg
//
//   bazel run -c opt //tools/kv_stress -- --preset=shared_prefix
//     --replicas=4 --remote=unix:/tmp/pkv.sock   # README: starting Redis
//
// With prefix caching the table ends in a prefix-cache section (hit rate,
// blocks saved, evictions, prefill tokens computed; with
// --compare_prefix_caching the same without caching; for a trace its
// infinite-cache bound; for --pool_sweep one line per size).
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
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/physical_memory.h"
#include "base/status_macros.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/storage/kv_layout.h"
#include "fmt/format.h"
#include "tensor/dtype.h"
#include "tools/common/flags.h"
#include "tools/common/paths.h"
#include "tools/kv_stress/experiment.h"
#include "tools/kv_stress/flag_help.h"
#include "tools/kv_stress/model_presets.h"
#include "tools/kv_stress/mooncake_trace.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/pool_sweep.h"
#include "tools/kv_stress/replica_report.h"
#include "tools/kv_stress/replicas.h"
#include "tools/kv_stress/report.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/window_capacity.h"
#include "tools/kv_stress/workload.h"

// Flags that default to -1 (strings to "") take the preset's value; their
// help says what each preset uses (flag_help.h).
using ::pagedkv::kv_stress::PresetFlagHelp;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

ABSL_FLAG(std::string, preset, "chat",
          "Workload preset: chat|beam|long|tiny|mooncake|shared_prefix");
ABSL_FLAG(uint64_t, seed, 1, "Random seed (the run is deterministic for it)");
ABSL_FLAG(int64_t, steps, -1,
          PresetFlagHelp(kSanitized ? "Scheduler steps to run, 0 to a trace's "
                                      "end (at most 300 in this sanitizer "
                                      "build unless set)"
                                    : "Scheduler steps to run, 0 to a "
                                      "trace's end",
                         "steps"));
ABSL_FLAG(double, duration_s, 0,
          "If > 0, also stop after this many seconds (not deterministic)");
ABSL_FLAG(double, pool_mb, -1,
          PresetFlagHelp("Pool size in MiB (a fraction is fine), both "
                         "models (kept when the geometry changes)",
                         "pool_mb"));
ABSL_FLAG(int32_t, pool_blocks, -1,
          PresetFlagHelp("Pool size in blocks; overrides --pool_mb, else "
                         "--pool_mb's worth of blocks",
                         "pool_blocks"));
ABSL_FLAG(int32_t, layers, -1, PresetFlagHelp("Layers", "layers"));
ABSL_FLAG(int32_t, kv_heads, -1, PresetFlagHelp("KV heads", "kv_heads"));
ABSL_FLAG(int32_t, head_dim, -1, PresetFlagHelp("Head dimension", "head_dim"));
ABSL_FLAG(std::string, dtype, "",
          PresetFlagHelp("float32|float16|bfloat16", "dtype"));
ABSL_FLAG(std::string, kv_dtype, "",
          PresetFlagHelp("How blocks store K/V: the dtype (float16, ...: "
                         "unquantized), int8 or fp8 (e4m3): 8-bit codes plus "
                         "a float32 scale per token and head; the same pool "
                         "bytes then hold more blocks, and the run is "
                         "repeated unquantized to report the capacity "
                         "gained",
                         "kv_dtype"));
ABSL_FLAG(int32_t, block_tokens, -1,
          PresetFlagHelp("Tokens per block", "block_tokens"));
ABSL_FLAG(int32_t, max_len, -1,
          PresetFlagHelp("Contiguous model's reservation per row (>= max "
                         "prompt + output)",
                         "max_len"));
ABSL_FLAG(double, arrival_rate, -1,
          PresetFlagHelp("Mean arrivals per step (Poisson)", "arrival_rate"));
ABSL_FLAG(std::string, prompt_dist, "",
          PresetFlagHelp("lognormal|uniform|fixed", "prompt_dist"));
ABSL_FLAG(double, prompt_median, -1,
          PresetFlagHelp("Prompt length median", "prompt_median"));
ABSL_FLAG(double, prompt_sigma, -1,
          PresetFlagHelp("Prompt lognormal sigma", "prompt_sigma"));
ABSL_FLAG(int32_t, prompt_max, -1,
          PresetFlagHelp("Max prompt tokens", "prompt_max"));
ABSL_FLAG(std::string, output_dist, "",
          PresetFlagHelp("lognormal|uniform|fixed", "output_dist"));
ABSL_FLAG(double, output_median, -1,
          PresetFlagHelp("Output length median", "output_median"));
ABSL_FLAG(double, output_sigma, -1,
          PresetFlagHelp("Output lognormal sigma", "output_sigma"));
ABSL_FLAG(int32_t, output_max, -1,
          PresetFlagHelp("Max output tokens", "output_max"));
ABSL_FLAG(double, beam_pct, -1,
          PresetFlagHelp("Percent of beam-search requests", "beam_pct"));
ABSL_FLAG(double, fork_pct, -1,
          PresetFlagHelp("Percent of parallel-sampling requests", "fork_pct"));
ABSL_FLAG(double, crop_pct, -1,
          PresetFlagHelp("Percent of sliding-window (Crop) requests",
                         "crop_pct"));
ABSL_FLAG(int32_t, beam_width, -1, PresetFlagHelp("Beam width", "beam_width"));
ABSL_FLAG(int32_t, fork_samples, -1,
          PresetFlagHelp("Samples per parallel-sampling request",
                         "fork_samples"));
ABSL_FLAG(int32_t, crop_window, -1,
          PresetFlagHelp("Sliding window of Crop requests", "crop_window"));
ABSL_FLAG(std::string, policy, "",
          PresetFlagHelp("Preemption: newest_first|least_progress", "policy"));
ABSL_FLAG(int64_t, check_every, -1,
          PresetFlagHelp("Check invariants every N steps (0: only at the end)",
                         "check_every"));
ABSL_FLAG(int32_t, max_running, -1,
          PresetFlagHelp("Max running requests", "max_running"));
ABSL_FLAG(int32_t, max_waiting, -1,
          PresetFlagHelp("Max waiting requests (else refused)", "max_waiting"));
ABSL_FLAG(double, watermark_pct, -1,
          PresetFlagHelp("Free blocks kept at admission, %", "watermark_pct"));
ABSL_FLAG(std::string, model, "",
          PresetFlagHelp("KV geometry of a real model (sets --layers, "
                         "--kv_heads, --head_dim, --dtype): " +
                             ::pagedkv::kv_stress::ModelNames() +
                             "; or a sliding-window model, run with its "
                             "layer groups (books-only): " +
                             ::pagedkv::kv_stress::WindowModelNames(),
                         "model"));
ABSL_FLAG(std::string, storage, "",
          PresetFlagHelp("Manager storage: host (real KV bytes, stamped and "
                         "checked) | books_only (no bytes: fast, for real "
                         "geometries and long traces)",
                         "storage"));
ABSL_FLAG(std::string, admission, "",
          PresetFlagHelp("Admission: watermark (optimistic, may preempt) | "
                         "reservation (prompt + max output reserved, never "
                         "preempts)",
                         "admission"));
ABSL_FLAG(std::string, preemption, "",
          PresetFlagHelp("What preemption does: recompute | swap (to a host "
                         "tier; recompute when it is full)",
                         "preemption"));
ABSL_FLAG(int64_t, host_pool_mb, 0,
          "Host swap tier in MiB for --preemption=swap [0: as large as the "
          "pool]");
ABSL_FLAG(std::string, trace, "",
          PresetFlagHelp("Replay this Mooncake trace (JSONL) instead of the "
                         "generator; \"none\" for the generator",
                         "trace"));
ABSL_FLAG(double, trace_step_ms, -1,
          PresetFlagHelp("Trace milliseconds per scheduler step",
                         "trace_step_ms"));
ABSL_FLAG(int64_t, trace_requests, 0,
          "Replay only the trace's first N requests [0: all]");
ABSL_FLAG(std::string, prefix_caching, "",
          PresetFlagHelp("Prefix caching in the manager: true|false (requests "
                         "give token ids; a cached prompt prefix is not "
                         "computed again)",
                         "prefix_caching"));
ABSL_FLAG(std::string, compare_prefix_caching, "",
          PresetFlagHelp("true|false: also run the workload with prefix "
                         "caching off and report both",
                         "compare_prefix_caching"));
ABSL_FLAG(int32_t, replicas, 1,
          "Simulated server replicas, each with its own pool and manager; "
          "requests are routed round-robin (the contiguous model does not "
          "run with more than one)");
ABSL_FLAG(std::string, remote, "",
          "Remote tier shared by the replicas: memory (in this process) | "
          "redis://HOST:PORT | unix:/PATH/redis.sock (a running redis-server; "
          "README \"kv_stress with replicas\") [\"\": none]. Needs prefix "
          "caching; books-only configs run in host mode with a small block");
ABSL_FLAG(bool, compare_remote, false,
          "Also run the replicas with the remote tier off (each alone) and "
          "report what it saved (with --remote, --compare_prefix_caching=true "
          "implies it)");
ABSL_FLAG(std::string, pool_sweep, "",
          "Also replay the workload at each of these pool sizes (comma-"
          "separated; 16GiB, 0.5G or a bare number of blocks) and report the "
          "prefix-cache hit rate of each; --svg_out then plots them [\"\": "
          "no sweep]");
ABSL_FLAG(std::string, window_model, "",
          "Instead of the workload: the capacity of a sliding-window model's "
          "layer groups against all-full float16 attention in the same pool "
          "(gemma-3-12b-style|mistral-7b-swa) [\"\": no]");
ABSL_FLAG(int64_t, window_context, 32768,
          "--window_model: tokens per sequence");
ABSL_FLAG(int64_t, window_pool_mb, 65536, "--window_model: pool in MiB");
ABSL_FLAG(int32_t, window_chunk, 2048,
          "--window_model: prefill chunk in tokens");
ABSL_FLAG(std::string, json_out, "",
          "Write the JSON report to this file (none if empty); a relative "
          "path is taken from the directory `bazel run` was started in");
ABSL_FLAG(std::string, svg_out, "",
          "Write the SVG plot to this file (none if empty); a relative path "
          "is taken from the directory `bazel run` was started in");

namespace pagedkv::kv_stress {
namespace {

constexpr char kUsage[] =
    "simulates a continuous-batching server on pagedkv's paged KV\n"
    "cache and, with the same requests and memory, a contiguous server that\n"
    "reserves max_len per sequence; checks invariants and prints a table.\n"
    "Not a benchmark.\n"
    "\n"
    "  bazel run -c opt //tools/kv_stress -- [--preset=chat|beam|long|tiny|\n"
    "      mooncake|shared_prefix]\n"
    "      [--seed=N] [--json_out=FILE] [--svg_out=FILE] [flags]\n"
    "\n"
    "A flag shown with default -1 (or \"\") takes the preset's value; its\n"
    "help lists each preset's value in [brackets]. Relative --json_out and\n"
    "--svg_out paths are taken from the directory `bazel run` was started\n"
    "in, and the tool prints where each file went.\n"
    "Exit codes: 0 ok, 1 an invariant failed, 2 bad flags or an unexpected\n"
    "error.";

std::optional<bool> ParseBool(const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  return std::nullopt;
}

// The flag's name as the user types it ("--steps").
template <typename F>
std::string FlagName(const absl::Flag<F>& flag) {
  return absl::StrCat("--", absl::GetFlagReflectionHandle(flag).Name());
}

// True if the user gave `flag` on the command line.
template <typename F>
bool FlagGiven(const absl::Flag<F>& flag) {
  return absl::flags_internal::WasPresentOnCommandLine(
      absl::GetFlagReflectionHandle(flag).Name());
}

// Sets *field from a numeric flag unless it is -1 (the preset's value);
// InvalidArgument naming the flag for any other negative value (or NaN),
// which would otherwise mean "the preset's value" silently.
template <typename T, typename F>
absl::Status Override(const absl::Flag<F>& flag, T* field) {
  const F v = absl::GetFlag(flag);
  if (v == -1) return absl::OkStatus();
  if (!(v >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        FlagName(flag), "=", v, " must be >= 0 (or -1: the preset's value)"));
  }
  *field = static_cast<T>(v);
  return absl::OkStatus();
}

// "2 MiB", "0.75 MiB", "23.5 GiB", "238 TiB".
std::string Mib(double bytes) {
  if (bytes >= double{1ull << 40}) {
    return fmt::format("{:.4g} TiB", bytes / double{1ull << 40});
  }
  if (bytes >= double{1 << 30}) {
    return fmt::format("{:.4g} GiB", bytes / double{1 << 30});
  }
  return fmt::format("{:.6g} MiB", bytes / (1 << 20));
}

// A books-only block costs its manager and the simulator about 20 bytes
// (measured: 8M blocks, 165 MB peak); 64 leaves room.
constexpr size_t kBooksOnlyBytesPerBlock = 64;
// More arrivals per step than any waiting queue holds are refused at once;
// generating them would only grow memory.
constexpr double kMaxArrivalsPerStep = 1e5;
// --pool_mb above this (1 PiB) is a typo, and past it the MiB-to-bytes
// conversion would overflow.
constexpr double kMaxPoolMb = double{1 << 30};

// Sets *field from a named-choice flag unless it is empty; InvalidArgument
// listing the choices for an unknown name.
template <typename T, typename Parse>
absl::Status ParseNamed(const absl::Flag<std::string>& flag, const char* name,
                        const char* choices, Parse parse, T* field) {
  const std::string v = absl::GetFlag(flag);
  if (v.empty()) return absl::OkStatus();
  const std::optional<T> parsed = parse(v);
  if (!parsed.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --", name, " ", v, " (", choices, ")"));
  }
  *field = *parsed;
  return absl::OkStatus();
}

// The flag that set the pool's size, for messages.
std::string PoolFlag(const SimConfig& c) {
  if (absl::GetFlag(FLAGS_pool_blocks) != -1) {
    return absl::StrCat("--pool_blocks=", c.pool_blocks);
  }
  if (absl::GetFlag(FLAGS_pool_mb) != -1) {
    return absl::StrCat("--pool_mb=", absl::GetFlag(FLAGS_pool_mb));
  }
  return absl::StrCat("preset ", c.preset, "'s pool");
}

// InvalidArgument if `c` would allocate more than this machine has, checked
// before anything is allocated: host storage's bytes (every replica's pool,
// the swap tier, the largest pool of a sweep) against physical memory, and
// books-only pools at kBooksOnlyBytesPerBlock.
absl::Status CheckMemory(const SimConfig& c) {
  const size_t phys = static_cast<size_t>(PhysicalMemoryBytes());
  if (phys == 0) return absl::OkStatus();
  int64_t blocks = c.pool_blocks;
  for (int32_t b : c.pool_sweep) blocks = std::max<int64_t>(blocks, b);
  // Replicas and the remote tier run in host mode (replicas.h).
  const bool host = c.storage == StorageMode::kHost || c.replicated();
  if (!host) {
    if (static_cast<size_t>(blocks) * kBooksOnlyBytesPerBlock > phys) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %d books-only blocks need about %s of bookkeeping (%d bytes "
          "a block), more than this machine's %s of physical memory",
          PoolFlag(c), blocks,
          Mib(static_cast<double>(blocks) * kBooksOnlyBytesPerBlock),
          kBooksOnlyBytesPerBlock, Mib(static_cast<double>(phys))));
    }
    return absl::OkStatus();
  }
  const double block = static_cast<double>(c.block_layout().block_bytes());
  const double bytes =
      (static_cast<double>(blocks) * c.replicas + c.swap_tier_blocks()) * block;
  if (bytes > static_cast<double>(phys)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: host storage needs %s (%d blocks of %s%s%s), more than this "
        "machine's %s of physical memory; use --storage=books_only or a "
        "smaller pool",
        PoolFlag(c), Mib(bytes), blocks, Mib(block),
        c.replicas > 1 ? absl::StrCat(" on each of ", c.replicas, " replicas")
                       : "",
        c.swap_tier_blocks() > 0
            ? absl::StrCat(", plus ", c.swap_tier_blocks(), " swap-tier blocks")
            : "",
        Mib(static_cast<double>(phys))));
  }
  return absl::OkStatus();
}

absl::StatusOr<SimConfig> ConfigFromFlags() {
  absl::StatusOr<SimConfig> preset = PresetConfig(absl::GetFlag(FLAGS_preset));
  if (!preset.ok()) return preset.status();
  SimConfig c = *preset;
  const size_t preset_pool_bytes = c.pool_bytes();
  c.workload.seed = absl::GetFlag(FLAGS_seed);
  PKV_RETURN_IF_ERROR(Override(FLAGS_steps, &c.steps));
  if (kSanitized && absl::GetFlag(FLAGS_steps) < 0) {
    // Smaller under sanitizers (a trace preset's 0 means "to its end").
    c.steps = c.steps == 0 ? 300 : std::min<int64_t>(c.steps, 300);
  }
  c.duration_s = absl::GetFlag(FLAGS_duration_s);
  if (!(c.duration_s >= 0) || !std::isfinite(c.duration_s)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--duration_s=", c.duration_s, " must be >= 0 (0: no time limit)"));
  }
  bool window_model = false;
  if (const std::string m = absl::GetFlag(FLAGS_model); !m.empty()) {
    if (absl::StatusOr<WindowModel> wm = FindWindowModel(m); wm.ok()) {
      window_model = true;
      c.model = std::string(wm->name);
      c.layout = wm->Layout(c.layout.block_tokens);
      c.layer_groups = wm->Groups();
      // Layer groups run books-only (SimConfig::Validate), unless the
      // flag asks for host mode (and gets its error).
      c.storage = StorageMode::kBooksOnly;
    } else {
      absl::StatusOr<ModelGeometry> model = FindModelGeometry(m);
      if (!model.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown --model=", m, " (known: ", ModelNames(), "|",
                         WindowModelNames(), ")"));
      }
      c.model = std::string(model->name);
      c.layout = model->Layout(c.layout.block_tokens);
    }
  }
  PKV_RETURN_IF_ERROR(Override(FLAGS_layers, &c.layout.num_layers));
  PKV_RETURN_IF_ERROR(Override(FLAGS_kv_heads, &c.layout.num_kv_heads));
  PKV_RETURN_IF_ERROR(Override(FLAGS_head_dim, &c.layout.head_dim));
  PKV_RETURN_IF_ERROR(Override(FLAGS_block_tokens, &c.layout.block_tokens));
  if (const std::string d = absl::GetFlag(FLAGS_dtype); !d.empty()) {
    std::optional<DType> dtype = ParseDType(d);
    if (!dtype.has_value()) {
      return absl::InvalidArgumentError("unknown --dtype " + d);
    }
    c.layout.dtype = *dtype;
  }
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_kv_dtype, "kv_dtype",
                                 "float16|bfloat16|float32|int8|fp8",
                                 ParseKVStorage, &c.layout.storage));
  if (absl::Status s = c.layout.Validate(); !s.ok()) return s;
  if (window_model) {  // --layers and the like may have broken them.
    PKV_RETURN_IF_ERROR(ValidateLayerGroups(c.layout, c.layer_groups));
  }
  // The memory budget stays the preset's unless a pool flag says otherwise.
  const size_t block_bytes = c.block_layout().block_bytes();
  size_t pool_bytes = preset_pool_bytes;
  std::string budget = absl::StrCat("preset ", c.preset, "'s pool of ",
                                    Mib(static_cast<double>(pool_bytes)));
  if (const double mb = absl::GetFlag(FLAGS_pool_mb); mb != -1) {
    if (!(mb > 0) || mb > kMaxPoolMb) {
      return absl::InvalidArgumentError(
          absl::StrCat("--pool_mb=", mb, " must be in (0, ", kMaxPoolMb,
                       "] (or -1: the preset's value)"));
    }
    pool_bytes = static_cast<size_t>(mb * (1 << 20));
    budget = absl::StrCat("--pool_mb=", mb);
  }
  const size_t budget_blocks = pool_bytes / block_bytes;
  if (absl::GetFlag(FLAGS_pool_blocks) == -1 &&
      budget_blocks > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(budget, " holds ", budget_blocks, " blocks of ",
                     Mib(static_cast<double>(block_bytes)), "; at most ",
                     INT32_MAX, " blocks"));
  }
  c.pool_blocks = static_cast<int32_t>(budget_blocks);
  if (c.pool_blocks == 0 && absl::GetFlag(FLAGS_pool_blocks) == -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        budget, " holds no ", Mib(static_cast<double>(block_bytes)),
        " block of ", c.model.empty() ? "this geometry" : c.model,
        "; raise --pool_mb or set --pool_blocks"));
  }
  PKV_RETURN_IF_ERROR(Override(FLAGS_pool_blocks, &c.pool_blocks));
  if (absl::GetFlag(FLAGS_pool_blocks) == 0) {
    return absl::InvalidArgumentError(
        "--pool_blocks=0 must be > 0 (or -1: --pool_mb's worth of blocks)");
  }
  PKV_RETURN_IF_ERROR(Override(FLAGS_max_len, &c.max_len));
  WorkloadOptions& w = c.workload;
  PKV_RETURN_IF_ERROR(Override(FLAGS_arrival_rate, &w.arrivals_per_step));
  if (absl::GetFlag(FLAGS_arrival_rate) == 0 ||
      absl::GetFlag(FLAGS_arrival_rate) > kMaxArrivalsPerStep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--arrival_rate=", absl::GetFlag(FLAGS_arrival_rate),
        " must be in (0, ", kMaxArrivalsPerStep,
        "] arrivals per step (more than any waiting queue holds)"));
  }
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_prompt_dist, "prompt_dist",
                                 "lognormal|uniform|fixed", ParseLengthDist,
                                 &w.prompt.dist));
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_output_dist, "output_dist",
                                 "lognormal|uniform|fixed", ParseLengthDist,
                                 &w.output.dist));
  PKV_RETURN_IF_ERROR(Override(FLAGS_prompt_median, &w.prompt.median));
  PKV_RETURN_IF_ERROR(Override(FLAGS_prompt_sigma, &w.prompt.sigma));
  PKV_RETURN_IF_ERROR(Override(FLAGS_prompt_max, &w.prompt.max_tokens));
  PKV_RETURN_IF_ERROR(Override(FLAGS_output_median, &w.output.median));
  PKV_RETURN_IF_ERROR(Override(FLAGS_output_sigma, &w.output.sigma));
  PKV_RETURN_IF_ERROR(Override(FLAGS_output_max, &w.output.max_tokens));
  PKV_RETURN_IF_ERROR(Override(FLAGS_beam_pct, &w.beam_pct));
  PKV_RETURN_IF_ERROR(Override(FLAGS_fork_pct, &w.fork_pct));
  PKV_RETURN_IF_ERROR(Override(FLAGS_crop_pct, &w.crop_pct));
  PKV_RETURN_IF_ERROR(Override(FLAGS_beam_width, &w.beam_width));
  PKV_RETURN_IF_ERROR(Override(FLAGS_fork_samples, &w.fork_samples));
  PKV_RETURN_IF_ERROR(Override(FLAGS_crop_window, &w.crop_window));
  if (w.beam_pct + w.fork_pct > 100 || w.crop_pct > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("--beam_pct=", w.beam_pct, " + --fork_pct=", w.fork_pct,
                     " must be <= 100 and --crop_pct=", w.crop_pct, " <= 100"));
  }
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_policy, "policy",
                                 "newest_first|least_progress", ParsePolicy,
                                 &c.policy));
  PKV_RETURN_IF_ERROR(Override(FLAGS_check_every, &c.check_every));
  PKV_RETURN_IF_ERROR(Override(FLAGS_max_running, &c.max_running));
  PKV_RETURN_IF_ERROR(Override(FLAGS_max_waiting, &c.max_waiting));
  PKV_RETURN_IF_ERROR(Override(FLAGS_watermark_pct, &c.watermark_pct));
  if (!(c.watermark_pct < 100)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--watermark_pct=", c.watermark_pct, " must be in [0, 100)"));
  }
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_storage, "storage", "host|books_only",
                                 ParseStorageMode, &c.storage));
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_admission, "admission",
                                 "watermark|reservation", ParseAdmissionMode,
                                 &c.admission));
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_preemption, "preemption",
                                 "recompute|swap", ParsePreemptionMode,
                                 &c.preemption));
  if (const int64_t mb = absl::GetFlag(FLAGS_host_pool_mb);
      mb < 0 || mb > kMaxPoolMb) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--host_pool_mb=", mb, " must be in [0, ", kMaxPoolMb, "]"));
  }
  if (absl::GetFlag(FLAGS_host_pool_mb) > 0) {
    // At most INT32_MAX blocks; CheckMemory refuses what does not fit.
    c.host_blocks = static_cast<int32_t>(std::min<size_t>(
        (static_cast<size_t>(absl::GetFlag(FLAGS_host_pool_mb)) << 20) /
            c.block_layout().block_bytes(),
        INT32_MAX));
    if (c.host_blocks == 0 && c.preemption == PreemptionMode::kSwap) {
      return absl::InvalidArgumentError(
          "--host_pool_mb holds no block of this geometry");
    }
  }
  if (const std::string t = absl::GetFlag(FLAGS_trace); !t.empty()) {
    c.trace_path = t == "none" ? std::string() : t;
    if (c.trace_path.empty() && c.steps == 0) {
      return absl::InvalidArgumentError(
          "--trace=none needs --steps (the preset runs until its trace ends)");
    }
  }
  // A relative trace path is meant from where `bazel run` started.
  c.trace_path = tools::UserPath(c.trace_path);
  PKV_RETURN_IF_ERROR(Override(FLAGS_trace_step_ms, &c.trace_step_ms));
  if (!(c.trace_step_ms > 0) || !std::isfinite(c.trace_step_ms)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--trace_step_ms=", c.trace_step_ms, " must be > 0"));
  }
  c.trace_max_requests = absl::GetFlag(FLAGS_trace_requests);
  if (c.trace_max_requests < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--trace_requests=", c.trace_max_requests, " must be >= 0 (0: all)"));
  }
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_prefix_caching, "prefix_caching",
                                 "true|false", ParseBool, &c.prefix_caching));
  PKV_RETURN_IF_ERROR(ParseNamed(FLAGS_compare_prefix_caching,
                                 "compare_prefix_caching", "true|false",
                                 ParseBool, &c.compare_without_prefix_caching));
  c.replicas = absl::GetFlag(FLAGS_replicas);
  if (c.replicas < 1 || c.replicas > kMaxReplicas) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--replicas=", c.replicas, " must be in [1, ", kMaxReplicas, "]"));
  }
  c.remote = absl::GetFlag(FLAGS_remote);
  if (!c.remote.empty() && c.remote != "memory" &&
      !absl::StartsWith(c.remote, "redis://") &&
      !absl::StartsWith(c.remote, "unix:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --remote=", c.remote,
                     " (memory|redis://HOST:PORT|unix:/PATH)"));
  }
  c.compare_without_remote = absl::GetFlag(FLAGS_compare_remote);
  if (c.compare_without_remote && c.remote.empty()) {
    return absl::InvalidArgumentError(
        "--compare_remote needs a remote tier to compare against (--remote)");
  }
  if (c.layout.quantized() && c.replicated()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_dtype=", std::string(KVStorageName(c.layout.storage)),
        " is not supported with --replicas or --remote (replicas=", c.replicas,
        ", remote=", c.remote, ")"));
  }
  if (const std::string sweep = absl::GetFlag(FLAGS_pool_sweep);
      !sweep.empty()) {
    PKV_ASSIGN_OR_RETURN(c.pool_sweep,
                         ParsePoolSweep(sweep, c.block_layout().block_bytes()));
    // The sweep reports hit rates only (report.cc prints it in the
    // prefix-cache section).
    if (!c.prefix_caching) {
      return absl::InvalidArgumentError(
          "--pool_sweep needs --prefix_caching=true (it reports the "
          "prefix-cache hit rate at each pool size)");
    }
  }
  PKV_RETURN_IF_ERROR(CheckMemory(c));
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

// Opens the file `flag` names (if any) into *out, before the run, so that
// a path that cannot be written fails at once (exit 2) instead of after the
// run. InvalidArgument naming the flag, the path and the OS reason.
absl::Status OpenOutput(const absl::Flag<std::string>& flag,
                        std::optional<OutputFile>* out) {
  // Under `bazel run` the tool runs in its runfiles tree: relative paths are
  // meant from where the user stands (tools/common/paths.h).
  const std::string path = tools::UserPath(absl::GetFlag(flag));
  if (path.empty()) return absl::OkStatus();
  absl::StatusOr<OutputFile> f = OutputFile::Open(path);
  if (!f.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(FlagName(flag), ": ", f.status().message()));
  }
  out->emplace(*std::move(f));
  return absl::OkStatus();
}

// Writes `contents` to *file (if open) and says where it went (`what`: "the
// JSON report"); false after printing why it failed.
bool WriteOutput(std::optional<OutputFile>& file, const std::string& contents,
                 const char* what) {
  if (!file.has_value()) return true;
  if (absl::Status s = file->Write(contents); !s.ok()) {
    std::fprintf(stderr, "kv_stress: %s\n", std::string(s.message()).c_str());
    return false;
  }
  std::fprintf(stderr, "kv_stress: wrote %s to %s\n", what,
               file->path().c_str());
  return true;
}

// Prints `status`'s message as kv_stress's error and returns 2.
int BadFlags(const absl::Status& status) {
  std::fprintf(stderr, "kv_stress: %s\n",
               std::string(status.message()).c_str());
  return 2;
}

// The multi-replica mode (replicas.h): its own table and JSON, no SVG.
// 1 after printing the first invariant failures of a run (SimResult or
// ReplicaRun), else 0.
template <typename Run>
int ExitCodeOf(const Run& run) {
  if (run.invariant_failures == 0) return 0;
  std::fprintf(stderr,
               "kv_stress: %lld invariant failure(s), first at step %lld\n",
               static_cast<long long>(run.invariant_failures),
               static_cast<long long>(run.first_failure_step));
  for (const std::string& m : run.failure_messages) {
    std::fprintf(stderr, "  %s\n", m.c_str());
  }
  return 1;
}

int MainReplicas(const SimConfig& config) {
  if (!absl::GetFlag(FLAGS_svg_out).empty()) {
    std::fprintf(stderr,
                 "kv_stress: --svg_out is not drawn in multi-replica mode\n");
    return 2;
  }
  std::optional<OutputFile> json;
  if (absl::Status s = OpenOutput(FLAGS_json_out, &json); !s.ok()) {
    return BadFlags(s);
  }
  const bool tty = isatty(fileno(stderr)) != 0;
  double last_print = -1;
  auto progress = [&](const Progress& p) {
    if (p.elapsed_s - last_print < 0.2 && p.step != p.steps) return;
    last_print = p.elapsed_s;
    const std::string of =
        p.steps > 0 ? fmt::format("/{}", p.steps) : std::string();
    std::fputs(
        fmt::format("\r[{:6.1f}s] step {}{}  running {}  waiting {}  "
                    "util {:5.1f}%  (all {} replicas)   ",
                    p.elapsed_s, p.step, of, p.paged_running, p.paged_waiting,
                    100 * p.paged_utilization, config.replicas)
            .c_str(),
        stderr);
  };
  absl::StatusOr<ReplicaRunResult> result =
      tty ? RunReplicas(config, progress) : RunReplicas(config);
  if (tty) std::fputs("\n", stderr);
  if (!result.ok()) {
    std::fprintf(stderr, "kv_stress: %s\n", result.status().ToString().c_str());
    return 2;
  }
  std::fputs(FormatReplicaTable(*result).c_str(), stdout);
  std::fflush(stdout);
  if (!WriteOutput(json, ReplicaRunToJson(*result).dump(2) + "\n",
                   "the JSON report")) {
    return 2;
  }
  return ExitCodeOf(*result);
}

// InvalidArgument naming the first kv_stress flag given on the command line
// that --window_model does not use (the workload's flags), or a
// --window_* flag given without --window_model.
absl::Status CheckWindowModelFlags(bool window_model) {
  constexpr std::string_view kWindowFlags[] = {"window_model", "window_context",
                                               "window_pool_mb", "window_chunk",
                                               "json_out"};
  std::vector<std::string> given;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::EndsWith(flag->Filename(), "kv_stress_main.cc")) continue;
    if (absl::flags_internal::WasPresentOnCommandLine(name)) {
      given.emplace_back(name);
    }
  }
  std::sort(given.begin(), given.end());  // GetAllFlags is unordered.
  for (const std::string& name : given) {
    const bool window_flag =
        std::find(std::begin(kWindowFlags), std::end(kWindowFlags), name) !=
        std::end(kWindowFlags);
    if (window_model && !window_flag) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--window_model does not use --", name,
          " (it takes --window_context, --window_pool_mb, --window_chunk "
          "and --json_out)"));
    }
    if (!window_model && window_flag && name != "json_out") {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs --window_model"));
    }
  }
  return absl::OkStatus();
}

// --window_model: the capacity comparison (window_capacity.h): the line on
// stdout, and the JSON object on stdout too unless --json_out takes it.
int MainWindowCapacity() {
  if (absl::Status s = CheckWindowModelFlags(true); !s.ok()) {
    return BadFlags(s);
  }
  absl::StatusOr<WindowModel> model =
      FindWindowModel(absl::GetFlag(FLAGS_window_model));
  if (!model.ok()) return BadFlags(model.status());
  const int64_t pool_mb = absl::GetFlag(FLAGS_window_pool_mb);
  if (pool_mb <= 0 || pool_mb > kMaxPoolMb) {
    return BadFlags(absl::InvalidArgumentError(absl::StrCat(
        "--window_pool_mb=", pool_mb, " must be in [1, ", kMaxPoolMb, "]")));
  }
  const WindowCapacityConfig config{
      .pool_bytes = pool_mb << 20,
      .context_tokens = absl::GetFlag(FLAGS_window_context),
      .chunk_tokens = absl::GetFlag(FLAGS_window_chunk)};
  std::optional<OutputFile> json;
  if (absl::Status s = OpenOutput(FLAGS_json_out, &json); !s.ok()) {
    return BadFlags(s);
  }
  absl::StatusOr<WindowCapacity> c = MeasureWindowCapacity(*model, config);
  if (!c.ok()) return BadFlags(c.status());
  const std::string json_text = WindowCapacityJson(*model, config, *c);
  std::printf("%s\n", FormatWindowCapacity(*model, config, *c).c_str());
  if (!json.has_value()) std::printf("%s\n", json_text.c_str());
  std::fflush(stdout);
  return WriteOutput(json, json_text + "\n", "the JSON report") ? 0 : 2;
}

// Loads the trace of `config` before the run, so that a bad trace fails
// at once, and notes on stderr the requests longer than --max_len, which
// the contiguous model refuses as too large (contiguous_model.h). False
// after printing why the trace cannot be read.
bool CheckTrace(const SimConfig& config) {
  absl::StatusOr<MooncakeTrace> trace =
      MooncakeTrace::Load({.path = config.trace_path,
                           .step_ms = config.trace_step_ms,
                           .max_requests = config.trace_max_requests});
  if (!trace.ok()) {
    BadFlags(trace.status());
    return false;
  }
  if (config.replicated()) return true;  // No contiguous model.
  int64_t over = 0;
  int64_t first = -1;
  for (const Request& r : trace->requests()) {
    if (int64_t{r.prompt_tokens} + r.output_tokens <= config.max_len) continue;
    if (first < 0) first = r.id;
    ++over;
  }
  if (over > 0) {
    const Request& r = trace->requests()[first];
    std::fprintf(
        stderr,
        "kv_stress: note: %lld of the trace's %lld requests need more than "
        "--max_len=%d tokens (the first, line %lld: input_length %d + "
        "output_length %d); the contiguous model refuses them as too large "
        "(\"admissions refused\", size)\n",
        static_cast<long long>(over),
        static_cast<long long>(trace->num_requests()), config.max_len,
        static_cast<long long>(trace->line_of(first)), r.prompt_tokens,
        r.output_tokens);
  }
  return true;
}

int Main() {
  if (!absl::GetFlag(FLAGS_window_model).empty()) return MainWindowCapacity();
  if (absl::Status s = CheckWindowModelFlags(false); !s.ok()) {
    return BadFlags(s);
  }
  absl::StatusOr<SimConfig> config = ConfigFromFlags();
  // Bad flags: the message names them.
  if (!config.ok()) return BadFlags(config.status());
  if (!config->trace_path.empty() && !CheckTrace(*config)) return 2;
  if (config->replicated()) return MainReplicas(*config);
  std::optional<OutputFile> json;
  std::optional<OutputFile> svg;
  if (absl::Status s = OpenOutput(FLAGS_json_out, &json); !s.ok()) {
    return BadFlags(s);
  }
  if (absl::Status s = OpenOutput(FLAGS_svg_out, &svg); !s.ok()) {
    return BadFlags(s);
  }
  const bool tty = isatty(fileno(stderr)) != 0;
  double last_print = -1;
  auto progress = [&](const Progress& p) {
    if (p.elapsed_s - last_print < 0.2 && p.step != p.steps) return;
    last_print = p.elapsed_s;
    const std::string of =
        p.steps > 0 ? fmt::format("/{}", p.steps) : std::string();
    std::fputs(fmt::format(
                   "\r[{:6.1f}s] step {}{}  running {} (contiguous {})  "
                   "waiting {}  util {:5.1f}%  preemptions {} ({} swapped)   ",
                   p.elapsed_s, p.step, of, p.paged_running,
                   p.contiguous_running, p.paged_waiting,
                   100 * p.paged_utilization, p.preemptions, p.swap_preemptions)
                   .c_str(),
               stderr);
  };
  absl::StatusOr<SimResult> result =
      tty ? RunExperiment(*config, progress) : RunExperiment(*config);
  if (tty) std::fputs("\n", stderr);
  if (!result.ok()) {
    std::fprintf(stderr, "kv_stress: %s\n", result.status().ToString().c_str());
    return 2;
  }
  std::fputs(FormatTable(*result).c_str(), stdout);
  std::fflush(stdout);
  if (!WriteOutput(json, ToJson(*result).dump(2) + "\n", "the JSON report")) {
    return 2;
  }
  if (svg.has_value()) {
    const std::string text =
        result->sweep.empty() ? RenderSvg(*result) : RenderSweepSvg(*result);
    if (!WriteOutput(svg, text, "the SVG plot")) return 2;
  }
  return ExitCodeOf(*result);
}

}  // namespace
}  // namespace pagedkv::kv_stress

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(pagedkv::kv_stress::kUsage);
  // Exit 0 after --help, 2 on a flag that does not parse (flags.h).
  pagedkv::tools::ParseFlagsOrExit(argc, argv);
  return pagedkv::kv_stress::Main();
}
