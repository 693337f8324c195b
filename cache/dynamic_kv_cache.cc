#include "cache/dynamic_kv_cache.h"

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "cache/cache_limits.h"
#include "cache/paged_kv_cache.h"
#include "cache/private_pool_options.h"

namespace pagedkv {
namespace {

std::unique_ptr<internal::PagedKVCache> MakeCore(
    KVPool* pool, const DynamicKVCache::Options& options) {
  internal::PagedKVCache::Options core;
  core.storage = options.storage;
  core.pool = pool;
  core.block_tokens = options.block_tokens;
  core.max_private_pool_bytes = options.max_private_pool_bytes;
  core.sliding_window = options.sliding_window;
  return std::make_unique<internal::PagedKVCache>(core);
}

absl::Status ValidateSlidingWindows(absl::Span<const int32_t> windows) {
  if (static_cast<int64_t>(windows.size()) > kMaxCacheLayers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sliding_window has %d entries, more than the layer "
                        "limit %d",
                        windows.size(), kMaxCacheLayers));
  }
  for (size_t l = 0; l < windows.size(); ++l) {
    if (windows[l] < 0 || windows[l] > kMaxCacheTokens) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sliding_window[%d] is %d, outside [0, %d] (0: full attention)", l,
          windows[l], kMaxCacheTokens));
    }
  }
  return absl::OkStatus();
}

}  // namespace

DynamicKVCache::DynamicKVCache() : DynamicKVCache(Options()) {}

DynamicKVCache::DynamicKVCache(const Options& options)
    : PagedKVCacheFacade(MakeCore(nullptr, options)) {}

DynamicKVCache::DynamicKVCache(KVPool* pool)
    : PagedKVCacheFacade(MakeCore(pool, Options())) {}

absl::StatusOr<std::unique_ptr<DynamicKVCache>> DynamicKVCache::Create(
    const Options& options) {
  PKV_RETURN_IF_ERROR(internal::ValidatePrivatePoolOptions(
      options.block_tokens, options.max_private_pool_bytes));
  if (KVStorageName(options.storage) == "invalid") {
    return absl::InvalidArgumentError(
        absl::StrFormat("storage value %d is not same, int8 or fp8_e4m3",
                        static_cast<int>(options.storage)));
  }
  PKV_RETURN_IF_ERROR(ValidateSlidingWindows(options.sliding_window));
  return std::unique_ptr<DynamicKVCache>(new DynamicKVCache(options));
}

}  // namespace pagedkv
