#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/check.h"
#include "benchmark/benchmark.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tensor/tensor_copy.h"

namespace pagedkv {
namespace {

constexpr int64_t kLayers = 4;
constexpr int64_t kHeads = 8;
constexpr int64_t kBlockTokens = 16;

Tensor MustCreate(absl::StatusOr<Tensor> tensor) {
  PKV_CHECK(tensor.ok(), "%s", tensor.status().ToString());
  return *std::move(tensor);
}

// One sequence's keys for one layer gathered out of a block-major paged arena
// ([num_blocks][layers][heads][block_tokens][head_dim], DESIGN.md) into the
// contiguous (heads, seq, head_dim) tensor of the lucid API: one Copy per
// block of a shuffled block table, each a (heads, block_tokens, head_dim)
// strided view. The decode-time Get/Gather path.
void BM_GatherKV(benchmark::State& state) {
  const int64_t seq_tokens = state.range(0);
  const int64_t head_dim = state.range(1);
  const int64_t num_blocks = seq_tokens / kBlockTokens;
  const DType dtype = DType::kFloat16;

  Tensor arena = MustCreate(FillPattern(
      dtype, Shape({num_blocks, kLayers, kHeads, kBlockTokens, head_dim}), 1));
  Tensor out = MustCreate(Zeros(dtype, Shape({kHeads, seq_tokens, head_dim})));
  std::vector<int64_t> block_table(num_blocks);
  std::iota(block_table.begin(), block_table.end(), 0);
  std::shuffle(block_table.begin(), block_table.end(), std::mt19937(1));
  const Shape block_shape({kHeads, kBlockTokens, head_dim});
  const int64_t layer = kLayers / 2;

  for (auto _ : state) {
    TensorView out_view = out.view();
    for (int64_t i = 0; i < num_blocks; ++i) {
      ConstTensorView block(
          arena.view().ElementPtr({block_table[i], layer, 0, 0, 0}), dtype,
          block_shape);
      TensorView window(out_view.ElementPtr({0, i * kBlockTokens, 0}), dtype,
                        block_shape, out_view.strides());
      const absl::Status status = Copy(block, window);
      benchmark::DoNotOptimize(status);
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(out.num_bytes()));
  state.counters["runs_per_gather"] = static_cast<double>(num_blocks * kHeads);
}

// The baseline for BM_GatherKV: one memcpy of the same number of bytes
// between two contiguous buffers (the bandwidth a gather could reach).
void BM_MemcpySameBytes(benchmark::State& state) {
  const int64_t seq_tokens = state.range(0);
  const int64_t head_dim = state.range(1);
  const size_t bytes = static_cast<size_t>(kHeads * seq_tokens * head_dim) *
                       SizeOf(DType::kFloat16);
  std::vector<std::byte> src(bytes, std::byte{1});
  std::vector<std::byte> dst(bytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}

// Converting copy of a contiguous float16 tensor to float32 (e.g. handing a
// half cache to a float32 reference kernel): the element loop, not memcpy.
void BM_ConvertHalfToFloat(benchmark::State& state) {
  const int64_t num_elements = state.range(0);
  Tensor src = MustCreate(Full(DType::kFloat16, Shape({num_elements}), 1.5));
  Tensor dst = MustCreate(Zeros(DType::kFloat32, Shape({num_elements})));
  for (auto _ : state) {
    const absl::Status status = Copy(src.view(), dst.view());
    benchmark::DoNotOptimize(status);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * num_elements);
}

BENCHMARK(BM_GatherKV)
    ->ArgsProduct({{1024, 8192}, {64, 128}})
    ->ArgNames({"seq_tokens", "head_dim"});
BENCHMARK(BM_MemcpySameBytes)
    ->ArgsProduct({{1024, 8192}, {64, 128}})
    ->ArgNames({"seq_tokens", "head_dim"});
BENCHMARK(BM_ConvertHalfToFloat)->Arg(1 << 16)->ArgNames({"elements"});

}  // namespace
}  // namespace pagedkv
