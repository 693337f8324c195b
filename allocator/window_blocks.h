// allocator/window_blocks.h
//
// Sliding-window block arithmetic: which blocks of a sequence a window of
// W tokens still reads. Used by WindowTable's owners (the grouped serving
// books) and by the prefix index's grouped lookups (a hit must cover the
// window the next token reads).
//
// Example:
//
//   // 100 tokens computed, a window of 32, blocks of 16 tokens: the next
//   // token (position 100) reads positions [69, 100], so blocks 0..3 are
//   // no longer read.
//   int64_t first = WindowFirstNeededBlock(100, 32, 16);  // 4
//   int64_t most = WindowBlockBound(32, 16);              // 3
//
// Thread safety: pure functions.
#ifndef PAGEDKV_ALLOCATOR_WINDOW_BLOCKS_H_
#define PAGEDKV_ALLOCATOR_WINDOW_BLOCKS_H_

#include <cstdint>

namespace pagedkv {

// The first block a step must keep for a window of `window` tokens when the
// sequence's first `num_computed` tokens are in the cache: the next token
// (position num_computed) attends to positions [num_computed - window + 1,
// num_computed], so blocks wholly below max(0, num_computed - window + 1)
// are no longer read. REQUIRES: num_computed >= 0, window >= 1,
// block_tokens >= 1.
inline int64_t WindowFirstNeededBlock(int64_t num_computed, int32_t window,
                                      int32_t block_tokens) {
  const int64_t first_token = num_computed - window + 1;
  return first_token > 0 ? first_token / block_tokens : 0;
}

// The first block a layer group holds of a prefix hit of `hit` blocks:
// the first one its window reads (0 for a full group, window 0), not below
// `first` (blocks it does not want: a swapped-in table's holes), and at
// most `hit` (it then holds none). REQUIRES: hit >= 0, window >= 0,
// first >= 0, block_tokens >= 1.
inline int64_t HitFirstHeldBlock(int64_t hit, int32_t window, int64_t first,
                                 int32_t block_tokens) {
  const int64_t needed =
      window == 0
          ? 0
          : WindowFirstNeededBlock(hit * block_tokens, window, block_tokens);
  const int64_t held = needed > first ? needed : first;
  return held < hit ? held : hit;
}

// The most blocks a window group holds per sequence after a decode step
// (one new token): `window` tokens span at most ceil(window / block_tokens)
// + 1 blocks when they do not start on a block boundary.
inline int64_t WindowBlockBound(int32_t window, int32_t block_tokens) {
  return (int64_t{window} + block_tokens - 1) / block_tokens + 1;
}

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_WINDOW_BLOCKS_H_
