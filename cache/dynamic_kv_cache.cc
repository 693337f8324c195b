#include "cache/dynamic_kv_cache.h"

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "cache/paged_kv_cache.h"
#include "cache/private_pool_options.h"

namespace pagedkv {
namespace {

std::unique_ptr<internal::PagedKVCache> MakeCore(KVPool* pool,
                                                 int32_t block_tokens,
                                                 int64_t max_bytes) {
  internal::PagedKVCache::Options core;
  core.pool = pool;
  core.block_tokens = block_tokens;
  core.max_private_pool_bytes = max_bytes;
  return std::make_unique<internal::PagedKVCache>(core);
}

}  // namespace

DynamicKVCache::DynamicKVCache() : DynamicKVCache(Options()) {}

DynamicKVCache::DynamicKVCache(const Options& options)
    : PagedKVCacheFacade(MakeCore(nullptr, options.block_tokens,
                                  options.max_private_pool_bytes)) {}

DynamicKVCache::DynamicKVCache(KVPool* pool)
    : PagedKVCacheFacade(MakeCore(pool, Options().block_tokens,
                                  Options().max_private_pool_bytes)) {}

absl::StatusOr<std::unique_ptr<DynamicKVCache>> DynamicKVCache::Create(
    const Options& options) {
  PKV_RETURN_IF_ERROR(internal::ValidatePrivatePoolOptions(
      options.block_tokens, options.max_private_pool_bytes));
  return std::unique_ptr<DynamicKVCache>(new DynamicKVCache(options));
}

}  // namespace pagedkv
