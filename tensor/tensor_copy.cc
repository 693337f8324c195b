#include "tensor/tensor_copy.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

// One loop of the copy, with strides in BYTES.
struct Loop {
  int64_t size;
  int64_t src_stride;
  int64_t dst_stride;
};

// Copies `n` elements from src (stride `src_stride` bytes) to dst.
using RunFn = void (*)(const std::byte* src, int64_t src_stride, std::byte* dst,
                       int64_t dst_stride, int64_t n);

template <size_t kBytes>
void MoveRun(const std::byte* src, int64_t src_stride, std::byte* dst,
             int64_t dst_stride, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * dst_stride, src + i * src_stride, kBytes);
  }
}

template <DType kSrc, DType kDst>
void ConvertRun(const std::byte* src, int64_t src_stride, std::byte* dst,
                int64_t dst_stride, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    StoreFromFloat(kDst, LoadAsFloat(kSrc, src + i * src_stride),
                   dst + i * dst_stride);
  }
}

template <DType kSrc>
RunFn SelectConvertRun(DType dst) {
  switch (dst) {
    case DType::kFloat32:
      return &ConvertRun<kSrc, DType::kFloat32>;
    case DType::kFloat16:
      return &ConvertRun<kSrc, DType::kFloat16>;
    case DType::kBFloat16:
      return &ConvertRun<kSrc, DType::kBFloat16>;
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dst));
  return nullptr;
}

RunFn SelectRun(DType src, DType dst) {
  if (src == dst) {
    return SizeOf(src) == 4 ? &MoveRun<4> : &MoveRun<2>;
  }
  switch (src) {
    case DType::kFloat32:
      return SelectConvertRun<DType::kFloat32>(dst);
    case DType::kFloat16:
      return SelectConvertRun<DType::kFloat16>(dst);
    case DType::kBFloat16:
      return SelectConvertRun<DType::kBFloat16>(dst);
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(src));
  return nullptr;
}

// Fills `loops` (outermost first) from the views, dropping axes of size 1 and
// merging an axis into the next inner one when it continues it in both views.
// Returns the number of loops (0 for a single element).
int Coalesce(const ConstTensorView& src, const TensorView& dst,
             Loop (&loops)[kMaxRank]) {
  const int64_t src_bytes = static_cast<int64_t>(SizeOf(src.dtype()));
  const int64_t dst_bytes = static_cast<int64_t>(SizeOf(dst.dtype()));
  const absl::Span<const int64_t> dims = src.shape().dims();
  int count = 0;
  for (size_t axis = 0; axis < dims.size(); ++axis) {
    if (dims[axis] == 1) continue;
    const Loop inner = {dims[axis], src.strides()[axis] * src_bytes,
                        dst.strides()[axis] * dst_bytes};
    if (count > 0) {
      Loop& outer = loops[count - 1];
      if (outer.src_stride == inner.src_stride * inner.size &&
          outer.dst_stride == inner.dst_stride * inner.size) {
        outer = {outer.size * inner.size, inner.src_stride, inner.dst_stride};
        continue;
      }
    }
    loops[count++] = inner;
  }
  return count;
}

}  // namespace

absl::Status Copy(ConstTensorView src, TensorView dst) {
  if (src.shape() != dst.shape()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Copy: source shape %s differs from destination shape %s",
        src.shape().ToString(), dst.shape().ToString()));
  }
  if (src.num_elements() == 0) return absl::OkStatus();

  Loop loops[kMaxRank];
  int num_loops = Coalesce(src, dst, loops);
  if (num_loops == 0) loops[num_loops++] = {1, 0, 0};  // One element.
  const Loop inner = loops[num_loops - 1];
  const int num_outer = num_loops - 1;
  int64_t num_runs = 1;
  for (int k = 0; k < num_outer; ++k) num_runs *= loops[k].size;

  const size_t element_bytes = SizeOf(src.dtype());
  const bool memcpy_runs =
      src.dtype() == dst.dtype() &&
      (inner.size == 1 ||
       (inner.src_stride == static_cast<int64_t>(element_bytes) &&
        inner.dst_stride == static_cast<int64_t>(element_bytes)));
  const size_t run_bytes = static_cast<size_t>(inner.size) * element_bytes;
  const RunFn run = memcpy_runs ? nullptr : SelectRun(src.dtype(), dst.dtype());

  // Walk the outer loops as an odometer over byte offsets (offsets rather
  // than pointers, so no pointer ever leaves its object mid-walk).
  const std::byte* const src_base = src.data();
  std::byte* const dst_base = dst.data();
  int64_t counter[kMaxRank] = {};
  int64_t src_offset = 0;
  int64_t dst_offset = 0;
  for (int64_t r = 0; r < num_runs; ++r) {
    if (memcpy_runs) {
      std::memcpy(dst_base + dst_offset, src_base + src_offset, run_bytes);
    } else {
      run(src_base + src_offset, inner.src_stride, dst_base + dst_offset,
          inner.dst_stride, inner.size);
    }
    for (int k = num_outer - 1; k >= 0; --k) {
      src_offset += loops[k].src_stride;
      dst_offset += loops[k].dst_stride;
      if (++counter[k] < loops[k].size) break;
      src_offset -= loops[k].src_stride * loops[k].size;
      dst_offset -= loops[k].dst_stride * loops[k].size;
      counter[k] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace pagedkv
