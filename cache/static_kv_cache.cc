#include "cache/static_kv_cache.h"

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "cache/paged_kv_cache.h"
#include "cache/private_pool_options.h"

namespace pagedkv {
namespace {

std::unique_ptr<internal::PagedKVCache> MakeCore(
    const StaticKVCache::Options& options) {
  internal::PagedKVCache::Options core;
  core.max_cache_len = options.max_cache_len;
  core.num_layers = static_cast<int32_t>(options.num_layers);
  core.pool = options.pool;
  core.block_tokens = options.block_tokens;
  core.max_private_pool_bytes = options.max_private_pool_bytes;
  core.storage = options.storage;
  return std::make_unique<internal::PagedKVCache>(core);
}

}  // namespace

absl::StatusOr<std::unique_ptr<StaticKVCache>> StaticKVCache::Create(
    const Options& options) {
  if (options.max_cache_len <= 0 || options.max_cache_len > kMaxCacheTokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_cache_len must be in [1, %d], got %d",
                        kMaxCacheTokens, options.max_cache_len));
  }
  if (options.num_layers <= 0 || options.num_layers > kMaxCacheLayers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_layers must be in [1, %d], got %d",
                        kMaxCacheLayers, options.num_layers));
  }
  if (options.pool != nullptr &&
      options.num_layers > options.pool->layout().num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_layers %d exceeds the pool's %d layers",
                        options.num_layers, options.pool->layout().num_layers));
  }
  if (options.pool == nullptr) {
    PKV_RETURN_IF_ERROR(internal::ValidatePrivatePoolOptions(
        options.block_tokens, options.max_private_pool_bytes));
  }
  return std::unique_ptr<StaticKVCache>(new StaticKVCache(options));
}

StaticKVCache::StaticKVCache(const Options& options)
    : PagedKVCacheFacade(MakeCore(options)) {}

}  // namespace pagedkv
