// cache/dynamic_kv_cache.h
//
// DynamicKVCache grows with the sequence: each Update appends (or writes at
// positions) and the layer's length grows as needed; layer slots appear as
// layers are updated. It is lucid's nn.DynamicKVCache on paged memory.
//
// Two ways to construct it:
//   - standalone, `DynamicKVCache cache;` as in the lucid quick start: the
//     cache makes a private pool at its first update from the key's shape
//     and dtype, and grows it in chunks (never moving existing bytes) up
//     to 16 GiB (PagedKVCache::kDefaultMaxPrivatePoolBytes): an update that
//     could need more returns ResourceExhausted before allocating anything;
//   - shared, `DynamicKVCache cache(pool)`: blocks come from an explicit
//     KVPool that never grows; when it is full, Update returns
//     ResourceExhausted and changes nothing.
//
//   DynamicKVCache cache;
//   absl::StatusOr<Tensor> key = FillPattern(DType::kFloat32, {2, 8, 1, 64},
//   1); absl::StatusOr<KVView> kv = cache.Update(key->view(), value->view(),
//   0); kv->shape();                  // (2, 8, 1, 64) *cache.GetSeqLength(0);
//   // 1
//
// Thread safety: one thread at a time per cache (see cache.h).
#ifndef PAGEDKV_CACHE_DYNAMIC_KV_CACHE_H_
#define PAGEDKV_CACHE_DYNAMIC_KV_CACHE_H_

#include "cache/kv_pool.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv {

class DynamicKVCache final : public internal::PagedKVCache {
 public:
  // Standalone: a private pool made at the first update.
  DynamicKVCache();
  // Shared: blocks from `pool`, which must outlive the cache.
  explicit DynamicKVCache(KVPool* pool);
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_DYNAMIC_KV_CACHE_H_
