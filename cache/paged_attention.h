// cache/paged_attention.h
//
// A reference CPU decode-attention kernel that reads keys and values through
// a KVView, block by block, with no gather: the proof that attention code can
// use the paged cache in place. For each row b and query head h (grouped-query
// attention: query head h reads KV head h / (query_heads / kv_heads)):
//
//   out[b, h, :] =
//       softmax_t(scale * q[b, h, :] . K[b, kv(h), t, :]) @ V[b, kv(h), t, :]
//
// over the view's visible tokens t in [0, length). Accumulates in float, so it
// serves float32, float16 and bfloat16 caches alike. On a quantized pool
// (int8 / fp8 e4m3, kv_layout.h) it reads the codes and scales in place
// (KVView::QuantizedSlabAt): a score is scale * (q . codes), so nothing is
// dequantized into a buffer. It is a correctness
// reference (tests check it against attention over KVView::Gather()), not a
// fast kernel.
//
//   absl::StatusOr<KVView> kv = cache.Update(key.view(), value.view(), 0);
//   if (!kv.ok()) return kv.status();
//   const float scale = 1.0f / std::sqrt(static_cast<float>(kv->head_dim()));
//   absl::Status status =
//       PagedDecodeAttention(query.view(), *kv, scale, out.view());
//
// Thread safety: reads the view; safe while nobody mutates the cache.
#ifndef PAGEDKV_CACHE_PAGED_ATTENTION_H_
#define PAGEDKV_CACHE_PAGED_ATTENTION_H_

#include "absl/status/status.h"
#include "cache/kv_view.h"
#include "tensor/tensor.h"

namespace pagedkv {

// `query` is (batch, query_heads, head_dim), any dtype and strides; `out` is
// the same shape, any dtype. InvalidArgument (out unchanged) when the batch
// or head_dim differ from the view's, or query_heads is not a positive
// multiple of the view's heads. A view of length 0 gives zeros.
absl::Status PagedDecodeAttention(ConstTensorView query, const KVView& kv,
                                  float scale, TensorView out);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_PAGED_ATTENTION_H_
