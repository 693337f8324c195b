// cache/storage/growable_kv_pool.h
//
// GrowableKVPool is the private pool of a standalone cache (one made with no
// pool, as in the lucid quick start): a KVPool that its one owner may grow.
// Grow adds chunks and never moves existing bytes; Relayout rebuilds the
// storage with more layers when an update names a layer past the layout.
// Both are all or nothing: a failure (the memory resource says no) leaves the
// pool exactly as it was. A pool shared between caches is a plain KVPool and
// never grows.
//
//   absl::StatusOr<std::unique_ptr<GrowableKVPool>> pool =
//       GrowableKVPool::Create({.layout = layout, .num_blocks = 16});
//   if (!pool.ok()) return pool.status();
//   absl::StatusOr<int32_t> grown = (*pool)->Grow(16);  // 32 blocks now.
//   absl::Status wider = (*pool)->Relayout(8);  // 8 layers per block.
//   absl::Status undone = (*pool)->ShrinkTo(16);  // Back to 16 blocks.
//
// Thread safety: single-threaded (its books are PoolConcurrency::
// kSingleThread): the owner synchronizes.
#ifndef PAGEDKV_CACHE_STORAGE_GROWABLE_KV_POOL_H_
#define PAGEDKV_CACHE_STORAGE_GROWABLE_KV_POOL_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv {

class GrowableKVPool final : public KVPool {
 public:
  // As KVPool::Create; InvalidArgument if options.concurrency is kShared.
  // Growth adds chunks of options.num_blocks blocks.
  static absl::StatusOr<std::unique_ptr<GrowableKVPool>> Create(
      const Options& options);

  // Adds `extra_blocks` free blocks, rounded up to whole chunks, without
  // moving existing bytes; returns how many blocks were added.
  // InvalidArgument if extra_blocks <= 0; ResourceExhausted if memory runs
  // out or the pool would pass INT32_MAX blocks (the pool is then unchanged).
  absl::StatusOr<int32_t> Grow(int32_t extra_blocks);

  // Undoes growth: frees the chunks past `num_blocks`. FailedPrecondition
  // (nothing changed) unless those blocks are all free and unreserved (see
  // BlockPool::Shrink); InvalidArgument unless num_blocks is a positive
  // multiple of chunk_blocks() no larger than num_blocks().
  absl::Status ShrinkTo(int32_t num_blocks);

  // Rebuilds the storage for `num_layers` layers, keeping every block's
  // first min(num_layers, layout().num_layers) layers (new layers' bytes are
  // unspecified; fewer layers is the undo of a widening). Block ids and
  // references are unchanged; every pointer into the old bytes is invalid.
  // InvalidArgument if the new layout is invalid; ResourceExhausted leaves
  // the pool unchanged.
  absl::Status Relayout(int32_t num_layers);

  // Blocks that Grow adds at a time.
  int32_t chunk_blocks() const { return chunk_blocks_; }

 private:
  using KVPool::KVPool;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STORAGE_GROWABLE_KV_POOL_H_
