// bench/summary_main.cc
//
// //bench:summary runs a fixed set of cache benchmark cases (the workloads of
// bench/cache/kv_cache_fixtures.h) and writes one JSON report plus a Markdown
// table: per (op, dtype, context) the median time of the paged cache, the
// HuggingFace-style contiguous baseline, a memcpy of the bytes the operation
// must move between reused (so, up to the L3 size, cached) buffers and the
// same memcpy into cold memory (for the appends only: decode_append,
// static_append, prefill; a fresh part of a 1 GiB ring each call, from a
// warm source, the bound of an append, which writes blocks that are not in
// cache), with speedup_vs_baseline = baseline / paged, fraction_of_memcpy =
// memcpy / paged and fraction_of_cold_memcpy = cold memcpy / paged. It ends
// with the DESIGN.md "Performance targets" checked against those numbers.
// Then (unless --serving=false) it runs the serving benchmarks
// (bench/serving_suite.h) and adds their medians, ratios and targets.
//
//   bazel run -c opt //bench:summary -- --out=/tmp/summary.json
//   bazel run -c opt //bench:summary -- --contexts=512 --ops=crop,gather
//
// Timing: each measurement makes its workload (untimed), runs one warm-up
// call, then times `reps` single calls with std::chrono::steady_clock, with
// an untimed Restore() after each, and reports the median. Runs that move at
// least 1 GiB use --heavy_reps and no warm-up. Workloads are made and freed
// one at a time, so peak memory is that of the largest one (about 10 GiB).
// The whole default run takes a few minutes on 2 cores.
//
// Thread safety: a single-threaded tool.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/cache/kv_cache_fixtures.h"
#include "bench/cache/workload.h"
#include "bench/serving_suite.h"
#include "fmt/core.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"

ABSL_FLAG(std::string, out, "", "Path of the JSON report; empty: none.");
ABSL_FLAG(int32_t, reps, 7,
          "Timed repetitions of paged and (cold) memcpy runs.");
ABSL_FLAG(int32_t, baseline_reps, 5, "Timed repetitions of baseline runs.");
ABSL_FLAG(int32_t, heavy_reps, 3,
          "Timed repetitions of any run that moves >= 1 GiB (no warm-up).");
ABSL_FLAG(std::string, contexts, "512,2048,8192",
          "Comma-separated contexts (tokens) of the context-sized ops.");
ABSL_FLAG(std::string, ops, "",
          "Comma-separated op names to run (e.g. crop,gather); empty: all.");
ABSL_FLAG(std::string, dtypes, "float16,float32", "Comma-separated dtypes.");
ABSL_FLAG(bool, serving, true,
          "Also run the serving benchmarks (bench/serving/) and check the "
          "serving targets.");
ABSL_FLAG(int32_t, serving_reps, 5,
          "Repetitions of each serving benchmark (the median is reported).");

namespace pagedkv::bench {
namespace {

constexpr size_t kHeavyBytes = size_t{1} << 30;

struct Case {
  Op op;
  DType dtype;
  int64_t context;
  std::optional<int64_t> keep;  // Crop only.
};

struct Result {
  Case c;
  std::optional<double> paged_ns;
  std::optional<double> baseline_ns;
  std::optional<double> memcpy_ns;
  std::optional<double> cold_memcpy_ns;
  std::string error;
};

// The ops that write new tokens into the cache.
bool IsAppend(Op op) {
  return op == Op::kDecodeAppend || op == Op::kStaticAppend ||
         op == Op::kPrefill;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Returns the median ns per item of one case measured one way.
absl::StatusOr<double> Measure(const Case& c, Impl impl) {
  WorkloadOptions options;
  options.op = c.op;
  options.impl = impl;
  options.dtype = c.dtype;
  options.context = c.context;
  if (c.keep.has_value()) options.keep = *c.keep;
  absl::StatusOr<std::unique_ptr<Workload>> made = MakeWorkload(options);
  if (!made.ok()) return made.status();
  Workload& w = **made;
  const bool heavy = w.bytes_per_run() >= kHeavyBytes;
  const int32_t reps =
      heavy ? absl::GetFlag(FLAGS_heavy_reps)
            : (impl == Impl::kBaseline ? absl::GetFlag(FLAGS_baseline_reps)
                                       : absl::GetFlag(FLAGS_reps));
  if (!heavy) {
    w.Run();
    w.Restore();
  }
  std::vector<double> ns;
  for (int32_t i = 0; i < std::max(reps, 1); ++i) {
    const auto start = std::chrono::steady_clock::now();
    w.Run();
    const auto stop = std::chrono::steady_clock::now();
    ns.push_back(
        std::chrono::duration<double, std::nano>(stop - start).count());
    w.Restore();
  }
  return Median(std::move(ns)) / static_cast<double>(w.items_per_run());
}

std::vector<std::string> SplitFlag(const std::string& value) {
  return absl::StrSplit(value, ',', absl::SkipEmpty());
}

std::vector<Case> Cases() {
  std::vector<int64_t> contexts;
  for (const std::string& s : SplitFlag(absl::GetFlag(FLAGS_contexts))) {
    int64_t n = 0;
    if (absl::SimpleAtoi(s, &n)) contexts.push_back(n);
  }
  std::vector<DType> dtypes;
  for (const std::string& s : SplitFlag(absl::GetFlag(FLAGS_dtypes))) {
    if (std::optional<DType> d = ParseDType(s); d.has_value()) {
      dtypes.push_back(*d);
    }
  }
  const std::vector<std::string> only = SplitFlag(absl::GetFlag(FLAGS_ops));
  const auto wanted = [&](Op op) {
    return only.empty() ||
           std::find(only.begin(), only.end(), OpName(op)) != only.end();
  };
  std::vector<Case> cases;
  for (Op op : {Op::kDecodeAppend, Op::kPrefill, Op::kReorderCache,
                Op::kBatchSelectIndices, Op::kBatchRepeatInterleave, Op::kCrop,
                Op::kGather, Op::kStaticAppend, Op::kAllocFree, Op::kFork256}) {
    if (!wanted(op)) continue;
    for (DType dtype : dtypes) {
      if (op == Op::kCrop) {
        // Keep 1,024 of 4,096; then free the same 3,072 tokens keeping 256
        // or 5,120, which must cost the same.
        cases.push_back({op, dtype, kCropContext, kCropKeep});
        cases.push_back({op, dtype, 256 + 3072, 256});
        cases.push_back({op, dtype, 5120 + 3072, 5120});
      } else if (op == Op::kAllocFree) {
        cases.push_back({op, dtype, kBlockTokens, std::nullopt});
      } else if (op == Op::kFork256) {
        cases.push_back(
            {op, dtype, int64_t{kForkBlocks} * kBlockTokens, std::nullopt});
      } else {
        for (int64_t n : contexts)
          cases.push_back({op, dtype, n, std::nullopt});
      }
    }
  }
  return cases;
}

std::string ReadCpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// Returns the commit checked out in the workspace `bazel run` was started
// from (the cache code measured may also have uncommitted changes).
std::string GitHead() {
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (workspace == nullptr) return "unknown";
  const std::string git = std::string(workspace) + "/.git/";
  std::ifstream head(git + "HEAD");
  std::string line;
  if (!std::getline(head, line)) return "unknown";
  if (line.rfind("ref: ", 0) != 0) return line;
  const std::string name = line.substr(5);
  std::ifstream ref(git + name);
  std::string commit;
  if (std::getline(ref, commit)) return commit;
  std::ifstream packed(git + "packed-refs");  // "<commit> <ref>" lines.
  while (std::getline(packed, line)) {
    if (line.size() > name.size() &&
        line.compare(line.size() - name.size(), name.size(), name) == 0) {
      return line.substr(0, line.find(' '));
    }
  }
  return "unknown";
}

// The 1-minute load average (/proc/loadavg), or -1: how busy the shared
// machine was when the run started.
double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  if (!(in >> load)) return -1;
  return load;
}

std::string Compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string FormatNs(std::optional<double> ns) {
  if (!ns.has_value()) return "-";
  if (*ns < 1e3) return fmt::format("{:.1f} ns", *ns);
  if (*ns < 1e6) return fmt::format("{:.2f} us", *ns / 1e3);
  if (*ns < 1e9) return fmt::format("{:.2f} ms", *ns / 1e6);
  return fmt::format("{:.2f} s", *ns / 1e9);
}

std::optional<double> Ratio(std::optional<double> num,
                            std::optional<double> den) {
  if (!num.has_value() || !den.has_value() || *den <= 0) return std::nullopt;
  return *num / *den;
}

std::string FormatRatio(std::optional<double> r) {
  if (!r.has_value()) return "-";
  if (*r >= 100) return fmt::format("{:.0f}x", *r);
  return fmt::format("{:.2f}x", *r);
}

nlohmann::json OrNull(std::optional<double> v) {
  return v.has_value() ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string CaseLabel(const Case& c) {
  std::string label =
      fmt::format("{} {} {}", OpName(c.op), DTypeName(c.dtype), c.context);
  if (c.keep.has_value()) label += fmt::format(" keep {}", *c.keep);
  return label;
}

struct Target {
  std::string name;
  std::string case_label;
  double value;
  double threshold;
  bool met;
};

// The DESIGN.md "Performance targets" that these cases can check.
std::vector<Target> CheckTargets(const std::vector<Result>& results) {
  std::vector<Target> targets;
  std::vector<double> crop_ns[2];
  for (const Result& r : results) {
    const Case& c = r.c;
    const std::string label = CaseLabel(c);
    const std::optional<double> speedup = Ratio(r.baseline_ns, r.paged_ns);
    const std::optional<double> fraction = Ratio(r.memcpy_ns, r.paged_ns);
    const std::optional<double> cold_fraction =
        Ratio(r.cold_memcpy_ns, r.paged_ns);
    switch (c.op) {
      case Op::kReorderCache:
      case Op::kBatchSelectIndices:
      case Op::kBatchRepeatInterleave:
        if (c.context == 8192 && speedup.has_value()) {
          targets.push_back({"remap >= 1000x baseline at 8k", label, *speedup,
                             1000, *speedup >= 1000});
        }
        break;
      case Op::kDecodeAppend:
        // The bound of a write into blocks not in cache (the warm memcpy,
        // fraction_of_memcpy, is not one).
        if (cold_fraction.has_value()) {
          targets.push_back({"decode append >= 0.8 of cold memcpy", label,
                             *cold_fraction, 0.8, *cold_fraction >= 0.8});
        }
        break;
      case Op::kStaticAppend:
        if (speedup.has_value()) {
          targets.push_back({"static append >= 1.0x baseline", label, *speedup,
                             1.0, *speedup >= 1.0});
        }
        break;
      case Op::kPrefill:
        if (speedup.has_value()) {
          targets.push_back({"prefill >= 1.0x baseline", label, *speedup, 1.0,
                             *speedup >= 1.0});
        }
        break;
      case Op::kGather:
        if (fraction.has_value()) {
          targets.push_back({"gather >= 0.7 of memcpy", label, *fraction, 0.7,
                             *fraction >= 0.7});
        }
        break;
      case Op::kCrop:
        if (r.paged_ns.has_value()) {
          crop_ns[c.dtype == DType::kFloat32].push_back(*r.paged_ns);
        }
        break;
      case Op::kAllocFree:
        if (r.paged_ns.has_value()) {
          targets.push_back({"alloc/free <= 10 ns per block", label,
                             *r.paged_ns, 10, *r.paged_ns <= 10});
        }
        break;
      case Op::kFork256:
        if (r.paged_ns.has_value()) {
          targets.push_back({"fork of 256 blocks <= 1 us (ns)", label,
                             *r.paged_ns, 1000, *r.paged_ns <= 1000});
        }
        break;
      default:
        break;
    }
  }
  for (int i = 0; i < 2; ++i) {
    const std::vector<double>& v = crop_ns[i];
    if (v.size() < 2) continue;
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    const double spread = *hi / *lo;
    // Same blocks freed, 256..5,120 tokens kept: "independent" allows noise.
    targets.push_back(
        {"crop independent of tokens kept (max/min time)",
         fmt::format("crop {} keep 256/1024/5120",
                     DTypeName(i == 1 ? DType::kFloat32 : DType::kFloat16)),
         spread, 2.0, spread <= 2.0});
  }
  return targets;
}

int Main() {
  const double load_at_start = LoadAverage();
  const auto wall_start = std::chrono::steady_clock::now();
  const std::vector<Case> cases = Cases();
  std::vector<Result> results;
  for (const Case& c : cases) {
    Result r{c, std::nullopt, std::nullopt, std::nullopt, std::nullopt, ""};
    for (Impl impl :
         {Impl::kPaged, Impl::kBaseline, Impl::kMemcpy, Impl::kColdMemcpy}) {
      if (impl == Impl::kMemcpy && c.op == Op::kAllocFree) continue;
      // The cold memcpy bounds writes of new tokens; for the other ops its
      // warm 4 MiB source would not be the bytes they read.
      if (impl == Impl::kColdMemcpy && !IsAppend(c.op)) continue;
      absl::StatusOr<double> ns = Measure(c, impl);
      if (!ns.ok()) {
        r.error +=
            fmt::format("{}: {}; ", ImplName(impl), ns.status().ToString());
        continue;
      }
      (impl == Impl::kPaged      ? r.paged_ns
       : impl == Impl::kBaseline ? r.baseline_ns
       : impl == Impl::kMemcpy   ? r.memcpy_ns
                                 : r.cold_memcpy_ns) = *ns;
    }
    fmt::print(stderr,
               "{:<40} paged {:>10}  baseline {:>10}  memcpy {:>10}  cold "
               "{:>10}{}\n",
               CaseLabel(c), FormatNs(r.paged_ns), FormatNs(r.baseline_ns),
               FormatNs(r.memcpy_ns), FormatNs(r.cold_memcpy_ns),
               r.error.empty() ? "" : "  " + r.error);
    results.push_back(std::move(r));
  }
  std::vector<Target> targets = CheckTargets(results);
  std::optional<ServingSuite> serving;
  std::string serving_error;
  if (absl::GetFlag(FLAGS_serving)) {
    absl::StatusOr<ServingSuite> s =
        RunServingSuite({.repetitions = absl::GetFlag(FLAGS_serving_reps)});
    if (s.ok()) {
      serving = std::move(*s);
      for (const ServingTarget& t : serving->targets) {
        targets.push_back({t.name, t.case_label, t.value, t.threshold, t.met});
      }
    } else {
      serving_error = s.status().ToString();
      fmt::print(stderr, "serving suite: {}\n", serving_error);
    }
  }
  const double wall_seconds = std::chrono::duration<double>(
                                  std::chrono::steady_clock::now() - wall_start)
                                  .count();

  // Markdown.
  fmt::print(
      "| op | dtype | context | paged | baseline | memcpy | cold memcpy | "
      "speedup vs baseline | fraction of memcpy | fraction of cold memcpy "
      "|\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::string context = fmt::format("{}", r.c.context);
    if (r.c.keep.has_value()) context += fmt::format(" (keep {})", *r.c.keep);
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
               OpName(r.c.op), DTypeName(r.c.dtype), context,
               FormatNs(r.paged_ns), FormatNs(r.baseline_ns),
               FormatNs(r.memcpy_ns), FormatNs(r.cold_memcpy_ns),
               FormatRatio(Ratio(r.baseline_ns, r.paged_ns)),
               FormatRatio(Ratio(r.memcpy_ns, r.paged_ns)),
               FormatRatio(Ratio(r.cold_memcpy_ns, r.paged_ns)));
  }
  if (serving.has_value()) {
    fmt::print(
        "\n| serving case | what | median | baseline | baseline / case |\n"
        "|---|---|---:|---|---:|\n");
    for (const ServingRow& r : serving->rows) {
      fmt::print("| {} | {} | {} | {} | {} |\n", r.name, r.what,
                 FormatNs(r.median_ns), r.baseline.empty() ? "-" : r.baseline,
                 FormatRatio(r.ratio));
    }
  }
  fmt::print(
      "\n| target | case | value | threshold | met |\n"
      "|---|---|---:|---:|---|\n");
  for (const Target& t : targets) {
    fmt::print("| {} | {} | {:.4g} | {:.4g} | {} |\n", t.name, t.case_label,
               t.value, t.threshold, t.met ? "yes" : "**no**");
  }
  fmt::print("\nwall time: {:.1f} s; 1-minute load average at start: {:.2f}\n",
             wall_seconds, load_at_start);

  // JSON.
  nlohmann::json doc;
  doc["machine"] = {
      {"nproc", static_cast<int64_t>(sysconf(_SC_NPROCESSORS_ONLN))},
      {"cpu_model", ReadCpuModel()},
      {"compiler", Compiler()},
      {"git_head", GitHead()},
      {"load_average_at_start", load_at_start},
#ifdef NDEBUG
      {"ndebug", true},
#else
      {"ndebug", false},
#endif
  };
  doc["config"] = {
      {"num_layers", kNumLayers},
      {"num_kv_heads", kNumKvHeads},
      {"head_dim", kHeadDim},
      {"block_tokens", kBlockTokens},
      {"num_beams", kNumBeams},
      {"reps", absl::GetFlag(FLAGS_reps)},
      {"baseline_reps", absl::GetFlag(FLAGS_baseline_reps)},
      {"heavy_reps", absl::GetFlag(FLAGS_heavy_reps)},
      {"statistic", "median of single timed calls (steady_clock)"},
      {"cold_memcpy",
       "memcpy into the next bytes of a pre-touched 1 GiB ring each call, "
       "from a warm source of min(bytes, 4 MiB)"},
  };
  nlohmann::json rows = nlohmann::json::array();
  for (const Result& r : results) {
    nlohmann::json row = {
        {"op", std::string(OpName(r.c.op))},
        {"dtype", std::string(DTypeName(r.c.dtype))},
        {"context", r.c.context},
        {"paged_ns", OrNull(r.paged_ns)},
        {"baseline_ns", OrNull(r.baseline_ns)},
        {"memcpy_ns", OrNull(r.memcpy_ns)},
        {"cold_memcpy_ns", OrNull(r.cold_memcpy_ns)},
        {"speedup_vs_baseline", OrNull(Ratio(r.baseline_ns, r.paged_ns))},
        {"fraction_of_memcpy", OrNull(Ratio(r.memcpy_ns, r.paged_ns))},
        {"fraction_of_cold_memcpy",
         OrNull(Ratio(r.cold_memcpy_ns, r.paged_ns))},
    };
    if (r.c.keep.has_value()) row["tokens_kept"] = *r.c.keep;
    if (!r.error.empty()) row["error"] = r.error;
    rows.push_back(std::move(row));
  }
  doc["results"] = std::move(rows);
  nlohmann::json checks = nlohmann::json::array();
  for (const Target& t : targets) {
    checks.push_back({{"target", t.name},
                      {"case", t.case_label},
                      {"value", t.value},
                      {"threshold", t.threshold},
                      {"met", t.met}});
  }
  doc["targets"] = std::move(checks);
  if (serving.has_value()) {
    nlohmann::json srows = nlohmann::json::array();
    for (const ServingRow& r : serving->rows) {
      srows.push_back({{"benchmark", r.name},
                       {"what", r.what},
                       {"median_ns", r.median_ns},
                       {"baseline", r.baseline},
                       {"baseline_over_case", OrNull(r.ratio)}});
    }
    doc["serving"] = std::move(srows);
  } else if (!serving_error.empty()) {
    doc["serving_error"] = serving_error;
  }
  doc["wall_seconds"] = wall_seconds;

  std::string path = absl::GetFlag(FLAGS_out);
  // `bazel run` starts in the runfiles tree: resolve relative paths against
  // the directory bazel was invoked from.
  if (const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
      !path.empty() && path[0] != '/' && cwd != nullptr) {
    path = std::string(cwd) + "/" + path;
  }
  if (!path.empty()) {
    std::ofstream out(path);
    out << doc.dump(2) << "\n";
    if (!out) {
      fmt::print(stderr, "cannot write {}\n", path);
      return 1;
    }
    fmt::print(stderr, "wrote {}\n", path);
  }
  return 0;
}

}  // namespace
}  // namespace pagedkv::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pagedkv::bench::Main();
}
