// tools/kv_stress/policy.h
//
// The simulated server's policies, by name for the flags.
//  - PreemptionPolicy: when the shared pool cannot supply a block for a
//    decode step, the scheduler preempts one running request; the policy
//    only chooses the victim; it is a pure function of the candidates, so it
//    is tested alone.
//  - PreemptionMode: what preemption does with the victim's KV: frees it to
//    recompute later (vLLM's recompute), or swaps it to the host tier and
//    back (vLLM's swap; falls back to recompute when the tier is full).
//  - The manager's AdmissionMode and StorageMode (kv_cache_manager.h).
//
//   std::vector<VictimCandidate> running = ...;   // in admission order
//   int32_t i = SelectVictim(PreemptionPolicy::kNewestFirst, running);
//   // preempt running[i]
//
// Not a benchmark. Thread safety: pure functions.
#ifndef PAGEDKV_TOOLS_KV_STRESS_POLICY_H_
#define PAGEDKV_TOOLS_KV_STRESS_POLICY_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/types/span.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv::kv_stress {

enum class PreemptionPolicy {
  // The most recently admitted request (vLLM's default: preempt from the
  // back of the running queue).
  kNewestFirst,
  // The request with the least computed work, prompt + decoded tokens, so
  // its recompute costs least (ties: the newest admission). Unlike
  // kNewestFirst it prefers an old request with a short prompt to a new one
  // with a long prompt.
  kLeastProgress,
};

// Returns "newest_first" or "least_progress".
std::string_view PolicyName(PreemptionPolicy policy);
std::optional<PreemptionPolicy> ParsePolicy(std::string_view name);

enum class PreemptionMode { kRecompute, kSwap };

// "recompute" | "swap".
std::string_view PreemptionModeName(PreemptionMode mode);
std::optional<PreemptionMode> ParsePreemptionMode(std::string_view name);
// "watermark" | "reservation".
std::string_view AdmissionModeName(AdmissionMode mode);
std::optional<AdmissionMode> ParseAdmissionMode(std::string_view name);
// "host" | "books_only".
std::string_view StorageModeName(StorageMode mode);
std::optional<StorageMode> ParseStorageMode(std::string_view name);

struct VictimCandidate {
  // Increases with every admission (readmissions get a new one).
  int64_t admission_seq = 0;
  // Tokens decoded since admission.
  int32_t decoded_tokens = 0;
  // Prompt tokens (prefilled at admission).
  int32_t prompt_tokens = 0;

  int64_t progress() const { return int64_t{prompt_tokens} + decoded_tokens; }
};

// Returns the index in `candidates` of the request to preempt.
// REQUIRES: !candidates.empty().
int32_t SelectVictim(PreemptionPolicy policy,
                     absl::Span<const VictimCandidate> candidates);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_POLICY_H_
