// bench/serving_suite.cc
#include "bench/serving_suite.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fmt/core.h"
#include "nlohmann/json.hpp"

namespace pagedkv::bench {
namespace {

struct Binary {
  const char* rel;
  // Optional: a failure (no Redis on the machine: the remote tier's binary
  // then prints no report) leaves its rows out and its targets unmet.
  bool optional;
};
constexpr Binary kBinaries[] = {
    {"bench/serving/kv_cache_manager_benchmark", false},
    {"bench/serving/block_table_export_benchmark", false},
    {"bench/serving/csr_decode_attention_benchmark", false},
    {"bench/remote/remote_tier_benchmark", true},
};

bool Exists(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

// Finds a runfile of this workspace: under $RUNFILES_DIR, next to the
// executable, or relative to the current directory (`bazel run` starts in
// the runfiles tree).
std::optional<std::string> Runfile(const std::string& rel) {
  if (const char* dir = std::getenv("RUNFILES_DIR"); dir != nullptr) {
    const std::string p = absl::StrCat(dir, "/pagedkv/", rel);
    if (Exists(p)) return p;
  }
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = '\0';
    const std::string p = absl::StrCat(exe, ".runfiles/pagedkv/", rel);
    if (Exists(p)) return p;
  }
  if (Exists(rel)) return rel;
  return std::nullopt;
}

// Runs one binary and returns run name -> median ns per iteration; adds the
// medians of its ratio counters (ratio_*, speedup_*) to *counters as
// "<run name> <counter>".
absl::StatusOr<std::map<std::string, double>> RunBinary(
    const std::string& path, const ServingSuiteOptions& o,
    std::map<std::string, double>* counters) {
  const std::string cmd = fmt::format(
      "'{}' --benchmark_format=json --benchmark_repetitions={} "
      "--benchmark_report_aggregates_only=true --benchmark_min_time={} "
      "2>/dev/null",
      path, o.repetitions, o.min_time_s);
  std::FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    return absl::InternalError(absl::StrCat("cannot run ", path));
  }
  std::string text;
  char buf[65536];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), pipe)) > 0) {
    text.append(buf, got);
  }
  const int status = pclose(pipe);
  if (status != 0) {
    return absl::InternalError(
        absl::StrCat(path, " exited with status ", status));
  }
  // Google Benchmark prints NaN for the coefficient of variation of a
  // counter that is always 0; JSON has no NaN.
  for (const char* bad : {": NaN", ": -nan", ": nan", ": -inf", ": inf"}) {
    for (size_t at = text.find(bad); at != std::string::npos;
         at = text.find(bad, at)) {
      text.replace(at, std::string(bad).size(), ": null");
    }
  }
  const nlohmann::json doc =
      nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.contains("benchmarks")) {
    return absl::InternalError(absl::StrCat(path, " printed no JSON report"));
  }
  std::map<std::string, double> medians;
  for (const nlohmann::json& b : doc["benchmarks"]) {
    if (b.value("aggregate_name", "") != "median") continue;
    const std::string name = b.value("run_name", "");
    const bool manual = name.find("/manual_time") != std::string::npos;
    double t = b.value(manual ? "real_time" : "cpu_time", 0.0);
    const std::string unit = b.value("time_unit", "ns");
    if (unit == "us") t *= 1e3;
    if (unit == "ms") t *= 1e6;
    if (unit == "s") t *= 1e9;
    medians[name] = t;
    for (const auto& [key, value] : b.items()) {
      if (value.is_number() &&
          (key.rfind("ratio_", 0) == 0 || key.rfind("speedup_", 0) == 0)) {
        (*counters)[absl::StrCat(name, " ", key)] = value.get<double>();
      }
    }
  }
  return medians;
}

struct Pair {
  const char* name;
  const char* what;
  const char* baseline;  // "" for none.
};

// The rows, in the order they are printed, with their baselines.
constexpr Pair kPairs[] = {
    {"BM_DecodeStep/seqs:256", "decode step, 256 seqs x 1,024 tokens",
     "BM_DecodeStepNaive/seqs:256"},
    {"BM_DecodeStepPerSequence/seqs:256",
     "decode step, one AppendSlots per seq", "BM_DecodeStepNaive/seqs:256"},
    {"BM_DecodeStepNaive/seqs:256", "naive: hash map of vectors + free list",
     ""},
    {"BM_AdmitPrefill/manual_time", "AddSequence, 1,024-token prompt",
     "BM_AdmitPrefillNaive/manual_time"},
    {"BM_AdmitPrefillNaive/manual_time", "naive admission", ""},
    {"BM_Free/manual_time", "Free, 1,024-token sequence",
     "BM_FreeNaive/manual_time"},
    {"BM_FreeNaive/manual_time", "naive free", ""},
    {"BM_SwapOutIn", "swap out + in, 64 blocks of 2 MiB", "BM_ColdMemcpy"},
    {"BM_ColdMemcpy", "cold memcpy of the same bytes", ""},
    {"BM_ExportDense", "dense export, 256 x 64 blocks", "BM_ManagerLookups"},
    {"BM_ExportCsr", "CSR export, 256 x 64 blocks", "BM_ManagerLookups"},
    {"BM_ManagerLookups", "floor: one table + length lookup per row", ""},
    {"BM_DeltaExport/changed_rows:0", "delta export, 0 rows changed",
     "BM_ExportDense"},
    {"BM_DeltaExport/changed_rows:1", "delta export, 1 row changed",
     "BM_ExportDense"},
    {"BM_DeltaExport/changed_rows:16", "delta export, 16 rows changed",
     "BM_ExportDense"},
    {"BM_DeltaExport/changed_rows:256", "delta export, 256 rows changed",
     "BM_ExportDense"},
    {"BM_CsrDecodeAttention/dtype:0", "CSR decode attention, float32",
     "BM_GatherThenAttend/dtype:0"},
    {"BM_CsrDecodeAttention/dtype:1", "CSR decode attention, float16",
     "BM_GatherThenAttend/dtype:1"},
    {"BM_CsrDecodeAttention/dtype:2", "CSR decode attention, bfloat16",
     "BM_GatherThenAttend/dtype:2"},
};

// bench/remote/remote_tier_benchmark.cc's rows: `counter` is ours over
// the baseline (> 1: faster), checked against `target` when > 0.
struct RemoteRow {
  const char* prefix;
  const char* what;
  const char* counter;
  const char* baseline;
  double target;
};
constexpr RemoteRow kRemoteRows[] = {
    {"BM_StorePut/value_bytes:65536/", "RedisBlockStore Put, 64 KiB",
     "ratio_to_redis_set", "redis-benchmark SET -P 1", 0.8},
    {"BM_StorePut/value_bytes:2097152/", "RedisBlockStore Put, 2 MiB",
     "ratio_to_redis_set", "redis-benchmark SET -P 1", 0.8},
    {"BM_StoreFetch/value_bytes:65536/keys:1/",
     "RedisBlockStore Fetch of 1, 64 KiB", "ratio_to_redis_get",
     "redis-benchmark GET -P 1", 0.8},
    {"BM_StoreFetch/value_bytes:2097152/keys:1/",
     "RedisBlockStore Fetch of 1, 2 MiB", "ratio_to_redis_get",
     "redis-benchmark GET -P 1", 0.8},
    {"BM_TierStore/value_bytes:65536/",
     "RemoteTier Store of 64 + Flush, 64 KiB", "ratio_to_redis_set",
     "redis-benchmark SET -P 1", 0.8},
    {"BM_TierStore/value_bytes:2097152/",
     "RemoteTier Store of 8 + Flush, 2 MiB", "ratio_to_redis_set",
     "redis-benchmark SET -P 1", 0.8},
    {"BM_TierLookupAndLoad/value_bytes:65536/",
     "RemoteTier LookupAndLoad of 8, 64 KiB", "ratio_to_redis_get",
     "redis-benchmark GET -P 8", 0.8},
    {"BM_TierLookupAndLoad/value_bytes:2097152/",
     "RemoteTier LookupAndLoad of 8, 2 MiB", "ratio_to_redis_get",
     "redis-benchmark GET -P 8", 0.8},
    {"BM_TierLookup/blocks:128/", "RemoteTier Lookup of 128 (pipelined)",
     "speedup_vs_one_by_one", "128 one-by-one EXISTS", 0},
};

}  // namespace

absl::StatusOr<ServingSuite> RunServingSuite(
    const ServingSuiteOptions& options) {
  std::map<std::string, double> medians;
  std::map<std::string, double> counters;
  for (const Binary& bin : kBinaries) {
    const std::optional<std::string> path = Runfile(bin.rel);
    if (!path.has_value()) {
      return absl::NotFoundError(absl::StrCat(
          bin.rel, " is not in the runfiles (bazel run //bench:summary)"));
    }
    fmt::print(stderr, "running {} ...\n", bin.rel);
    absl::StatusOr<std::map<std::string, double>> m =
        RunBinary(*path, options, &counters);
    if (!m.ok() && bin.optional) {
      fmt::print(stderr, "skipped: {}\n", m.status().ToString());
      continue;
    }
    if (!m.ok()) return m.status();
    medians.insert(m->begin(), m->end());
  }
  auto median = [&](const std::string& name) -> std::optional<double> {
    const auto it = medians.find(name);
    if (it == medians.end()) return std::nullopt;
    return it->second;
  };
  ServingSuite suite;
  for (const Pair& p : kPairs) {
    const std::optional<double> t = median(p.name);
    if (!t.has_value()) continue;  // Named in the targets below if needed.
    ServingRow row{p.name, p.what, *t, p.baseline, std::nullopt};
    if (const std::optional<double> b = median(p.baseline);
        b.has_value() && *t > 0) {
      row.ratio = *b / *t;
    }
    suite.rows.push_back(std::move(row));
  }
  // The remote tier's rows: their ratios are counters of the binary, each
  // against redis-benchmark run interleaved with it (names are matched by
  // prefix: the iteration counts are the binary's).
  auto remote = [&](const char* prefix,
                    const char* counter) -> std::optional<ServingRow> {
    for (const auto& [name, ns] : medians) {
      if (name.rfind(prefix, 0) != 0) continue;
      const auto it = counters.find(absl::StrCat(name, " ", counter));
      if (it == counters.end()) return std::nullopt;
      return ServingRow{name, "", ns, "", it->second};
    }
    return std::nullopt;
  };
  for (const RemoteRow& r : kRemoteRows) {
    std::optional<ServingRow> row = remote(r.prefix, r.counter);
    if (!row.has_value()) continue;
    row->what = r.what;
    row->baseline = r.baseline;
    suite.rows.push_back(std::move(*row));
  }
  // A target whose benchmark is missing is reported unmet, never skipped.
  auto at_most = [&](const char* target, const char* name, double limit_ns) {
    const std::optional<double> t = median(name);
    suite.targets.push_back({target, name, t.value_or(-1), limit_ns,
                             t.has_value() && *t <= limit_ns});
  };
  at_most("decode step of 256 seqs <= 10 us (ns)", "BM_DecodeStep/seqs:256",
          10e3);
  at_most("admission + prefill of 1,024 tokens <= 1 us (ns)",
          "BM_AdmitPrefill/manual_time", 1e3);
  at_most("Free of 1,024 tokens <= 0.5 us (ns)", "BM_Free/manual_time", 500);
  at_most("dense export 256 x 64 <= 20 us (ns)", "BM_ExportDense", 20e3);
  at_most("CSR export 256 x 64 <= 20 us (ns)", "BM_ExportCsr", 20e3);
  {
    const std::optional<double> swap = median("BM_SwapOutIn");
    const std::optional<double> cold = median("BM_ColdMemcpy");
    const double f = swap && cold ? *cold / *swap : -1;
    suite.targets.push_back(
        {"swap >= 0.8 of cold memcpy", "BM_SwapOutIn", f, 0.8, f >= 0.8});
  }
  // Delta export. Its lengths are written in full every step (a decode
  // changes every one), so there is a floor of one lookup per row; what the
  // rows changed add must be proportional to their number: 16 changed rows
  // may add at most twice their 16/256 share of what 256 add. And with
  // nothing changed it must cost at most half a full dense export.
  {
    const std::optional<double> d0 = median("BM_DeltaExport/changed_rows:0");
    const std::optional<double> d16 = median("BM_DeltaExport/changed_rows:16");
    const std::optional<double> d256 =
        median("BM_DeltaExport/changed_rows:256");
    const std::optional<double> dense = median("BM_ExportDense");
    const double share =
        d0 && d16 && d256 && *d256 > *d0 ? (*d16 - *d0) / (*d256 - *d0) : -1;
    suite.targets.push_back(
        {"delta export: (16 changed - 0) / (256 changed - 0) <= 2 x 16/256",
         "BM_DeltaExport/changed_rows:16", share, 2.0 * 16 / 256,
         share >= -0.05 && share <= 2.0 * 16 / 256});
    const double floor = d0 && dense ? *d0 / *dense : -1;
    suite.targets.push_back(
        {"delta export, nothing changed <= 0.5 of a full "
         "dense export",
         "BM_DeltaExport/changed_rows:0", floor, 0.5,
         floor >= 0 && floor <= 0.5});
  }
  for (const RemoteRow& r : kRemoteRows) {
    if (r.target <= 0) continue;
    const std::optional<ServingRow> row = remote(r.prefix, r.counter);
    const double v = row.has_value() ? *row->ratio : -1;
    suite.targets.push_back(
        {absl::StrCat(r.what, " >= ", r.target, " of ", r.baseline), r.prefix,
         v, r.target, v >= r.target});
  }
  return suite;
}

}  // namespace pagedkv::bench
