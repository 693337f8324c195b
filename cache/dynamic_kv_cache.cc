#include "cache/dynamic_kv_cache.h"

#include "cache/kv_pool.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv {

DynamicKVCache::DynamicKVCache() : PagedKVCache(Options()) {}

DynamicKVCache::DynamicKVCache(KVPool* pool)
    : PagedKVCache(Options{.pool = pool}) {}

}  // namespace pagedkv
