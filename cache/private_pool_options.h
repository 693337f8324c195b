// cache/private_pool_options.h
//
// The one check of a standalone cache's private-pool options (block size and
// byte cap), shared by DynamicKVCache::Create and StaticKVCache::Create.
//
//   PKV_RETURN_IF_ERROR(internal::ValidatePrivatePoolOptions(16, 1 << 30));
//
// Thread safety: a pure function.
#ifndef PAGEDKV_CACHE_PRIVATE_POOL_OPTIONS_H_
#define PAGEDKV_CACHE_PRIVATE_POOL_OPTIONS_H_

#include <cstdint>

#include "absl/status/status.h"

namespace pagedkv::internal {

// The largest block_tokens a cache accepts.
inline constexpr int32_t kMaxBlockTokens = 1 << 16;

// InvalidArgument unless 1 <= block_tokens <= kMaxBlockTokens and
// max_private_pool_bytes > 0.
absl::Status ValidatePrivatePoolOptions(int32_t block_tokens,
                                        int64_t max_private_pool_bytes);

}  // namespace pagedkv::internal

#endif  // PAGEDKV_CACHE_PRIVATE_POOL_OPTIONS_H_
