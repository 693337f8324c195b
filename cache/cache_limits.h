// cache/cache_limits.h
//
// The limits of the lucid-style caches, so that a stray argument cannot ask
// a standalone cache for terabytes or overflow its arithmetic. Past them,
// Update and the batch operations return InvalidArgument or OutOfRange.
// Positions are below kMaxCacheTokens, so lengths (and max_cache_len) are at
// most kMaxCacheTokens; batches are at most kMaxCacheBatch.
//
//   if (prompt_tokens > pagedkv::kMaxCacheTokens) return TooLong();
//
// Thread safety: constants.
#ifndef PAGEDKV_CACHE_CACHE_LIMITS_H_
#define PAGEDKV_CACHE_CACHE_LIMITS_H_

#include <cstdint>

namespace pagedkv {

// Positions per sequence: below 2^24; lengths: at most 2^24 (OutOfRange).
inline constexpr int64_t kMaxCacheTokens = int64_t{1} << 24;
// Batch sizes: at most 2^20 (InvalidArgument past it).
inline constexpr int64_t kMaxCacheBatch = int64_t{1} << 20;
// Layer indices: below 2^16 (InvalidArgument).
inline constexpr int64_t kMaxCacheLayers = int64_t{1} << 16;
// Heads and head_dim: in [1, 2^20] (InvalidArgument).
inline constexpr int64_t kMaxCacheHeadsOrDim = int64_t{1} << 20;
// The default cap on a standalone cache's private pool.
inline constexpr int64_t kDefaultMaxPrivatePoolBytes = int64_t{16} << 30;

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_CACHE_LIMITS_H_
