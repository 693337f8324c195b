// tensor/tensor_copy.h
//
// Copy moves elements between two views of the same shape, whatever their
// strides, converting the dtype when the two differ. It is the one routine
// that moves KV bytes: gathering paged blocks into the contiguous tensors of
// the lucid API, copy-on-write of a shared block, and the tests' reference
// layouts all go through it.
//
// Cost: axes of size 1 are dropped and neighbouring axes that are contiguous
// with each other in BOTH views are merged, so a block-strided KV gather
// becomes one memcpy per (head, block) run, and two contiguous views one
// memcpy. With equal dtypes and an innermost stride of 1 on both sides, each
// innermost run is a memcpy (the hot path). Otherwise each run is an
// element loop: a plain move of 2 or 4 bytes for equal dtypes, or a
// conversion through float (exact widening, round-to-nearest-even narrowing,
// see tensor/dtype.h) for different ones.
//
// Example (gather one block's tokens into a (heads, seq, head_dim) tensor):
//
//   // block: a (heads, block_tokens, head_dim) view into the paged arena.
//   // out:   a contiguous (heads, seq, head_dim) Tensor.
//   TensorView out_view = out.view();
//   TensorView window(out_view.ElementPtr({0, first_token, 0}), out.dtype(),
//                     block.shape(), out_view.strides());
//   PKV_RETURN_IF_ERROR(Copy(block, window));
//
// Thread safety: Copy touches only the two views' elements; concurrent copies
// are safe when no destination element is also accessed by another thread.
#ifndef PAGEDKV_TENSOR_TENSOR_COPY_H_
#define PAGEDKV_TENSOR_TENSOR_COPY_H_

#include "absl/status/status.h"
#include "tensor/tensor.h"

namespace pagedkv {

// Copies every element of `src` into the element of `dst` at the same
// multi-index, converting to dst.dtype(). Returns OK, or INVALID_ARGUMENT
// (naming both shapes) when the shapes differ; then `dst` is unchanged.
// REQUIRES: the elements of `src` and `dst` do not overlap in memory, and no
// two elements of `dst` share an address (no zero strides on axes with more
// than one element); otherwise the result is unspecified.
absl::Status Copy(ConstTensorView src, TensorView dst);

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_TENSOR_COPY_H_
