// cache/serving/pending_remote_stores.h
//
// PendingRemoteStores is a books-only manager's store list
// (KVCacheManager::TakeRemoteStores): blocks it just published whose KV the
// remote tier should get. The manager cannot read device bytes, so the
// caller copies each block out and hands the bytes to RemoteTier::Store.
// Each listed block holds one reference (a pin) from the moment it is
// listed until MarkDone() (or destruction): its sequence may be freed and
// the pool may run dry meanwhile, but a pinned block is never handed out
// again, so the bytes the caller copies are the bytes that were published.
// This is the rule of PendingCopies (copy_on_write.h), for the same reason.
//
//   PendingRemoteStores stores = manager.TakeRemoteStores();
//   for (int32_t i = 0; i < stores.size(); ++i) {
//     CopyFromDevice(stores.block(i), staging);       // block_bytes.
//     tier.Store(stores.chain(i), /*index=*/0, staging);  // Copies them.
//   }
//   stores.MarkDone();  // The pins go; the blocks may be reused.
//
// Thread safety: one thread at a time. REQUIRES: the pool (the manager)
// outlives it.
#ifndef PAGEDKV_CACHE_SERVING_PENDING_REMOTE_STORES_H_
#define PAGEDKV_CACHE_SERVING_PENDING_REMOTE_STORES_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/prefix/block_hash.h"
#include "cache/remote/remote_chain.h"

namespace pagedkv {

class PendingRemoteStores {
 public:
  PendingRemoteStores() = default;
  PendingRemoteStores(PendingRemoteStores&& other) noexcept;
  PendingRemoteStores& operator=(PendingRemoteStores&& other) noexcept;
  PendingRemoteStores(const PendingRemoteStores&) = delete;
  PendingRemoteStores& operator=(const PendingRemoteStores&) = delete;
  // Releases the pins like MarkDone().
  ~PendingRemoteStores();

  int32_t size() const { return static_cast<int32_t>(blocks_.size()); }
  bool empty() const { return blocks_.empty(); }
  // REQUIRES: 0 <= i < size(). The device block holding entry i's KV.
  BlockId block(int32_t i) const;
  // Entry i as a one-block chain for RemoteTier::Store(chain, 0, bytes);
  // borrows this list (valid until MarkDone, Add or a move).
  RemoteChain chain(int32_t i) const;
  absl::Span<const BlockId> blocks() const { return blocks_; }

  // Whether `block` is listed (a block is listed once: two forks that
  // commit it, or a commit again after ResetPrefixCache, would copy it
  // out twice).
  bool Lists(BlockId block) const { return listed_.contains(block.value()); }

  // Lists blocks[i] as chain block i and pins each (one lock for all) as a
  // copy source (BlockPool::AddCopyHolds): its sequence may be freed, its
  // parent evicted, before the caller copies it.
  // REQUIRES: blocks are held (in use) on `pool` and not Lists()ed (nor
  // twice in `blocks`), blocks.size() == chain.hashes.size() ==
  // chain.keys.size(), chain.tokens.size() a multiple of it, and every Add
  // of this list on the same pool.
  void Add(BlockPool* pool, absl::Span<const BlockId> blocks,
           const RemoteChain& chain);

  // The bytes were taken: releases every pin and empties the list (its
  // buffers keep their capacity).
  void MarkDone();

  // Exchanges the two lists, pins and buffers
  // (KVCacheManager::TakeRemoteStores(PendingRemoteStores*) recycles the
  // caller's buffers this way).
  void swap(PendingRemoteStores& other) noexcept;

 private:
  // Invariant: every blocks_[i] holds one reference owned by this object,
  // a copy hold; listed_ holds exactly the blocks_' ids, each once;
  // entry i's parent, hash and keys are parents_[i], hashes_[i], keys_[i],
  // its tokens [i * block_tokens_, (i + 1) * block_tokens_) of tokens_.
  // pool_ is null only while the list is empty.
  BlockPool* pool_ = nullptr;  // Not owned.
  int32_t block_tokens_ = 0;
  std::vector<BlockId> blocks_;
  std::vector<BlockHash> parents_;
  std::vector<BlockHash> hashes_;
  std::vector<BlockExtraKeys> keys_;
  std::vector<int32_t> tokens_;
  absl::flat_hash_set<int32_t> listed_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_PENDING_REMOTE_STORES_H_
