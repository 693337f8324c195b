#include "cache/storage/token_io.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/check.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"

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

}  // namespace

void WriteTokenRun(KVPool& pool, BlockId block, int32_t layer, int32_t slot,
                   int32_t num_tokens, const TokenSource& key,
                   const TokenSource& value) {
  const KVLayout& layout = pool.layout();
  CheckRun(layout, layer, slot, num_tokens);
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
