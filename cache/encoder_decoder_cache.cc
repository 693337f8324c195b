#include "cache/encoder_decoder_cache.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv {

EncoderDecoderCache::EncoderDecoderCache()
    : EncoderDecoderCache(nullptr, nullptr) {}

EncoderDecoderCache::EncoderDecoderCache(std::unique_ptr<KVCache> self_cache,
                                         std::unique_ptr<KVCache> cross_cache)
    : self_(self_cache != nullptr ? std::move(self_cache)
                                  : std::make_unique<DynamicKVCache>()),
      cross_(cross_cache != nullptr ? std::move(cross_cache)
                                    : std::make_unique<DynamicKVCache>()),
      self_core_(internal::PagedKVCacheFacade::CoreOf(self_.get())),
      cross_core_(internal::PagedKVCacheFacade::CoreOf(cross_.get())) {
  PKV_CHECK(self_core_ != nullptr && cross_core_ != nullptr,
            "EncoderDecoderCache halves must be DynamicKVCache or "
            "StaticKVCache");
}

absl::StatusOr<KVView> EncoderDecoderCache::Update(
    ConstTensorView key, ConstTensorView value, int64_t layer_idx,
    const CachePosition& position, Attention attention) {
  if (attention == Attention::kSelf) {
    return self_->Update(key, value, layer_idx, position);
  }
  absl::StatusOr<KVView> kv = cross_->Update(key, value, layer_idx, position);
  if (kv.ok()) is_updated_.insert(layer_idx);
  return kv;
}

absl::StatusOr<std::optional<KVView>> EncoderDecoderCache::Get(
    int64_t layer_idx, Attention attention) const {
  return attention == Attention::kSelf ? self_->Get(layer_idx)
                                       : cross_->Get(layer_idx);
}

absl::StatusOr<int64_t> EncoderDecoderCache::GetSeqLength(
    int64_t layer_idx, Attention attention) const {
  return attention == Attention::kSelf ? self_->GetSeqLength(layer_idx)
                                       : cross_->GetSeqLength(layer_idx);
}

// Both halves are checked, and a static half's reservation extended for the
// new batch, before either remaps; the remaps themselves cannot fail then.
absl::Status EncoderDecoderCache::PrepareBoth(int64_t self_batch,
                                              int64_t cross_batch) {
  const internal::PagedKVCache::Checkpoint self_before =
      self_core_->TakeCheckpoint();
  PKV_RETURN_IF_ERROR(self_core_->PrepareForBatch(self_batch));
  absl::Status cross = cross_core_->PrepareForBatch(cross_batch);
  // Give back what the self half set aside and any private pool growth.
  if (!cross.ok()) self_core_->Rollback(self_before);
  return cross;
}

absl::Status EncoderDecoderCache::Select(absl::Span<const int64_t> indices) {
  PKV_RETURN_IF_ERROR(self_core_->CheckSelect(indices));
  PKV_RETURN_IF_ERROR(cross_core_->CheckSelect(indices));
  const int64_t new_batch = static_cast<int64_t>(indices.size());
  PKV_RETURN_IF_ERROR(PrepareBoth(new_batch, new_batch));
  absl::Status self = self_->BatchSelectIndices(indices);
  absl::Status cross = cross_->BatchSelectIndices(indices);
  PKV_CHECK(self.ok() && cross.ok(), "prepared select failed: %s / %s",
            self.ToString(), cross.ToString());
  return absl::OkStatus();
}

absl::Status EncoderDecoderCache::ReorderCache(
    absl::Span<const int64_t> beam_idx) {
  return Select(beam_idx);
}

absl::Status EncoderDecoderCache::BatchSelectIndices(
    absl::Span<const int64_t> indices) {
  return Select(indices);
}

absl::Status EncoderDecoderCache::BatchRepeatInterleave(int64_t repeats) {
  PKV_RETURN_IF_ERROR(self_core_->CheckRepeat(repeats));
  PKV_RETURN_IF_ERROR(cross_core_->CheckRepeat(repeats));
  // Each half's batch grows by the factor; prepare each for its own.
  PKV_RETURN_IF_ERROR(PrepareBoth(self_->batch_size().value_or(0) * repeats,
                                  cross_->batch_size().value_or(0) * repeats));
  absl::Status self = self_->BatchRepeatInterleave(repeats);
  absl::Status cross = cross_->BatchRepeatInterleave(repeats);
  PKV_CHECK(self.ok() && cross.ok(), "prepared repeat failed: %s / %s",
            self.ToString(), cross.ToString());
  return absl::OkStatus();
}

absl::Status EncoderDecoderCache::Crop(int64_t max_length) {
  return self_->Crop(max_length);
}

void EncoderDecoderCache::Reset() {
  self_->Reset();
  cross_->Reset();
  is_updated_.clear();
}

std::optional<int64_t> EncoderDecoderCache::GetMaxCacheShape() const {
  return self_->GetMaxCacheShape();
}

void EncoderDecoderCache::CheckInvariants() const {
  self_->CheckInvariants();
  cross_->CheckInvariants();
}

}  // namespace pagedkv
