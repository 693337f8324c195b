// cache/storage/token_io.h
//
// Token-granular reads and writes of block bytes: where the K/V of new tokens
// go, and the zero fill of slots a positional write skips. Whole-block
// copies are KVPool's (kv_pool.h). Within a block, the tokens of one
// (layer, K|V, head) are one contiguous run of block_tokens * head_dim
// elements (kv_layout.h), so a run of consecutive slots is, per head, one
// memcpy for K and one for V: the decode hot path.
//
//   // Row b's new token (heads, 1, head_dim) into slot 5 of `block`:
//   TokenSource k{.data = key_row, .head_stride = head_dim,
//                 .token_stride = head_dim, .dim_stride = 1};
//   TokenSource v = k;
//   v.data = value_row;
//   WriteTokenRun(pool, block, /*layer=*/0, /*slot=*/5, /*num_tokens=*/1, k,
//                 v);
//   ZeroTokenRun(pool, block, /*layer=*/0, /*slot=*/6, /*num_slots=*/10);
//
// On a quantized pool (KVLayout::storage kInt8 / kFp8E4M3) the sources are
// still in the layout's dtype; WriteTokenRun quantizes each (K|V, head,
// token) vector of head_dim elements and stores its scale next to the codes
// (tensor/quantize.h has the formats, bounds and NaN rules), and
// ZeroTokenRun writes codes 0 with scale 0.
//
// Thread safety: the caller holds references to the blocks and is their only
// writer; no lock is taken.
#ifndef PAGEDKV_CACHE_STORAGE_TOKEN_IO_H_
#define PAGEDKV_CACHE_STORAGE_TOKEN_IO_H_

#include <cstddef>
#include <cstdint>

#include "allocator/block_id.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv {

// Where one row's tokens come from: element (head h, token t, dim d) is at
// data + (h * head_stride + t * token_stride + d * dim_stride) elements, in
// the pool's dtype (layout().dtype, also for a quantized pool).
struct TokenSource {
  const std::byte* data = nullptr;
  int64_t head_stride = 0;
  int64_t token_stride = 0;
  int64_t dim_stride = 1;
};

// Writes tokens [0, num_tokens) of `key` and `value` into slots
// [slot, slot + num_tokens) of layer `layer` of `block`, every head.
// REQUIRES: 0 <= slot, num_tokens >= 1, slot + num_tokens <= block_tokens;
// 0 <= layer < num_layers; block in range; sources in the pool's dtype with
// the layout's heads and head_dim.
void WriteTokenRun(KVPool& pool, BlockId block, int32_t layer, int32_t slot,
                   int32_t num_tokens, const TokenSource& key,
                   const TokenSource& value);

// Zeroes slots [slot, slot + num_slots) of layer `layer` of `block`, K and V,
// every head; returns the bytes zeroed. REQUIRES as WriteTokenRun.
size_t ZeroTokenRun(KVPool& pool, BlockId block, int32_t layer, int32_t slot,
                    int32_t num_slots);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STORAGE_TOKEN_IO_H_
