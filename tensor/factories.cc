#include "tensor/factories.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

constexpr int64_t kMaxExactInDouble = int64_t{1} << 53;

// Returns the index along the axis `from_end` places before the end of
// `index` (1 = last axis), or 0 if the index has no such axis.
int64_t AxisFromEnd(absl::Span<const int64_t> index, size_t from_end) {
  return index.size() >= from_end ? index[index.size() - from_end] : 0;
}

// Computes the FORMAT.md 7.1 value at `index` into `x`. Returns false if an
// intermediate or the result leaves [-2^53, 2^53].
bool PatternValue(absl::Span<const int64_t> index, int64_t base, int64_t* x) {
  const int64_t d = AxisFromEnd(index, 1);
  const int64_t t = AxisFromEnd(index, 2);
  const int64_t h = AxisFromEnd(index, 3);
  const int64_t b = AxisFromEnd(index, 4);
  int64_t tag, b_term, h_term, t_term, sum;
  bool overflow = __builtin_add_overflow(base, t, &tag);
  overflow |= __builtin_mul_overflow(tag, int64_t{100}, &t_term);
  overflow |= __builtin_mul_overflow(b, int64_t{1000000}, &b_term);
  overflow |= __builtin_mul_overflow(h, int64_t{10000}, &h_term);
  overflow |= __builtin_add_overflow(b_term, h_term, &sum);
  overflow |= __builtin_add_overflow(sum, t_term, &sum);
  overflow |= __builtin_add_overflow(sum, d, &sum);
  if (overflow || sum > kMaxExactInDouble || sum < -kMaxExactInDouble) {
    return false;
  }
  *x = sum;
  return true;
}

}  // namespace

absl::StatusOr<Tensor> Zeros(DType dtype, Shape shape) {
  return Tensor::Create(dtype, std::move(shape));
}

absl::StatusOr<Tensor> Full(DType dtype, Shape shape, double value) {
  PKV_ASSIGN_OR_RETURN(Tensor tensor, Tensor::Create(dtype, std::move(shape)));
  const size_t element_bytes = SizeOf(dtype);
  std::byte element[4];
  StoreFromDouble(dtype, value, element);
  std::byte* data = tensor.data();
  for (size_t offset = 0; offset < tensor.num_bytes();
       offset += element_bytes) {
    std::memcpy(data + offset, element, element_bytes);
  }
  return tensor;
}

absl::StatusOr<Tensor> FromVector(DType dtype, Shape shape,
                                  absl::Span<const float> values) {
  if (static_cast<int64_t>(values.size()) != shape.num_elements()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "FromVector: %d values for shape %s, which has %d elements",
        values.size(), shape.ToString(), shape.num_elements()));
  }
  PKV_ASSIGN_OR_RETURN(Tensor tensor, Tensor::Create(dtype, std::move(shape)));
  const size_t element_bytes = SizeOf(dtype);
  std::byte* data = tensor.data();
  for (size_t i = 0; i < values.size(); ++i) {
    StoreFromFloat(dtype, values[i], data + i * element_bytes);
  }
  return tensor;
}

absl::StatusOr<Tensor> FillPattern(DType dtype, Shape shape, int64_t base,
                                   PatternSign sign) {
  PKV_ASSIGN_OR_RETURN(Tensor tensor, Tensor::Create(dtype, std::move(shape)));
  if (tensor.num_elements() == 0) return tensor;
  const size_t element_bytes = SizeOf(dtype);
  std::byte* element = tensor.data();
  Strides index(tensor.rank(), 0);
  do {
    int64_t x;
    if (!PatternValue(index, base, &x)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "FillPattern: base %d and shape %s give values beyond 2^53", base,
          tensor.shape().ToString()));
    }
    // Negated as an integer, so a zero stays +0. |x| <= 2^53, so the double
    // is exact and StoreFromDouble rounds once.
    if (sign == PatternSign::kNegative) x = -x;
    StoreFromDouble(dtype, static_cast<double>(x), element);
    element += element_bytes;
  } while (NextIndex(tensor.shape(), absl::MakeSpan(index)));
  return tensor;
}

}  // namespace pagedkv
