// tools/kv_stress/trace_bound.cc
#include "tools/kv_stress/trace_bound.h"

#include <algorithm>
#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {

PrefixBound ComputePrefixBound(absl::Span<const Request> requests,
                               int32_t block_tokens) {
  PKV_CHECK(block_tokens > 0, "block_tokens %d", block_tokens);
  PrefixBound b;
  b.block_tokens = block_tokens;
  // Per key: the most tokens of it an earlier prompt held in full blocks.
  absl::flat_hash_map<uint64_t, int32_t> cached;
  for (const Request& r : requests) {
    b.prompt_tokens += r.prompt_tokens;
    int64_t hit = 0;
    bool hitting = true;
    int64_t start = 0;
    for (const TokenSpan& s : r.prompt_spans) {
      ++b.spans;
      const auto it = cached.find(s.key);
      if (it != cached.end()) ++b.repeat_spans;
      if (hitting) {
        const int64_t have = it == cached.end() ? 0 : it->second;
        hit += std::min<int64_t>(have, s.length);
        hitting = have >= s.length;
      }
      start += s.length;
    }
    const int64_t matchable = std::max<int64_t>(0, r.prompt_tokens - 1);
    hit = std::min(hit, matchable) / block_tokens * block_tokens;
    b.hit_tokens += hit;
    // What this prompt leaves cached: its full blocks.
    const int64_t published =
        int64_t{r.prompt_tokens} / block_tokens * block_tokens;
    start = 0;
    for (const TokenSpan& s : r.prompt_spans) {
      const int32_t held = static_cast<int32_t>(
          std::clamp<int64_t>(published - start, 0, s.length));
      int32_t& c = cached[s.key];
      c = std::max(c, held);
      start += s.length;
    }
  }
  b.distinct_spans = static_cast<int64_t>(cached.size());
  return b;
}

}  // namespace pagedkv::kv_stress
