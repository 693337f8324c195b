// allocator/block_pool.h
//
// BlockPool keeps the books for a set of equal KV-cache blocks: which blocks
// are free, how many references each live block has, and which free blocks
// are set aside for Reservations. It never touches block memory; a cache maps
// a BlockId to bytes. Keeping bytes out makes the pool testable without
// memory and lets one pool serve host and device tensors alike.
//
// Blocks are shared by reference counting (forked sequences, beam search,
// prefix hits) and return to the free list when the last reference goes.
// All state lives in flat per-block arrays (refcounts, owners, free-list
// links); there are no per-block heap objects.
//
// Reservations. A Reservation (below) sets `capacity` free blocks aside for
// one owner, e.g. a static KV cache that must never fail an update later.
// Reserved blocks are a *count*, not particular ids: the free list stays
// fungible, and unreserved allocation may take a free block only while
// num_free_blocks() - num_reserved_blocks() > 0. A block allocated through a
// Reservation is *charged* to it; when its last reference goes (whoever
// drops it), it returns to that reservation's reserved set, not to general
// use. Per reservation R:
//     reserved_free(R) + charged_live(R) == capacity(R)
// so an owner that never holds more than capacity(R) distinct blocks can
// never fail to allocate through R, however greedy other users are.
// Destroying a Reservation un-reserves its free part; its live charged
// blocks become ordinary and go to general use when freed.
//
// Example:
//
//   BlockPool::Options options;
//   options.num_blocks = 4096;
//   absl::StatusOr<std::unique_ptr<BlockPool>> pool =
//       BlockPool::Create(options);
//   if (!pool.ok()) return pool.status();
//   std::optional<BlockId> id = (*pool)->TryAllocate();  // ref_count 1.
//   if (!id.has_value()) { /* Preempt a sequence, then retry. */ }
//   (*pool)->AddRef(*id);                                 // A fork shares it.
//   (*pool)->Release(*id);
//   (*pool)->Release(*id);                                // Free again.
//
//   absl::StatusOr<Reservation> r = (*pool)->Reserve(64);  // Static cache.
//   if (!r.ok()) return r.status();                        // Nothing taken.
//   std::optional<BlockId> mine = r->TryAllocate();        // Never nullopt
//                                                          // while charged <
//                                                          // capacity.
//   (*pool)->Release(*mine);                               // Back to r.
//
// Prefix cache (EnablePrefixCache). Full blocks whose KV is committed can
// be published under a chained hash (allocator/prefix/). A published block
// whose last reference goes stays *cached*: free (counted in
// num_free_blocks(), takeable by any allocation) but kept in an LRU, and
// taken, evicting its entry, only when no uncached free block is left.
// PinPrefix looks a chain up and takes references on the verified hits in
// one lock, so no allocation in between can evict them.
//
// Thread safety: chosen at creation. PoolConcurrency::kShared makes every
// public method of BlockPool and Reservation take one internal absl::Mutex
// (short critical sections, O(blocks touched); the pool holds no bytes so no
// copy ever happens under it), so several caches on several threads may share
// the pool. kSingleThread takes no lock; the owner synchronizes. A given
// Reservation handle is used by one thread at a time either way.
#ifndef PAGEDKV_ALLOCATOR_BLOCK_POOL_H_
#define PAGEDKV_ALLOCATOR_BLOCK_POOL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/free_list.h"
#include "allocator/pool_stats.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "allocator/prefix/prefix_index.h"
#include "base/check.h"
#include "base/maybe_lock.h"

namespace pagedkv {

class Reservation;
namespace internal {
struct CopyOnWriteBooks;  // allocator/copy_on_write.cc
}  // namespace internal

enum class PoolConcurrency {
  kSingleThread,  // No locking; one thread (or external sync) uses the pool.
  kShared,        // Every public method takes the pool's internal mutex.
};

class BlockPool {
 public:
  struct Options {
    int32_t num_blocks = 0;  // Must be > 0.
    PoolConcurrency concurrency = PoolConcurrency::kSingleThread;
  };

  // Returns a pool whose blocks 0..num_blocks-1 are all free, or
  // INVALID_ARGUMENT unless options.num_blocks > 0.
  static absl::StatusOr<std::unique_ptr<BlockPool>> Create(Options options);

  // Not copyable or movable: it owns a mutex, and tables and reservations
  // point at it. Own it through the unique_ptr from Create().
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // REQUIRES: no Reservation of this pool is alive (they point here).
  ~BlockPool();

  // Takes an unreserved free block and gives the caller its only reference.
  // Returns nullopt when none is left: under load that is an expected
  // outcome (the scheduler preempts), not an error, so it costs no Status.
  std::optional<BlockId> TryAllocate();

  // Takes n unreserved free blocks, each with ref_count 1, all or nothing.
  // Returns an empty vector for n == 0, INVALID_ARGUMENT for n < 0, and
  // RESOURCE_EXHAUSTED ("need n blocks, f free (r reserved)") with nothing
  // taken when fewer than n unreserved blocks are free.
  absl::StatusOr<std::vector<BlockId>> Allocate(int32_t n);

  // Adds a reference to a block in use (one lock for all in AddRefs).
  // REQUIRES: ref_count(id) > 0 for each id; ids in range.
  void AddRef(BlockId id);
  void AddRefs(absl::Span<const BlockId> ids);

  // AddRefs for a pending copy of the blocks' bytes out of the pool (a
  // books-only store list, pending_remote_stores.h): each reference counts
  // as a copy source's hold, as PendingCopies' do, so the blocks' holders
  // may let go first (a pinned published block then has a free parent,
  // which CheckInvariants allows for copy sources only).
  // ReleaseCopyHoldsTailFirst drops them, last id first.
  // REQUIRES: as AddRefs; ReleaseCopyHoldsTailFirst only of ids held so.
  void AddCopyHolds(absl::Span<const BlockId> ids);
  void ReleaseCopyHoldsTailFirst(absl::Span<const BlockId> ids);

  // Drops one reference; the block is free once none remain (and, if it is
  // charged to a reservation, is set aside for it again).
  // REQUIRES: ref_count(id) > 0 for each id (an id may appear in `ids` as
  // many times as the caller holds references). A violation aborts: a double
  // release would let two sequences write the same block.
  void Release(BlockId id);
  void ReleaseAll(absl::Span<const BlockId> ids);
  // ReleaseAll of `ids` back to front (ids.back() first), without reversing
  // them: a table released tail first leaves its first block at the front
  // of the free list (handed out next) and its tail deepest.
  void ReleaseAllTailFirst(absl::Span<const BlockId> ids);

  // Appends free blocks num_blocks()..num_blocks()+extra_blocks-1 (a
  // standalone cache grows its private pool). Existing ids stay valid.
  // Returns INVALID_ARGUMENT if extra_blocks <= 0 or the total would exceed
  // INT32_MAX; then nothing changes.
  absl::Status Grow(int32_t extra_blocks);

  // Undoes a Grow: drops blocks new_num_blocks..num_blocks()-1. Returns
  // FAILED_PRECONDITION (nothing changed) unless every one of them is free
  // and the free blocks left still cover every reservation's set-aside
  // count; INVALID_ARGUMENT unless 0 < new_num_blocks <= num_blocks().
  absl::Status Shrink(int32_t new_num_blocks);

  // Sets n unreserved free blocks aside for one owner (see the file comment).
  // n == 0 gives an empty reservation that Resize() can grow. Returns
  // INVALID_ARGUMENT for n < 0, and RESOURCE_EXHAUSTED ("need n blocks, f
  // free (r reserved)") with nothing changed when fewer are available.
  // REQUIRES: the reservation is destroyed before the pool.
  absl::StatusOr<Reservation> Reserve(int32_t n);

  // --- Prefix cache ---------------------------------------------------

  struct PrefixCacheOptions {
    int32_t block_tokens = 0;  // Tokens per block; > 0.
    // Events kept until TakePrefixEvents(); 0 records none. Past it new
    // events are dropped and counted (their numbers still advance).
    int32_t max_pending_events = 0;
    // What a cached block's bytes mean, as the owner describes it (a
    // manager: its model layout and layer groups). The index matches
    // tokens, not meanings, so owners that describe their blocks
    // differently must not share one: a hit would hand one owner's layer
    // KV to the other.
    std::string content;
  };
  // Turns the prefix index on. Idempotent for equal options (managers
  // sharing a pool each call it); FAILED_PRECONDITION if it is on with
  // other options (another content: different blocks under equal keys),
  // INVALID_ARGUMENT for bad ones.
  absl::Status EnablePrefixCache(const PrefixCacheOptions& options);
  bool prefix_cache_enabled() const;

  // A chain of full blocks: hashes[i] keys the block of tokens
  // [i * block_tokens, (i + 1) * block_tokens) with extra keys keys[i].
  struct PrefixChain {
    absl::Span<const BlockHash> hashes;
    absl::Span<const int32_t> tokens;  // hashes.size() * block_tokens.
    absl::Span<const BlockExtraKeys> keys;
    int32_t group = 0;  // Layer group of every block (0 without groups).
  };
  struct PrefixMatch {
    int32_t blocks = 0;   // Verified hits, from the chain's start.
    int32_t revived = 0;  // Of them, cached free blocks (each takes a free
                          // block from the counts when pinned).
  };
  // Counts the verified cached prefix of `chain`; changes nothing.
  // REQUIRES: prefix_cache_enabled(); chain well formed.
  PrefixMatch MatchPrefix(const PrefixChain& chain) const;
  // The verified cached prefix's length, free blocks included however many
  // there are (MatchPrefix stops where reviving one more would need a
  // reserved block): for a chain whose blocks are not all pinned, such as
  // a window anchor's head below its window. REQUIRES as MatchPrefix.
  int32_t CachedPrefixLength(const PrefixChain& chain) const;
  // Looks `chain` up and takes one reference on each verified hit in one
  // lock, appending the blocks to *out. A hit on a free cached block
  // revives it only while an unreserved free block is left (else the match
  // stops there). REQUIRES as MatchPrefix.
  PrefixMatch PinPrefix(const PrefixChain& chain, std::vector<BlockId>* out);

  // A block of Publish's `blocks` found already cached by another block
  // `cached`: Publish added a reference to `cached` for the caller, who
  // puts it in the table in place of blocks[index] and releases that.
  struct PrefixSwitch {
    int32_t index = 0;
    BlockId cached;
  };
  // Publishes blocks[i] as chain block i, the child of `parent` (an invalid
  // id: chain block 0 is a sequence's first block). For each block, in
  // order: an equal cached entry that is in use is switched to (appended to
  // *switches); one that is free gives its entry, children included, to
  // blocks[i]; a hash held by other tokens (a collision) stops the chain,
  // and so does an equal entry in use when blocks[i] has another holder
  // too (a fork's table, which would keep blocks[i] below our next blocks).
  // Returns how many blocks were done (published, already published, or
  // switched); the caller retries none of the rest.
  // Returns 0 if `parent` is valid but not published (nothing to chain to).
  // REQUIRES: prefix_cache_enabled(); each blocks[i] in use;
  // chain.hashes.size() == blocks.size().
  int32_t Publish(absl::Span<const BlockId> blocks, BlockId parent,
                  const PrefixChain& chain,
                  std::vector<PrefixSwitch>* switches);
  // Layer groups (cache/serving/grouped_sequences.h). The anchor group (a
  // full one) publishes chains as above; every other group g publishes its
  // block i as a leaf child of the anchor's block i, keyed by
  // hashes[i] (GroupChainParent in block_hash.h), with the anchor's tokens
  // and keys: so a group entry is verified by the anchor chain that leads
  // to its parent, and a group's block in use has its parent in use (the
  // same sequence holds the anchor's block i).
  //
  // When no group is full, the anchor is a window group: its chain is
  // verified from the root through cached entries that may be free (its
  // head was released), and only its window is pinned. The pool must then
  // allow in-use entries under free parents (AllowInUseUnderFreeParents):
  // evicting a free head unpublishes the in-use tail below it, which its
  // holders keep.
  struct PrefixGroup {
    int32_t group = 0;   // != the anchor's.
    int32_t window = 0;  // Tokens a query reads back; 0: a full group.
    absl::Span<const BlockHash> hashes;  // One per anchor chain block.
    // Blocks below `first` are not wanted (a swapped-in window group's
    // holes): the hit neither needs nor pins them.
    int64_t first = 0;
  };
  // The longest hit of L anchor blocks (L <= anchor.hashes.size()) at which
  // every group holds the blocks the next token reads: a full group all of
  // [first, L), a window group [max(first, WindowFirstNeededBlock(L * bt,
  // window)), L); the anchor's window is anchor_window (0: full), its
  // first anchor_first (its chain is verified from the root all the same).
  // `revived` counts the free cached blocks among them. Changes nothing.
  // REQUIRES: prefix_cache_enabled(); chains well formed; firsts >= 0.
  PrefixMatch MatchGroupedPrefix(const PrefixChain& anchor,
                                 int32_t anchor_window,
                                 absl::Span<const PrefixGroup> groups,
                                 int64_t anchor_first = 0) const;
  // MatchGroupedPrefix, taking one reference on every block of the hit in
  // one lock, appended to *out: the anchor's blocks from its first needed
  // one to L - 1, then group by group the same. Revives free cached blocks
  // only while an unreserved free block is left for each (else the hit is
  // shorter).
  PrefixMatch PinGroupedPrefix(const PrefixChain& anchor, int32_t anchor_window,
                               absl::Span<const PrefixGroup> groups,
                               std::vector<BlockId>* out,
                               int64_t anchor_first = 0);
  // See PrefixGroup. One way; idempotent.
  void AllowInUseUnderFreeParents();
  // Publishes blocks[i] (an invalid id: a hole, skipped) as `group`'s entry
  // under anchors[i] (an invalid id: a released anchor block, skipped),
  // with anchors[i]'s tokens and keys, for i in order, stopping at the
  // first anchor that is not published (returned: how many were done). An
  // equal entry in use is switched to (*switches, as Publish); a free one
  // gives its entry to blocks[i]; an entry already
  // under another block or a collision leaves blocks[i] unpublished.
  // REQUIRES: prefix_cache_enabled(); anchors.size() == blocks.size() ==
  // hashes.size(); live blocks in use; group != the group the anchors
  // were published in.
  int32_t PublishGroupBlocks(absl::Span<const BlockId> anchors,
                             absl::Span<const BlockId> blocks, int32_t group,
                             absl::Span<const BlockHash> hashes,
                             std::vector<PrefixSwitch>* switches);
  // Whether `id` is published (matchable).
  bool is_cached(BlockId id) const;
  // ref_count(id) > 1 || is_cached(id) in one call: whether a write into
  // `id` must copy it (copy_on_write.h), for a grouped step's per-group
  // tail check.
  bool SharedOrCached(BlockId id) const;
  // Whether `id` is cached as layer group `group`'s entry keyed `hash`,
  // with these tokens and extra keys, under `parent` (an invalid id: a
  // chain's first block; std::nullopt: any parent). For the managers'
  // CheckInvariants: a block a sequence published holds what the entry
  // says.
  bool IsCachedAs(BlockId id, int32_t group, std::optional<BlockId> parent,
                  BlockHash hash, absl::Span<const int32_t> tokens,
                  const BlockExtraKeys& keys) const;
  // Takes a published block and its published descendants out of the index
  // (their holders keep the bytes; free ones become plain free blocks), for
  // a holder that must stop it being matched. (The managers never write
  // into a published block: copy-on-write copies it, copy_on_write.h.)
  // REQUIRES: is_cached(id).
  void Unpublish(BlockId id);
  // Takes every entry out; queues AllBlocksCleared; starts a new epoch
  // (prefix_stats().epoch), so holders know their published blocks are not.
  void ResetPrefixCache();
  std::vector<PrefixEvent> TakePrefixEvents();
  PrefixIndexStats prefix_stats() const;
  uint64_t prefix_epoch() const;  // prefix_stats().epoch, cheaper.
  // The cached free blocks, the next one evicted first (empty without a
  // prefix cache). O(evictable blocks); for tests and debugging.
  std::vector<BlockId> EvictionOrder() const;

  // REQUIRES: 0 <= id.value() < num_blocks().
  int32_t ref_count(BlockId id) const;
  int32_t num_blocks() const;
  // Every block with ref_count 0, reserved or not.
  int32_t num_free_blocks() const;
  // Free blocks set aside for reservations: the sum of their reserved_free.
  int32_t num_reserved_blocks() const;
  // num_free_blocks() - num_reserved_blocks(): what TryAllocate may take.
  int32_t num_unreserved_free_blocks() const;
  int32_t num_used_blocks() const;
  PoolStats stats() const;
  PoolConcurrency concurrency() const { return concurrency_; }

  // Aborts unless every invariant listed with the members holds.
  // O(num_blocks): for tests and debug builds, never for the serving path.
  void CheckInvariants() const;

 private:
  friend class Reservation;
  // PrepareWrite's one-lock transaction over refcounts and reservations.
  friend struct internal::CopyOnWriteBooks;

  // Reservation slot states. kDetached: the handle is gone but blocks charged
  // to it are still live; the slot is reused once the last of them is freed.
  enum class SlotState : uint8_t { kFree, kActive, kDetached };

  struct ReservationBooks {
    SlotState state = SlotState::kFree;
    int32_t capacity = 0;
    int32_t reserved_free = 0;  // Free blocks set aside for this owner.
    int32_t charged_live = 0;   // #{b : owner_[b] == this slot}.
  };

  explicit BlockPool(Options options);

  // Helpers; the caller holds mu_ (a MaybeLock scope).
  // Inline: it runs once per block of every allocation and release.
  void CheckId(BlockId id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    PKV_CHECK(static_cast<uint32_t>(id.value()) <
                  static_cast<uint32_t>(ref_counts_.size()),
              "block %d out of range [0, %d)", id.value(), ref_counts_.size());
  }
  int32_t num_blocks_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int32_t>(ref_counts_.size());
  }
  // Free blocks: plain ones and cached (evictable) ones.
  int32_t num_free_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return free_list_.size() +
           (prefix_ != nullptr ? prefix_->evictable().size() : 0);
  }
  int32_t unreserved_free_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return num_free_locked() - total_reserved_free_;
  }
  // Takes the LRU's oldest cached free block out of the index (with its
  // cached descendants, which become plain free blocks) and returns it,
  // still free. The caller closes the index's events after its batch.
  // REQUIRES: a cached free block exists.
  BlockId EvictOneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unpublished block `b` left the index: a free one moves from the LRU to
  // the plain free list.
  void OnUnpublishedLocked(int32_t b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a reference on cached block b for a hit (reviving it from the
  // LRU if free) and appends it to *pin.
  void PinCachedLocked(int32_t b, std::vector<BlockId>* pin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Publish found an equal cached entry `found` for block b (publication
  // index `index`): switches to it if in use (a reference for the caller,
  // in *switches; returns false), else b takes over its entry (Transplant;
  // returns true).
  bool TakeEqualEntryLocked(int32_t found, int32_t b, int32_t index,
                            std::vector<PrefixSwitch>* switches)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  PrefixMatch MatchGroupedLocked(const PrefixChain& anchor,
                                 int32_t anchor_window,
                                 absl::Span<const PrefixGroup> groups,
                                 int64_t anchor_first,
                                 std::vector<BlockId>* pin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // budget: stop where reviving one more free block would need a reserved
  // one (MatchPrefix, PinPrefix); else count the whole verified chain
  // (CachedPrefixLength; REQUIRES pin == nullptr).
  PrefixMatch MatchLocked(const PrefixChain& chain, std::vector<BlockId>* pin,
                          bool budget = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a write into block b must copy it: other holders than `holds`
  // of the writer's own references, or published (the entry's bytes).
  bool WriteCopiesLocked(int32_t b, int32_t holds) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return ref_counts_[b] - holds > 1 ||
           (prefix_ != nullptr && prefix_->is_published(b));
  }
  void CheckChain(const PrefixChain& chain) const;
  // REQUIRES: num_free_locked() > 0 (plain blocks first, then evicts).
  BlockId TakeFreeLocked(int32_t owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // n TakeFreeLocked(owner) calls in one walk of the free list, the ids
  // written to out[0 .. n) in the same order. Does not touch the
  // reservation counts (the caller does, as for TakeFreeLocked).
  // REQUIRES: 0 <= n <= num_free_locked().
  void TakeFreeNLocked(int32_t owner, int32_t n, BlockId* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NoteAllocatedLocked(int32_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddRefLocked(BlockId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLocked(BlockId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ReleaseLocked(next_id(0)), ..., ReleaseLocked(next_id(n - 1)), batched.
  template <typename Next>
  void ReleaseBatchLocked(size_t n, Next next_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PendingCopies' references on copy sources (through CopyOnWriteBooks):
  // one taken over, and a batch released, counted in copy_holds_.
  void AdoptCopySource(BlockId src);
  void ReleaseCopySources(absl::Span<const BlockId> ids);
  // One copy hold less on each id (ReleaseCopySources and
  // ReleaseCopyHoldsTailFirst, before they release the references).
  // REQUIRES: each id holds one (else aborts, naming it).
  void DropCopyHoldsLocked(absl::Span<const BlockId> ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The freed block i was charged to a reservation: ends the charge.
  void UnchargeLocked(int32_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckInvariantsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Called by Reservation.
  std::optional<BlockId> ReservationTryAllocate(int32_t slot);
  absl::StatusOr<std::vector<BlockId>> ReservationAllocate(int32_t slot,
                                                           int32_t n);
  absl::Status ReservationResize(int32_t slot, int32_t new_capacity);
  ReservationBooks ReservationSnapshot(int32_t slot) const;
  void ReservationDestroy(int32_t slot);

  const PoolConcurrency concurrency_;
  mutable OptionalMutex mu_;  // Enabled when concurrency_ == kShared.

  // Invariants (checked by CheckInvariants()):
  //  - ref_counts_[i] >= 0 for every block i;
  //  - block i is free (ref_counts_[i] == 0) exactly when it is in
  //    free_list_ or, published, in prefix_->evictable() (once, in one);
  //    hence num_free_locked() + #{i : ref_counts_[i] > 0} == num_blocks;
  //  - owner_[i] is -1 or the slot of a non-free reservation; owner_[i] >= 0
  //    only while ref_counts_[i] > 0 (a charge ends when the block is freed);
  //  - for each kActive slot: capacity == reserved_free + charged_live,
  //    reserved_free >= 0 and charged_live == #{i : owner_[i] == slot};
  //    kDetached: capacity == reserved_free == 0, charged_live ==
  //    #{i : owner_[i] == slot} > 0; kFree: all zero and listed in
  //    free_slots_;
  //  - total_reserved_free_ == sum of reserved_free over slots
  //    <= num_free_locked();
  //  - num_shared_ == #{i : ref_counts_[i] > 1};
  //  - num_active_reservations_ == #{kActive slots};
  //  - peak_used_ >= current used blocks;
  //  - copy_holds_[i] <= ref_counts_[i]: of block i's references, those
  //    PendingCopies hold as a copy's source (copy_on_write.h) until the
  //    caller's copy ran. Such a block may be a cached entry under a free
  //    parent: the sequence that held the prefix let go while the copy
  //    still reads the block.
  std::vector<int32_t> ref_counts_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> owner_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> copy_holds_ ABSL_GUARDED_BY(mu_);
  FreeList free_list_ ABSL_GUARDED_BY(mu_);
  // The prefix cache's books (null until EnablePrefixCache).
  std::unique_ptr<PrefixIndex> prefix_ ABSL_GUARDED_BY(mu_);
  // MatchGroupedLocked's scratch: the anchor's hits, per group the lowest
  // entry known held, and the entries looked up (-2: not yet).
  std::vector<int32_t> scratch_anchor_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> scratch_lo_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> scratch_found_ ABSL_GUARDED_BY(mu_);  // Per group.
  PrefixCacheOptions prefix_options_ ABSL_GUARDED_BY(mu_);
  std::vector<ReservationBooks> reservations_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> free_slots_ ABSL_GUARDED_BY(mu_);
  int32_t total_reserved_free_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t num_shared_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t num_active_reservations_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t peak_used_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t num_allocations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t num_failed_allocations_ ABSL_GUARDED_BY(mu_) = 0;
};

// Reservation is the RAII, move-only handle of blocks set aside in a
// BlockPool for one owner (see the BlockPool file comment). It holds the pool
// and a small slot index into the pool's flat reservation table.
//
// States: valid (from BlockPool::Reserve) or invalid (default-constructed or
// moved-from). Every method except is_valid(), pool() and the destructor
// REQUIRES is_valid().
class Reservation {
 public:
  Reservation() = default;  // Invalid.
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;

  // Un-reserves its free blocks; its live charged blocks become ordinary
  // (uncharged) and go to general use when freed.
  ~Reservation();

  // Takes one block set aside for this reservation (charged to it,
  // ref_count 1). Returns nullopt only when num_reserved_free() == 0.
  std::optional<BlockId> TryAllocate();

  // Takes n of this reservation's blocks, all or nothing. Returns an empty
  // vector for n == 0, INVALID_ARGUMENT for n < 0, RESOURCE_EXHAUSTED with
  // the numbers (nothing taken) when n > num_reserved_free().
  absl::StatusOr<std::vector<BlockId>> Allocate(int32_t n);

  // Changes capacity(). Growing takes new_capacity - capacity() more
  // unreserved free blocks, or returns RESOURCE_EXHAUSTED and changes
  // nothing. Shrinking returns FAILED_PRECONDITION (nothing changed) if
  // new_capacity < num_charged(), else un-reserves the difference.
  // INVALID_ARGUMENT for new_capacity < 0.
  absl::Status Resize(int32_t new_capacity);

  int32_t capacity() const;
  int32_t num_reserved_free() const;  // Still takeable through this handle.
  int32_t num_charged() const;        // Live blocks charged to it.

  bool is_valid() const { return pool_ != nullptr; }
  BlockPool* pool() const { return pool_; }  // nullptr when invalid.

 private:
  friend class BlockPool;
  friend struct internal::CopyOnWriteBooks;  // Allocates through the slot.
  Reservation(BlockPool* pool, int32_t slot) : pool_(pool), slot_(slot) {}
  void CheckValid() const;
  void Reset();

  BlockPool* pool_ = nullptr;  // Not owned; must outlive the handle.
  int32_t slot_ = -1;
};

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_BLOCK_POOL_H_
