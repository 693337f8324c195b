// tests/cache/reference_cache.h
//
// ReferenceCache is an obviously correct model of the cache contract
// (spec/cache-semantics.md) for differential tests: contiguous per-layer
// vectors of doubles, no paging, no sharing, no memory limits. It mirrors
// KVCache's inputs (ConstTensorView keys/values, CachePosition) and returns
// the error *kind* the contract names: InvalidArgument for malformed input
// (checked first), OutOfRange for a position or append past max_cache_len or
// an index outside the batch. A failed call changes nothing.
//
//   ReferenceCache model({.max_cache_len = 16, .num_layers = 2});
//   absl::Status s = model.Update(key.view(), value.view(), 0,
//                                 CachePosition::Scalar(3));
//   model.layer(0)->key[b][h][t * model.head_dim() + d];
//
// Thread safety: a plain value; one thread at a time.
#ifndef PAGEDKV_TESTS_CACHE_REFERENCE_CACHE_H_
#define PAGEDKV_TESTS_CACHE_REFERENCE_CACHE_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_position.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace pagedkv::testing {

class ReferenceCache {
 public:
  // What a shared pool's layout allows (a standalone cache has no limits).
  struct PoolLimits {
    int64_t num_layers = 0;
    int64_t heads = 0;
    int64_t head_dim = 0;
    DType dtype = DType::kFloat32;
  };
  struct Options {
    // Set for a static cache: its capacity per layer.
    std::optional<int64_t> max_cache_len;
    // Static caches: the fixed layer count.
    int64_t num_layers = 0;
    std::optional<PoolLimits> pool;
  };
  // One layer: key[b][h][t * head_dim + d], likewise value.
  struct Layer {
    bool present = false;
    int64_t length = 0;
    std::vector<std::vector<std::vector<double>>> key;
    std::vector<std::vector<std::vector<double>>> value;
  };

  explicit ReferenceCache(const Options& options) : options_(options) {
    if (options_.pool.has_value()) dtype_ = options_.pool->dtype;
    Reset();
  }

  absl::Status Update(ConstTensorView key, ConstTensorView value,
                      int64_t layer_idx, const CachePosition& position) {
    if (absl::Status s = CheckLayer(layer_idx); !s.ok()) return s;
    if (key.rank() != 4) return absl::InvalidArgumentError("rank");
    if (value.shape() != key.shape()) return absl::InvalidArgumentError("kv");
    if (value.dtype() != key.dtype()) return absl::InvalidArgumentError("dt");
    if (dtype_.has_value() && key.dtype() != *dtype_) {
      return absl::InvalidArgumentError("dtype differs from the cache's");
    }
    const int64_t batch = key.dim(0), heads = key.dim(1), seq = key.dim(2),
                  head_dim = key.dim(3);
    if (heads <= 0 || head_dim <= 0) return absl::InvalidArgumentError("hd");
    if (options_.pool.has_value() &&
        (heads != options_.pool->heads || head_dim != options_.pool->head_dim ||
         layer_idx >= options_.pool->num_layers)) {
      return absl::InvalidArgumentError("does not fit the pool");
    }
    if (batch_.has_value() &&
        (batch != *batch_ || heads != heads_ || head_dim != head_dim_)) {
      return absl::InvalidArgumentError("geometry differs from the cache's");
    }
    if (is_static() && seq == 0) return absl::InvalidArgumentError("seq 0");
    const int64_t length =
        layer_idx < num_layer_slots() ? layers_[layer_idx].length : int64_t{0};
    int64_t new_length = length + seq;
    if (!position.is_append()) {
      const bool shape_ok =
          position.kind() == CachePosition::Kind::kScalar ? seq == 1
          : position.kind() == CachePosition::Kind::kVector
              ? position.cols() == seq
              : position.rows() == batch && position.cols() == seq;
      if (!shape_ok) return absl::InvalidArgumentError("position shape");
      if (position.values().empty()) {
        return absl::InvalidArgumentError("empty position");
      }
      int64_t max_position = 0;
      for (int64_t p : position.values()) {
        if (p < 0) return absl::InvalidArgumentError("negative position");
        max_position = std::max(max_position, p);
      }
      new_length = std::max(length, max_position + 1);
    }
    if (is_static() && new_length > *options_.max_cache_len) {
      return absl::OutOfRangeError("past max_cache_len");
    }

    // Valid: fix the geometry, open the slot, grow with zeros, write.
    batch_ = batch;
    heads_ = heads;
    head_dim_ = head_dim;
    dtype_ = key.dtype();
    if (layer_idx >= num_layer_slots()) layers_.resize(layer_idx + 1);
    Layer& layer = layers_[layer_idx];
    layer.present = true;
    layer.length = new_length;
    for (auto* half : {&layer.key, &layer.value}) {
      half->resize(batch, std::vector<std::vector<double>>(heads));
      for (auto& row : *half) {
        for (auto& run : row) run.resize(new_length * head_dim, 0.0);
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < seq; ++t) {
        int64_t p = length + t;
        if (position.kind() == CachePosition::Kind::kMatrix) {
          p = position.at(b, t);
        } else if (!position.is_append()) {
          p = position.values()[t];
        }
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t d = 0; d < head_dim; ++d) {
            layer.key[b][h][p * head_dim + d] =
                LoadAsFloat(key.dtype(), key.ElementPtr({b, h, t, d}));
            layer.value[b][h][p * head_dim + d] =
                LoadAsFloat(value.dtype(), value.ElementPtr({b, h, t, d}));
          }
        }
      }
    }
    return absl::OkStatus();
  }

  // Get's answer: whether the layer holds data, or the error.
  absl::StatusOr<bool> IsPresent(int64_t layer_idx) const {
    if (absl::Status s = CheckLayer(layer_idx); !s.ok()) return s;
    return layer_idx < num_layer_slots() && layers_[layer_idx].present;
  }

  absl::StatusOr<int64_t> GetSeqLength(int64_t layer_idx) const {
    if (layer_idx < 0) return absl::InvalidArgumentError("negative layer");
    if (layer_idx >= num_layer_slots()) return int64_t{0};
    return layers_[layer_idx].length;
  }

  // Before the batch is fixed a select is a no-op (lucid loops over zero
  // layers), but a negative index is rejected always.
  absl::Status CheckSelect(absl::Span<const int64_t> indices) const {
    for (int64_t i : indices) {
      if (i < 0 || (batch_.has_value() && i >= *batch_)) {
        return absl::OutOfRangeError("index outside the batch");
      }
    }
    return absl::OkStatus();
  }
  absl::Status BatchSelectIndices(absl::Span<const int64_t> indices) {
    if (absl::Status s = CheckSelect(indices); !s.ok()) return s;
    if (!batch_.has_value()) return absl::OkStatus();
    for (Layer& layer : layers_) {
      if (!layer.present) continue;
      for (auto* half : {&layer.key, &layer.value}) {
        std::vector<std::vector<std::vector<double>>> rows;
        for (int64_t i : indices) rows.push_back((*half)[i]);
        *half = std::move(rows);
      }
    }
    batch_ = static_cast<int64_t>(indices.size());
    return absl::OkStatus();
  }
  absl::Status ReorderCache(absl::Span<const int64_t> beam_idx) {
    return BatchSelectIndices(beam_idx);
  }

  absl::Status CheckRepeat(int64_t repeats) const {
    if (repeats < 1) return absl::InvalidArgumentError("repeats < 1");
    return absl::OkStatus();
  }
  absl::Status BatchRepeatInterleave(int64_t repeats) {
    if (absl::Status s = CheckRepeat(repeats); !s.ok()) return s;
    std::vector<int64_t> indices;
    for (int64_t r = 0; r < batch_.value_or(0); ++r) {
      for (int64_t k = 0; k < repeats; ++k) indices.push_back(r);
    }
    return BatchSelectIndices(indices);
  }

  // Keeps the last max_length positions of every longer layer.
  absl::Status Crop(int64_t max_length) {
    if (max_length < 0) return absl::InvalidArgumentError("negative length");
    for (Layer& layer : layers_) {
      if (!layer.present || layer.length <= max_length) continue;
      const int64_t drop = (layer.length - max_length) * head_dim_;
      for (auto* half : {&layer.key, &layer.value}) {
        for (auto& row : *half) {
          for (auto& run : row) run.erase(run.begin(), run.begin() + drop);
        }
      }
      layer.length = max_length;
    }
    return absl::OkStatus();
  }

  // Drops data, lengths and the batch/heads/head_dim; the dtype stays.
  void Reset() {
    layers_.assign(is_static() ? options_.num_layers : 0, Layer());
    batch_.reset();
    heads_ = 0;
    head_dim_ = 0;
  }

  bool is_static() const { return options_.max_cache_len.has_value(); }
  std::optional<int64_t> GetMaxCacheShape() const {
    return options_.max_cache_len;
  }
  std::optional<int64_t> batch_size() const { return batch_; }
  int64_t heads() const { return heads_; }
  int64_t head_dim() const { return head_dim_; }
  std::optional<DType> dtype() const { return dtype_; }
  int64_t num_layer_slots() const {
    return static_cast<int64_t>(layers_.size());
  }
  // nullptr past the last slot.
  const Layer* layer(int64_t layer_idx) const {
    return layer_idx >= 0 && layer_idx < num_layer_slots() ? &layers_[layer_idx]
                                                           : nullptr;
  }

 private:
  absl::Status CheckLayer(int64_t layer_idx) const {
    if (layer_idx < 0) return absl::InvalidArgumentError("negative layer");
    if (is_static() && layer_idx >= options_.num_layers) {
      return absl::InvalidArgumentError("layer >= num_layers");
    }
    return absl::OkStatus();
  }

  Options options_;
  std::vector<Layer> layers_;
  std::optional<int64_t> batch_;
  int64_t heads_ = 0;
  int64_t head_dim_ = 0;
  std::optional<DType> dtype_;
};

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_CACHE_REFERENCE_CACHE_H_
