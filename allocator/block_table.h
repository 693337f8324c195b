// allocator/block_table.h
//
// BlockTable is one sequence's ordered list of block ids: entry i holds the
// tokens [i * block_tokens, (i + 1) * block_tokens) of the sequence (the
// cache decides block_tokens; the table only knows ids). The table owns one
// pool reference per entry (RAII): destroying, clearing or dropping entries
// releases them. Fork() is the explicit copy: it shares every block by adding
// a reference. Writing into a shared entry goes through PrepareWrite
// (allocator/copy_on_write.h), which repoints it at a private block.
//
// ReorderTables() remaps rows (beam reorder, batch select,
// repeat-interleave) with no KV byte moved; CheckRefCounts() checks a set of
// tables against the pool's refcounts (tests, stress tool).
//
// Example:
//
//   BlockTable table(pool);                      // pool outlives the table.
//   if (absl::Status s = table.Grow(3); !s.ok()) return s;
//   BlockTable beam = table.Fork();              // Shares all 3 blocks.
//   beam.IsShared(2);                            // true
//   beam.DropBack(1);                            // table keeps its 3.
//
// Thread safety: a table is used by one thread at a time. Tables on a
// PoolConcurrency::kShared pool may live on different threads.
#ifndef PAGEDKV_ALLOCATOR_BLOCK_TABLE_H_
#define PAGEDKV_ALLOCATOR_BLOCK_TABLE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "base/check.h"

namespace pagedkv {

class BlockTable {
 public:
  // Creates an empty table on `pool`.
  // REQUIRES: pool != nullptr; pool outlives the table.
  explicit BlockTable(BlockPool* pool);

  // Move-only: a copy would be a second owner of the references. A
  // moved-from table is empty and stays on the same pool (still usable).
  BlockTable(BlockTable&& other) noexcept;
  BlockTable& operator=(BlockTable&& other) noexcept;
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  // Releases every entry (one ReleaseAll).
  ~BlockTable();

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  bool empty() const { return blocks_.empty(); }
  // REQUIRES: 0 <= i < num_blocks().
  BlockId operator[](int32_t i) const {
    PKV_DCHECK(i >= 0 && i < num_blocks(), "index %d out of [0, %d)", i,
               num_blocks());
    return blocks_[i];
  }
  // Valid until the next mutation of the table.
  absl::Span<const BlockId> blocks() const { return blocks_; }
  BlockPool* pool() const { return pool_; }

  // A count that grows by at least one with every change of blocks():
  // Append, Grow, Drop*, Clear*, being moved from or assigned to, and the
  // copy-on-write repoints and appends of PrepareWrite. So two reads of one
  // table's generation that are equal saw the same blocks (an exporter
  // skips rows by it, cache/serving/block_table_export.h). A fresh table
  // starts at 0; a table move-constructed from another starts at that one's
  // generation (it holds the very blocks it had then). It may also grow
  // when the ids end up the same (a Truncate then the same blocks again).
  uint64_t generation() const { return generation_; }

  // Appends entries, taking over one reference the caller holds for each.
  // REQUIRES: each id is live in pool() (checked in debug builds).
  void Append(BlockId id);
  void AppendAll(absl::Span<const BlockId> ids);

  // Appends n new blocks (ref_count 1) allocated all or nothing from
  // `reservation` when non-null, else from unreserved pool blocks. Returns
  // INVALID_ARGUMENT for n < 0, RESOURCE_EXHAUSTED with the numbers (table
  // and pool unchanged) when not enough blocks are available.
  // REQUIRES: reservation is null or valid and on pool().
  absl::Status Grow(int32_t n, Reservation* reservation = nullptr);

  // Returns a table on the same pool sharing every block (AddRefs once).
  BlockTable Fork() const;

  // Release the first / last n entries (DropBack: the last one first), or
  // all of them.
  // REQUIRES: 0 <= n <= num_blocks().
  void DropFront(int32_t n);
  void DropBack(int32_t n);
  void Clear();
  // Like Clear(), but releases the last entry first: a finished sequence's
  // blocks leave tail first, the order an LRU of cached blocks wants (a
  // tail is evicted before its prefix).
  void ClearTailFirst();

  // Puts `id` at entry block_index, taking over one reference the caller
  // holds on it, and releases the entry's old block (the prefix cache
  // switches a block to an equal cached one this way).
  // REQUIRES: 0 <= block_index < num_blocks(); ref_count(id) > 0.
  void Replace(int32_t block_index, BlockId id);

  // Returns whether entry block_index is shared (ref_count > 1).
  // REQUIRES: 0 <= block_index < num_blocks().
  bool IsShared(int32_t block_index) const;

  // Aborts unless every entry is a valid id of pool() with ref_count > 0.
  void CheckInvariants() const;

 private:
  // Copy-on-write repoints entries and appends (allocator/copy_on_write.h).
  friend struct internal::CopyOnWriteBooks;
  friend void ReorderTables(std::vector<BlockTable>* tables,
                            absl::Span<const int32_t> indices);

  void CheckReservation(const Reservation* reservation) const;

  // Invariants: pool_ != nullptr; every entry of blocks_ is in range and has
  // ref_count > 0, and this table holds exactly one reference per entry;
  // generation_ was incremented by every change of blocks_ (every function
  // that writes blocks_, here and in copy_on_write.cc, bumps it).
  BlockPool* pool_;  // Not owned; outlives the table.
  std::vector<BlockId> blocks_;
  uint64_t generation_ = 0;
};

// Beam reorder, batch select and repeat-interleave as a table remap:
// afterwards (*tables)[i] shares every block of the old (*tables)[indices[i]]
// and no KV byte has moved. It touches the pool only for the net change: rows
// picked k > 1 times add k - 1 references per block (one AddRefs), rows not
// picked release theirs (one ReleaseAll, after the AddRefs), and the rest are
// moved. A pure permutation (beam reorder without duplicates) costs O(rows), no
// refcount touched. REQUIRES: every index in [0, tables->size()) (callers
// validate user input first and return OUT_OF_RANGE); all tables on one pool.
void ReorderTables(std::vector<BlockTable>* tables,
                   absl::Span<const int32_t> indices);

// Checks that every block's ref_count equals the number of references held
// by `tables` (one per entry) plus `extra_refs` (one per element: references
// held elsewhere); aborts with the first mismatch. Also runs
// pool.CheckInvariants(). O(num_blocks + entries); for tests and tools.
// REQUIRES: every table is on `pool`.
void CheckRefCounts(const BlockPool& pool,
                    absl::Span<const BlockTable* const> tables,
                    absl::Span<const BlockId> extra_refs = {});

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_BLOCK_TABLE_H_
