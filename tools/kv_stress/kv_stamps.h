// tools/kv_stress/kv_stamps.h
//
// How kv_stress proves, in host mode, that no KV byte is lost or mixed up:
// every token it writes carries a stamp, a small integer derived from the
// sequence that wrote it and its position, stored exactly (an integer the
// pool's dtype represents exactly) in the first element of layer 0's key,
// head 0. A RowHistory remembers which sequence wrote each position of a
// row, through forks (a child inherits its parent's history), truncation
// and recompute (which rewrites the same stamps), so the stamp expected at
// any position is known. Reading a stamp back through the manager's block
// table after copy-on-write, swaps and truncations checks that the table
// still points at the bytes that were written for that row.
//
//   KVStamper stamper(manager.kv_pool());
//   RowHistory history;
//   history.Append(/*writer=*/7, /*count=*/prompt);           // prefill
//   stamper.Write(out.slot_mapping, /*first_position=*/0, history);
//   // ... later, after forks, swaps, truncates:
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

// Which sequence wrote each position of a row: runs of positions with one
// writer, in order.
class RowHistory {
 public:
  // Positions [length(), length() + count) are written by `writer`.
  void Append(int64_t writer, int64_t count);
  // Keeps positions [0, length). REQUIRES: 0 <= length <= this->length().
  void Truncate(int64_t length);
  // REQUIRES: 0 <= position < length().
  int64_t WriterAt(int64_t position) const;
  int64_t length() const { return length_; }

 private:
  // (first position, writer), first positions increasing from 0; each run
  // ends where the next begins (the last at length_).
  std::vector<std::pair<int64_t, int64_t>> runs_;
  int64_t length_ = 0;
};

class KVStamper {
 public:
  // REQUIRES: pool outlives the stamper.
  explicit KVStamper(KVPool* pool);

  // The stamp of position `position` written by `writer`: an integer in
  // [0, modulus()) that the dtype stores exactly.
  float StampOf(int64_t writer, int64_t position) const;
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
