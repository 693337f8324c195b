// cache/serving/kv_cache_manager.h
//
// KVCacheManager is the block manager a continuous-batching server embeds
// (vLLM's KVCacheManager, TensorRT-LLM's KVCacheManager, SGLang's token
// pool): one pool of KV blocks, sequences keyed by the server's ids, each
// with its own length (ragged) and block table. Per step the server admits
// waiting requests, asks for slots for every running sequence's new tokens
// (one for decode, a chunk for prefill), forks sequences for parallel
// sampling and beams, frees finished ones, preempts when memory runs out, and
// hands the block tables to an attention kernel (block_table_export.h).
//
// Storage modes, one set of books:
//   - kHost: the manager owns a KVPool (cache/storage/) and runs block copies
//     itself (copy-on-write, swap); the server writes KV through kv_pool().
//   - kBooksOnly: the KV bytes live elsewhere (a GPU). The manager returns
//     where each new token goes and which block copies to run, and the caller
//     runs them (StepOutput::copies, SwapPlan) and confirms.
//
// Admission: kWatermark (optimistic: admit while the free blocks after the
// prompt stay above a fraction of the pool, as vLLM does; a later step may
// run out and the server preempts) or kReservation (reserve prompt +
// max_new_tokens up front, so a started request never stalls: TensorRT-LLM's
// guaranteed-no-evict).
//
// Slots: token t of a sequence lives in block table[t / block_tokens] at
// offset t % block_tokens; its flat slot index (vLLM's slot_mapping) is
// block * block_tokens + offset.
//
//   absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
//       KVCacheManager::Create({.layout = layout, .num_blocks = 4096});
//   if (!made.ok()) return made.status();
//   KVCacheManager& m = **made;
//   StepOutput out;
//   if (m.CanAdmit(1024, 256) == Admission::kAdmit) {
//     PKV_RETURN_IF_ERROR(m.AddSequence(/*seq=*/7, 1024, 256, &out));
//   }
//   // ... prefill writes K/V into out.slot_mapping ...
//   const SlotRequest step[] = {{.seq = 7, .num_tokens = 1}};
//   PKV_RETURN_IF_ERROR(m.AppendSlots(step, &out));   // decode
//   PKV_RETURN_IF_ERROR(m.Free(7));
//
// Errors: bad input (unknown or duplicate id, num_tokens <= 0, truncate past
// the length, swap of a swapped sequence, ...) returns a Status with the
// numbers (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
// OUT_OF_RANGE) and changes nothing. Running out of blocks is
// RESOURCE_EXHAUSTED and changes nothing; batched calls are all or nothing.
//
// Thread safety: a manager is used by one thread at a time. Several managers
// may share one KVPool made with PoolConcurrency::kShared (Options::pool),
// each on its own thread with its own sequences.
#ifndef PAGEDKV_CACHE_SERVING_KV_CACHE_MANAGER_H_
#define PAGEDKV_CACHE_SERVING_KV_CACHE_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/memory_resource.h"

namespace pagedkv {

// The server's id for a sequence (a request, or one sample or beam of it).
using SequenceId = int64_t;

enum class StorageMode { kHost, kBooksOnly };
enum class AdmissionMode { kWatermark, kReservation };

// CanAdmit's answer.
enum class Admission {
  kAdmit,  // Fits now.
  kLater,  // Does not fit now; may after sequences finish.
  kNever,  // Cannot fit even in an empty pool.
};

// Where a sequence is.
enum class SequenceState {
  kRunning,      // Has device blocks for all its tokens.
  kPreempted,    // Blocks freed for recompute; Readmit gives them back.
  kSwappedOut,   // Its blocks are in the host tier.
  kSwappingOut,  // Books-only: device -> host copies pending (CompleteSwap).
  kSwappingIn,   // Books-only: host -> device copies pending (CompleteSwap).
};

// "running", "preempted", "swapped out", "swapping out", "swapping in": the
// words the manager's error messages use.
const char* SequenceStateName(SequenceState state);

// One sequence's share of a batched AppendSlots.
struct SlotRequest {
  SequenceId seq = 0;
  int32_t num_tokens = 0;  // New tokens; > 0.
};

// Block copies a swap needs: src block of one tier -> dst block of the other.
struct SwapPlan {
  std::vector<BlockId> src;  // Device blocks (out) or host blocks (in).
  std::vector<BlockId> dst;  // Host blocks (out) or device blocks (in).
};

struct ManagerStats {
  int32_t num_blocks = 0;
  int32_t used_blocks = 0;
  int32_t free_blocks = 0;      // Includes reserved ones.
  int32_t reserved_blocks = 0;  // Free blocks set aside (kReservation).
  int32_t shared_blocks = 0;    // Blocks with more than one holder.
  int32_t num_sequences = 0;
  int32_t running_sequences = 0;
  int64_t preemptions = 0;
  int64_t swap_outs = 0;
  int64_t swap_ins = 0;
  int64_t swapped_blocks = 0;  // Both directions.
  int64_t swapped_bytes = 0;   // Host mode: bytes copied by swaps.
  int64_t cow_copies = 0;
  int32_t host_blocks = 0;  // Host tier size (0: no swap tier).
  int32_t host_used_blocks = 0;
};

class KVCacheManager {
 public:
  // Tokens one sequence may hold (OUT_OF_RANGE past it).
  static constexpr int64_t kMaxSequenceTokens = int64_t{1} << 30;

  struct Options {
    KVLayout layout;
    // Device blocks; ignored when `pool` is set.
    int32_t num_blocks = 0;
    StorageMode storage = StorageMode::kHost;
    AdmissionMode admission = AdmissionMode::kWatermark;
    // kWatermark: admission keeps this fraction of the pool's blocks free,
    // in [0, 1).
    double watermark = 0.01;
    // Blocks of the host swap tier; 0 for none (SwapOut then fails).
    int32_t num_host_blocks = 0;
    // Host mode: a pool to share with other managers (must outlive this one
    // and have `layout`); nullptr makes a private one of num_blocks.
    KVPool* pool = nullptr;
    PoolConcurrency concurrency = PoolConcurrency::kSingleThread;
    // Where host-mode bytes come from; nullptr: DefaultMemoryResource().
    MemoryResource* memory = nullptr;
  };

  // InvalidArgument for a bad layout, num_blocks <= 0 (without a pool), a
  // watermark outside [0, 1), num_host_blocks < 0, a pool in books-only
  // mode or with another layout; ResourceExhausted when memory runs out.
  static absl::StatusOr<std::unique_ptr<KVCacheManager>> Create(
      const Options& options);

  KVCacheManager(const KVCacheManager&) = delete;
  KVCacheManager& operator=(const KVCacheManager&) = delete;
  ~KVCacheManager();

  // --- Admission and sequences ----------------------------------------

  // Whether a request of `prompt_tokens` that may generate `max_new_tokens`
  // fits now (see AdmissionMode). kNever also for prompt_tokens <= 0,
  // max_new_tokens < 0, or more than kMaxSequenceTokens in all.
  Admission CanAdmit(int64_t prompt_tokens, int64_t max_new_tokens) const;

  // Admits sequence `seq` and gives its prompt slots (out is reset first).
  // ALREADY_EXISTS for a known id; INVALID_ARGUMENT for prompt_tokens <= 0,
  // max_new_tokens < 0 or more than kMaxSequenceTokens in all;
  // RESOURCE_EXHAUSTED when CanAdmit is not kAdmit
  // (the message says which). Nothing changes on error.
  absl::Status AddSequence(SequenceId seq, int64_t prompt_tokens,
                           int64_t max_new_tokens, StepOutput* out);

  // Slots for the new tokens of every request, in order, in one call (one
  // lock of a shared pool): out is reset, then out->slot_mapping holds each
  // request's tokens from out->request_offsets[i], and out->copies the
  // copy-on-write copies the step needs (host mode: already run; books-only:
  // run them before writing this step's KV, then MarkDone()). All or nothing:
  // NOT_FOUND for an unknown id, FAILED_PRECONDITION for a sequence that is
  // not running, INVALID_ARGUMENT for num_tokens <= 0 or an id twice,
  // OUT_OF_RANGE past the sequence's max tokens (kReservation), and
  // RESOURCE_EXHAUSTED when the pool runs out part-way: then no sequence got
  // slots and nothing changed (preempt one and call again).
  absl::Status AppendSlots(absl::Span<const SlotRequest> requests,
                           StepOutput* out);

  // Child `child` shares every block of `parent` (copy-on-write on the first
  // divergent write). NOT_FOUND / ALREADY_EXISTS / FAILED_PRECONDITION
  // (parent not running); kReservation: RESOURCE_EXHAUSTED when the child's
  // own future blocks cannot be reserved.
  absl::Status Fork(SequenceId parent, SequenceId child);

  // Drops the sequence, releasing its blocks tail first (and its host blocks
  // and reservation). NOT_FOUND for an unknown id; FAILED_PRECONDITION while
  // a books-only swap is pending.
  absl::Status Free(SequenceId seq);

  // Speculative-decoding rollback: keeps the first new_length tokens and
  // frees the whole blocks past them. OUT_OF_RANGE unless 0 <= new_length <=
  // num_tokens(seq); NOT_FOUND; FAILED_PRECONDITION if not running;
  // kReservation: RESOURCE_EXHAUSTED (nothing changed) when blocks it drops
  // stay live in a fork, or its new tail is a shared block, and the pool
  // cannot reserve the blocks it will need again for them.
  absl::Status Truncate(SequenceId seq, int64_t new_length);

  // --- Preemption -----------------------------------------------------

  // Recompute preemption: frees the blocks, remembers the length.
  // NOT_FOUND; FAILED_PRECONDITION if not running.
  absl::Status Preempt(SequenceId seq);
  // Gives a preempted sequence slots for its remembered tokens again (the
  // server recomputes their KV into out->slot_mapping). FAILED_PRECONDITION
  // unless preempted; RESOURCE_EXHAUSTED (still preempted) when it does not
  // fit (kReservation: its reservation too).
  absl::Status Readmit(SequenceId seq, StepOutput* out);

  // Swap preemption to the host tier. Host mode: copies every block (one
  // memcpy each), releases the device blocks and returns an empty plan.
  // Books-only: allocates the host blocks and returns the device -> host
  // copies for the caller; the sequence is kSwappingOut (its device blocks
  // held) until CompleteSwap. FAILED_PRECONDITION unless running (or with no
  // host tier); RESOURCE_EXHAUSTED when the host tier is full.
  absl::StatusOr<SwapPlan> SwapOut(SequenceId seq);
  // Brings a swapped-out sequence back with every byte intact (new device
  // blocks). Books-only: returns host -> device copies; kSwappingIn until
  // CompleteSwap. FAILED_PRECONDITION unless swapped out; RESOURCE_EXHAUSTED
  // when the device pool is full.
  absl::StatusOr<SwapPlan> SwapIn(SequenceId seq);
  // Books-only: the caller ran the copies of the pending swap; releases the
  // source tier's blocks. FAILED_PRECONDITION unless a swap is pending.
  absl::Status CompleteSwap(SequenceId seq);

  // --- Reading the books ----------------------------------------------

  bool contains(SequenceId seq) const { return sequences_.contains(seq); }
  // NOT_FOUND for an unknown id.
  absl::StatusOr<SequenceState> state(SequenceId seq) const;
  absl::StatusOr<int64_t> num_tokens(SequenceId seq) const;
  // The device block table of a running sequence (valid until the next
  // mutating call); NOT_FOUND, or FAILED_PRECONDITION if not running.
  absl::StatusOr<absl::Span<const BlockId>> block_table(SequenceId seq) const;

  // Names the contents of one sequence's block table: two TableVersions
  // that compare equal (taken from any managers of this process) are of
  // the same sequence of the same manager, whose blocks did not change in
  // between. Unequal versions say nothing (the ids may be the same again).
  // A delta export skips a row by comparing it (block_table_export.h).
  struct TableVersion {
    uint64_t manager = 0;   // instance_id(); 0 in no real version.
    uint64_t sequence = 0;  // The sequence's entry: new on AddSequence and
                            // Fork, never reused by this manager.
    uint64_t table = 0;     // BlockTable::generation() of its table.

    friend bool operator==(const TableVersion& a, const TableVersion& b) {
      return a.manager == b.manager && a.sequence == b.sequence &&
             a.table == b.table;
    }
    friend bool operator!=(const TableVersion& a, const TableVersion& b) {
      return !(a == b);
    }
  };

  // A running sequence's table, length and table version from one lookup
  // (what the kernel exports read per row); valid until the next mutating
  // call. NOT_FOUND, or FAILED_PRECONDITION if not running.
  struct RunningTable {
    absl::Span<const BlockId> blocks;
    int64_t num_tokens = 0;
    TableVersion version;
  };
  absl::StatusOr<RunningTable> running_table(SequenceId seq) const;
  // running_table() without a Status, for per-row loops (the exports): for
  // a running sequence writes *out and returns true; else returns false and
  // leaves *out alone (running_table(seq) then says why). One hash lookup.
  // REQUIRES: out != nullptr.
  bool FindRunningTable(SequenceId seq, RunningTable* out) const {
    auto it = sequences_.find(seq);
    if (it == sequences_.end() || it->second.state != SequenceState::kRunning) {
      return false;
    }
    const Sequence& s = it->second;
    out->blocks = s.table.blocks();
    out->num_tokens = s.num_tokens;
    out->version = TableVersion{instance_id_, s.entry, s.table.generation()};
    return true;
  }

  // Unique among the managers of this process (never 0, never reused).
  uint64_t instance_id() const { return instance_id_; }

  const KVLayout& layout() const { return layout_; }
  int32_t block_tokens() const { return layout_.block_tokens; }
  StorageMode storage() const { return storage_; }
  // Host mode: the device pool (the server writes KV into it); else null.
  KVPool* kv_pool() { return pool_; }
  const KVPool* kv_pool() const { return pool_; }
  // Host mode with a swap tier: the host pool; else null.
  const KVPool* host_pool() const { return host_pool_.get(); }
  const BlockPool& books() const { return *books_; }

  ManagerStats stats() const;
  // Aborts unless every invariant listed with the members holds, including
  // every block's refcount against the tables (when the pool is private).
  void CheckInvariants() const;

 private:
  struct Sequence {
    Sequence(BlockPool* books, uint64_t entry_number)
        : table(books), entry(entry_number) {}
    BlockTable table;  // Device blocks (running; swapping out).
    // TableVersion::sequence: this entry's number, from next_entry_.
    uint64_t entry;
    // Host-tier blocks (swapped out; swapping in / out).
    std::vector<BlockId> host_blocks;
    SequenceState state = SequenceState::kRunning;
    int64_t num_tokens = 0;  // Tokens with slots (remembered when not
                             // running).
    int64_t max_tokens = 0;  // prompt + max_new (kReservation bound).
    // kReservation: blocks this sequence may still take (counted in
    // reserved_for_sequences_).
    int64_t reserved = 0;
    // kReservation: forked (or forked from), so it may need one
    // copy-on-write block more; cleared when it used it.
    bool forked = false;
    // Some of its blocks may have another holder (set by Fork, cleared when
    // the table is rebuilt). Writes into a sequence that shares nothing skip
    // the copy-on-write check: the decode step's common case.
    bool may_share = false;
    // The AppendSlots call that last named it (catches an id given twice).
    uint64_t step_stamp = 0;
  };

  KVCacheManager(const Options& options, std::unique_ptr<KVPool> owned_pool,
                 std::unique_ptr<BlockPool> owned_books,
                 std::unique_ptr<KVPool> host_pool,
                 std::unique_ptr<BlockPool> host_books);

  int64_t BlocksFor(int64_t tokens) const;
  // kReservation: what a sequence may still need: its blocks up to
  // max_tokens, plus one copy-on-write block if forked.
  int64_t ReserveNeed(const Sequence& s) const;
  // Grows or shrinks the reservation so its free part is exactly
  // reserved_for_sequences_ (growing can fail: RESOURCE_EXHAUSTED, and then
  // nothing changed).
  absl::Status SyncReservation();
  // Sets s.reserved to `need`, adjusting the running total.
  void Rereserve(Sequence& s, int64_t need);
  // Gives up s's reservation share (a shrink: cannot fail).
  void DropShare(Sequence& s);
  // Makes s running with device blocks for `num_tokens` tokens (and, with
  // kReservation, its share reserved) and writes their slots to `out`. On
  // error nothing changed except s.state, which the caller restores.
  absl::Status Place(Sequence& s, int64_t num_tokens, StepOutput* out);
  bool has_host_tier() const;
  absl::StatusOr<Sequence*> Find(SequenceId seq);
  absl::StatusOr<const Sequence*> Find(SequenceId seq) const;
  // Appends the flat slots of tokens [first, first + n) of `table`.
  void AddSlots(const BlockTable& table, int64_t first, int64_t n,
                StepOutput* out) const;
  // Host mode: runs and completes the copies; books-only: leaves them.
  void FinishCopies(StepOutput* out);
  BlockPool& host_books();

  const uint64_t instance_id_;
  const KVLayout layout_;
  const StorageMode storage_;
  const AdmissionMode admission_;
  const double watermark_;

  std::unique_ptr<KVPool> owned_pool_;
  std::unique_ptr<BlockPool> owned_books_;  // Books-only device books.
  KVPool* pool_;                            // Host mode: device pool.
  BlockPool* books_;                        // Device books (never null).
  std::unique_ptr<KVPool> host_pool_;       // Host mode swap tier.
  std::unique_ptr<BlockPool> host_books_;   // Swap tier books (or null).

  // Invariants (CheckInvariants):
  //  - a kRunning or kSwappingOut sequence's table covers its tokens:
  //    table.num_blocks() == BlocksFor(num_tokens); others hold no device
  //    blocks, except kSwappingIn (its new device table, already covering);
  //  - host_blocks.size() == BlocksFor(num_tokens) while swapped out or
  //    swapping, else empty;
  //  - kReservation: reserved == ReserveNeed for sequences holding a share
  //    (running, swapping in), 0 otherwise; reserved_for_sequences_ is
  //    their sum, and SyncReservation() keeps the reservation's free part
  //    equal to it after every call;
  //  - num_running_ == #{kRunning};
  //  - every entry number is distinct and in [1, next_entry_] (so a
  //    TableVersion never names two sequences).
  absl::flat_hash_map<SequenceId, Sequence> sequences_;
  uint64_t next_entry_ = 0;                 // The last entry number handed out.
  std::optional<Reservation> reservation_;  // kReservation only.
  int64_t reserved_for_sequences_ = 0;
  int32_t num_running_ = 0;

  int64_t preemptions_ = 0;
  int64_t swap_outs_ = 0;
  int64_t swap_ins_ = 0;
  int64_t swapped_blocks_ = 0;
  int64_t swapped_bytes_ = 0;
  int64_t cow_copies_ = 0;

  // Scratch for AppendSlots (kept to avoid allocation per step).
  uint64_t step_stamp_ = 0;
  std::vector<Sequence*> step_sequences_;
  std::vector<WriteTarget> step_targets_;
  std::vector<TableGrowth> step_growth_;
  std::vector<BlockId> step_tails_;  // Per request: its partial tail, or
                                     // an invalid id.
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_KV_CACHE_MANAGER_H_
