// tensor/shape.h
//
// Shape is the list of a tensor's dimensions: rank 0 to kMaxRank (8), every
// dimension >= 0, the last one varying fastest in memory (C order). Strides,
// also defined here, give the distance between neighbouring elements along
// each axis, counted in ELEMENTS (not bytes), so one Strides value serves
// every dtype. Shape and Strides are plain values held inline (no heap).
//
// Shape has two ways in, one per error channel (STYLE.md section 5): the
// initializer-list constructor is for literals in code, where a negative
// dimension is a bug and aborts; Shape::Create is for shapes that come from
// input, and returns INVALID_ARGUMENT instead.
//
// Example:
//
//   Shape kv({2, 8, 16, 64});                  // batch, heads, tokens, dim
//   kv.num_elements();                          // 16384
//   kv.ContiguousStrides();                     // {8192, 1024, 64, 1}
//   kv.ToString();                              // "(2, 8, 16, 64)"
//   absl::StatusOr<Shape> s = Shape::Create(dims_from_user);
//   if (!s.ok()) return s.status();
//
// Thread safety: a Shape is a value; const methods are safe to call
// concurrently.
#ifndef PAGEDKV_TENSOR_SHAPE_H_
#define PAGEDKV_TENSOR_SHAPE_H_

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace pagedkv {

// The largest rank a Shape can have.
inline constexpr int kMaxRank = 8;

// Per-axis distance between neighbouring elements, in elements (not bytes).
// May be zero or negative in a view (broadcast, reversed).
using Strides = absl::InlinedVector<int64_t, kMaxRank>;

class Shape {
 public:
  // Rank 0: a scalar, one element.
  Shape() = default;

  // Builds a shape from a literal such as {2, 8, 16, 64}.
  // REQUIRES: dims.size() <= kMaxRank, every dim >= 0, and the product of the
  // dims fits in int64_t. Violations abort (use Create for input).
  Shape(std::initializer_list<int64_t> dims);

  // Returns the shape with `dims`, or INVALID_ARGUMENT (with the offending
  // numbers in the message) when the rank exceeds kMaxRank, a dim is
  // negative, or the element count overflows int64_t.
  static absl::StatusOr<Shape> Create(absl::Span<const int64_t> dims);

  int rank() const { return static_cast<int>(dims_.size()); }

  // Returns the size of axis `i`.
  // REQUIRES: 0 <= i < rank().
  int64_t dim(int i) const;
  int64_t operator[](int i) const { return dim(i); }

  absl::Span<const int64_t> dims() const { return dims_; }

  // Returns the product of the dims: 1 for a scalar, 0 if any dim is 0.
  int64_t num_elements() const;

  // Returns the row-major strides (in elements) of a densely packed tensor of
  // this shape: the last axis has stride 1, axis i has the product of the
  // dims after it.
  Strides ContiguousStrides() const;

  // Returns "(2, 8, 1, 64)"; a scalar gives "()" and a rank-1 shape "(5)".
  std::string ToString() const;

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.dims_ == b.dims_;
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const Shape& shape) {
    return os << shape.ToString();
  }

 private:
  // Invariants: dims_.size() <= kMaxRank; every dim >= 0; the product of the
  // dims fits in int64_t.
  absl::InlinedVector<int64_t, kMaxRank> dims_;
};

// Advances `index` to the next multi-index of `shape` in C order (last axis
// fastest) and returns true, or returns false (leaving all zeros in `index`)
// when `index` was the last one. Visit every element of a non-empty shape:
//
//   Strides index(shape.rank(), 0);
//   do { Visit(index); } while (NextIndex(shape, absl::MakeSpan(index)));
//
// REQUIRES: index.size() == shape.rank() and 0 <= index[i] < shape.dim(i).
bool NextIndex(const Shape& shape, absl::Span<int64_t> index);

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_SHAPE_H_
