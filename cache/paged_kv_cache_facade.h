// cache/paged_kv_cache_facade.h
//
// PagedKVCacheFacade is what DynamicKVCache and StaticKVCache are made of: a
// KVCache that owns an internal::PagedKVCache and forwards the KVCache API to
// it, and nothing else. The core's extra methods (reservation checkpoints,
// select and repeat checks) stay out of the public classes; the one user that
// needs them, EncoderDecoderCache, reaches the core through CoreOf (the
// leveldb WriteBatchInternal pattern). Users never name this class.
//
// Thread safety: as KVCache (one thread at a time per cache).
#ifndef PAGEDKV_CACHE_PAGED_KV_CACHE_FACADE_H_
#define PAGEDKV_CACHE_PAGED_KV_CACHE_FACADE_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace pagedkv {

class EncoderDecoderCache;

namespace internal {

class PagedKVCache;

class PagedKVCacheFacade : public KVCache {
 public:
  ~PagedKVCacheFacade() override;
  PagedKVCacheFacade(const PagedKVCacheFacade&) = delete;
  PagedKVCacheFacade& operator=(const PagedKVCacheFacade&) = delete;

  // KVCache (documented in cache.h):
  using KVCache::Update;
  absl::StatusOr<KVView> Update(ConstTensorView key, ConstTensorView value,
                                int64_t layer_idx,
                                const CachePosition& position) override;
  absl::StatusOr<std::optional<KVView>> Get(int64_t layer_idx) const override;
  absl::StatusOr<int64_t> GetSeqLength(int64_t layer_idx = 0) const override;
  absl::Status ReorderCache(absl::Span<const int64_t> beam_idx) override;
  absl::Status BatchSelectIndices(absl::Span<const int64_t> indices) override;
  absl::Status BatchRepeatInterleave(int64_t repeats) override;
  absl::Status Crop(int64_t max_length) override;
  void Reset() override;
  std::optional<int64_t> GetMaxCacheShape() const override;
  int64_t num_layer_slots() const override;
  std::optional<int64_t> batch_size() const override;
  const KVPool* pool() const override;
  std::optional<DType> dtype() const override;
  CacheStats stats() const override;
  void CheckInvariants() const override;

 protected:
  // REQUIRES: core != nullptr.
  explicit PagedKVCacheFacade(std::unique_ptr<PagedKVCache> core);

 private:
  friend class ::pagedkv::EncoderDecoderCache;
  // The core of `cache`, or nullptr unless it is a DynamicKVCache or a
  // StaticKVCache.
  static PagedKVCache* CoreOf(KVCache* cache);

  std::unique_ptr<PagedKVCache> core_;  // Never null.
};

}  // namespace internal
}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_PAGED_KV_CACHE_FACADE_H_
