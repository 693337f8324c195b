// tools/kv_stress/report.h
//
// Renders a SimResult three ways: the final fmt table printed at the end of
// every kv_stress run, the JSON of --json_out (every figure plus the
// config; top-level keys config, paged, contiguous, invariant_checks,
// invariant_failures, capacity_ratio, prefix_cache), and the hand-written
// SVGs of --svg_out: two panels over steps, paged against contiguous
// (utilization on top, running requests below; polylines, axes, legend),
// or, for a pool sweep, hit rate against pool size with the bound.
//
// prefix_cache holds hit_rate (hit / prompt tokens), blocks_saved (prompt
// blocks served from the cache), evictions (cached blocks taken for new
// data), the manager's other counters and the prefill tokens cached and
// computed; with a comparison run, without_caching, prefill_compute_ratio
// (computed off / on) and throughput_ratio (tokens per step on / off); for
// a trace, bound (trace_bound.h); and sweep, one object per pool size.
//
//   absl::StatusOr<SimResult> r = RunSimulation(config);
//   std::string table = FormatTable(*r);
//   std::string json = ToJson(*r).dump(2);
//   std::string svg = RenderSvg(*r);
//
// Not a benchmark. Thread safety: pure functions of their argument.
#ifndef PAGEDKV_TOOLS_KV_STRESS_REPORT_H_
#define PAGEDKV_TOOLS_KV_STRESS_REPORT_H_

#include <cstdio>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

// Returns the human-readable final table (several lines, ends in '\n').
std::string FormatTable(const SimResult& result);

// Returns the JSON report. Timing figures (wall_s, tokens_per_s, ops_per_s,
// latencies) are the only fields that differ between runs of one seed.
nlohmann::json ToJson(const SimResult& result);

// Returns the config alone as JSON (also the "config" key of ToJson).
nlohmann::json ConfigToJson(const SimConfig& config);

// Adds what every run reports about itself to `j` (steps_run, wall_s,
// invariant_checks / _failures, first_failure_step, failure_messages):
// a SimResult or a ReplicaRunResult (replicas.h).
template <typename Run>
void AddRunOutcome(const Run& r, nlohmann::json& j) {
  j["steps_run"] = r.steps_run;
  j["wall_s"] = r.wall_s;
  j["invariant_checks"] = r.invariant_checks;
  j["invariant_failures"] = r.invariant_failures;
  j["first_failure_step"] = r.first_failure_step;
  nlohmann::json messages = nlohmann::json::array();
  for (const std::string& m : r.failure_messages) messages.push_back(m);
  j["failure_messages"] = messages;
}

// Returns an SVG document (1000 x 680) of the time series.
std::string RenderSvg(const SimResult& result);

// Returns the prefix-cache section of FormatTable ("" with prefix caching
// off): hit rate, blocks saved, evictions and prefill tokens computed, next
// to the run without caching, the trace's bound and the pool sweep when
// the result has them.
std::string FormatPrefixTable(const SimResult& result);

// Returns the quantized-KV section of FormatTable ("" unless the result has
// an unquantized run, SimResult::unquantized): block bytes, blocks per GiB,
// pool blocks, peak and mean running, tokens per step for both storages,
// and their ratios.
std::string FormatKVStorageTable(const SimResult& result);

// Returns an SVG document (1000 x 560) of a pool sweep: the measured hit
// rate at each pool size, with the trace's infinite-cache bounds as dashed
// lines, pool size on a log axis. REQUIRES: !result.sweep.empty().
std::string RenderSweepSvg(const SimResult& result);

// Writes `contents` to `path`. Returns PermissionDenied, NotFound or
// Internal (the path and the OS reason, strerror) on failure.
absl::Status WriteFile(const std::string& path, const std::string& contents);

// An output file opened before a run and written after it, so that a path
// that cannot be written fails before the work instead of losing it.
//
//   absl::StatusOr<OutputFile> json = OutputFile::Open("kv.json");
//   if (!json.ok()) return json.status();   // Before the run.
//   ...                                      // The run.
//   PKV_RETURN_IF_ERROR(json->Write(contents));
//
// States: open (after Open), then closed (after Write, or when moved
// from). Move-only: it owns the stream.
class OutputFile {
 public:
  // Opens (creates or truncates) `path` for writing. Returns
  // PermissionDenied, NotFound or Internal naming the path and the OS
  // reason (strerror).
  static absl::StatusOr<OutputFile> Open(const std::string& path);

  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&& other) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  // Writes `contents` and closes the file; Internal (with the path and
  // the OS reason) if writing or closing fails.
  // REQUIRES: open (not written yet).
  absl::Status Write(const std::string& contents);
  const std::string& path() const { return path_; }

 private:
  OutputFile(std::string path, std::FILE* file)
      : path_(std::move(path)), file_(file) {}

  std::string path_;
  std::FILE* file_ = nullptr;  // nullptr: closed.
};

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_REPORT_H_
