#include "tests/testing/tensor_matchers.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv::testing {
namespace {

// Compares every element pair with `same`; on a difference, describes the
// first one and counts them all.
template <typename SameFn>
::testing::AssertionResult CompareElements(ConstTensorView a, ConstTensorView b,
                                           SameFn same) {
  if (a.shape() != b.shape()) {
    return ::testing::AssertionFailure()
           << "shapes differ: " << a.shape() << " vs " << b.shape();
  }
  if (a.num_elements() == 0) return ::testing::AssertionSuccess();
  Strides index(a.rank(), 0);
  Strides first_index;
  float first_a = 0.0f;
  float first_b = 0.0f;
  int64_t num_different = 0;
  do {
    const float x = LoadAsFloat(a.dtype(), a.ElementPtr(index));
    const float y = LoadAsFloat(b.dtype(), b.ElementPtr(index));
    if (!same(x, y)) {
      if (num_different++ == 0) {
        first_index = index;
        first_a = x;
        first_b = y;
      }
    }
  } while (NextIndex(a.shape(), absl::MakeSpan(index)));
  if (num_different == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << absl::StrFormat(
             "%d of %d elements differ; the first at [%s]: %.9g (%s) vs "
             "%.9g (%s)",
             num_different, a.num_elements(), absl::StrJoin(first_index, ", "),
             first_a, DTypeName(a.dtype()), first_b, DTypeName(b.dtype()));
}

}  // namespace

::testing::AssertionResult TensorsEqual(ConstTensorView a, ConstTensorView b) {
  if (a.dtype() != b.dtype()) {
    return ::testing::AssertionFailure()
           << "dtypes differ: " << a.dtype() << " vs " << b.dtype();
  }
  return CompareElements(a, b, [](float x, float y) {
    return x == y || (std::isnan(x) && std::isnan(y));
  });
}

::testing::AssertionResult TensorsAllClose(ConstTensorView a, ConstTensorView b,
                                           double rtol, double atol) {
  return CompareElements(a, b, [rtol, atol](float x, float y) {
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
    if (std::isinf(x) || std::isinf(y)) return x == y;
    const double dx = x;
    const double dy = y;
    return std::fabs(dx - dy) <= atol + rtol * std::fabs(dy);
  });
}

}  // namespace pagedkv::testing
