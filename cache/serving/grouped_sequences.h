// cache/serving/grouped_sequences.h
//
// GroupedSequences is the part of KVCacheManager that runs when the manager
// has layer groups (KVCacheManager::Options::layer_groups,
// cache/serving/layer_groups.h): each sequence keeps one WindowTable per
// group (allocator/window_table.h) on the manager's single pool of equal
// blocks. Full groups hold a block for every token; a window group releases
// the blocks that fell wholly out of the window of the next token at the
// start of each step (O(1) per sequence per decode step), so after a
// decode step it holds at most WindowBlockBound(W, block_tokens) =
// ceil(W / block_tokens) + 1 blocks. A step counts first (the blocks its
// windows would release count as free) and fails with nothing changed;
// only a step that fits releases and allocates.
//
// Every new token gets a slot in every group (a chunk's own attention may
// read the chunk from the cache, as vLLM's kernels do), so a prefill chunk
// of k tokens holds up to ceil((W - 1 + k) / block_tokens) + 1 blocks of a
// window group until the next step: chunk long prompts to get the
// window's saving during prefill too.
//
// Fork shares every group's table (holes included); the first write into
// a shared partial last block copies it in each group (StepOutput::copies,
// as the ungrouped manager), and a window release of a block another
// table holds frees nothing.
//
// kReservation: each running sequence reserves its worst case for its life
// (ReservePeak below: BlocksFor(max_tokens) per full group; per window
// group, what its placement holds or what a step of max_step_tokens holds,
// whichever is more), and the reservation's capacity is the sum, so every
// step of an admitted sequence up to max_tokens gets its blocks. A fork
// reserves its whole worst case again (its shared blocks may all be
// copied or diverge).
//
// Swap (Config::host; KVCacheManager runs host mode's copies): SwapOut
// gives each live entry of every group a host block, in a host table per
// group with the device table's holes, and returns the copies split per
// group (SwapPlan::group_offsets);
// the device tables stay held until CompleteSwap. SwapIn rebuilds the
// device tables with the same holes, on the blocks still cached (prefix
// caching, below) and fresh ones for the rest. A shared block is
// copied by each holder's swap and stays held by the others. kReservation:
// SwapOut gives up the reservation as Preempt does, but for the device
// blocks it holds until CompleteSwap (they stay charged, and the others'
// reserved blocks must not pay for them); SwapIn takes the same worst
// case back (its window groups hold what they held at SwapOut).
//
// Prefix caching (Config::hasher; the pool's index enabled): the *anchor*
// group (the first full one, else the widest window) publishes its
// committed full blocks as the ungrouped manager does, a chain from the
// root. Every other group's block i is
// published as a leaf child of the anchor's block i in that group's name
// (BlockPool::PublishGroupBlocks): it is verified by the anchor chain that
// leads to its parent, and held only while the anchor's block i is (the
// same sequence holds both). A hit of L blocks is the longest at which
// the anchor holds [0, L), each full group [0, L) and each window group
// the blocks [WindowFirstNeededBlock(L * bt, W), L) the next token reads
// (BlockPool::PinGroupedPrefix, one lock); the window group's table gets
// holes below them. A window anchor (no full group: Mistral-7B) is
// verified from the root through its cached, possibly free, head and pins
// only its window; its chain stops where it released a block before
// committing the next, and evicting a free head unpublishes the in-use
// tail below (BlockPool::AllowInUseUnderFreeParents; every manager on the
// pool then has the same groups, so all are window-anchored). A window
// release frees a published block into the LRU like any other; a finished
// sequence releases the other groups first and the anchor last, each tail
// first, so leaves are evicted first.
// Readmit re-hits the sequence's own prefix; so does SwapIn, within its
// computed tokens (a hit's window entries then start at or below the host
// table's first live one; the hit neither needs nor pins those below it,
// which stay holes), copying only the live entries past the hit back and
// republishing them at the next commit. kReservation reserves
// the whole worst case even with hits (a hit lowers what is taken, not
// what is reserved).
//
// KVCacheManager forwards its calls here (one line each); users never name
// this class. It keeps books only: in host storage KVCacheManager runs the
// copies it hands out. Not supported with groups yet, and refused with
// UNIMPLEMENTED at Create: the remote tier.
//
// Thread safety: as KVCacheManager (one thread at a time).
#ifndef PAGEDKV_CACHE_SERVING_GROUPED_SEQUENCES_H_
#define PAGEDKV_CACHE_SERVING_GROUPED_SEQUENCES_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/token_blocks.h"
#include "allocator/window_table.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/sequence_prefix.h"
#include "cache/serving/kv_cache_manager.h"  // SequenceId, SlotRequest, ...
#include "cache/serving/step_output.h"

namespace pagedkv {
namespace internal {

class GroupedSequences {
 public:
  struct Config {
    BlockPool* books = nullptr;  // Borrowed; outlives this.
    BlockPool* host = nullptr;   // The swap tier's books (borrowed), or null.
    int32_t block_tokens = 0;
    std::vector<LayerGroup> groups;  // Validated.
    double watermark = 0.0;
    uint64_t instance_id = 0;  // The manager's (TableVersion::manager).
    AdmissionMode admission = AdmissionMode::kWatermark;
    int32_t max_step_tokens = 0;  // kReservation: the step bound, 0 none.
    // Prefix caching on (books' index enabled), or null. The anchor is
    // the first full group, else the widest window group.
    const BlockHasher* hasher = nullptr;
    // The manager made its pool (no other manager's tables hold its
    // blocks): CheckInvariants then accounts for every reference.
    bool sole_user = true;
  };
  explicit GroupedSequences(Config config);
  ~GroupedSequences();
  // Takes the kReservation reservation (empty). Call once, before use.
  absl::Status Init();

  int32_t num_groups() const { return static_cast<int32_t>(groups_.size()); }
  const LayerGroup& group(int32_t g) const { return groups_[g]; }

  // KVCacheManager's calls of the same names, with its contracts (and its
  // error codes and messages).
  Admission CanAdmit(int64_t prompt_tokens, int64_t max_new_tokens) const;
  absl::Status AddSequence(SequenceId seq, int64_t prompt_tokens,
                           int64_t max_new_tokens, StepOutput* out);
  absl::Status AppendSlots(absl::Span<const SlotRequest> requests,
                           StepOutput* out);
  // Prefix caching (Config::hasher set), with KVCacheManager's contracts:
  // admission counting the hit, a sequence added with its token ids (its
  // hit pinned, out->num_cached_tokens), commits, a reset.
  Admission CanAdmit(absl::Span<const int32_t> prompt, int64_t max_new_tokens,
                     const PrefixKeys& keys) const;
  absl::Status AddSequence(SequenceId seq, absl::Span<const int32_t> prompt,
                           int64_t max_new_tokens, StepOutput* out,
                           const PrefixKeys& keys);
  absl::Status CommitTokens(absl::Span<const TokenCommit> commits);
  void ResetPrefixCache();
  bool prefix_caching() const { return hasher_ != nullptr; }
  // The anchor group and the request-level counters
  // (KVCacheManager::metrics() adds the index's).
  int32_t anchor_group() const { return anchor_; }
  const PrefixCacheStats& prefix_stats() const { return prefix_stats_; }
  // The child gets the parent's tables in every group, holes included
  // (one reference more on each live block) and its length and window; the
  // partial last block each group shares is copied at the first write of
  // either (AppendSlots' StepOutput::copies). Never takes a block.
  absl::Status Fork(SequenceId parent, SequenceId child);
  absl::Status Free(SequenceId seq);
  absl::Status Truncate(SequenceId seq, int64_t new_length);
  // Preemption and swap (grouped_sequences_preempt.cc).
  absl::Status Preempt(SequenceId seq);
  absl::Status Readmit(SequenceId seq, StepOutput* out);
  // Books-only swap, with KVCacheManager's contracts; the plans' pairs are
  // the live entries, group by group (SwapPlan::group_offsets).
  absl::StatusOr<SwapPlan> SwapOut(SequenceId seq);
  absl::StatusOr<SwapPlan> SwapIn(SequenceId seq);
  absl::Status CompleteSwap(SequenceId seq);
  bool contains(SequenceId seq) const { return sequences_.contains(seq); }
  absl::StatusOr<SequenceState> state(SequenceId seq) const;
  absl::StatusOr<int64_t> num_tokens(SequenceId seq) const;

  // One group's table of a running sequence: entries (holes invalid, value
  // -1), its length, and a version as KVCacheManager::TableVersion's
  // (manager, sequence entry, table generation). Valid until the next
  // mutating call.
  struct GroupTable {
    absl::Span<const BlockId> entries;
    int64_t num_tokens = 0;
    uint64_t sequence_entry = 0;
    uint64_t generation = 0;
  };
  // Returns true and writes *out for a running sequence; false otherwise.
  bool FindGroupTable(SequenceId seq, int32_t g, GroupTable* out) const;
  // The Status FindGroupTable's false stands for (NOT_FOUND,
  // FAILED_PRECONDITION, OUT_OF_RANGE for a bad group).
  absl::Status GroupTableError(SequenceId seq, int32_t g) const;

  int32_t num_sequences() const {
    return static_cast<int32_t>(sequences_.size());
  }
  int32_t num_running() const { return num_running_; }
  int64_t preemptions() const { return preemptions_; }
  int64_t swap_outs() const { return swap_outs_; }
  int64_t swap_ins() const { return swap_ins_; }
  int64_t swapped_blocks() const { return swapped_blocks_; }  // Both ways.
  // Blocks the window groups' windows released, in all (stats and
  // kv_stress).
  int64_t window_released_blocks() const { return window_released_; }
  // Copy-on-write copies handed out (StepOutput::copies), in all.
  int64_t cow_copies() const { return cow_copies_; }

  // Aborts unless the invariants below hold (refcounts against the tables;
  // grouped_sequences_check.cc).
  void CheckInvariants() const;

 private:
  struct Sequence {
    std::vector<WindowTable> tables;  // One per group.
    // Swapped out or swapping: one per group on the host tier, with the
    // device tables' layout (holes included); else empty.
    std::vector<WindowTable> host_tables;
    SequenceState state = SequenceState::kRunning;
    int64_t num_tokens = 0;
    int64_t max_tokens = 0;
    // Tokens before the last call that gave slots: their KV is computed,
    // and the window of the step's first new token starts from them.
    int64_t computed = 0;
    uint64_t entry = 0;
    uint64_t step_stamp = 0;
    // A group's partly filled tail block may have another holder or be in
    // the prefix cache, so a step checks its tails for copy-on-write. Set
    // by Fork on both sides and by a Truncate into such a block; cleared
    // when Place or SwapIn rebuilds the tables (their tails are fresh) and
    // by CompleteSwap (no tables). Not cleared by the copy it forces: the
    // sequence keeps paying the tail check until its next placement.
    // Without it, and without prefix, every live entry's ref_count is 1.
    bool may_share = false;
    // Tokens of its last placement (AddSequence's prompt, Readmit's
    // length; a fork's parent's): what a window group may hold until its
    // next step (kReservation's ReservePeak).
    int64_t placed = 0;
    // Added with token ids (prefix caching): the anchor's keys and commit
    // point (prefix.published: the anchor's blocks done), and per group
    // its keys (GroupChainParent) and blocks done, up to the anchor's.
    // Its full blocks may be cached or pinned by others; its tail is
    // neither until it is full (only full blocks are published), so a
    // decode step skips the copy-on-write check unless may_share.
    std::optional<SequencePrefix> prefix;
    std::vector<std::vector<BlockHash>> group_hashes;  // Anchor's unused.
    std::vector<int32_t> group_published;
  };

  // Token -> block arithmetic (allocator/token_blocks.h: a shift and a
  // mask when block_tokens is a power of two; a 64-bit divide per group
  // per token was a third of the decode step, measured).
  int64_t BlockOf(int64_t token) const { return blocks_of_.BlockOf(token); }
  int64_t OffsetOf(int64_t token) const { return blocks_of_.OffsetOf(token); }
  int64_t BlocksFor(int64_t tokens) const {
    return blocks_of_.BlocksFor(tokens);
  }
  // kReservation: the most live entries group g of a sequence placed with
  // `placed` tokens holds in its life (max_tokens in all), and their sum
  // over the groups. A step from n tokens keeps entries
  // [WindowFirstNeededBlock(n, W), BlocksFor(n + k)), which the tokens
  // [n - W + 1, n + k) span: at most ceil((W - 1 + k) / bt) + 1 blocks.
  int64_t GroupPeak(int32_t g, int64_t placed, int64_t max_tokens) const;
  int64_t ReservePeak(int64_t placed, int64_t max_tokens) const;
  // Grows or shrinks the reservation to max(total, its charged blocks).
  // Growing may fail (RESOURCE_EXHAUSTED, nothing changed).
  absl::Status ResizeReservation(int64_t total);
  // kReservation (else no-ops): reserve a running sequence's worst case
  // (RESOURCE_EXHAUSTED, nothing changed), give it up (a shrink), and
  // shrink the capacity to what it must be after blocks were freed.
  absl::Status Reserve(SequenceId seq, int64_t placed, int64_t max_tokens);
  void Unreserve(int64_t placed, int64_t max_tokens);
  void SyncReservation();
  // Free blocks a step or placement may take: unreserved ones and the
  // reservation's.
  int64_t Available() const;
  // step_blocks_ = n fresh blocks, the reservation's first, all or
  // nothing. The caller counted n <= Available(), but on a kShared pool
  // another manager may have taken unreserved blocks since: then
  // RESOURCE_EXHAUSTED and nothing is taken (the unreserved ones are taken
  // first; the reservation's cannot be taken by anyone else).
  absl::Status TakeBlocks(int64_t n);
  absl::StatusOr<Sequence*> Find(SequenceId seq);
  absl::StatusOr<const Sequence*> Find(SequenceId seq) const;
  // Admission: blocks a fresh placement of `tokens` takes in all groups.
  int64_t PlaceNeed(int64_t tokens) const;
  // Moves what the windows of s no longer read (s.computed tokens are
  // computed) out of its tables into step_detached_, whose references the
  // caller releases in one batch. Returns the blocks moved.
  int32_t DetachOutOfWindow(Sequence& s);
  // AppendSlots' count, before anything changes: the blocks
  // DetachOutOfWindow(s) would free once s.computed = s.num_tokens. A
  // block with other holders goes to step_released_ instead; then
  // CountSharedFrees() counts those whose every holder releases them in
  // this step (sorts step_released_).
  int64_t CountWindowFrees(const Sequence& s);
  int64_t CountSharedFrees();
  // A partial last block a step writes into that is shared or cached:
  // request's table of `group`, entry `index`, holding `block`; `copy` is
  // CountCopies' decision, which Unshare carries out.
  struct CowTarget {
    int32_t request;
    int32_t group;
    int32_t index;
    BlockId block;
    bool copy = false;
  };
  // Adds the step's copy-on-write targets of s (request i) to step_cow_.
  void FindCowTargets(const Sequence& s, int32_t i);
  // The copies step_cow_ needs once the step's windows released their
  // blocks (REQUIRES: CountSharedFrees() ran), deciding each target's
  // `copy`: a block keeps ref_count - (its releases in this step) holders,
  // and when k targets share a block no one else holds, k - 1 copy and the
  // last writes in place; a cached block is always copied, so its entry
  // keeps its KV (PrepareWrite's rules), and so is a block the step's
  // commits may publish (step_publishes_: they are published before the
  // writes). A decision to write in place stays true until the write: only
  // this sequence holds the block and it is not cached, so no other thread
  // can pin it.
  int64_t CountCopies();
  // The blocks the step's commits may publish (a superset), sorted into
  // step_publishes_: every group's entries from the first the sequence has
  // not published to its commit's last full block.
  void FindStepPublishes(absl::Span<const SlotRequest> requests);
  // After the releases: makes the copies CountCopies decided, taking the
  // fresh blocks from *blocks (advancing it); the copies go to out.
  void Unshare(const BlockId** blocks, StepOutput* out);
  // New blocks s needs for k more tokens (after DetachOutOfWindow).
  int64_t GrowNeed(const Sequence& s, int64_t k) const;
  // Appends BlocksFor(num_tokens + k) - entries blocks per group from
  // `blocks` (advancing it), then the group-major slots of tokens
  // [num_tokens, num_tokens + k) at out->slot_mapping[g * stride + at].
  void Grow(Sequence& s, int64_t k, const BlockId** blocks);
  void WriteSlots(const Sequence& s, int64_t first, int64_t k, int64_t stride,
                  int64_t at, StepOutput* out) const;
  // Places s for `tokens` tokens: its tables hold `hit` pinned blocks'
  // worth of entries (a prefix hit; 0: empty tables), the rest are new,
  // and their slots go to out (out->num_cached_tokens = hit tokens). On
  // failure the tables are as they were.
  absl::Status Place(Sequence& s, int64_t tokens, int64_t hit,
                     StepOutput* out);
  // Prefix caching (grouped_sequences_prefix.cc).
  // s's prefix state for `prompt` (ids and keys, no hashes yet).
  void SetPrompt(Sequence& s, absl::Span<const int32_t> prompt,
                 const PrefixKeys& keys) const;
  // p's anchor keys to n blocks and every other group's to n.
  void EnsureKeys(Sequence& s, int64_t n) const;
  BlockPool::PrefixChain AnchorChain(const SequencePrefix& p, int64_t first,
                                     int64_t n) const;
  // The other groups' query for blocks [0, n) of s (in scratch_groups_),
  // group g wanting blocks from firsts[g] on (empty: all).
  absl::Span<const BlockPool::PrefixGroup> GroupQuery(
      const Sequence& s, int64_t n, absl::Span<const int64_t> firsts) const;
  // The verified hit of s's first max_blocks blocks (keying what it looks
  // at; *anchor_hits, if given, gets the anchor chain's verified blocks);
  // Pin also takes the blocks into s's empty tables, looking the anchor
  // chain up again unless anchor_hits >= 0 says how far it went. Returns
  // the hit. firsts (one per group, or empty: all 0) are the blocks each
  // group wants from: SwapIn's host tables have holes below them, which
  // the hit neither needs nor pins (they are holes in s's tables too).
  // REQUIRES: firsts empty or num_groups() long, each >= 0.
  BlockPool::PrefixMatch MatchHit(Sequence& s, int64_t max_blocks,
                                  int64_t* anchor_hits = nullptr,
                                  absl::Span<const int64_t> firsts = {}) const;
  int64_t PinHit(Sequence& s, int64_t max_blocks, int64_t anchor_hits = -1,
                 absl::Span<const int64_t> firsts = {});
  // Publishes what s committed and has not published (every group).
  void PublishCommitted(Sequence& s);
  // Truncate's part: keys, commit and published points to new_length; a
  // partial new tail that is published stays so (its next write copies it,
  // CountCopies).
  void TruncatePrefix(Sequence& s, int64_t new_length);
  // CheckInvariants' part: every block s published that is still cached
  // is its own (tokens, keys, group, parent). REQUIRES: s running, with a
  // prefix of the pool's epoch.
  void CheckPublishedEntries(SequenceId id, const Sequence& s) const;
  // Releases s's tables: the other groups first, the anchor last, each
  // tail first (children enter the LRU before their parents).
  void ClearTables(Sequence& s);
  // Admission of a placement taking `fresh` new blocks and reviving
  // `revived` cached free ones (watermark or reservation).
  Admission AdmitBlocks(int64_t prompt_tokens, int64_t max_new_tokens,
                        int64_t fresh, int64_t revived) const;
  // Swap: fills `to` (one table per group, on the other tier's pool, each
  // holding `first` entries already, laid out as from's: SwapIn's hit)
  // with the layout of `from` from entry `first` on (a hole where it has
  // one, else the next of `blocks`, whose references it takes over; the
  // same holes passed), and returns the copies from's live entries ->
  // to's, split per group.
  // REQUIRES: blocks.size() == LiveFrom(from, first).
  SwapPlan MirrorTables(absl::Span<const WindowTable> from, int64_t first,
                        absl::Span<const BlockId> blocks,
                        std::vector<WindowTable>* to) const;
  // The live entries of the tables (from entry `first` on, in each).
  static int64_t LiveEntries(absl::Span<const WindowTable> tables);
  static int64_t LiveFrom(absl::Span<const WindowTable> tables, int64_t first);

  BlockPool* const books_;
  BlockPool* const host_;  // Or null: no swap tier.
  const int32_t block_tokens_;
  const std::vector<LayerGroup> groups_;
  const double watermark_;
  const uint64_t instance_id_;
  const AdmissionMode admission_;
  const int32_t max_step_tokens_;
  const BlockHasher* const hasher_;  // Or null: no prefix caching.
  const bool sole_user_;
  const TokenBlocks blocks_of_;
  // The first full group, else the widest window group (anchor_window_
  // its window; 0 when it is full).
  int32_t anchor_ = -1;
  int32_t anchor_window_ = 0;
  PrefixCacheStats prefix_stats_;
  mutable Sequence scratch_match_;  // CanAdmit's keys (no allocation warm).
  mutable std::vector<BlockPool::PrefixGroup> scratch_groups_;
  std::vector<BlockId> scratch_pins_;
  std::vector<int64_t> scratch_firsts_;  // SwapIn's per-group firsts.
  std::vector<BlockPool::PrefixSwitch> scratch_switches_;
  // kReservation only. Destroyed after sequences_ (declared before).
  // Invariant: capacity == max(reserved_total_, num_charged()), and
  // reserved_total_ == the ReservePeak sum of the kRunning and kSwappingIn
  // sequences plus the live device entries of the kSwappingOut ones.
  std::optional<Reservation> reservation_;
  int64_t reserved_total_ = 0;
  // The distinct windows of the window groups, and per distinct window the
  // groups that have it (most models have one window: one division per
  // sequence per step for all their window groups).
  std::vector<int32_t> windows_;
  std::vector<std::vector<int32_t>> window_groups_;

  // Invariants (CheckInvariants):
  //  - a kRunning sequence has, per group, exactly BlocksFor(num_tokens)
  //    entries; in a full group all live; in a window group of window W,
  //    the entries below WindowFirstNeededBlock(computed, W) are holes and
  //    the rest live; a kPreempted one holds no entries; kSwappingOut and
  //    kSwappingIn hold such device tables and host_tables of the same
  //    layout, kSwappedOut only the host_tables (one reference each on
  //    the host pool, no other);
  //  - the reservation (kReservation) covers the worst case of kRunning
  //    and kSwappingIn sequences and the live entries of kSwappingOut;
  //  - 0 <= computed <= num_tokens <= max_tokens;
  //  - every block's ref_count is the number of live entries naming it
  //    plus the copy sources handed out and not yet marked done (at most
  //    cow_copies_ in all), plus, on a pool other managers share, their
  //    tables' references (checked only as ref_count >= entries); a
  //    sequence without may_share has every group's partly filled tail of
  //    ref_count 1 and not cached, and, without prefix, all its blocks so;
  //  - num_running_ == #{kRunning}; entries distinct, in [1, next_entry_].
  absl::flat_hash_map<SequenceId, Sequence> sequences_;
  uint64_t next_entry_ = 0;
  int32_t num_running_ = 0;
  int64_t preemptions_ = 0;
  int64_t swap_outs_ = 0;
  int64_t swap_ins_ = 0;
  int64_t swapped_blocks_ = 0;
  int64_t window_released_ = 0;
  int64_t cow_copies_ = 0;
  uint64_t step_stamp_ = 0;
  std::vector<Sequence*> step_sequences_;  // AppendSlots scratch.
  std::vector<BlockId> step_blocks_;
  std::vector<BlockId> step_released_;  // CountWindowFrees' shared blocks.
  std::vector<BlockId> step_detached_;  // DetachOutOfWindow's, to release.
  std::vector<CowTarget> step_cow_;
  std::vector<BlockId> step_publishes_;  // FindStepPublishes'.
  // Per block, the references moved from entries to copies so far (the
  // copy-on-write count and Unshare).
  absl::flat_hash_map<BlockId, int32_t> step_holds_;
};

}  // namespace internal
}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_GROUPED_SEQUENCES_H_
