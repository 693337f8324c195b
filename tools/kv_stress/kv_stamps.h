// tools/kv_stress/kv_stamps.h
//
// How kv_stress proves, in host mode, that no KV byte is lost or mixed up:
// every token it writes carries a stamp, a small integer derived from what a
// real model's KV at that position depends on, the token ids up to and
// including it, stored exactly (an integer the pool's dtype represents
// exactly; on a quantized pool, the raw code byte, 0..126) in the first
// element of layer 0's key, head 0. A RowHistory keeps
// one key per position of a row, a chained hash of its token ids, through
// forks (a child starts with its parent's history), truncation and
// recompute (the same tokens give the same stamps). Rows that hold the same
// tokens up to a position expect the same stamp there, so a prefix-cache hit
// (a block another request wrote) is checked like the row's own writes.
// Reading a stamp back through the manager's block table after
// copy-on-write, swaps, truncations and cache hits checks that the table
// still points at bytes written for those tokens.
//
//   KVStamper stamper(manager.kv_pool());
//   RowHistory history;
//   history.Append(prompt_ids);                               // prefill
//   stamper.Write(out.slot_mapping, out.num_cached_tokens, history);
//   // ... later, after forks, swaps, truncates, hits:
//   if (!stamper.Verify(*manager.block_table(7), pos, history)) { ... }
//
// Thread safety: one simulation thread; the caller holds the blocks.
#ifndef PAGEDKV_TOOLS_KV_STRESS_KV_STAMPS_H_
#define PAGEDKV_TOOLS_KV_STRESS_KV_STAMPS_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv::kv_stress {

// The key of each position of a row: key(p) = mix(key(p - 1), token p).
class RowHistory {
 public:
  // Positions [length(), length() + token_ids.size()) hold these tokens.
  void Append(absl::Span<const int32_t> token_ids);
  void Append(int32_t token_id);
  // Keeps positions [0, length). REQUIRES: 0 <= length <= this->length().
  void Truncate(int64_t length);
  // REQUIRES: 0 <= position < length().
  uint64_t KeyAt(int64_t position) const;
  int64_t length() const { return static_cast<int64_t>(keys_.size()); }

 private:
  std::vector<uint64_t> keys_;  // One per position.
};

class KVStamper {
 public:
  // REQUIRES: pool outlives the stamper.
  explicit KVStamper(KVPool* pool);

  // The stamp of a position whose RowHistory key is `key`: an integer in
  // [0, modulus()) that the dtype stores exactly.
  float StampOf(uint64_t key) const;
  int64_t modulus() const { return modulus_; }

  // Writes K and V of every layer for the tokens at `slots` (flat slots as
  // StepOutput gives them), which are positions first_position, +1, ... of
  // a row, stamped from `history`. REQUIRES: history covers them.
  void Write(absl::Span<const int64_t> slots, int64_t first_position,
             const RowHistory& history);
  // True when the stamp read through `table` at `position` is the one
  // `history` expects. REQUIRES: position < table.size() * block_tokens.
  bool Verify(absl::Span<const BlockId> table, int64_t position,
              const RowHistory& history) const;

  int64_t bytes_written() const { return bytes_written_; }

 private:
  std::byte* StampAddress(BlockId block, int32_t offset) const;

  KVPool* pool_;
  int64_t modulus_;
  // One block's worth of filler tokens, [head][token][dim], for K and V.
  std::vector<std::byte> key_fill_, value_fill_;
  int64_t bytes_written_ = 0;
};

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_KV_STAMPS_H_
