// allocator/prefix/prefix_event.h
//
// PrefixEvent is what the prefix cache tells a router (a KV-aware load
// balancer keeping a global view of which replica caches which prefix),
// shaped like vLLM's KV events: BlockStored when blocks become matchable,
// BlockRemoved when they stop being so, AllBlocksCleared on a reset. Drained
// with KVCacheManager::TakeEvents() (or BlockPool::TakePrefixEvents()).
//
// Every event has a sequence number, consecutive per pool from 1, also for
// events dropped because nobody drained the queue: a consumer that sees a
// gap lost events and should resynchronize (treat it as AllBlocksCleared).
//
//   for (const PrefixEvent& e : manager.TakeEvents()) {
//     if (e.kind == PrefixEvent::Kind::kBlockStored) {
//       router.Add(e.parent_hash, e.block_hashes);
//     }
//   }
//
// Thread safety: a value type.
#ifndef PAGEDKV_ALLOCATOR_PREFIX_PREFIX_EVENT_H_
#define PAGEDKV_ALLOCATOR_PREFIX_PREFIX_EVENT_H_

#include <cstdint>
#include <vector>

#include "allocator/prefix/block_hash.h"

namespace pagedkv {

struct PrefixEvent {
  enum class Kind { kBlockStored, kBlockRemoved, kAllBlocksCleared };

  Kind kind = Kind::kBlockStored;
  uint64_t sequence_number = 0;
  // kBlockStored: a chain of blocks, each the child of the one before;
  // kBlockRemoved: blocks that left the index (any order).
  std::vector<BlockHash> block_hashes;
  // kBlockStored: the parent of block_hashes[0] (kRootBlockHash for a
  // sequence's first block).
  BlockHash parent_hash = kRootBlockHash;
  // kBlockStored: block_size token ids per block, concatenated.
  std::vector<int32_t> token_ids;
  int32_t block_size = 0;
  // kBlockStored: one per block.
  std::vector<BlockExtraKeys> extra_keys;
  // kBlockStored: the layer group of every block (0 without layer groups).
  // With groups, group g != the anchor's stores block i as the child of
  // the anchor group's block i (parent_hash), a chain of one.
  int32_t layer_group = 0;
};

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_PREFIX_PREFIX_EVENT_H_
