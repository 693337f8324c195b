// tools/kv_stress/policy.h
//
// Preemption policies of the simulated server: when the shared pool cannot
// supply a block for a decode step, the scheduler frees one running request
// (its blocks go back to the pool) and requeues it to be recomputed from its
// prompt, as vLLM's recompute preemption does. The policy only chooses the
// victim; it is a pure function of the candidates, so it is tested alone.
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
