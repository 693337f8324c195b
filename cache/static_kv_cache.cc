#include "cache/static_kv_cache.h"

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv {

absl::StatusOr<std::unique_ptr<StaticKVCache>> StaticKVCache::Create(
    const Options& options) {
  if (options.max_cache_len <= 0 || options.max_cache_len > kMaxTokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_cache_len must be in [1, %d], got %d", kMaxTokens,
                        options.max_cache_len));
  }
  if (options.num_layers <= 0 || options.num_layers > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_layers must be in [1, %d], got %d", kMaxLayers,
                        options.num_layers));
  }
  if (options.pool != nullptr &&
      options.num_layers > options.pool->layout().num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_layers %d exceeds the pool's %d layers",
                        options.num_layers, options.pool->layout().num_layers));
  }
  return std::unique_ptr<StaticKVCache>(new StaticKVCache(options));
}

namespace {

internal::PagedKVCache::Options StaticOptions(
    const StaticKVCache::Options& options) {
  internal::PagedKVCache::Options core;
  core.max_cache_len = options.max_cache_len;
  core.num_layers = static_cast<int32_t>(options.num_layers);
  core.pool = options.pool;
  return core;
}

}  // namespace

StaticKVCache::StaticKVCache(const Options& options)
    : PagedKVCache(StaticOptions(options)) {}

}  // namespace pagedkv
