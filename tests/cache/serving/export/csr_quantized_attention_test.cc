// CsrDecodeAttention on int8 and fp8 pools: the kernel reads the codes and
// scales in place, so its output must equal the same kernel on a float32
// pool holding the dequantized values (dequantize-then-attend), and stay
// within the quantization error of attention over the original values.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "cache/serving/csr_decode_attention.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

constexpr int32_t kLayers = 2, kHeads = 2, kDim = 32, kBlockTokens = 8;
constexpr int32_t kBlocks = 6, kQueryHeads = 4;

KVLayout Layout(KVStorage storage) {
  return KVLayout{.num_layers = kLayers,
                  .num_kv_heads = kHeads,
                  .head_dim = kDim,
                  .dtype = DType::kFloat32,
                  .block_tokens = kBlockTokens,
                  .storage = storage};
}

std::unique_ptr<KVPool> MakePool(KVStorage storage) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = Layout(storage), .num_blocks = kBlocks});
  EXPECT_TRUE(pool.ok()) << pool.status();
  return std::move(*pool);
}

// Writes `values` ([block][layer][K|V][head][slot][dim] floats) into every
// slot of every block of `pool`.
void Fill(KVPool& pool, const std::vector<float>& values) {
  const int64_t head_run = int64_t{kBlockTokens} * kDim;
  for (int32_t b = 0; b < kBlocks; ++b) {
    for (int32_t layer = 0; layer < kLayers; ++layer) {
      const float* k =
          &values[((int64_t{b} * kLayers + layer) * 2 + 0) * kHeads * head_run];
      const float* v = k + kHeads * head_run;
      const TokenSource key{.data = reinterpret_cast<const std::byte*>(k),
                            .head_stride = head_run,
                            .token_stride = kDim,
                            .dim_stride = 1};
      TokenSource value = key;
      value.data = reinterpret_cast<const std::byte*>(v);
      WriteTokenRun(pool, BlockId(b), layer, 0, kBlockTokens, key, value);
    }
  }
}

// The float values a quantized pool holds, in Fill's order.
std::vector<float> Dequantized(const KVPool& pool) {
  const KVLayout& l = pool.layout();
  std::vector<float> out;
  for (int32_t b = 0; b < kBlocks; ++b) {
    const std::byte* block = pool.BlockData(BlockId(b));
    for (int32_t layer = 0; layer < kLayers; ++layer) {
      for (const KV kv : {KV::kKey, KV::kValue}) {
        for (int32_t h = 0; h < kHeads; ++h) {
          std::vector<float> run(static_cast<size_t>(kBlockTokens * kDim));
          DequantizeVectors(l.quant_type(),
                            block + l.DataOffset(layer, kv, h, 0),
                            block + l.ScaleOffset(layer, kv, h, 0),
                            kBlockTokens, kDim, DType::kFloat32, run.data());
          out.insert(out.end(), run.begin(), run.end());
        }
      }
    }
  }
  return out;
}

class CsrQuantizedAttentionTest : public ::testing::TestWithParam<KVStorage> {
};

TEST_P(CsrQuantizedAttentionTest, EqualsDequantizeThenAttend) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist;
  std::vector<float> values(static_cast<size_t>(kBlocks) * kLayers * 2 *
                            kHeads * kBlockTokens * kDim);
  for (float& x : values) x = dist(rng);
  std::unique_ptr<KVPool> quantized = MakePool(GetParam());
  std::unique_ptr<KVPool> reference = MakePool(KVStorage::kSame);
  std::unique_ptr<KVPool> original = MakePool(KVStorage::kSame);
  Fill(*quantized, values);
  Fill(*reference, Dequantized(*quantized));
  Fill(*original, values);

  // Three ragged rows over shared and private pages, one without pages.
  const std::vector<int32_t> indptr = {0, 3, 3, 5, 6};
  const std::vector<int32_t> indices = {4, 0, 2, 0, 5, 1};
  const std::vector<int32_t> last = {5, 1, 8, 1};
  absl::StatusOr<Tensor> query =
      Tensor::Create(DType::kFloat32, Shape({4, kQueryHeads, kDim}));
  ASSERT_TRUE(query.ok());
  for (int64_t i = 0; i < query->num_elements(); ++i) {
    query->data_as<float>()[i] = dist(rng);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  for (int32_t layer = 0; layer < kLayers; ++layer) {
    Tensor outs[3] = {
        *Tensor::Create(DType::kFloat32, Shape({4, kQueryHeads, kDim})),
        *Tensor::Create(DType::kFloat32, Shape({4, kQueryHeads, kDim})),
        *Tensor::Create(DType::kFloat32, Shape({4, kQueryHeads, kDim}))};
    const KVPool* pools[3] = {quantized.get(), reference.get(), original.get()};
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(CsrDecodeAttention(query->view(), *pools[i], layer, indptr,
                                     indices, last, scale, outs[i].view())
                      .ok());
    }
    const float tolerance = GetParam() == KVStorage::kInt8 ? 0.05f : 0.15f;
    for (int64_t i = 0; i < outs[0].num_elements(); ++i) {
      const float got = outs[0].data_as<float>()[i];
      // The same floats in the same order: equal up to nothing.
      EXPECT_EQ(got, outs[1].data_as<float>()[i]) << "layer " << layer << " " << i;
      EXPECT_NEAR(got, outs[2].data_as<float>()[i], tolerance) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Storages, CsrQuantizedAttentionTest,
                         ::testing::Values(KVStorage::kInt8,
                                           KVStorage::kFp8E4M3),
                         [](const auto& info) {
                           return std::string(KVStorageName(info.param));
                         });

}  // namespace
}  // namespace pagedkv
