// allocator/copy_on_write.h
//
// Copy-on-write, as one mechanism of the books. Before a write, the writer
// names the table entries it is about to write into (WriteTarget) and the
// blocks it appends to tables (TableGrowth). PrepareWrite then, under one
// lock of the pool and all or nothing:
//   - points every target that is shared (ref_count > 1) or published in
//     the prefix cache (its bytes are a cached entry's: a truncated
//     sequence's tail inside a block it published) at a fresh private
//     block, and records the copy the bytes need as a CopyOp{src, dst};
//   - appends the fresh blocks of every growth;
//   - keeps one reference on every copy's `src` (the one the table entry
//     held), so the copies may run later, on host storage by the library or
//     on a device by the caller, while other sequences release the source.
// The references go when the caller says the copies ran:
// PendingCopies::MarkDone() (or when the PendingCopies is destroyed).
//
// Nothing re-reads reference counts between the decision and its use, so
// another sequence (or thread) dropping its reference in between changes
// nothing: the source stays alive, the destination is already this table's.
//
// The copies must run before the write they prepare: when k entries of one
// write share a block that nothing else holds, k - 1 of them get copies and
// the last keeps the block (it is private once the copies are done), so its
// write must not land before the copies have read it.
//
// Example (a write into the last block of two rows after a fork):
//
//   WriteTarget targets[] = {{&row0, 3}, {&row1, 3}};
//   absl::StatusOr<PendingCopies> copies =
//       PrepareWrite(pool, {.targets = targets});
//   if (!copies.ok()) return copies.status();   // RESOURCE_EXHAUSTED.
//   for (const CopyOp& op : copies->ops()) CopyBlockBytes(op.src, op.dst);
//   copies->MarkDone();                          // Sources may go now.
//   // ... write into row0[3] and row1[3] ...
//
// Thread safety: PrepareWrite takes the pool's lock once (kShared pools);
// the tables it changes are used by the calling thread only. A PendingCopies
// is used by one thread at a time.
#ifndef PAGEDKV_ALLOCATOR_COPY_ON_WRITE_H_
#define PAGEDKV_ALLOCATOR_COPY_ON_WRITE_H_

#include <cstdint>
#include <ostream>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"

namespace pagedkv {

// "Copy every byte of block src to block dst": the one instruction the books
// hand to whoever holds the bytes.
struct CopyOp {
  BlockId src;  // The shared block whose bytes are copied.
  BlockId dst;  // The fresh private block that receives them.

  friend bool operator==(const CopyOp& a, const CopyOp& b) {
    return a.src == b.src && a.dst == b.dst;
  }
  friend bool operator!=(const CopyOp& a, const CopyOp& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const CopyOp& op) {
    return os << "CopyOp{" << op.src << " -> " << op.dst << "}";
  }
};

// A table entry that a write is about to write into.
struct WriteTarget {
  BlockTable* table;
  int32_t block_index;
};

// Fresh blocks a write appends to the end of a table.
struct TableGrowth {
  BlockTable* table;
  int32_t num_blocks;
};

struct WriteRequest {
  // Distinct entries; each REQUIRES 0 <= block_index < table->num_blocks().
  absl::Span<const WriteTarget> targets = {};
  // Each REQUIRES num_blocks >= 0.
  absl::Span<const TableGrowth> growth = {};
  // Fresh blocks come from this reservation first, then from unreserved
  // blocks of the pool. nullptr: from unreserved blocks only.
  Reservation* reservation = nullptr;
};

// Copies decided by PrepareWrite that the bytes still owe, each holding one
// reference on its source. Move-only; a moved-from PendingCopies is empty.
// REQUIRES: the pool outlives it.
class PendingCopies {
 public:
  // Up to four copies (a decode step of a few forked rows) need no heap.
  using Ops = absl::InlinedVector<CopyOp, 4>;

  PendingCopies() = default;
  PendingCopies(PendingCopies&& other) noexcept;
  PendingCopies& operator=(PendingCopies&& other) noexcept;
  PendingCopies(const PendingCopies&) = delete;
  PendingCopies& operator=(const PendingCopies&) = delete;
  // Drops the sources like MarkDone(): destroying copies that never ran
  // leaves their destinations' bytes unspecified.
  ~PendingCopies();

  // In the order the targets were given. Valid until the next MarkDone(),
  // Append() or move.
  absl::Span<const CopyOp> ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }
  int32_t size() const { return static_cast<int32_t>(ops_.size()); }

  // The copies ran: releases every source reference (one lock) and empties
  // the list. Free when there is nothing to release (the common case).
  void MarkDone() {
    if (!ops_.empty()) ReleaseSources();
  }

  // Moves `other`'s copies (and their references) into this list.
  // REQUIRES: both on the same pool, or one of them empty.
  void Append(PendingCopies&& other);

  // Adds a copy decided outside PrepareWrite (the window tables of layer
  // groups, cache/serving/grouped_sequences.cc, unshare with
  // WindowTable::Replace), taking over one reference the caller holds on
  // op.src; op.dst is the entry's new block.
  // REQUIRES: ref_count(op.src) > 0 and ref_count(op.dst) > 0 in `pool`;
  // this list empty or on `pool`.
  void Adopt(BlockPool* pool, CopyOp op);

 private:
  friend struct internal::CopyOnWriteBooks;
  PendingCopies(BlockPool* pool, Ops ops) : pool_(pool), ops_(std::move(ops)) {}
  void ReleaseSources();

  // Invariant: every ops_[i].src holds one reference owned by this object;
  // every dst is referenced by the table entry it was made for. pool_ is
  // null only while ops_ is empty.
  BlockPool* pool_ = nullptr;  // Not owned.
  Ops ops_;
};

// Prepares the books for one write (see the file comment), all or nothing.
// Returns the copies the bytes owe, in target order. RESOURCE_EXHAUSTED
// ("need N blocks (C copies, G appended), F free ...") changes nothing.
// REQUIRES: every table on `pool`; `request.reservation` null or valid and
// on `pool`; targets distinct and in range; growth counts >= 0.
absl::StatusOr<PendingCopies> PrepareWrite(BlockPool& pool,
                                           const WriteRequest& request);

// The number of fresh blocks PrepareWrite(pool, request) would take now:
// copies plus appended blocks. Exact while no other thread uses the pool (a
// private pool sizes its growth with it); on a shared pool, a snapshot.
// REQUIRES: as PrepareWrite.
int64_t FreshBlocksNeeded(const BlockPool& pool, const WriteRequest& request);

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_COPY_ON_WRITE_H_
