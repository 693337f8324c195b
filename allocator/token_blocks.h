// allocator/token_blocks.h
//
// TokenBlocks is the token -> block arithmetic of tables of `block_tokens`
// tokens per block: which block holds token t, at which offset, and how
// many blocks n tokens take. With a power-of-two block size (every
// production size: 16, 32, ...) these are a shift and a mask; a 64-bit
// divide costs tens of cycles, and a decode step does one or two per
// sequence and group (measured: a third of the grouped step before it
// shifted; the plain step, one table, showed no change within noise).
//
// Example:
//
//   const TokenBlocks tb(16);
//   tb.BlockOf(37);    // 2
//   tb.OffsetOf(37);   // 5
//   tb.BlocksFor(37);  // 3
//   tb.BlocksFor(0);   // 0
//
// Thread safety: a plain value.
#ifndef PAGEDKV_ALLOCATOR_TOKEN_BLOCKS_H_
#define PAGEDKV_ALLOCATOR_TOKEN_BLOCKS_H_

#include <cstdint>

#include "base/check.h"

namespace pagedkv {

class TokenBlocks {
 public:
  // REQUIRES: block_tokens > 0.
  explicit TokenBlocks(int32_t block_tokens) : block_tokens_(block_tokens) {
    PKV_CHECK(block_tokens > 0, "block_tokens %d", block_tokens);
    if ((block_tokens & (block_tokens - 1)) == 0) {
      shift_ = 0;
      while ((1 << shift_) < block_tokens) ++shift_;
    }
  }

  int32_t block_tokens() const { return block_tokens_; }

  // The block of token `token` and its offset in it. REQUIRES: token >= 0.
  int64_t BlockOf(int64_t token) const {
    return shift_ >= 0 ? token >> shift_ : token / block_tokens_;
  }
  int64_t OffsetOf(int64_t token) const {
    return shift_ >= 0 ? token & (block_tokens_ - 1) : token % block_tokens_;
  }
  // Blocks that `tokens` tokens take: ceil(tokens / block_tokens).
  // REQUIRES: 0 <= tokens <= INT64_MAX - block_tokens.
  int64_t BlocksFor(int64_t tokens) const {
    return BlockOf(tokens + block_tokens_ - 1);
  }

 private:
  int32_t block_tokens_;
  int32_t shift_ = -1;  // log2(block_tokens_) for a power of two, else -1.
};

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_TOKEN_BLOCKS_H_
