#include "tensor/tensor.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/memory_resource.h"
#include "tensor/shape.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Forwards to NewDeleteResource and keeps count, so tests can see what a
// Tensor allocates and returns.
class CountingResource : public MemoryResource {
 public:
  void* Allocate(size_t bytes, size_t alignment) override {
    ++num_allocations;
    live_bytes += static_cast<int64_t>(bytes);
    last_alignment = alignment;
    return NewDeleteResource()->Allocate(bytes, alignment);
  }
  void Deallocate(void* p, size_t bytes, size_t alignment) override {
    ++num_deallocations;
    live_bytes -= static_cast<int64_t>(bytes);
    NewDeleteResource()->Deallocate(p, bytes, alignment);
  }

  int num_allocations = 0;
  int num_deallocations = 0;
  int64_t live_bytes = 0;
  size_t last_alignment = 0;
};

class FailingResource : public MemoryResource {
 public:
  void* Allocate(size_t, size_t) override { return nullptr; }
  void Deallocate(void*, size_t, size_t) override {}
};

Tensor MakeTensor(DType dtype, Shape shape, MemoryResource* resource) {
  return *Tensor::Create(dtype, std::move(shape), resource);
}

TEST(TensorTest, CreateZeroFillsAlignedStorage) {
  CountingResource resource;
  {
    // Dirty the heap first so zero-filling is observable.
    void* junk = resource.Allocate(48, 64);
    std::memset(junk, 0xFF, 48);
    resource.Deallocate(junk, 48, 64);
  }
  Tensor t = MakeTensor(DType::kFloat16, Shape({2, 3, 4}), &resource);
  EXPECT_EQ(t.dtype(), DType::kFloat16);
  EXPECT_EQ(t.shape(), Shape({2, 3, 4}));
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.dim(2), 4);
  EXPECT_EQ(t.num_elements(), 24);
  EXPECT_EQ(t.num_bytes(), 48u);
  EXPECT_EQ(t.resource(), &resource);
  ASSERT_NE(t.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % kTensorAlignment, 0u);
  EXPECT_EQ(resource.last_alignment, kTensorAlignment);
  for (size_t i = 0; i < t.num_bytes(); ++i) {
    ASSERT_EQ(t.data()[i], std::byte{0}) << "byte " << i;
  }
}

TEST(TensorTest, CreateUsesTheDefaultResourceWhenNoneIsGiven) {
  absl::StatusOr<Tensor> t = Tensor::Create(DType::kFloat32, Shape({4}));
  ASSERT_THAT(t, IsOk());
  EXPECT_EQ(t->resource(), DefaultMemoryResource());
  EXPECT_THAT(ToFloatVector(t->view()), ElementsAre(0, 0, 0, 0));
}

TEST(TensorTest, DestructorReturnsTheBytes) {
  CountingResource resource;
  {
    Tensor t = MakeTensor(DType::kFloat32, Shape({8, 8}), &resource);
    EXPECT_EQ(resource.live_bytes, 256);
  }
  EXPECT_EQ(resource.num_allocations, 1);
  EXPECT_EQ(resource.num_deallocations, 1);
  EXPECT_EQ(resource.live_bytes, 0);
}

TEST(TensorTest, MoveTransfersOwnershipAndEmptiesTheSource) {
  CountingResource resource;
  {
    Tensor a = MakeTensor(DType::kBFloat16, Shape({3}), &resource);
    std::byte* data = a.data();
    Tensor b(std::move(a));
    EXPECT_EQ(b.data(), data);
    EXPECT_EQ(b.shape(), Shape({3}));
    EXPECT_EQ(b.dtype(), DType::kBFloat16);
    EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(a.num_bytes(), 0u);
    EXPECT_EQ(a.shape(), Shape({0}));
    EXPECT_EQ(a.dtype(), DType::kFloat32);
  }
  EXPECT_EQ(resource.num_deallocations, 1);
  EXPECT_EQ(resource.live_bytes, 0);
}

TEST(TensorTest, MoveAssignmentReleasesTheOldStorage) {
  CountingResource resource;
  Tensor a = MakeTensor(DType::kFloat32, Shape({2}), &resource);
  Tensor b = MakeTensor(DType::kFloat32, Shape({5}), &resource);
  a = std::move(b);
  EXPECT_EQ(resource.num_deallocations, 1);
  EXPECT_EQ(resource.live_bytes, 20);
  EXPECT_EQ(a.shape(), Shape({5}));
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  a = Tensor();
  EXPECT_EQ(resource.live_bytes, 0);
}

TEST(TensorTest, DefaultTensorIsEmpty) {
  const Tensor t;
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_EQ(t.dtype(), DType::kFloat32);
  EXPECT_EQ(t.shape(), Shape({0}));
  EXPECT_EQ(t.num_elements(), 0);
  EXPECT_EQ(t.num_bytes(), 0u);
  EXPECT_TRUE(ToFloatVector(t.view()).empty());
}

TEST(TensorTest, TensorWithoutElementsAllocatesNothing) {
  CountingResource resource;
  Tensor t = MakeTensor(DType::kFloat16, Shape({4, 0, 2}), &resource);
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_EQ(t.num_bytes(), 0u);
  EXPECT_EQ(resource.num_allocations, 0);
}

TEST(TensorTest, ScalarTensorHoldsOneElement) {
  Tensor t = MakeTensor(DType::kFloat32, Shape(), NewDeleteResource());
  EXPECT_EQ(t.num_bytes(), 4u);
  t.data_as<float>()[0] = 2.5f;
  EXPECT_THAT(ToFloatVector(t.view()), ElementsAre(2.5f));
}

TEST(TensorTest, FailedAllocationIsResourceExhausted) {
  FailingResource resource;
  EXPECT_THAT(Tensor::Create(DType::kFloat32, Shape({1000}), &resource),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("cannot allocate 4000 bytes")));
}

TEST(TensorTest, ByteCountOverflowIsResourceExhausted) {
  CountingResource resource;
  EXPECT_THAT(
      Tensor::Create(DType::kFloat32, Shape({int64_t{1} << 62}), &resource),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("more than")));
  EXPECT_EQ(resource.num_allocations, 0);
}

TEST(TensorTest, ContiguousViewSharesTheStorage) {
  Tensor t = MakeTensor(DType::kFloat32, Shape({2, 3}), NewDeleteResource());
  TensorView view = t.view();
  EXPECT_EQ(view.data(), t.data());
  EXPECT_EQ(view.dtype(), DType::kFloat32);
  EXPECT_EQ(view.shape(), Shape({2, 3}));
  EXPECT_THAT(view.strides(), ElementsAre(3, 1));
  EXPECT_EQ(view.rank(), 2);
  EXPECT_EQ(view.dim(0), 2);
  EXPECT_EQ(view.num_elements(), 6);
  EXPECT_TRUE(view.is_contiguous());
  StoreFromFloat(DType::kFloat32, 9.0f, view.ElementPtr({1, 2}));
  EXPECT_EQ(t.data_as<float>()[5], 9.0f);
  const Tensor& const_t = t;
  EXPECT_EQ(const_t.view().data_as<float>()[5], 9.0f);
}

TEST(TensorTest, StridedViewAddressesElementsByStrides) {
  std::vector<float> values = {0, 1, 2, 3, 4, 5};
  // The (3, 2) transpose of a row-major (2, 3) matrix.
  ConstTensorView transposed(values.data(), DType::kFloat32, Shape({3, 2}),
                             Strides{1, 3});
  EXPECT_FALSE(transposed.is_contiguous());
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, transposed.ElementPtr({2, 1})), 5.0f);
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, transposed.ElementPtr({1, 0})), 1.0f);
  EXPECT_THAT(ToFloatVector(transposed), ElementsAre(0, 3, 1, 4, 2, 5));
}

TEST(TensorTest, ElementPtrScalesByTheElementSize) {
  std::vector<uint16_t> halves(12);
  ConstTensorView view(halves.data(), DType::kFloat16, Shape({3, 4}));
  EXPECT_EQ(view.ElementPtr({2, 1}),
            reinterpret_cast<const std::byte*>(&halves[9]));
}

TEST(TensorTest, IsContiguousIgnoresSizeOneAxes) {
  float data[8] = {};
  EXPECT_TRUE(ConstTensorView(data, DType::kFloat32, Shape({2, 1, 4}),
                              Strides{4, 99, 1})
                  .is_contiguous());
  EXPECT_FALSE(ConstTensorView(data, DType::kFloat32, Shape({2, 2}),
                               Strides{4, 1})  // Every other row.
                   .is_contiguous());
  EXPECT_FALSE(ConstTensorView(data, DType::kFloat32, Shape({4}), Strides{2})
                   .is_contiguous());
  EXPECT_TRUE(
      ConstTensorView(data, DType::kFloat32, Shape({0, 3}), Strides{7, 7})
          .is_contiguous());
  EXPECT_TRUE(ConstTensorView(data, DType::kFloat32, Shape()).is_contiguous());
}

TEST(TensorTest, WritableViewConvertsToConstView) {
  float data[4] = {1, 2, 3, 4};
  TensorView writable(data, DType::kFloat32, Shape({2, 2}));
  ConstTensorView read_only = writable;
  EXPECT_EQ(read_only.data(), writable.data());
  EXPECT_EQ(read_only.shape(), writable.shape());
  EXPECT_EQ(read_only.strides(), writable.strides());
  writable.data_as<float>()[3] = 8.0f;
  EXPECT_THAT(ToFloatVector(read_only), ElementsAre(1, 2, 3, 8));
}

TEST(TensorTest, DefaultViewsAreEmpty) {
  const ConstTensorView view;
  EXPECT_EQ(view.data(), nullptr);
  EXPECT_EQ(view.num_elements(), 0);
  const TensorView writable;
  EXPECT_EQ(writable.data(), nullptr);
  EXPECT_EQ(writable.shape(), Shape({0}));
}

TEST(TensorTest, ToFloatVectorWidensEveryDType) {
  uint16_t half[2] = {FloatToHalf(1.5f), FloatToHalf(-10704.0f)};
  uint16_t bf16[2] = {FloatToBFloat16(0.25f), FloatToBFloat16(-3.0f)};
  EXPECT_THAT(ToFloatVector(ConstTensorView(half, DType::kFloat16, Shape({2}))),
              ElementsAre(1.5f, -10704.0f));
  EXPECT_THAT(
      ToFloatVector(ConstTensorView(bf16, DType::kBFloat16, Shape({2}))),
      ElementsAre(0.25f, -3.0f));
}

// The header example, compiled.
TEST(TensorTest, HeaderExampleWorks) {
  absl::StatusOr<Tensor> t = Tensor::Create(DType::kFloat32, Shape({2, 3}));
  ASSERT_THAT(t, IsOk());
  t->data_as<float>()[4] = 7.0f;
  ConstTensorView transposed(t->data(), DType::kFloat32, Shape({3, 2}),
                             Strides{1, 3});
  float x = LoadAsFloat(DType::kFloat32, transposed.ElementPtr({1, 1}));
  EXPECT_EQ(x, 7.0f);
  std::vector<float> values = ToFloatVector(transposed);
  EXPECT_THAT(values, ElementsAre(0, 0, 0, 7, 0, 0));
}

TEST(TensorDeathTest, ViewWithWrongNumberOfStridesAborts) {
  float data[6] = {};
  EXPECT_DEATH(
      ConstTensorView(data, DType::kFloat32, Shape({2, 3}), Strides{1}),
      "1 strides for shape \\(2, 3\\)");
}

TEST(TensorDeathTest, ViewOfNullDataWithElementsAborts) {
  EXPECT_DEATH(TensorView(nullptr, DType::kFloat16, Shape({2})),
               "null data for shape \\(2\\)");
}

TEST(TensorDeathTest, CreateWithNullResourceAborts) {
  EXPECT_DEATH((void)Tensor::Create(DType::kFloat32, Shape({2}), nullptr),
               "null MemoryResource");
}

TEST(TensorDeathTest, ElementPtrOutOfRangeAbortsInDebugBuilds) {
#ifdef NDEBUG
  GTEST_SKIP() << "PKV_DCHECK is compiled out under NDEBUG";
#else
  float data[6] = {};
  ConstTensorView view(data, DType::kFloat32, Shape({2, 3}));
  EXPECT_DEATH(view.ElementPtr({0, 3}), "index 3 out of range \\[0, 3\\)");
  EXPECT_DEATH(view.ElementPtr({0}), "index of rank 1 into a view of rank 2");
#endif
}

TEST(TensorDeathTest, DataAsWithTheWrongSizeAbortsInDebugBuilds) {
#ifdef NDEBUG
  GTEST_SKIP() << "PKV_DCHECK is compiled out under NDEBUG";
#else
  uint16_t data[2] = {};
  ConstTensorView view(data, DType::kFloat16, Shape({2}));
  EXPECT_DEATH(view.data_as<float>(), "data_as<4-byte type> on float16");
#endif
}

}  // namespace
}  // namespace pagedkv
