// allocator/pool_stats.h
//
// PoolStats is a snapshot of a BlockPool's counters, returned by
// BlockPool::stats(): occupancy now, plus lifetime totals for the stress
// tool's report and for serving metrics. A plain struct; no logic beyond
// equality and printing.
//
// Example:
//
//   PoolStats s = pool->stats();
//   std::cout << s;  // "PoolStats{blocks=4096 free=1000 reserved=200 ...}"
//
// Thread safety: a value type; the snapshot is consistent (BlockPool takes
// it under one lock when shared).
#ifndef PAGEDKV_ALLOCATOR_POOL_STATS_H_
#define PAGEDKV_ALLOCATOR_POOL_STATS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/strings/str_format.h"

namespace pagedkv {

struct PoolStats {
  // Occupancy at the time of the snapshot.
  // num_free_blocks + num_used_blocks == num_blocks, and
  // num_reserved_blocks <= num_free_blocks (reserved blocks are free blocks
  // set aside for a Reservation).
  int32_t num_blocks = 0;
  int32_t num_free_blocks = 0;
  int32_t num_reserved_blocks = 0;
  int32_t num_used_blocks = 0;
  int32_t num_shared_blocks = 0;  // Blocks with ref_count > 1.
  int32_t num_reservations = 0;   // Live Reservation handles.

  // Lifetime totals.
  int64_t num_allocations = 0;         // Blocks handed out (refcount 0 -> 1).
  int64_t num_failed_allocations = 0;  // TryAllocate/Allocate calls that
                                       // returned no block (pool or
                                       // reservation), and failed Reserve and
                                       // Resize calls.
  int32_t peak_used_blocks = 0;        // Max of num_used_blocks so far.

  std::string ToString() const {
    return absl::StrFormat(
        "PoolStats{blocks=%d free=%d reserved=%d used=%d shared=%d "
        "reservations=%d allocations=%d failed=%d peak_used=%d}",
        num_blocks, num_free_blocks, num_reserved_blocks, num_used_blocks,
        num_shared_blocks, num_reservations, num_allocations,
        num_failed_allocations, peak_used_blocks);
  }

  friend bool operator==(const PoolStats& a, const PoolStats& b) {
    return a.num_blocks == b.num_blocks &&
           a.num_free_blocks == b.num_free_blocks &&
           a.num_reserved_blocks == b.num_reserved_blocks &&
           a.num_used_blocks == b.num_used_blocks &&
           a.num_shared_blocks == b.num_shared_blocks &&
           a.num_reservations == b.num_reservations &&
           a.num_allocations == b.num_allocations &&
           a.num_failed_allocations == b.num_failed_allocations &&
           a.peak_used_blocks == b.peak_used_blocks;
  }
  friend bool operator!=(const PoolStats& a, const PoolStats& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const PoolStats& s) {
    return os << s.ToString();
  }
};

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_POOL_STATS_H_
