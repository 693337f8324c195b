#include "tools/kv_replay/summary.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv::kv_replay {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

uint64_t HashOf(const std::string& text) {
  return Fnv1a64(absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// The bare-algorithm test vectors of FORMAT.md section 9.
TEST(SummaryTest, Fnv1a64MatchesTestVectors) {
  EXPECT_EQ(FormatFnv1a64(HashOf("")), "cbf29ce484222325");
  EXPECT_EQ(FormatFnv1a64(HashOf("a")), "af63dc4c8601ec8c");
  EXPECT_EQ(FormatFnv1a64(HashOf("foobar")), "85944171f73967e8");
}

TEST(SummaryTest, FormatsHashAsSixteenLowerCaseDigits) {
  EXPECT_EQ(FormatFnv1a64(0xABCULL), "0000000000000abc");
}

// FORMAT.md section 9, worked example 1.
TEST(SummaryTest, Float32WorkedExample) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({1, 1, 2, 2}), 1);
  ASSERT_TRUE(key.ok()) << key.status();
  const TensorSummary k = Summarize(key->view());
  EXPECT_THAT(k.shape, ElementsAre(1, 1, 2, 2));
  EXPECT_EQ(k.dtype, "float32");
  EXPECT_EQ(k.sum, 602);
  EXPECT_EQ(k.wsum, 1706);
  EXPECT_EQ(FormatFnv1a64(k.fnv1a64), "629e0aed02c309d6");
  EXPECT_TRUE(k.all_integral);

  absl::StatusOr<Tensor> value = FillPattern(
      DType::kFloat32, Shape({1, 1, 2, 2}), 1, PatternSign::kNegative);
  ASSERT_TRUE(value.ok()) << value.status();
  const TensorSummary v = Summarize(value->view());
  EXPECT_EQ(v.sum, -602);
  EXPECT_EQ(v.wsum, -1706);
}

// FORMAT.md section 9, worked example 2: float16 rounds 10700 to 10704, and
// the hash is over the values widened to float32.
TEST(SummaryTest, Float16WorkedExample) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat16, Shape({1, 2, 2, 3}), 7);
  ASSERT_TRUE(key.ok()) << key.status();
  const TensorSummary k = Summarize(key->view());
  EXPECT_EQ(k.dtype, "float16");
  EXPECT_EQ(k.sum, 69018);
  EXPECT_EQ(k.wsum, 629521);
  EXPECT_EQ(FormatFnv1a64(k.fnv1a64), "38e8579315923b39");
}

// FORMAT.md section 9, worked example 3 (op 0 of dyn_append_basic.json).
TEST(SummaryTest, RankFourUpdateWorkedExample) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({2, 2, 3, 4}), 1);
  ASSERT_TRUE(key.ok()) << key.status();
  const TensorSummary k = Summarize(key->view());
  EXPECT_EQ(k.sum, 24249672);
  EXPECT_EQ(k.wsum, 883569824);
  EXPECT_EQ(FormatFnv1a64(k.fnv1a64), "3561e79caa629999");
  EXPECT_THAT(k.probe, ElementsAre(ElementsAre(100, 200, 300),
                                   ElementsAre(1000100, 1000200, 1000300)));
}

TEST(SummaryTest, EmptyTensorHasOffsetBasisAndEmptyProbe) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({2, 0, 3, 4}), 1);
  ASSERT_TRUE(key.ok()) << key.status();
  const TensorSummary k = Summarize(key->view());
  EXPECT_EQ(k.sum, 0);
  EXPECT_EQ(k.wsum, 0);
  EXPECT_EQ(FormatFnv1a64(k.fnv1a64), "cbf29ce484222325");
  EXPECT_THAT(k.probe, IsEmpty());
}

TEST(SummaryTest, NonIntegralElementsAreFlagged) {
  absl::StatusOr<Tensor> t = Full(DType::kFloat32, Shape({1, 1, 1, 2}), 0.5);
  ASSERT_TRUE(t.ok()) << t.status();
  const TensorSummary s = Summarize(t->view());
  EXPECT_FALSE(s.all_integral);
  EXPECT_EQ(SummaryToJson(s)["non_integral"], true);
}

TEST(SummaryTest, JsonHasTheFormatFields) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({1, 1, 2, 2}), 1);
  ASSERT_TRUE(key.ok()) << key.status();
  const nlohmann::json j = SummaryToJson(Summarize(key->view()));
  const nlohmann::json want = nlohmann::json::parse(R"({
      "shape": [1, 1, 2, 2], "dtype": "float32", "sum": 602, "wsum": 1706,
      "fnv1a64": "629e0aed02c309d6", "probe": [[100, 200]]})");
  EXPECT_EQ(j, want) << j.dump();
}

}  // namespace
}  // namespace pagedkv::kv_replay
