#include "tensor/tensor.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "tensor/dtype.h"
#include "tensor/memory_resource.h"
#include "tensor/shape.h"

namespace pagedkv {

ConstTensorView::ConstTensorView()
    : data_(nullptr), dtype_(DType::kFloat32), shape_({0}), strides_({1}) {}

ConstTensorView::ConstTensorView(const void* data, DType dtype, Shape shape)
    : ConstTensorView(data, dtype, shape, shape.ContiguousStrides()) {}

ConstTensorView::ConstTensorView(const void* data, DType dtype, Shape shape,
                                 Strides strides)
    : data_(static_cast<const std::byte*>(data)),
      dtype_(dtype),
      shape_(std::move(shape)),
      strides_(std::move(strides)) {
  PKV_CHECK(strides_.size() == static_cast<size_t>(shape_.rank()),
            "%d strides for shape %s", strides_.size(), shape_.ToString());
  PKV_CHECK(data_ != nullptr || shape_.num_elements() == 0,
            "null data for shape %s", shape_.ToString());
}

bool ConstTensorView::is_contiguous() const {
  if (shape_.num_elements() == 0) return true;
  int64_t expected = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    const int64_t size = shape_.dims()[i];
    if (size == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= size;
  }
  return true;
}

const std::byte* ConstTensorView::ElementPtr(
    absl::Span<const int64_t> index) const {
  PKV_DCHECK(index.size() == static_cast<size_t>(rank()),
             "index of rank %d into a view of rank %d", index.size(), rank());
  int64_t offset = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    PKV_DCHECK(index[i] >= 0 && index[i] < shape_.dims()[i],
               "index %d out of range [0, %d) on axis %d", index[i],
               shape_.dims()[i], i);
    offset += index[i] * strides_[i];
  }
  return data_ + offset * static_cast<int64_t>(SizeOf(dtype_));
}

Tensor::Tensor() = default;

Tensor::Tensor(DType dtype, Shape shape, std::byte* data, size_t num_bytes,
               MemoryResource* resource)
    : dtype_(dtype),
      shape_(std::move(shape)),
      data_(data),
      num_bytes_(num_bytes),
      resource_(resource) {}

Tensor::~Tensor() { Release(); }

Tensor::Tensor(Tensor&& other) noexcept
    : dtype_(other.dtype_),
      shape_(std::move(other.shape_)),
      data_(std::exchange(other.data_, nullptr)),
      num_bytes_(std::exchange(other.num_bytes_, 0)),
      resource_(std::exchange(other.resource_, nullptr)) {
  other.dtype_ = DType::kFloat32;
  other.shape_ = Shape({0});
}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    Release();
    dtype_ = std::exchange(other.dtype_, DType::kFloat32);
    shape_ = std::exchange(other.shape_, Shape({0}));
    data_ = std::exchange(other.data_, nullptr);
    num_bytes_ = std::exchange(other.num_bytes_, 0);
    resource_ = std::exchange(other.resource_, nullptr);
  }
  return *this;
}

void Tensor::Release() {
  if (data_ != nullptr) {
    resource_->Deallocate(data_, num_bytes_, kTensorAlignment);
    data_ = nullptr;
  }
  num_bytes_ = 0;
}

absl::StatusOr<Tensor> Tensor::Create(DType dtype, Shape shape,
                                      MemoryResource* resource) {
  PKV_CHECK(resource != nullptr, "Tensor::Create with a null MemoryResource");
  const uint64_t num_elements = static_cast<uint64_t>(shape.num_elements());
  const size_t element_bytes = SizeOf(dtype);
  if (num_elements > std::numeric_limits<size_t>::max() / element_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "a %s tensor of shape %s needs more than %d bytes", DTypeName(dtype),
        shape.ToString(), std::numeric_limits<size_t>::max()));
  }
  const size_t num_bytes = static_cast<size_t>(num_elements) * element_bytes;
  if (num_bytes == 0) {
    return Tensor(dtype, std::move(shape), nullptr, 0, resource);
  }
  void* data = resource->Allocate(num_bytes, kTensorAlignment);
  if (data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate %d bytes for a %s tensor of shape %s",
                        num_bytes, DTypeName(dtype), shape.ToString()));
  }
  std::memset(data, 0, num_bytes);
  return Tensor(dtype, std::move(shape), static_cast<std::byte*>(data),
                num_bytes, resource);
}

TensorView Tensor::view() { return TensorView(data_, dtype_, shape_); }

ConstTensorView Tensor::view() const {
  return ConstTensorView(data_, dtype_, shape_);
}

std::vector<float> ToFloatVector(ConstTensorView view) {
  std::vector<float> values;
  const int64_t n = view.num_elements();
  if (n == 0) return values;
  values.reserve(static_cast<size_t>(n));
  Strides index(view.rank(), 0);
  do {
    values.push_back(LoadAsFloat(view.dtype(), view.ElementPtr(index)));
  } while (NextIndex(view.shape(), absl::MakeSpan(index)));
  return values;
}

}  // namespace pagedkv
