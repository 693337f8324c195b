// cache/storage/kv_pool.h
//
// KVPool is a BlockPool (the books: refcounts, free list, reservations) plus
// the bytes its blocks stand for, laid out as KVLayout says. It is what
// caches and the serving manager share: everything on one KVPool draws blocks
// from one budget (a continuous-batching server sizes one pool to its memory
// and lets every sequence draw from it). A KVPool never grows; a standalone
// cache's private pool that does is a GrowableKVPool (growable_kv_pool.h).
//
// The bytes live in chunks of blocks from a MemoryResource (mimalloc by
// default), aligned to 2 MiB when a chunk is at least that large (huge pages)
// and to 64 bytes otherwise. Besides addressing, the pool does the block
// copies: copy-on-write inside the pool (RunCopies) and whole-block copies
// between two pools of one layout (CopyBlocksBetween, the swap tier). It
// counts every byte it copies (bytes_copied()), so callers can prove that an
// operation copied nothing.
//
//   absl::StatusOr<std::unique_ptr<KVPool>> pool = KVPool::Create(
//       {.layout = layout, .num_blocks = 4096,
//        .concurrency = PoolConcurrency::kShared});
//   if (!pool.ok()) return pool.status();
//   DynamicKVCache a(pool->get()), b(pool->get());   // one budget
//
// Thread safety: with PoolConcurrency::kShared the books are safe to use from
// several threads at once (one short lock per call). Block bytes belong to
// whoever holds the block's references; copying them takes no lock.
// bytes_copied() is an atomic counter.
#ifndef PAGEDKV_CACHE_STORAGE_KV_POOL_H_
#define PAGEDKV_CACHE_STORAGE_KV_POOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/copy_on_write.h"
#include "base/check.h"
#include "cache/storage/kv_layout.h"
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
  virtual ~KVPool();

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

  // Copies every byte of block op.src to op.dst, for each op in order (the
  // copies PrepareWrite decided). REQUIRES: ids in range, src != dst.
  void RunCopies(absl::Span<const CopyOp> ops);
  void CopyBlock(BlockId src, BlockId dst) { RunCopies({CopyOp{src, dst}}); }

  // Bytes copied by RunCopies / CopyBlock / CopyBlocksBetween (into or out
  // of this pool) since creation.
  int64_t bytes_copied() const {
    return bytes_copied_.load(std::memory_order_relaxed);
  }

 protected:
  struct Chunk {
    std::byte* data = nullptr;
    size_t bytes = 0;
    size_t alignment = 0;
  };

  KVPool(const KVLayout& layout, int32_t chunk_blocks, MemoryResource* memory,
         std::unique_ptr<BlockPool> books);
  // Validates options and makes the books; the caller constructs the pool
  // (a KVPool or a subclass) around them and adds its first chunk.
  static absl::StatusOr<std::unique_ptr<BlockPool>> MakeBooks(
      const Options& options);
  // Allocates the one chunk of a new pool. ResourceExhausted on failure.
  absl::Status AddFirstChunk();
  absl::StatusOr<Chunk> NewChunk(size_t block_bytes) const;
  void FreeChunk(const Chunk& chunk) const;
  void NoteCopied(size_t bytes) const {
    bytes_copied_.fetch_add(static_cast<int64_t>(bytes),
                            std::memory_order_relaxed);
  }

  KVLayout layout_;
  // Blocks per chunk; block id b lives in chunks_[b / chunk_blocks_].
  int32_t chunk_blocks_;
  MemoryResource* memory_;
  std::unique_ptr<BlockPool> books_;
  // Invariant: chunks_.size() * chunk_blocks_ == books_->num_blocks().
  std::vector<Chunk> chunks_;
  mutable std::atomic<int64_t> bytes_copied_{0};

 private:
  friend absl::Status CopyBlocksBetween(const KVPool& src,
                                        absl::Span<const BlockId> src_ids,
                                        KVPool& dst,
                                        absl::Span<const BlockId> dst_ids);
};

// Copies whole blocks from one pool to another of the same layout (the swap
// tier: device or host pool <-> host pool), src_ids[i] -> dst_ids[i], one
// memcpy per block. InvalidArgument (nothing copied) if the layouts differ
// or the id lists differ in length. REQUIRES: ids in range; the caller holds
// references to both sides.
absl::Status CopyBlocksBetween(const KVPool& src,
                               absl::Span<const BlockId> src_ids, KVPool& dst,
                               absl::Span<const BlockId> dst_ids);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_STORAGE_KV_POOL_H_
