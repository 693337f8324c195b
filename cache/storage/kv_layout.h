// cache/storage/kv_layout.h
//
// KVLayout fixes the shape of one KV block, and so of a whole pool: how many
// layers, KV heads and head dimensions it stores, in which dtype, and how many
// tokens one block holds. Storage is block-major (all layers of a block are
// contiguous, so copy-on-write or a swap of one block is one memcpy) and HND
// inside a block:
//
//   [num_blocks][num_layers][K|V][num_kv_heads][block_tokens][head_dim]
//
// so the `block_tokens * head_dim` elements of one (layer, K|V, head) are one
// contiguous run: gathering a sequence is one memcpy per (row, head, block).
//
//   KVLayout layout{.num_layers = 32, .num_kv_heads = 8, .head_dim = 128,
//                   .dtype = DType::kFloat16, .block_tokens = 16};
//   PKV_RETURN_IF_ERROR(layout.Validate());
//   size_t bytes = layout.block_bytes();   // 32*2*8*16*128*2 = 2 MiB
//
// [PKV_TAG_BLOCK_LAYOUT]: ElementOffset is the one place that knows the order.
//
// Thread safety: a plain value type.
#ifndef PAGEDKV_CACHE_STORAGE_KV_LAYOUT_H_
#define PAGEDKV_CACHE_STORAGE_KV_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "tensor/dtype.h"

namespace pagedkv {

// Which half of a layer: keys or values.
enum class KV : int32_t { kKey = 0, kValue = 1 };

struct KVLayout {
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  DType dtype = DType::kFloat32;
  int32_t block_tokens = 16;

  // Returns InvalidArgument unless dtype is valid, every count is positive
  // and one block is below 2^31 elements.
  absl::Status Validate() const;

  // Elements of one (layer, K|V, head) run: block_tokens * head_dim.
  int64_t head_run_elements() const { return int64_t{block_tokens} * head_dim; }
  // Elements of one block, all layers, K and V.
  int64_t block_elements() const {
    return int64_t{num_layers} * 2 * num_kv_heads * head_run_elements();
  }
  size_t block_bytes() const {
    return static_cast<size_t>(block_elements()) * SizeOf(dtype);
  }
  // Element offset of (layer, kv, head, token slot, dim 0) inside a block.
  int64_t ElementOffset(int32_t layer, KV kv, int32_t head,
                        int32_t slot) const {
    return ((int64_t{layer} * 2 + static_cast<int32_t>(kv)) * num_kv_heads +
            head) *
               head_run_elements() +
           int64_t{slot} * head_dim;
  }
  // "layers=32 kv_heads=8 head_dim=128 dtype=float16 block_tokens=16".
  std::string ToString() const;

  friend bool operator==(const KVLayout& a, const KVLayout& b) {
    return a.num_layers == b.num_layers && a.num_kv_heads == b.num_kv_heads &&
           a.head_dim == b.head_dim && a.dtype == b.dtype &&
           a.block_tokens == b.block_tokens;
  }
  friend bool operator!=(const KVLayout& a, const KVLayout& b) {
    return !(a == b);
  }
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STORAGE_KV_LAYOUT_H_
