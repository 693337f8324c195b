// tensor/factories.h
//
// Factories for tensors with known contents: zeros, a constant, a list of
// values, and the conformance input pattern of conformance/FORMAT.md
// (sections 7.1 and 7.2), which tests, kv_replay and benchmarks use to make
// key and value tensors whose every element names its own position:
//
//   x[..., b, h, t, d] = b*1000000 + h*10000 + (base + t)*100 + d
//
// with axes numbered from the end (d last, t second-to-last, h third-to-last,
// b fourth-to-last; a missing axis counts 0, axes before b add nothing). Keys
// use PatternSign::kPositive, values PatternSign::kNegative (-x).
//
// All values are computed exactly and rounded once to the dtype (nearest,
// ties to even), e.g. 10701 is stored as 10704 in float16.
//
// Example:
//
//   absl::StatusOr<Tensor> key =
//       FillPattern(DType::kFloat16, Shape({1, 2, 2, 3}), /*base=*/7);
//   // C order: 700 701 702 800 801 802 10704 10704 10704 10800 10800 10800
//   absl::StatusOr<Tensor> value = FillPattern(
//       DType::kFloat16, Shape({1, 2, 2, 3}), 7, PatternSign::kNegative);
//
// All tensors come from DefaultMemoryResource() and are C-order contiguous.
//
// Thread safety: the functions share no state and may run concurrently.
#ifndef PAGEDKV_TENSOR_FACTORIES_H_
#define PAGEDKV_TENSOR_FACTORIES_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {

// Returns a zero-filled tensor. RESOURCE_EXHAUSTED if allocation fails.
absl::StatusOr<Tensor> Zeros(DType dtype, Shape shape);

// Returns a tensor whose every element is `value` rounded once to `dtype`.
// RESOURCE_EXHAUSTED if allocation fails.
absl::StatusOr<Tensor> Full(DType dtype, Shape shape, double value);

// Returns a tensor holding `values` in C order, each rounded to `dtype`.
// INVALID_ARGUMENT (with both counts) unless values.size() ==
// shape.num_elements(); RESOURCE_EXHAUSTED if allocation fails.
absl::StatusOr<Tensor> FromVector(DType dtype, Shape shape,
                                  absl::Span<const float> values);

// Whether FillPattern stores x (keys) or -x (values).
enum class PatternSign { kPositive, kNegative };

// Returns the conformance pattern tensor described at the top of this file.
// INVALID_ARGUMENT when some |x| exceeds 2^53 (it could not be computed
// exactly; FORMAT.md values are far below); RESOURCE_EXHAUSTED if allocation
// fails.
absl::StatusOr<Tensor> FillPattern(DType dtype, Shape shape, int64_t base,
                                   PatternSign sign = PatternSign::kPositive);

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_FACTORIES_H_
