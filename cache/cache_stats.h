// cache/cache_stats.h
//
// CacheStats: what a user can read about one cache's memory, as plain
// counters (no logic). Block counts are of distinct blocks referenced by the
// cache's tables now; copy counters are cumulative since construction.
//
//   CacheStats s = cache.stats();
//   absl::PrintF("%d blocks, %d shared, %d CoW copies (%d bytes)\n",
//                s.blocks_in_use, s.blocks_shared, s.cow_copies, s.cow_bytes);
//
// Thread safety: a plain value type.
#ifndef PAGEDKV_CACHE_CACHE_STATS_H_
#define PAGEDKV_CACHE_CACHE_STATS_H_

#include <cstdint>

namespace pagedkv {

struct CacheStats {
  // Distinct blocks referenced by this cache's block tables.
  int32_t blocks_in_use = 0;
  // Of those, blocks with more than one reference (shared by rows or caches).
  int32_t blocks_shared = 0;
  // Blocks set aside for this cache (static caches) and not yet used, and
  // the reservation's whole capacity (used + unused).
  int32_t blocks_reserved = 0;
  int32_t reservation_capacity = 0;
  // Copy-on-write block copies and the bytes they moved, since construction.
  int64_t cow_copies = 0;
  int64_t cow_bytes = 0;
  // KV bytes written by updates (keys and values) and zero-filled for gaps.
  int64_t bytes_written = 0;
  int64_t bytes_zero_filled = 0;
  // Static caches: crops after which a full shared pool could not extend the
  // reservation for unevenly cropped layers (see static_kv_cache.h).
  int64_t reservation_shortfalls = 0;
  // KV bytes the pool copied during ReorderCache / BatchSelectIndices /
  // BatchRepeatInterleave / Crop (measured by the pool's own copy counter).
  // 0 unless a regression makes a remap copy: they only remap block tables.
  // On a shared pool that other threads copy in at the same time, their
  // copies may be counted too.
  int64_t remap_bytes_copied = 0;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_CACHE_STATS_H_
