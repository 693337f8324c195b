// tools/kv_stress/replica_report.h
//
// Renders a ReplicaRunResult (replicas.h): the table kv_stress prints in
// multi-replica mode, and the JSON of its --json_out.
//
// Rates are over full prompt blocks at admission (and over prompt tokens,
// hit blocks * block_tokens / prompt tokens): local is a replica's own
// prefix cache, remote is what its tier loaded (another replica computed
// it). "Tokens the tier saved" is remote hit blocks * block_tokens; with
// the comparison run it is also prefill tokens computed without the tier
// minus with it, and their ratio.
//
// JSON keys: config (ConfigToJson, as run), host_geometry (null, or the
// requested geometry and why it was replaced), steps_run, wall_s,
// invariant_checks, invariant_failures, first_failure_step,
// failure_messages, replicas[i] and total (ReplicaStatsToJson: requests,
// local.*, remote.*, stamps.*, tier.*), remote (store, key_namespace,
// tokens_saved, and with a comparison without_remote.{replicas, total,
// steps_run}, prefill_tokens_computed_without / _with, tokens_saved_vs_off,
// prefill_compute_ratio = without / with).
//
//   absl::StatusOr<ReplicaRunResult> r = RunReplicas(config);
//   std::fputs(FormatReplicaTable(*r).c_str(), stdout);
//   std::string json = ReplicaRunToJson(*r).dump(2);
//
// Thread safety: pure functions of their argument.
#ifndef PAGEDKV_TOOLS_KV_STRESS_REPLICA_REPORT_H_
#define PAGEDKV_TOOLS_KV_STRESS_REPLICA_REPORT_H_

#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "tools/kv_stress/replicas.h"

namespace pagedkv::kv_stress {

// Returns the table (several lines, ends in '\n').
std::string FormatReplicaTable(const ReplicaRunResult& result);

// Returns the JSON report (see the file comment).
nlohmann::json ReplicaRunToJson(const ReplicaRunResult& result);

// Returns one replica's (or the total's) figures with their rates.
nlohmann::json ReplicaStatsToJson(const ReplicaStats& s, int32_t block_tokens);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_REPLICA_REPORT_H_
