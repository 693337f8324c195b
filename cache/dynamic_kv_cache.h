// cache/dynamic_kv_cache.h
//
// DynamicKVCache grows with the sequence: each Update appends (or writes at
// positions) and the layer's length grows as needed; layer slots appear as
// layers are updated. It is lucid's nn.DynamicKVCache on paged memory.
//
// Two ways to construct it:
//   - standalone, `DynamicKVCache cache;` as in the lucid quick start: the
//     cache makes a private pool at its first update from the key's shape
//     and dtype, and grows it in chunks (never moving existing bytes) up to
//     Options::max_private_pool_bytes (16 GiB by default) of blocks actually
//     allocated: an update that would need more returns ResourceExhausted
//     and changes nothing. Create(Options) sets the cap and block size;
//   - shared, `DynamicKVCache cache(pool)`: blocks come from an explicit
//     KVPool that never grows; when it is full, Update returns
//     ResourceExhausted and changes nothing.
//
//   DynamicKVCache cache;
//   absl::StatusOr<Tensor> key =
//       FillPattern(DType::kFloat32, Shape({2, 8, 1, 64}), /*base=*/1);
//   absl::StatusOr<Tensor> value =
//       FillPattern(DType::kFloat32, Shape({2, 8, 1, 64}), /*base=*/2);
//   absl::StatusOr<KVView> kv = cache.Update(key->view(), value->view(), 0);
//   kv->shape();                          // (2, 8, 1, 64)
//   *cache.GetSeqLength(0);               // 1
//
//   absl::StatusOr<std::unique_ptr<DynamicKVCache>> small =
//       DynamicKVCache::Create({.block_tokens = 32,
//                               .max_private_pool_bytes = int64_t{1} << 30});
//
// Sliding-window layers (HuggingFace's DynamicSlidingWindowLayer), with
// Options::sliding_window[l] = W > 0 for layer l (0: full attention):
//   - Update appends (a cache_position is UNIMPLEMENTED) and returns the
//     kept past concatenated with this call's tokens: min(seen, W - 1) +
//     seq tokens. The layer then keeps only its last W - 1 tokens;
//   - Get returns those kept tokens (at most W - 1);
//   - GetSeqLength counts every token the layer has seen (HF's
//     cumulative_length), not the tokens kept;
//   - Crop(m) keeps the last m positions, as for every layer: the layer's
//     length becomes m and it keeps the last min(m, kept) tokens. What it
//     keeps is always what the next token attends to, so it cannot fail;
//   - ReorderCache, BatchSelectIndices, BatchRepeatInterleave and Reset act
//     as for full layers (table remaps; Reset frees every block).
// Layers with equal windows share block tables: the cache splits them into
// groups of g layers (g = the gcd of the counts of each window value), each
// group with one table per row and blocks of g layers, so no block byte is
// unused. A window group's blocks wholly below its layers' kept tokens
// return to the pool as the cache grows: after a single-token step of all
// its layers, a window group holds at most ceil(W / block_tokens) + 1
// blocks per row; a full group holds all of its tokens' blocks.
//
//   std::vector<int32_t> windows(48, 1024);           // Gemma-3 style:
//   for (int l = 5; l < 48; l += 6) windows[l] = 0;   // 5 window : 1 full.
//   absl::StatusOr<std::unique_ptr<DynamicKVCache>> gemma =
//       DynamicKVCache::Create({.sliding_window = windows});
//   // 6 groups of 8 layers: 5 of window 1024, 1 full.
//
// Thread safety: one thread at a time per cache (see cache.h).
#ifndef PAGEDKV_CACHE_DYNAMIC_KV_CACHE_H_
#define PAGEDKV_CACHE_DYNAMIC_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/cache_limits.h"
#include "cache/paged_kv_cache_facade.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv {

class DynamicKVCache final : public internal::PagedKVCacheFacade {
 public:
  // A standalone cache's private pool.
  struct Options {
    // Tokens per block, in [1, 65536].
    int32_t block_tokens = 16;
    // The cap on the bytes of the private pool's blocks, > 0.
    int64_t max_private_pool_bytes = kDefaultMaxPrivatePoolBytes;
    // How the private pool stores K/V: in the dtype of the first update
    // (kSame), or quantized to int8 / fp8 e4m3 (kv_layout.h); Update still
    // takes and Get/Gather still return the first update's dtype. A cache on
    // a shared pool uses that pool's layout().storage instead.
    KVStorage storage = KVStorage::kSame;
    // Per layer, a sliding window of that many tokens, in [0,
    // kMaxCacheTokens] (0: full attention); see above. Empty: every layer
    // is full. Non-empty: its size (at most kMaxCacheLayers) is the layer
    // count: Update rejects layers past it (InvalidArgument; Get and
    // GetSeqLength see them as never updated).
    std::vector<int32_t> sliding_window;
  };

  // Standalone with default Options: a private pool made at the first update.
  DynamicKVCache();
  // Shared: blocks from `pool`, which must outlive the cache (nullptr: the
  // same as DynamicKVCache()).
  explicit DynamicKVCache(KVPool* pool);
  // Standalone with these Options; InvalidArgument (with the numbers) for
  // values outside the ranges above.
  static absl::StatusOr<std::unique_ptr<DynamicKVCache>> Create(
      const Options& options);

 private:
  explicit DynamicKVCache(const Options& options);
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_DYNAMIC_KV_CACHE_H_
