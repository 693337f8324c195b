#include "cache/storage/token_io.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"

namespace pagedkv {
namespace {

void CheckRun(const KVLayout& layout, int32_t layer, int32_t slot,
              int32_t num_tokens) {
  PKV_DCHECK(layer >= 0 && layer < layout.num_layers, "layer %d of %d", layer,
             layout.num_layers);
  PKV_DCHECK(
      slot >= 0 && num_tokens >= 1 && slot + num_tokens <= layout.block_tokens,
      "slots [%d, %d) of a %d-token block", slot, slot + num_tokens,
      layout.block_tokens);
}

// The quantized write: each (K|V, head, token) vector of head_dim source
// elements becomes head_dim codes plus one scale, written straight into the
// block. A contiguous head_dim axis takes one QuantizeVectors call per K|V
// for a decode token (the heads are the vectors: the codes one head run
// apart, the scales block_tokens apart) and one per (K|V, head) for a run
// of tokens; a strided head_dim axis goes through a staging vector.
void WriteQuantizedRun(KVPool& pool, BlockId block, int32_t layer, int32_t slot,
                       int32_t num_tokens, const TokenSource& key,
                       const TokenSource& value) {
  const KVLayout& layout = pool.layout();
  const QuantType type = layout.quant_type();
  const int64_t elem = static_cast<int64_t>(SizeOf(layout.dtype));
  const int64_t head_dim = layout.head_dim;
  const int64_t heads = layout.num_kv_heads;
  std::byte* base = pool.BlockData(block);
  // Consecutive heads' codes and scales are evenly spaced; the layout's
  // offsets say how far ([PKV_TAG_BLOCK_LAYOUT]).
  const int64_t code_head_stride =
      static_cast<int64_t>(layout.DataOffset(layer, KV::kKey, 1, slot)) -
      static_cast<int64_t>(layout.DataOffset(layer, KV::kKey, 0, slot));
  const int64_t scale_head_stride =
      static_cast<int64_t>(layout.ScaleOffset(layer, KV::kKey, 1, slot)) -
      static_cast<int64_t>(layout.ScaleOffset(layer, KV::kKey, 0, slot));
  for (const KV kv : {KV::kKey, KV::kValue}) {
    const TokenSource& src = kv == KV::kKey ? key : value;
    std::byte* codes = base + layout.DataOffset(layer, kv, 0, slot);
    std::byte* scales = base + layout.ScaleOffset(layer, kv, 0, slot);
    if (src.dim_stride == 1 && num_tokens == 1) {
      QuantizeVectors(type, layout.dtype, src.data, src.head_stride, heads,
                      head_dim, codes, code_head_stride, scales,
                      scale_head_stride);
      continue;
    }
    if (src.dim_stride == 1) {
      for (int64_t h = 0; h < heads; ++h) {
        QuantizeVectors(type, layout.dtype,
                        src.data + h * src.head_stride * elem,
                        src.token_stride, num_tokens, head_dim,
                        codes + h * code_head_stride, head_dim,
                        scales + h * scale_head_stride, sizeof(float));
      }
      continue;
    }
    std::vector<std::byte> staging(static_cast<size_t>(head_dim * elem));
    for (int64_t h = 0; h < heads; ++h) {
      for (int32_t t = 0; t < num_tokens; ++t) {
        const std::byte* from =
            src.data + (h * src.head_stride + t * src.token_stride) * elem;
        for (int64_t d = 0; d < head_dim; ++d) {
          std::memcpy(staging.data() + d * elem,
                      from + d * src.dim_stride * elem,
                      static_cast<size_t>(elem));
        }
        const float scale =
            QuantizeVector(type, layout.dtype, staging.data(), head_dim,
                           codes + h * code_head_stride + t * head_dim);
        std::memcpy(scales + h * scale_head_stride + t * sizeof(float), &scale,
                    sizeof(float));
      }
    }
  }
}

}  // namespace

void WriteTokenRun(KVPool& pool, BlockId block, int32_t layer, int32_t slot,
                   int32_t num_tokens, const TokenSource& key,
                   const TokenSource& value) {
  const KVLayout& layout = pool.layout();
  CheckRun(layout, layer, slot, num_tokens);
  if (layout.quantized()) {
    WriteQuantizedRun(pool, block, layer, slot, num_tokens, key, value);
    return;
  }
  const int64_t elem = static_cast<int64_t>(SizeOf(layout.dtype));
  const int64_t head_dim = layout.head_dim;
  const int64_t token_bytes = head_dim * elem;
  const int64_t head_run_bytes = layout.head_run_elements() * elem;
  std::byte* k_dst = pool.BlockData(block) +
                     layout.ElementOffset(layer, KV::kKey, 0, slot) * elem;
  std::byte* v_dst = k_dst + layout.num_kv_heads * head_run_bytes;

  auto copy_head = [&](std::byte* dst, const TokenSource& src, int64_t h) {
    const std::byte* from = src.data + h * src.head_stride * elem;
    if (src.dim_stride == 1 &&
        (num_tokens == 1 || src.token_stride == head_dim)) {
      std::memcpy(dst, from, static_cast<size_t>(num_tokens * token_bytes));
      return;
    }
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t d = 0; d < head_dim; ++d) {
        std::memcpy(dst + (t * head_dim + d) * elem,
                    from + (t * src.token_stride + d * src.dim_stride) * elem,
                    static_cast<size_t>(elem));
      }
    }
  };
  for (int64_t h = 0; h < layout.num_kv_heads; ++h) {
    copy_head(k_dst + h * head_run_bytes, key, h);
    copy_head(v_dst + h * head_run_bytes, value, h);
  }
}

size_t ZeroTokenRun(KVPool& pool, BlockId block, int32_t layer, int32_t slot,
                    int32_t num_slots) {
  const KVLayout& layout = pool.layout();
  CheckRun(layout, layer, slot, num_slots);
  if (layout.quantized()) {
    // Codes 0 with scale 0 dequantize to zeros.
    std::byte* base = pool.BlockData(block);
    const size_t code_bytes = static_cast<size_t>(num_slots) * layout.head_dim;
    const size_t scale_bytes = static_cast<size_t>(num_slots) * sizeof(float);
    for (const KV kv : {KV::kKey, KV::kValue}) {
      for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
        std::memset(base + layout.DataOffset(layer, kv, h, slot), 0,
                    code_bytes);
        std::memset(base + layout.ScaleOffset(layer, kv, h, slot), 0,
                    scale_bytes);
      }
    }
    return 2 * static_cast<size_t>(layout.num_kv_heads) *
           (code_bytes + scale_bytes);
  }
  const size_t elem = SizeOf(layout.dtype);
  const size_t run_bytes =
      static_cast<size_t>(num_slots) * layout.head_dim * elem;
  const size_t head_run_bytes = layout.head_run_elements() * elem;
  std::byte* base = pool.BlockData(block) +
                    layout.ElementOffset(layer, KV::kKey, 0, slot) * elem;
  // K heads then V heads: 2 * heads runs, one head run apart.
  for (int64_t h = 0; h < 2 * int64_t{layout.num_kv_heads}; ++h) {
    std::memset(base + h * head_run_bytes, 0, run_bytes);
  }
  return 2 * static_cast<size_t>(layout.num_kv_heads) * run_bytes;
}

}  // namespace pagedkv
