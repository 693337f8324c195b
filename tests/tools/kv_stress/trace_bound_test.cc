// The infinite-cache bound on a hand-written trace, in trace blocks and in
// the manager's tokens.
#include "tools/kv_stress/trace_bound.h"

#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tools/kv_stress/mooncake_trace.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;

// Ids 1, 2 shared by the first three requests; 3 a short tail seen again.
constexpr char kTrace[] =
    R"({"timestamp": 0, "input_length": 1100, "output_length": 4, "hash_ids": [1, 2, 3]}
{"timestamp": 10, "input_length": 1024, "output_length": 4, "hash_ids": [1, 2]}
{"timestamp": 20, "input_length": 1536, "output_length": 4, "hash_ids": [1, 2, 3]}
{"timestamp": 30, "input_length": 600, "output_length": 4, "hash_ids": [9, 10]}
)";

TEST(TraceBoundTest, CountsBlocksSeenInAnEarlierRequest) {
  absl::StatusOr<MooncakeTrace> t = MooncakeTrace::Parse(kTrace, {});
  ASSERT_THAT(t, IsOk());
  const PrefixBound b = ComputePrefixBound(t->requests(), 16);
  // 10 blocks; repeats: 1, 2 (request 1), 1, 2, 3 (request 2).
  EXPECT_EQ(b.spans, 10);
  EXPECT_EQ(b.repeat_spans, 5);
  EXPECT_EQ(b.distinct_spans, 5);
  EXPECT_DOUBLE_EQ(b.span_hit_rate(), 0.5);
}

TEST(TraceBoundTest, CountsTokensAsTheManagerWouldHitThem) {
  absl::StatusOr<MooncakeTrace> t = MooncakeTrace::Parse(kTrace, {});
  ASSERT_THAT(t, IsOk());
  const PrefixBound b = ComputePrefixBound(t->requests(), 16);
  EXPECT_EQ(b.prompt_tokens, 1100 + 1024 + 1536 + 600);
  // Request 1: blocks 1, 2 = 1024 tokens, but the last token is computed:
  // 1023, down to 1008 in 16-token blocks. Request 2: 1, 2 in full, then
  // block 3 only as far as request 0 held it in full 16-token blocks
  // (1100 -> 1088, so 64 of its 76 tokens): 1088.
  EXPECT_EQ(b.hit_tokens, 1008 + 1088);
  EXPECT_DOUBLE_EQ(b.token_hit_rate(), (1008.0 + 1088.0) / 4260.0);
}

TEST(TraceBoundTest, AnEmptyStreamHasNoHits) {
  const PrefixBound b = ComputePrefixBound({}, 16);
  EXPECT_EQ(b.span_hit_rate(), 0.0);
  EXPECT_EQ(b.token_hit_rate(), 0.0);
}

}  // namespace
}  // namespace pagedkv::kv_stress
