// cache/kv_view.h
//
// KVView is what KVCache::Update and KVCache::Get return: a borrowed, paged
// view of one layer's visible keys and values, shape
// (batch, heads, length, head_dim). It copies nothing. Token t of row b lives
// in block table b at table token `start + t`: block (start+t) / block_tokens,
// slot (start+t) % block_tokens. Attention kernels can read it in place
// (Slab gives the contiguous (block_tokens, head_dim) run of one (row, head,
// block)); Gather() materialises the contiguous tensors the lucid API
// promises.
//
//   absl::StatusOr<KVView> kv =
//       cache.Update(key.view(), value.view(), /*layer_idx=*/0);
//   if (!kv.ok()) return kv.status();
//   absl::StatusOr<KVTensors> dense = kv->Gather();   // (B, H, len, D) each
//   ConstTensorView slab = kv->Slab(KV::kKey, /*row=*/0, /*head=*/0,
//                                   /*block_index=*/0);  // (16, D)
//
// A view is valid until the next mutating call on the cache that made it
// (Update, ReorderCache, BatchSelectIndices, BatchRepeatInterleave, Crop,
// Reset) or on its pool's layout (a standalone cache's growth).
//
// On a quantized pool (KVLayout::storage int8 or fp8_e4m3) dtype() is still
// the compute dtype: Gather and GatherInto dequantize (tensor/quantize.h),
// and kernels read the codes and scales in place through QuantizedSlabAt.
//
// Thread safety: read-only; safe to read from several threads while nobody
// mutates the cache.
#ifndef PAGEDKV_CACHE_KV_VIEW_H_
#define PAGEDKV_CACHE_KV_VIEW_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_table.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv {

// Contiguous keys and values of one layer, each (batch, heads, length, dim).
struct KVTensors {
  Tensor key;
  Tensor value;
};

class KVView {
 public:
  // A view of `length` tokens from table token `start` of each table, for
  // `layer` of `pool`. Made by caches; borrowed pointers must outlive it.
  KVView(const KVPool* pool, absl::Span<const BlockTable> tables, int32_t layer,
         int64_t start, int64_t length, int64_t heads, int64_t head_dim);

  int64_t batch() const { return static_cast<int64_t>(tables_.size()); }
  int64_t heads() const { return heads_; }
  int64_t length() const { return length_; }
  int64_t head_dim() const { return head_dim_; }
  DType dtype() const {
    return pool_->layout().dtype;  // pool_ is never null (checked).
  }
  // (batch, heads, length, head_dim).
  Shape shape() const;

  // Paged access for kernels.
  int32_t layer() const { return layer_; }
  // Table token of visible token 0 (the first page may start mid-block).
  int64_t start() const { return start_; }
  int32_t block_tokens() const;
  absl::Span<const BlockTable> tables() const { return tables_; }
  const KVPool* pool() const { return pool_; }
  // The pool's storage: kSame, or a quantized format (kv_layout.h).
  KVStorage storage() const { return pool_->layout().storage; }
  // Returns the (block_tokens, head_dim) slab of (row, head) in the table's
  // block `block_index`, keys or values.
  // REQUIRES: indices in range; storage() == kSame (a quantized pool has no
  // element of dtype() to point at: use QuantizedSlab).
  ConstTensorView Slab(KV kv, int64_t row, int64_t head,
                       int32_t block_index) const;

  // One (row, head, block) of a quantized pool: block_tokens vectors of
  // head_dim one-byte codes, token slot s at codes + s * head_dim, and its
  // float32 scale at scales + s * 4 (read with memcpy or as float: the
  // offset is 4-byte aligned).
  struct QuantizedSlab {
    QuantType type;
    const std::byte* codes;
    const std::byte* scales;
  };
  // REQUIRES: indices in range; storage() != kSame.
  QuantizedSlab QuantizedSlabAt(KV kv, int64_t row, int64_t head,
                                int32_t block_index) const;

  // Returns contiguous (batch, heads, length, head_dim) copies of keys and
  // values. ResourceExhausted if memory runs out.
  absl::StatusOr<KVTensors> Gather() const;
  // Writes the same into caller-owned tensors of exactly shape() (any dtype,
  // any strides). InvalidArgument on a shape mismatch (outputs unchanged).
  absl::Status GatherInto(TensorView key_out, TensorView value_out) const;

 private:
  absl::Status GatherOne(KV kv, TensorView out) const;
  absl::Status GatherQuantized(KV kv, TensorView out) const;

  const KVPool* pool_;
  absl::Span<const BlockTable> tables_;
  int32_t layer_;
  int64_t start_;
  int64_t length_;
  int64_t heads_;
  int64_t head_dim_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_KV_VIEW_H_
