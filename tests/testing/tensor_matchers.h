// tests/testing/tensor_matchers.h
//
// GoogleTest assertions that compare two tensors element by element, through
// views, so they accept Tensors (via view()), strided views and any dtypes:
//
//   EXPECT_TRUE(TensorsEqual(actual.view(), expected.view()));
//   EXPECT_TRUE(TensorsAllClose(half_result.view(), f32_reference.view(),
//                               /*rtol=*/1e-3, /*atol=*/1e-5));
//
// On failure the message names the first differing multi-index with both
// values, and how many elements differ in all.
//
// Thread safety: stateless; safe to call concurrently on views nobody writes.
#ifndef PAGEDKV_TESTS_TESTING_TENSOR_MATCHERS_H_
#define PAGEDKV_TESTS_TESTING_TENSOR_MATCHERS_H_

#include "gtest/gtest.h"
#include "tensor/tensor.h"

namespace pagedkv::testing {

// Succeeds when `a` and `b` have the same dtype, the same shape and equal
// elements (compared widened to float: +0 equals -0, and a NaN equals a NaN
// in the same place). Strides may differ.
::testing::AssertionResult TensorsEqual(ConstTensorView a, ConstTensorView b);

// Succeeds when `a` and `b` have the same shape and every element pair
// satisfies |a - b| <= atol + rtol * |b| (numpy.allclose, with NaN matching
// NaN and an infinity matching only itself). The dtypes may differ, so a
// float16 result can be checked against a float32 reference.
::testing::AssertionResult TensorsAllClose(ConstTensorView a, ConstTensorView b,
                                           double rtol, double atol);

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_TESTING_TENSOR_MATCHERS_H_
