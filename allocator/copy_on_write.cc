#include "allocator/copy_on_write.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/maybe_lock.h"

namespace pagedkv {
namespace internal {

// The one-lock transaction behind PrepareWrite, with the pool's and the
// tables' private state at hand.
struct CopyOnWriteBooks {
  // Per source block, the references moved from table entries to pending
  // copies so far in this transaction. A target whose block has no holder
  // left but itself and those copies keeps the block (it becomes private
  // once the copies are done). Usually empty: nothing shared.
  class Holds {
   public:
    int32_t Of(BlockId id) const {
      for (const auto& [block, n] : holds_) {
        if (block == id) return n;
      }
      return 0;
    }
    void Add(BlockId id) {
      for (auto& [block, n] : holds_) {
        if (block == id) {
          ++n;
          return;
        }
      }
      holds_.push_back({id, 1});
    }

   private:
    absl::InlinedVector<std::pair<BlockId, int32_t>, 4> holds_;
  };

  static void CheckRequest(const BlockPool& pool, const WriteRequest& r) {
    if (r.reservation != nullptr) {
      PKV_CHECK(r.reservation->is_valid() && r.reservation->pool() == &pool,
                "PrepareWrite with a reservation of another pool");
    }
    for (const WriteTarget& t : r.targets) {
      PKV_CHECK(t.table != nullptr && t.table->pool_ == &pool,
                "PrepareWrite target on another pool");
      PKV_CHECK(t.block_index >= 0 && t.block_index < t.table->num_blocks(),
                "PrepareWrite target %d of a %d-block table", t.block_index,
                t.table->num_blocks());
    }
    for (const TableGrowth& g : r.growth) {
      PKV_CHECK(g.table != nullptr && g.table->pool_ == &pool,
                "PrepareWrite growth on another pool");
      PKV_CHECK(g.num_blocks >= 0, "PrepareWrite growth of %d blocks",
                g.num_blocks);
    }
#ifndef NDEBUG
    // Distinct targets (a duplicate would be counted twice). O(n log n):
    // debug builds only.
    std::vector<std::pair<const BlockTable*, int32_t>> seen;
    seen.reserve(r.targets.size());
    for (const WriteTarget& t : r.targets) {
      seen.push_back({t.table, t.block_index});
    }
    std::sort(seen.begin(), seen.end());
    PKV_DCHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end(),
               "PrepareWrite with a target given twice");
#endif
  }

  // Whether target t needs a copy, given the holds so far. Lock held. A
  // published block is the prefix cache's entry: its bytes must stay what
  // the entry says, so writing into it takes a copy even when the writer is
  // its only holder (deciding that here, under the lock that pins take,
  // leaves no moment in which another thread could pin it between the
  // decision and the write).
  static bool NeedsCopy(const BlockPool& pool, BlockId id, const Holds& holds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool.mu_) {
    pool.CheckId(id);
    return pool.WriteCopiesLocked(id.value(), holds.Of(id));
  }

  struct Count {
    int64_t copies = 0;
    int64_t appended = 0;
  };

  static Count CountLocked(const BlockPool& pool, const WriteRequest& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool.mu_) {
    Count count;
    Holds holds;
    for (const WriteTarget& t : r.targets) {
      const BlockId id = t.table->blocks_[t.block_index];
      if (NeedsCopy(pool, id, holds)) {
        ++count.copies;
        holds.Add(id);
      }
    }
    for (const TableGrowth& g : r.growth) count.appended += g.num_blocks;
    return count;
  }

  static int64_t FreshBlocksNeeded(const BlockPool& pool,
                                   const WriteRequest& r) {
    CheckRequest(pool, r);
    MaybeLock lock(&pool.mu_);
    const Count count = CountLocked(pool, r);
    return count.copies + count.appended;
  }

  // Takes one fresh block: from the writer's reservation while it has free
  // blocks, then from the unreserved ones.
  static BlockId Take(BlockPool& pool, BlockPool::ReservationBooks* books,
                      int32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool.mu_) {
    if (books != nullptr && books->reserved_free > 0) {
      --books->reserved_free;
      ++books->charged_live;
      --pool.total_reserved_free_;
      return pool.TakeFreeLocked(slot);
    }
    return pool.TakeFreeLocked(-1);
  }

  static absl::StatusOr<PendingCopies> PrepareWrite(BlockPool& pool,
                                                    const WriteRequest& r) {
    CheckRequest(pool, r);
    // Nothing allocates under the lock, so nothing can fail once blocks are
    // taken: the tables get room for their growth first (doubling, so
    // appending one block per write stays amortised O(1)), and the copy
    // list is sized after a count, retried if another thread changed the
    // count in between.
    for (const TableGrowth& g : r.growth) {
      std::vector<BlockId>& blocks = g.table->blocks_;
      const size_t want = blocks.size() + static_cast<size_t>(g.num_blocks);
      if (want > blocks.capacity()) {
        blocks.reserve(std::max(want, 2 * blocks.capacity()));
      }
    }
    PendingCopies::Ops ops;
    for (;;) {
      int64_t copies_to_fit = 0;
      Count short_of;  // Set when the pool cannot supply the blocks.
      int64_t free_blocks = 0, reserved = 0, writers = 0;
      {
        MaybeLock lock(&pool.mu_);
        const Count count = CountLocked(pool, r);
        const int64_t needed = count.copies + count.appended;
        if (needed == 0) return PendingCopies();
        BlockPool::ReservationBooks* books =
            r.reservation != nullptr ? &pool.reservations_[r.reservation->slot_]
                                     : nullptr;
        const int64_t from_reservation =
            books != nullptr ? books->reserved_free : 0;
        const int64_t available =
            from_reservation + pool.unreserved_free_locked();
        if (needed > available) {
          ++pool.num_failed_allocations_;
          short_of = count;
          free_blocks = pool.num_free_locked();
          reserved = pool.total_reserved_free_;
          writers = from_reservation;
        } else if (count.copies <= static_cast<int64_t>(ops.capacity())) {
          return TakeLocked(pool, r, count, books, std::move(ops));
        } else {
          copies_to_fit = count.copies;
        }
      }
      // Not under the lock: the message and the larger copy list.
      if (short_of.copies + short_of.appended > 0) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "need %d blocks (%d copies, %d appended), %d free (%d reserved, "
            "%d of them for this writer)",
            short_of.copies + short_of.appended, short_of.copies,
            short_of.appended, free_blocks, reserved, writers));
      }
      ops.reserve(static_cast<size_t>(copies_to_fit));
    }
  }

  // The decided write: nothing can fail from here.
  static PendingCopies TakeLocked(BlockPool& pool, const WriteRequest& r,
                                  const Count& count,
                                  BlockPool::ReservationBooks* books,
                                  PendingCopies::Ops ops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool.mu_) {
    const int32_t slot = r.reservation != nullptr ? r.reservation->slot_ : -1;
    Holds holds;
    for (const WriteTarget& t : r.targets) {
      BlockId& entry = t.table->blocks_[t.block_index];
      if (!NeedsCopy(pool, entry, holds)) continue;
      holds.Add(entry);
      // The entry's reference on the source moves to the pending copy.
      ++pool.copy_holds_[entry.value()];
      const BlockId fresh = Take(pool, books, slot);
      ops.push_back(CopyOp{entry, fresh});
      entry = fresh;
      ++t.table->generation_;
    }
    for (const TableGrowth& g : r.growth) {
      if (g.num_blocks == 0) continue;
      // As g.num_blocks Take() calls, in one walk of the free list: the
      // reservation's blocks first, then unreserved ones. The room was
      // reserved before the lock, so the resize does not allocate.
      std::vector<BlockId>& blocks = g.table->blocks_;
      const size_t old_size = blocks.size();
      blocks.resize(old_size + static_cast<size_t>(g.num_blocks));
      int32_t charged = 0;
      if (books != nullptr) {
        charged = std::min(books->reserved_free, g.num_blocks);
        books->reserved_free -= charged;
        books->charged_live += charged;
        pool.total_reserved_free_ -= charged;
        pool.TakeFreeNLocked(slot, charged, &blocks[old_size]);
      }
      pool.TakeFreeNLocked(-1, g.num_blocks - charged,
                           blocks.data() + old_size + charged);
      ++g.table->generation_;
    }
    pool.NoteAllocatedLocked(
        static_cast<int32_t>(count.copies + count.appended));
    return PendingCopies(&pool, std::move(ops));
  }

  // PendingCopies' references on their sources: taken over (Adopt) and
  // given back (MarkDone), counted in BlockPool::copy_holds_.
  static void AdoptSource(BlockPool& pool, BlockId src) {
    pool.AdoptCopySource(src);
  }
  static void ReleaseSources(BlockPool& pool, absl::Span<const BlockId> ids) {
    pool.ReleaseCopySources(ids);
  }
};

}  // namespace internal

PendingCopies::PendingCopies(PendingCopies&& other) noexcept
    : pool_(other.pool_), ops_(std::move(other.ops_)) {
  other.ops_.clear();
  other.pool_ = nullptr;
}

PendingCopies& PendingCopies::operator=(PendingCopies&& other) noexcept {
  if (this != &other) {
    MarkDone();
    pool_ = other.pool_;
    ops_ = std::move(other.ops_);
    other.ops_.clear();
    other.pool_ = nullptr;
  }
  return *this;
}

PendingCopies::~PendingCopies() { MarkDone(); }

void PendingCopies::ReleaseSources() {
  absl::InlinedVector<BlockId, 8> sources;
  sources.reserve(ops_.size());
  for (const CopyOp& op : ops_) sources.push_back(op.src);
  ops_.clear();
  internal::CopyOnWriteBooks::ReleaseSources(*pool_, sources);
}

void PendingCopies::Append(PendingCopies&& other) {
  if (other.ops_.empty()) return;
  if (ops_.empty()) {
    *this = std::move(other);
    return;
  }
  PKV_CHECK(pool_ == other.pool_, "PendingCopies::Append across pools");
  ops_.insert(ops_.end(), other.ops_.begin(), other.ops_.end());
  other.ops_.clear();
  other.pool_ = nullptr;
}

void PendingCopies::Adopt(BlockPool* pool, CopyOp op) {
  PKV_CHECK(pool != nullptr && (ops_.empty() || pool_ == pool),
            "PendingCopies::Adopt across pools");
  PKV_DCHECK(pool->ref_count(op.src) > 0 && pool->ref_count(op.dst) > 0,
             "adopting a copy %d -> %d of a free block", op.src.value(),
             op.dst.value());
  internal::CopyOnWriteBooks::AdoptSource(*pool, op.src);
  pool_ = pool;
  ops_.push_back(op);
}

absl::StatusOr<PendingCopies> PrepareWrite(BlockPool& pool,
                                           const WriteRequest& request) {
  return internal::CopyOnWriteBooks::PrepareWrite(pool, request);
}

int64_t FreshBlocksNeeded(const BlockPool& pool, const WriteRequest& request) {
  return internal::CopyOnWriteBooks::FreshBlocksNeeded(pool, request);
}

}  // namespace pagedkv
