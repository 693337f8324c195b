// tools/kv_stress/report.h
//
// Renders a SimResult three ways: the final fmt table printed at the end of
// every kv_stress run, the JSON of --json_out (every figure plus the
// config; top-level keys config, paged, contiguous, invariant_checks,
// invariant_failures, capacity_ratio), and the hand-written SVG of
// --svg_out (two panels over steps, paged against contiguous: utilization
// on top, running requests below; polylines, axes, legend).
//
//   absl::StatusOr<SimResult> r = RunSimulation(config);
//   std::string table = FormatTable(*r);
//   std::string json = ToJson(*r).dump(2);
//   std::string svg = RenderSvg(*r);
//
// Not a benchmark. Thread safety: pure functions of their argument.
#ifndef PAGEDKV_TOOLS_KV_STRESS_REPORT_H_
#define PAGEDKV_TOOLS_KV_STRESS_REPORT_H_

#include <string>

#include "absl/status/status.h"
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

// Returns an SVG document (1000 x 640) of the time series.
std::string RenderSvg(const SimResult& result);

// Writes `contents` to `path`. Returns Internal (with the path) on failure.
absl::Status WriteFile(const std::string& path, const std::string& contents);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_REPORT_H_
