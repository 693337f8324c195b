// allocator/window_table.h
//
// WindowTable is one sequence's block table for a sliding-window layer group
// (vLLM v1's SlidingWindowManager books): entry i holds the tokens
// [i * block_tokens, (i + 1) * block_tokens) as in BlockTable, but entries
// that fell wholly out of the window are *holes* (an invalid BlockId, -1 in
// exports): their blocks went back to the pool, and logical indices stay
// stable, so a paged-attention kernel indexes the table as before and never
// reads a hole (it reads only the window). The table owns one pool
// reference per live entry (RAII).
//
// Release is amortised O(1) per entry: ReleaseBefore(i) walks from the
// first entry not yet passed, so each entry is passed once in the table's
// life; a decode step passes at most one. The window arithmetic (which
// blocks a step needs) is WindowFirstNeededBlock() below.
//
// Example:
//
//   WindowTable table(pool);                     // pool outlives the table.
//   table.Append(*pool->TryAllocate());          // Entry 0.
//   table.Append(*pool->TryAllocate());          // Entry 1.
//   table.ReleaseBefore(1);                      // Entry 0 is a hole now.
//   table.num_entries();                         // 2
//   table.num_live();                            // 1
//   table.entries()[0].is_valid();               // false
//
// Thread safety: a table is used by one thread at a time. Tables on a
// PoolConcurrency::kShared pool may live on different threads.
#ifndef PAGEDKV_ALLOCATOR_WINDOW_TABLE_H_
#define PAGEDKV_ALLOCATOR_WINDOW_TABLE_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/window_blocks.h"  // WindowFirstNeededBlock, ...
#include "base/check.h"

namespace pagedkv {

class WindowTable {
 public:
  // REQUIRES: pool != nullptr; pool outlives the table.
  explicit WindowTable(BlockPool* pool) : pool_(pool) {
    PKV_CHECK(pool != nullptr, "WindowTable needs a pool");
  }
  WindowTable(WindowTable&& other) noexcept;
  WindowTable& operator=(WindowTable&& other) noexcept;
  WindowTable(const WindowTable&) = delete;
  WindowTable& operator=(const WindowTable&) = delete;
  ~WindowTable() { Clear(); }

  // Logical entries, holes included.
  int32_t num_entries() const { return static_cast<int32_t>(entries_.size()); }
  // Entries holding a block.
  int32_t num_live() const { return num_live_; }
  // Entries [0, first_unpassed()) are all holes (released or never held).
  int32_t first_unpassed() const { return first_unpassed_; }
  // Every entry, holes as invalid ids. Valid until the next mutation.
  absl::Span<const BlockId> entries() const { return entries_; }
  BlockPool* pool() const { return pool_; }
  // As BlockTable::generation(): grows with every change of entries().
  uint64_t generation() const { return generation_; }

  // Appends an entry, taking over one reference the caller holds on `id`.
  // REQUIRES: id is live in pool().
  void Append(BlockId id);
  // Appends an entry that holds no block.
  void AppendHole();

  // Releases every live entry below `block_index` (clamped to
  // num_entries()) and makes it a hole. Returns the blocks released.
  // Amortised O(1) per entry over the table's life.
  // REQUIRES: block_index >= 0.
  int32_t ReleaseBefore(int64_t block_index) {
    // The decode step's common case, inline: nothing new out of the window.
    if (block_index <= first_unpassed_) return 0;
    return ReleaseBeforeSlow(block_index);
  }

  // ReleaseBefore, but the released entries' references go to the caller:
  // their ids are appended to *out (in entry order), for one
  // BlockPool::ReleaseAll over a whole step's releases (a batch overlaps
  // the cache misses of cold blocks' books; one Release at a time waits
  // for each). Returns how many.
  // REQUIRES: block_index >= 0; out != nullptr.
  int32_t DetachBefore(int64_t block_index, std::vector<BlockId>* out) {
    if (block_index <= first_unpassed_) return 0;
    return DetachBeforeSlow(block_index, out);
  }

  // Releases the last n entries (live ones; the last first) and drops them.
  // REQUIRES: 0 <= n <= num_entries().
  void DropBack(int32_t n);
  // Releases every live entry, the last first, and empties the table.
  void Clear();

  // A table on the same pool with the same entries, AddRef-ing every live
  // block once.
  WindowTable Fork() const;

  // Puts `id` at live entry i (taking over one reference on it) and
  // releases the entry's old block (copy-on-write of a shared tail).
  // REQUIRES: entries()[i] is live; ref_count(id) > 0.
  void Replace(int32_t i, BlockId id);

  // Aborts unless: entries below first_unpassed() are holes, num_live()
  // counts the live entries, and each live entry has ref_count > 0.
  void CheckInvariants() const;

 private:
  int32_t ReleaseBeforeSlow(int64_t block_index);
  int32_t DetachBeforeSlow(int64_t block_index, std::vector<BlockId>* out);
  // Makes the live entries in [first_unpassed_, block_index) holes, calling
  // on_live(id) for each, and advances first_unpassed_. Returns how many.
  template <typename OnLive>
  int32_t PassBefore(int64_t block_index, OnLive on_live);

  // Invariants: pool_ != nullptr; 0 <= first_unpassed_ <= entries_.size()
  // (it only moves back when DropBack removes entries); every entry below
  // first_unpassed_ is a hole; num_live_ == #{valid entries}; this table
  // holds one reference per valid entry.
  BlockPool* pool_;
  std::vector<BlockId> entries_;
  int32_t num_live_ = 0;
  int32_t first_unpassed_ = 0;
  uint64_t generation_ = 0;
};

// Checks that every block's ref_count equals the references held by
// `tables` (one per live entry) plus `extra_refs`; also runs
// pool.CheckInvariants(). O(num_blocks + entries); for tests and tools.
// REQUIRES: every table is on `pool`.
void CheckWindowRefCounts(const BlockPool& pool,
                          absl::Span<const WindowTable* const> tables,
                          absl::Span<const BlockId> extra_refs = {});

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_WINDOW_TABLE_H_
