// Quantized KV storage (issue #15): the block layout of int8 / fp8 pools and
// the token writes into it.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"

namespace pagedkv {
namespace {

KVLayout Layout(KVStorage storage, DType dtype = DType::kFloat16) {
  return KVLayout{.num_layers = 3,
                  .num_kv_heads = 2,
                  .head_dim = 5,
                  .dtype = dtype,
                  .block_tokens = 3,
                  .storage = storage};
}

TEST(QuantizedLayoutTest, BlockBytesAreCodesPlusOneScalePerVector) {
  const KVLayout big{.num_layers = 32,
                     .num_kv_heads = 8,
                     .head_dim = 128,
                     .dtype = DType::kFloat16,
                     .block_tokens = 16,
                     .storage = KVStorage::kInt8};
  EXPECT_EQ(big.block_bytes(), size_t{32} * 2 * 8 * 16 * (128 + 4));
  KVLayout fp16 = big;
  fp16.storage = KVStorage::kSame;
  EXPECT_EQ(fp16.block_bytes(), size_t{2} << 20);  // Unchanged.
  EXPECT_GE(static_cast<double>(fp16.block_bytes()) / big.block_bytes(), 1.9);
  // The code bytes of a layer are padded to 4 so that scales are aligned:
  // 2 * 2 * 3 * 5 = 60 code bytes, 12 scales.
  EXPECT_EQ(Layout(KVStorage::kFp8E4M3).layer_bytes(), size_t{60 + 48});
  KVLayout odd = Layout(KVStorage::kInt8);
  odd.head_dim = 1;
  odd.num_kv_heads = 1;
  odd.block_tokens = 1;
  EXPECT_EQ(odd.layer_bytes(), size_t{4 + 8});
}

TEST(QuantizedLayoutTest, EveryCodeAndScaleHasItsOwnBytes) {
  const KVLayout layout = Layout(KVStorage::kInt8);
  std::vector<int> owners(layout.block_bytes(), 0);
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    for (KV kv : {KV::kKey, KV::kValue}) {
      for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
        for (int32_t s = 0; s < layout.block_tokens; ++s) {
          const size_t data = layout.DataOffset(l, kv, h, s);
          for (int32_t d = 0; d < layout.head_dim; ++d) ++owners.at(data + d);
          const size_t scale = layout.ScaleOffset(l, kv, h, s);
          EXPECT_EQ(scale % 4, 0u);
          for (int i = 0; i < 4; ++i) ++owners.at(scale + i);
        }
      }
    }
  }
  int unused = 0;
  for (int n : owners) {
    EXPECT_LE(n, 1);
    unused += n == 0;
  }
  EXPECT_EQ(unused, 0);  // 60 code bytes need no padding.
}

TEST(QuantizedLayoutTest, StorageIsPartOfTheLayoutIdentity) {
  EXPECT_NE(Layout(KVStorage::kInt8), Layout(KVStorage::kSame));
  EXPECT_NE(Layout(KVStorage::kInt8), Layout(KVStorage::kFp8E4M3));
  EXPECT_EQ(Layout(KVStorage::kSame).ToString(),
            "layers=3 kv_heads=2 head_dim=5 dtype=float16 block_tokens=3");
  EXPECT_EQ(Layout(KVStorage::kInt8).ToString(),
            "layers=3 kv_heads=2 head_dim=5 dtype=float16 block_tokens=3 "
            "storage=int8");
  KVLayout bad = Layout(KVStorage::kInt8);
  bad.storage = static_cast<KVStorage>(9);
  EXPECT_EQ(bad.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Layout(KVStorage::kFp8E4M3).Validate().ok());
}

TEST(QuantizedLayoutTest, ParsesStorageNames) {
  EXPECT_EQ(ParseKVStorage("int8"), KVStorage::kInt8);
  EXPECT_EQ(ParseKVStorage("fp8"), KVStorage::kFp8E4M3);
  EXPECT_EQ(ParseKVStorage("fp8_e4m3"), KVStorage::kFp8E4M3);
  EXPECT_EQ(ParseKVStorage("float16"), KVStorage::kSame);
  EXPECT_EQ(ParseKVStorage("int4"), std::nullopt);
  EXPECT_EQ(QuantTypeOf(KVStorage::kInt8), QuantType::kInt8);
  EXPECT_EQ(QuantTypeOf(KVStorage::kSame), std::nullopt);
}

class QuantizedTokenIoTest
    : public ::testing::TestWithParam<std::tuple<KVStorage, DType>> {
 protected:
  void SetUp() override {
    layout_ = Layout(std::get<0>(GetParam()), std::get<1>(GetParam()));
    absl::StatusOr<std::unique_ptr<KVPool>> pool =
        KVPool::Create({.layout = layout_, .num_blocks = 2});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }

  // Reads back (layer, kv, head, slot) dequantized to float.
  std::vector<float> Read(int32_t layer, KV kv, int32_t head, int32_t slot) {
    const std::byte* block = pool_->BlockData(BlockId(1));
    float scale;
    std::memcpy(&scale, block + layout_.ScaleOffset(layer, kv, head, slot), 4);
    std::vector<float> out(layout_.head_dim);
    DequantizeVector(layout_.quant_type(),
                     block + layout_.DataOffset(layer, kv, head, slot), scale,
                     layout_.head_dim, DType::kFloat32, out.data());
    return out;
  }

  KVLayout layout_;
  std::unique_ptr<KVPool> pool_;
};

TEST_P(QuantizedTokenIoTest, WritesQuantizeEachVectorAndReadsComeBack) {
  // Source (heads, tokens, head_dim) in the layout's dtype, dim stride 1,
  // and a transposed copy with dim stride != 1: same result.
  const int32_t heads = layout_.num_kv_heads, dim = layout_.head_dim;
  const int32_t tokens = 2;
  const size_t elem = SizeOf(layout_.dtype);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::vector<float> values(heads * tokens * dim);
  for (float& v : values) v = dist(rng);
  std::vector<std::byte> k(values.size() * elem), kt(values.size() * elem);
  for (int h = 0; h < heads; ++h) {
    for (int t = 0; t < tokens; ++t) {
      for (int d = 0; d < dim; ++d) {
        const float v = values[(h * tokens + t) * dim + d];
        StoreFromFloat(layout_.dtype, v,
                       &k[((h * tokens + t) * dim + d) * elem]);
        // kt is (heads, dim, tokens).
        StoreFromFloat(layout_.dtype, v,
                       &kt[((h * dim + d) * tokens + t) * elem]);
      }
    }
  }
  const TokenSource key{.data = k.data(),
                        .head_stride = tokens * dim,
                        .token_stride = dim,
                        .dim_stride = 1};
  const TokenSource value{.data = kt.data(),
                          .head_stride = tokens * dim,
                          .token_stride = 1,
                          .dim_stride = tokens};
  std::memset(pool_->BlockData(BlockId(1)), 0x5A, pool_->block_bytes());
  WriteTokenRun(*pool_, BlockId(1), /*layer=*/2, /*slot=*/1, tokens, key,
                value);
  for (int h = 0; h < heads; ++h) {
    for (int t = 0; t < tokens; ++t) {
      const std::vector<float> kk = Read(2, KV::kKey, h, 1 + t);
      const std::vector<float> vv = Read(2, KV::kValue, h, 1 + t);
      for (int d = 0; d < dim; ++d) {
        const float want =
            LoadAsFloat(layout_.dtype, &k[((h * tokens + t) * dim + d) * elem]);
        EXPECT_NEAR(kk[d], want, std::fabs(want) / 16 + 1e-2) << h << t << d;
        EXPECT_EQ(vv[d], kk[d]);
      }
    }
  }
  // Slot 0 of layer 2 and the other layers are untouched.
  EXPECT_EQ(static_cast<int>(pool_->BlockData(
                BlockId(1))[layout_.DataOffset(2, KV::kKey, 0, 0)]),
            0x5A);
  EXPECT_EQ(static_cast<int>(pool_->BlockData(
                BlockId(1))[layout_.DataOffset(1, KV::kValue, 1, 2)]),
            0x5A);

  // Zero fill: codes 0 and scale 0.
  EXPECT_EQ(ZeroTokenRun(*pool_, BlockId(1), 2, 1, 2),
            size_t{2} * heads * 2 * (dim + 4));
  for (int h = 0; h < heads; ++h) {
    EXPECT_THAT(Read(2, KV::kValue, h, 2), ::testing::Each(0.0f));
  }
}

TEST_P(QuantizedTokenIoTest, BlockCopiesCarryTheScales) {
  std::vector<std::byte> src(layout_.num_kv_heads * layout_.head_dim *
                             SizeOf(layout_.dtype));
  for (size_t i = 0; i < src.size() / SizeOf(layout_.dtype); ++i) {
    StoreFromFloat(layout_.dtype, 100.0f + i, &src[i * SizeOf(layout_.dtype)]);
  }
  const TokenSource s{.data = src.data(),
                      .head_stride = layout_.head_dim,
                      .token_stride = layout_.head_dim,
                      .dim_stride = 1};
  WriteTokenRun(*pool_, BlockId(0), 0, 0, 1, s, s);
  pool_->CopyBlock(BlockId(0), BlockId(1));
  absl::StatusOr<std::unique_ptr<KVPool>> other =
      KVPool::Create({.layout = layout_, .num_blocks = 1});
  ASSERT_TRUE(other.ok());
  const BlockId zero(0);
  ASSERT_TRUE(CopyBlocksBetween(*pool_, {&zero, 1}, **other, {&zero, 1}).ok());
  EXPECT_EQ(std::memcmp((*other)->BlockData(zero), pool_->BlockData(zero),
                        pool_->block_bytes()),
            0);
  EXPECT_NEAR(Read(0, KV::kKey, 1, 0)[4], 109.0f, 109.0f / 16);
}

TEST(QuantizedPoolTest, CopiesBetweenDifferentStoragesAreRejected) {
  absl::StatusOr<std::unique_ptr<KVPool>> a =
      KVPool::Create({.layout = Layout(KVStorage::kInt8), .num_blocks = 1});
  absl::StatusOr<std::unique_ptr<KVPool>> b =
      KVPool::Create({.layout = Layout(KVStorage::kFp8E4M3), .num_blocks = 1});
  ASSERT_TRUE(a.ok() && b.ok());
  const BlockId zero(0);
  EXPECT_EQ(CopyBlocksBetween(**a, {&zero, 1}, **b, {&zero, 1}).code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, QuantizedTokenIoTest,
    ::testing::Combine(::testing::Values(KVStorage::kInt8, KVStorage::kFp8E4M3),
                       ::testing::Values(DType::kFloat32, DType::kFloat16,
                                         DType::kBFloat16)));

}  // namespace
}  // namespace pagedkv
