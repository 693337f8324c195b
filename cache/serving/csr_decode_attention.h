// cache/serving/csr_decode_attention.h
//
// A reference CPU decode-attention kernel over a host KVPool, addressed the
// way FlashInfer's batch decode kernel is: through the CSR page table that
// ExportCsrPageTable writes (kv_indptr, kv_indices, kv_last_page_len). One
// query token per sequence; for row b and query head h (grouped-query
// attention: query head h reads KV head h / (query_heads / kv_heads)):
//
//   out[b, h, :] =
//       softmax_t(scale * q[b, h, :] . K[b, kv(h), t, :]) @ V[b, kv(h), t, :]
//
// over row b's tokens: every slot of its pages kv_indices[kv_indptr[b] ..
// kv_indptr[b + 1]) but the last, and the first kv_last_page_len[b] slots
// of the last. K and V are read in place, one (layer, K|V, head) run of a
// block at a time (kv_layout.h), with no gather: each run is widened to
// float once and serves every query head of its group. The softmax is the
// online (running maximum) form a decode kernel uses, so one pass reads each
// page once; all arithmetic is float, for float32, float16 and bfloat16
// pools alike. On a quantized pool (int8 / fp8 e4m3, kv_layout.h) each run
// of codes is dequantized with its scales, in place, into the same float
// scratch (tensor/quantize.h's DequantizeVectors), so the result is that of
// the kernel on a float32 pool holding the dequantized values. It is a correctness reference and the proof that the CSR
// export addresses the pool right, not a fast kernel. A row without pages
// gives zeros.
//
//   std::vector<int32_t> indptr(batch.size() + 1), last(batch.size());
//   std::vector<int32_t> indices(sizes.total_blocks);
//   PKV_RETURN_IF_ERROR(ExportCsrPageTable(manager, batch,
//       absl::MakeSpan(indptr), absl::MakeSpan(indices),
//       absl::MakeSpan(last)));
//   const float scale =
//       1.0f / std::sqrt(static_cast<float>(layout.head_dim));
//   PKV_RETURN_IF_ERROR(CsrDecodeAttention(query.view(),
//       *manager.kv_pool(), /*layer=*/0, indptr, indices, last, scale,
//       out.view()));
//
// Thread safety: reads the pool's bytes and takes no lock; safe while nobody
// writes the pages it reads (and concurrently with other readers).
#ifndef PAGEDKV_CACHE_SERVING_CSR_DECODE_ATTENTION_H_
#define PAGEDKV_CACHE_SERVING_CSR_DECODE_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cache/storage/kv_pool.h"
#include "tensor/tensor.h"

namespace pagedkv {

// Writes out[b, h, :] as the file comment says, for every row b <
// query.dim(0) and query head h.
//
// `query` is (batch, query_heads, head_dim) of any dtype and strides; `out`
// has the same shape, any dtype and strides, and may be `query` itself.
// kv_indptr holds at least batch + 1 entries and kv_last_page_len at least
// batch (only those are read); kv_indices is indexed through kv_indptr.
//
// INVALID_ARGUMENT, with out unchanged, when: query is not rank 3 or its
// head_dim is not the pool's, query_heads is not a positive multiple of the
// pool's KV heads, out's shape differs from query's, layer is outside [0,
// num_layers), an array is too short, kv_indptr decreases or leaves [0,
// kv_indices.size()], a page id is outside [0, num_blocks), or a row with
// pages has kv_last_page_len outside [1, block_tokens] (for a row without
// pages it is ignored, as FlashInfer does). Every check runs before the
// first write.
absl::Status CsrDecodeAttention(ConstTensorView query, const KVPool& pool,
                                int32_t layer,
                                absl::Span<const int32_t> kv_indptr,
                                absl::Span<const int32_t> kv_indices,
                                absl::Span<const int32_t> kv_last_page_len,
                                float scale, TensorView out);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_CSR_DECODE_ATTENTION_H_
