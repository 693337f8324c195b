// cache/cache.h
//
// The abstract interfaces of the lucid.nn.cache API, in PascalCase:
//
//   Cache     lifecycle and batch manipulation common to every cache:
//             GetSeqLength, ReorderCache, BatchSelectIndices,
//             BatchRepeatInterleave, Crop, Reset, GetMaxCacheShape.
//   KVCache   adds per-layer key/value storage: Update and Get.
//
// DynamicKVCache and StaticKVCache implement KVCache; EncoderDecoderCache is a
// Cache that routes to two KVCaches. The behaviour contract is
// spec/cache-semantics.md of the design docs; README.md shows the API in use.
//
// Every method that takes user input returns absl::Status: InvalidArgument
// for malformed input (negative layer or repeats, bad shapes or dtypes),
// OutOfRange for a position past max_cache_len or an index past the batch,
// ResourceExhausted when a shared pool cannot supply blocks. A failed call
// changes nothing.
//
// Thread safety: a cache is used by one thread at a time. Caches on one
// shared KVPool may be used from different threads.
#ifndef PAGEDKV_CACHE_CACHE_H_
#define PAGEDKV_CACHE_CACHE_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace pagedkv {

class Cache {
 public:
  virtual ~Cache() = default;

  // Returns the length of layer `layer_idx`: 0 for a layer never updated or
  // past the last slot. InvalidArgument if layer_idx < 0.
  virtual absl::StatusOr<int64_t> GetSeqLength(int64_t layer_idx = 0) const = 0;

  // New row i is old row beam_idx[i], in every layer; the batch becomes
  // beam_idx.size(). A block-table remap: no KV byte moves. OutOfRange for an
  // index outside [0, batch); ResourceExhausted if a static cache cannot
  // extend its reservation for a larger batch.
  virtual absl::Status ReorderCache(absl::Span<const int64_t> beam_idx) = 0;
  // Same operation under its general name.
  virtual absl::Status BatchSelectIndices(
      absl::Span<const int64_t> indices) = 0;
  // Row r becomes rows r*repeats .. r*repeats+repeats-1 ([a,a,b,b]), sharing
  // blocks. InvalidArgument if repeats < 1; 1 is a no-op.
  virtual absl::Status BatchRepeatInterleave(int64_t repeats) = 0;
  // Keeps the last max_length positions of every longer layer; whole blocks
  // that leave the window return to the pool, no kept token is copied.
  // InvalidArgument if max_length < 0.
  virtual absl::Status Crop(int64_t max_length) = 0;
  // Drops all data, lengths and the batch size; blocks return to the pool.
  virtual void Reset() = 0;
  // The static capacity (max_cache_len), or nullopt for no limit.
  virtual std::optional<int64_t> GetMaxCacheShape() const = 0;

  // Checks every invariant of the cache and its books; aborts on a breach.
  // O(blocks); for tests, the stress tool and debug builds.
  virtual void CheckInvariants() const = 0;
};

class KVCache : public Cache {
 public:
  // Writes key and value (both (batch, heads, seq, head_dim), equal shapes and
  // dtypes) into layer `layer_idx` at `position` and returns the layer's
  // whole visible contents after the write. See cache_position.h for the
  // modes. InvalidArgument: negative layer (static: >= num_layers; any
  // cache: past kMaxCacheLayers), rank != 4, key/value mismatch,
  // unsupported or changed dtype, batch/heads/head_dim differing from the
  // cache's, a malformed position; OutOfRange: a position or append past
  // max_cache_len (dynamic: past kMaxCacheTokens, see cache_limits.h);
  // ResourceExhausted: a shared pool is full, or a private pool would grow
  // past its byte cap. On error nothing changes.
  virtual absl::StatusOr<KVView> Update(ConstTensorView key,
                                        ConstTensorView value,
                                        int64_t layer_idx,
                                        const CachePosition& position) = 0;
  absl::StatusOr<KVView> Update(ConstTensorView key, ConstTensorView value,
                                int64_t layer_idx) {
    return Update(key, value, layer_idx, CachePosition::None());
  }

  // Returns the visible pair of layer `layer_idx`, or nullopt if the layer
  // holds nothing (never updated, or after Reset). InvalidArgument for a
  // negative index (static: >= num_layers).
  virtual absl::StatusOr<std::optional<KVView>> Get(
      int64_t layer_idx) const = 0;

  // Number of layer slots (dynamic: highest updated layer + 1).
  virtual int64_t num_layer_slots() const = 0;
  // The batch size, or nullopt before the first update (and after Reset).
  virtual std::optional<int64_t> batch_size() const = 0;
  // The pool in use: the shared one, the private one, or nullptr before a
  // standalone cache's first update.
  virtual const KVPool* pool() const = 0;
  // The dtype fixed by the first update (or by the shared pool).
  virtual std::optional<DType> dtype() const = 0;
  virtual CacheStats stats() const = 0;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_CACHE_H_
