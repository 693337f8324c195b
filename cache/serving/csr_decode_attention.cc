#include "cache/serving/csr_decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"

namespace pagedkv {
namespace {

absl::Status ValidateShapes(ConstTensorView query, const KVLayout& layout,
                            int32_t layer, TensorView out) {
  if (query.rank() != 3 || query.dim(2) != layout.head_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query must be (batch, query_heads, head_dim %d), got %s",
        layout.head_dim, query.shape().ToString()));
  }
  if (query.dim(1) <= 0 || query.dim(1) % layout.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query heads %d must be a positive multiple of the %d KV heads",
        query.dim(1), layout.num_kv_heads));
  }
  if (out.shape() != query.shape()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("out shape %s differs from query shape %s",
                        out.shape().ToString(), query.shape().ToString()));
  }
  if (layer < 0 || layer >= layout.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer %d outside [0, %d)", layer, layout.num_layers));
  }
  return absl::OkStatus();
}

absl::Status ValidatePages(int64_t batch, const KVPool& pool,
                           absl::Span<const int32_t> kv_indptr,
                           absl::Span<const int32_t> kv_indices,
                           absl::Span<const int32_t> kv_last_page_len) {
  if (static_cast<int64_t>(kv_indptr.size()) < batch + 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kv_indptr holds %d entries, needs %d (batch %d + 1)",
                        kv_indptr.size(), batch + 1, batch));
  }
  if (static_cast<int64_t>(kv_last_page_len.size()) < batch) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kv_last_page_len holds %d entries, needs %d (one per row)",
        kv_last_page_len.size(), batch));
  }
  const int64_t num_indices = static_cast<int64_t>(kv_indices.size());
  if (kv_indptr[0] < 0 || kv_indptr[0] > num_indices) {
    return absl::InvalidArgumentError(
        absl::StrFormat("kv_indptr[0] = %d outside [0, %d] (kv_indices size)",
                        kv_indptr[0], num_indices));
  }
  const int32_t bt = pool.layout().block_tokens;
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t begin = kv_indptr[b];
    const int32_t end = kv_indptr[b + 1];
    if (end < begin || end > num_indices) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "row %d: kv_indptr[%d] = %d must be in [kv_indptr[%d] = %d, %d] "
          "(kv_indices size)",
          b, b + 1, end, b, begin, num_indices));
    }
    if (end > begin && (kv_last_page_len[b] < 1 || kv_last_page_len[b] > bt)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "row %d: kv_last_page_len %d outside [1, %d] (block_tokens)", b,
          kv_last_page_len[b], bt));
    }
    for (int32_t p = begin; p < end; ++p) {
      if (kv_indices[p] < 0 || kv_indices[p] >= pool.num_blocks()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "row %d: kv_indices[%d] = %d outside a pool of %d blocks", b, p,
            kv_indices[p], pool.num_blocks()));
      }
    }
  }
  return absl::OkStatus();
}

// Widens n elements of `dtype` at src to float; the dtype switch runs once
// per run, not once per element.
void WidenRun(DType dtype, const std::byte* src, int64_t n, float* dst) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kFloat16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, sizeof(bits));
        dst[i] = HalfToFloat(bits);
      }
      return;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, sizeof(bits));
        dst[i] = BFloat16ToFloat(bits);
      }
      return;
  }
  PKV_CHECK(false, "invalid DType %d", static_cast<int>(dtype));
}

// Returns a . b over n floats, in eight interleaved partial sums: one chain
// of n dependent adds would make the kernel latency-bound (about 4 cycles an
// element), eight independent ones vectorize.
float Dot(const float* a, const float* b, int64_t n) {
  float partial[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int k = 0; k < 8; ++k) partial[k] += a[d + k] * b[d + k];
  }
  for (; d < n; ++d) partial[0] += a[d] * b[d];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

}  // namespace

absl::Status CsrDecodeAttention(ConstTensorView query, const KVPool& pool,
                                int32_t layer,
                                absl::Span<const int32_t> kv_indptr,
                                absl::Span<const int32_t> kv_indices,
                                absl::Span<const int32_t> kv_last_page_len,
                                float scale, TensorView out) {
  const KVLayout& layout = pool.layout();
  if (absl::Status s = ValidateShapes(query, layout, layer, out); !s.ok()) {
    return s;
  }
  const int64_t batch = query.dim(0);
  if (absl::Status s =
          ValidatePages(batch, pool, kv_indptr, kv_indices, kv_last_page_len);
      !s.ok()) {
    return s;
  }

  const int64_t query_heads = query.dim(1);
  const int32_t kv_heads = layout.num_kv_heads;
  const int64_t group = query_heads / kv_heads;
  const int64_t head_dim = layout.head_dim;
  const int32_t bt = layout.block_tokens;
  const size_t element = SizeOf(layout.dtype);
  // Per (row, KV head): the group's queries and running softmax state, and
  // one page's widened K and V runs and scores.
  std::vector<float> q(static_cast<size_t>(group * head_dim));
  std::vector<float> acc(q.size());
  std::vector<float> running_max(static_cast<size_t>(group));
  std::vector<float> running_sum(static_cast<size_t>(group));
  std::vector<float> scores(static_cast<size_t>(group * bt));
  std::vector<float> keys(static_cast<size_t>(int64_t{bt} * head_dim));
  std::vector<float> values(keys.size());

  for (int64_t b = 0; b < batch; ++b) {
    const int32_t begin = kv_indptr[b];
    const int32_t end = kv_indptr[b + 1];
    for (int32_t g = 0; g < kv_heads; ++g) {
      for (int64_t j = 0; j < group; ++j) {
        for (int64_t d = 0; d < head_dim; ++d) {
          const int64_t index[3] = {b, g * group + j, d};
          q[j * head_dim + d] =
              LoadAsFloat(query.dtype(), query.ElementPtr(index));
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(running_max.begin(), running_max.end(),
                -std::numeric_limits<float>::infinity());
      std::fill(running_sum.begin(), running_sum.end(), 0.0f);
      for (int32_t p = begin; p < end; ++p) {
        const int32_t tokens = p == end - 1 ? kv_last_page_len[b] : bt;
        const std::byte* block = pool.BlockData(BlockId(kv_indices[p]));
        if (layout.quantized()) {
          // The page's codes and scales, in place, to float once per run.
          for (const KV kv : {KV::kKey, KV::kValue}) {
            DequantizeVectors(layout.quant_type(),
                              block + layout.DataOffset(layer, kv, g, 0),
                              block + layout.ScaleOffset(layer, kv, g, 0),
                              tokens, head_dim, DType::kFloat32,
                              kv == KV::kKey ? keys.data() : values.data());
          }
        } else {
          WidenRun(
              layout.dtype,
              block + layout.ElementOffset(layer, KV::kKey, g, 0) * element,
              tokens * head_dim, keys.data());
          WidenRun(
              layout.dtype,
              block + layout.ElementOffset(layer, KV::kValue, g, 0) * element,
              tokens * head_dim, values.data());
        }
        for (int64_t j = 0; j < group; ++j) {
          const float* qj = &q[j * head_dim];
          float* sj = &scores[j * bt];
          float page_max = running_max[j];
          for (int32_t t = 0; t < tokens; ++t) {
            sj[t] = Dot(qj, &keys[t * head_dim], head_dim) * scale;
            page_max = std::max(page_max, sj[t]);
          }
          // Rescale what earlier pages summed to the new maximum.
          const float correction = std::exp(running_max[j] - page_max);
          running_max[j] = page_max;
          running_sum[j] *= correction;
          float* aj = &acc[j * head_dim];
          for (int64_t d = 0; d < head_dim; ++d) aj[d] *= correction;
          for (int32_t t = 0; t < tokens; ++t) {
            const float weight = std::exp(sj[t] - page_max);
            running_sum[j] += weight;
            const float* vt = &values[t * head_dim];
            for (int64_t d = 0; d < head_dim; ++d) aj[d] += weight * vt[d];
          }
        }
      }
      for (int64_t j = 0; j < group; ++j) {
        const float inverse = running_sum[j] > 0 ? 1.0f / running_sum[j] : 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) {
          const int64_t index[3] = {b, g * group + j, d};
          StoreFromFloat(out.dtype(), acc[j * head_dim + d] * inverse,
                         out.ElementPtr(index));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace pagedkv
