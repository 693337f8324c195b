// allocator/prefix/prefix_index.h
//
// PrefixIndex is the book of the prefix cache: which blocks hold the KV of
// which token prefix, as a tree of blocks (a block's parent holds the
// tokens before it), and in which order free cached blocks are evicted. It
// lives inside a BlockPool, under the pool's lock, and is reached through
// the pool's prefix methods (block_pool.h); it never touches KV bytes.
//
// An entry is published for a full block whose KV its writer committed:
// (hash, parent block, token ids, extra keys). The hash map from hash to
// block finds a candidate; Find() then compares the stored tokens, extra
// keys and parent, so a hash collision is a miss. A block's parent is the
// block of the previous chain position that was matched or published with
// it, so a chain of verified entries is a verified prefix: equal tokens
// from the first block on.
//
// Eviction order: a published block whose last reference goes stays cached
// and enters `evictable` (an intrusive LRU over block ids, FreeList, at the
// front); the pool takes evictable blocks from the back, only when no
// uncached free block is left. Sequences release tail first, so children
// enter before their parents and the back is a leaf; when it is not (a
// table released head first), RemoveSubtree takes the descendants out of
// the index with it, so no entry is left unreachable-but-counted.
//
// Example (what BlockPool does with it, under its lock):
//
//   PrefixIndex index(/*num_blocks=*/8, /*block_tokens=*/2);
//   const int32_t tokens[2] = {5, 6};
//   BlockHash h = Xxh3BlockHasher().Hash(kRootBlockHash, tokens, {});
//   index.TryInsert(/*block=*/3, h, /*parent=*/-1, tokens, {});  // -1: in.
//   int32_t hit = index.Find(h, /*parent=*/-1, tokens, {});  // 3
//   index.RemoveSubtree(3, /*evicted=*/true, [](int32_t) {});
//
// Thread safety: none; the owning BlockPool's lock guards it.
#ifndef PAGEDKV_ALLOCATOR_PREFIX_PREFIX_INDEX_H_
#define PAGEDKV_ALLOCATOR_PREFIX_PREFIX_INDEX_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "allocator/free_list.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "base/check.h"

namespace pagedkv {

// Counters of a pool's prefix index (BlockPool::prefix_stats()).
struct PrefixIndexStats {
  int32_t cached_blocks = 0;     // Published now (free or in use).
  int32_t evictable_blocks = 0;  // Published and free.
  int64_t stored_blocks = 0;     // Lifetime: entries published.
  int64_t evicted_blocks = 0;    // Taken from the LRU for an allocation.
  int64_t dropped_blocks = 0;    // Removed with an evicted or unpublished
                                 // ancestor, by truncation or a reset.
  int64_t events_dropped = 0;    // Not queued: the queue was full.
  uint64_t epoch = 0;            // ResetPrefixCache() calls so far.
};

class PrefixIndex {
 public:
  // max_pending_events: events queued until TakeEvents(); 0 records none.
  // REQUIRES: num_blocks >= 0, block_tokens > 0, max_pending_events >= 0.
  PrefixIndex(int32_t num_blocks, int32_t block_tokens,
              int32_t max_pending_events = 0);

  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  int32_t block_tokens() const { return block_tokens_; }
  int32_t num_blocks() const { return static_cast<int32_t>(hash_.size()); }

  bool is_published(int32_t block) const { return published_[block] != 0; }
  BlockHash hash(int32_t block) const { return hash_[block]; }
  int32_t parent(int32_t block) const { return parent_[block]; }
  int32_t group(int32_t block) const { return group_[block]; }
  const BlockExtraKeys& extra_keys(int32_t block) const {
    return extra_[block];
  }
  // The stored token ids of a published block.
  absl::Span<const int32_t> tokens(int32_t block) const {
    return absl::MakeConstSpan(tokens_.data() + int64_t{block} * block_tokens_,
                               block_tokens_);
  }

  // The published block for chain position (hash, parent) of layer group
  // `group` with exactly these tokens and keys, or -1. parent is -1 for a
  // chain's first block. Without layer groups every entry is group 0; with
  // them a group's entry for block i is a child of the anchor group's
  // block i (cache/serving/grouped_sequences.h), and the group number keeps
  // it from passing for the anchor's next block of equal tokens.
  int32_t Find(BlockHash hash, int32_t parent, absl::Span<const int32_t> tokens,
               const BlockExtraKeys& keys, int32_t group = 0) const {
    const int32_t b = FindHash(hash);
    if (b == -1) return -1;
    if (parent_[b] != parent || group_[b] != group || extra_[b] != keys) {
      return -1;
    }
    if (std::memcmp(tokens_.data() + int64_t{b} * block_tokens_, tokens.data(),
                    sizeof(int32_t) * block_tokens_) != 0) {
      return -1;
    }
    return b;
  }
  // The block indexed under `hash`, verified or not, or -1.
  int32_t FindHash(BlockHash hash) const {
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return -1;
    const int32_t b = it->second;
    // A stale entry (its block left the index, see by_hash_) is no entry.
    return published_[b] && hash_[b] == hash ? b : -1;
  }

  // Publishes `block` of layer group `group` under `hash` as the child of
  // `parent` (-1: a first block) and queues it in the open BlockStored
  // event (a new one when the group changes); returns -1. When a
  // published block is indexed under `hash` already, returns that block
  // (`block` itself, or another one, verified or not) and changes nothing.
  // One probe of the hash map (a FindHash before an insert would take two).
  // REQUIRES: block not published unless under `hash`, parent -1 or
  // published, tokens.size() == block_tokens(), group >= 0.
  int32_t TryInsert(int32_t block, BlockHash hash, int32_t parent,
                    absl::Span<const int32_t> tokens,
                    const BlockExtraKeys& keys, int32_t group = 0);

  // `to` takes the place of published block `from`: same hash and entry,
  // `from`'s children become `to`'s, and `from` leaves the index (no event:
  // the hashes a router sees do not change).
  // REQUIRES: from published, to not published, both free of the LRU.
  void Transplant(int32_t from, int32_t to);

  // Takes `block` and every published descendant out of the index, calling
  // on_removed(b) for each (block last). Queues their hashes in the open
  // BlockRemoved event. `evicted` says which counter the block itself goes
  // to (evicted_blocks or dropped_blocks); descendants are dropped.
  // REQUIRES: is_published(block).
  template <typename OnRemoved>
  void RemoveSubtree(int32_t block, bool evicted, OnRemoved&& on_removed);

  // Takes every entry out (ResetPrefixCache), calling on_removed(b) for each;
  // queues AllBlocksCleared and starts a new epoch.
  template <typename OnRemoved>
  void Clear(OnRemoved&& on_removed);

  // Closes the open BlockStored / BlockRemoved events: the next Insert or
  // removal starts a new one. The pool calls it at the end of each call.
  void CloseEvents() {
    open_stored_ = -1;
    open_removed_ = -1;
  }
  std::vector<PrefixEvent> TakeEvents();

  // Published free blocks; front = most recently freed.
  FreeList& evictable() { return evictable_; }
  const FreeList& evictable() const { return evictable_; }

  // Makes room for blocks num_blocks()..new_num_blocks-1 (BlockPool::Grow).
  void Grow(int32_t new_num_blocks);

  PrefixIndexStats stats() const;
  uint64_t epoch() const { return epoch_; }

  // Relaxes the invariant that an in-use entry's parent is in use (see
  // the invariants below). One way; for window-anchored layer groups.
  // Every owner of one index describes its blocks alike
  // (BlockPool::PrefixCacheOptions::content), so on an index one owner
  // relaxes, all are window-anchored.
  void AllowInUseUnderFreeParents() { in_use_under_free_ = true; }
  bool in_use_under_free_parents() const { return in_use_under_free_; }

  // Aborts unless the invariants below hold; ref_counts are the pool's,
  // copy_holds how many of them pending copies hold as a copy's source
  // (empty: none).
  void CheckInvariants(absl::Span<const int32_t> ref_counts,
                       absl::Span<const int32_t> copy_holds = {}) const;

 private:
  void Unlink(int32_t block);  // From its parent's child list.
  // A block left the index; its by_hash_ entry stays behind, stale. Sweeps
  // the stale entries out when there are too many.
  void NoteStaleEntry() {
    if (by_hash_.size() - static_cast<size_t>(num_published_) >
        static_cast<size_t>(std::max(2 * num_blocks(), kMinStale))) {
      SweepStale();
    }
  }
  void SweepStale();
  static constexpr int32_t kMinStale = 1024;
  PrefixEvent* OpenEvent(PrefixEvent::Kind kind, int32_t* open);

  const int32_t block_tokens_;
  const int32_t max_pending_events_;

  // Invariants (CheckInvariants):
  //  - by_hash_ maps hash_[b] -> b for every published block b; its other
  //    entries are stale (their block left the index or holds another
  //    hash now) and number at most max(2 num_blocks, kMinStale) (removal
  //    leaves them, so it costs no hash-map erase; Insert overwrites them
  //    and a sweep drops them all when there are too many: O(1) amortized);
  //  - a published block's parent_ is -1 or a published block, and b is in
  //    that parent's child list (first_child_/next_sibling_/prev_sibling_)
  //    exactly once; unpublished blocks have no links and no children;
  //  - evictable_ holds exactly the published blocks with ref_count 0;
  //  - a published block in use has a parent in use (a sequence holds the
  //    whole prefix of every block it holds), unless only pending copies
  //    hold it (as their source: its holders let go before the caller ran
  //    the copy), or unless
  //    AllowInUseUnderFreeParents() was called (a layer-grouped manager
  //    whose anchor is a window group releases its chain's head while the
  //    tail runs: evicting the head then unpublishes the tail, which its
  //    holders keep);
  //  - num_published_ + stale entries == by_hash_.size().
  std::vector<uint8_t> published_;
  std::vector<BlockHash> hash_;
  std::vector<int32_t> parent_;
  std::vector<BlockExtraKeys> extra_;
  std::vector<int32_t> group_;   // Layer group (0 without groups).
  std::vector<int32_t> tokens_;  // block_tokens_ per block.
  std::vector<int32_t> first_child_;
  std::vector<int32_t> next_sibling_;
  std::vector<int32_t> prev_sibling_;
  absl::flat_hash_map<BlockHash, int32_t> by_hash_;
  FreeList evictable_;
  int32_t num_published_ = 0;
  bool in_use_under_free_ = false;

  std::vector<PrefixEvent> events_;
  int32_t open_stored_ = -1;  // Index in events_ of the event being built.
  int32_t open_removed_ = -1;
  uint64_t next_event_ = 1;

  int64_t stored_blocks_ = 0;
  int64_t evicted_blocks_ = 0;
  int64_t dropped_blocks_ = 0;
  int64_t events_dropped_ = 0;
  uint64_t epoch_ = 0;
  std::vector<int32_t> scratch_;  // RemoveSubtree's stack and order.
  std::vector<int32_t> order_;
};

// ---------------------------------------------------------------------------
// Templates

template <typename OnRemoved>
void PrefixIndex::RemoveSubtree(int32_t block, bool evicted,
                                OnRemoved&& on_removed) {
  PKV_CHECK(is_published(block), "RemoveSubtree of unpublished block %d",
            block);
  Unlink(block);
  PrefixEvent* removed =
      OpenEvent(PrefixEvent::Kind::kBlockRemoved, &open_removed_);
  if (first_child_[block] == -1) {  // A leaf: eviction's common case.
    if (removed != nullptr) removed->block_hashes.push_back(hash_[block]);
    published_[block] = 0;
    parent_[block] = -1;
    --num_published_;
    NoteStaleEntry();
    ++(evicted ? evicted_blocks_ : dropped_blocks_);
    on_removed(block);
    return;
  }
  // Depth first; children before their parent so on_removed sees leaves
  // first.
  scratch_.clear();
  scratch_.push_back(block);
  std::vector<int32_t>& order = order_;
  order.clear();
  while (!scratch_.empty()) {
    const int32_t b = scratch_.back();
    scratch_.pop_back();
    order.push_back(b);
    for (int32_t c = first_child_[b]; c != -1; c = next_sibling_[c]) {
      scratch_.push_back(c);
    }
  }
  for (size_t k = order.size(); k-- > 0;) {
    const int32_t b = order[k];
    if (removed != nullptr) removed->block_hashes.push_back(hash_[b]);
    published_[b] = 0;
    first_child_[b] = next_sibling_[b] = prev_sibling_[b] = -1;
    parent_[b] = -1;
    --num_published_;
    NoteStaleEntry();
    if (b == block && evicted) {
      ++evicted_blocks_;
    } else {
      ++dropped_blocks_;
    }
    on_removed(b);
  }
}

template <typename OnRemoved>
void PrefixIndex::Clear(OnRemoved&& on_removed) {
  for (int32_t b = 0; b < num_blocks(); ++b) {
    if (!published_[b]) continue;
    published_[b] = 0;
    first_child_[b] = next_sibling_[b] = prev_sibling_[b] = -1;
    parent_[b] = -1;
    --num_published_;
    ++dropped_blocks_;
    on_removed(b);
  }
  by_hash_.clear();
  CloseEvents();
  OpenEvent(PrefixEvent::Kind::kAllBlocksCleared, &open_removed_);
  CloseEvents();
  ++epoch_;
}

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_PREFIX_PREFIX_INDEX_H_
