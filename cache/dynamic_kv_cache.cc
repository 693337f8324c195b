#include "cache/dynamic_kv_cache.h"

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "cache/paged_kv_cache.h"
#include "cache/private_pool_options.h"

namespace pagedkv {
namespace {

std::unique_ptr<internal::PagedKVCache> MakeCore(KVPool* pool,
                                                 int32_t block_tokens,
                                                 int64_t max_bytes,
                                                 KVStorage storage) {
  internal::PagedKVCache::Options core;
  core.storage = storage;
  core.pool = pool;
  core.block_tokens = block_tokens;
  core.max_private_pool_bytes = max_bytes;
  return std::make_unique<internal::PagedKVCache>(core);
}

}  // namespace

DynamicKVCache::DynamicKVCache() : DynamicKVCache(Options()) {}

DynamicKVCache::DynamicKVCache(const Options& options)
    : PagedKVCacheFacade(MakeCore(nullptr, options.block_tokens,
                                  options.max_private_pool_bytes,
                                  options.storage)) {}

DynamicKVCache::DynamicKVCache(KVPool* pool)
    : PagedKVCacheFacade(MakeCore(pool, Options().block_tokens,
                                  Options().max_private_pool_bytes,
                                  KVStorage::kSame)) {}

absl::StatusOr<std::unique_ptr<DynamicKVCache>> DynamicKVCache::Create(
    const Options& options) {
  PKV_RETURN_IF_ERROR(internal::ValidatePrivatePoolOptions(
      options.block_tokens, options.max_private_pool_bytes));
  if (KVStorageName(options.storage) == "invalid") {
    return absl::InvalidArgumentError(
        absl::StrFormat("storage value %d is not same, int8 or fp8_e4m3",
                        static_cast<int>(options.storage)));
  }
  return std::unique_ptr<DynamicKVCache>(new DynamicKVCache(options));
}

}  // namespace pagedkv
