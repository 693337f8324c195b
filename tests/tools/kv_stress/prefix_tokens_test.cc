// Token ids for prefix caching: equal span keys give equal tokens, different
// keys different ones, and a session's next prompt repeats what the previous
// turn generated.
#include "tools/kv_stress/prefix_tokens.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {
namespace {

Request WithSpans(int64_t id, int32_t prompt, std::vector<TokenSpan> spans) {
  Request r;
  r.id = id;
  r.prompt_tokens = prompt;
  r.output_tokens = 4;
  r.prompt_spans = std::move(spans);
  return r;
}

TEST(PrefixTokensTest, EqualHashIdsGiveEqualTokensAndOthersDiffer) {
  const uint64_t a = SpanKey(TokenKeyTag::kTraceBlock, 46);
  const uint64_t b = SpanKey(TokenKeyTag::kTraceBlock, 47);
  EXPECT_EQ(a, SpanKey(TokenKeyTag::kTraceBlock, 46));
  EXPECT_NE(a, b);
  // Another tag with the same number is another key.
  EXPECT_NE(a, SpanKey(TokenKeyTag::kSystemPrompt, 46));
  int32_t equal = 0;
  for (int64_t j = 0; j < 512; ++j) {
    EXPECT_EQ(TokenId(a, j), TokenId(a, j));
    EXPECT_GE(TokenId(a, j), 0);
    equal += TokenId(a, j) == TokenId(b, j) ? 1 : 0;
  }
  EXPECT_EQ(equal, 0);  // 31-bit ids: a collision in 512 is ~2^-22.
  // Within one block the ids vary too.
  EXPECT_NE(TokenId(a, 0), TokenId(a, 1));
}

TEST(PrefixTokensTest, PromptsSharingLeadingSpansShareTheirTokens) {
  const uint64_t sys = SpanKey(TokenKeyTag::kSystemPrompt, 0);
  const Request r1 = WithSpans(1, 40, {{sys, 32}});
  const Request r2 =
      WithSpans(2, 50, {{sys, 32}, {SpanKey(TokenKeyTag::kUserText, 9), 10}});
  std::vector<int32_t> t1, t2;
  PromptTokenIds(r1, &t1);
  PromptTokenIds(r2, &t2);
  ASSERT_EQ(t1.size(), 40u);
  ASSERT_EQ(t2.size(), 50u);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(t1[j], t2[j]) << j;
  // Past the shared span each prompt has its own tokens.
  EXPECT_NE(t1[32], t2[32]);
  // Spans longer than the prompt are cut.
  std::vector<int32_t> cut;
  PromptTokenIds(WithSpans(3, 8, {{sys, 32}}), &cut);
  ASSERT_EQ(cut.size(), 8u);
  EXPECT_EQ(cut[7], t1[7]);
}

TEST(PrefixTokensTest, NextTurnRepeatsTheTokensThePreviousOneGenerated) {
  Request turn0 = WithSpans(5, 4, {});
  turn0.output_key = SpanKey(TokenKeyTag::kOutput, 3, 0);
  const Request turn1 = WithSpans(6, 8, {{turn0.output_key, 4}});
  std::vector<int32_t> prompt;
  PromptTokenIds(turn1, &prompt);
  for (int64_t d = 0; d < 4; ++d) {
    EXPECT_EQ(GeneratedTokenId(turn0, /*row_salt=*/0, d), prompt[d]) << d;
    // A forked row generates tokens of its own.
    EXPECT_NE(GeneratedTokenId(turn0, /*row_salt=*/17, d), prompt[d]) << d;
  }
  // Without an output key a request's outputs are its own.
  EXPECT_NE(GeneratedTokenId(WithSpans(7, 4, {}), 0, 0),
            GeneratedTokenId(WithSpans(8, 4, {}), 0, 0));
}

}  // namespace
}  // namespace pagedkv::kv_stress
