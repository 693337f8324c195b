// cache/serving/step_output.h
//
// StepOutput is what KVCacheManager::AddSequence, AppendSlots, Readmit and
// CompleteRemoteLoads fill in: where each new token's K/V goes, which block
// copies must run before it is written, and (books-only with a remote tier)
// which blocks to load first. A server keeps one and reuses it every step (its
// vectors keep their capacity, so a step allocates nothing).
//
// Slots are flat, as vLLM's slot_mapping: slot = block * block_tokens +
// offset. Request i's tokens are slot_mapping[request_offsets[i] ..
// request_offsets[i + 1]).
//
//   StepOutput out;
//   PKV_RETURN_IF_ERROR(manager.AppendSlots(requests, &out));
//   for (const CopyOp& op : out.copies.ops()) RunOnDevice(op.src, op.dst);
//   out.copies.MarkDone();  // Books-only; host mode: already empty.
//   int64_t slot = out.slot_mapping[out.request_offsets[0]];
//   BlockId block = StepOutput::BlockOf(slot, manager.block_tokens());
//
// Thread safety: a value owned by one thread.
#ifndef PAGEDKV_CACHE_SERVING_STEP_OUTPUT_H_
#define PAGEDKV_CACHE_SERVING_STEP_OUTPUT_H_

#include <cstdint>
#include <vector>

#include "allocator/block_id.h"
#include "allocator/copy_on_write.h"
#include "cache/serving/remote_load.h"

namespace pagedkv {

struct StepOutput {
  // One flat slot per new token, requests in order.
  std::vector<int64_t> slot_mapping;
  // requests + 1 entries: request i owns [request_offsets[i],
  // request_offsets[i + 1]) of slot_mapping.
  std::vector<int32_t> request_offsets;
  // Copy-on-write copies of the step; each holds its source block until
  // MarkDone(). Run them before any write of the step.
  PendingCopies copies;
  // AddSequence and Readmit with prefix caching: leading tokens whose KV
  // came from the cache (slot_mapping starts after them); else 0.
  int64_t num_cached_tokens = 0;
  // Books-only with a remote tier, AddSequence and Readmit: blocks the
  // caller loads from the tier before the sequence runs (remote_load.h).
  // Non-empty means the sequence is kLoading and slot_mapping is empty:
  // KVCacheManager::CompleteRemoteLoads gives the slots.
  RemoteLoad remote_load;
  // With layer groups (KVCacheManager::Options::layer_groups, G of them)
  // slot_mapping is group-major: G runs of group_stride slots, and group
  // g's slot of request i's token j is slot_mapping[g * group_stride +
  // request_offsets[i] + j] (request_offsets count within one group). 0
  // without groups.
  int64_t group_stride = 0;

  // Empties the output, keeping capacity. Copies still pending are dropped
  // (their sources released): run them first.
  void Clear() {
    slot_mapping.clear();
    request_offsets.clear();
    copies.MarkDone();
    num_cached_tokens = 0;
    remote_load.Clear();
    group_stride = 0;
  }

  static BlockId BlockOf(int64_t slot, int32_t block_tokens) {
    return BlockId(static_cast<int32_t>(slot / block_tokens));
  }
  static int32_t OffsetOf(int64_t slot, int32_t block_tokens) {
    return static_cast<int32_t>(slot % block_tokens);
  }
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_STEP_OUTPUT_H_
