// cache/encoder_decoder_cache.h
//
// EncoderDecoderCache holds two KV caches, one for decoder self-attention and
// one for cross-attention over the encoder output, and routes Update, Get and
// GetSeqLength by `Attention`. A successful cross update marks
// is_updated(layer); a second cross update still appends (skipping is the
// caller's job). Batch operations and Reset apply to both halves atomically
// (all checks for both before either changes); Crop applies to the
// self-attention half only (the encoder memory is not cropped).
//
//   EncoderDecoderCache cache;  // Two standalone dynamic caches.
//   absl::StatusOr<KVView> kv =
//       cache.Update(k, v, 0, CachePosition::None(), Attention::kCross);
//   cache.is_updated(0);        // true
//
//   EncoderDecoderCache whisper(
//       *StaticKVCache::Create({.max_cache_len = 448, .num_layers = 4}),
//       std::make_unique<DynamicKVCache>());
//
// Thread safety: one thread at a time (see cache.h).
#ifndef PAGEDKV_CACHE_ENCODER_DECODER_CACHE_H_
#define PAGEDKV_CACHE_ENCODER_DECODER_CACHE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache.h"
#include "cache/cache_position.h"
#include "cache/kv_view.h"
#include "cache/paged_kv_cache_facade.h"
#include "tensor/tensor.h"

namespace pagedkv {

// Which half of an EncoderDecoderCache a call targets.
enum class Attention { kSelf, kCross };

class EncoderDecoderCache final : public Cache {
 public:
  // Both halves new standalone DynamicKVCaches.
  EncoderDecoderCache();
  // Takes the halves; a null one becomes a new standalone DynamicKVCache.
  // REQUIRES: each half is null, a DynamicKVCache or a StaticKVCache (the
  // caches whose batch operations it can prepare on both halves at once).
  EncoderDecoderCache(std::unique_ptr<KVCache> self_cache,
                      std::unique_ptr<KVCache> cross_cache);

  // Not movable: a moved-from cache would hold no halves.
  EncoderDecoderCache(EncoderDecoderCache&&) = delete;
  EncoderDecoderCache& operator=(EncoderDecoderCache&&) = delete;

  absl::StatusOr<KVView> Update(ConstTensorView key, ConstTensorView value,
                                int64_t layer_idx,
                                const CachePosition& position,
                                Attention attention = Attention::kSelf);
  absl::StatusOr<std::optional<KVView>> Get(
      int64_t layer_idx, Attention attention = Attention::kSelf) const;
  absl::StatusOr<int64_t> GetSeqLength(int64_t layer_idx,
                                       Attention attention) const;

  // Cache:
  absl::StatusOr<int64_t> GetSeqLength(int64_t layer_idx = 0) const override {
    return GetSeqLength(layer_idx, Attention::kSelf);
  }
  absl::Status ReorderCache(absl::Span<const int64_t> beam_idx) override;
  absl::Status BatchSelectIndices(absl::Span<const int64_t> indices) override;
  absl::Status BatchRepeatInterleave(int64_t repeats) override;
  absl::Status Crop(int64_t max_length) override;
  void Reset() override;
  std::optional<int64_t> GetMaxCacheShape() const override;
  void CheckInvariants() const override;

  // True once a cross-attention update of `layer_idx` succeeded (since
  // construction or Reset).
  bool is_updated(int64_t layer_idx) const {
    return is_updated_.count(layer_idx) > 0;
  }
  const std::set<int64_t>& updated_layers() const { return is_updated_; }

  KVCache& self_attention_cache() { return *self_; }
  const KVCache& self_attention_cache() const { return *self_; }
  KVCache& cross_attention_cache() { return *cross_; }
  const KVCache& cross_attention_cache() const { return *cross_; }

 private:
  absl::Status Select(absl::Span<const int64_t> indices);
  // Extends both halves' reservations for their new batches, or neither
  // (then every allocation either made is undone).
  absl::Status PrepareBoth(int64_t self_batch, int64_t cross_batch);

  // Invariant: never null; self_core_ / cross_core_ are their cores.
  std::unique_ptr<KVCache> self_;
  std::unique_ptr<KVCache> cross_;
  internal::PagedKVCache* self_core_;
  internal::PagedKVCache* cross_core_;
  std::set<int64_t> is_updated_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_ENCODER_DECODER_CACHE_H_
