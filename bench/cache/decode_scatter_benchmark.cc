// The physical bounds of a decode append, without any cache code: how fast
// can one new token of 4 beams (32 layers, 8 KV heads, head_dim 128, K and
// V) be written, depending on where its bytes go?
//
//   BM_WarmCopy         one memcpy of all those bytes into one buffer (the
//                       summary's memcpy reference for decode_append);
//   BM_ContiguousCopy   one contiguous run per row into the cold walk below;
//   BM_HndScatter       the pattern pagedkv's block layout forces: per row,
//                       layer, K|V and head one head_dim run, each
//                       block_tokens * head_dim elements apart (HND inside a
//                       block, so gather and attention read heads
//                       contiguously): 2,048 runs of 256 B (float16);
//   BM_TokenMajorScatter the alternative layout with tokens outermost inside
//                       each layer's K|V: per row, layer and K|V one run of
//                       heads * head_dim: 256 runs of 2 KiB.
//
// As in decoding, each row writes the next slot of its own block and moves
// to a fresh block every block_tokens steps, walking through a pre-touched
// arena of 256 blocks (512 MiB in float16) that does not fit in cache: the
// writes land in cold memory, as a real decode step's do. BM_ContiguousCopy
// writes into the same walk (cold too); BM_WarmCopy is the summary's memcpy
// reference (the same buffer every time, so it stays in cache).
//
//   bazel run -c opt //bench/cache:decode_scatter_benchmark
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "benchmark/benchmark.h"

namespace {

constexpr int64_t kLayers = 32;
constexpr int64_t kHeads = 8;
constexpr int64_t kHeadDim = 128;
constexpr int64_t kBlockTokens = 16;
constexpr int64_t kRows = 4;
constexpr int64_t kBlocks = 256;  // Arena blocks, walked through.

struct Arena {
  explicit Arena(int64_t elem)
      : elem(elem),
        block_bytes(kLayers * 2 * kHeads * kBlockTokens * kHeadDim * elem),
        bytes(static_cast<size_t>(kBlocks * block_bytes), std::byte{1}),
        token(
            static_cast<size_t>(kRows * kLayers * 2 * kHeads * kHeadDim * elem),
            std::byte{2}) {}
  // The block row `row` writes at decode step `step`, and the slot in it.
  std::byte* Block(int64_t step, int64_t row) {
    const int64_t block = (step / kBlockTokens * kRows + row) % kBlocks;
    return bytes.data() + block * block_bytes;
  }
  static int64_t Slot(int64_t step) { return step % kBlockTokens; }
  int64_t elem;
  int64_t block_bytes;
  std::vector<std::byte> bytes;
  std::vector<std::byte> token;  // The new token, contiguous, all rows.
};

void SetCounters(benchmark::State& state, const Arena& arena) {
  state.SetBytesProcessed(state.iterations() *
                          static_cast<int64_t>(arena.token.size()));
  state.counters["token_bytes"] = static_cast<double>(arena.token.size());
}

// arg 0: float16 (2-byte elements), 1: float32.
int64_t Elem(const benchmark::State& state) {
  return state.range(0) == 0 ? 2 : 4;
}

void BM_WarmCopy(benchmark::State& state) {
  Arena arena(Elem(state));
  std::vector<std::byte> dst(arena.token.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), arena.token.data(), arena.token.size());
    benchmark::ClobberMemory();
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_WarmCopy)->ArgName("f32")->Arg(0)->Arg(1);

void BM_ContiguousCopy(benchmark::State& state) {
  Arena arena(Elem(state));
  const size_t per_row = arena.token.size() / kRows;
  int64_t step = 0;
  for (auto _ : state) {
    for (int64_t r = 0; r < kRows; ++r) {
      // One contiguous run per row, in the same walk of cold blocks.
      std::memcpy(arena.Block(step, r) + Arena::Slot(step) * per_row / 16,
                  arena.token.data() + r * per_row, per_row);
    }
    benchmark::ClobberMemory();
    ++step;
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_ContiguousCopy)->ArgName("f32")->Arg(0)->Arg(1);

void BM_HndScatter(benchmark::State& state) {
  Arena arena(Elem(state));
  const int64_t run = kHeadDim * arena.elem;
  const int64_t head_stride = kBlockTokens * kHeadDim * arena.elem;
  int64_t step = 0;
  for (auto _ : state) {
    const std::byte* src = arena.token.data();
    for (int64_t r = 0; r < kRows; ++r) {
      std::byte* block = arena.Block(step, r) + Arena::Slot(step) * run;
      for (int64_t lkh = 0; lkh < kLayers * 2 * kHeads; ++lkh) {
        std::memcpy(block + lkh * head_stride, src, static_cast<size_t>(run));
        src += run;
      }
    }
    benchmark::ClobberMemory();
    ++step;
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_HndScatter)->ArgName("f32")->Arg(0)->Arg(1);

void BM_TokenMajorScatter(benchmark::State& state) {
  Arena arena(Elem(state));
  const int64_t run = kHeads * kHeadDim * arena.elem;
  const int64_t half_stride = kBlockTokens * run;  // One layer's K or V.
  int64_t step = 0;
  for (auto _ : state) {
    const std::byte* src = arena.token.data();
    for (int64_t r = 0; r < kRows; ++r) {
      std::byte* block = arena.Block(step, r) + Arena::Slot(step) * run;
      for (int64_t lk = 0; lk < kLayers * 2; ++lk) {
        std::memcpy(block + lk * half_stride, src, static_cast<size_t>(run));
        src += run;
      }
    }
    benchmark::ClobberMemory();
    ++step;
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_TokenMajorScatter)->ArgName("f32")->Arg(0)->Arg(1);

}  // namespace
