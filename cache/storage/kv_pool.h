// cache/kv_pool.h
//
// KVPool is a BlockPool (the books: refcounts, free list, reservations) plus
// the bytes its blocks stand for, laid out as KVLayout says. It is what caches
// share: several caches on one KVPool draw blocks from one budget, which is
// the serving case (a continuous-batching server sizes one pool to its memory
// and lets every sequence draw from it).
//
// The bytes live in chunks of `chunk_blocks` blocks each, from a
// MemoryResource (mimalloc by default), aligned to 2 MiB when a chunk is at
// least that large (huge pages) and to 64 bytes otherwise. A pool made with
// Create never grows. A standalone cache (one made with no pool, as in the
// lucid quick start) owns a private KVPool and grows it with Grow, which adds
// chunks and so never moves existing bytes, or rebuilds it with Relayout when
// an update names a layer past its layout.
//
//   absl::StatusOr<std::unique_ptr<KVPool>> pool = KVPool::Create(
//       {.layout = layout, .num_blocks = 4096,
//        .concurrency = PoolConcurrency::kShared});
//   DynamicKVCache a(pool->get()), b(pool->get());   // one budget
//
// Thread safety: with PoolConcurrency::kShared the books are safe to use from
// several threads at once (one short lock per call). Block bytes are owned by
// whoever holds the block's references; copying them takes no lock. Grow and
// Relayout are for private pools and need exclusive access.
#ifndef PAGEDKV_CACHE_KV_POOL_H_
#define PAGEDKV_CACHE_KV_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "base/check.h"
#include "cache/kv_layout.h"
#include "tensor/memory_resource.h"

namespace pagedkv {

class KVPool {
 public:
  struct Options {
    KVLayout layout;
    int32_t num_blocks = 0;
    PoolConcurrency concurrency = PoolConcurrency::kSingleThread;
    // Where the bytes come from; must outlive the pool. nullptr means
    // DefaultMemoryResource() (mimalloc).
    MemoryResource* memory = nullptr;
  };

  // Returns InvalidArgument for a bad layout or num_blocks <= 0, and
  // ResourceExhausted when the memory resource cannot supply the bytes.
  static absl::StatusOr<std::unique_ptr<KVPool>> Create(const Options& options);

  KVPool(const KVPool&) = delete;
  KVPool& operator=(const KVPool&) = delete;
  ~KVPool();

  const KVLayout& layout() const { return layout_; }
  BlockPool& books() { return *books_; }
  const BlockPool& books() const { return *books_; }
  int32_t num_blocks() const { return books_->num_blocks(); }
  size_t block_bytes() const { return layout_.block_bytes(); }
  // Total bytes of block storage.
  size_t capacity_bytes() const;

  // Returns the first byte of block `id` (all layers, K and V).
  // REQUIRES: 0 <= id < num_blocks().
  std::byte* BlockData(BlockId id) {
    PKV_DCHECK(id.value() >= 0 && id.value() < num_blocks(),
               "block %d outside a pool of %d", id.value(), num_blocks());
    return chunks_[id.value() / chunk_blocks_].data +
           static_cast<size_t>(id.value() % chunk_blocks_) * block_bytes();
  }
  const std::byte* BlockData(BlockId id) const {
    return const_cast<KVPool*>(this)->BlockData(id);
  }

  // Copies every byte of block `src` to block `dst` (copy-on-write).
  void CopyBlock(BlockId src, BlockId dst);

  // Adds `extra_blocks` free blocks (rounded up to whole chunks) without
  // moving existing bytes. REQUIRES: a kSingleThread pool (a private one):
  // the chunk list is not locked. InvalidArgument if extra_blocks <= 0,
  // ResourceExhausted if memory runs out (the pool is then unchanged).
  absl::Status Grow(int32_t extra_blocks);

  // Rebuilds the storage for `num_layers` layers, keeping every block's
  // existing layers (new layers' bytes are unspecified). Block ids and
  // references are unchanged. REQUIRES: a kSingleThread pool; every view of
  // it is invalidated. InvalidArgument unless num_layers >
  // layout().num_layers; ResourceExhausted leaves the pool unchanged.
  absl::Status Relayout(int32_t num_layers);

 private:
  struct Chunk {
    std::byte* data = nullptr;
    size_t bytes = 0;
    size_t alignment = 0;
  };

  KVPool(const KVLayout& layout, int32_t chunk_blocks, MemoryResource* memory,
         std::unique_ptr<BlockPool> books);
  absl::StatusOr<Chunk> NewChunk(size_t block_bytes) const;
  void FreeChunk(const Chunk& chunk) const;

  KVLayout layout_;
  // Blocks per chunk; block id b lives in chunks_[b / chunk_blocks_].
  int32_t chunk_blocks_;
  MemoryResource* memory_;
  std::unique_ptr<BlockPool> books_;
  // Invariant: chunks_.size() * chunk_blocks_ == books_->num_blocks().
  std::vector<Chunk> chunks_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_KV_POOL_H_
