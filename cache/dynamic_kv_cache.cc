#include "cache/dynamic_kv_cache.h"

#include "cache/kv_pool.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv {

DynamicKVCache::DynamicKVCache() : PagedKVCache(Options()) {}

namespace {

internal::PagedKVCache::Options SharedOptions(KVPool* pool) {
  internal::PagedKVCache::Options options;
  options.pool = pool;
  return options;
}

}  // namespace

DynamicKVCache::DynamicKVCache(KVPool* pool)
    : PagedKVCache(SharedOptions(pool)) {}

}  // namespace pagedkv
