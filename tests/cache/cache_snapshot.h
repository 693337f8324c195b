// tests/cache/cache_snapshot.h
//
// CacheSnapshot is everything a user can observe of one paged cache: the
// batch, the layer slots, every layer's presence, length and K/V elements
// (through Get and Gather), and its memory books (stats and, for a pool, the
// pool's free blocks). Tests take one before and one after a call that must
// fail and compare them: a failed call changes nothing, not even memory.
//
//   const CacheSnapshot before = TakeSnapshot(cache);
//   EXPECT_THAT(cache.Crop(-1), StatusIs(absl::StatusCode::kInvalidArgument));
//   EXPECT_EQ(TakeSnapshot(cache), before);
//
// Thread safety: functions of their arguments; no shared state.
#ifndef PAGEDKV_TESTS_CACHE_CACHE_SNAPSHOT_H_
#define PAGEDKV_TESTS_CACHE_CACHE_SNAPSHOT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/cache.h"
#include "cache/cache_stats.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_pool.h"
#include "tensor/tensor.h"

namespace pagedkv::testing {

struct LayerSnapshot {
  bool present = false;
  int64_t length = 0;
  std::vector<int64_t> shape;
  std::vector<float> key;
  std::vector<float> value;

  friend bool operator==(const LayerSnapshot& a, const LayerSnapshot& b) {
    return a.present == b.present && a.length == b.length &&
           a.shape == b.shape && a.key == b.key && a.value == b.value;
  }
};

struct CacheSnapshot {
  std::optional<int64_t> batch;
  int64_t num_layer_slots = 0;
  std::vector<LayerSnapshot> layers;
  // Memory: a failed call takes and copies nothing.
  int32_t blocks_in_use = 0;
  int32_t blocks_reserved = 0;
  int64_t cow_copies = 0;
  int64_t bytes_written = 0;
  int64_t bytes_zero_filled = 0;
  // The pool's free blocks, or -1 before a standalone cache has a pool.
  int32_t pool_free_blocks = -1;
  int32_t pool_num_blocks = -1;
  int32_t pool_layers = -1;
  int32_t reservation_capacity = 0;

  friend bool operator==(const CacheSnapshot& a, const CacheSnapshot& b) {
    return a.batch == b.batch && a.num_layer_slots == b.num_layer_slots &&
           a.layers == b.layers && a.blocks_in_use == b.blocks_in_use &&
           a.blocks_reserved == b.blocks_reserved &&
           a.cow_copies == b.cow_copies && a.bytes_written == b.bytes_written &&
           a.bytes_zero_filled == b.bytes_zero_filled &&
           a.pool_free_blocks == b.pool_free_blocks &&
           a.pool_num_blocks == b.pool_num_blocks &&
           a.pool_layers == b.pool_layers &&
           a.reservation_capacity == b.reservation_capacity;
  }
  friend bool operator!=(const CacheSnapshot& a, const CacheSnapshot& b) {
    return !(a == b);
  }
  // A summary for failure messages (elements are compared, not printed).
  friend std::ostream& operator<<(std::ostream& os, const CacheSnapshot& s) {
    os << "{batch " << (s.batch.has_value() ? *s.batch : -1) << ", slots "
       << s.num_layer_slots << ", lengths [";
    for (const LayerSnapshot& l : s.layers) {
      os << (l.present ? l.length : -1) << " ";
    }
    return os << "], blocks " << s.blocks_in_use << ", reserved "
              << s.blocks_reserved << ", cow " << s.cow_copies << ", written "
              << s.bytes_written << ", zero-filled " << s.bytes_zero_filled
              << ", pool free " << s.pool_free_blocks << " of "
              << s.pool_num_blocks << " (" << s.pool_layers << " layers)"
              << ", reservation " << s.reservation_capacity << "}";
  }
};

// Reads every layer slot (and one past the last for a dynamic cache).
// Aborts (via operator*) if a read the cache must serve fails.
inline CacheSnapshot TakeSnapshot(const KVCache& cache) {
  CacheSnapshot s;
  s.batch = cache.batch_size();
  s.num_layer_slots = cache.num_layer_slots();
  const bool is_static = cache.GetMaxCacheShape().has_value();
  const int64_t n =
      is_static ? cache.num_layer_slots() : cache.num_layer_slots() + 1;
  for (int64_t l = 0; l < n; ++l) {
    LayerSnapshot layer;
    layer.length = *cache.GetSeqLength(l);
    const std::optional<KVView> view = *cache.Get(l);
    layer.present = view.has_value();
    if (view.has_value()) {
      const KVTensors dense = *view->Gather();
      layer.shape.assign(dense.key.shape().dims().begin(),
                         dense.key.shape().dims().end());
      layer.key = ToFloatVector(dense.key.view());
      layer.value = ToFloatVector(dense.value.view());
    }
    s.layers.push_back(std::move(layer));
  }
  const CacheStats stats = cache.stats();
  s.blocks_in_use = stats.blocks_in_use;
  s.blocks_reserved = stats.blocks_reserved;
  s.reservation_capacity = stats.reservation_capacity;
  s.cow_copies = stats.cow_copies;
  s.bytes_written = stats.bytes_written;
  s.bytes_zero_filled = stats.bytes_zero_filled;
  if (cache.pool() != nullptr) {
    s.pool_free_blocks = cache.pool()->books().num_free_blocks();
    s.pool_num_blocks = cache.pool()->num_blocks();
    s.pool_layers = cache.pool()->layout().num_layers;
  }
  return s;
}

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_CACHE_CACHE_SNAPSHOT_H_
