#include "cache/kv_view.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "tensor/quantize.h"
#include "tensor/tensor_copy.h"

namespace pagedkv {

KVView::KVView(const KVPool* pool, absl::Span<const BlockTable> tables,
               int32_t layer, int64_t start, int64_t length, int64_t heads,
               int64_t head_dim)
    : pool_(pool),
      tables_(tables),
      layer_(layer),
      start_(start),
      length_(length),
      heads_(heads),
      head_dim_(head_dim) {
  PKV_CHECK(pool_ != nullptr, "KVView needs a pool");
}

Shape KVView::shape() const {
  return Shape({batch(), heads_, length_, head_dim_});
}

int32_t KVView::block_tokens() const { return pool_->layout().block_tokens; }

ConstTensorView KVView::Slab(KV kv, int64_t row, int64_t head,
                             int32_t block_index) const {
  PKV_CHECK(row >= 0 && row < batch() && head >= 0 && head < heads_,
            "Slab(row %d, head %d) outside batch %d, heads %d", row, head,
            batch(), heads_);
  const BlockTable& table = tables_[row];
  PKV_CHECK(block_index >= 0 && block_index < table.num_blocks(),
            "Slab block %d outside table of %d", block_index,
            table.num_blocks());
  const KVLayout& layout = pool_->layout();
  PKV_CHECK(!layout.quantized(),
            "Slab of a %s pool: quantized blocks are read through "
            "QuantizedSlabAt",
            std::string(KVStorageName(layout.storage)));
  const std::byte* base =
      pool_->BlockData(table[block_index]) +
      layout.DataOffset(layer_, kv, static_cast<int32_t>(head), 0);
  return ConstTensorView(base, layout.dtype,
                         Shape({layout.block_tokens, head_dim_}));
}

KVView::QuantizedSlab KVView::QuantizedSlabAt(KV kv, int64_t row, int64_t head,
                                              int32_t block_index) const {
  PKV_CHECK(row >= 0 && row < batch() && head >= 0 && head < heads_,
            "QuantizedSlabAt(row %d, head %d) outside batch %d, heads %d", row,
            head, batch(), heads_);
  const BlockTable& table = tables_[row];
  PKV_CHECK(block_index >= 0 && block_index < table.num_blocks(),
            "QuantizedSlabAt block %d outside table of %d", block_index,
            table.num_blocks());
  const KVLayout& layout = pool_->layout();
  PKV_CHECK(layout.quantized(), "QuantizedSlabAt of an unquantized pool");
  const std::byte* block = pool_->BlockData(table[block_index]);
  const int32_t h = static_cast<int32_t>(head);
  return QuantizedSlab{layout.quant_type(),
                       block + layout.DataOffset(layer_, kv, h, 0),
                       block + layout.ScaleOffset(layer_, kv, h, 0)};
}

absl::StatusOr<KVTensors> KVView::Gather() const {
  const DType dt = dtype();
  PKV_ASSIGN_OR_RETURN(Tensor key, Tensor::Create(dt, shape()));
  PKV_ASSIGN_OR_RETURN(Tensor value, Tensor::Create(dt, shape()));
  PKV_RETURN_IF_ERROR(GatherInto(key.view(), value.view()));
  return KVTensors{std::move(key), std::move(value)};
}

absl::Status KVView::GatherInto(TensorView key_out,
                                TensorView value_out) const {
  const Shape want = shape();
  if (key_out.shape() != want || value_out.shape() != want) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Gather outputs must have shape %s, got %s and %s", want.ToString(),
        key_out.shape().ToString(), value_out.shape().ToString()));
  }
  PKV_RETURN_IF_ERROR(GatherOne(KV::kKey, key_out));
  return GatherOne(KV::kValue, value_out);
}

// One run per (row, head, block): the tokens of a block that fall in the
// window. Same dtype and a contiguous destination run make it a memcpy; any
// other destination goes through tensor Copy for that run.
absl::Status KVView::GatherOne(KV kv, TensorView out) const {
  const KVLayout& layout = pool_->layout();
  if (layout.quantized()) return GatherQuantized(kv, out);
  const int64_t bt = layout.block_tokens;
  const size_t elem = SizeOf(layout.dtype);
  const bool fast = out.dtype() == layout.dtype && out.strides()[3] == 1 &&
                    out.strides()[2] == head_dim_;
  for (int64_t b = 0; b < batch(); ++b) {
    const BlockTable& table = tables_[b];
    for (int64_t h = 0; h < heads_; ++h) {
      int64_t t = 0;
      while (t < length_) {
        const int64_t q = start_ + t;
        const int32_t block = static_cast<int32_t>(q / bt);
        const int32_t slot = static_cast<int32_t>(q % bt);
        const int64_t run = std::min(bt - slot, length_ - t);
        const std::byte* src =
            pool_->BlockData(table[block]) +
            layout.DataOffset(layer_, kv, static_cast<int32_t>(h), slot);
        if (fast) {
          std::memcpy(out.ElementPtr({b, h, t, 0}), src,
                      static_cast<size_t>(run * head_dim_) * elem);
        } else {
          const int64_t idx[4] = {b, h, t, 0};
          Strides strides = {out.strides()[2], out.strides()[3]};
          TensorView dst(out.ElementPtr(idx), out.dtype(),
                         Shape({run, head_dim_}), strides);
          PKV_RETURN_IF_ERROR(
              Copy(ConstTensorView(src, layout.dtype, Shape({run, head_dim_})),
                   dst));
        }
        t += run;
      }
    }
  }
  return absl::OkStatus();
}

// Quantized pools: per (row, head, visible token) one DequantizeVector of
// head_dim codes, straight into the output when its head_dim axis is
// contiguous, else through a float32 staging vector and tensor Copy.
absl::Status KVView::GatherQuantized(KV kv, TensorView out) const {
  const KVLayout& layout = pool_->layout();
  const QuantType type = layout.quant_type();
  const int64_t bt = layout.block_tokens;
  const bool contiguous = out.strides()[3] == 1;
  std::vector<float> staging(contiguous ? 0 : head_dim_);
  if (contiguous && out.strides()[2] == head_dim_) {
    // The fast path: per (row, head, block) one DequantizeVectors of the
    // block's run of visible tokens, straight into the output.
    for (int64_t b = 0; b < batch(); ++b) {
      const BlockTable& table = tables_[b];
      for (int64_t h = 0; h < heads_; ++h) {
        const int32_t head = static_cast<int32_t>(h);
        for (int64_t t = 0; t < length_;) {
          const int64_t q = start_ + t;
          const int32_t slot = static_cast<int32_t>(q % bt);
          const int64_t run = std::min(bt - slot, length_ - t);
          const std::byte* block =
              pool_->BlockData(table[static_cast<int32_t>(q / bt)]);
          const int64_t idx[4] = {b, h, t, 0};
          DequantizeVectors(type,
                            block + layout.DataOffset(layer_, kv, head, slot),
                            block + layout.ScaleOffset(layer_, kv, head, slot),
                            run, head_dim_, out.dtype(), out.ElementPtr(idx));
          t += run;
        }
      }
    }
    return absl::OkStatus();
  }
  for (int64_t b = 0; b < batch(); ++b) {
    const BlockTable& table = tables_[b];
    for (int64_t h = 0; h < heads_; ++h) {
      for (int64_t t = 0; t < length_; ++t) {
        const int64_t q = start_ + t;
        const int32_t slot = static_cast<int32_t>(q % bt);
        const std::byte* block =
            pool_->BlockData(table[static_cast<int32_t>(q / bt)]);
        const int32_t head = static_cast<int32_t>(h);
        float scale;
        std::memcpy(&scale, block + layout.ScaleOffset(layer_, kv, head, slot),
                    sizeof(scale));
        const std::byte* codes =
            block + layout.DataOffset(layer_, kv, head, slot);
        const int64_t idx[4] = {b, h, t, 0};
        if (contiguous) {
          DequantizeVector(type, codes, scale, head_dim_, out.dtype(),
                           out.ElementPtr(idx));
        } else {
          DequantizeVector(type, codes, scale, head_dim_, DType::kFloat32,
                           staging.data());
          TensorView dst(out.ElementPtr(idx), out.dtype(), Shape({head_dim_}),
                         Strides{out.strides()[3]});
          PKV_RETURN_IF_ERROR(
              Copy(ConstTensorView(
                       reinterpret_cast<const std::byte*>(staging.data()),
                       DType::kFloat32, Shape({head_dim_})),
                   dst));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace pagedkv
