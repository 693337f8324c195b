// cache/static_kv_cache.h
//
// StaticKVCache has a fixed number of layers and a fixed capacity
// `max_cache_len` per layer (lucid's nn.StaticKVCache). Positions must be
// below max_cache_len and an append past it is OutOfRange. Its length is a
// high-water mark: highest written position + 1.
//
// Stable memory: when its batch is fixed (first update after construction or
// Reset) it reserves ceil(max_cache_len / block_tokens) blocks per row from
// its pool, and batch operations that add rows extend the reservation first
// or fail with ResourceExhausted, changing nothing. Afterwards no update can
// fail for memory. Without a pool it makes a private one sized to the
// reservation, within Options::max_private_pool_bytes (a batch operation
// whose reservation would pass the cap fails up front).
// One exception: a crop that leaves a window starting inside a block, or
// layers cropped unevenly (a layer longer than max_length while another is
// not), widens the span one row's table must cover; Crop then extends the
// reservation (by one block per row for an even crop), and if a full shared
// pool cannot supply the extra blocks, the crop still succeeds
// (stats().reservation_shortfalls counts it) and a later update that needs
// them may return ResourceExhausted (changing nothing).
//
//   absl::StatusOr<std::unique_ptr<StaticKVCache>> cache =
//       StaticKVCache::Create({.max_cache_len = 1024, .num_layers = 32});
//   if (!cache.ok()) return cache.status();
//   absl::StatusOr<KVView> kv =
//       (*cache)->Update(key, value, 0, CachePosition::Scalar(7));
//
// Thread safety: one thread at a time per cache (see cache.h).
#ifndef PAGEDKV_CACHE_STATIC_KV_CACHE_H_
#define PAGEDKV_CACHE_STATIC_KV_CACHE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "cache/cache_limits.h"
#include "cache/paged_kv_cache_facade.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv {

class StaticKVCache final : public internal::PagedKVCacheFacade {
 public:
  struct Options {
    int64_t max_cache_len = 0;
    int64_t num_layers = 0;
    // Shared pool (must outlive the cache), or nullptr for a private one.
    KVPool* pool = nullptr;
    // Private pool only: tokens per block in [1, 65536], and the cap on the
    // bytes of its blocks (> 0).
    int32_t block_tokens = 16;
    int64_t max_private_pool_bytes = kDefaultMaxPrivatePoolBytes;
    // Private pool only: int8 / fp8 e4m3 storage (DynamicKVCache::Options).
    KVStorage storage = KVStorage::kSame;
  };

  // Returns InvalidArgument unless max_cache_len is in [1, kMaxCacheTokens],
  // num_layers in [1, kMaxCacheLayers] (and, with a pool, at most the pool's
  // layers), and the private-pool options in their ranges.
  static absl::StatusOr<std::unique_ptr<StaticKVCache>> Create(
      const Options& options);

 private:
  explicit StaticKVCache(const Options& options);
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STATIC_KV_CACHE_H_
