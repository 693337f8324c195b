#include "cache/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"

namespace pagedkv {
namespace {

float Load(ConstTensorView t, int64_t i, int64_t j, int64_t k) {
  const int64_t index[3] = {i, j, k};
  return LoadAsFloat(t.dtype(), t.ElementPtr(index));
}

float ScaleAt(const KVView::QuantizedSlab& slab, int64_t slot) {
  float scale;
  std::memcpy(&scale, slab.scales + slot * sizeof(float), sizeof(scale));
  return scale;
}

}  // namespace

absl::Status PagedDecodeAttention(ConstTensorView query, const KVView& kv,
                                  float scale, TensorView out) {
  if (query.rank() != 3 || query.dim(0) != kv.batch() ||
      query.dim(2) != kv.head_dim()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query must be (batch %d, query_heads, head_dim %d), got %s",
        kv.batch(), kv.head_dim(), query.shape().ToString()));
  }
  const int64_t query_heads = query.dim(1);
  if (query_heads <= 0 || query_heads % kv.heads() != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query heads %d must be a positive multiple of the %d KV heads",
        query_heads, kv.heads()));
  }
  if (out.shape() != query.shape()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("out shape %s differs from query shape %s",
                        out.shape().ToString(), query.shape().ToString()));
  }
  const int64_t group = query_heads / kv.heads();
  const int64_t head_dim = kv.head_dim();
  const int64_t bt = kv.block_tokens();
  std::vector<float> scores(static_cast<size_t>(kv.length()));
  std::vector<float> acc(static_cast<size_t>(head_dim));
  const bool quantized = kv.storage() != KVStorage::kSame;
  std::vector<float> query_row(quantized ? static_cast<size_t>(head_dim) : 0);
  for (int64_t b = 0; b < kv.batch(); ++b) {
    for (int64_t h = 0; h < query_heads; ++h) {
      const int64_t kv_head = h / group;
      float max_score = -std::numeric_limits<float>::infinity();
      if (quantized) {
        // Quantized blocks, read in place: score = scale * (q . codes), and
        // V accumulates weight * scale * codes (tensor/quantize.h).
        for (int64_t d = 0; d < head_dim; ++d)
          query_row[d] = Load(query, b, h, d);
        for (int64_t t = 0; t < kv.length(); ++t) {
          const int64_t q = kv.start() + t;
          const KVView::QuantizedSlab keys = kv.QuantizedSlabAt(
              KV::kKey, b, kv_head, static_cast<int32_t>(q / bt));
          scores[t] = DotQuantized(keys.type, query_row.data(),
                                   keys.codes + (q % bt) * head_dim,
                                   ScaleAt(keys, q % bt), head_dim) *
                      scale;
          max_score = std::max(max_score, scores[t]);
        }
      } else {
        // Scores, block by block: each block's slab holds block_tokens rows.
        for (int64_t t = 0; t < kv.length(); ++t) {
          const int64_t q = kv.start() + t;
          const ConstTensorView keys =
              kv.Slab(KV::kKey, b, kv_head, static_cast<int32_t>(q / bt));
          float dot = 0;
          for (int64_t d = 0; d < head_dim; ++d) {
            const int64_t index[2] = {q % bt, d};
            dot += Load(query, b, h, d) *
                   LoadAsFloat(keys.dtype(), keys.ElementPtr(index));
          }
          scores[t] = dot * scale;
          max_score = std::max(max_score, scores[t]);
        }
      }
      float total = 0;
      for (float& s : scores) {
        s = std::exp(s - max_score);
        total += s;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t t = 0; quantized && t < kv.length(); ++t) {
        const int64_t q = kv.start() + t;
        const KVView::QuantizedSlab values = kv.QuantizedSlabAt(
            KV::kValue, b, kv_head, static_cast<int32_t>(q / bt));
        AccumulateQuantized(values.type, scores[t],
                            values.codes + (q % bt) * head_dim,
                            ScaleAt(values, q % bt), head_dim, acc.data());
      }
      for (int64_t t = 0; !quantized && t < kv.length(); ++t) {
        const int64_t q = kv.start() + t;
        const ConstTensorView values =
            kv.Slab(KV::kValue, b, kv_head, static_cast<int32_t>(q / bt));
        for (int64_t d = 0; d < head_dim; ++d) {
          const int64_t index[2] = {q % bt, d};
          acc[d] +=
              scores[t] * LoadAsFloat(values.dtype(), values.ElementPtr(index));
        }
      }
      for (int64_t d = 0; d < head_dim; ++d) {
        const int64_t index[3] = {b, h, d};
        StoreFromFloat(out.dtype(), total > 0 ? acc[d] / total : 0.0f,
                       out.ElementPtr(index));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace pagedkv
