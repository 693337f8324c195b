#include "tensor/shape.h"

#include <cstdint>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(ShapeTest, DefaultIsAScalarWithOneElement) {
  const Shape scalar;
  EXPECT_EQ(scalar.rank(), 0);
  EXPECT_EQ(scalar.num_elements(), 1);
  EXPECT_THAT(scalar.dims(), IsEmpty());
  EXPECT_THAT(scalar.ContiguousStrides(), IsEmpty());
  EXPECT_EQ(scalar.ToString(), "()");
}

TEST(ShapeTest, LiteralExposesItsDims) {
  const Shape shape({2, 8, 1, 64});
  EXPECT_EQ(shape.rank(), 4);
  EXPECT_EQ(shape.dim(0), 2);
  EXPECT_EQ(shape.dim(3), 64);
  EXPECT_EQ(shape[1], 8);
  EXPECT_THAT(shape.dims(), ElementsAre(2, 8, 1, 64));
  EXPECT_EQ(shape.num_elements(), 1024);
  EXPECT_EQ(shape.ToString(), "(2, 8, 1, 64)");
  EXPECT_EQ(Shape({5}).ToString(), "(5)");
}

TEST(ShapeTest, ContiguousStridesAreRowMajorInElements) {
  EXPECT_THAT(Shape({2, 8, 1, 64}).ContiguousStrides(),
              ElementsAre(512, 64, 64, 1));
  EXPECT_THAT(Shape({7}).ContiguousStrides(), ElementsAre(1));
  EXPECT_THAT(Shape({3, 0, 2}).ContiguousStrides(), ElementsAre(0, 2, 1));
}

TEST(ShapeTest, AZeroDimMeansNoElements) {
  EXPECT_EQ(Shape({3, 0, 2}).num_elements(), 0);
  EXPECT_EQ(Shape({0}).num_elements(), 0);
}

TEST(ShapeTest, MaxRankIsAccepted) {
  const Shape shape({1, 2, 1, 2, 1, 2, 1, 2});
  EXPECT_EQ(shape.rank(), kMaxRank);
  EXPECT_EQ(shape.num_elements(), 16);
}

TEST(ShapeTest, CreateAcceptsValidDims) {
  const std::vector<int64_t> dims = {4, 0, 3};
  absl::StatusOr<Shape> shape = Shape::Create(dims);
  ASSERT_THAT(shape, IsOk());
  EXPECT_EQ(*shape, Shape({4, 0, 3}));
  EXPECT_THAT(Shape::Create({}), IsOk());
}

TEST(ShapeTest, CreateRejectsTooHighRank) {
  const std::vector<int64_t> dims(9, 1);
  EXPECT_THAT(Shape::Create(dims),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("rank 9"), HasSubstr("8"))));
}

TEST(ShapeTest, CreateRejectsNegativeDims) {
  EXPECT_THAT(
      Shape::Create({2, -3, 4}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("dim 1 is -3"), HasSubstr("(2, -3, 4)"))));
}

TEST(ShapeTest, CreateRejectsElementCountOverflow) {
  const int64_t big = int64_t{1} << 32;
  EXPECT_THAT(
      Shape::Create({big, big}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows")));
  // A zero dim keeps the count at zero however large the others are.
  absl::StatusOr<Shape> empty = Shape::Create({big, big, 0});
  ASSERT_THAT(empty, IsOk());
  EXPECT_EQ(empty->num_elements(), 0);
}

TEST(ShapeTest, EqualityComparesEveryDim) {
  EXPECT_EQ(Shape({2, 3}), Shape({2, 3}));
  EXPECT_NE(Shape({2, 3}), Shape({3, 2}));
  EXPECT_NE(Shape({2, 3}), Shape({2, 3, 1}));
  EXPECT_NE(Shape(), Shape({1}));
}

TEST(ShapeTest, StreamsItsToString) {
  std::ostringstream os;
  os << Shape({1, 2});
  EXPECT_EQ(os.str(), "(1, 2)");
}

TEST(ShapeTest, NextIndexVisitsEveryIndexInCOrder) {
  const Shape shape({2, 1, 3});
  Strides index(3, 0);
  std::vector<std::vector<int64_t>> visited;
  do {
    visited.emplace_back(index.begin(), index.end());
  } while (NextIndex(shape, absl::MakeSpan(index)));
  EXPECT_THAT(visited, ElementsAre(ElementsAre(0, 0, 0), ElementsAre(0, 0, 1),
                                   ElementsAre(0, 0, 2), ElementsAre(1, 0, 0),
                                   ElementsAre(1, 0, 1), ElementsAre(1, 0, 2)));
  EXPECT_THAT(index, ElementsAre(0, 0, 0));
}

TEST(ShapeTest, NextIndexOfAScalarStopsAtOnce) {
  EXPECT_FALSE(NextIndex(Shape(), absl::Span<int64_t>()));
}

// The header example, compiled.
TEST(ShapeTest, HeaderExampleWorks) {
  Shape kv({2, 8, 16, 64});
  EXPECT_EQ(kv.num_elements(), 16384);
  EXPECT_THAT(kv.ContiguousStrides(), ElementsAre(8192, 1024, 64, 1));
  EXPECT_EQ(kv.ToString(), "(2, 8, 16, 64)");
}

TEST(ShapeDeathTest, NegativeDimLiteralAborts) {
  EXPECT_DEATH(Shape({2, -1}), "dims must be >= 0");
}

TEST(ShapeDeathTest, TooHighRankLiteralAborts) {
  EXPECT_DEATH(Shape({1, 1, 1, 1, 1, 1, 1, 1, 1}),
               "rank 9 exceeds the maximum rank 8");
}

TEST(ShapeDeathTest, OverflowingLiteralAborts) {
  EXPECT_DEATH(Shape({int64_t{1} << 40, int64_t{1} << 40}), "overflows");
}

TEST(ShapeDeathTest, AxisOutOfRangeAborts) {
  const Shape shape({2, 3});
  EXPECT_DEATH(shape.dim(2), "axis 2 out of range for rank 2");
  EXPECT_DEATH(shape[-1], "axis -1 out of range");
}

}  // namespace
}  // namespace pagedkv
