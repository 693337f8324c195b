// cache/serving/remote_load.h
//
// RemoteLoad is a books-only manager's load list (StepOutput::remote_load):
// the remote tier has KV for blocks of a sequence that missed locally, the
// manager gave them fresh device blocks, and the caller, who owns the
// device bytes, fetches and verifies each value and copies its KV into the
// block. Until the caller reports how many leading blocks it loaded
// (KVCacheManager::CompleteRemoteLoads) the sequence waits in
// SequenceState::kLoading, owns the blocks, and nothing else can take them.
//
//   const RemoteLoad& load = out.remote_load;        // After AddSequence.
//   std::vector<std::byte*> staging = HostBuffers(load.num_blocks());
//   int32_t verified = tier.Load(load.chain(), staging);  // Leading ones.
//   for (int32_t i = 0; i < verified; ++i) {
//     UploadToDevice(staging[i], load.blocks[i]);
//   }
//   PKV_RETURN_IF_ERROR(manager.CompleteRemoteLoads(seq, verified, &out));
//   // out.slot_mapping now starts at token out.num_cached_tokens.
//
// Thread safety: a value owned by one thread.
#ifndef PAGEDKV_CACHE_SERVING_REMOTE_LOAD_H_
#define PAGEDKV_CACHE_SERVING_REMOTE_LOAD_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/prefix/block_hash.h"
#include "cache/remote/remote_chain.h"

namespace pagedkv {

struct RemoteLoad {
  // Destination device block of chain block i, in chain order.
  std::vector<BlockId> blocks;
  // The chain's identity: what each value must verify against (parent of
  // block 0, then one hash and extra keys per block, block_tokens token ids
  // per block).
  BlockHash parent = kRootBlockHash;
  std::vector<BlockHash> hashes;
  std::vector<BlockExtraKeys> keys;
  std::vector<int32_t> tokens;
  // The sequence's token where block 0 starts (its local cache hits end).
  int64_t first_token = 0;

  bool empty() const { return blocks.empty(); }
  int32_t num_blocks() const { return static_cast<int32_t>(blocks.size()); }
  // The chain to hand to RemoteTier::Load (borrows this list).
  RemoteChain chain() const {
    return RemoteChain{
        .parent = parent, .hashes = hashes, .keys = keys, .tokens = tokens};
  }
  // Empties the list, keeping capacity.
  void Clear() {
    blocks.clear();
    parent = kRootBlockHash;
    hashes.clear();
    keys.clear();
    tokens.clear();
    first_token = 0;
  }
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_REMOTE_LOAD_H_
