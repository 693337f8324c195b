// tools/kv_stress/trace_bound.h
//
// The infinite-cache bound of a request stream: the prefix-cache hit rate a
// cache that never evicts would get, the yardstick for the hit rate kv_stress
// measures at a finite pool. Two units:
//  - spans (a Mooncake trace's 512-token hash-id blocks): the fraction of
//    prompt spans whose key appeared in an earlier request (64.0% for
//    ../shared/traces/mooncake_synthetic_trace.jsonl, as its README says);
//  - tokens, as the manager counts hits (hit_tokens / query_tokens): per
//    request, the leading run of spans seen before, each counted only as far
//    as an earlier request's prompt held it in full manager blocks (a
//    request's partial last block is never published with prompt tokens),
//    capped so the last prompt token is computed, rounded down to whole
//    blocks of block_tokens.
// Generated tokens are not counted: a trace's outputs are never part of a
// later prompt.
//
//   const PrefixBound b = ComputePrefixBound(trace.requests(), 16);
//   // b.span_hit_rate() == 0.640 on the Mooncake trace.
//
// Thread safety: a pure function.
#ifndef PAGEDKV_TOOLS_KV_STRESS_TRACE_BOUND_H_
#define PAGEDKV_TOOLS_KV_STRESS_TRACE_BOUND_H_

#include <cstdint>

#include "absl/types/span.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {

struct PrefixBound {
  int32_t block_tokens = 0;  // The manager's, for the token bound.
  int64_t spans = 0;         // Prompt spans (trace blocks) in all.
  int64_t repeat_spans = 0;  // Of those, keys seen in an earlier request.
  int64_t distinct_spans = 0;
  int64_t prompt_tokens = 0;
  int64_t hit_tokens = 0;  // What an infinite cache serves (see above).

  double span_hit_rate() const {
    return spans > 0 ? static_cast<double>(repeat_spans) / spans : 0.0;
  }
  double token_hit_rate() const {
    return prompt_tokens > 0 ? static_cast<double>(hit_tokens) / prompt_tokens
                             : 0.0;
  }
};

// Returns the bound of `requests` in order. REQUIRES: block_tokens > 0.
PrefixBound ComputePrefixBound(absl::Span<const Request> requests,
                               int32_t block_tokens);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_TRACE_BOUND_H_
