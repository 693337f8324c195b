// The physical bounds of a decode append, without any cache code: how fast
// can one new token of 4 beams (32 layers, 8 KV heads, head_dim 128, K and
// V) be written, depending on where its bytes go and how they are copied?
//
//   BM_WarmCopy          one memcpy of all those bytes into one buffer, the
//                        same every time, so it stays in cache (the
//                        summary's `memcpy` reference for decode_append);
//   BM_ColdRingCopy      the same memcpy into the next bytes of a 1 GiB ring
//                        (the summary's `cold memcpy` reference);
//   BM_ContiguousCopy    one contiguous run per row into the cold walk below;
//   BM_HndScatter        the pattern pagedkv's block layout forces: per row,
//                        layer, K|V and head one head_dim run, each
//                        block_tokens * head_dim elements apart (HND inside
//                        a block, so gather and attention read heads
//                        contiguously): 2,048 runs of 256 B (float16);
//   BM_TokenMajorScatter the alternative layout with tokens outermost inside
//                        each layer's K|V: per row, layer and K|V one run of
//                        heads * head_dim: 256 runs of 2 KiB.
//
// As in decoding, each row writes the next slot of its own block and moves
// to a fresh block every block_tokens steps, walking through a pre-touched
// arena of 256 blocks (512 MiB in float16) that does not fit in cache: the
// writes land in cold memory, as a real decode step's do.
//
// Arguments: f32 (0 = 2-byte elements, 1 = 4-byte); huge (1: the arena is
// madvise(MADV_HUGEPAGE)d before it is touched, so each 2 MiB-aligned block
// is one or two huge pages and a step's 2,048 runs hit 4-8 TLB entries
// instead of 2,048; 0: 4 KiB pages, what KVPool's memory is today); copy
// (BM_HndScatter only; 0 = std::memcpy per run, what token_io.cc does;
// 1 = an inline loop of 16-byte loads and stores, no call; 2 = the same loop
// with non-temporal stores, which skip reading the destination lines
// before writing them).
//
//   bazel run -c opt //bench/cache:decode_scatter_benchmark
#include <emmintrin.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
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
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kRingBytes = size_t{1} << 30;

// Anonymous memory, 2 MiB aligned, touched (every page faulted in) before
// use; with `huge`, madvised for transparent huge pages first.
class Mapping {
 public:
  Mapping(size_t bytes, bool huge) : bytes_(bytes) {
    map_bytes_ = bytes + kHugePage;
    void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    map_ = static_cast<std::byte*>(p);
    const uintptr_t start = reinterpret_cast<uintptr_t>(map_);
    data_ = map_ + ((kHugePage - start % kHugePage) % kHugePage);
    if (huge) madvise(data_, bytes_, MADV_HUGEPAGE);
    std::memset(data_, 1, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { munmap(map_, map_bytes_); }
  std::byte* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  size_t bytes_;
  size_t map_bytes_;
  std::byte* map_;
  std::byte* data_;
};

struct Arena {
  Arena(int64_t elem, bool huge)
      : elem(elem),
        block_bytes(kLayers * 2 * kHeads * kBlockTokens * kHeadDim * elem),
        bytes(static_cast<size_t>(kBlocks * block_bytes), huge),
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
  Mapping bytes;
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
bool Huge(const benchmark::State& state) { return state.range(1) != 0; }

// `n` bytes, a multiple of 64, 16-byte aligned destination for kStream.
enum class Copy { kMemcpy = 0, kInline = 1, kStream = 2 };

template <Copy kind>
inline void CopyRun(std::byte* dst, const std::byte* src, size_t n) {
  if constexpr (kind == Copy::kMemcpy) {
    std::memcpy(dst, src, n);
  } else {
    for (size_t i = 0; i < n; i += 64) {
      const __m128i* s = reinterpret_cast<const __m128i*>(src + i);
      __m128i* d = reinterpret_cast<__m128i*>(dst + i);
      const __m128i a = _mm_loadu_si128(s);
      const __m128i b = _mm_loadu_si128(s + 1);
      const __m128i c = _mm_loadu_si128(s + 2);
      const __m128i e = _mm_loadu_si128(s + 3);
      if constexpr (kind == Copy::kStream) {
        _mm_stream_si128(d, a);
        _mm_stream_si128(d + 1, b);
        _mm_stream_si128(d + 2, c);
        _mm_stream_si128(d + 3, e);
      } else {
        _mm_storeu_si128(d, a);
        _mm_storeu_si128(d + 1, b);
        _mm_storeu_si128(d + 2, c);
        _mm_storeu_si128(d + 3, e);
      }
    }
  }
}

void BM_WarmCopy(benchmark::State& state) {
  Arena arena(Elem(state), false);
  std::vector<std::byte> dst(arena.token.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), arena.token.data(), arena.token.size());
    benchmark::ClobberMemory();
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_WarmCopy)->ArgNames({"f32"})->Arg(0)->Arg(1);

void BM_ColdRingCopy(benchmark::State& state) {
  const int64_t elem = Elem(state);
  const size_t token =
      static_cast<size_t>(kRows * kLayers * 2 * kHeads * kHeadDim * elem);
  const std::vector<std::byte> src(token, std::byte{2});
  Mapping ring(kRingBytes, Huge(state));
  size_t cursor = 0;
  for (auto _ : state) {
    if (cursor + token > ring.size()) cursor = 0;
    std::memcpy(ring.data() + cursor, src.data(), token);
    benchmark::ClobberMemory();
    cursor += token;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(token));
}
BENCHMARK(BM_ColdRingCopy)
    ->ArgNames({"f32", "huge"})
    ->ArgsProduct({{0, 1}, {0, 1}});

void BM_ContiguousCopy(benchmark::State& state) {
  Arena arena(Elem(state), Huge(state));
  const size_t per_row = arena.token.size() / kRows;  // block_bytes / 16.
  int64_t step = 0;
  for (auto _ : state) {
    for (int64_t r = 0; r < kRows; ++r) {
      // One contiguous run per row, in the same walk of cold blocks.
      std::memcpy(arena.Block(step, r) + Arena::Slot(step) * per_row,
                  arena.token.data() + r * per_row, per_row);
    }
    benchmark::ClobberMemory();
    ++step;
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_ContiguousCopy)
    ->ArgNames({"f32", "huge"})
    ->ArgsProduct({{0, 1}, {0, 1}});

template <Copy kind>
void HndScatter(benchmark::State& state, Arena& arena) {
  const int64_t run = kHeadDim * arena.elem;
  const int64_t head_stride = kBlockTokens * kHeadDim * arena.elem;
  int64_t step = 0;
  for (auto _ : state) {
    const std::byte* src = arena.token.data();
    for (int64_t r = 0; r < kRows; ++r) {
      std::byte* block = arena.Block(step, r) + Arena::Slot(step) * run;
      for (int64_t lkh = 0; lkh < kLayers * 2 * kHeads; ++lkh) {
        CopyRun<kind>(block + lkh * head_stride, src, static_cast<size_t>(run));
        src += run;
      }
    }
    if constexpr (kind == Copy::kStream) _mm_sfence();
    benchmark::ClobberMemory();
    ++step;
  }
}

void BM_HndScatter(benchmark::State& state) {
  Arena arena(Elem(state), Huge(state));
  switch (static_cast<Copy>(state.range(2))) {
    case Copy::kMemcpy:
      HndScatter<Copy::kMemcpy>(state, arena);
      break;
    case Copy::kInline:
      HndScatter<Copy::kInline>(state, arena);
      break;
    case Copy::kStream:
      HndScatter<Copy::kStream>(state, arena);
      break;
  }
  SetCounters(state, arena);
}
BENCHMARK(BM_HndScatter)
    ->ArgNames({"f32", "huge", "copy"})
    ->ArgsProduct({{0, 1}, {0, 1}, {0, 1, 2}});

void BM_TokenMajorScatter(benchmark::State& state) {
  Arena arena(Elem(state), Huge(state));
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
BENCHMARK(BM_TokenMajorScatter)
    ->ArgNames({"f32", "huge"})
    ->ArgsProduct({{0, 1}, {0, 1}});

}  // namespace
