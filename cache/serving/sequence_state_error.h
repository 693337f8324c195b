// cache/serving/sequence_state_error.h
//
// Internal to the serving manager (KVCacheManager and GroupedSequences):
// the FAILED_PRECONDITION both return for an operation on a sequence that
// is not in the state the operation needs, worded the same way.
//
// Example:
//
//   if (s.state != SequenceState::kPreempted) {
//     return WrongState("Readmit", seq, s.state, "preempted");
//   }
//   // "Readmit of sequence 7, which is running, not preempted"
//
// Thread safety: a pure function.
#ifndef PAGEDKV_CACHE_SERVING_SEQUENCE_STATE_ERROR_H_
#define PAGEDKV_CACHE_SERVING_SEQUENCE_STATE_ERROR_H_

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv {
namespace internal {

// `op` of sequence `seq`, which is in `state`, needs the state named
// `wanted` (one of SequenceStateName's words).
inline absl::Status WrongState(const char* op, SequenceId seq,
                               SequenceState state, const char* wanted) {
  return absl::FailedPreconditionError(
      absl::StrFormat("%s of sequence %d, which is %s, not %s", op, seq,
                      SequenceStateName(state), wanted));
}

inline absl::Status NotRunning(SequenceId seq, SequenceState state,
                               const char* op) {
  return WrongState(op, seq, state, "running");
}

// CompleteSwap of a sequence that is neither swapping in nor out.
inline absl::Status NoSwapPending(SequenceId seq, SequenceState state) {
  return absl::FailedPreconditionError(absl::StrFormat(
      "CompleteSwap of sequence %d, which is %s: no swap is pending", seq,
      SequenceStateName(state)));
}

}  // namespace internal
}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_SEQUENCE_STATE_ERROR_H_
