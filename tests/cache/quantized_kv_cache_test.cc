// The lucid caches on quantized (int8 / fp8 e4m3) pools, issue #15: Update
// quantizes, Get/Gather dequantize to the cache's dtype, copy-on-write and
// crops keep the scales with the codes, the attention kernel reads the codes
// in place, and every block goes back to the pool.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/check.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/paged_attention.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/quantize.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensor_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::TensorsAllClose;
using ::pagedkv::testing::TensorsEqual;

constexpr int64_t kHeads = 2;
constexpr int64_t kDim = 8;

Tensor Random(DType dtype, Shape shape, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> values(static_cast<size_t>(shape.num_elements()));
  for (float& v : values) v = dist(rng);
  return *FromVector(dtype, shape, values);
}

// What a quantized cache must return for `input` (B, H, S, D): every
// (b, h, t) vector quantized and dequantized on its own.
Tensor Expected(QuantType type, ConstTensorView input) {
  Tensor out = *Zeros(input.dtype(), input.shape());
  std::vector<std::byte> codes(input.dim(3));
  for (int64_t b = 0; b < input.dim(0); ++b) {
    for (int64_t h = 0; h < input.dim(1); ++h) {
      for (int64_t t = 0; t < input.dim(2); ++t) {
        const int64_t idx[4] = {b, h, t, 0};
        const float scale =
            QuantizeVector(type, input.dtype(), input.ElementPtr(idx),
                           input.dim(3), codes.data());
        DequantizeVector(type, codes.data(), scale, input.dim(3), input.dtype(),
                         out.view().ElementPtr(idx));
      }
    }
  }
  return out;
}

// Concatenates (B, H, S_i, D) tensors along the sequence axis.
Tensor Concat(const std::vector<const Tensor*>& parts) {
  int64_t seq = 0;
  for (const Tensor* p : parts) seq += p->dim(2);
  const Tensor& first = *parts[0];
  Tensor out = *Zeros(first.dtype(), {first.dim(0), first.dim(1), seq, kDim});
  int64_t t0 = 0;
  for (const Tensor* p : parts) {
    for (int64_t b = 0; b < p->dim(0); ++b) {
      for (int64_t h = 0; h < p->dim(1); ++h) {
        for (int64_t t = 0; t < p->dim(2); ++t) {
          for (int64_t d = 0; d < kDim; ++d) {
            const int64_t src[4] = {b, h, t, d};
            const int64_t dst[4] = {b, h, t0 + t, d};
            StoreFromFloat(out.dtype(),
                           LoadAsFloat(p->dtype(), p->view().ElementPtr(src)),
                           out.view().ElementPtr(dst));
          }
        }
      }
    }
    t0 += p->dim(2);
  }
  return out;
}

class QuantizedCacheTest
    : public ::testing::TestWithParam<std::tuple<KVStorage, DType>> {
 protected:
  KVStorage storage() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }
  QuantType type() const { return *QuantTypeOf(storage()); }

  std::unique_ptr<KVPool> MakePool(int32_t num_blocks) {
    absl::StatusOr<std::unique_ptr<KVPool>> pool =
        KVPool::Create({.layout = {.num_layers = 2,
                                   .num_kv_heads = kHeads,
                                   .head_dim = kDim,
                                   .dtype = dtype(),
                                   .block_tokens = 4,
                                   .storage = storage()},
                        .num_blocks = num_blocks});
    PKV_CHECK(pool.ok(), "%s", pool.status().ToString());
    return std::move(*pool);
  }
};

TEST_P(QuantizedCacheTest, SharedPoolUpdatesComeBackDequantized) {
  std::mt19937 rng(11);
  std::unique_ptr<KVPool> pool = MakePool(64);
  {
    DynamicKVCache cache(pool.get());
    const Tensor k0 = Random(dtype(), {2, kHeads, 9, kDim}, rng);
    const Tensor v0 = Random(dtype(), {2, kHeads, 9, kDim}, rng);
    ASSERT_THAT(cache.Update(k0.view(), v0.view(), 1), IsOk());
    std::vector<const Tensor*> keys = {&k0}, values = {&v0};
    std::vector<Tensor> steps;
    steps.reserve(6);
    for (int i = 0; i < 3; ++i) {
      steps.push_back(Random(dtype(), {2, kHeads, 1, kDim}, rng));
      steps.push_back(Random(dtype(), {2, kHeads, 1, kDim}, rng));
      ASSERT_THAT(cache.Update(steps[2 * i].view(), steps[2 * i + 1].view(), 1),
                  IsOk());
      keys.push_back(&steps[2 * i]);
      values.push_back(&steps[2 * i + 1]);
    }
    EXPECT_EQ(cache.dtype(), dtype());
    absl::StatusOr<std::optional<KVView>> kv = cache.Get(1);
    ASSERT_THAT(kv, IsOk());
    absl::StatusOr<KVTensors> dense = (*kv)->Gather();
    ASSERT_THAT(dense, IsOk());
    EXPECT_EQ(dense->key.dtype(), dtype());
    const Tensor all_k = Concat(keys), all_v = Concat(values);
    EXPECT_TRUE(
        TensorsEqual(dense->key.view(), Expected(type(), all_k.view()).view()));
    EXPECT_TRUE(TensorsEqual(dense->value.view(),
                             Expected(type(), all_v.view()).view()));
    // And within the documented error of the inputs (normal values: amax
    // is a few units; int8 scale/2 <= 0.03, fp8 1/16 relative).
    const double tol = type() == QuantType::kInt8 ? 0.04 : 0.07;
    EXPECT_TRUE(TensorsAllClose(dense->key.view(), all_k.view(), tol, tol));

    // A float32 destination of any strides dequantizes too.
    Tensor f32_k = *Zeros(DType::kFloat32, (*kv)->shape());
    Tensor f32_v = *Zeros(DType::kFloat32, (*kv)->shape());
    ASSERT_THAT((*kv)->GatherInto(f32_k.view(), f32_v.view()), IsOk());
    EXPECT_TRUE(TensorsAllClose(f32_k.view(), dense->key.view(), 1e-2, 1e-3));
  }
  EXPECT_EQ(pool->books().num_free_blocks(), pool->num_blocks());
}

TEST_P(QuantizedCacheTest, CopyOnWriteCropAndAttentionReadTheScales) {
  std::mt19937 rng(5);
  std::unique_ptr<KVPool> pool = MakePool(128);
  {
    DynamicKVCache cache(pool.get());
    const Tensor k = Random(dtype(), {2, kHeads, 13, kDim}, rng);
    const Tensor v = Random(dtype(), {2, kHeads, 13, kDim}, rng);
    ASSERT_THAT(cache.Update(k.view(), v.view(), 0), IsOk());
    ASSERT_THAT(cache.BatchRepeatInterleave(2), IsOk());
    ASSERT_THAT(cache.ReorderCache(std::vector<int64_t>{3, 0, 1, 1}), IsOk());
    const Tensor sk = Random(dtype(), {4, kHeads, 1, kDim}, rng);
    const Tensor sv = Random(dtype(), {4, kHeads, 1, kDim}, rng);
    ASSERT_THAT(cache.Update(sk.view(), sv.view(), 0), IsOk());
    EXPECT_GT(cache.stats().cow_copies, 0);
    ASSERT_THAT(cache.Crop(9), IsOk());  // Starts mid-block.

    absl::StatusOr<std::optional<KVView>> kv = cache.Get(0);
    ASSERT_THAT(kv, IsOk());
    absl::StatusOr<KVTensors> dense = (*kv)->Gather();
    ASSERT_THAT(dense, IsOk());
    // Row 1 is beam 0 = input row 0; its last 8 prefill tokens, then its step.
    const Tensor expected_k = Expected(type(), k.view());
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t t = 0; t < 8; ++t) {
        for (int64_t d = 0; d < kDim; ++d) {
          const int64_t got[4] = {1, h, t, d};
          const int64_t want[4] = {0, h, 5 + t, d};
          ASSERT_EQ(LoadAsFloat(dtype(), dense->key.view().ElementPtr(got)),
                    LoadAsFloat(dtype(), expected_k.view().ElementPtr(want)));
        }
      }
    }

    const Tensor query = Random(DType::kFloat32, {4, 4, kDim}, rng);
    Tensor paged = *Zeros(DType::kFloat32, {4, 4, kDim});
    ASSERT_THAT(PagedDecodeAttention(query.view(), **kv, 0.35f, paged.view()),
                IsOk());
    // Reference: the same kernel math over the gathered (dequantized)
    // tensors, on an unquantized float32 pool.
    DynamicKVCache plain;
    Tensor gk = *Zeros(DType::kFloat32, dense->key.shape());
    Tensor gv = *Zeros(DType::kFloat32, dense->key.shape());
    ASSERT_THAT((*kv)->GatherInto(gk.view(), gv.view()), IsOk());
    absl::StatusOr<KVView> ref = plain.Update(gk.view(), gv.view(), 0);
    ASSERT_THAT(ref, IsOk());
    Tensor want = *Zeros(DType::kFloat32, {4, 4, kDim});
    ASSERT_THAT(PagedDecodeAttention(query.view(), *ref, 0.35f, want.view()),
                IsOk());
    EXPECT_TRUE(TensorsAllClose(paged.view(), want.view(), 1e-4, 1e-4));
    cache.CheckInvariants();
  }
  EXPECT_EQ(pool->books().num_free_blocks(), pool->num_blocks());
}

TEST_P(QuantizedCacheTest, PrivatePoolsQuantizeThroughTheStorageOption) {
  std::mt19937 rng(2);
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> cache =
      DynamicKVCache::Create({.block_tokens = 4, .storage = storage()});
  ASSERT_THAT(cache, IsOk());
  const Tensor k = Random(dtype(), {1, kHeads, 6, kDim}, rng);
  ASSERT_THAT((*cache)->Update(k.view(), k.view(), 3), IsOk());  // Relayout.
  ASSERT_THAT((*cache)->Update(k.view(), k.view(), 5), IsOk());
  EXPECT_EQ((*cache)->pool()->layout().storage, storage());
  absl::StatusOr<std::optional<KVView>> kv = (*cache)->Get(3);
  ASSERT_THAT(kv, IsOk());
  absl::StatusOr<KVTensors> dense = (*kv)->Gather();
  ASSERT_THAT(dense, IsOk());
  EXPECT_TRUE(
      TensorsEqual(dense->key.view(), Expected(type(), k.view()).view()));

  absl::StatusOr<std::unique_ptr<StaticKVCache>> fixed = StaticKVCache::Create(
      {.max_cache_len = 10, .num_layers = 1, .storage = storage()});
  ASSERT_THAT(fixed, IsOk());
  const Tensor one = Random(dtype(), {1, kHeads, 1, kDim}, rng);
  // A positional write at 7 opens a zero-filled gap [0, 7).
  ASSERT_THAT(
      (*fixed)->Update(one.view(), one.view(), 0, CachePosition::Scalar(7)),
      IsOk());
  kv = (*fixed)->Get(0);
  ASSERT_THAT(kv, IsOk());
  dense = (*kv)->Gather();
  ASSERT_THAT(dense, IsOk());
  const std::vector<float> got = ToFloatVector(dense->value.view());
  const std::vector<float> want =
      ToFloatVector(Expected(type(), one.view()).view());
  const int64_t length = dense->value.dim(2);
  ASSERT_GE(length, 8);
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t t = 0; t < length; ++t) {
      for (int64_t d = 0; d < kDim; ++d) {
        const float g = got[(h * length + t) * kDim + d];
        EXPECT_EQ(g, t == 7 ? want[h * kDim + d] : 0.0f) << h << " " << t;
      }
    }
  }
}

TEST_P(QuantizedCacheTest, ANaNPoisonsOnlyItsOwnVector) {
  std::unique_ptr<KVPool> pool = MakePool(4);
  DynamicKVCache cache(pool.get());
  Tensor k = *Full(dtype(), {1, kHeads, 2, kDim}, 0.5);
  StoreFromFloat(dtype(), std::numeric_limits<float>::quiet_NaN(),
                 k.view().ElementPtr({0, 1, 0, 3}));
  ASSERT_THAT(cache.Update(k.view(), k.view(), 0), IsOk());
  absl::StatusOr<KVTensors> dense = (*cache.Get(0))->Gather();
  ASSERT_THAT(dense, IsOk());
  const std::vector<float> got = ToFloatVector(dense->key.view());
  for (int64_t i = 0; i < static_cast<int64_t>(got.size()); ++i) {
    const bool poisoned = i / kDim == 2;  // Head 1, token 0.
    EXPECT_EQ(std::isnan(got[i]), poisoned) << i;
    if (!poisoned) EXPECT_EQ(got[i], 0.5f) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, QuantizedCacheTest,
    ::testing::Combine(::testing::Values(KVStorage::kInt8, KVStorage::kFp8E4M3),
                       ::testing::Values(DType::kFloat32, DType::kFloat16,
                                         DType::kBFloat16)));

TEST(QuantizedKVViewDeathTest, SlabOfAQuantizedPoolIsABug) {
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> cache =
      DynamicKVCache::Create({.storage = KVStorage::kInt8});
  ASSERT_THAT(cache, IsOk());
  const Tensor k = *Full(DType::kFloat32, {1, 1, 1, 4}, 1.0);
  absl::StatusOr<KVView> kv = (*cache)->Update(k.view(), k.view(), 0);
  ASSERT_THAT(kv, IsOk());
  EXPECT_DEATH(kv->Slab(KV::kKey, 0, 0, 0), "QuantizedSlabAt");
}

TEST(QuantizedCacheOptionsTest, RejectsAnInvalidStorage) {
  EXPECT_EQ(DynamicKVCache::Create({.storage = static_cast<KVStorage>(7)})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pagedkv
