// Tests of tests/testing/tensor_matchers.h: they must fail when they should,
// or every tensor test that uses them proves nothing.
#include "tests/testing/tensor_matchers.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::TensorsAllClose;
using ::pagedkv::testing::TensorsEqual;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Message(const ::testing::AssertionResult& result) {
  return result.message();
}

TEST(TensorMatchersTest, EqualTensorsAreEqualWhateverTheirStrides) {
  float row_major[6] = {0, 1, 2, 3, 4, 5};
  float column_major[6] = {0, 3, 1, 4, 2, 5};
  ConstTensorView a(row_major, DType::kFloat32, Shape({2, 3}));
  ConstTensorView b(column_major, DType::kFloat32, Shape({2, 3}),
                    Strides{1, 2});
  EXPECT_TRUE(TensorsEqual(a, b));
}

TEST(TensorMatchersTest, FirstDifferenceIsReportedWithItsIndex) {
  float a_data[6] = {0, 1, 2, 3, 4, 5};
  float b_data[6] = {0, 1, 2, 3, 9, 8};
  const ::testing::AssertionResult result =
      TensorsEqual(ConstTensorView(a_data, DType::kFloat32, Shape({2, 3})),
                   ConstTensorView(b_data, DType::kFloat32, Shape({2, 3})));
  EXPECT_FALSE(result);
  EXPECT_THAT(Message(result),
              AllOf(HasSubstr("2 of 6 elements differ"), HasSubstr("[1, 1]"),
                    HasSubstr("4 "), HasSubstr("9 ")));
}

TEST(TensorMatchersTest, DTypeAndShapeMismatchesFail) {
  uint16_t halves[2] = {};
  float floats[2] = {};
  const ::testing::AssertionResult dtype_result =
      TensorsEqual(ConstTensorView(halves, DType::kFloat16, Shape({2})),
                   ConstTensorView(floats, DType::kFloat32, Shape({2})));
  EXPECT_FALSE(dtype_result);
  EXPECT_THAT(Message(dtype_result), HasSubstr("float16 vs float32"));
  const ::testing::AssertionResult shape_result =
      TensorsEqual(ConstTensorView(floats, DType::kFloat32, Shape({2})),
                   ConstTensorView(floats, DType::kFloat32, Shape({1, 2})));
  EXPECT_FALSE(shape_result);
  EXPECT_THAT(Message(shape_result), HasSubstr("(2) vs (1, 2)"));
}

TEST(TensorMatchersTest, NaNsInTheSamePlaceAreEqual) {
  float a[2] = {NAN, 1};
  float b[2] = {NAN, 1};
  float c[2] = {1, NAN};
  EXPECT_TRUE(TensorsEqual(ConstTensorView(a, DType::kFloat32, Shape({2})),
                           ConstTensorView(b, DType::kFloat32, Shape({2}))));
  EXPECT_FALSE(TensorsEqual(ConstTensorView(a, DType::kFloat32, Shape({2})),
                            ConstTensorView(c, DType::kFloat32, Shape({2}))));
}

TEST(TensorMatchersTest, AllCloseUsesAbsoluteAndRelativeTolerance) {
  float reference[3] = {1000, 1, 0};
  float near[3] = {1000.9f, 1.05f, 0.01f};
  ConstTensorView ref(reference, DType::kFloat32, Shape({3}));
  ConstTensorView got(near, DType::kFloat32, Shape({3}));
  EXPECT_TRUE(TensorsAllClose(got, ref, /*rtol=*/1e-3, /*atol=*/0.06));
  EXPECT_FALSE(TensorsAllClose(got, ref, /*rtol=*/1e-3, /*atol=*/0.001));
  EXPECT_FALSE(TensorsAllClose(got, ref, /*rtol=*/0, /*atol=*/0.06));
}

TEST(TensorMatchersTest, AllCloseComparesAcrossDTypes) {
  uint16_t half[2] = {FloatToHalf(10701.0f), FloatToHalf(-3.0f)};
  float exact[2] = {10701.0f, -3.0f};
  ConstTensorView h(half, DType::kFloat16, Shape({2}));
  ConstTensorView f(exact, DType::kFloat32, Shape({2}));
  EXPECT_TRUE(TensorsAllClose(h, f, /*rtol=*/1e-3, /*atol=*/0));
  EXPECT_FALSE(TensorsAllClose(h, f, /*rtol=*/1e-5, /*atol=*/0));
}

TEST(TensorMatchersTest, AllCloseMatchesInfinitiesOnlyExactly) {
  float inf[1] = {INFINITY};
  float big[1] = {3e38f};
  float neg_inf[1] = {-INFINITY};
  ConstTensorView a(inf, DType::kFloat32, Shape({1}));
  EXPECT_TRUE(TensorsAllClose(a, a, 0, 0));
  EXPECT_FALSE(TensorsAllClose(
      a, ConstTensorView(big, DType::kFloat32, Shape({1})), 1, 1));
  EXPECT_FALSE(TensorsAllClose(
      a, ConstTensorView(neg_inf, DType::kFloat32, Shape({1})), 1, 1));
}

}  // namespace
}  // namespace pagedkv
