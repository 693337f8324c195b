#include "cache/kv_view.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_table.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tensor/tensor_copy.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensor_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TensorsAllClose;
using ::pagedkv::testing::TensorsEqual;
using ::testing::HasSubstr;

constexpr int64_t kBatch = 2;
constexpr int64_t kHeads = 3;
constexpr int64_t kLength = 10;  // Two and a half 4-token blocks.
constexpr int64_t kHeadDim = 4;
constexpr int32_t kBlockTokens = 4;
constexpr float kSentinel = -7.0f;

std::unique_ptr<DynamicKVCache> MakeCache() {
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> cache =
      DynamicKVCache::Create({.block_tokens = kBlockTokens});
  return std::move(*cache);
}

// Distinct, non-integer values that float16 and bfloat16 must round:
// sign * (1 + b/2 + h/8 + t/100 + d/1000).
Tensor MakeInput(DType dtype, Shape shape, float sign) {
  std::vector<float> values;
  Strides index(shape.rank(), 0);
  do {
    values.push_back(sign * (1.0f + index[0] * 0.5f + index[1] * 0.125f +
                             index[2] * 0.01f + index[3] * 0.001f));
  } while (NextIndex(shape, absl::MakeSpan(index)));
  return *FromVector(dtype, shape, values);
}

// `src` converted to `dtype` by tensor Copy: the reference rounding.
Tensor Converted(ConstTensorView src, DType dtype) {
  Tensor out = *Tensor::Create(dtype, src.shape());
  EXPECT_THAT(Copy(src, out.view()), IsOk());
  return out;
}

// A (batch, heads, t1 - t0, dim) window of tokens [t0, t1) of `t`.
ConstTensorView Tokens(const Tensor& t, int64_t t0, int64_t t1) {
  const ConstTensorView v = t.view();
  return ConstTensorView(v.ElementPtr({0, 0, t0, 0}), t.dtype(),
                         Shape({t.dim(0), t.dim(1), t1 - t0, t.dim(3)}),
                         v.strides());
}

// Returns the number of elements of `t` outside the window [lo, hi) (per
// axis) that do not equal `value`.
int64_t CountChangedOutside(const Tensor& t, absl::Span<const int64_t> lo,
                            absl::Span<const int64_t> hi, float value) {
  int64_t changed = 0;
  Strides index(t.rank(), 0);
  do {
    bool inside = true;
    for (int i = 0; i < t.rank(); ++i) {
      inside = inside && index[i] >= lo[i] && index[i] < hi[i];
    }
    if (!inside &&
        LoadAsFloat(t.dtype(), t.view().ElementPtr(index)) != value) {
      ++changed;
    }
  } while (NextIndex(t.shape(), absl::MakeSpan(index)));
  return changed;
}

class KVViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = MakeCache();
    const Shape shape({kBatch, kHeads, kLength, kHeadDim});
    key_ = MakeInput(DType::kFloat32, shape, 1.0f);
    value_ = MakeInput(DType::kFloat32, shape, -1.0f);
    absl::StatusOr<KVView> view =
        cache_->Update(key_.view(), value_.view(), /*layer_idx=*/0);
    ASSERT_THAT(view, IsOk());
    view_.emplace(*view);
  }

  const KVView& view() const { return *view_; }

  std::unique_ptr<DynamicKVCache> cache_;
  Tensor key_;
  Tensor value_;
  std::optional<KVView> view_;
};

TEST_F(KVViewTest, HasTheShapeOfTheUpdatedLayer) {
  EXPECT_EQ(view().shape(), Shape({kBatch, kHeads, kLength, kHeadDim}));
  EXPECT_EQ(view().batch(), kBatch);
  EXPECT_EQ(view().heads(), kHeads);
  EXPECT_EQ(view().length(), kLength);
  EXPECT_EQ(view().head_dim(), kHeadDim);
  EXPECT_EQ(view().dtype(), DType::kFloat32);
  EXPECT_EQ(view().layer(), 0);
  EXPECT_EQ(view().start(), 0);
  EXPECT_EQ(view().block_tokens(), kBlockTokens);
  EXPECT_EQ(view().pool(), cache_->pool());
  ASSERT_EQ(view().tables().size(), static_cast<size_t>(kBatch));
  for (const BlockTable& table : view().tables()) {
    EXPECT_GE(table.num_blocks(), 3);  // ceil(10 / 4) blocks hold the tokens.
  }
}

TEST_F(KVViewTest, GetReturnsTheSameViewAsUpdate) {
  absl::StatusOr<std::optional<KVView>> got = cache_->Get(0);
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->shape(), view().shape());
  EXPECT_EQ((*got)->start(), view().start());
  absl::StatusOr<KVTensors> dense = (*got)->Gather();
  ASSERT_THAT(dense, IsOk());
  EXPECT_TRUE(TensorsEqual(dense->key.view(), key_.view()));
}

TEST_F(KVViewTest, GatherEqualsTheInputs) {
  absl::StatusOr<KVTensors> dense = view().Gather();
  ASSERT_THAT(dense, IsOk());
  EXPECT_EQ(dense->key.shape(), view().shape());
  EXPECT_EQ(dense->key.dtype(), DType::kFloat32);
  EXPECT_TRUE(TensorsEqual(dense->key.view(), key_.view()));
  EXPECT_TRUE(TensorsEqual(dense->value.view(), value_.view()));
}

TEST_F(KVViewTest, SlabIsOneBlockOfOneHead) {
  for (int64_t b = 0; b < kBatch; ++b) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int32_t i = 0; i * kBlockTokens < kLength; ++i) {
        const ConstTensorView k = view().Slab(KV::kKey, b, h, i);
        const ConstTensorView v = view().Slab(KV::kValue, b, h, i);
        ASSERT_EQ(k.shape(), Shape({kBlockTokens, kHeadDim}));
        EXPECT_TRUE(k.is_contiguous());
        EXPECT_EQ(k.dtype(), DType::kFloat32);
        for (int64_t s = 0; s < kBlockTokens; ++s) {
          const int64_t t = i * kBlockTokens + s;
          if (t >= kLength) break;  // Past the end: unspecified.
          for (int64_t d = 0; d < kHeadDim; ++d) {
            EXPECT_EQ(LoadAsFloat(DType::kFloat32, k.ElementPtr({s, d})),
                      LoadAsFloat(DType::kFloat32,
                                  key_.view().ElementPtr({b, h, t, d})))
                << b << " " << h << " " << t << " " << d;
            EXPECT_EQ(LoadAsFloat(DType::kFloat32, v.ElementPtr({s, d})),
                      LoadAsFloat(DType::kFloat32,
                                  value_.view().ElementPtr({b, h, t, d})));
          }
        }
      }
    }
  }
}

TEST_F(KVViewTest, SlabPointsIntoThePoolAtTheLayoutOffset) {
  const KVPool* pool = view().pool();
  const KVLayout& layout = pool->layout();
  const BlockTable& table = view().tables()[1];
  const ConstTensorView slab = view().Slab(KV::kValue, 1, 2, 1);
  EXPECT_EQ(slab.data(), pool->BlockData(table[1]) +
                             layout.ElementOffset(0, KV::kValue, 2, 0) *
                                 SizeOf(layout.dtype));
}

TEST_F(KVViewTest, GatherIntoContiguousTensorsWithPaddedOuterAxes) {
  // Same dtype and (tokens, dim) rows contiguous: the memcpy path, even
  // though the heads axis is a slice of a wider tensor.
  Tensor big_key =
      *Full(DType::kFloat32, Shape({kBatch, kHeads + 2, kLength, kHeadDim}),
            kSentinel);
  Tensor big_value =
      *Full(DType::kFloat32, Shape({kBatch, kHeads + 2, kLength, kHeadDim}),
            kSentinel);
  const Shape shape = view().shape();
  TensorView k(big_key.view().ElementPtr({0, 1, 0, 0}), DType::kFloat32, shape,
               big_key.view().strides());
  TensorView v(big_value.view().ElementPtr({0, 1, 0, 0}), DType::kFloat32,
               shape, big_value.view().strides());
  ASSERT_THAT(view().GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(k, key_.view()));
  EXPECT_TRUE(TensorsEqual(v, value_.view()));
  const int64_t lo[4] = {0, 1, 0, 0};
  const int64_t hi[4] = {kBatch, kHeads + 1, kLength, kHeadDim};
  EXPECT_EQ(CountChangedOutside(big_key, lo, hi, kSentinel), 0);
  EXPECT_EQ(CountChangedOutside(big_value, lo, hi, kSentinel), 0);
}

TEST_F(KVViewTest, GatherIntoAPermutedView) {
  // A (batch, length, heads, dim) tensor seen as (batch, heads, length, dim):
  // the "BLHD" layout many attention kernels want.
  Tensor blhd_key =
      *Zeros(DType::kFloat32, Shape({kBatch, kLength, kHeads, kHeadDim}));
  Tensor blhd_value =
      *Zeros(DType::kFloat32, Shape({kBatch, kLength, kHeads, kHeadDim}));
  const Strides strides = {kLength * kHeads * kHeadDim, kHeadDim,
                           kHeads * kHeadDim, 1};
  TensorView k(blhd_key.data(), DType::kFloat32, view().shape(), strides);
  TensorView v(blhd_value.data(), DType::kFloat32, view().shape(), strides);
  ASSERT_THAT(view().GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(k, key_.view()));
  EXPECT_TRUE(TensorsEqual(v, value_.view()));
  // Check the raw BLHD bytes too: [b][t][h][d] == key[b][h][t][d].
  for (int64_t b = 0; b < kBatch; ++b) {
    for (int64_t t = 0; t < kLength; ++t) {
      for (int64_t h = 0; h < kHeads; ++h) {
        for (int64_t d = 0; d < kHeadDim; ++d) {
          EXPECT_EQ(LoadAsFloat(DType::kFloat32,
                                blhd_key.view().ElementPtr({b, t, h, d})),
                    LoadAsFloat(DType::kFloat32,
                                key_.view().ElementPtr({b, h, t, d})));
        }
      }
    }
  }
}

TEST_F(KVViewTest, GatherIntoAViewWithTransposedInnerAxes) {
  // (batch, heads, dim, length) storage: the innermost output stride is not 1.
  Tensor bhdl_key =
      *Zeros(DType::kFloat32, Shape({kBatch, kHeads, kHeadDim, kLength}));
  Tensor bhdl_value =
      *Zeros(DType::kFloat32, Shape({kBatch, kHeads, kHeadDim, kLength}));
  const Strides strides = {kHeads * kHeadDim * kLength, kHeadDim * kLength, 1,
                           kLength};
  TensorView k(bhdl_key.data(), DType::kFloat32, view().shape(), strides);
  TensorView v(bhdl_value.data(), DType::kFloat32, view().shape(), strides);
  ASSERT_THAT(view().GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(k, key_.view()));
  EXPECT_TRUE(TensorsEqual(v, value_.view()));
}

TEST_F(KVViewTest, GatherIntoASliceOfABiggerTensorLeavesTheRest) {
  // Window [1:3, 0:3, 2:12, 1:5] of a (3, 3, 13, 6) tensor.
  const Shape big_shape({kBatch + 1, kHeads, kLength + 3, kHeadDim + 2});
  Tensor big_key = *Full(DType::kFloat32, big_shape, kSentinel);
  Tensor big_value = *Full(DType::kFloat32, big_shape, kSentinel);
  const int64_t lo[4] = {1, 0, 2, 1};
  const int64_t hi[4] = {kBatch + 1, kHeads, kLength + 2, kHeadDim + 1};
  TensorView k(big_key.view().ElementPtr(lo), DType::kFloat32, view().shape(),
               big_key.view().strides());
  TensorView v(big_value.view().ElementPtr(lo), DType::kFloat32, view().shape(),
               big_value.view().strides());
  ASSERT_THAT(view().GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(k, key_.view()));
  EXPECT_TRUE(TensorsEqual(v, value_.view()));
  EXPECT_EQ(CountChangedOutside(big_key, lo, hi, kSentinel), 0);
  EXPECT_EQ(CountChangedOutside(big_value, lo, hi, kSentinel), 0);
}

TEST_F(KVViewTest, GatherIntoAViewWithReversedTokens) {
  // Negative token stride: output token t lands at storage row length-1-t.
  Tensor key_rev = *Zeros(DType::kFloat32, view().shape());
  Tensor value_rev = *Zeros(DType::kFloat32, view().shape());
  const Strides strides = {kHeads * kLength * kHeadDim, kLength * kHeadDim,
                           -kHeadDim, 1};
  TensorView k(key_rev.view().ElementPtr({0, 0, kLength - 1, 0}),
               DType::kFloat32, view().shape(), strides);
  TensorView v(value_rev.view().ElementPtr({0, 0, kLength - 1, 0}),
               DType::kFloat32, view().shape(), strides);
  ASSERT_THAT(view().GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(k, key_.view()));
  EXPECT_TRUE(TensorsEqual(v, value_.view()));
  EXPECT_EQ(
      LoadAsFloat(DType::kFloat32, key_rev.view().ElementPtr({1, 2, 0, 3})),
      LoadAsFloat(DType::kFloat32,
                  key_.view().ElementPtr({1, 2, kLength - 1, 3})));
}

// The float32 cache gathered into narrower outputs, contiguous and strided.
class KVViewNarrowingTest : public KVViewTest,
                            public ::testing::WithParamInterface<DType> {};

TEST_P(KVViewNarrowingTest, GatherIntoContiguousOutputsRoundsLikeCopy) {
  const DType out = GetParam();
  Tensor k = *Zeros(out, view().shape());
  Tensor v = *Zeros(out, view().shape());
  ASSERT_THAT(view().GatherInto(k.view(), v.view()), IsOk());
  EXPECT_TRUE(TensorsEqual(k.view(), Converted(key_.view(), out).view()));
  EXPECT_TRUE(TensorsEqual(v.view(), Converted(value_.view(), out).view()));
  // And it is the input to within the output's precision.
  const double rtol = out == DType::kFloat16 ? 1.0 / 1024 : 1.0 / 128;
  EXPECT_TRUE(TensorsAllClose(k.view(), key_.view(), rtol, 0.0));
  EXPECT_TRUE(TensorsAllClose(v.view(), value_.view(), rtol, 0.0));
}

TEST_P(KVViewNarrowingTest, GatherIntoPermutedSlicedOutputsConverts) {
  // BLHD storage with one spare head on each side, in the output dtype.
  const DType out = GetParam();
  const Shape big_shape({kBatch, kLength, kHeads + 2, kHeadDim});
  Tensor big_key = *Full(out, big_shape, kSentinel);
  Tensor big_value = *Full(out, big_shape, kSentinel);
  const Strides strides = {kLength * (kHeads + 2) * kHeadDim, kHeadDim,
                           (kHeads + 2) * kHeadDim, 1};
  TensorView k(big_key.view().ElementPtr({0, 0, 1, 0}), out, view().shape(),
               strides);
  TensorView v(big_value.view().ElementPtr({0, 0, 1, 0}), out, view().shape(),
               strides);
  ASSERT_THAT(view().GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(k, Converted(key_.view(), out).view()));
  EXPECT_TRUE(TensorsEqual(v, Converted(value_.view(), out).view()));
  const int64_t lo[4] = {0, 0, 1, 0};
  const int64_t hi[4] = {kBatch, kLength, kHeads + 1, kHeadDim};
  EXPECT_EQ(CountChangedOutside(big_key, lo, hi, kSentinel), 0);
  EXPECT_EQ(CountChangedOutside(big_value, lo, hi, kSentinel), 0);
}

INSTANTIATE_TEST_SUITE_P(OutputDTypes, KVViewNarrowingTest,
                         ::testing::Values(DType::kFloat16, DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// Narrow caches gathered back into float32 (exact widening) or each other.
struct Conversion {
  DType cache;
  DType out;
};

class KVViewWideningTest : public ::testing::TestWithParam<Conversion> {};

TEST_P(KVViewWideningTest, GatherIntoAnotherDTypeMatchesCopy) {
  const Conversion c = GetParam();
  std::unique_ptr<DynamicKVCache> cache = MakeCache();
  const Shape shape({kBatch, kHeads, kLength, kHeadDim});
  const Tensor key = MakeInput(c.cache, shape, 1.0f);
  const Tensor value = MakeInput(c.cache, shape, -1.0f);
  absl::StatusOr<KVView> view = cache->Update(key.view(), value.view(), 0);
  ASSERT_THAT(view, IsOk());
  ASSERT_EQ(view->dtype(), c.cache);

  // Contiguous outputs.
  Tensor k = *Zeros(c.out, shape);
  Tensor v = *Zeros(c.out, shape);
  ASSERT_THAT(view->GatherInto(k.view(), v.view()), IsOk());
  EXPECT_TRUE(TensorsEqual(k.view(), Converted(key.view(), c.out).view()));
  EXPECT_TRUE(TensorsEqual(v.view(), Converted(value.view(), c.out).view()));

  // Transposed (batch, heads, dim, length) outputs.
  Tensor kt = *Zeros(c.out, Shape({kBatch, kHeads, kHeadDim, kLength}));
  Tensor vt = *Zeros(c.out, Shape({kBatch, kHeads, kHeadDim, kLength}));
  const Strides strides = {kHeads * kHeadDim * kLength, kHeadDim * kLength, 1,
                           kLength};
  TensorView kv(kt.data(), c.out, shape, strides);
  TensorView vv(vt.data(), c.out, shape, strides);
  ASSERT_THAT(view->GatherInto(kv, vv), IsOk());
  EXPECT_TRUE(TensorsEqual(kv, Converted(key.view(), c.out).view()));
  EXPECT_TRUE(TensorsEqual(vv, Converted(value.view(), c.out).view()));
  if (c.out == DType::kFloat32) {  // Widening is exact.
    EXPECT_TRUE(TensorsAllClose(kv, key.view(), 0.0, 0.0));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Conversions, KVViewWideningTest,
    ::testing::Values(Conversion{DType::kFloat16, DType::kFloat32},
                      Conversion{DType::kBFloat16, DType::kFloat32},
                      Conversion{DType::kFloat16, DType::kBFloat16},
                      Conversion{DType::kBFloat16, DType::kFloat16}),
    [](const ::testing::TestParamInfo<Conversion>& info) {
      return std::string(DTypeName(info.param.cache)) + "To" +
             std::string(DTypeName(info.param.out));
    });

TEST_F(KVViewTest, GatherIntoTheWrongShapeFailsAndLeavesTheOutputsUntouched) {
  const Shape right = view().shape();
  const Shape short_by_one({kBatch, kHeads, kLength - 1, kHeadDim});
  struct Case {
    Shape key;
    Shape value;
  };
  for (const Case& c :
       {Case{short_by_one, right}, Case{right, short_by_one},
        Case{Shape({kBatch, kHeads, kLength * kHeadDim}), right},
        Case{right, Shape({kBatch + 1, kHeads, kLength, kHeadDim})}}) {
    Tensor k = *Full(DType::kFloat16, c.key, kSentinel);
    Tensor v = *Full(DType::kFloat32, c.value, kSentinel);
    EXPECT_THAT(view().GatherInto(k.view(), v.view()),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("must have shape (2, 3, 10, 4)")))
        << c.key << " " << c.value;
    // Not even the output of the right shape was written.
    const std::vector<int64_t> none(static_cast<size_t>(k.rank()), 0);
    EXPECT_EQ(CountChangedOutside(k, none, none, kSentinel), 0);
    const std::vector<int64_t> none_v(static_cast<size_t>(v.rank()), 0);
    EXPECT_EQ(CountChangedOutside(v, none_v, none_v, kSentinel), 0);
  }
}

TEST_F(KVViewTest, GatherIntoNamesBothShapesInTheError) {
  Tensor k = *Zeros(DType::kFloat32, Shape({1, 2, 3, 4}));
  Tensor v = *Zeros(DType::kFloat32, view().shape());
  EXPECT_THAT(view().GatherInto(k.view(), v.view()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("got (1, 2, 3, 4) and (2, 3, 10, 4)")));
}

TEST_F(KVViewTest, ViewsSpanAppendedUpdates) {
  const Shape more({kBatch, kHeads, 3, kHeadDim});
  const Tensor key2 = MakeInput(DType::kFloat32, more, 2.0f);
  const Tensor value2 = MakeInput(DType::kFloat32, more, -2.0f);
  absl::StatusOr<KVView> view = cache_->Update(key2.view(), value2.view(), 0);
  ASSERT_THAT(view, IsOk());
  ASSERT_EQ(view->length(), kLength + 3);

  // A strided float16 gather of the 13 tokens: (B, L, H, D) storage.
  const int64_t len = kLength + 3;
  Tensor k = *Zeros(DType::kFloat16, Shape({kBatch, len, kHeads, kHeadDim}));
  Tensor v = *Zeros(DType::kFloat16, Shape({kBatch, len, kHeads, kHeadDim}));
  const Strides strides = {len * kHeads * kHeadDim, kHeadDim, kHeads * kHeadDim,
                           1};
  TensorView kv(k.data(), DType::kFloat16, view->shape(), strides);
  TensorView vv(v.data(), DType::kFloat16, view->shape(), strides);
  ASSERT_THAT(view->GatherInto(kv, vv), IsOk());

  const auto window = [&](TensorView t, int64_t t0, int64_t t1) {
    return ConstTensorView(t.ElementPtr({0, 0, t0, 0}), t.dtype(),
                           Shape({kBatch, kHeads, t1 - t0, kHeadDim}),
                           t.strides());
  };
  EXPECT_TRUE(TensorsEqual(window(kv, 0, kLength),
                           Converted(key_.view(), DType::kFloat16).view()));
  EXPECT_TRUE(TensorsEqual(window(kv, kLength, len),
                           Converted(key2.view(), DType::kFloat16).view()));
  EXPECT_TRUE(TensorsEqual(window(vv, kLength, len),
                           Converted(value2.view(), DType::kFloat16).view()));
}

TEST_F(KVViewTest, ACroppedViewStartsMidBlock) {
  ASSERT_THAT(cache_->Crop(7), IsOk());
  absl::StatusOr<std::optional<KVView>> got = cache_->Get(0);
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  const KVView& cropped = **got;
  EXPECT_EQ(cropped.length(), 7);
  EXPECT_NE(cropped.start() % kBlockTokens, 0);  // Token 3 of the old ten.

  absl::StatusOr<KVTensors> dense = cropped.Gather();
  ASSERT_THAT(dense, IsOk());
  EXPECT_TRUE(TensorsEqual(dense->key.view(), Tokens(key_, 3, kLength)));
  EXPECT_TRUE(TensorsEqual(dense->value.view(), Tokens(value_, 3, kLength)));

  // The strided, converting branch with a mid-block start.
  Tensor kt = *Zeros(DType::kBFloat16, Shape({kBatch, kHeads, kHeadDim, 7}));
  Tensor vt = *Zeros(DType::kBFloat16, Shape({kBatch, kHeads, kHeadDim, 7}));
  const Strides strides = {kHeads * kHeadDim * 7, kHeadDim * 7, 1, 7};
  TensorView k(kt.data(), DType::kBFloat16, cropped.shape(), strides);
  TensorView v(vt.data(), DType::kBFloat16, cropped.shape(), strides);
  ASSERT_THAT(cropped.GatherInto(k, v), IsOk());
  EXPECT_TRUE(TensorsEqual(
      k, Converted(Tokens(key_, 3, kLength), DType::kBFloat16).view()));
  EXPECT_TRUE(TensorsEqual(
      v, Converted(Tokens(value_, 3, kLength), DType::kBFloat16).view()));
}

TEST(KVViewLayersTest, EachLayerViewSeesItsOwnLayer) {
  std::unique_ptr<DynamicKVCache> cache = MakeCache();
  const Shape shape({kBatch, kHeads, 5, kHeadDim});
  const Tensor k0 = MakeInput(DType::kFloat32, shape, 1.0f);
  const Tensor k1 = MakeInput(DType::kFloat32, shape, 3.0f);
  ASSERT_THAT(cache->Update(k0.view(), k0.view(), 0), IsOk());
  absl::StatusOr<KVView> v1 = cache->Update(k1.view(), k1.view(), 1);
  ASSERT_THAT(v1, IsOk());
  EXPECT_EQ(v1->layer(), 1);
  // Views made before the second layer may be invalid (private-pool growth),
  // so read layer 0 again through Get.
  absl::StatusOr<std::optional<KVView>> v0 = cache->Get(0);
  ASSERT_THAT(v0, IsOk());
  ASSERT_TRUE(v0->has_value());
  EXPECT_EQ((*v0)->layer(), 0);
  EXPECT_TRUE(TensorsEqual((*v0)->Gather()->key.view(), k0.view()));
  EXPECT_TRUE(TensorsEqual(v1->Gather()->key.view(), k1.view()));
}

using KVViewDeathTest = KVViewTest;

TEST_F(KVViewDeathTest, SlabOutsideTheViewAborts) {
  EXPECT_DEATH(view().Slab(KV::kKey, kBatch, 0, 0),
               "Slab\\(row 2, head 0\\) outside batch 2, heads 3");
  EXPECT_DEATH(view().Slab(KV::kKey, -1, 0, 0), "outside batch 2");
  EXPECT_DEATH(view().Slab(KV::kValue, 0, kHeads, 0),
               "Slab\\(row 0, head 3\\) outside");
  const int32_t blocks = view().tables()[0].num_blocks();
  EXPECT_DEATH(view().Slab(KV::kKey, 0, 0, blocks),
               "Slab block .* outside table of");
  EXPECT_DEATH(view().Slab(KV::kKey, 0, 0, -1), "Slab block -1 outside");
}

TEST(KVViewConstructionDeathTest, ANullPoolAborts) {
  EXPECT_DEATH(KVView(nullptr, {}, 0, 0, 0, 1, 1), "KVView needs a pool");
}

}  // namespace
}  // namespace pagedkv
