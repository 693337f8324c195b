#include "cache/serving/kv_cache_manager.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/sequence_state_error.h"

namespace pagedkv {
const char* SequenceStateName(SequenceState state) {
  switch (state) {
    case SequenceState::kRunning:
      return "running";
    case SequenceState::kPreempted:
      return "preempted";
    case SequenceState::kSwappedOut:
      return "swapped out";
    case SequenceState::kSwappingOut:
      return "swapping out";
    case SequenceState::kSwappingIn:
      return "swapping in";
    case SequenceState::kLoading:
      return "loading";
  }
  return "?";
}

namespace {

// dst[k] = first + k for k in [0, n): a block's run of slots. Two slots per
// 16-byte store where the compiler has vector extensions (gcc -O2 does not
// vectorize the plain loop; this halves its stores, measured 0.4 vs 0.53 us
// for a 1,024-token prompt).
inline void FillConsecutive(int64_t first, int64_t n, int64_t* dst) {
  int64_t k = 0;
#if defined(__GNUC__)
  typedef int64_t Pair __attribute__((vector_size(16)));
  Pair pair = {first, first + 1};
  for (; k + 2 <= n; k += 2) {
    std::memcpy(dst + k, &pair, sizeof(pair));
    pair += 2;
  }
#endif
  for (; k < n; ++k) dst[k] = first + k;
}

// Process-wide, so a TableVersion of one manager never equals another's.
uint64_t NextInstanceId() {
  static std::atomic<uint64_t> last{0};
  return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

}  // namespace

using internal::NotRunning;

// ---------------------------------------------------------------------------
// Creation

absl::StatusOr<std::unique_ptr<KVCacheManager>> KVCacheManager::Create(
    const Options& options) {
  PKV_RETURN_IF_ERROR(ValidateLayerGroups(options.layout, options.layer_groups));
  PKV_RETURN_IF_ERROR(options.layout.Validate());
  if (!(options.watermark >= 0 && options.watermark < 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "watermark must be in [0, 1), got %g", options.watermark));
  }
  if (options.num_host_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "num_host_blocks must be >= 0, got %d", options.num_host_blocks));
  }
  if (options.prefix_caching.max_pending_remote_stores <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prefix_caching.max_pending_remote_stores must be > 0, got %d",
        options.prefix_caching.max_pending_remote_stores));
  }
  if (options.pool == nullptr && options.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_blocks must be > 0, got %d", options.num_blocks));
  }
  // Before the pool's prefix index is turned on (below): a Create failing
  // after it would leave a shared pool's index bound to these blocks.
  PKV_RETURN_IF_ERROR(CheckRemote(options));
  PKV_RETURN_IF_ERROR(CheckLayerGroups(options));
  std::unique_ptr<KVPool> owned_pool;
  std::unique_ptr<BlockPool> owned_books;
  std::unique_ptr<KVPool> host_pool;
  std::unique_ptr<BlockPool> host_books;
  // A block holds one group's layers (the model's layout without groups).
  const KVLayout block_layout =
      GroupBlockLayout(options.layout, options.layer_groups);
  if (options.storage == StorageMode::kBooksOnly) {
    if (options.pool != nullptr) {
      return absl::InvalidArgumentError(
          "a books-only manager takes no KVPool (the bytes live elsewhere)");
    }
    PKV_ASSIGN_OR_RETURN(
        owned_books, BlockPool::Create({.num_blocks = options.num_blocks,
                                        .concurrency = options.concurrency}));
    if (options.num_host_blocks > 0) {
      PKV_ASSIGN_OR_RETURN(
          host_books,
          BlockPool::Create({.num_blocks = options.num_host_blocks}));
    }
  } else {
    if (options.pool != nullptr) {
      if (options.pool->layout() != block_layout) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "the pool's layout (%s) is not the manager's block layout (%s)",
            options.pool->layout().ToString(), block_layout.ToString()));
      }
    } else {
      PKV_ASSIGN_OR_RETURN(owned_pool,
                           KVPool::Create({.layout = block_layout,
                                           .num_blocks = options.num_blocks,
                                           .concurrency = options.concurrency,
                                           .memory = options.memory}));
    }
    if (options.num_host_blocks > 0) {
      PKV_ASSIGN_OR_RETURN(
          host_pool, KVPool::Create({.layout = block_layout,
                                     .num_blocks = options.num_host_blocks,
                                     .memory = options.memory}));
    }
  }
  std::unique_ptr<KVCacheManager> manager(
      new KVCacheManager(options, std::move(owned_pool), std::move(owned_books),
                         std::move(host_pool), std::move(host_books)));
  if (options.prefix_caching.enabled) {
    PKV_RETURN_IF_ERROR(manager->books_->EnablePrefixCache(
        {.block_tokens = options.layout.block_tokens,
         .max_pending_events = options.prefix_caching.max_pending_events,
         .content = BlockContent(options.layout, options.layer_groups)}));
    manager->hasher_ = &PrefixHasher(options);
  }
  manager->remote_ = options.prefix_caching.remote;
  PKV_RETURN_IF_ERROR(manager->AttachLayerGroups(options));
  // With layer groups the grouped books keep their own reservation.
  if (manager->admission_ == AdmissionMode::kReservation &&
      manager->windows_ == nullptr) {
    PKV_ASSIGN_OR_RETURN(Reservation r, manager->books_->Reserve(0));
    manager->reservation_.emplace(std::move(r));
  }
  return manager;
}

KVCacheManager::KVCacheManager(const Options& options,
                               std::unique_ptr<KVPool> owned_pool,
                               std::unique_ptr<BlockPool> owned_books,
                               std::unique_ptr<KVPool> host_pool,
                               std::unique_ptr<BlockPool> host_books)
    : instance_id_(NextInstanceId()),
      layout_(options.layout),
      blocks_of_(options.layout.block_tokens),
      storage_(options.storage),
      admission_(options.admission),
      watermark_(options.watermark),
      owned_pool_(std::move(owned_pool)),
      owned_books_(std::move(owned_books)),
      pool_(options.pool != nullptr ? options.pool : owned_pool_.get()),
      books_(pool_ != nullptr ? &pool_->books() : owned_books_.get()),
      host_pool_(std::move(host_pool)),
      host_books_(host_pool_ != nullptr ? std::unique_ptr<BlockPool>()
                                        : std::move(host_books)),
      max_pending_remote_stores_(
          options.prefix_caching.max_pending_remote_stores) {}

KVCacheManager::~KVCacheManager() {
  for (auto& [id, s] : sequences_) {
    if (!s.host_blocks.empty()) host_books().ReleaseAll(s.host_blocks);
  }
  sequences_.clear();  // Tables release before the reservation and pools.
  pending_stores_.MarkDone();
  reservation_.reset();
}

BlockPool& KVCacheManager::host_books() {
  return host_pool_ != nullptr ? host_pool_->books() : *host_books_;
}

bool KVCacheManager::has_host_tier() const {
  return host_pool_ != nullptr || host_books_ != nullptr;
}

// ---------------------------------------------------------------------------
// Helpers

const BlockHasher& KVCacheManager::PrefixHasher(const Options& options) {
  return options.prefix_caching.hasher != nullptr
             ? *options.prefix_caching.hasher
             : Xxh3BlockHasher();
}

int64_t KVCacheManager::BlocksFor(int64_t tokens) const {
  return blocks_of_.BlocksFor(tokens);
}

int64_t KVCacheManager::ReserveNeed(const Sequence& s) const {
  const bool holds = s.state == SequenceState::kRunning ||
                     s.state == SequenceState::kSwappingIn ||
                     s.state == SequenceState::kLoading;
  return ReserveNeed(s, holds ? s.table.num_blocks() : 0);
}

int64_t KVCacheManager::ReserveNeed(const Sequence& s, int64_t held) const {
  return std::max<int64_t>(0, BlocksFor(s.max_tokens) - held) +
         (s.forked ? 1 : 0);
}

void KVCacheManager::Rereserve(Sequence& s, int64_t need) {
  reserved_for_sequences_ += need - s.reserved;
  s.reserved = need;
}

absl::Status KVCacheManager::SyncReservation() {
  if (!reservation_.has_value()) return absl::OkStatus();
  const int64_t want = reservation_->num_charged() + reserved_for_sequences_;
  if (want == reservation_->capacity()) return absl::OkStatus();
  if (want > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("a reservation of %d blocks is too large", want));
  }
  return reservation_->Resize(static_cast<int32_t>(want));
}

absl::StatusOr<KVCacheManager::Sequence*> KVCacheManager::Find(SequenceId seq) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrFormat("no sequence %d", seq));
  }
  return &it->second;
}

absl::StatusOr<const KVCacheManager::Sequence*> KVCacheManager::Find(
    SequenceId seq) const {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrFormat("no sequence %d", seq));
  }
  return &it->second;
}

void KVCacheManager::AddSlots(const BlockTable& table, int64_t first, int64_t n,
                              StepOutput* out) const {
  if (n <= 0) return;
  std::vector<int64_t>& slots = out->slot_mapping;
  const size_t old_size = slots.size();
  if (slots.capacity() < old_size + static_cast<size_t>(n)) {
    slots.reserve(std::max(2 * slots.capacity(), old_size + n));
  }
  slots.resize(old_size + n);
  WriteSlots(table, first, n, slots.data() + old_size);
}

void KVCacheManager::WriteSlots(const BlockTable& table, int64_t first,
                                int64_t n, int64_t* dst) const {
  const int64_t bt = layout_.block_tokens;
  PKV_DCHECK(first >= 0 && first + n <= table.num_blocks() * bt,
             "slots of tokens [%d, %d) from a table of %d blocks", first,
             first + n, table.num_blocks());
  const BlockId* block = table.blocks().data() + blocks_of_.BlockOf(first);
  // One run of consecutive slots per block (a 64-bit divide per block cost
  // more than its 16 stores).
  int64_t offset = blocks_of_.OffsetOf(first);
  for (int64_t left = n; left > 0; ++block) {
    const int64_t run = std::min(left, bt - offset);
    const int64_t slot0 = int64_t{block->value()} * bt + offset;
    FillConsecutive(slot0, run, dst);
    dst += run;
    left -= run;
    offset = 0;
  }
}

void KVCacheManager::FinishCopies(StepOutput* out) {
  cow_copies_ += out->copies.size();
  if (storage_ != StorageMode::kHost) return;  // The caller runs them.
  pool_->RunCopies(out->copies.ops());
  out->copies.MarkDone();
}

// ---------------------------------------------------------------------------
// Sequences: steps, forks, frees and truncation (admission is in
// kv_cache_manager_admit.cc)

absl::Status KVCacheManager::AppendSlots(absl::Span<const SlotRequest> requests,
                                         StepOutput* out) {
  if (windows_ != nullptr) {
    PKV_RETURN_IF_ERROR(windows_->AppendSlots(requests, out));
    FinishCopies(out);  // Host mode runs the step's copy-on-write.
    return absl::OkStatus();
  }
  PKV_CHECK(out != nullptr, "AppendSlots needs an output");
  out->Clear();
  // 1. Validate everything; 2. one PrepareWrite for all (all or nothing);
  // 3. hand out the slots.
  ++step_stamp_;
  step_sequences_.clear();
  step_targets_.clear();
  step_growth_.clear();
  step_tails_.clear();
  // Whether any request gives token ids or a commit: a step of a server
  // that keeps the ids skips the prefix work below (measured: the per
  // sequence checks were most of caching's cost in such a step).
  bool prefix_work = false;
  int64_t total_tokens = 0;  // Each at most kMaxSequenceTokens: no overflow.
  for (const SlotRequest& r : requests) {
    auto it = sequences_.find(r.seq);
    if (it == sequences_.end()) {
      return absl::NotFoundError(absl::StrFormat("no sequence %d", r.seq));
    }
    Sequence& s = it->second;
    if (s.state != SequenceState::kRunning) {
      return NotRunning(r.seq, s.state, "AppendSlots");
    }
    if (r.num_tokens <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "AppendSlots of %d tokens to sequence %d", r.num_tokens, r.seq));
    }
    if (s.step_stamp == step_stamp_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d appears twice in one AppendSlots", r.seq));
    }
    s.step_stamp = step_stamp_;
    if (admission_ == AdmissionMode::kReservation &&
        r.num_tokens > s.max_tokens - s.num_tokens) {
      return absl::OutOfRangeError(
          absl::StrFormat("sequence %d: %d + %d tokens pass its reserved %d",
                          r.seq, s.num_tokens, r.num_tokens, s.max_tokens));
    }
    if (s.num_tokens + r.num_tokens > kMaxSequenceTokens) {
      return absl::OutOfRangeError(absl::StrFormat(
          "sequence %d: %d + %d tokens pass the limit %d", r.seq, s.num_tokens,
          r.num_tokens, kMaxSequenceTokens));
    }
    // The request's fields first: they are in cache, the prefix state's
    // flag may not be.
    if ((!r.token_ids.empty() || r.commit != -1) && s.prefix.has_value()) {
      prefix_work = true;
      if (!r.token_ids.empty() &&
          (static_cast<int64_t>(r.token_ids.size()) != r.num_tokens ||
           static_cast<int64_t>(s.prefix->tokens.size()) != s.num_tokens)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "AppendSlots of %d tokens to sequence %d with %d token ids "
            "(prefix caching takes one per token or none; it has the ids "
            "of %d of its %d tokens, CommitTokens gives the rest)",
            r.num_tokens, r.seq, r.token_ids.size(), s.prefix->tokens.size(),
            s.num_tokens));
      }
      // Inline: the decode step's common case is a commit in range.
      if (r.commit != -1 &&
          (r.commit < s.prefix->committed || r.commit > s.num_tokens)) {
        return CommitOutOfRange(r.seq, r.commit, s.prefix->committed,
                                s.num_tokens);
      }
    }
    step_sequences_.push_back(&s);
    total_tokens += r.num_tokens;
    const int32_t num_blocks = s.table.num_blocks();
    // The partly filled tail block is written: it must be private.
    BlockId tail;
    if (s.may_share && blocks_of_.OffsetOf(s.num_tokens) != 0) {
      tail = s.table[num_blocks - 1];
      step_targets_.push_back(WriteTarget{&s.table, num_blocks - 1});
    }
    step_tails_.push_back(tail);
    const int64_t grow = BlocksFor(s.num_tokens + r.num_tokens) - num_blocks;
    if (grow > 0) {
      step_growth_.push_back(TableGrowth{&s.table, static_cast<int32_t>(grow)});
    }
  }
  absl::StatusOr<PendingCopies> copies = PrepareWrite(
      *books_, {.targets = step_targets_,
                .growth = step_growth_,
                .reservation = reservation_ ? &*reservation_ : nullptr});
  if (!copies.ok()) {
    for (Sequence* s : step_sequences_) s->step_stamp = 0;
    return copies.status();
  }
  out->copies = *std::move(copies);
  // Sized once: a resize and a push_back per sequence were calls gcc did
  // not inline, a tenth of the decode step (measured).
  out->slot_mapping.resize(total_tokens);
  out->request_offsets.resize(requests.size() + 1);
  int64_t* slots = out->slot_mapping.data();
  int64_t at = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    Sequence& s = *step_sequences_[i];
    // A tail in the prefix cache was copied by PrepareWrite, never written
    // in place.
    out->request_offsets[i] = static_cast<int32_t>(at);
    WriteSlots(s.table, s.num_tokens, requests[i].num_tokens, slots + at);
    at += requests[i].num_tokens;
    s.num_tokens += requests[i].num_tokens;
    if (prefix_work && s.prefix.has_value()) {
      const SlotRequest& r = requests[i];
      if (r.token_ids.size() == 1) {
        s.prefix->tokens.push_back(r.token_ids[0]);  // No memmove call.
      } else if (!r.token_ids.empty()) {
        s.prefix->tokens.insert(s.prefix->tokens.end(), r.token_ids.begin(),
                                r.token_ids.end());
      }
      if (r.commit != -1) {
        s.prefix->committed = r.commit;
        if (blocks_of_.BlockOf(r.commit) > s.prefix->published) {
          PublishCommitted(s);
        }
      }
    }
    if (admission_ == AdmissionMode::kReservation) {
      // A copy of the tail used the fork's copy-on-write allowance.
      if (step_tails_[i].is_valid() &&
          s.table[static_cast<int32_t>(blocks_of_.BlockOf(
              s.num_tokens - requests[i].num_tokens))] != step_tails_[i]) {
        s.forked = false;
      }
      Rereserve(s, ReserveNeed(s));
    }
  }
  out->request_offsets[requests.size()] = static_cast<int32_t>(at);
  FinishCopies(out);  // Host mode: sources released before the sync.
  // Only shrinks: every block taken was counted in reserved_for_sequences_.
  SyncReservation().IgnoreError();
  return absl::OkStatus();
}

absl::Status KVCacheManager::Fork(SequenceId parent, SequenceId child) {
  if (windows_ != nullptr) return windows_->Fork(parent, child);
  PKV_ASSIGN_OR_RETURN(Sequence * p, Find(parent));
  if (p->state != SequenceState::kRunning) {
    return NotRunning(parent, p->state, "Fork");
  }
  if (sequences_.contains(child)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("Fork onto sequence %d, which exists", child));
  }
  auto [it, inserted] = sequences_.try_emplace(child, books_, ++next_entry_);
  PKV_CHECK(inserted, "sequence %d appeared", child);
  p = &sequences_.find(parent)->second;  // The insert may have moved it.
  Sequence& c = it->second;
  c.table = p->table.Fork();
  c.num_tokens = p->num_tokens;
  c.max_tokens = p->max_tokens;
  c.prefix = p->prefix;
  p->may_share = true;
  c.may_share = true;
  if (admission_ == AdmissionMode::kReservation) {
    const bool parent_forked = p->forked;
    const int64_t parent_reserved = p->reserved;
    p->forked = true;
    c.forked = true;
    Rereserve(*p, ReserveNeed(*p));
    Rereserve(c, ReserveNeed(c));
    if (absl::Status st = SyncReservation(); !st.ok()) {
      Rereserve(c, 0);
      p->forked = parent_forked;
      Rereserve(*p, parent_reserved);
      sequences_.erase(child);  // The failed Resize changed nothing.
      return st;
    }
  }
  ++num_running_;
  return absl::OkStatus();
}

void KVCacheManager::DropShare(Sequence& s) {
  Rereserve(s, 0);
  SyncReservation().IgnoreError();  // A shrink, or a short one topped up.
}

absl::Status KVCacheManager::Free(SequenceId seq) {
  if (windows_ != nullptr) return windows_->Free(seq);
  // One lookup: the entry is erased through the iterator found here.
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrFormat("no sequence %d", seq));
  }
  Sequence& s = it->second;
  if (s.state == SequenceState::kSwappingIn ||
      s.state == SequenceState::kSwappingOut) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "Free of sequence %d while a swap is pending (CompleteSwap first)",
        seq));
  }
  if (s.state == SequenceState::kLoading) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "Free of sequence %d while a remote load of %d blocks is pending "
        "(CompleteRemoteLoads first, with 0 to give it up)",
        seq, s.load_blocks));
  }
  if (s.state == SequenceState::kRunning) --num_running_;
  s.table.ClearTailFirst();
  if (!s.host_blocks.empty()) host_books().ReleaseAll(s.host_blocks);
  DropShare(s);
  sequences_.erase(it);
  return absl::OkStatus();
}

absl::Status KVCacheManager::Truncate(SequenceId seq, int64_t new_length) {
  if (windows_ != nullptr) return windows_->Truncate(seq, new_length);
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "Truncate");
  }
  if (new_length < 0 || new_length > s->num_tokens) {
    return absl::OutOfRangeError(
        absl::StrFormat("Truncate of sequence %d to %d tokens: it has %d", seq,
                        new_length, s->num_tokens));
  }
  const int32_t keep = static_cast<int32_t>(BlocksFor(new_length));
  // A tail inside a block another holder has, or inside a block in the
  // prefix cache (whose bytes are the entry's), is copied on its next write
  // (copy_on_write.h): the other holder and the entry keep their KV.
  const bool tail_copies =
      blocks_of_.OffsetOf(new_length) != 0 &&
      (s->table.IsShared(keep - 1) || books_->is_cached(s->table[keep - 1]));
  if (admission_ == AdmissionMode::kReservation) {
    // Blocks dropped that stay live elsewhere, and a tail to copy, raise
    // this sequence's need by blocks nobody frees: reserve them first.
    int64_t extra = 0;
    for (int32_t i = keep; i < s->table.num_blocks(); ++i) {
      if (s->table.IsShared(i)) ++extra;
    }
    const bool flip = !s->forked && tail_copies;
    if (flip) ++extra;
    if (extra > 0) {
      PKV_RETURN_IF_ERROR(reservation_->Resize(
          static_cast<int32_t>(reservation_->capacity() + extra)));
    }
  }
  s->table.DropBack(s->table.num_blocks() - keep);
  s->num_tokens = new_length;
  if (s->prefix.has_value()) TruncatePrefix(*s, new_length);
  if (tail_copies) s->may_share = true;  // The step then asks PrepareWrite.
  if (admission_ == AdmissionMode::kReservation) {
    // The tail's copy takes one copy-on-write block again.
    if (tail_copies) s->forked = true;
    Rereserve(*s, ReserveNeed(*s));
    // The dropped blocks returned to the reservation, so this rarely grows;
    // when a full shared pool cannot cover a shared tail's copy, the
    // reservation stays short and that one write may fail for memory.
    SyncReservation().IgnoreError();
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Reading

absl::StatusOr<SequenceState> KVCacheManager::state(SequenceId seq) const {
  if (windows_ != nullptr) return windows_->state(seq);
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  return s->state;
}

absl::StatusOr<int64_t> KVCacheManager::num_tokens(SequenceId seq) const {
  if (windows_ != nullptr) return windows_->num_tokens(seq);
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  return s->num_tokens;
}

absl::StatusOr<absl::Span<const BlockId>> KVCacheManager::block_table(
    SequenceId seq) const {
  if (windows_ != nullptr) return GroupsUnimplemented("block_table (use group_table)");
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "block_table");
  }
  return s->table.blocks();
}

absl::StatusOr<KVCacheManager::RunningTable> KVCacheManager::running_table(
    SequenceId seq) const {
  if (windows_ != nullptr) return GroupsUnimplemented("running_table (use group_table)");
  RunningTable t;
  if (FindRunningTable(seq, &t)) return t;
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  return NotRunning(seq, s->state, "running_table");
}

ManagerStats KVCacheManager::stats() const {
  ManagerStats m;
  const PoolStats p = books_->stats();
  m.num_blocks = p.num_blocks;
  m.used_blocks = p.num_used_blocks;
  m.free_blocks = p.num_free_blocks;
  m.reserved_blocks = p.num_reserved_blocks;
  if (reservation_.has_value()) {
    m.reserved_blocks -= static_cast<int32_t>(std::max<int64_t>(
        0, reservation_->num_reserved_free() - reserved_for_sequences_));
  }
  m.shared_blocks = p.num_shared_blocks;
  m.num_sequences = static_cast<int32_t>(sequences_.size());
  m.running_sequences = num_running_;
  m.preemptions = preemptions_;
  if (windows_ != nullptr) {
    m.num_sequences = windows_->num_sequences();
    m.running_sequences = windows_->num_running();
    m.preemptions = windows_->preemptions();
  }
  m.swap_outs = windows_ != nullptr ? windows_->swap_outs() : swap_outs_;
  m.swap_ins = windows_ != nullptr ? windows_->swap_ins() : swap_ins_;
  m.swapped_blocks =
      windows_ != nullptr ? windows_->swapped_blocks() : swapped_blocks_;
  m.swapped_bytes = swapped_bytes_;
  m.cow_copies = windows_ != nullptr ? windows_->cow_copies() : cow_copies_;
  if (prefix_caching()) {
    m.prefix = windows_ != nullptr ? windows_->prefix_stats() : prefix_stats_;
    const PrefixIndexStats index = books_->prefix_stats();
    m.prefix.cached_blocks = index.cached_blocks;
    m.prefix.evictable_blocks = index.evictable_blocks;
    m.prefix.stored_blocks = index.stored_blocks;
    m.prefix.evicted_blocks = index.evicted_blocks;
    m.prefix.dropped_blocks = index.dropped_blocks;
  }
  m.remote = remote_stats_;
  m.remote.pending_store_blocks = pending_stores_.size();
  if (has_host_tier()) {
    const BlockPool& host =
        host_pool_ != nullptr ? host_pool_->books() : *host_books_;
    m.host_blocks = host.num_blocks();
    m.host_used_blocks = host.num_used_blocks();
  }
  return m;
}

void KVCacheManager::CheckInvariants() const {
  books_->CheckInvariants();
  if (windows_ != nullptr) {
    // The grouped books hold every sequence (and check the references).
    PKV_CHECK(sequences_.empty(), "%d ungrouped sequences with layer groups",
              sequences_.size());
    windows_->CheckInvariants();
    return;
  }
  int32_t running = 0;
  int64_t reserved = 0;
  std::vector<const BlockTable*> tables;
  std::vector<BlockId> host_refs;
  std::vector<uint64_t> entries;
  entries.reserve(sequences_.size());
  for (const auto& [id, s] : sequences_) {
    PKV_CHECK(s.entry >= 1 && s.entry <= next_entry_,
              "sequence %d: entry %d out of [1, %d]", id, s.entry, next_entry_);
    entries.push_back(s.entry);
    const int64_t blocks = BlocksFor(s.num_tokens);
    const bool holds_device = s.state == SequenceState::kRunning ||
                              s.state == SequenceState::kSwappingOut ||
                              s.state == SequenceState::kSwappingIn ||
                              s.state == SequenceState::kLoading;
    const bool holds_host = s.state == SequenceState::kSwappedOut ||
                            s.state == SequenceState::kSwappingOut ||
                            s.state == SequenceState::kSwappingIn;
    PKV_CHECK(s.table.num_blocks() == (holds_device ? blocks : 0),
              "sequence %d (%s, %d tokens) holds %d device blocks", id,
              SequenceStateName(s.state), s.num_tokens, s.table.num_blocks());
    PKV_CHECK(
        static_cast<int64_t>(s.host_blocks.size()) == (holds_host ? blocks : 0),
        "sequence %d (%s, %d tokens) holds %d host blocks", id,
        SequenceStateName(s.state), s.num_tokens, s.host_blocks.size());
    PKV_CHECK(s.num_tokens >= 0, "sequence %d has %d tokens", id, s.num_tokens);
    if (s.state == SequenceState::kLoading) {
      PKV_CHECK(s.prefix.has_value() && s.load_blocks > 0 &&
                    s.load_first >= 0 &&
                    s.load_first + s.load_blocks <=
                        (s.num_tokens - 1) / layout_.block_tokens,
                "sequence %d (%d tokens) loads blocks [%d, %d + %d)", id,
                s.num_tokens, s.load_first, s.load_first, s.load_blocks);
      // Nothing past the local hits is published while the caller writes
      // the destinations: no other sequence can match half-loaded KV. (A
      // ResetPrefixCache meanwhile unpublished the local hits too: they
      // are published again with the loaded blocks.)
      PKV_CHECK(s.prefix->published <= s.load_first &&
                    s.prefix->committed ==
                        int64_t{s.load_first} * layout_.block_tokens,
                "loading sequence %d: %d blocks published, %d tokens "
                "committed, load from block %d",
                id, s.prefix->published, s.prefix->committed, s.load_first);
      for (int32_t b = s.load_first; b < s.load_first + s.load_blocks; ++b) {
        PKV_CHECK(!books_->is_cached(s.table[b]),
                  "loading sequence %d: destination block %d (id %d) is "
                  "matchable",
                  id, b, s.table[b].value());
      }
    } else {
      PKV_CHECK(s.load_blocks == 0,
                "sequence %d is %s with a load of %d blocks pending", id,
                SequenceStateName(s.state), s.load_blocks);
    }
    s.table.CheckInvariants();
    if (s.prefix.has_value()) {
      const PrefixState& p = *s.prefix;
      const int32_t bt = layout_.block_tokens;
      PKV_CHECK(static_cast<int64_t>(p.tokens.size()) <= s.num_tokens,
                "sequence %d keeps %d token ids for %d tokens", id,
                p.tokens.size(), s.num_tokens);
      PKV_CHECK(p.hashes.size() == p.keys.size() &&
                    static_cast<int64_t>(p.hashes.size()) <= BlocksWithIds(p),
                "sequence %d: %d hashes, %d keys, ids of %d tokens", id,
                p.hashes.size(), p.keys.size(), p.tokens.size());
      PKV_CHECK(p.committed >= 0 && p.committed <= s.num_tokens,
                "sequence %d committed %d of %d tokens", id, p.committed,
                s.num_tokens);
      if (s.state == SequenceState::kRunning) {
        PKV_CHECK(p.published >= 0 && p.published <= p.committed / bt &&
                      p.published <= BlocksWithIds(p),
                  "sequence %d: %d blocks published, %d tokens committed, "
                  "ids of %d",
                  id, p.published, p.committed, p.tokens.size());
        // What it published is still matchable, unless a reset came, and
        // its entry is this sequence's: its tokens, keys and key, under
        // the block before it (a hit on it serves what it claims).
        if (p.epoch == books_->prefix_epoch() && !p.stopped) {
          PKV_CHECK(static_cast<int64_t>(p.hashes.size()) >= p.published,
                    "sequence %d: %d blocks published, %d keyed", id,
                    p.published, p.hashes.size());
          for (int32_t i = 0; i < p.published; ++i) {
            PKV_CHECK(books_->is_cached(s.table[i]),
                      "sequence %d: published block %d (block#%d) is not "
                      "cached",
                      id, i, s.table[i].value());
            PKV_CHECK(
                books_->IsCachedAs(
                    s.table[i], /*group=*/0,
                    i == 0 ? BlockId() : s.table[i - 1], p.hashes[i],
                    absl::MakeConstSpan(p.tokens).subspan(int64_t{i} * bt, bt),
                    p.keys[i]),
                "sequence %d: published block %d (block#%d) is cached as "
                "another chain's or other tokens'",
                id, i, s.table[i].value());
          }
        }
      }
    }
    // A partial tail inside a cached block is copied at its next write,
    // which only a may_share sequence's step checks for.
    if (s.state == SequenceState::kRunning &&
        blocks_of_.OffsetOf(s.num_tokens) != 0) {
      const BlockId tail = s.table[s.table.num_blocks() - 1];
      PKV_CHECK(s.may_share || !books_->is_cached(tail),
                "sequence %d (%d tokens): its partial tail block#%d is "
                "cached, but its steps would write it in place",
                id, s.num_tokens, tail.value());
    }
    if (s.state == SequenceState::kRunning) ++running;
    if (admission_ == AdmissionMode::kReservation) {
      PKV_CHECK(s.num_tokens <= s.max_tokens,
                "sequence %d has %d tokens past its %d", id, s.num_tokens,
                s.max_tokens);
      const bool shares = s.state == SequenceState::kRunning ||
                          s.state == SequenceState::kSwappingIn ||
                          s.state == SequenceState::kLoading;
      PKV_CHECK(s.reserved == (shares ? ReserveNeed(s) : 0),
                "sequence %d reserves %d blocks, needs %d", id, s.reserved,
                shares ? ReserveNeed(s) : 0);
    } else {
      PKV_CHECK(s.reserved == 0,
                "sequence %d reserves %d without "
                "kReservation",
                id, s.reserved);
    }
    reserved += s.reserved;
    tables.push_back(&s.table);
    host_refs.insert(host_refs.end(), s.host_blocks.begin(),
                     s.host_blocks.end());
  }
  PKV_CHECK(running == num_running_, "%d running sequences, counted %d",
            running, num_running_);
  std::sort(entries.begin(), entries.end());
  PKV_CHECK(std::adjacent_find(entries.begin(), entries.end()) == entries.end(),
            "two sequences share an entry number");
  PKV_CHECK(reserved == reserved_for_sequences_,
            "sequences reserve %d blocks, total says %d", reserved,
            reserved_for_sequences_);
  // Every device reference is a table entry when this manager is the
  // pool's only user and runs its copies itself.
  if (owned_pool_ != nullptr) CheckRefCounts(*books_, tables);
  if (has_host_tier()) {
    const BlockPool& host =
        host_pool_ != nullptr ? host_pool_->books() : *host_books_;
    CheckRefCounts(host, {}, host_refs);
  }
}

}  // namespace pagedkv
