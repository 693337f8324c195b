#include "cache/cache_position.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

TEST(CachePositionTest, DefaultIsAppend) {
  const CachePosition position;
  EXPECT_EQ(position.kind(), CachePosition::Kind::kNone);
  EXPECT_TRUE(position.is_append());
  EXPECT_EQ(position.rows(), 0);
  EXPECT_EQ(position.cols(), 0);
  EXPECT_THAT(position.values(), IsEmpty());
  EXPECT_EQ(position.ToString(), "none");
}

TEST(CachePositionTest, NoneIsTheDefault) {
  const CachePosition none = CachePosition::None();
  EXPECT_EQ(none.kind(), CachePosition::Kind::kNone);
  EXPECT_TRUE(none.is_append());
  EXPECT_EQ(none.rows(), 0);
  EXPECT_EQ(none.cols(), 0);
  EXPECT_THAT(none.values(), IsEmpty());
  EXPECT_EQ(none.ToString(), "none");
}

TEST(CachePositionTest, ScalarIsOneByOne) {
  const CachePosition scalar = CachePosition::Scalar(5);
  EXPECT_EQ(scalar.kind(), CachePosition::Kind::kScalar);
  EXPECT_FALSE(scalar.is_append());
  EXPECT_EQ(scalar.rows(), 1);
  EXPECT_EQ(scalar.cols(), 1);
  EXPECT_THAT(scalar.values(), ElementsAre(5));
  EXPECT_EQ(scalar.at(0, 0), 5);
  EXPECT_EQ(scalar.ToString(), "5");
}

TEST(CachePositionTest, ScalarHoldsAnyValueForUpdateToValidate) {
  // Validation against a cache happens in Update, not here.
  EXPECT_EQ(CachePosition::Scalar(-3).at(0, 0), -3);
  EXPECT_EQ(CachePosition::Scalar(-3).ToString(), "-3");
  EXPECT_EQ(CachePosition::Scalar(kInt64Max).ToString(), "9223372036854775807");
}

TEST(CachePositionTest, VectorIsOneRowOfPositions) {
  const CachePosition vector = CachePosition::Vector({3, 0, 3});
  EXPECT_EQ(vector.kind(), CachePosition::Kind::kVector);
  EXPECT_FALSE(vector.is_append());
  EXPECT_EQ(vector.rows(), 1);
  EXPECT_EQ(vector.cols(), 3);
  EXPECT_THAT(vector.values(), ElementsAre(3, 0, 3));
  EXPECT_EQ(vector.at(0, 0), 3);
  EXPECT_EQ(vector.at(0, 1), 0);
  EXPECT_EQ(vector.at(0, 2), 3);
  EXPECT_EQ(vector.ToString(), "[3, 0, 3]");
}

TEST(CachePositionTest, EmptyVectorIsOneByZero) {
  const CachePosition empty = CachePosition::Vector({});
  EXPECT_EQ(empty.kind(), CachePosition::Kind::kVector);
  EXPECT_FALSE(empty.is_append());  // Not append: an empty positional write.
  EXPECT_EQ(empty.rows(), 1);
  EXPECT_EQ(empty.cols(), 0);
  EXPECT_EQ(empty.ToString(), "[]");
}

TEST(CachePositionTest, MatrixIsRowMajor) {
  const CachePosition matrix = CachePosition::Matrix(2, 3, {0, 2, 4, 1, 3, 5});
  EXPECT_EQ(matrix.kind(), CachePosition::Kind::kMatrix);
  EXPECT_FALSE(matrix.is_append());
  EXPECT_EQ(matrix.rows(), 2);
  EXPECT_EQ(matrix.cols(), 3);
  EXPECT_THAT(matrix.values(), ElementsAre(0, 2, 4, 1, 3, 5));
  EXPECT_EQ(matrix.at(0, 0), 0);
  EXPECT_EQ(matrix.at(0, 2), 4);
  EXPECT_EQ(matrix.at(1, 0), 1);
  EXPECT_EQ(matrix.at(1, 2), 5);
  EXPECT_EQ(matrix.ToString(), "[[0, 2, 4], [1, 3, 5]]");
}

TEST(CachePositionTest, MatrixToStringMatchesTheHeaderExample) {
  EXPECT_EQ(CachePosition::Matrix(2, 2, {0, 2, 1, 3}).ToString(),
            "[[0, 2], [1, 3]]");
  EXPECT_EQ(CachePosition::Matrix(1, 1, {7}).ToString(), "[[7]]");
  EXPECT_EQ(CachePosition::Matrix(3, 1, {4, -1, 2}).ToString(),
            "[[4], [-1], [2]]");
}

TEST(CachePositionTest, MatrixMayHaveNoElements) {
  const CachePosition none_by_none = CachePosition::Matrix(0, 0, {});
  EXPECT_EQ(none_by_none.kind(), CachePosition::Kind::kMatrix);
  EXPECT_EQ(none_by_none.rows(), 0);
  EXPECT_EQ(none_by_none.cols(), 0);
  EXPECT_THAT(none_by_none.values(), IsEmpty());

  const CachePosition rows_of_nothing = CachePosition::Matrix(2, 0, {});
  EXPECT_EQ(rows_of_nothing.rows(), 2);
  EXPECT_EQ(rows_of_nothing.cols(), 0);

  const CachePosition no_rows = CachePosition::Matrix(0, 4, {});
  EXPECT_EQ(no_rows.rows(), 0);
  EXPECT_EQ(no_rows.cols(), 4);
  EXPECT_EQ(no_rows.ToString(), "[]");
}

TEST(CachePositionTest, ZeroColumnMatrixPrintsItsShapeNotItsRows) {
  // Any row count is consistent with zero values, so the string must not
  // grow with rows (it would print 2^63 "[]"s below). The header does not
  // fix the spelling; it names the row count.
  EXPECT_THAT(CachePosition::Matrix(2, 0, {}).ToString(), HasSubstr("2"));
  const CachePosition huge = CachePosition::Matrix(kInt64Max, 0, {});
  EXPECT_EQ(huge.rows(), kInt64Max);
  const std::string text = huge.ToString();
  EXPECT_THAT(text, HasSubstr("9223372036854775807"));
  EXPECT_LT(text.size(), size_t{64});
}

TEST(CachePositionTest, CopiesAreIndependentValues) {
  CachePosition a = CachePosition::Vector({1, 2});
  const CachePosition b = a;
  a = CachePosition::Scalar(9);
  EXPECT_EQ(b.kind(), CachePosition::Kind::kVector);
  EXPECT_THAT(b.values(), ElementsAre(1, 2));
  EXPECT_EQ(a.ToString(), "9");
}

using CachePositionDeathTest = ::testing::Test;

TEST_F(CachePositionDeathTest, MatrixWithTooFewOrTooManyValuesAborts) {
  EXPECT_DEATH(CachePosition::Matrix(2, 2, {1, 2, 3}),
               "CachePosition::Matrix\\(2, 2\\) given 3 values");
  EXPECT_DEATH(CachePosition::Matrix(2, 2, {1, 2, 3, 4, 5}),
               "CachePosition::Matrix\\(2, 2\\) given 5 values");
  EXPECT_DEATH(CachePosition::Matrix(0, 3, {1, 2, 3}),
               "Matrix\\(0, 3\\) given 3 values");
  EXPECT_DEATH(CachePosition::Matrix(3, 0, {1}),
               "Matrix\\(3, 0\\) given 1 values");
}

TEST_F(CachePositionDeathTest, MatrixWithNegativeDimensionsAborts) {
  // (-1) * (-2) == 2 values: the product alone would accept it.
  EXPECT_DEATH(CachePosition::Matrix(-1, -2, {1, 2}),
               "Matrix\\(-1, -2\\) given 2 values");
  EXPECT_DEATH(CachePosition::Matrix(-1, 0, {}), "Matrix\\(-1, 0\\)");
  EXPECT_DEATH(CachePosition::Matrix(0, -1, {}), "Matrix\\(0, -1\\)");
}

TEST_F(CachePositionDeathTest, MatrixWhoseProductOverflowsAborts) {
  // 2^62 * 4 wraps to 0 in int64: a naive rows * cols check would take it.
  EXPECT_DEATH(CachePosition::Matrix(int64_t{1} << 62, 4, {}),
               "given 0 values");
  EXPECT_DEATH(CachePosition::Matrix(kInt64Max, 2, {}), "given 0 values");
}

}  // namespace
}  // namespace pagedkv
