// tensor/tensor.h
//
// Three ways to hold tensor bytes:
//
//  - Tensor owns them. It is move-only, and its storage comes from a
//    MemoryResource, is aligned to kTensorAlignment (64) bytes and is densely
//    packed in C order (last axis fastest).
//  - TensorView borrows writable bytes; ConstTensorView borrows read-only
//    bytes. Views are like absl::Span: small values that are cheap to copy,
//    with a data pointer, a DType, a Shape and Strides (in elements, may be
//    any value), so one view can describe a transposed, sliced or block-strided
//    window (e.g. one layer of the block-major KV arena). A TensorView
//    converts implicitly to a ConstTensorView.
//
// A view does not keep its bytes alive: it is valid until its owner is
// destroyed or moved from (for a Tensor: its destructor, move assignment, or
// being moved out of). Views are shallow-const, as Span is: a const TensorView
// still writes through data().
//
// Example:
//
//   absl::StatusOr<Tensor> t = Tensor::Create(DType::kFloat32, Shape({2, 3}));
//   if (!t.ok()) return t.status();
//   t->data_as<float>()[4] = 7.0f;                      // element (1, 1)
//   // The transpose, as a (3, 2) view of the same bytes:
//   ConstTensorView transposed(t->data(), DType::kFloat32, Shape({3, 2}),
//                              Strides{1, 3});
//   float x = LoadAsFloat(DType::kFloat32, transposed.ElementPtr({1, 1}));
//   std::vector<float> values = ToFloatVector(transposed);  // C order
//
// Thread safety: Tensor and the views are values without internal state;
// const methods are safe concurrently. Reading and writing the same bytes
// through different views at once is a data race, as with raw pointers.
#ifndef PAGEDKV_TENSOR_TENSOR_H_
#define PAGEDKV_TENSOR_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "tensor/dtype.h"
#include "tensor/memory_resource.h"
#include "tensor/mimalloc_resource.h"
#include "tensor/shape.h"

namespace pagedkv {

// Alignment, in bytes, of every Tensor's storage: one cache line, and enough
// for any SIMD load a CPU kernel would use.
inline constexpr size_t kTensorAlignment = 64;

// A borrowed, read-only, strided window onto elements of one dtype.
class ConstTensorView {
 public:
  // An empty view: no data, float32, shape (0).
  ConstTensorView();

  // A densely packed (C order) view of `shape` at `data`.
  // REQUIRES: data != nullptr unless shape.num_elements() == 0.
  ConstTensorView(const void* data, DType dtype, Shape shape);

  // A view with explicit `strides`, in elements (not bytes).
  // REQUIRES: strides.size() == shape.rank(); data != nullptr unless
  // shape.num_elements() == 0.
  ConstTensorView(const void* data, DType dtype, Shape shape, Strides strides);

  const std::byte* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int rank() const { return shape_.rank(); }
  // REQUIRES: 0 <= i < rank().
  int64_t dim(int i) const { return shape_.dim(i); }
  int64_t num_elements() const { return shape_.num_elements(); }

  // Returns true when the elements are densely packed in C order, i.e. the
  // view could be one memcpy. Strides of axes of size 1 are ignored, and an
  // empty view (no elements) is contiguous.
  bool is_contiguous() const;

  // Returns a pointer to the element at the multi-index `index`.
  // REQUIRES (PKV_DCHECK, since it is per element): index.size() == rank()
  // and 0 <= index[i] < dim(i).
  const std::byte* ElementPtr(absl::Span<const int64_t> index) const;

  // Returns data() as `const T*`, for reading a contiguous view directly.
  // REQUIRES (PKV_DCHECK): sizeof(T) == SizeOf(dtype()).
  template <typename T>
  const T* data_as() const {
    PKV_DCHECK(sizeof(T) == SizeOf(dtype_), "data_as<%d-byte type> on %s",
               sizeof(T), DTypeName(dtype_));
    return reinterpret_cast<const T*>(data_);
  }

 private:
  // Invariants: strides_.size() == shape_.rank(); data_ != nullptr unless
  // shape_.num_elements() == 0.
  const std::byte* data_;
  DType dtype_;
  Shape shape_;
  Strides strides_;
};

// A borrowed, writable, strided window onto elements of one dtype. Same
// contracts as ConstTensorView.
class TensorView {
 public:
  // An empty view: no data, float32, shape (0).
  TensorView() = default;
  // A densely packed (C order) view of `shape` at `data`.
  // REQUIRES: data != nullptr unless shape.num_elements() == 0.
  TensorView(void* data, DType dtype, Shape shape)
      : view_(data, dtype, std::move(shape)) {}
  // REQUIRES: strides.size() == shape.rank(); data != nullptr unless
  // shape.num_elements() == 0.
  TensorView(void* data, DType dtype, Shape shape, Strides strides)
      : view_(data, dtype, std::move(shape), std::move(strides)) {}

  // Read-only access to the same elements.
  operator ConstTensorView() const { return view_; }  // NOLINT: implicit.

  std::byte* data() const { return const_cast<std::byte*>(view_.data()); }
  DType dtype() const { return view_.dtype(); }
  const Shape& shape() const { return view_.shape(); }
  const Strides& strides() const { return view_.strides(); }
  int rank() const { return view_.rank(); }
  int64_t dim(int i) const { return view_.dim(i); }
  int64_t num_elements() const { return view_.num_elements(); }
  bool is_contiguous() const { return view_.is_contiguous(); }

  // See ConstTensorView::ElementPtr.
  std::byte* ElementPtr(absl::Span<const int64_t> index) const {
    return const_cast<std::byte*>(view_.ElementPtr(index));
  }

  // REQUIRES (PKV_DCHECK): sizeof(T) == SizeOf(dtype()).
  template <typename T>
  T* data_as() const {
    return const_cast<T*>(view_.data_as<T>());
  }

 private:
  ConstTensorView view_;
};

// An owning, densely packed (C order) tensor. States: empty (default
// constructed or moved from: no storage, float32, shape (0)) or holding
// num_bytes() bytes from its resource. Every method is valid in both.
class Tensor {
 public:
  // Returns a zero-filled tensor whose storage comes from `resource` and is
  // kTensorAlignment-aligned. Returns RESOURCE_EXHAUSTED when the resource
  // cannot supply the bytes (or the byte count overflows size_t). A tensor
  // without elements allocates nothing and has data() == nullptr.
  // REQUIRES: resource != nullptr; it must outlive the tensor.
  static absl::StatusOr<Tensor> Create(
      DType dtype, Shape shape,
      MemoryResource* resource = DefaultMemoryResource());

  // An empty tensor: no storage, float32, shape (0).
  Tensor();
  ~Tensor();

  // Move-only: a copy would be a second owner of the storage. A moved-from
  // tensor is empty.
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  // REQUIRES: 0 <= i < rank().
  int64_t dim(int i) const { return shape_.dim(i); }
  int64_t num_elements() const { return shape_.num_elements(); }
  // Returns num_elements() * SizeOf(dtype()).
  size_t num_bytes() const { return num_bytes_; }
  // Returns the resource the storage came from (nullptr for a default
  // constructed or moved-from tensor).
  MemoryResource* resource() const { return resource_; }

  // Returns a contiguous view of all elements, valid until this tensor is
  // destroyed, moved from or assigned to.
  TensorView view();
  ConstTensorView view() const;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }

  // REQUIRES (PKV_DCHECK): sizeof(T) == SizeOf(dtype()).
  template <typename T>
  T* data_as() {
    return view().data_as<T>();
  }
  template <typename T>
  const T* data_as() const {
    return view().data_as<T>();
  }

 private:
  Tensor(DType dtype, Shape shape, std::byte* data, size_t num_bytes,
         MemoryResource* resource);
  void Release();

  // Invariants: data_ == nullptr exactly when num_bytes_ == 0;
  // num_bytes_ == shape_.num_elements() * SizeOf(dtype_); data_ is
  // kTensorAlignment-aligned and came from resource_->Allocate(num_bytes_,
  // kTensorAlignment).
  DType dtype_ = DType::kFloat32;
  Shape shape_ = Shape({0});
  std::byte* data_ = nullptr;
  size_t num_bytes_ = 0;
  MemoryResource* resource_ = nullptr;
};

// Returns the elements of `view` in C order (last axis fastest), widened to
// float (exact for every dtype).
std::vector<float> ToFloatVector(ConstTensorView view);

}  // namespace pagedkv

#endif  // PAGEDKV_TENSOR_TENSOR_H_
