// tools/kv_replay/scenario_runner.h
//
// Replays conformance traces (conformance/FORMAT.md) against the real cache
// API. RunScenario takes one scenario object of a trace, builds the cache its
// `ctor` names (DynamicKVCache, StaticKVCache or EncoderDecoderCache), runs
// every op in order with inputs rebuilt from the op's argument fields alone
// (FORMAT.md section 7), and returns the same scenario with each op's
// `result`, `error` and `state` replaced by what this implementation did
// (sections 8 and 9). The recorded answers in the input are never read.
//
// Inputs the C++ API cannot express (FORMAT.md 10.5: ranks other than 4,
// float64/int32 key or value data, float-typed positions or indices, boolean
// masks, 2-D index lists, 3-D or ragged positions) are recorded as
// INVALID_ARGUMENT without calling the cache; everything else, including
// values that are invalid on purpose, goes through the API.
//
// Example:
//
//   nlohmann::json trace = nlohmann::json::parse(text, nullptr, false);
//   absl::StatusOr<nlohmann::json> out = RunTrace(trace);
//   if (!out.ok()) return out.status();  // malformed trace
//   std::cout << out->dump() << "\n";
//
// Thread safety: the functions share no state; each run builds its own cache.
#ifndef PAGEDKV_TOOLS_KV_REPLAY_SCENARIO_RUNNER_H_
#define PAGEDKV_TOOLS_KV_REPLAY_SCENARIO_RUNNER_H_

#include "absl/status/statusor.h"
#include "cache/storage/kv_layout.h"
#include "nlohmann/json.hpp"

namespace pagedkv::kv_replay {

struct ReplayOptions {
  // The storage of every cache's private pool: kSame replays the traces
  // exactly; kInt8 / kFp8E4M3 replay them on quantized pools (issue #15),
  // whose results match the recorded ones only within a tolerance
  // (CompareOptions::tolerance in compare.h).
  KVStorage storage = KVStorage::kSame;
};

// Runs one scenario ({"name", "ctor", "ops", ...}) on a fresh cache and
// returns the output scenario: name, ctor, about (when present) and one
// output op per input op. INVALID_ARGUMENT when the scenario is malformed
// (not an object, missing or ill-typed fields, an unknown ctor or an
// unknown op name, which names the known ones).
absl::StatusOr<nlohmann::json> RunScenario(const nlohmann::json& scenario,
                                           const ReplayOptions& options = {});

// Runs every scenario of a trace ({"meta", "scenarios"}) and returns the
// output trace with a kv_replay `meta`. INVALID_ARGUMENT as for RunScenario
// (naming the scenario) or when `scenarios` is missing.
// With a quantized storage the output's meta says so ("storage": "int8").
absl::StatusOr<nlohmann::json> RunTrace(const nlohmann::json& trace,
                                        const ReplayOptions& options = {});

}  // namespace pagedkv::kv_replay

#endif  // PAGEDKV_TOOLS_KV_REPLAY_SCENARIO_RUNNER_H_
