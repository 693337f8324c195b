#include "tensor/tensor_copy.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensor_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TensorsEqual;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr DType kAllDTypes[] = {DType::kFloat32, DType::kFloat16,
                                DType::kBFloat16};

Tensor MakeZeros(DType dtype, Shape shape) {
  return *Zeros(dtype, std::move(shape));
}

// 0, 1, 2, ... in C order (exact in every dtype up to 256).
Tensor MakeIota(DType dtype, Shape shape) {
  std::vector<float> values(static_cast<size_t>(shape.num_elements()));
  std::iota(values.begin(), values.end(), 0.0f);
  return *FromVector(dtype, std::move(shape), values);
}

// The obviously correct copy: one element at a time, by multi-index.
void ReferenceCopy(ConstTensorView src, TensorView dst) {
  if (src.num_elements() == 0) return;
  Strides index(src.rank(), 0);
  do {
    if (src.dtype() == dst.dtype()) {
      std::memcpy(dst.ElementPtr(index), src.ElementPtr(index),
                  SizeOf(src.dtype()));
    } else {
      StoreFromFloat(dst.dtype(),
                     LoadAsFloat(src.dtype(), src.ElementPtr(index)),
                     dst.ElementPtr(index));
    }
  } while (NextIndex(src.shape(), absl::MakeSpan(index)));
}

TEST(CopyTest, CopiesContiguousTensors) {
  for (DType dtype : kAllDTypes) {
    Tensor src = *FillPattern(dtype, Shape({2, 3, 4, 5}), 1);
    Tensor dst = MakeZeros(dtype, Shape({2, 3, 4, 5}));
    ASSERT_THAT(Copy(src.view(), dst.view()), IsOk());
    EXPECT_TRUE(TensorsEqual(dst.view(), src.view())) << dtype;
  }
}

TEST(CopyTest, TransposedSourceIsReadInItsLogicalOrder) {
  Tensor matrix = MakeIota(DType::kFloat32, Shape({2, 3}));
  ConstTensorView transposed(matrix.data(), DType::kFloat32, Shape({3, 2}),
                             Strides{1, 3});
  Tensor dst = MakeZeros(DType::kFloat32, Shape({3, 2}));
  ASSERT_THAT(Copy(transposed, dst.view()), IsOk());
  EXPECT_THAT(ToFloatVector(dst.view()), ElementsAre(0, 3, 1, 4, 2, 5));
}

TEST(CopyTest, TransposedDestinationIsWrittenInItsLogicalOrder) {
  Tensor src = MakeIota(DType::kFloat16, Shape({3, 2}));
  Tensor matrix = MakeZeros(DType::kFloat16, Shape({2, 3}));
  TensorView transposed(matrix.data(), DType::kFloat16, Shape({3, 2}),
                        Strides{1, 3});
  ASSERT_THAT(Copy(src.view(), transposed), IsOk());
  EXPECT_THAT(ToFloatVector(matrix.view()), ElementsAre(0, 2, 4, 1, 3, 5));
}

TEST(CopyTest, SlicedViewsWithStrideTwoTouchOnlyTheirElements) {
  // Columns 1, 3, 5 of a (4, 6) matrix into columns 0, 2, 4 of another.
  Tensor src_matrix = MakeIota(DType::kBFloat16, Shape({4, 6}));
  Tensor dst_matrix = *Full(DType::kBFloat16, Shape({4, 6}), -1.0);
  ConstTensorView odd_columns(src_matrix.view().ElementPtr({0, 1}),
                              DType::kBFloat16, Shape({4, 3}), Strides{6, 2});
  TensorView even_columns(dst_matrix.data(), DType::kBFloat16, Shape({4, 3}),
                          Strides{6, 2});
  ASSERT_THAT(Copy(odd_columns, even_columns), IsOk());
  EXPECT_THAT(ToFloatVector(dst_matrix.view()),
              ElementsAre(1, -1, 3, -1, 5, -1,     //
                          7, -1, 9, -1, 11, -1,    //
                          13, -1, 15, -1, 17, -1,  //
                          19, -1, 21, -1, 23, -1));
}

TEST(CopyTest, ReversedAndBroadcastSourcesAreSupported) {
  Tensor row = MakeIota(DType::kFloat32, Shape({4}));
  // Negative stride: the row backwards.
  ConstTensorView reversed(row.view().ElementPtr({3}), DType::kFloat32,
                           Shape({4}), Strides{-1});
  Tensor dst = MakeZeros(DType::kFloat32, Shape({4}));
  ASSERT_THAT(Copy(reversed, dst.view()), IsOk());
  EXPECT_THAT(ToFloatVector(dst.view()), ElementsAre(3, 2, 1, 0));
  // Zero stride: the row repeated three times.
  ConstTensorView repeated(row.data(), DType::kFloat32, Shape({3, 4}),
                           Strides{0, 1});
  Tensor grid = MakeZeros(DType::kFloat32, Shape({3, 4}));
  ASSERT_THAT(Copy(repeated, grid.view()), IsOk());
  EXPECT_THAT(ToFloatVector(grid.view()),
              ElementsAre(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3));
}

TEST(CopyTest, ConvertsBetweenEveryPairOfDTypes) {
  const std::vector<float> values = {
      0.0f,  -0.0f, 1.0f,      -2.5f,  10701.0f, 65504.0f, 1e5f,
      3e-6f, 6e-8f, -1.0e-40f, 257.0f, 0.1f,     INFINITY, -INFINITY};
  const Shape shape({2, 7});
  for (DType from : kAllDTypes) {
    Tensor src = *FromVector(from, shape, values);
    for (DType to : kAllDTypes) {
      Tensor dst = MakeZeros(to, shape);
      Tensor expected = MakeZeros(to, shape);
      ASSERT_THAT(Copy(src.view(), dst.view()), IsOk());
      ReferenceCopy(src.view(), expected.view());
      EXPECT_TRUE(TensorsEqual(dst.view(), expected.view()))
          << from << " -> " << to;
    }
  }
}

TEST(CopyTest, NarrowingRoundsToNearestEven) {
  Tensor src = *FromVector(DType::kFloat32, Shape({4}),
                           {10700.0f, 10701.0f, 10702.0f, 10096.0f});
  Tensor half = MakeZeros(DType::kFloat16, Shape({4}));
  ASSERT_THAT(Copy(src.view(), half.view()), IsOk());
  EXPECT_THAT(ToFloatVector(half.view()),
              ElementsAre(10704.0f, 10704.0f, 10704.0f, 10096.0f));
  // And back: widening is exact.
  Tensor wide = MakeZeros(DType::kFloat32, Shape({4}));
  ASSERT_THAT(Copy(half.view(), wide.view()), IsOk());
  EXPECT_THAT(ToFloatVector(wide.view()),
              ElementsAre(10704.0f, 10704.0f, 10704.0f, 10096.0f));
}

TEST(CopyTest, SameDTypeCopiesBitsExactly) {
  // A signalling NaN would be quieted by a trip through float; a copy
  // between equal dtypes moves the bits untouched.
  const uint16_t bits[3] = {0x7C01, 0xFFFF, 0x8000};
  uint16_t out[3] = {};
  ConstTensorView src(bits, DType::kFloat16, Shape({3}));
  ASSERT_THAT(Copy(src, TensorView(out, DType::kFloat16, Shape({3}))), IsOk());
  EXPECT_THAT(out, ElementsAre(0x7C01, 0xFFFF, 0x8000));
  // Strided too.
  uint16_t strided_out[6] = {};
  ASSERT_THAT(Copy(src, TensorView(strided_out, DType::kFloat16, Shape({3}),
                                   Strides{2})),
              IsOk());
  EXPECT_THAT(strided_out, ElementsAre(0x7C01, 0, 0xFFFF, 0, 0x8000, 0));
}

TEST(CopyTest, ShapeMismatchIsRejectedAndLeavesDestinationUnchanged) {
  Tensor src = MakeIota(DType::kFloat32, Shape({2, 3}));
  Tensor dst = *Full(DType::kFloat32, Shape({3, 2}), 7.0);
  EXPECT_THAT(Copy(src.view(), dst.view()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("(2, 3)"), HasSubstr("(3, 2)"))));
  EXPECT_THAT(ToFloatVector(dst.view()), ElementsAre(7, 7, 7, 7, 7, 7));
  // Same element count, different rank: still a mismatch.
  Tensor flat = *Full(DType::kFloat32, Shape({6}), 7.0);
  EXPECT_THAT(Copy(src.view(), flat.view()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(6)")));
  EXPECT_THAT(ToFloatVector(flat.view()), ElementsAre(7, 7, 7, 7, 7, 7));
}

TEST(CopyTest, EmptyAndScalarTensorsCopy) {
  EXPECT_THAT(Copy(MakeZeros(DType::kFloat32, Shape({0, 4})).view(),
                   MakeZeros(DType::kFloat16, Shape({0, 4})).view()),
              IsOk());
  Tensor scalar = *Full(DType::kFloat32, Shape(), 3.0);
  Tensor dst = MakeZeros(DType::kBFloat16, Shape());
  ASSERT_THAT(Copy(scalar.view(), dst.view()), IsOk());
  EXPECT_THAT(ToFloatVector(dst.view()), ElementsAre(3.0f));
}

TEST(CopyTest, SizeOneAxesWithOddStridesAreHandled) {
  Tensor src = MakeIota(DType::kFloat32, Shape({3, 4}));
  // (3, 1, 4) view whose size-1 axis has a nonsense stride.
  ConstTensorView padded(src.data(), DType::kFloat32, Shape({3, 1, 4}),
                         Strides{4, 1000, 1});
  Tensor dst = MakeZeros(DType::kFloat32, Shape({3, 1, 4}));
  ASSERT_THAT(Copy(padded, dst.view()), IsOk());
  EXPECT_THAT(ToFloatVector(dst.view()),
              ElementsAreArray(ToFloatVector(src.view())));
}

// The paged-KV gather: blocks of (heads, block_tokens, head_dim) inside a
// block-major arena [num_blocks][layers][heads][block_tokens][head_dim],
// gathered for one layer through a scattered block table into a contiguous
// (heads, seq, head_dim) tensor, one Copy per block.
TEST(CopyTest, GathersScatteredKVBlocksIntoAContiguousSequence) {
  constexpr int64_t kNumBlocks = 6, kLayers = 2, kHeads = 3, kBlockTokens = 4,
                    kHeadDim = 5, kLayer = 1;
  const std::vector<int64_t> block_table = {4, 0, 5};
  const int64_t seq = kBlockTokens * static_cast<int64_t>(block_table.size());
  for (DType dtype : {DType::kFloat32, DType::kFloat16}) {
    // 720 distinct values, all exact in float16.
    Tensor typed_arena = MakeIota(
        dtype, Shape({kNumBlocks, kLayers, kHeads, kBlockTokens, kHeadDim}));

    Tensor gathered = MakeZeros(dtype, Shape({kHeads, seq, kHeadDim}));
    Tensor expected = MakeZeros(dtype, Shape({kHeads, seq, kHeadDim}));
    for (size_t i = 0; i < block_table.size(); ++i) {
      const int64_t first_token = static_cast<int64_t>(i) * kBlockTokens;
      ConstTensorView block(
          typed_arena.view().ElementPtr({block_table[i], kLayer, 0, 0, 0}),
          dtype, Shape({kHeads, kBlockTokens, kHeadDim}));
      TensorView out_view = gathered.view();
      TensorView window(out_view.ElementPtr({0, first_token, 0}), dtype,
                        block.shape(), out_view.strides());
      ASSERT_THAT(Copy(block, window), IsOk());

      TensorView expected_view = expected.view();
      ReferenceCopy(block,
                    TensorView(expected_view.ElementPtr({0, first_token, 0}),
                               dtype, block.shape(), expected_view.strides()));
    }
    EXPECT_TRUE(TensorsEqual(gathered.view(), expected.view())) << dtype;
    // Spot check one element by hand: head 2, token 5 (block 0 of the
    // table's second entry, token 1), dim 3.
    const float want =
        LoadAsFloat(dtype, typed_arena.view().ElementPtr({0, kLayer, 2, 1, 3}));
    EXPECT_EQ(LoadAsFloat(dtype, gathered.view().ElementPtr({2, 5, 3})), want);
  }
}

// The tensor_copy.h header example, compiled.
absl::Status GatherOneBlock(ConstTensorView block, Tensor& out,
                            int64_t first_token) {
  TensorView out_view = out.view();
  TensorView window(out_view.ElementPtr({0, first_token, 0}), out.dtype(),
                    block.shape(), out_view.strides());
  PKV_RETURN_IF_ERROR(Copy(block, window));
  return absl::OkStatus();
}

TEST(CopyTest, HeaderExampleWorks) {
  Tensor block = MakeIota(DType::kFloat32, Shape({2, 2, 3}));
  Tensor out = MakeZeros(DType::kFloat32, Shape({2, 4, 3}));
  ASSERT_THAT(GatherOneBlock(block.view(), out, /*first_token=*/2), IsOk());
  EXPECT_THAT(ToFloatVector(out.view()),
              ElementsAre(0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5,  //
                          0, 0, 0, 0, 0, 0, 6, 7, 8, 9, 10, 11));
}

// Random views (permuted, sliced, strided, reversed) of random shapes and
// dtypes, each copied by Copy and by ReferenceCopy into identical
// destinations. The seed is the parameter, so a failure names it.
class CopyRandomViewsTest : public ::testing::TestWithParam<uint32_t> {};

// A random view of some shape inside `parent`, a fresh contiguous tensor
// with larger dims: axes permuted, every axis stepped by 1 or 2, some axes
// reversed.
struct RandomView {
  Tensor parent;
  std::byte* data;
  Strides strides;
};

RandomView MakeRandomView(std::mt19937& rng, DType dtype, const Shape& shape) {
  const int rank = shape.rank();
  std::vector<int> order(rank);
  std::iota(order.begin(), order.end(), 0);
  for (int i = rank - 1; i > 0; --i)
    std::swap(order[i], order[rng() % (i + 1)]);
  std::vector<int64_t> steps(rank);
  std::vector<int64_t> parent_dims(rank);
  for (int axis = 0; axis < rank; ++axis) {
    steps[axis] = 1 + static_cast<int64_t>(rng() % 2);
    parent_dims[order[axis]] = shape.dim(axis) * steps[axis] + rng() % 2;
  }
  RandomView view;
  view.parent = MakeIota(dtype, *Shape::Create(parent_dims));
  const Strides parent_strides = view.parent.shape().ContiguousStrides();
  int64_t offset = 0;
  view.strides.resize(rank);
  for (int axis = 0; axis < rank; ++axis) {
    int64_t stride = parent_strides[order[axis]] * steps[axis];
    if (rng() % 4 == 0 && shape.dim(axis) > 0) {  // Reverse this axis.
      offset += stride * (shape.dim(axis) - 1);
      stride = -stride;
    }
    view.strides[axis] = stride;
  }
  view.data = view.parent.data() + offset * static_cast<int64_t>(SizeOf(dtype));
  return view;
}

TEST_P(CopyRandomViewsTest, MatchesElementByElementCopy) {
  std::mt19937 rng(GetParam());
  for (int trial = 0; trial < 50; ++trial) {
    const int rank = static_cast<int>(rng() % 6);
    std::vector<int64_t> dims(rank);
    for (int64_t& d : dims) d = 1 + static_cast<int64_t>(rng() % 4);
    const Shape shape = *Shape::Create(dims);
    const DType src_dtype = kAllDTypes[rng() % 3];
    // Mostly equal dtypes: that is the memcpy path.
    const DType dst_dtype = rng() % 2 ? src_dtype : kAllDTypes[rng() % 3];

    RandomView src = MakeRandomView(rng, src_dtype, shape);
    RandomView dst = MakeRandomView(rng, dst_dtype, shape);
    // Give both destinations identical contents and layout.
    Tensor expected_parent = MakeZeros(dst_dtype, dst.parent.shape());
    ASSERT_THAT(Copy(dst.parent.view(), expected_parent.view()), IsOk());
    std::byte* expected_data =
        expected_parent.data() + (dst.data - dst.parent.data());

    ConstTensorView src_view(src.data, src_dtype, shape, src.strides);
    ASSERT_THAT(
        Copy(src_view, TensorView(dst.data, dst_dtype, shape, dst.strides)),
        IsOk());
    ReferenceCopy(src_view,
                  TensorView(expected_data, dst_dtype, shape, dst.strides));
    ASSERT_TRUE(TensorsEqual(dst.parent.view(), expected_parent.view()))
        << "trial " << trial << " shape " << shape << " " << src_dtype << " -> "
        << dst_dtype;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, CopyRandomViewsTest,
                         ::testing::Range<uint32_t>(0, 16));

}  // namespace
}  // namespace pagedkv
