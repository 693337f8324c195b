// tools/kv_replay/compare.h
//
// Compares a replay's output trace with the expected (golden) trace by the
// rules of conformance/FORMAT.md section 11. Scenarios are matched by name
// and ops by position. Per op it compares: error versus no error (never the
// type or message); when neither failed, the result (for update/get the five
// summary fields shape, sum, wsum, fnv1a64 and dtype, with dtype spellings
// such as "fp16" or "kFloat16" normalised; for other ops the value); and the
// state after the op (per layer: allocated, seq_len and, for present layers,
// the visible summaries; missing layer entries count as absent layers of
// length 0; for an EncoderDecoderCache both halves and the set of layers with
// is_updated true). storage_shape, num_slots, max_cache_shape, cls and probe
// are ignored.
//
// With CompareOptions::tolerance R > 0 (replays on quantized pools, issue
// #15), a summary's shape and dtype must still match exactly, its fnv1a64
// is not compared, and its sum and wsum match when
//   |actual - expected| <= R * |expected| + W,
// W being the number of elements (sum) or the sum of their weights (wsum):
// each element may be off by R times its magnitude plus one unit of the
// integer rounding the summaries apply. The traces' vectors hold values of
// one sign close to their largest, so a per-vector error of amax/254 (int8)
// or amax/16 (fp8) fits R = 0.004 / 0.0625 (see README "Quantized KV").
//
// Example:
//
//   TraceComparison cmp = CompareTraces(expected, actual);
//   for (const std::string& line : cmp.mismatch_lines) std::cout << line;
//   std::cout << cmp.num_passed << " passed, " << cmp.num_failed
//             << " failed\n";
//
// Thread safety: pure functions.
#ifndef PAGEDKV_TOOLS_KV_REPLAY_COMPARE_H_
#define PAGEDKV_TOOLS_KV_REPLAY_COMPARE_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace pagedkv::kv_replay {

struct CompareOptions {
  // 0: exact (FORMAT.md section 11). > 0: summaries within this relative
  // tolerance, as described above.
  double tolerance = 0;
};

struct ScenarioComparison {
  std::string name;
  bool passed = true;
  // One line per mismatching op, "name op#i (opname): what differs", plus
  // lines for a scenario missing from the output or stopping early.
  std::vector<std::string> mismatch_lines;
};

struct TraceComparison {
  // One entry per expected scenario, in the expected trace's order.
  std::vector<ScenarioComparison> scenarios;
  // All mismatch lines of all scenarios, in order.
  std::vector<std::string> mismatch_lines;
  int num_passed = 0;
  int num_failed = 0;
};

// Returns the canonical dtype spelling ("float32", "float16", "bfloat16") of
// `name`, accepting variants such as "f32", "fp32", "kFloat32", "half",
// "f16" and "bf16" in any case; other names come back lower-cased.
std::string NormalizeDTypeName(const std::string& name);

// Compares one expected scenario with the actual one of the same name.
// `actual` may be nullptr (missing from the output: the scenario fails).
ScenarioComparison CompareScenario(const nlohmann::json& expected,
                                   const nlohmann::json* actual,
                                   const CompareOptions& options = {});

// Compares every scenario of `expected` with the scenario of the same name
// in `actual`. Scenarios only in `actual` are ignored.
TraceComparison CompareTraces(const nlohmann::json& expected,
                              const nlohmann::json& actual,
                              const CompareOptions& options = {});

}  // namespace pagedkv::kv_replay

#endif  // PAGEDKV_TOOLS_KV_REPLAY_COMPARE_H_
