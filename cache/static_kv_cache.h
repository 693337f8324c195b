// cache/static_kv_cache.h
//
// StaticKVCache has a fixed number of layers and a fixed capacity
// `max_cache_len` per layer (lucid's nn.StaticKVCache). Positions must be
// below max_cache_len and an append past it is OutOfRange. Its length is a
// high-water mark: highest written position + 1.
//
// Stable memory: when its batch is fixed (first update after construction or
// Reset) it reserves ceil((max_cache_len + block_tokens - 1) / block_tokens)
// blocks per row from its pool (enough for any crop offset), and batch
// operations that add rows extend the reservation first or fail with
// ResourceExhausted, changing nothing. Afterwards no update can fail for
// memory. Without a pool it makes a private one sized to the reservation.
// One exception: layers cropped unevenly (a layer longer than max_length
// while another is not) widen the span one row's table must cover; Crop then
// extends the reservation, and if a full shared pool cannot supply the extra
// blocks, the crop still succeeds and a later update that needs them may
// return ResourceExhausted (changing nothing). Crops of equal-length layers,
// the normal case, never need more.
//
//   absl::StatusOr<std::unique_ptr<StaticKVCache>> cache =
//       StaticKVCache::Create({.max_cache_len = 1024, .num_layers = 32});
//   (*cache)->Update(key, value, 0, CachePosition::Scalar(7));
//
// Thread safety: one thread at a time per cache (see cache.h).
#ifndef PAGEDKV_CACHE_STATIC_KV_CACHE_H_
#define PAGEDKV_CACHE_STATIC_KV_CACHE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "cache/kv_pool.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv {

class StaticKVCache final : public internal::PagedKVCache {
 public:
  struct Options {
    int64_t max_cache_len = 0;
    int64_t num_layers = 0;
    // Shared pool (must outlive the cache), or nullptr for a private one.
    KVPool* pool = nullptr;
  };

  // Returns InvalidArgument unless max_cache_len > 0 and num_layers > 0 (and,
  // with a pool, num_layers <= the pool's layers).
  static absl::StatusOr<std::unique_ptr<StaticKVCache>> Create(
      const Options& options);

 private:
  explicit StaticKVCache(const Options& options);
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STATIC_KV_CACHE_H_
