// allocator/free_list.h
//
// FreeList is an intrusive doubly-linked list of BlockIds over two flat int32
// arrays (prev/next, indexed by block id): no per-block heap objects, and
// PushFront, PushBack, PopFront, PopBack, Remove and Contains are all O(1);
// PopFrontN(n) takes n ids in O(n) with one walk; PushFrontN(ids, n) gives
// n back the same way.
// It only allocates in its constructor and in Grow().
//
// BlockPool keeps every free block (ref_count 0) here and uses it as a LIFO:
// a released block is pushed to the front and the next allocation pops the
// front, so the most recently freed block (warm in cache) is reused first.
//
// Seam for the prefix cache (later): a block whose KV is published in the
// prefix index stays "cached but free" when its last reference goes. Such
// blocks are kept in a FreeList used as an LRU: PushFront when they become
// free, Remove(id) in O(1) on a prefix hit (the block is revived without a
// copy), and PopBack to evict the least recently freed one lazily, only when
// the plain free list is empty. Because membership and links are per-id
// arrays, a block can move between two FreeLists (plain, evictable) in O(1).
//
// Example:
//
//   FreeList list(/*capacity=*/4);      // Empty; ids 0..3 may be pushed.
//   list.PushBack(BlockId(0));
//   list.PushFront(BlockId(2));         // Order: 2, 0.
//   list.Remove(BlockId(0));            // O(1), from anywhere in the list.
//   BlockId id = list.PopFront();       // block#2; list is empty again.
//
// Thread safety: none; the owner (BlockPool) synchronizes.
#ifndef PAGEDKV_ALLOCATOR_FREE_LIST_H_
#define PAGEDKV_ALLOCATOR_FREE_LIST_H_

#include <cstdint>
#include <vector>

#include "allocator/block_id.h"
#include "base/check.h"

namespace pagedkv {

class FreeList {
 public:
  // Creates an empty list that can hold ids 0..capacity-1.
  // REQUIRES: capacity >= 0.
  explicit FreeList(int32_t capacity = 0) { Grow(capacity); }

  // Not copyable or movable: it is embedded in its owner (BlockPool).
  FreeList(const FreeList&) = delete;
  FreeList& operator=(const FreeList&) = delete;

  int32_t capacity() const { return static_cast<int32_t>(next_.size()); }
  int32_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // Returns whether `id` is in the list.
  // REQUIRES: 0 <= id.value() < capacity().
  bool Contains(BlockId id) const {
    CheckRange(id);
    return next_[id.value()] != kNotInList;
  }

  // Returns the first / last id without removing it.
  // REQUIRES: !empty().
  BlockId Front() const {
    PKV_CHECK(size_ > 0, "Front of empty free list");
    return BlockId(head_);
  }
  BlockId Back() const {
    PKV_CHECK(size_ > 0, "Back of empty free list");
    return BlockId(tail_);
  }

  // Inserts `id` at the front (popped next) or at the back.
  // REQUIRES: 0 <= id.value() < capacity() and !Contains(id).
  void PushFront(BlockId id) {
    PKV_CHECK(!Contains(id), "PushFront of block %d already in the free list",
              id.value());
    const int32_t i = id.value();
    prev_[i] = kNil;
    next_[i] = head_;
    if (head_ == kNil) {
      tail_ = i;
    } else {
      prev_[head_] = i;
    }
    head_ = i;
    ++size_;
  }
  void PushBack(BlockId id) {
    PKV_CHECK(!Contains(id), "PushBack of block %d already in the free list",
              id.value());
    const int32_t i = id.value();
    next_[i] = kNil;
    prev_[i] = tail_;
    if (tail_ == kNil) {
      head_ = i;
    } else {
      next_[tail_] = i;
    }
    tail_ = i;
    ++size_;
  }

  // Hints that `id`'s links are about to be written (a batched release
  // prefetches a few blocks ahead). REQUIRES: id in range.
  void Prefetch(int32_t id) const {
    __builtin_prefetch(prev_.data() + id, /*rw=*/1);
    __builtin_prefetch(next_.data() + id, /*rw=*/1);
  }

  // PushFront(ids[0]), ..., PushFront(ids[n - 1]) in one pass (ids[n - 1]
  // ends up first), keeping the head in a register: what a batched release
  // wants.
  // REQUIRES: each id in range, not in the list, and distinct.
  void PushFrontN(const BlockId* ids, int32_t n) {
    int32_t* const prev = prev_.data();
    int32_t* const next = next_.data();
    const uint32_t cap = static_cast<uint32_t>(capacity());
    int32_t head = head_;
    for (int32_t k = 0; k < n; ++k) {
      const int32_t i = ids[k].value();
      PKV_CHECK(static_cast<uint32_t>(i) < cap && next[i] == kNotInList,
                "PushFrontN of block %d (capacity %d): out of range or "
                "already in the free list",
                i, cap);
      prev[i] = kNil;
      next[i] = head;
      if (head == kNil) {
        tail_ = i;
      } else {
        prev[head] = i;
      }
      head = i;
    }
    head_ = head;
    size_ += n;
  }

  // Removes and returns the first / last id.
  // REQUIRES: !empty().
  BlockId PopFront() {
    PKV_CHECK(size_ > 0, "PopFront of empty free list");
    const BlockId id(head_);
    Unlink(head_);
    return id;
  }
  BlockId PopBack() {
    PKV_CHECK(size_ > 0, "PopBack of empty free list");
    const BlockId id(tail_);
    Unlink(tail_);
    return id;
  }

  // Removes the first n ids and writes them to out[0 .. n) in the order n
  // PopFront() calls would return them; one walk of the links, no per-id
  // unlinking of neighbours (what a batched allocation wants).
  // REQUIRES: 0 <= n <= size(); out has room for n ids.
  void PopFrontN(int32_t n, BlockId* out) {
    PKV_CHECK(n >= 0 && n <= size_, "PopFrontN(%d) of a free list of %d", n,
              size_);
    int32_t i = head_;
    for (int32_t k = 0; k < n; ++k) {
      out[k] = BlockId(i);
      const int32_t next = next_[i];
      prev_[i] = kNotInList;
      next_[i] = kNotInList;
      i = next;
    }
    head_ = i;
    if (i == kNil) {
      tail_ = kNil;
    } else {
      prev_[i] = kNil;
    }
    size_ -= n;
  }

  // Removes `id` from wherever it is in the list.
  // REQUIRES: Contains(id).
  void Remove(BlockId id) {
    PKV_CHECK(Contains(id), "Remove of block %d not in the free list",
              id.value());
    Unlink(id.value());
  }

  // Makes room for ids capacity()..new_capacity-1, none of them in the list.
  // REQUIRES: new_capacity >= capacity().
  void Grow(int32_t new_capacity) {
    PKV_CHECK(new_capacity >= capacity(),
              "FreeList cannot shrink from %d to %d", capacity(), new_capacity);
    prev_.resize(new_capacity, kNotInList);
    next_.resize(new_capacity, kNotInList);
  }

  // Drops ids new_capacity..capacity()-1 (the undo of a Grow).
  // REQUIRES: 0 <= new_capacity <= capacity(); none of those ids in the list.
  void Shrink(int32_t new_capacity) {
    PKV_CHECK(new_capacity >= 0 && new_capacity <= capacity(),
              "FreeList cannot shrink from %d to %d", capacity(), new_capacity);
    for (int32_t i = new_capacity; i < capacity(); ++i) {
      PKV_CHECK(next_[i] == kNotInList, "Shrink drops block %d, still listed",
                i);
    }
    prev_.resize(new_capacity);
    next_.resize(new_capacity);
  }

  // The ids from back to front (the order PopBack takes them). O(size);
  // for tests and debugging.
  std::vector<BlockId> BackToFront() const {
    std::vector<BlockId> ids;
    ids.reserve(size_);
    for (int32_t i = tail_; i != kNil; i = prev_[i]) ids.push_back(BlockId(i));
    return ids;
  }

  // Aborts unless the invariants listed below hold. O(capacity).
  void CheckInvariants() const {
    PKV_CHECK(prev_.size() == next_.size(), "prev %d != next %d entries",
              prev_.size(), next_.size());
    int32_t count = 0;
    int32_t prev = kNil;
    for (int32_t i = head_; i != kNil; i = next_[i]) {
      PKV_CHECK(i >= 0 && i < capacity(), "link to %d out of [0, %d)", i,
                capacity());
      PKV_CHECK(prev_[i] == prev, "block %d: prev %d, expected %d", i, prev_[i],
                prev);
      PKV_CHECK(++count <= size_, "more than size %d blocks linked (cycle?)",
                size_);
      prev = i;
    }
    PKV_CHECK(prev == tail_, "tail %d, but the last linked block is %d", tail_,
              prev);
    PKV_CHECK(count == size_, "%d blocks linked, size %d", count, size_);
    int32_t marked = 0;
    for (int32_t i = 0; i < capacity(); ++i) {
      if (next_[i] != kNotInList) ++marked;
    }
    PKV_CHECK(marked == size_, "%d blocks marked in the list, size %d", marked,
              size_);
  }

 private:
  static constexpr int32_t kNil = -1;        // End of the list.
  static constexpr int32_t kNotInList = -2;  // next_[i] of an absent id.

  void CheckRange(BlockId id) const {
    PKV_CHECK(
        static_cast<uint32_t>(id.value()) < static_cast<uint32_t>(capacity()),
        "block %d out of range [0, %d)", id.value(), capacity());
  }

  void Unlink(int32_t i) {
    const int32_t prev = prev_[i];
    const int32_t next = next_[i];
    if (prev == kNil) {
      head_ = next;
    } else {
      next_[prev] = next;
    }
    if (next == kNil) {
      tail_ = prev;
    } else {
      prev_[next] = prev;
    }
    prev_[i] = kNotInList;
    next_[i] = kNotInList;
    --size_;
  }

  // Invariants (checked by CheckInvariants()):
  //  - id i is in the list exactly when next_[i] != kNotInList; then prev_[i]
  //    and next_[i] are list neighbours or kNil;
  //  - walking next_ from head_ visits size_ distinct ids, each with prev_
  //    pointing back, and ends at tail_; head_ == tail_ == kNil iff empty.
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  int32_t head_ = kNil;
  int32_t tail_ = kNil;
  int32_t size_ = 0;
};

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_FREE_LIST_H_
