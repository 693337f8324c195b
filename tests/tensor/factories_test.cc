#include "tensor/factories.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The conformance SUMMARY of FORMAT.md section 9, computed independently of
// the library from the widened elements.
struct Summary {
  int64_t sum = 0;
  int64_t wsum = 0;
  std::string fnv1a64;
};

Summary Summarize(const Tensor& t) {
  Summary summary;
  uint64_t hash = 0xcbf29ce484222325u;
  const std::vector<float> values = ToFloatVector(t.view());
  for (size_t i = 0; i < values.size(); ++i) {
    const auto x = static_cast<int64_t>(values[i]);
    EXPECT_EQ(static_cast<float>(x), values[i]) << "not an integer at " << i;
    summary.sum += x;
    summary.wsum += static_cast<int64_t>(i % 1009 + 1) * x;
    unsigned char bytes[4];
    std::memcpy(bytes, &values[i], 4);  // Little-endian on this machine.
    for (unsigned char byte : bytes) {
      hash ^= byte;
      hash *= 0x100000001b3u;
    }
  }
  summary.fnv1a64 = absl::StrFormat("%016x", hash);
  return summary;
}

TEST(FactoriesTest, ZerosIsAllZero) {
  absl::StatusOr<Tensor> t = Zeros(DType::kBFloat16, Shape({3, 2}));
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->dtype(), DType::kBFloat16);
  EXPECT_EQ(t->shape(), Shape({3, 2}));
  EXPECT_THAT(ToFloatVector(t->view()), ElementsAre(0, 0, 0, 0, 0, 0));
}

TEST(FactoriesTest, FullRoundsTheValueToTheDType) {
  absl::StatusOr<Tensor> t = Full(DType::kFloat16, Shape({2, 2}), 10701.0);
  ASSERT_THAT(t, IsOk());
  EXPECT_THAT(ToFloatVector(t->view()), Each(10704.0f));
  absl::StatusOr<Tensor> f32 = Full(DType::kFloat32, Shape({3}), -0.5);
  ASSERT_THAT(f32, IsOk());
  EXPECT_THAT(ToFloatVector(f32->view()), ElementsAre(-0.5f, -0.5f, -0.5f));
}

TEST(FactoriesTest, FullRoundsADoubleOnlyOnce) {
  // 2049 is the float16 midpoint of 2048 and 2050; a hair above it must go up.
  // Through float the hair is lost and the tie goes to even, 2048.
  absl::StatusOr<Tensor> half =
      Full(DType::kFloat16, Shape({1}), 2049 + 0x1p-30);
  ASSERT_THAT(half, IsOk());
  EXPECT_THAT(ToFloatVector(half->view()), ElementsAre(2050.0f));
  // Likewise 257 between 256 and 258 in bfloat16.
  absl::StatusOr<Tensor> bf16 =
      Full(DType::kBFloat16, Shape({1}), 257 + 0x1p-30);
  ASSERT_THAT(bf16, IsOk());
  EXPECT_THAT(ToFloatVector(bf16->view()), ElementsAre(258.0f));
}

TEST(FactoriesTest, FromVectorStoresValuesInCOrder) {
  absl::StatusOr<Tensor> t =
      FromVector(DType::kFloat32, Shape({2, 3}), {1, 2, 3, 4, 5, 6});
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->data_as<float>()[4], 5.0f);
  EXPECT_THAT(ToFloatVector(t->view()), ElementsAre(1, 2, 3, 4, 5, 6));
  absl::StatusOr<Tensor> half =
      FromVector(DType::kFloat16, Shape({2}), {10701.0f, 0.5f});
  ASSERT_THAT(half, IsOk());
  EXPECT_THAT(ToFloatVector(half->view()), ElementsAre(10704.0f, 0.5f));
}

TEST(FactoriesTest, FromVectorRejectsTheWrongCount) {
  EXPECT_THAT(FromVector(DType::kFloat32, Shape({2, 3}), {1, 2, 3, 4, 5}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("5 values"), HasSubstr("(2, 3)"),
                             HasSubstr("6 elements"))));
}

// FORMAT.md section 7.2, and worked example 2 of section 9.
TEST(FactoriesTest, FillPatternMatchesTheFloat16WorkedExample) {
  absl::StatusOr<Tensor> key = FillPattern(DType::kFloat16, Shape({1, 2, 2, 3}),
                                           /*base=*/7);
  ASSERT_THAT(key, IsOk());
  EXPECT_EQ(key->dtype(), DType::kFloat16);
  EXPECT_THAT(ToFloatVector(key->view()),
              ElementsAre(700, 701, 702, 800, 801, 802, 10704, 10704, 10704,
                          10800, 10800, 10800));
  const Summary summary = Summarize(*key);
  EXPECT_EQ(summary.sum, 69018);
  EXPECT_EQ(summary.wsum, 629521);
  EXPECT_EQ(summary.fnv1a64, "38e8579315923b39");
}

TEST(FactoriesTest, FillPatternNegativeGivesTheValueTensor) {
  absl::StatusOr<Tensor> value = FillPattern(
      DType::kFloat16, Shape({1, 2, 2, 3}), 7, PatternSign::kNegative);
  ASSERT_THAT(value, IsOk());
  EXPECT_THAT(ToFloatVector(value->view()),
              ElementsAre(-700, -701, -702, -800, -801, -802, -10704, -10704,
                          -10704, -10800, -10800, -10800));
}

// FORMAT.md section 9, worked example 1.
TEST(FactoriesTest, FillPatternMatchesTheFloat32WorkedExample) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({1, 1, 2, 2}), 1);
  ASSERT_THAT(key, IsOk());
  EXPECT_THAT(ToFloatVector(key->view()), ElementsAre(100, 101, 200, 201));
  const Summary summary = Summarize(*key);
  EXPECT_EQ(summary.sum, 602);
  EXPECT_EQ(summary.wsum, 1706);
  EXPECT_EQ(summary.fnv1a64, "629e0aed02c309d6");
  absl::StatusOr<Tensor> value = FillPattern(
      DType::kFloat32, Shape({1, 1, 2, 2}), 1, PatternSign::kNegative);
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(Summarize(*value).sum, -602);
  EXPECT_EQ(Summarize(*value).wsum, -1706);
}

// FORMAT.md section 9, worked example 3 (uses every term of the formula).
TEST(FactoriesTest, FillPatternMatchesTheRank4UpdateExample) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({2, 2, 3, 4}), 1);
  ASSERT_THAT(key, IsOk());
  const Summary summary = Summarize(*key);
  EXPECT_EQ(summary.sum, 24249672);
  EXPECT_EQ(summary.wsum, 883569824);
  EXPECT_EQ(summary.fnv1a64, "3561e79caa629999");
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, key->view().ElementPtr({1, 1, 2, 3})),
            1000000 + 10000 + 300 + 3);
}

TEST(FactoriesTest, FillPatternNumbersAxesFromTheEnd) {
  // Rank 1: only d.
  absl::StatusOr<Tensor> rank1 = FillPattern(DType::kFloat32, Shape({3}), 5);
  ASSERT_THAT(rank1, IsOk());
  EXPECT_THAT(ToFloatVector(rank1->view()), ElementsAre(500, 501, 502));
  // Rank 2: t and d.
  absl::StatusOr<Tensor> rank2 = FillPattern(DType::kFloat32, Shape({2, 2}), 5);
  ASSERT_THAT(rank2, IsOk());
  EXPECT_THAT(ToFloatVector(rank2->view()), ElementsAre(500, 501, 600, 601));
  // Rank 0: every axis missing.
  absl::StatusOr<Tensor> scalar = FillPattern(DType::kFloat32, Shape(), 5);
  ASSERT_THAT(scalar, IsOk());
  EXPECT_THAT(ToFloatVector(scalar->view()), ElementsAre(500));
  // Rank 5: the axis before b adds nothing.
  absl::StatusOr<Tensor> rank5 =
      FillPattern(DType::kFloat32, Shape({2, 1, 1, 1, 2}), 5);
  ASSERT_THAT(rank5, IsOk());
  EXPECT_THAT(ToFloatVector(rank5->view()), ElementsAre(500, 501, 500, 501));
}

TEST(FactoriesTest, FillPatternRoundsLargeValuesInBFloat16) {
  // b = 1: 1000000 + 100 = 1000100 -> bfloat16 keeps 8 bits: 999424 or
  // 1003520 (spacing 4096 between 2^19 and 2^20); nearest is 999424.
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kBFloat16, Shape({2, 1, 1, 1}), 1);
  ASSERT_THAT(key, IsOk());
  EXPECT_THAT(ToFloatVector(key->view()), ElementsAre(100, 999424));
}

TEST(FactoriesTest, FillPatternNegativeZeroIsPositiveZero) {
  absl::StatusOr<Tensor> value =
      FillPattern(DType::kFloat32, Shape(), 0, PatternSign::kNegative);
  ASSERT_THAT(value, IsOk());
  EXPECT_FALSE(std::signbit(value->data_as<float>()[0]));
}

TEST(FactoriesTest, FillPatternRejectsValuesBeyondExactRange) {
  EXPECT_THAT(
      FillPattern(DType::kFloat32, Shape({2}), int64_t{1} << 60),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("beyond 2^53")));
  EXPECT_THAT(FillPattern(DType::kFloat32, Shape({2}), INT64_MAX),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("base 9223372036854775807")));
}

// The header example, compiled.
TEST(FactoriesTest, HeaderExampleWorks) {
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat16, Shape({1, 2, 2, 3}), /*base=*/7);
  absl::StatusOr<Tensor> value = FillPattern(
      DType::kFloat16, Shape({1, 2, 2, 3}), 7, PatternSign::kNegative);
  ASSERT_THAT(key, IsOk());
  ASSERT_THAT(value, IsOk());
  EXPECT_EQ(ToFloatVector(key->view())[6], 10704.0f);
  EXPECT_EQ(ToFloatVector(value->view())[6], -10704.0f);
}

}  // namespace
}  // namespace pagedkv
