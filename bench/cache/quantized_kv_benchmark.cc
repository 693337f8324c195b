// Quantized KV blocks (issue #15) against float16 blocks, in one binary:
//
//   BM_DecodeAppend/storage   one decode token of 4 rows (8 layers, 8 KV
//                             heads, head_dim 128, float16 input) written
//                             through token_io's WriteTokenRun into the next
//                             slot of each row's block, walking a 128-block
//                             pool so the writes land in cold memory.
//                             storage: 0 = float16 blocks (memcpy per head),
//                             1 = int8, 2 = fp8 e4m3 (quantize per head).
//                             Target: int8 time <= float16 time.
//   BM_Gather/storage         KVView::GatherInto of 1,024 tokens (8 heads,
//                             head_dim 128) into float16 outputs; int8 and
//                             fp8 dequantize on the way.
//   BM_GatherMemcpyBaseline   one memcpy of the same float16 output bytes.
//                             Target: int8 gather >= 0.5x of this baseline's
//                             bytes per second.
//   BM_Capacity/storage       no timing: the counter blocks_per_GiB at a
//                             fixed pool size, and capacity_vs_fp16
//                             (target >= 1.9 for int8).
//
//   bazel run -c opt //bench/cache:quantized_kv_benchmark
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/tensor.h"

namespace pagedkv {
namespace {

constexpr int32_t kLayers = 8;
constexpr int32_t kHeads = 8;
constexpr int32_t kHeadDim = 128;
constexpr int32_t kBlockTokens = 16;
constexpr int32_t kRows = 4;
constexpr int32_t kBlocks = 128;
constexpr int64_t kGatherTokens = 1024;

KVStorage StorageOf(const benchmark::State& state) {
  return static_cast<KVStorage>(state.range(0));
}

KVLayout Layout(KVStorage storage, int32_t layers) {
  return KVLayout{.num_layers = layers,
                  .num_kv_heads = kHeads,
                  .head_dim = kHeadDim,
                  .dtype = DType::kFloat16,
                  .block_tokens = kBlockTokens,
                  .storage = storage};
}

std::unique_ptr<KVPool> MakePool(const KVLayout& layout, int32_t blocks) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = layout, .num_blocks = blocks});
  PKV_CHECK(pool.ok(), "%s", pool.status().ToString());
  for (int32_t b = 0; b < blocks; ++b) {  // Fault every page in.
    std::memset((*pool)->BlockData(BlockId(b)), 0, (*pool)->block_bytes());
  }
  return std::move(*pool);
}

void BM_DecodeAppend(benchmark::State& state) {
  const KVLayout layout = Layout(StorageOf(state), kLayers);
  std::unique_ptr<KVPool> pool = MakePool(layout, kBlocks);
  // One token per row and layer: (heads, 1, head_dim) float16, K and V.
  std::vector<uint16_t> token(kHeads * kHeadDim);
  for (size_t i = 0; i < token.size(); ++i) {
    token[i] = FloatToHalf(0.01f * static_cast<float>(i % 97) - 0.4f);
  }
  const TokenSource src{
      .data = reinterpret_cast<const std::byte*>(token.data()),
      .head_stride = kHeadDim,
      .token_stride = kHeadDim,
      .dim_stride = 1};
  int64_t step = 0;
  for (auto _ : state) {
    const int32_t slot = static_cast<int32_t>(step % kBlockTokens);
    for (int32_t row = 0; row < kRows; ++row) {
      const BlockId block(
          static_cast<int32_t>((step / kBlockTokens * kRows + row) % kBlocks));
      for (int32_t layer = 0; layer < kLayers; ++layer) {
        WriteTokenRun(*pool, block, layer, slot, 1, src, src);
      }
    }
    benchmark::ClobberMemory();
    ++step;
  }
  // Input bytes consumed (float16 K and V), the same for every storage.
  const int64_t input_bytes = int64_t{kRows} * kLayers * 2 * kHeads * kHeadDim *
                              static_cast<int64_t>(sizeof(uint16_t));
  state.SetBytesProcessed(state.iterations() * input_bytes);
  state.SetLabel(std::string(KVStorageName(layout.storage)));
}
BENCHMARK(BM_DecodeAppend)->ArgName("storage")->DenseRange(0, 2);

void BM_Gather(benchmark::State& state) {
  std::unique_ptr<KVPool> pool =
      MakePool(Layout(StorageOf(state), 1), kGatherTokens / kBlockTokens + 1);
  DynamicKVCache cache(pool.get());
  const Shape shape({1, kHeads, kGatherTokens, kHeadDim});
  std::vector<float> values(static_cast<size_t>(shape.num_elements()));
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  }
  absl::StatusOr<Tensor> k = FromVector(DType::kFloat16, shape, values);
  PKV_CHECK(k.ok(), "%s", k.status().ToString());
  absl::StatusOr<KVView> kv = cache.Update(k->view(), k->view(), 0);
  PKV_CHECK(kv.ok(), "%s", kv.status().ToString());
  Tensor key = *Zeros(DType::kFloat16, shape);
  Tensor value = *Zeros(DType::kFloat16, shape);
  for (auto _ : state) {
    absl::Status status = kv->GatherInto(key.view(), value.view());
    benchmark::DoNotOptimize(status);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * shape.num_elements() * 2);
  state.SetLabel(std::string(KVStorageName(pool->layout().storage)));
}
BENCHMARK(BM_Gather)->ArgName("storage")->DenseRange(0, 2);

void BM_GatherMemcpyBaseline(benchmark::State& state) {
  const size_t bytes = size_t{2} * kHeads * kGatherTokens * kHeadDim * 2;
  std::vector<std::byte> src(bytes, std::byte{1});
  std::vector<std::byte> dst(bytes, std::byte{0});
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_GatherMemcpyBaseline);

// The capacity multiplier: blocks (hence tokens) a fixed pool size holds,
// for a Llama-3-8B-shaped layout (32 layers, 8 KV heads, head_dim 128).
void BM_Capacity(benchmark::State& state) {
  KVLayout layout = Layout(StorageOf(state), 32);
  KVLayout fp16 = Layout(KVStorage::kSame, 32);
  for (auto _ : state) benchmark::DoNotOptimize(layout.block_bytes());
  const double gib = static_cast<double>(size_t{1} << 30);
  state.counters["blocks_per_GiB"] =
      std::floor(gib / static_cast<double>(layout.block_bytes()));
  state.counters["capacity_vs_fp16"] =
      static_cast<double>(fp16.block_bytes()) /
      static_cast<double>(layout.block_bytes());
  state.SetLabel(std::string(KVStorageName(layout.storage)));
}
BENCHMARK(BM_Capacity)->ArgName("storage")->DenseRange(0, 2);

}  // namespace
}  // namespace pagedkv
