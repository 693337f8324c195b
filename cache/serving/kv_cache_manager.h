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
// Prefix caching (Options::prefix_caching): requests that share a prefix
// share its KV blocks. Give the prompt's token ids (AddSequence and
// CanAdmit's token overloads) and each new token's id (SlotRequest::
// token_ids), and commit (SlotRequest::commit or CommitTokens) how many of
// a sequence's tokens have their KV written and are final: only then do its
// full blocks become matchable. AddSequence looks the prompt up and pins the
// verified hits in one call; out->num_cached_tokens says where the server's
// prefill starts (a hit always leaves the last prompt token to compute).
// Freed cached blocks stay matchable until an allocation needs them (LRU).
//
//   KVCacheManager::Options options{.layout = layout, .num_blocks = 4096};
//   options.prefix_caching.enabled = true;
//   std::unique_ptr<KVCacheManager> cm = *KVCacheManager::Create(options);
//   const int32_t prompt[] = {101, 7592, 2088, 102};
//   PrefixKeys keys{.tenant_salt = 42};            // One salt per tenant.
//   StepOutput step;
//   PKV_RETURN_IF_ERROR(cm->AddSequence(/*seq=*/1, prompt, 16, &step, keys));
//   // ... prefill tokens [step.num_cached_tokens, 4) into step's slots ...
//   const int32_t sampled[] = {2023};
//   const SlotRequest decode[] = {
//       {.seq = 1, .num_tokens = 1, .token_ids = sampled, .commit = 4}};
//   PKV_RETURN_IF_ERROR(cm->AppendSlots(decode, &step));  // Commits 4.
//
// Remote tier (Options::prefix_caching.remote, cache/remote/): on a local
// miss AddSequence and Readmit look the rest of the chain up in the store
// shared with other replicas. Host mode loads and stores itself; books-only
// returns a load list (StepOutput::remote_load; the sequence is kLoading
// until CompleteRemoteLoads) and a pinned store list (TakeRemoteStores).
//
// Thread safety: a manager is used by one thread at a time. Several managers
// may share one KVPool made with PoolConcurrency::kShared (Options::pool),
// each on its own thread with its own sequences. With prefix caching they
// share its index, so their blocks must hold the same layers: Create
// refuses (FAILED_PRECONDITION) a manager whose layout or layer groups
// differ from those the index was enabled with (BlockContent). Two models
// with one layout and one grouping are told apart only by tenant salts.
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
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "allocator/token_blocks.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/pending_remote_stores.h"
#include "cache/serving/sequence_prefix.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/memory_resource.h"

namespace pagedkv {

class RemoteTier;  // cache/remote/remote_tier.h
namespace internal {
class GroupedSequences;  // cache/serving/grouped_sequences.h
}  // namespace internal

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
  kLoading,      // Books-only: remote loads pending (CompleteRemoteLoads).
};

// "running", "preempted", "swapped out", "swapping out", "swapping in",
// "loading": the words the manager's error messages use.
const char* SequenceStateName(SequenceState state);

// One sequence's share of a batched AppendSlots.
struct SlotRequest {
  SequenceId seq = 0;
  int32_t num_tokens = 0;  // New tokens; > 0.
  // Prefix caching, for a sequence added with its token ids: the new
  // tokens' ids (num_tokens of them), or none. A server that keeps the ids
  // itself may leave them out from some step on and give them later with
  // TokenCommit::token_ids (at the sequence's end, say): its decode steps
  // then cost what they cost without prefix caching, and its blocks become
  // matchable only when their ids arrive. Once ids are missing, a step that
  // gives ids again is INVALID_ARGUMENT until CommitTokens has caught up.
  // Ignored for other sequences.
  absl::Span<const int32_t> token_ids = {};
  // Prefix caching: tokens [0, commit) of the sequence have their KV written
  // and are final (at most the tokens it held before this call; never less
  // than its last commit); -1 leaves the commit point. Draft tokens of
  // speculative decoding are committed only once accepted. The commit
  // takes effect before the step's window groups release blocks, so what
  // leaves a window in the committing step is cached too.
  int64_t commit = -1;
};

// CommitTokens' entry: tokens [0, num_tokens) of `seq` are final.
struct TokenCommit {
  SequenceId seq = 0;
  int64_t num_tokens = 0;
  // The ids of the tokens that follow the last id the manager has (steps
  // that left SlotRequest::token_ids out), appended before the commit; at
  // most up to the sequence's tokens. Empty: none.
  absl::Span<const int32_t> token_ids = {};
};

// The extra keys of a sequence's blocks (see BlockExtraKeys).
struct PrefixKeys {
  uint64_t tenant_salt = 0;
  uint64_t adapter_id = 0;
  absl::Span<const MultimodalSpan> multimodal = {};
};

// Prefix-cache counters of a manager (request-level) and its pool.
struct PrefixCacheStats {
  // AddSequence calls that gave token ids, their prompt tokens and blocks,
  // and how many of those were served from the cache.
  int64_t queries = 0;
  int64_t query_tokens = 0;
  int64_t hit_tokens = 0;
  int64_t query_blocks = 0;  // Full prompt blocks.
  int64_t hit_blocks = 0;
  // Blocks Readmit and SwapIn found cached (recompute and copies saved).
  int64_t rehit_blocks = 0;
  // Dedup: committed blocks switched to an equal cached block.
  int64_t switched_blocks = 0;
  // The pool's index (shared by the managers of a shared pool).
  int32_t cached_blocks = 0;
  int32_t evictable_blocks = 0;
  int64_t stored_blocks = 0;
  int64_t evicted_blocks = 0;
  int64_t dropped_blocks = 0;

  double hit_rate() const {
    return query_tokens > 0 ? static_cast<double>(hit_tokens) / query_tokens
                            : 0.0;
  }
};

// The manager's remote-tier counters (the tier's own, RemoteTier::stats(),
// count round trips, bytes, verify failures by kind, timeouts and dropped
// write-behind stores). All zero without a tier.
struct RemoteManagerStats {
  // Blocks loaded and published as local cached blocks (host mode: by the
  // manager; books-only: reported by CompleteRemoteLoads), at admission and
  // at readmission.
  int64_t loaded_blocks = 0;
  // Books-only: load lists handed out, their blocks, and the listed blocks
  // the caller did not load (failed, timed out or refused: recomputed).
  int64_t load_lists = 0;
  int64_t listed_blocks = 0;
  int64_t failed_blocks = 0;
  // Books-only: published blocks put on the store list, those left off
  // because the list was full (max_pending_remote_stores), and those left
  // off because the tier has them already (RemoteTier::Knows).
  int64_t store_listed_blocks = 0;
  int64_t store_dropped_blocks = 0;
  int64_t store_known_blocks = 0;
  int32_t pending_store_blocks = 0;  // Listed, not yet taken.
};

// Block copies a swap needs: pair i copies src[i] of one tier into dst[i]
// of the other.
//
// With layer groups (Options::layer_groups) a block holds one group's
// layers, so the pairs are split by group: group_offsets has
// num_layer_groups() + 1 entries, and the pairs of group g are
// [group_offsets[g], group_offsets[g + 1]), in the order of that group's
// table. Only live entries are copied: a window group's holes have no pair,
// and the tables SwapIn rebuilds have the same holes. Without groups
// group_offsets is empty and every pair copies a whole block.
//
// Example: block_tokens 4, group 0 full, group 1 a window of 4 tokens; a
// sequence of 10 tokens whose last step started at token 9 reads tokens
// [6, 9] in group 1, so that group released entry 0:
//
//   group_table(seq, 0).blocks == {3, 5, 8}
//   group_table(seq, 1).blocks == {-1, 6, 9}        // -1: a hole.
//   SwapOut(seq) == {.src = {3, 5, 8, 6, 9},
//                    .dst = {h0, h1, h2, h3, h4},    // Host blocks.
//                    .group_offsets = {0, 3, 5}}
//
// Pairs 0..2 copy group 0's KV tensor, pairs 3..4 group 1's. SwapIn then
// returns {h0, ..., h4} -> five new device blocks d0..d4, split {0, 3, 5},
// and group 1's table is {-1, d3, d4} again. With prefix caching, entries
// still cached come back pinned and have no pair: if the sequence had
// committed 8 tokens and blocks 3, 5 and 6 stayed cached, SwapIn returns
// {h2, h4} -> {d2, d4}, split {0, 1, 2}, and the tables are {3, 5, d2}
// and {-1, 6, d4}.
struct SwapPlan {
  std::vector<BlockId> src;  // Device blocks (out) or host blocks (in).
  std::vector<BlockId> dst;  // Host blocks (out) or device blocks (in).
  std::vector<int32_t> group_offsets;  // Layer groups only: G + 1 entries.
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
  PrefixCacheStats prefix = {};  // All zero without prefix caching.
  RemoteManagerStats remote = {};
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

    struct PrefixCaching {
      bool enabled = false;
      // How blocks are keyed; nullptr: Xxh3BlockHasher(). Managers sharing
      // a pool must use the same hasher (and equal layouts).
      const BlockHasher* hasher = nullptr;
      // Events kept for TakeEvents(); 0 records none. On a shared pool the
      // queue is the pool's: drain it from one manager.
      int32_t max_pending_events = 0;
      // The remote tier shared with other replicas (cache/remote/
      // remote_tier.h; must outlive the manager), or nullptr. On a local
      // miss AddSequence and Readmit look the rest of the chain up there.
      // Host mode: they load the verified hits (counted as cached tokens)
      // and every newly published block is stored write-behind. Books-only:
      // they hand the caller a load list (StepOutput::remote_load, then
      // CompleteRemoteLoads), and published blocks go on a store list
      // (TakeRemoteStores). SwapIn needs no tier: the host tier holds the
      // sequence's own blocks.
      RemoteTier* remote = nullptr;
      // Books-only with a remote tier: blocks the store list may hold
      // between two TakeRemoteStores calls (each pinned until the list
      // taken is marked done; lists taken and not yet done are not
      // counted here); past it, stores are dropped and counted. > 0.
      int32_t max_pending_remote_stores = 1024;
    };
    PrefixCaching prefix_caching = {};

    // Layer groups (layer_groups.h; docs/design-notes.md "Sliding-window
    // layer groups"): empty, one table per sequence for all layers; else
    // one table per group per sequence, and a block holds one group's
    // layers (GroupBlockLayout). Window groups return the blocks that fall
    // out of their window. AppendSlots' and AddSequence's slots are then
    // group-major (StepOutput::group_stride); tables are read per group
    // (group_table, ExportDenseGroupBlockTables). Fork shares every
    // group's table, with copy-on-write of the shared last block per group
    // (StepOutput::copies). kReservation reserves each sequence's worst
    // case per group (see max_step_tokens). In kHost the manager's pool
    // has GroupBlockLayout blocks (a given pool must too): the server writes
    // group g's layers (0 .. layers per group) into group g's slots, and
    // the manager runs the copies. The host swap tier copies each group's
    // live entries (SwapPlan::group_offsets). Prefix caching works per
    // group: a hit (num_cached_tokens) covers the window the next token
    // reads in every group, with holes below (grouped_sequences.h). Not
    // with groups yet: a remote tier (UNIMPLEMENTED at Create).
    std::vector<LayerGroup> layer_groups = {};
    // Layer groups with kReservation: the most tokens one AppendSlots
    // request may give a sequence (a prefill chunk, a speculative draft),
    // which a window group's reservation covers: a step of k tokens holds
    // up to ceil((W - 1 + k) / block_tokens) + 1 blocks of a window of W.
    // A larger step is OUT_OF_RANGE. 0: no bound, and window groups
    // reserve as full groups do. >= 0; ignored otherwise.
    int32_t max_step_tokens = 0;
  };

  // InvalidArgument for a bad layout, num_blocks <= 0 (without a pool), a
  // watermark outside [0, 1), num_host_blocks < 0, a pool in books-only
  // mode or with another layout, bad layer_groups or a negative
  // max_step_tokens with them; Unimplemented for layer groups with a mode
  // they do not support yet; FailedPrecondition when a shared pool's
  // prefix index holds blocks of another layout or layer groups
  // (BlockContent) or other events options; ResourceExhausted when memory
  // runs out. Every check that can fail runs before the pool's prefix
  // index is turned on, so a failed Create leaves a shared pool as it was.
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
  // With prefix caching, counts the prompt's cached prefix as held (a hit
  // in use costs no block; a cached free one costs the free block it is).
  Admission CanAdmit(absl::Span<const int32_t> prompt, int64_t max_new_tokens,
                     const PrefixKeys& keys = {}) const;

  // Admits sequence `seq` and gives its prompt slots (out is reset first).
  // ALREADY_EXISTS for a known id; INVALID_ARGUMENT for prompt_tokens <= 0,
  // max_new_tokens < 0 or more than kMaxSequenceTokens in all;
  // RESOURCE_EXHAUSTED when CanAdmit is not kAdmit
  // (the message says which). Nothing changes on error.
  absl::Status AddSequence(SequenceId seq, int64_t prompt_tokens,
                           int64_t max_new_tokens, StepOutput* out);
  // The same with the prompt's token ids. With prefix caching, pins the
  // verified cached prefix (whole blocks, leaving at least the last token)
  // and gives slots only for the rest: out->num_cached_tokens tokens are
  // served from the cache, out->slot_mapping holds the others'. Also
  // INVALID_ARGUMENT for a multimodal span outside the prompt. A sequence
  // added by count instead is never cached and matches nothing.
  absl::Status AddSequence(SequenceId seq, absl::Span<const int32_t> prompt,
                           int64_t max_new_tokens, StepOutput* out,
                           const PrefixKeys& keys = {});

  // Prefix caching: commits tokens of running sequences (see
  // SlotRequest::commit), first appending the ids each entry gives,
  // publishing their newly final full blocks whose ids are known. All or
  // nothing: NOT_FOUND, FAILED_PRECONDITION (not running), OUT_OF_RANGE
  // for a count past the sequence's tokens or below its last commit,
  // INVALID_ARGUMENT for ids past its tokens or a sequence given ids twice
  // in one call.
  //
  // A server that keeps the token ids (decode steps without them) publishes
  // a finished sequence's blocks this way before freeing it:
  //
  //   const TokenCommit done{.seq = id, .num_tokens = written,
  //                          .token_ids = generated_ids};
  //   PKV_RETURN_IF_ERROR(manager->CommitTokens(absl::MakeConstSpan(&done, 1)));
  //   PKV_RETURN_IF_ERROR(manager->Free(id));
  absl::Status CommitTokens(absl::Span<const TokenCommit> commits);

  // Prefix caching: the events queued since the last call (prefix_event.h),
  // and a reset that makes every cached block unmatchable (blocks in use
  // keep their KV; sequences republish what they commit next).
  std::vector<PrefixEvent> TakeEvents();
  void ResetPrefixCache();
  bool prefix_caching() const { return hasher_ != nullptr; }

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
  // a books-only swap or remote load is pending.
  absl::Status Free(SequenceId seq);

  // Speculative-decoding rollback: keeps the first new_length tokens and
  // frees the whole blocks past them. OUT_OF_RANGE unless 0 <= new_length <=
  // num_tokens(seq); NOT_FOUND; FAILED_PRECONDITION if not running;
  // kReservation: RESOURCE_EXHAUSTED (nothing changed) when blocks it drops
  // stay live in a fork, or its new tail is a shared or cached block (the
  // next write copies it), and the pool cannot reserve the blocks it will
  // need again for them.
  absl::Status Truncate(SequenceId seq, int64_t new_length);

  // --- Preemption -----------------------------------------------------

  // Recompute preemption: frees the blocks, remembers the length.
  // NOT_FOUND; FAILED_PRECONDITION if not running.
  absl::Status Preempt(SequenceId seq);
  // Gives a preempted sequence slots for its remembered tokens again (the
  // server recomputes their KV into out->slot_mapping). With prefix
  // caching, blocks still cached are pinned instead (out->num_cached_tokens,
  // always leaving the last token) and its commit point drops to them: the
  // server commits the recomputed tokens again. With a remote tier, the
  // blocks past the local hits are looked up there as AddSequence does
  // (host mode: loaded; books-only: a load list, kLoading). FAILED_PRECONDITION
  // unless preempted; RESOURCE_EXHAUSTED (still preempted) when it does not
  // fit (kReservation: its reservation too), found before any hit is
  // pinned, so no block is taken or moved in the eviction order. On a pool
  // other managers share, one may take the room between the check and the
  // placement: the hits are then released again (and a failed reservation
  // counts as a failed allocation).
  absl::Status Readmit(SequenceId seq, StepOutput* out);

  // Swap preemption to the host tier. Host mode: copies every block (one
  // memcpy each), releases the device blocks and returns an empty plan.
  // Books-only: allocates the host blocks and returns the device -> host
  // copies for the caller; the sequence is kSwappingOut (its device blocks
  // held) until CompleteSwap. FAILED_PRECONDITION unless running (or with no
  // host tier); RESOURCE_EXHAUSTED when the host tier is full. kReservation:
  // gives up its reservation as Preempt does (SwapIn takes it back). With
  // layer groups: one host block per live entry, split per group
  // (SwapPlan::group_offsets).
  absl::StatusOr<SwapPlan> SwapOut(SequenceId seq);
  // Brings a swapped-out sequence back with every byte intact (new device
  // blocks; with prefix caching, its blocks still cached are pinned and
  // only the others copied; its commit point stays where the server left
  // it, unlike Readmit's). Books-only: returns host -> device copies;
  // kSwappingIn until CompleteSwap. FAILED_PRECONDITION unless swapped out;
  // RESOURCE_EXHAUSTED (still swapped out) when the device pool is full
  // (kReservation: when its reservation does not fit). With layer groups
  // the tables come back with their holes, pairs split as SwapOut's (and
  // the cached blocks pinned lie within its computed tokens).
  absl::StatusOr<SwapPlan> SwapIn(SequenceId seq);
  // Books-only: the caller ran the copies of the pending swap; releases the
  // source tier's blocks. FAILED_PRECONDITION unless a swap is pending.
  absl::Status CompleteSwap(SequenceId seq);

  // --- Books-only remote tier -----------------------------------------
  //
  // Loads. When AddSequence or Readmit find blocks in the remote tier past
  // the local hits, out->remote_load lists them with their destination
  // blocks (already the sequence's), the sequence is kLoading and
  // out->slot_mapping is empty (out->num_cached_tokens counts the local
  // hits only). The caller fetches, verifies and copies them
  // (RemoteTier::Load of remote_load.chain() into staging memory, then an
  // upload), and reports how many leading blocks it loaded. Until then
  // the sequence owns the blocks and nothing else can take them: Free,
  // AppendSlots, Preempt, Fork, ... of a loading sequence are
  // FAILED_PRECONDITION; a caller that gives up waits for its copies to
  // stop and completes with 0. The example is remote_load.h's. The tier is
  // used by one thread at a time: load on the manager's thread, or through
  // a second RemoteTier over its own store connection.
  //
  // Blocks [0, num_loaded_blocks) of the list hold their verified KV: they
  // are published as local cached blocks and served (num_cached_tokens);
  // the rest, and the rest of the prompt, are computed into out's slots
  // (as AddSequence's). The sequence is running again. NOT_FOUND;
  // FAILED_PRECONDITION unless kLoading (also a second completion);
  // OUT_OF_RANGE unless 0 <= num_loaded_blocks <= the listed blocks.
  // Nothing changes on error.
  absl::Status CompleteRemoteLoads(SequenceId seq, int32_t num_loaded_blocks,
                                   StepOutput* out);

  // Stores. Blocks published since the last call, for the caller to copy
  // out and hand to RemoteTier::Store; each stays pinned (never reused)
  // until the returned list's MarkDone() or destruction
  // (pending_remote_stores.h). Pinned blocks count as used, so take them
  // every step; past Options::prefix_caching.max_pending_remote_stores new
  // ones are dropped (counted). Empty in host mode (the manager stores
  // itself) and without a tier. REQUIRES: the result does not outlive the
  // manager.
  PendingRemoteStores TakeRemoteStores();
  // The same into `stores`, a list the caller keeps and MarkDone()s each
  // step: the two lists swap, so the caller's emptied buffers become the
  // manager's next list and a steady server reuses them instead of
  // allocating a new list every step.
  //
  //   PendingRemoteStores stores;  // Kept across steps.
  //   manager.TakeRemoteStores(&stores);
  //   ... copy out, RemoteTier::Store, as above ...
  //   stores.MarkDone();
  //
  // REQUIRES: stores is empty (its pins released: MarkDone first).
  void TakeRemoteStores(PendingRemoteStores* stores);

  // --- Reading the books ----------------------------------------------

  bool contains(SequenceId seq) const {
    return windows_ == nullptr ? sequences_.contains(seq)
                               : GroupedContains(seq);
  }
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

  // Layer groups: how many (0 without), and one group's table of a running
  // sequence: entries (blocks that fell out of a window are holes, invalid
  // ids), length and version (TableVersion::table is that group table's
  // generation). NOT_FOUND, FAILED_PRECONDITION if not running or the
  // manager has no groups, OUT_OF_RANGE for a bad group.
  int32_t num_layer_groups() const;
  absl::StatusOr<RunningTable> group_table(SequenceId seq, int32_t group) const;
  // Window groups: blocks their windows released, in all.
  int64_t window_released_blocks() const;

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
  // Prefix caching: what a sequence added with token ids keeps.
  using PrefixState = SequencePrefix;  // sequence_prefix.h

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
    // Set when added with token ids to a prefix-caching manager. Inline,
    // not behind a pointer: the decode step reads its commit point and
    // appends a token id for every sequence (a pointer chase per sequence
    // cost 8% of the step, measured).
    std::optional<PrefixState> prefix;
    // kLoading: the pending remote load is chain blocks [load_first,
    // load_first + load_blocks) of its table (load_blocks > 0 exactly while
    // kLoading), found at admission or at readmission. Last: the decode
    // step's fields above keep their places.
    int32_t load_first = 0;
    int32_t load_blocks = 0;
    bool load_at_admission = false;
  };

  KVCacheManager(const Options& options, std::unique_ptr<KVPool> owned_pool,
                 std::unique_ptr<BlockPool> owned_books,
                 std::unique_ptr<KVPool> host_pool,
                 std::unique_ptr<BlockPool> host_books);

  int64_t BlocksFor(int64_t tokens) const;
  // AddSequence's RESOURCE_EXHAUSTED for a request CanAdmit did not admit.
  absl::Status NotAdmitted(SequenceId seq, int64_t prompt_tokens,
                           int64_t max_new_tokens, Admission admission) const;
  // CanAdmit for a prompt of which hits_in_use leading blocks are cached
  // blocks in use (held already: they cost no free block).
  Admission AdmitWithHits(int64_t prompt_tokens, int64_t max_new_tokens,
                          int64_t hits_in_use) const;
  // Prefix caching: the prompt's verified cached prefix, from its
  // matchable blocks (all but the last token). Leaves the prompt's
  // PrefixState in scratch_prefix_ (AddSequence takes it over).
  BlockPool::PrefixMatch MatchPrompt(absl::Span<const int32_t> prompt,
                                     const PrefixKeys& keys) const;
  // kReservation: what a sequence may still need: its blocks up to
  // max_tokens, plus one copy-on-write block if forked. The first counts
  // the blocks its state holds; the second the `held` ones (a Readmit's
  // hits before it pins them).
  int64_t ReserveNeed(const Sequence& s) const;
  int64_t ReserveNeed(const Sequence& s, int64_t held) const;
  // Options::prefix_caching.hasher, or XXH3 when none is given.
  static const BlockHasher& PrefixHasher(const Options& options);
  // Grows or shrinks the reservation so its free part is exactly
  // reserved_for_sequences_ (growing can fail: RESOURCE_EXHAUSTED, and then
  // nothing changed).
  absl::Status SyncReservation();
  // Sets s.reserved to `need`, adjusting the running total.
  void Rereserve(Sequence& s, int64_t need);
  // Gives up s's reservation share (a shrink: cannot fail).
  void DropShare(Sequence& s);
  // Makes s running with device blocks for `num_tokens` tokens (and, with
  // kReservation, its share reserved) and writes the slots of the tokens
  // past those its table already holds (pinned cache hits) to `out`. On
  // error nothing changed except s.state, which the caller restores (and
  // the hits, which the caller releases).
  absl::Status Place(Sequence& s, int64_t num_tokens, StepOutput* out);
  // An admitted sequence's new entry (no blocks yet), allowed max_tokens.
  // REQUIRES: seq not in sequences_.
  Sequence& InsertSequence(SequenceId seq, int64_t max_tokens);

  // --- Prefix caching (kv_cache_manager_prefix.cc) ---
  // Full blocks of p whose token ids it has (all full blocks unless steps
  // left their ids out): the most it can match or publish.
  int64_t BlocksWithIds(const PrefixState& p) const {
    return static_cast<int64_t>(p.tokens.size()) / layout_.block_tokens;
  }
  // Hashes of full blocks [0, n) of p (computes the missing ones).
  void EnsureHashes(PrefixState& p, int64_t n) const;
  // The chain of blocks [first, first + n) of p.
  BlockPool::PrefixChain Chain(const PrefixState& p, int64_t first,
                               int64_t n) const;
  // The verified cached prefix of p's first max_blocks blocks, keying
  // blocks only as far as the match goes (in growing steps).
  BlockPool::PrefixMatch MatchHashing(PrefixState& p, int64_t max_blocks) const;
  // Pins p's cached prefix of at most max_blocks blocks into s.table
  // (empty). Returns the hits. known_hits >= 0: a match just made said so
  // (its keys are computed); pins at most that many without matching again.
  int32_t PinHits(Sequence& s, int64_t max_blocks, int64_t known_hits = -1);
  // Readmit and SwapIn (`call`) of preempted or swapped-out sequence seq
  // (s): the cached prefix of its first max_hits blocks, matched without
  // pinning, or RESOURCE_EXHAUSTED (nothing changed) when the blocks Place
  // would then take, plus a free block per revived hit, are not free.
  absl::StatusOr<BlockPool::PrefixMatch> MatchWithRoom(SequenceId seq,
                                                       Sequence& s,
                                                       int64_t max_hits,
                                                       const char* call);
  // Publishes s's committed full blocks not yet published; kStore also
  // sends them to the remote tier (kAlreadyRemote: they came from it).
  enum class RemoteStore { kStore, kAlreadyRemote };
  void PublishCommitted(Sequence& s,
                        RemoteStore remote_store = RemoteStore::kStore);
  // --- Layer groups (kv_cache_manager_window.cc) ---
  // Create's check of the options that go with layer groups
  // (INVALID_ARGUMENT, UNIMPLEMENTED), made before the pool is touched.
  // REQUIRES: ValidateLayerGroups(options.layout, options.layer_groups).ok().
  static absl::Status CheckLayerGroups(const Options& options);
  // Makes windows_ (with layer groups). REQUIRES: CheckLayerGroups passed.
  absl::Status AttachLayerGroups(const Options& options);
  bool GroupedContains(SequenceId seq) const;
  // UNIMPLEMENTED for `op` on a manager with layer groups.
  absl::Status GroupsUnimplemented(const char* op) const;
  // SwapOut (out) or SwapIn with layer groups; host mode copies the bytes
  // and completes the swap, returning an empty plan.
  absl::StatusOr<SwapPlan> GroupedSwap(SequenceId seq, bool out);
  // --- Remote tier (kv_cache_manager_remote.cc) ---
  // Create's check of Options::prefix_caching.remote (INVALID_ARGUMENT),
  // made before the pool is touched.
  static absl::Status CheckRemote(const Options& options);
  // After Place: loads blocks [local_hits, ...) of s's prompt from the
  // remote tier into its fresh blocks, publishes them, and drops their
  // slots from *out. Returns the blocks loaded (0 without a tier).
  int32_t FillFromRemote(Sequence& s, int32_t local_hits, StepOutput* out);
  // Books-only, after Place: looks blocks [local_hits, ...) of s's chain up
  // in the tier; on hits lists them in out->remote_load, empties out's
  // slots and makes s kLoading. Returns whether it did.
  bool BeginRemoteLoad(Sequence& s, int32_t local_hits, StepOutput* out);
  // Queues blocks [first, first + n) of s, just published, for the store
  // (host mode: to the tier; books-only: on the store list).
  void StoreToRemote(const Sequence& s, int64_t first, int64_t n);
  // Truncate's share: p forgets tokens past new_length (a published tail
  // block stays published; its next write copies it).
  void TruncatePrefix(Sequence& s, int64_t new_length);
  bool has_host_tier() const;
  absl::StatusOr<Sequence*> Find(SequenceId seq);
  absl::StatusOr<const Sequence*> Find(SequenceId seq) const;
  // Appends the flat slots of tokens [first, first + n) of `table`; Write
  // stores them at dst[0, n) (REQUIRES: table holds the tokens).
  void AddSlots(const BlockTable& table, int64_t first, int64_t n,
                StepOutput* out) const;
  void WriteSlots(const BlockTable& table, int64_t first, int64_t n,
                  int64_t* dst) const;
  // Host mode: runs and completes the copies; books-only: leaves them.
  void FinishCopies(StepOutput* out);
  BlockPool& host_books();

  const uint64_t instance_id_;
  const KVLayout layout_;
  const TokenBlocks blocks_of_;  // layout_.block_tokens' arithmetic.
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
  //  - a kLoading sequence holds device blocks for all its tokens, and
  //    load_blocks > 0 with load_first + load_blocks <= its matchable
  //    blocks ((num_tokens - 1) / block_tokens); others have load_blocks 0;
  //    it has committed exactly its local hits (load_first blocks) and
  //    published them (or, after a ResetPrefixCache, fewer: from 0 again),
  //    and none of its destination blocks is matchable;
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

  // Layer groups: every sequence lives there (sequences_ stays empty).
  std::unique_ptr<internal::GroupedSequences> windows_;

  // Prefix caching (null hasher_: off).
  const BlockHasher* hasher_ = nullptr;
  RemoteTier* remote_ = nullptr;     // Borrowed.
  PrefixCacheStats prefix_stats_;    // The manager's own counters.
  RemoteManagerStats remote_stats_;  // (pending_store_blocks unused.)
  int32_t max_pending_remote_stores_ = 0;
  // Books-only: published blocks for TakeRemoteStores, each pinned. After
  // the pools: released before them.
  PendingRemoteStores pending_stores_;
  mutable PrefixState scratch_prefix_;  // CanAdmit / AddSequence.
  std::vector<BlockId> scratch_blocks_;
  std::vector<BlockPool::PrefixSwitch> scratch_switches_;
  // PublishCommitted's table indexes not to store (published before).
  std::vector<int64_t> scratch_skips_;

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
