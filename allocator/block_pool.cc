#include "allocator/block_pool.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/maybe_lock.h"

namespace pagedkv {

// ---------------------------------------------------------------------------
// BlockPool: creation

absl::StatusOr<std::unique_ptr<BlockPool>> BlockPool::Create(Options options) {
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_blocks must be > 0, got %d", options.num_blocks));
  }
  return std::unique_ptr<BlockPool>(new BlockPool(options));
}

BlockPool::BlockPool(Options options)
    : concurrency_(options.concurrency),
      mu_(options.concurrency == PoolConcurrency::kShared),
      ref_counts_(options.num_blocks, 0),
      owner_(options.num_blocks, -1),
      copy_holds_(options.num_blocks, 0),
      free_list_(options.num_blocks) {
  // Block 0 is handed out first.
  for (int32_t i = 0; i < options.num_blocks; ++i) {
    free_list_.PushBack(BlockId(i));
  }
}

BlockPool::~BlockPool() {
  MaybeLock lock(&mu_);
  PKV_CHECK(num_active_reservations_ == 0,
            "BlockPool destroyed while %d reservations still point at it",
            num_active_reservations_);
}

// ---------------------------------------------------------------------------
// BlockPool: helpers (lock held)

BlockId BlockPool::TakeFreeLocked(int32_t owner) {
  BlockId id;
  if (!free_list_.empty()) {
    id = free_list_.PopFront();
  } else {
    id = EvictOneLocked();
    prefix_->CloseEvents();
  }
  ref_counts_[id.value()] = 1;
  owner_[id.value()] = owner;
  return id;
}

void BlockPool::TakeFreeNLocked(int32_t owner, int32_t n, BlockId* out) {
  int32_t k = std::min(n, free_list_.size());
  free_list_.PopFrontN(k, out);
  if (k < n) {
    // The rest are cached: evicted straight into out[] (descendants an
    // eviction drops land in the plain list and are taken from there).
    for (; k < n; ++k) {
      out[k] = !free_list_.empty() ? free_list_.PopFront() : EvictOneLocked();
    }
    prefix_->CloseEvents();
  }
  for (int32_t k = 0; k < n; ++k) {
    const int32_t i = out[k].value();
    ref_counts_[i] = 1;
    owner_[i] = owner;
  }
}

void BlockPool::NoteAllocatedLocked(int32_t n) {
  num_allocations_ += n;
  const int32_t used = num_blocks_locked() - num_free_locked();
  if (used > peak_used_) peak_used_ = used;
}

void BlockPool::AddRefLocked(BlockId id) {
  CheckId(id);
  int32_t& rc = ref_counts_[id.value()];
  PKV_CHECK(rc > 0, "AddRef of free block %d", id.value());
  if (++rc == 2) ++num_shared_;
}

// Inline (forced: gcc kept it a call, with a stack-protected frame per
// block): ReleaseAll and ReleaseAllTailFirst run it once per block of a
// freed table; only a charged block leaves the fast path.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline void BlockPool::ReleaseLocked(BlockId id) {
  CheckId(id);
  const int32_t i = id.value();
  int32_t& rc = ref_counts_[i];
  PKV_CHECK(rc > 0, "Release of free block %d", i);
  --rc;
  if (rc == 1) {
    --num_shared_;
    return;
  }
  if (rc > 0) return;
  if (prefix_ != nullptr && prefix_->is_published(i)) {
    prefix_->evictable().PushFront(id);  // Cached: the LRU's newest.
  } else {
    free_list_.PushFront(id);  // LIFO: the warmest block is reused first.
  }
  if (owner_[i] >= 0) UnchargeLocked(i);
}

BlockId BlockPool::EvictOneLocked() {
  PKV_CHECK(prefix_ != nullptr && !prefix_->evictable().empty(),
            "no free block to take");
  // The least recently freed cached block; RemoveSubtree also drops any
  // cached descendants (free ones join the plain list through the
  // callback), so no entry outlives its parent.
  const BlockId victim = prefix_->evictable().PopBack();
  prefix_->RemoveSubtree(victim.value(), /*evicted=*/true,
                         [this, victim](int32_t b) {
                           if (b != victim.value()) OnUnpublishedLocked(b);
                         });
  return victim;
}

void BlockPool::OnUnpublishedLocked(int32_t b) {
  if (ref_counts_[b] != 0) return;  // Its holders keep it, uncached.
  prefix_->evictable().Remove(BlockId(b));
  free_list_.PushBack(BlockId(b));
}

void BlockPool::UnchargeLocked(int32_t i) {
  const int32_t slot = owner_[i];
  owner_[i] = -1;
  ReservationBooks& r = reservations_[slot];
  --r.charged_live;
  if (r.state == SlotState::kActive) {
    // Back to its reservation's set-aside count, not to general use.
    ++r.reserved_free;
    ++total_reserved_free_;
  } else if (r.charged_live == 0) {
    // Detached and now empty: the slot can be reused.
    r = ReservationBooks{};
    free_slots_.push_back(slot);
  }
}

// ---------------------------------------------------------------------------
// BlockPool: public operations

std::optional<BlockId> BlockPool::TryAllocate() {
  MaybeLock lock(&mu_);
  if (unreserved_free_locked() <= 0) {
    ++num_failed_allocations_;
    return std::nullopt;
  }
  const BlockId id = TakeFreeLocked(-1);
  NoteAllocatedLocked(1);
  return id;
}

absl::StatusOr<std::vector<BlockId>> BlockPool::Allocate(int32_t n) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot allocate %d blocks", n));
  }
  std::vector<BlockId> ids;
  ids.reserve(n);
  MaybeLock lock(&mu_);
  if (n > unreserved_free_locked()) {
    ++num_failed_allocations_;
    return absl::ResourceExhaustedError(
        absl::StrFormat("need %d blocks, %d free (%d reserved)", n,
                        num_free_locked(), total_reserved_free_));
  }
  ids.resize(n);
  TakeFreeNLocked(-1, n, ids.data());
  NoteAllocatedLocked(n);
  return ids;
}

void BlockPool::AddRef(BlockId id) {
  MaybeLock lock(&mu_);
  AddRefLocked(id);
}

void BlockPool::AddRefs(absl::Span<const BlockId> ids) {
  if (ids.empty()) return;
  MaybeLock lock(&mu_);
  for (BlockId id : ids) AddRefLocked(id);
}

void BlockPool::AddCopyHolds(absl::Span<const BlockId> ids) {
  if (ids.empty()) return;
  MaybeLock lock(&mu_);
  for (BlockId id : ids) {
    AddRefLocked(id);
    ++copy_holds_[id.value()];
  }
}

void BlockPool::DropCopyHoldsLocked(absl::Span<const BlockId> ids) {
  for (BlockId id : ids) {
    CheckId(id);
    int32_t& holds = copy_holds_[id.value()];
    PKV_CHECK(holds > 0, "copy source %d released without a hold", id.value());
    --holds;
  }
}

void BlockPool::ReleaseCopyHoldsTailFirst(absl::Span<const BlockId> ids) {
  if (ids.empty()) return;
  MaybeLock lock(&mu_);
  DropCopyHoldsLocked(ids);
  const size_t n = ids.size();
  ReleaseBatchLocked(n, [ids, n](size_t k) { return ids[n - 1 - k]; });
}

void BlockPool::Release(BlockId id) {
  MaybeLock lock(&mu_);
  ReleaseLocked(id);
}

// What ReleaseLocked does per block, for a batch (a dropped row, a freed
// sequence: hundreds of blocks): the blocks that become plain free are
// gathered in a small buffer and pushed onto the free list in one
// PushFrontN, so the list's head stays in a register instead of being
// reloaded after every link store. The order is ReleaseLocked's, one id
// after another; nothing else runs under the lock in between.
template <typename Next>
void BlockPool::ReleaseBatchLocked(size_t n, Next next_id) {
  constexpr int32_t kBuffer = 64;
  // Locals, not members, in the loop: a store through rcs may alias any
  // int32 member, which would otherwise be reloaded after every block.
  int32_t* const rcs = ref_counts_.data();
  const int32_t* const owner = owner_.data();
  const uint32_t num_blocks = static_cast<uint32_t>(ref_counts_.size());
  const bool cached = prefix_ != nullptr;
  BlockId freed[kBuffer];
  int32_t num_freed = 0;
  int32_t unshared = 0;  // Blocks whose count went from 2 to 1.
  // The books of blocks freed long ago are cold: prefetching a few blocks
  // ahead overlaps their misses (a window group's step releases blocks
  // last touched thousands of tokens back).
  constexpr size_t kAhead = 8;
  for (size_t k = 0; k < n; ++k) {
    if (k + kAhead < n) {
      const int32_t j = next_id(k + kAhead).value();
      if (static_cast<uint32_t>(j) < num_blocks) {
        __builtin_prefetch(rcs + j, /*rw=*/1);
        __builtin_prefetch(owner + j);
        free_list_.Prefetch(j);
      }
    }
    const BlockId id = next_id(k);
    const int32_t i = id.value();
    PKV_CHECK(static_cast<uint32_t>(i) < num_blocks,
              "block %d out of range [0, %d)", i, num_blocks);
    const int32_t rc = rcs[i] - 1;
    PKV_CHECK(rc >= 0, "Release of free block %d", i);
    rcs[i] = rc;
    if (rc > 0) {
      unshared += rc == 1 ? 1 : 0;
      continue;
    }
    if (cached && prefix_->is_published(i)) {
      prefix_->evictable().PushFront(id);  // Cached: the LRU's newest.
    } else {
      freed[num_freed++] = id;
      if (num_freed == kBuffer) {
        free_list_.PushFrontN(freed, num_freed);
        num_freed = 0;
      }
    }
    // Touches none of the locals above (owner_[i], the reservation books).
    if (owner[i] >= 0) UnchargeLocked(i);
  }
  free_list_.PushFrontN(freed, num_freed);
  num_shared_ -= unshared;
}

void BlockPool::ReleaseAll(absl::Span<const BlockId> ids) {
  if (ids.empty()) return;
  MaybeLock lock(&mu_);
  ReleaseBatchLocked(ids.size(), [ids](size_t k) { return ids[k]; });
}

void BlockPool::AdoptCopySource(BlockId src) {
  MaybeLock lock(&mu_);
  CheckId(src);
  PKV_CHECK(ref_counts_[src.value()] > copy_holds_[src.value()],
            "copy source %d adopted without a reference to hand over",
            src.value());
  ++copy_holds_[src.value()];
}

void BlockPool::ReleaseCopySources(absl::Span<const BlockId> ids) {
  MaybeLock lock(&mu_);
  DropCopyHoldsLocked(ids);
  ReleaseBatchLocked(ids.size(), [ids](size_t k) { return ids[k]; });
}

void BlockPool::ReleaseAllTailFirst(absl::Span<const BlockId> ids) {
  if (ids.empty()) return;
  MaybeLock lock(&mu_);
  const size_t n = ids.size();
  ReleaseBatchLocked(n, [ids, n](size_t k) { return ids[n - 1 - k]; });
}

absl::Status BlockPool::Grow(int32_t extra_blocks) {
  if (extra_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Grow needs extra_blocks > 0, got %d", extra_blocks));
  }
  MaybeLock lock(&mu_);
  const int64_t old_size = num_blocks_locked();
  const int64_t new_size = old_size + extra_blocks;
  if (new_size > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Grow by %d blocks overflows int32: %d blocks now",
                        extra_blocks, old_size));
  }
  ref_counts_.resize(new_size, 0);
  owner_.resize(new_size, -1);
  copy_holds_.resize(new_size, 0);
  free_list_.Grow(static_cast<int32_t>(new_size));
  if (prefix_ != nullptr) prefix_->Grow(static_cast<int32_t>(new_size));
  // New blocks go behind the recently freed (warm) ones.
  for (int64_t i = old_size; i < new_size; ++i) {
    free_list_.PushBack(BlockId(static_cast<int32_t>(i)));
  }
  return absl::OkStatus();
}

absl::Status BlockPool::Shrink(int32_t new_num_blocks) {
  MaybeLock lock(&mu_);
  const int32_t old_size = num_blocks_locked();
  if (new_num_blocks <= 0 || new_num_blocks > old_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Shrink to %d blocks of a %d-block pool", new_num_blocks, old_size));
  }
  if (prefix_ != nullptr) {
    return absl::FailedPreconditionError(
        "Shrink of a pool with a prefix cache (its books cannot shrink)");
  }
  const int32_t dropped = old_size - new_num_blocks;
  for (int32_t i = new_num_blocks; i < old_size; ++i) {
    if (ref_counts_[i] != 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "Shrink to %d blocks: block %d is in use", new_num_blocks, i));
    }
  }
  if (free_list_.size() - dropped < total_reserved_free_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "Shrink by %d blocks would leave %d free for %d reserved", dropped,
        free_list_.size() - dropped, total_reserved_free_));
  }
  for (int32_t i = new_num_blocks; i < old_size; ++i) {
    free_list_.Remove(BlockId(i));
  }
  free_list_.Shrink(new_num_blocks);
  ref_counts_.resize(new_num_blocks);
  owner_.resize(new_num_blocks);
  copy_holds_.resize(new_num_blocks);
  return absl::OkStatus();
}

absl::StatusOr<Reservation> BlockPool::Reserve(int32_t n) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot reserve %d blocks", n));
  }
  MaybeLock lock(&mu_);
  if (n > unreserved_free_locked()) {
    ++num_failed_allocations_;
    return absl::ResourceExhaustedError(
        absl::StrFormat("need %d blocks, %d free (%d reserved)", n,
                        num_free_locked(), total_reserved_free_));
  }
  int32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<int32_t>(reservations_.size());
    reservations_.emplace_back();
  }
  ReservationBooks& r = reservations_[slot];
  r.state = SlotState::kActive;
  r.capacity = n;
  r.reserved_free = n;
  r.charged_live = 0;
  total_reserved_free_ += n;
  ++num_active_reservations_;
  return Reservation(this, slot);
}

// ---------------------------------------------------------------------------
// BlockPool: accessors

int32_t BlockPool::ref_count(BlockId id) const {
  MaybeLock lock(&mu_);
  CheckId(id);
  return ref_counts_[id.value()];
}

int32_t BlockPool::num_blocks() const {
  MaybeLock lock(&mu_);
  return num_blocks_locked();
}

int32_t BlockPool::num_free_blocks() const {
  MaybeLock lock(&mu_);
  return num_free_locked();
}

int32_t BlockPool::num_reserved_blocks() const {
  MaybeLock lock(&mu_);
  return total_reserved_free_;
}

int32_t BlockPool::num_unreserved_free_blocks() const {
  MaybeLock lock(&mu_);
  return unreserved_free_locked();
}

int32_t BlockPool::num_used_blocks() const {
  MaybeLock lock(&mu_);
  return num_blocks_locked() - num_free_locked();
}

PoolStats BlockPool::stats() const {
  MaybeLock lock(&mu_);
  PoolStats s;
  s.num_blocks = num_blocks_locked();
  s.num_free_blocks = num_free_locked();
  s.num_reserved_blocks = total_reserved_free_;
  s.num_used_blocks = s.num_blocks - s.num_free_blocks;
  s.num_shared_blocks = num_shared_;
  s.num_reservations = num_active_reservations_;
  s.num_allocations = num_allocations_;
  s.num_failed_allocations = num_failed_allocations_;
  s.peak_used_blocks = peak_used_;
  return s;
}

void BlockPool::CheckInvariants() const {
  MaybeLock lock(&mu_);
  CheckInvariantsLocked();
}

void BlockPool::CheckInvariantsLocked() const {
  const int32_t n = num_blocks_locked();
  PKV_CHECK(owner_.size() == ref_counts_.size() &&
                copy_holds_.size() == ref_counts_.size(),
            "%d owners and %d copy holds for %d blocks", owner_.size(),
            copy_holds_.size(), n);
  PKV_CHECK(free_list_.capacity() == n, "free list capacity %d, %d blocks",
            free_list_.capacity(), n);
  free_list_.CheckInvariants();

  std::vector<int32_t> charged(reservations_.size(), 0);
  int32_t used = 0;
  int32_t shared = 0;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t rc = ref_counts_[i];
    PKV_CHECK(rc >= 0, "block %d has ref_count %d", i, rc);
    const bool cached_free =
        prefix_ != nullptr && prefix_->evictable().Contains(BlockId(i));
    PKV_CHECK(free_list_.Contains(BlockId(i)) == (rc == 0 && !cached_free),
              "block %d: ref_count %d but %s the free list", i, rc,
              free_list_.Contains(BlockId(i)) ? "in" : "not in");
    PKV_CHECK(copy_holds_[i] >= 0 && copy_holds_[i] <= rc,
              "block %d: %d copy holds of %d references", i, copy_holds_[i],
              rc);
    if (rc > 0) ++used;
    if (rc > 1) ++shared;
    const int32_t slot = owner_[i];
    if (slot == -1) continue;
    PKV_CHECK(slot >= 0 && slot < static_cast<int32_t>(reservations_.size()),
              "block %d charged to unknown reservation %d", i, slot);
    PKV_CHECK(rc > 0, "free block %d still charged to reservation %d", i, slot);
    PKV_CHECK(reservations_[slot].state != SlotState::kFree,
              "block %d charged to free reservation slot %d", i, slot);
    ++charged[slot];
  }
  PKV_CHECK(used + num_free_locked() == n, "%d used + %d free != %d blocks",
            used, num_free_locked(), n);
  if (prefix_ != nullptr) prefix_->CheckInvariants(ref_counts_, copy_holds_);
  PKV_CHECK(shared == num_shared_, "%d shared blocks, counted %d", shared,
            num_shared_);
  PKV_CHECK(peak_used_ >= used, "peak used %d < used %d", peak_used_, used);

  int32_t reserved = 0;
  int32_t active = 0;
  int32_t free_slot_count = 0;
  for (size_t s = 0; s < reservations_.size(); ++s) {
    const ReservationBooks& r = reservations_[s];
    PKV_CHECK(r.charged_live == charged[s],
              "reservation %d: %d charged_live, %d blocks charged", s,
              r.charged_live, charged[s]);
    switch (r.state) {
      case SlotState::kActive:
        ++active;
        PKV_CHECK(r.reserved_free >= 0 &&
                      r.reserved_free + r.charged_live == r.capacity,
                  "reservation %d: reserved_free %d + charged %d != "
                  "capacity %d",
                  s, r.reserved_free, r.charged_live, r.capacity);
        reserved += r.reserved_free;
        break;
      case SlotState::kDetached:
        PKV_CHECK(r.capacity == 0 && r.reserved_free == 0 && r.charged_live > 0,
                  "detached reservation %d: capacity %d reserved_free %d "
                  "charged %d",
                  s, r.capacity, r.reserved_free, r.charged_live);
        break;
      case SlotState::kFree:
        ++free_slot_count;
        PKV_CHECK(
            r.capacity == 0 && r.reserved_free == 0 && r.charged_live == 0,
            "free reservation slot %d not empty", s);
        PKV_CHECK(std::count(free_slots_.begin(), free_slots_.end(),
                             static_cast<int32_t>(s)) == 1,
                  "free reservation slot %d not listed once", s);
        break;
    }
  }
  PKV_CHECK(free_slot_count == static_cast<int32_t>(free_slots_.size()),
            "%d free slots, %d listed", free_slot_count, free_slots_.size());
  PKV_CHECK(reserved == total_reserved_free_,
            "reservations hold %d free blocks, total says %d", reserved,
            total_reserved_free_);
  PKV_CHECK(total_reserved_free_ <= num_free_locked(),
            "%d reserved blocks but only %d free", total_reserved_free_,
            num_free_locked());
  PKV_CHECK(active == num_active_reservations_,
            "%d active reservations, counted %d", active,
            num_active_reservations_);
}

// ---------------------------------------------------------------------------
// BlockPool: reservation backend

std::optional<BlockId> BlockPool::ReservationTryAllocate(int32_t slot) {
  MaybeLock lock(&mu_);
  ReservationBooks& r = reservations_[slot];
  if (r.reserved_free == 0) {
    ++num_failed_allocations_;
    return std::nullopt;
  }
  --r.reserved_free;
  ++r.charged_live;
  --total_reserved_free_;
  const BlockId id = TakeFreeLocked(slot);
  NoteAllocatedLocked(1);
  return id;
}

absl::StatusOr<std::vector<BlockId>> BlockPool::ReservationAllocate(
    int32_t slot, int32_t n) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot allocate %d blocks", n));
  }
  std::vector<BlockId> ids;
  ids.reserve(n);
  MaybeLock lock(&mu_);
  ReservationBooks& r = reservations_[slot];
  if (n > r.reserved_free) {
    ++num_failed_allocations_;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "need %d blocks, reservation has %d free (capacity %d, %d charged)", n,
        r.reserved_free, r.capacity, r.charged_live));
  }
  r.reserved_free -= n;
  r.charged_live += n;
  total_reserved_free_ -= n;
  ids.resize(n);
  TakeFreeNLocked(slot, n, ids.data());
  NoteAllocatedLocked(n);
  return ids;
}

absl::Status BlockPool::ReservationResize(int32_t slot, int32_t new_capacity) {
  if (new_capacity < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "reservation capacity must be >= 0, got %d", new_capacity));
  }
  MaybeLock lock(&mu_);
  ReservationBooks& r = reservations_[slot];
  const int32_t delta = new_capacity - r.capacity;
  if (delta > 0 && delta > unreserved_free_locked()) {
    ++num_failed_allocations_;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "resize reservation from %d to %d: need %d blocks, %d free "
        "(%d reserved)",
        r.capacity, new_capacity, delta, num_free_locked(),
        total_reserved_free_));
  }
  if (new_capacity < r.charged_live) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot shrink reservation from %d to %d: %d charged blocks are live",
        r.capacity, new_capacity, r.charged_live));
  }
  r.capacity = new_capacity;
  r.reserved_free += delta;
  total_reserved_free_ += delta;
  return absl::OkStatus();
}

BlockPool::ReservationBooks BlockPool::ReservationSnapshot(int32_t slot) const {
  MaybeLock lock(&mu_);
  return reservations_[slot];
}

void BlockPool::ReservationDestroy(int32_t slot) {
  MaybeLock lock(&mu_);
  ReservationBooks& r = reservations_[slot];
  total_reserved_free_ -= r.reserved_free;
  --num_active_reservations_;
  if (r.charged_live == 0) {
    r = ReservationBooks{};
    free_slots_.push_back(slot);
  } else {
    // Live charged blocks keep the slot until they are freed; they then go
    // to general use (see ReleaseLocked).
    r.state = SlotState::kDetached;
    r.capacity = 0;
    r.reserved_free = 0;
  }
}

// ---------------------------------------------------------------------------
// Reservation

Reservation::Reservation(Reservation&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      slot_(std::exchange(other.slot_, -1)) {}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Reset();
    pool_ = std::exchange(other.pool_, nullptr);
    slot_ = std::exchange(other.slot_, -1);
  }
  return *this;
}

Reservation::~Reservation() { Reset(); }

void Reservation::Reset() {
  if (pool_ == nullptr) return;
  pool_->ReservationDestroy(slot_);
  pool_ = nullptr;
  slot_ = -1;
}

void Reservation::CheckValid() const {
  PKV_CHECK(pool_ != nullptr,
            "use of an invalid (moved-from or default) "
            "Reservation");
}

std::optional<BlockId> Reservation::TryAllocate() {
  CheckValid();
  return pool_->ReservationTryAllocate(slot_);
}

absl::StatusOr<std::vector<BlockId>> Reservation::Allocate(int32_t n) {
  CheckValid();
  return pool_->ReservationAllocate(slot_, n);
}

absl::Status Reservation::Resize(int32_t new_capacity) {
  CheckValid();
  return pool_->ReservationResize(slot_, new_capacity);
}

int32_t Reservation::capacity() const {
  CheckValid();
  return pool_->ReservationSnapshot(slot_).capacity;
}

int32_t Reservation::num_reserved_free() const {
  CheckValid();
  return pool_->ReservationSnapshot(slot_).reserved_free;
}

int32_t Reservation::num_charged() const {
  CheckValid();
  return pool_->ReservationSnapshot(slot_).charged_live;
}

}  // namespace pagedkv
