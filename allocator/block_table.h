// allocator/block_table.h
//
// BlockTable is one sequence's ordered list of block ids: entry i holds the
// tokens [i * block_tokens, (i + 1) * block_tokens) of the sequence (the
// cache decides block_tokens; the table only knows ids). The table owns one
// pool reference per entry (RAII): destroying, clearing or dropping entries
// releases them. Fork() is the explicit copy: it shares every block by adding
// a reference, and PrepareWrite() unshares one entry before a write
// (copy-on-write), returning the CopyOp the cache must carry out on bytes.
//
// GatherTables() builds new tables from rows of old ones (beam reorder, batch
// select, repeat-interleave) with no KV byte moved; CheckRefCounts() checks a
// set of tables against the pool's refcounts (tests, stress tool).
//
// Example:
//
//   BlockTable table(pool);                      // pool outlives the table.
//   if (absl::Status s = table.Grow(3); !s.ok()) return s;
//   BlockTable beam = table.Fork();              // Shares all 3 blocks.
//   absl::StatusOr<std::optional<CopyOp>> op = beam.PrepareWrite(2);
//   if (!op.ok()) return op.status();            // RESOURCE_EXHAUSTED.
//   if (op->has_value()) CopyBlock((*op)->src, (*op)->dst);  // Then write.
//
// Copying caveat: PrepareWrite releases the table's reference to `src`
// before returning, so the bytes of `src` stay valid only while another
// holder keeps it. Copy before any other holder can release it; when that
// holder may run on another thread, AddRef(src) around the copy.
//
// Thread safety: a table is used by one thread at a time. Tables on a
// PoolConcurrency::kShared pool may live on different threads.
#ifndef PAGEDKV_ALLOCATOR_BLOCK_TABLE_H_
#define PAGEDKV_ALLOCATOR_BLOCK_TABLE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/copy_on_write.h"
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

  // Release the first / last n entries, or all of them.
  // REQUIRES: 0 <= n <= num_blocks().
  void DropFront(int32_t n);
  void DropBack(int32_t n);
  void Clear();

  // Returns whether entry block_index is shared (ref_count > 1).
  // REQUIRES: 0 <= block_index < num_blocks().
  bool IsShared(int32_t block_index) const;

  // Returns how many entries in [first, last) are shared: the number of
  // blocks PrepareWrite would need over that range (one lock for all).
  // Lets a caller check availability before a multi-block write.
  // REQUIRES: 0 <= first <= last <= num_blocks().
  int32_t NumSharedIn(int32_t first, int32_t last) const;

  // Copy-on-write. If entry block_index is shared, allocates a private block
  // (from `reservation` when non-null, else the pool), releases the table's
  // reference to the old block, points the entry at the new block and
  // returns CopyOp{old, new} for the caller to copy bytes (see the caveat in
  // the file comment). Returns nullopt if the entry is already private.
  // Returns RESOURCE_EXHAUSTED (nothing changed) when no block is available.
  // REQUIRES: 0 <= block_index < num_blocks(); reservation null or valid and
  // on pool().
  absl::StatusOr<std::optional<CopyOp>> PrepareWrite(
      int32_t block_index, Reservation* reservation = nullptr);

  // Copy-on-write with a block the caller already took (so that a write
  // over several entries can take every block it needs up front, all or
  // nothing): takes ownership of `fresh`'s only reference, releases the
  // table's reference to the shared entry, points the entry at `fresh` and
  // returns CopyOp{old, fresh}. The same copying caveat applies.
  // REQUIRES: IsShared(block_index); ref_count(fresh) == 1.
  CopyOp ReplaceShared(int32_t block_index, BlockId fresh);

  // Aborts unless every entry is a valid id of pool() with ref_count > 0.
  void CheckInvariants() const;

 private:
  friend std::vector<BlockTable> GatherTables(
      absl::Span<const BlockTable> old_tables,
      absl::Span<const int32_t> indices);
  friend void ReorderTables(std::vector<BlockTable>* tables,
                            absl::Span<const int32_t> indices);

  void CheckReservation(const Reservation* reservation) const;

  // Invariants: pool_ != nullptr; every entry of blocks_ is in range and has
  // ref_count > 0, and this table holds exactly one reference per entry.
  BlockPool* pool_;  // Not owned; outlives the table.
  std::vector<BlockId> blocks_;
};

// Returns new tables with result[i] = old_tables[indices[i]].Fork(): the basis
// of beam reorder, batch select and repeat-interleave. Takes the pool lock
// once for all the AddRefs.
// REQUIRES: every index in [0, old_tables.size()) (callers validate user
// input first and return OUT_OF_RANGE); all tables on one pool.
std::vector<BlockTable> GatherTables(absl::Span<const BlockTable> old_tables,
                                     absl::Span<const int32_t> indices);

// In-place form of `*tables = GatherTables(*tables, indices)` with the same
// result, but it touches the pool only for the net change: rows picked k > 1
// times add k - 1 references per block (one AddRefs), rows not picked release
// theirs (one ReleaseAll, after the AddRefs), and the rest are moved. A pure
// permutation (beam reorder without duplicates) costs O(rows), no refcount
// touched. REQUIRES: as GatherTables.
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
