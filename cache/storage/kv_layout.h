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
// Quantized storage (issue #15): with `storage` kInt8 or kFp8E4M3 a block
// keeps one byte per element and one float32 scale per (token, layer, K|V,
// head), inside the block so that a block stays one memcpy (copy-on-write,
// swap and remote transfers carry the scales with the codes). `dtype` stays
// the compute dtype: what Update takes and Gather returns. Per layer, the
// codes come first in the order above, then the scales in the same order
// without head_dim, the code bytes padded to a multiple of 4:
//
//   [num_blocks][num_layers]{ codes [K|V][heads][block_tokens][head_dim] (u8)
//                             pad to 4 bytes
//                             scales [K|V][heads][block_tokens] (float32) }
//
// so layers stay the outermost axis of a block (a private pool that adds
// layers keeps its blocks' prefix), and one (layer, K|V, head) is still one
// contiguous run of codes plus one of scales.
//
//   KVLayout int8 = layout;
//   int8.storage = KVStorage::kInt8;
//   size_t bytes = int8.block_bytes();   // 32*2*8*16*(128 + 4) = 1.03 MiB
//
// [PKV_TAG_BLOCK_LAYOUT]: DataOffset/ScaleOffset (and ElementOffset, for
// storage kSame) are the one place that knows the order.
//
// Thread safety: a plain value type.
#ifndef PAGEDKV_CACHE_STORAGE_KV_LAYOUT_H_
#define PAGEDKV_CACHE_STORAGE_KV_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"

namespace pagedkv {

// Which half of a layer: keys or values.
enum class KV : int32_t { kKey = 0, kValue = 1 };

// How a pool stores its elements: in the layout's dtype (kSame), or as
// scaled 8-bit codes (tensor/quantize.h) that Update quantizes and Gather
// dequantizes back to the dtype.
enum class KVStorage : uint8_t { kSame, kInt8, kFp8E4M3 };

// "same", "int8" or "fp8_e4m3" ("invalid" for other values).
std::string_view KVStorageName(KVStorage storage);
// Parses "same" (also "float16", "fp16", ...: any dtype name means kSame),
// "int8" and "fp8_e4m3" (also "fp8", "e4m3"); nullopt otherwise.
std::optional<KVStorage> ParseKVStorage(std::string_view name);
// The quantization format of `storage`, nullopt for kSame.
std::optional<QuantType> QuantTypeOf(KVStorage storage);

struct KVLayout {
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  DType dtype = DType::kFloat32;
  int32_t block_tokens = 16;
  KVStorage storage = KVStorage::kSame;

  // Returns InvalidArgument unless dtype and storage are valid, every count
  // is positive and one block is below 2^31 elements.
  absl::Status Validate() const;

  bool quantized() const { return storage != KVStorage::kSame; }
  // REQUIRES: quantized().
  QuantType quant_type() const {
    return storage == KVStorage::kInt8 ? QuantType::kInt8 : QuantType::kFp8E4M3;
  }
  // Bytes of one stored element: SizeOf(dtype), or 1 when quantized.
  size_t storage_element_bytes() const {
    return quantized() ? 1 : SizeOf(dtype);
  }
  // Bytes of one layer of one block (codes, padding and scales).
  size_t layer_bytes() const {
    const size_t data =
        static_cast<size_t>(2 * int64_t{num_kv_heads} * head_run_elements()) *
        storage_element_bytes();
    if (!quantized()) return data;
    return (data + 3) / 4 * 4 + scales_per_layer() * sizeof(float);
  }
  // Scales of one layer of one block: 2 * num_kv_heads * block_tokens.
  size_t scales_per_layer() const {
    return static_cast<size_t>(2 * int64_t{num_kv_heads} * block_tokens);
  }
  // Byte offset of the first stored element of (layer, kv, head, token
  // slot) inside a block; the head_dim elements follow contiguously, and
  // the block_tokens slots of one (layer, kv, head) are one run.
  size_t DataOffset(int32_t layer, KV kv, int32_t head, int32_t slot) const {
    return static_cast<size_t>(layer) * layer_bytes() +
           static_cast<size_t>(ElementOffset(0, kv, head, slot)) *
               storage_element_bytes();
  }
  // Byte offset of the float32 scale of (layer, kv, head, token slot); the
  // scales of consecutive slots are consecutive. REQUIRES: quantized().
  size_t ScaleOffset(int32_t layer, KV kv, int32_t head, int32_t slot) const {
    const size_t index = static_cast<size_t>(
        (static_cast<int64_t>(kv) * num_kv_heads + head) * block_tokens + slot);
    return (static_cast<size_t>(layer) + 1) * layer_bytes() -
           (scales_per_layer() - index) * sizeof(float);
  }

  // Elements of one (layer, K|V, head) run: block_tokens * head_dim.
  int64_t head_run_elements() const { return int64_t{block_tokens} * head_dim; }
  // Elements of one block, all layers, K and V.
  int64_t block_elements() const {
    return int64_t{num_layers} * 2 * num_kv_heads * head_run_elements();
  }
  // Bytes of one block: num_layers * layer_bytes(), which is
  // block_elements() * SizeOf(dtype) for storage kSame.
  size_t block_bytes() const {
    return static_cast<size_t>(num_layers) * layer_bytes();
  }
  // Element offset of (layer, kv, head, token slot, dim 0) inside a block of
  // storage kSame (for layer 0 it also counts the codes of a quantized one).
  int64_t ElementOffset(int32_t layer, KV kv, int32_t head,
                        int32_t slot) const {
    return ((int64_t{layer} * 2 + static_cast<int32_t>(kv)) * num_kv_heads +
            head) *
               head_run_elements() +
           int64_t{slot} * head_dim;
  }
  // "layers=32 kv_heads=8 head_dim=128 dtype=float16 block_tokens=16",
  // followed by " storage=int8" when quantized.
  std::string ToString() const;

  friend bool operator==(const KVLayout& a, const KVLayout& b) {
    return a.num_layers == b.num_layers && a.num_kv_heads == b.num_kv_heads &&
           a.head_dim == b.head_dim && a.dtype == b.dtype &&
           a.block_tokens == b.block_tokens && a.storage == b.storage;
  }
  friend bool operator!=(const KVLayout& a, const KVLayout& b) {
    return !(a == b);
  }
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STORAGE_KV_LAYOUT_H_
