// The Mooncake trace reader: arrivals by step, limits, and every malformed
// line rejected with its line number.
#include "tools/kv_stress/mooncake_trace.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tools/kv_stress/prefix_tokens.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kTrace[] =
    R"({"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]}
{"timestamp": 29, "input_length": 100, "output_length": 1, "hash_ids": []}

{"timestamp": 30, "input_length": 512, "output_length": 7, "hash_ids": [1]}
{"timestamp": 95, "input_length": 13, "output_length": 893}
)";

TEST(MooncakeTraceTest, ArrivalsFallInTheirSteps) {
  absl::StatusOr<MooncakeTrace> t =
      MooncakeTrace::Parse(kTrace, {.step_ms = 30});
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->num_requests(), 4);
  EXPECT_EQ(t->max_prompt_tokens(), 6955);
  EXPECT_EQ(t->max_output_tokens(), 893);
  EXPECT_EQ(t->last_arrival_step(), 3);  // floor(95 / 30).
  std::vector<Request> s0 = t->ArrivalsAt(0);
  ASSERT_EQ(s0.size(), 2u);  // 0 ms and 29 ms.
  EXPECT_EQ(s0[0].id, 0);
  EXPECT_EQ(s0[0].prompt_tokens, 6955);
  EXPECT_EQ(s0[0].output_tokens, 52);
  EXPECT_EQ(s0[0].kind, RequestKind::kPlain);
  EXPECT_EQ(s0[0].width, 1);
  EXPECT_EQ(s0[1].id, 1);
  std::vector<Request> s1 = t->ArrivalsAt(1);
  ASSERT_EQ(s1.size(), 1u);
  EXPECT_EQ(s1[0].id, 2);
  EXPECT_EQ(s1[0].arrival_step, 1);
  EXPECT_TRUE(t->ArrivalsAt(2).empty());
  EXPECT_FALSE(t->exhausted());
  EXPECT_EQ(t->ArrivalsAt(3).size(), 1u);
  EXPECT_TRUE(t->exhausted());
}

TEST(MooncakeTraceTest, LineOfNamesTheFileLine) {
  absl::StatusOr<MooncakeTrace> t =
      MooncakeTrace::Parse(kTrace, {.step_ms = 30});
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->line_of(0), 1);
  EXPECT_EQ(t->line_of(2), 4);  // After the blank line 3.
}

TEST(MooncakeTraceTest, MaxRequestsKeepsTheFirstOnes) {
  absl::StatusOr<MooncakeTrace> t =
      MooncakeTrace::Parse(kTrace, {.step_ms = 30, .max_requests = 2});
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->num_requests(), 2);
  EXPECT_EQ(t->ArrivalsAt(100).size(), 2u);
  EXPECT_TRUE(t->exhausted());
}

TEST(MooncakeTraceTest, MalformedLinesNameTheirLine) {
  const struct {
    std::string text;
    std::string message;
  } cases[] = {
      {"{\"timestamp\": 0, \"input_length\": 5, \"output_length\": 1}\nnot "
       "json\n",
       "line 2 is not a JSON object"},
      {"[1, 2]\n", "line 1 is not a JSON object"},
      // Each field error names the field and what is wrong with it.
      {"{\"timestamp\": 0, \"output_length\": 1}\n",
       "line 1: input_length is missing"},
      {"{\"input_length\": 3, \"output_length\": 1}\n",
       "line 1: timestamp is missing"},
      {"{\"timestamp\": 0, \"input_length\": 0, \"output_length\": 1}\n",
       "line 1: input_length is 0, not an integer in [1, 2147483647]"},
      {"{\"timestamp\": -1, \"input_length\": 3, \"output_length\": 1}\n",
       "line 1: timestamp is -1, not an integer in [0, "},
      {"{\"timestamp\": 0, \"input_length\": 2.5, \"output_length\": 1}\n",
       "line 1: input_length is 2.5, not an integer"},
      {"{\"timestamp\": 0, \"input_length\": 3, \"output_length\": \"4\"}\n",
       "line 1: output_length is \"4\", not an integer"},
      {"{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 1, "
       "\"hash_ids\": [5, 6, 7]}\n",
       "line 1: 3 hash_ids name 1536 tokens (512 each), more than "
       "input_length 600 (at most 2 ids)"},
      {"\n  \n", "the trace has no requests (2 lines)"},
      {"", "the trace has no requests (0 lines)"},
      {"{\"timestamp\": 0, \"input_length\": 3, \"output_length\": 1, "
       "\"hash_ids\": 4}\n",
       "line 1: hash_ids is not an array"},
      {"{\"timestamp\": 9, \"input_length\": 3, \"output_length\": 1}\n"
       "{\"timestamp\": 8, \"input_length\": 3, \"output_length\": 1}\n",
       "line 2: timestamp 8 is before the previous line's 9"},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(
        MooncakeTrace::Parse(c.text, {.step_ms = 30}),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.text;
  }
}

TEST(MooncakeTraceTest, BadOptionsAndMissingFiles) {
  EXPECT_THAT(
      MooncakeTrace::Parse(kTrace, {.step_ms = 0}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step_ms")));
  EXPECT_THAT(MooncakeTrace::Parse(kTrace, {.step_ms = 1, .max_requests = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_requests -1")));
  EXPECT_THAT(MooncakeTrace::Load({.path = "/nonexistent/trace.jsonl"}),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("/nonexistent/trace.jsonl\": No such file")));
  // A directory reads as an empty stream; it is named as what it is.
  EXPECT_THAT(MooncakeTrace::Load({.path = std::getenv("TEST_TMPDIR")}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is not a regular file (a directory)")));
}

TEST(MooncakeTraceTest, HashIdsBecomeSpansOf512Tokens) {
  absl::StatusOr<MooncakeTrace> t =
      MooncakeTrace::Parse(kTrace, {.step_ms = 30});
  ASSERT_THAT(t, IsOk());
  const std::vector<Request>& r = t->requests();
  // 6955 tokens, two ids: two full blocks, the rest the request's own.
  ASSERT_EQ(r[0].prompt_spans.size(), 2u);
  EXPECT_EQ(r[0].prompt_spans[0].key, SpanKey(TokenKeyTag::kTraceBlock, 46));
  EXPECT_EQ(r[0].prompt_spans[0].length, 512);
  EXPECT_EQ(r[0].prompt_spans[1].key, SpanKey(TokenKeyTag::kTraceBlock, 47));
  EXPECT_TRUE(r[1].prompt_spans.empty());
  ASSERT_EQ(r[2].prompt_spans.size(), 1u);
  EXPECT_EQ(r[2].prompt_spans[0].length, 512);
  EXPECT_TRUE(r[3].prompt_spans.empty());  // No hash_ids at all.
  // A partial last block is cut to what the prompt has left.
  absl::StatusOr<MooncakeTrace> cut = MooncakeTrace::Parse(
      R"({"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [5, 6]})",
      {});
  ASSERT_THAT(cut, IsOk());
  ASSERT_EQ(cut->requests()[0].prompt_spans.size(), 2u);
  EXPECT_EQ(cut->requests()[0].prompt_spans[1].length, 88);
}

TEST(MooncakeTraceTest, RejectsHashIdsThatAreNotIntegers) {
  EXPECT_THAT(
      MooncakeTrace::Parse(
          R"({"timestamp": 0, "input_length": 6, "output_length": 1, "hash_ids": [1, "x"]})",
          {}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("line 1: hash_ids holds \"x\"")));
  EXPECT_THAT(
      MooncakeTrace::Parse(
          R"({"timestamp": 0, "input_length": 6, "output_length": 1, "hash_ids": [-3]})",
          {}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-3")));
}

}  // namespace
}  // namespace pagedkv::kv_stress
