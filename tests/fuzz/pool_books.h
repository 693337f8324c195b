// tests/fuzz/pool_books.h
//
// PoolBooks(pool) is what a failed manager call must leave as it was in
// the pool's books, as text for a divergence report: allocations, the
// peak, and the prefix cache's entries, lifetime counts and eviction
// order. The failure counter is left out (a refused reservation counts
// one).
//
//   const std::string before = PoolBooks(m->books());
//   if (!m->Readmit(1, &out).ok() && PoolBooks(m->books()) != before) ...
//
// Thread safety: each BlockPool call locks on its own, so on a pool other
// threads use the text is not one moment's (the fuzzers are single-threaded).
#ifndef PAGEDKV_TESTS_FUZZ_POOL_BOOKS_H_
#define PAGEDKV_TESTS_FUZZ_POOL_BOOKS_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/pool_stats.h"
#include "allocator/prefix/prefix_index.h"

namespace pagedkv {

inline std::string PoolBooks(const BlockPool& pool) {
  const PoolStats s = pool.stats();
  std::string text = absl::StrCat("allocations ", s.num_allocations, " peak ",
                                  s.peak_used_blocks);
  if (pool.prefix_cache_enabled()) {
    const PrefixIndexStats p = pool.prefix_stats();
    absl::StrAppend(&text, " cached ", p.cached_blocks, " evictable ",
                    p.evictable_blocks, " stored ", p.stored_blocks,
                    " evicted ", p.evicted_blocks, " dropped ",
                    p.dropped_blocks, " epoch ", p.epoch, " LRU");
    for (BlockId b : pool.EvictionOrder()) {
      absl::StrAppend(&text, " ", b.value());
    }
  }
  return text;
}

}  // namespace pagedkv

#endif  // PAGEDKV_TESTS_FUZZ_POOL_BOOKS_H_
