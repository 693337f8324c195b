#include "cache/paged_kv_cache_facade.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "base/check.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv::internal {

PagedKVCacheFacade::PagedKVCacheFacade(std::unique_ptr<PagedKVCache> core)
    : core_(std::move(core)) {
  PKV_CHECK(core_ != nullptr, "a cache facade needs a core");
}

PagedKVCacheFacade::~PagedKVCacheFacade() = default;

PagedKVCache* PagedKVCacheFacade::CoreOf(KVCache* cache) {
  auto* facade = dynamic_cast<PagedKVCacheFacade*>(cache);
  return facade != nullptr ? facade->core_.get() : nullptr;
}

absl::StatusOr<KVView> PagedKVCacheFacade::Update(
    ConstTensorView key, ConstTensorView value, int64_t layer_idx,
    const CachePosition& position) {
  return core_->Update(key, value, layer_idx, position);
}

absl::StatusOr<std::optional<KVView>> PagedKVCacheFacade::Get(
    int64_t layer_idx) const {
  return core_->Get(layer_idx);
}

absl::StatusOr<int64_t> PagedKVCacheFacade::GetSeqLength(
    int64_t layer_idx) const {
  return core_->GetSeqLength(layer_idx);
}

absl::Status PagedKVCacheFacade::ReorderCache(
    absl::Span<const int64_t> beam_idx) {
  return core_->ReorderCache(beam_idx);
}

absl::Status PagedKVCacheFacade::BatchSelectIndices(
    absl::Span<const int64_t> indices) {
  return core_->BatchSelectIndices(indices);
}

absl::Status PagedKVCacheFacade::BatchRepeatInterleave(int64_t repeats) {
  return core_->BatchRepeatInterleave(repeats);
}

absl::Status PagedKVCacheFacade::Crop(int64_t max_length) {
  return core_->Crop(max_length);
}

void PagedKVCacheFacade::Reset() { core_->Reset(); }

std::optional<int64_t> PagedKVCacheFacade::GetMaxCacheShape() const {
  return core_->GetMaxCacheShape();
}

int64_t PagedKVCacheFacade::num_layer_slots() const {
  return core_->num_layer_slots();
}

std::optional<int64_t> PagedKVCacheFacade::batch_size() const {
  return core_->batch_size();
}

const KVPool* PagedKVCacheFacade::pool() const { return core_->pool(); }

std::optional<DType> PagedKVCacheFacade::dtype() const {
  return core_->dtype();
}

CacheStats PagedKVCacheFacade::stats() const { return core_->stats(); }

void PagedKVCacheFacade::CheckInvariants() const { core_->CheckInvariants(); }

}  // namespace pagedkv::internal
