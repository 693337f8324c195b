#include "tensor/shape.h"

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "base/check.h"

namespace pagedkv {
namespace {

std::string DimsToString(absl::Span<const int64_t> dims) {
  return absl::StrCat("(", absl::StrJoin(dims, ", "), ")");
}

// Returns an empty string when `dims` make a valid Shape, else the reason.
std::string ValidateDims(absl::Span<const int64_t> dims) {
  if (dims.size() > static_cast<size_t>(kMaxRank)) {
    return absl::StrFormat("rank %d exceeds the maximum rank %d", dims.size(),
                           kMaxRank);
  }
  int64_t num_elements = 1;
  bool overflowed = false;
  bool has_zero = false;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) {
      return absl::StrFormat("dim %d is %d; dims must be >= 0", i, dims[i]);
    }
    has_zero |= (dims[i] == 0);
    overflowed |= __builtin_mul_overflow(num_elements, dims[i], &num_elements);
  }
  // A zero dim makes the count 0 whatever the other dims multiply to.
  if (overflowed && !has_zero) {
    return absl::StrFormat("the element count of %s overflows int64",
                           DimsToString(dims));
  }
  return std::string();
}

}  // namespace

Shape::Shape(std::initializer_list<int64_t> dims) : dims_(dims) {
  const std::string error = ValidateDims(dims_);
  PKV_CHECK(error.empty(), "invalid Shape literal %s: %s", DimsToString(dims_),
            error);
}

absl::StatusOr<Shape> Shape::Create(absl::Span<const int64_t> dims) {
  const std::string error = ValidateDims(dims);
  if (!error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("invalid shape %s: %s", DimsToString(dims), error));
  }
  Shape shape;
  shape.dims_.assign(dims.begin(), dims.end());
  return shape;
}

int64_t Shape::dim(int i) const {
  PKV_CHECK(i >= 0 && i < rank(), "axis %d out of range for rank %d", i,
            rank());
  return dims_[i];
}

int64_t Shape::num_elements() const {
  // Unsigned, so that a product past int64 before a zero dim is defined; the
  // invariant makes the final product fit.
  uint64_t n = 1;
  for (int64_t d : dims_) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

Strides Shape::ContiguousStrides() const {
  Strides strides(dims_.size());
  // Unsigned for the same reason as num_elements(): with a zero dim, the
  // strides of the axes before it may pass int64 (they address nothing).
  uint64_t stride = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    strides[i] = static_cast<int64_t>(stride);
    stride *= static_cast<uint64_t>(dims_[i]);
  }
  return strides;
}

std::string Shape::ToString() const { return DimsToString(dims_); }

bool NextIndex(const Shape& shape, absl::Span<int64_t> index) {
  PKV_DCHECK(index.size() == static_cast<size_t>(shape.rank()),
             "index of rank %d for shape %s", index.size(), shape.ToString());
  for (int axis = shape.rank() - 1; axis >= 0; --axis) {
    if (++index[axis] < shape.dims()[axis]) return true;
    index[axis] = 0;
  }
  return false;
}

}  // namespace pagedkv
