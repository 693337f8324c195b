// bench/cache/workload.h
//
// The vocabulary of the cache benchmarks: the benchmark shape (DESIGN.md's
// 32 layers, 8 KV heads, head_dim 128, block_tokens 16, 4 beams), the
// operations (Op), the four ways each is measured (Impl) and the Workload
// interface that kv_cache_fixtures.h (paged) and contiguous_baseline.h
// (baseline, memcpy, cold memcpy) implement. See kv_cache_fixtures.h for how
// they are run.
//
//   WorkloadOptions options;
//   options.op = Op::kGather;
//   options.dtype = DTypeFromArg(1);          // float32
//   size_t bytes = 4 * options.context * TokenBytes(options.dtype);
//
// Thread safety: plain types; a Workload is used by one thread at a time.
#ifndef PAGEDKV_BENCH_CACHE_WORKLOAD_H_
#define PAGEDKV_BENCH_CACHE_WORKLOAD_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

namespace pagedkv {
class KVCache;
class KVPool;
class MemoryResource;
}  // namespace pagedkv

namespace pagedkv::bench {

inline constexpr int32_t kNumLayers = 32;
inline constexpr int32_t kNumKvHeads = 8;
inline constexpr int32_t kHeadDim = 128;
inline constexpr int32_t kBlockTokens = 16;
inline constexpr int64_t kNumBeams = 4;
// Tokens of one prefill chunk.
inline constexpr int64_t kPrefillTokens = 512;
// Crop: keep 1,024 of 4,096 tokens.
inline constexpr int64_t kCropContext = 4096;
inline constexpr int64_t kCropKeep = 1024;
// The layer that Get + Gather reads.
inline constexpr int32_t kGatherLayer = 16;
// Blocks in the table that fork_256 forks.
inline constexpr int32_t kForkBlocks = 256;
// Single-block allocate/free pairs per Run of alloc_free.
inline constexpr int64_t kAllocPairsPerRun = 1024;
// Decode and static append: steps written into fresh slots before the
// workload starts over (the paged cache is rebuilt; the static baseline
// wraps to its first slot, last written 256 steps, 128 MiB or more, ago).
inline constexpr int64_t kDecodeSteps = 256;

enum class Op {
  kDecodeAppend,           // 1 token into every layer, 4 beams
  kPrefill,                // 512 tokens into every layer, 1 row
  kReorderCache,           // permute 4 beams
  kBatchSelectIndices,     // keep rows {0, 2} of 4
  kBatchRepeatInterleave,  // 1 row -> 4 rows
  kCrop,                   // keep the last `keep` tokens, 1 row
  kGather,                 // Get(layer 16) + GatherInto, 4 beams
  kStaticAppend,           // 1 token into every layer of a static cache
  kAllocFree,              // books only: one block allocated and freed
  kFork256,                // books only: fork a 256-block table
};
// kMemcpy copies between buffers it reuses, so up to the L3 size it copies
// within cache; kColdMemcpy copies the same bytes from a warm source into a
// fresh part of a 1 GiB ring each Run: the bound of a write into memory that
// is not in cache (contiguous_baseline.h).
enum class Impl { kPaged = 0, kBaseline = 1, kMemcpy = 2, kColdMemcpy = 3 };

// "decode_append", ..., "fork_256" (the summary's op names).
std::string_view OpName(Op op);
std::string_view ImplName(Impl impl);
// Benchmark argument encoding: 0 = float16, 1 = float32.
DType DTypeFromArg(int64_t arg);

// Bytes of one token of one row: every layer, every head, K and V.
size_t TokenBytes(DType dtype);

struct WorkloadOptions {
  Op op = Op::kDecodeAppend;
  Impl impl = Impl::kPaged;
  DType dtype = DType::kFloat16;
  // Tokens in the cache the operation starts from (kPrefill: after it; kCrop:
  // before it). Ignored by kAllocFree and kFork256.
  int64_t context = 2048;
  // kCrop only: tokens kept.
  int64_t keep = kCropKeep;

  // Hooks for experiments on kPaged (e.g. another memory resource or a
  // modified cache built from the same workload), unset by the summary:
  // where the pool's bytes come from (nullptr: KVPool's default), and the
  // cache made on that pool (empty: DynamicKVCache, or a StaticKVCache of
  // max_cache_len when that is set).
  MemoryResource* pool_memory = nullptr;
  std::function<std::unique_ptr<KVCache>(KVPool* pool,
                                         std::optional<int64_t> max_cache_len)>
      make_cache;
};

class Workload {
 public:
  virtual ~Workload() = default;
  // Performs the operation once. This is the timed part.
  virtual void Run() = 0;
  // Untimed: returns the state to one where Run does the same work again
  // (e.g. re-grows a cropped cache). A no-op where Run is repeatable as is.
  virtual void Restore() {}
  // Operations per Run (kAllocFree: allocate/free pairs; otherwise 1).
  virtual int64_t items_per_run() const { return 1; }
  // Bytes the operation moves (baseline, memcpy) or must move at least
  // (paged; 0 for pure remaps).
  virtual size_t bytes_per_run() const = 0;
  // State that explains the numbers (blocks in use, bytes copied by remaps).
  virtual std::vector<std::pair<std::string, double>> Counters() const {
    return {};
  }
};

// The KVLayout of the benchmark shape in `dtype`.
KVLayout BenchLayout(DType dtype);

// Keeps the compiler from dropping stores to (or the allocation of) `p`.
inline void Escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

}  // namespace pagedkv::bench

#endif  // PAGEDKV_BENCH_CACHE_WORKLOAD_H_
