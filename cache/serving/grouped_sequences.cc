#include "cache/serving/grouped_sequences.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/copy_on_write.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/sequence_state_error.h"

namespace pagedkv {
namespace internal {

GroupedSequences::GroupedSequences(Config config)
    : books_(config.books),
      host_(config.host),
      block_tokens_(config.block_tokens),
      groups_(std::move(config.groups)),
      watermark_(config.watermark),
      instance_id_(config.instance_id),
      admission_(config.admission),
      max_step_tokens_(config.max_step_tokens),
      hasher_(config.hasher),
      sole_user_(config.sole_user),
      blocks_of_(config.block_tokens) {
  PKV_CHECK(books_ != nullptr && block_tokens_ > 0 && !groups_.empty(),
            "GroupedSequences needs books, block_tokens and groups");
  // The anchor: the first full group, else the window group with the
  // widest window (it releases least).
  for (int32_t g = 0; g < num_groups() && anchor_ == -1; ++g) {
    if (!groups_[g].is_window()) anchor_ = g;
  }
  if (anchor_ == -1) {
    anchor_ = 0;
    for (int32_t g = 1; g < num_groups(); ++g) {
      if (groups_[g].sliding_window > groups_[anchor_].sliding_window) {
        anchor_ = g;
      }
    }
    anchor_window_ = groups_[anchor_].sliding_window;
  }
  PKV_CHECK(hasher_ == nullptr || books_->prefix_cache_enabled(),
            "prefix caching with groups needs the pool's index");
  if (hasher_ != nullptr && anchor_window_ > 0) {
    books_->AllowInUseUnderFreeParents();
  }
  for (int32_t g = 0; g < num_groups(); ++g) {
    if (!groups_[g].is_window()) continue;
    const auto it = std::find(windows_.begin(), windows_.end(),
                              groups_[g].sliding_window);
    if (it == windows_.end()) {
      windows_.push_back(groups_[g].sliding_window);
      window_groups_.push_back({g});
    } else {
      window_groups_[it - windows_.begin()].push_back(g);
    }
  }
}

GroupedSequences::~GroupedSequences() = default;

absl::Status GroupedSequences::Init() {
  if (admission_ != AdmissionMode::kReservation) return absl::OkStatus();
  PKV_ASSIGN_OR_RETURN(Reservation r, books_->Reserve(0));
  reservation_.emplace(std::move(r));
  return absl::OkStatus();
}

int64_t GroupedSequences::GroupPeak(int32_t g, int64_t placed,
                                    int64_t max_tokens) const {
  const int64_t all = BlocksFor(max_tokens);
  if (!groups_[g].is_window() || max_step_tokens_ == 0) return all;
  const int64_t step = BlocksFor(int64_t{groups_[g].sliding_window} - 1 +
                                 max_step_tokens_) +
                       1;
  return std::min(all, std::max(BlocksFor(placed), step));
}

int64_t GroupedSequences::ReservePeak(int64_t placed,
                                      int64_t max_tokens) const {
  int64_t peak = 0;
  for (int32_t g = 0; g < num_groups(); ++g) {
    peak += GroupPeak(g, placed, max_tokens);
  }
  return peak;
}

absl::Status GroupedSequences::Reserve(SequenceId seq, int64_t placed,
                                       int64_t max_tokens) {
  if (!reservation_.has_value()) return absl::OkStatus();
  const int64_t peak = ReservePeak(placed, max_tokens);
  if (absl::Status st = ResizeReservation(reserved_total_ + peak); !st.ok()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "sequence %d: reserving its worst case of %d blocks (%d tokens at "
        "most, %d placed) failed: %s",
        seq, peak, max_tokens, placed, st.message()));
  }
  reserved_total_ += peak;
  return absl::OkStatus();
}

void GroupedSequences::Unreserve(int64_t placed, int64_t max_tokens) {
  if (!reservation_.has_value()) return;
  reserved_total_ -= ReservePeak(placed, max_tokens);
  PKV_CHECK(ResizeReservation(reserved_total_).ok(),
            "shrinking a reservation failed");
}

void GroupedSequences::SyncReservation() {
  if (!reservation_.has_value()) return;
  PKV_CHECK(ResizeReservation(reserved_total_).ok(),
            "shrinking a reservation failed");
}

absl::Status GroupedSequences::ResizeReservation(int64_t total) {
  const int64_t want =
      std::max<int64_t>(total, reservation_->num_charged());
  if (want == reservation_->capacity()) return absl::OkStatus();
  if (want > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("a reservation of %d blocks is too large", want));
  }
  return reservation_->Resize(static_cast<int32_t>(want));
}

int64_t GroupedSequences::Available() const {
  return int64_t{books_->num_unreserved_free_blocks()} +
         (reservation_.has_value() ? reservation_->num_reserved_free() : 0);
}

absl::Status GroupedSequences::TakeBlocks(int64_t n) {
  const int64_t from_reservation =
      reservation_.has_value()
          ? std::min<int64_t>(n, reservation_->num_reserved_free())
          : 0;
  std::vector<BlockId> rest;
  if (n > from_reservation) {
    absl::StatusOr<std::vector<BlockId>> taken =
        books_->Allocate(static_cast<int32_t>(n - from_reservation));
    if (!taken.ok()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%d blocks counted free, but another user of the shared pool took "
          "some first: %s",
          n, taken.status().message()));
    }
    rest = *std::move(taken);
  }
  step_blocks_.clear();
  if (from_reservation > 0) {
    absl::StatusOr<std::vector<BlockId>> mine =
        reservation_->Allocate(static_cast<int32_t>(from_reservation));
    PKV_CHECK(mine.ok(), "taking %d reserved blocks counted free failed: %s",
              from_reservation, mine.status().ToString());
    step_blocks_ = *std::move(mine);
  }
  step_blocks_.insert(step_blocks_.end(), rest.begin(), rest.end());
  return absl::OkStatus();
}

absl::StatusOr<GroupedSequences::Sequence*> GroupedSequences::Find(
    SequenceId seq) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrFormat("no sequence %d", seq));
  }
  return &it->second;
}

absl::StatusOr<const GroupedSequences::Sequence*> GroupedSequences::Find(
    SequenceId seq) const {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrFormat("no sequence %d", seq));
  }
  return &it->second;
}

int64_t GroupedSequences::PlaceNeed(int64_t tokens) const {
  return BlocksFor(tokens) * num_groups();
}

Admission GroupedSequences::CanAdmit(int64_t prompt_tokens,
                                     int64_t max_new_tokens) const {
  if (prompt_tokens <= 0 || prompt_tokens > KVCacheManager::kMaxSequenceTokens) {
    return Admission::kNever;
  }
  return AdmitBlocks(prompt_tokens, max_new_tokens, PlaceNeed(prompt_tokens),
                     0);
}

int32_t GroupedSequences::DetachOutOfWindow(Sequence& s) {
  int32_t released = 0;
  for (size_t w = 0; w < windows_.size(); ++w) {
    // WindowFirstNeededBlock, with the manager's block arithmetic.
    const int64_t first_token = s.computed - windows_[w] + 1;
    const int64_t first = first_token > 0 ? BlockOf(first_token) : 0;
    for (int32_t g : window_groups_[w]) {
      released += s.tables[g].DetachBefore(first, &step_detached_);
    }
  }
  window_released_ += released;
  return released;
}

int64_t GroupedSequences::CountWindowFrees(const Sequence& s) {
  int64_t freed = 0;
  for (size_t w = 0; w < windows_.size(); ++w) {
    // As DetachOutOfWindow, after s.computed = s.num_tokens.
    const int64_t first_token = s.num_tokens - windows_[w] + 1;
    const int64_t first = first_token > 0 ? BlockOf(first_token) : 0;
    for (int32_t g : window_groups_[w]) {
      const WindowTable& t = s.tables[g];
      if (first <= t.first_unpassed()) continue;  // Decode: usually.
      const int64_t end = std::min<int64_t>(first, t.num_entries());
      for (int64_t i = t.first_unpassed(); i < end; ++i) {
        const BlockId b = t.entries()[i];
        if (!b.is_valid()) continue;
        if (!s.may_share && !s.prefix.has_value()) {
          PKV_DCHECK(books_->ref_count(b) == 1,
                     "block %d of an unshared table has %d holders",
                     b.value(), books_->ref_count(b));
          ++freed;
        } else if (books_->ref_count(b) == 1) {
          ++freed;
        } else {
          step_released_.push_back(b);  // Freed if all holders release.
        }
      }
    }
  }
  return freed;
}

int64_t GroupedSequences::CountSharedFrees() {
  if (step_released_.empty()) return 0;
  std::sort(step_released_.begin(), step_released_.end());
  int64_t freed = 0;
  for (auto it = step_released_.begin(); it != step_released_.end();) {
    const auto run = std::upper_bound(it, step_released_.end(), *it);
    if (run - it == books_->ref_count(*it)) ++freed;
    it = run;
  }
  return freed;
}

void GroupedSequences::FindCowTargets(const Sequence& s, int32_t i) {
  if (OffsetOf(s.num_tokens) == 0) return;  // New tokens start a block.
  const int32_t last = static_cast<int32_t>(BlockOf(s.num_tokens));
  for (int32_t g = 0; g < num_groups(); ++g) {
    const BlockId b = s.tables[g].entries()[last];
    PKV_DCHECK(b.is_valid(), "the last block of group %d is a hole", g);
    if (books_->SharedOrCached(b)) step_cow_.push_back({i, g, last, b});
  }
}

void GroupedSequences::FindStepPublishes(
    absl::Span<const SlotRequest> requests) {
  step_publishes_.clear();
  const uint64_t epoch = books_->prefix_epoch();
  for (size_t i = 0; i < requests.size(); ++i) {
    const Sequence& s = *step_sequences_[i];
    if (requests[i].commit == -1 || !s.prefix.has_value()) continue;
    const SequencePrefix& p = *s.prefix;
    // PublishCommitted's range, or more: a reset starts it at 0.
    int64_t from = p.epoch == epoch ? p.published : 0;
    for (int32_t published : s.group_published) {
      from = std::min<int64_t>(from, published);
    }
    for (const WindowTable& t : s.tables) {
      const int64_t to = std::min<int64_t>(requests[i].commit / block_tokens_,
                                           t.num_entries());
      for (int64_t j = from; j < to; ++j) {
        const BlockId b = t.entries()[j];
        if (b.is_valid()) step_publishes_.push_back(b);
      }
    }
  }
  std::sort(step_publishes_.begin(), step_publishes_.end());
}

int64_t GroupedSequences::CountCopies() {
  if (step_cow_.empty()) return 0;
  step_holds_.clear();
  int64_t copies = 0;
  for (CowTarget& t : step_cow_) {
    const auto [lo, hi] = std::equal_range(step_released_.begin(),
                                           step_released_.end(), t.block);
    int32_t& holds = step_holds_[t.block];
    t.copy = books_->ref_count(t.block) - (hi - lo) - holds > 1 ||
             books_->is_cached(t.block) ||
             std::binary_search(step_publishes_.begin(), step_publishes_.end(),
                                t.block);
    if (t.copy) {
      ++copies;
      ++holds;
    }
  }
  return copies;
}

void GroupedSequences::Unshare(const BlockId** blocks, StepOutput* out) {
  // CountCopies' decisions, not a second reading of the counts: on a shared
  // pool another manager may have let go of a block since.
  for (const CowTarget& t : step_cow_) {
    if (!t.copy) continue;  // In place.
    const BlockId fresh = *(*blocks)++;
    // The entry's reference on the source moves to the pending copy.
    books_->AddRef(t.block);
    step_sequences_[t.request]->tables[t.group].Replace(t.index, fresh);
    out->copies.Adopt(books_, CopyOp{t.block, fresh});
  }
  cow_copies_ += out->copies.size();
}

int64_t GroupedSequences::GrowNeed(const Sequence& s, int64_t k) const {
  return (BlocksFor(s.num_tokens + k) - BlocksFor(s.num_tokens)) *
         num_groups();
}

void GroupedSequences::Grow(Sequence& s, int64_t k, const BlockId** blocks) {
  const int64_t add = BlocksFor(s.num_tokens + k) - BlocksFor(s.num_tokens);
  for (WindowTable& t : s.tables) {
    for (int64_t i = 0; i < add; ++i) t.Append(*(*blocks)++);
  }
}

void GroupedSequences::WriteSlots(const Sequence& s, int64_t first, int64_t k,
                                  int64_t stride, int64_t at,
                                  StepOutput* out) const {
  const int64_t bt = block_tokens_;
  int64_t* const base = out->slot_mapping.data() + at;
  if (k == 1) {  // Decode: one block and offset for all groups.
    const int64_t block = BlockOf(first);
    const int64_t offset = OffsetOf(first);
    for (int32_t g = 0; g < num_groups(); ++g) {
      const BlockId b = s.tables[g].entries()[block];
      PKV_DCHECK(b.is_valid(), "slot of token %d in a hole", first);
      base[g * stride] = int64_t{b.value()} * bt + offset;
    }
    return;
  }
  for (int32_t g = 0; g < num_groups(); ++g) {
    const BlockId* entries = s.tables[g].entries().data();
    int64_t* dst = base + g * stride;
    for (int64_t t = first; t < first + k; ++t) {
      const BlockId b = entries[BlockOf(t)];
      PKV_DCHECK(b.is_valid(), "slot of token %d in a hole", t);
      *dst++ = int64_t{b.value()} * bt + OffsetOf(t);
    }
  }
}

absl::Status GroupedSequences::Place(Sequence& s, int64_t tokens,
                                     int64_t hit, StepOutput* out) {
  const int64_t cached = hit * block_tokens_;
  PKV_CHECK(0 <= cached && cached <= tokens, "placing %d tokens over %d held",
            tokens, cached);
  const int64_t need = PlaceNeed(tokens) - hit * num_groups();
  if (need > Available()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "need %d blocks (%d per group, %d groups, %d cached), %d free", need,
        BlocksFor(tokens) - hit, num_groups(), hit, Available()));
  }
  PKV_RETURN_IF_ERROR(TakeBlocks(need));
  // A readmitted sequence keeps its (emptied) tables: their generations
  // only grow, so its TableVersion never repeats one an exporter saw
  // (fresh tables would restart at 0 under the same sequence entry).
  if (s.tables.empty()) {
    for (int32_t g = 0; g < num_groups(); ++g) s.tables.emplace_back(books_);
  }
  for (const WindowTable& t : s.tables) {
    PKV_CHECK(t.num_entries() == hit, "placing over %d entries, %d hits",
              t.num_entries(), hit);
  }
  s.num_tokens = cached;
  s.computed = cached;
  // Fresh tails: the hits end on a block boundary.
  s.may_share = false;
  s.placed = tokens;
  const BlockId* next = step_blocks_.data();
  const int64_t k = tokens - cached;
  Grow(s, k, &next);
  s.num_tokens = tokens;
  out->slot_mapping.resize(k * num_groups());
  out->request_offsets = {0, static_cast<int32_t>(k)};
  out->group_stride = k;
  out->num_cached_tokens = cached;
  WriteSlots(s, cached, k, k, 0, out);
  s.state = SequenceState::kRunning;
  ++num_running_;
  return absl::OkStatus();
}

absl::Status GroupedSequences::AddSequence(SequenceId seq,
                                           int64_t prompt_tokens,
                                           int64_t max_new_tokens,
                                           StepOutput* out) {
  PKV_CHECK(out != nullptr, "AddSequence needs an output");
  out->Clear();
  if (sequences_.contains(seq)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("sequence %d already exists", seq));
  }
  if (prompt_tokens <= 0 || max_new_tokens < 0 ||
      prompt_tokens > KVCacheManager::kMaxSequenceTokens - max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sequence %d: prompt_tokens %d must be > 0, max_new_tokens %d >= 0, "
        "at most %d in all",
        seq, prompt_tokens, max_new_tokens, KVCacheManager::kMaxSequenceTokens));
  }
  const Admission a = CanAdmit(prompt_tokens, max_new_tokens);
  if (a != Admission::kAdmit && reservation_.has_value()) {
    const int64_t peak =
        ReservePeak(prompt_tokens, prompt_tokens + max_new_tokens);
    return absl::ResourceExhaustedError(absl::StrFormat(
        "sequence %d: its worst case of %d blocks (%d + %d tokens, %d "
        "groups, steps of up to %d tokens) %s: %d reserved for %d running, "
        "%d free and unreserved, %d in the pool",
        seq, peak, prompt_tokens, max_new_tokens, num_groups(),
        max_step_tokens_,
        a == Admission::kNever ? "never fits" : "fits later",
        reservation_->capacity(), num_running_,
        books_->num_unreserved_free_blocks(), books_->num_blocks()));
  }
  if (a != Admission::kAdmit) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "sequence %d: a prompt of %d tokens needs %d blocks (%d groups), %d "
        "free, watermark %g: %s",
        seq, prompt_tokens, PlaceNeed(prompt_tokens), num_groups(),
        books_->num_unreserved_free_blocks(), watermark_,
        a == Admission::kNever ? "never fits" : "fits later"));
  }
  Sequence s;
  s.max_tokens = prompt_tokens + max_new_tokens;
  PKV_RETURN_IF_ERROR(Reserve(seq, prompt_tokens, s.max_tokens));
  if (absl::Status st = Place(s, prompt_tokens, 0, out); !st.ok()) {
    Unreserve(prompt_tokens, s.max_tokens);
    return st;
  }
  s.entry = ++next_entry_;
  sequences_.emplace(seq, std::move(s));
  return absl::OkStatus();
}

absl::Status GroupedSequences::AppendSlots(
    absl::Span<const SlotRequest> requests, StepOutput* out) {
  PKV_CHECK(out != nullptr, "AppendSlots needs an output");
  out->Clear();
  // 1. Validate; 2. count the new blocks against the free ones and those
  // the windows would release (fail here, nothing changed); 3. release
  // what the windows no longer read and take every new block in one
  // Allocate; 4. hand out the slots.
  ++step_stamp_;
  step_sequences_.clear();
  int64_t total_tokens = 0;
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
          "sequence %d: num_tokens must be > 0, got %d", r.seq, r.num_tokens));
    }
    if (s.step_stamp == step_stamp_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d named twice in one step", r.seq));
    }
    if (r.num_tokens > KVCacheManager::kMaxSequenceTokens - s.num_tokens) {
      return absl::OutOfRangeError(absl::StrFormat(
          "sequence %d: %d + %d tokens is past the limit of %d", r.seq,
          s.num_tokens, r.num_tokens, KVCacheManager::kMaxSequenceTokens));
    }
    if (reservation_.has_value()) {
      if (r.num_tokens > s.max_tokens - s.num_tokens) {
        return absl::OutOfRangeError(absl::StrFormat(
            "sequence %d: %d + %d tokens pass its reserved %d", r.seq,
            s.num_tokens, r.num_tokens, s.max_tokens));
      }
      if (max_step_tokens_ > 0 && r.num_tokens > max_step_tokens_ &&
          !windows_.empty()) {
        return absl::OutOfRangeError(absl::StrFormat(
            "sequence %d: a step of %d tokens is larger than the %d "
            "(Options::max_step_tokens) its window groups' reservation "
            "covers",
            r.seq, r.num_tokens, max_step_tokens_));
      }
    }
    // The request's fields first: they are in cache, the prefix state's
    // flag (past its vectors) may not be.
    if ((!r.token_ids.empty() || r.commit != -1) && s.prefix.has_value()) {
      const SequencePrefix& p = *s.prefix;
      if (!r.token_ids.empty() &&
          (static_cast<int64_t>(r.token_ids.size()) != r.num_tokens ||
           static_cast<int64_t>(p.tokens.size()) != s.num_tokens)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "AppendSlots of %d tokens to sequence %d with %d token ids "
            "(prefix caching takes one per token or none; it has the ids "
            "of %d of its %d tokens, CommitTokens gives the rest)",
            r.num_tokens, r.seq, r.token_ids.size(), p.tokens.size(),
            s.num_tokens));
      }
      if (r.commit != -1 &&
          (r.commit < p.committed || r.commit > s.num_tokens)) {
        return CommitOutOfRange(r.seq, r.commit, p.committed, s.num_tokens);
      }
    }
    s.step_stamp = step_stamp_;
    step_sequences_.push_back(&s);
    total_tokens += r.num_tokens;
  }
  // What the step needs, with nothing changed yet: the blocks its windows
  // release are free for it when no other table holds them.
  int64_t grow = 0;
  step_released_.clear();
  step_cow_.clear();
  for (size_t i = 0; i < requests.size(); ++i) {
    const Sequence& s = *step_sequences_[i];
    if (s.may_share) FindCowTargets(s, static_cast<int32_t>(i));
    grow += GrowNeed(s, requests[i].num_tokens);
  }
  const int64_t free_blocks = Available();
  // The decode step's common case: nothing to copy and room without the
  // released blocks, so they need no counting (a second walk of every
  // window table cost ~7 ns per sequence, measured).
  int64_t freed = 0;
  int64_t copies = 0;
  if (!step_cow_.empty() || grow > free_blocks) {
    for (const Sequence* s : step_sequences_) freed += CountWindowFrees(*s);
    freed += CountSharedFrees();
    if (!step_cow_.empty()) FindStepPublishes(requests);
    copies = CountCopies();
  }
  const int64_t need = grow + copies;
  if (need > free_blocks + freed) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the step needs %d blocks (%d copies), %d free and %d the windows "
        "would release",
        need, copies, free_blocks, freed));
  }
  // It fits: the step's commits are published (before the windows let go
  // of what they commit, which is then cached like any released block),
  // the windows release (in one batch), then one Allocate takes the rest
  // (the blocks just released first, warm in cache). On a shared pool
  // another manager may have taken counted blocks since: the step then
  // fails with only the commits and the window releases done (blocks no
  // later token reads), the sequences' tokens unchanged. A commit's
  // publication changes no count the room check made: it covers full
  // blocks only (never a tail the step writes), and switching a block to
  // an equal cached one frees one block for each it revives.
  step_detached_.clear();
  for (size_t i = 0; i < requests.size(); ++i) {
    Sequence* s = step_sequences_[i];
    const SlotRequest& r = requests[i];
    if (r.commit != -1 && s->prefix.has_value()) {
      SequencePrefix& p = *s->prefix;
      p.committed = r.commit;
      if (r.commit / block_tokens_ > p.published) PublishCommitted(*s);
    }
    s->computed = s->num_tokens;
    DetachOutOfWindow(*s);
  }
  books_->ReleaseAll(step_detached_);
  if (absl::Status st = TakeBlocks(need); !st.ok()) {
    SyncReservation();  // The window releases may let it shrink.
    return st;
  }
  const BlockId* next = step_blocks_.data();
  if (copies > 0) Unshare(&next, out);
  PKV_CHECK(out->copies.size() == copies, "%d copies counted, %d made",
            copies, out->copies.size());
  out->slot_mapping.resize(total_tokens * num_groups());
  out->request_offsets.resize(requests.size() + 1);
  out->group_stride = total_tokens;
  int64_t at = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    Sequence& s = *step_sequences_[i];
    const int64_t k = requests[i].num_tokens;
    // A tail in the prefix cache was copied (Unshare), never written in
    // place.
    Grow(s, k, &next);
    out->request_offsets[i] = static_cast<int32_t>(at);
    WriteSlots(s, s.num_tokens, k, total_tokens, at, out);
    s.num_tokens += k;
    at += k;
    const SlotRequest& r = requests[i];
    if (!r.token_ids.empty() && s.prefix.has_value()) {
      SequencePrefix& p = *s.prefix;
      p.tokens.insert(p.tokens.end(), r.token_ids.begin(), r.token_ids.end());
    }
  }
  out->request_offsets[requests.size()] = static_cast<int32_t>(at);
  SyncReservation();  // Shrinks only (capacity followed charged blocks).
  return absl::OkStatus();
}

absl::Status GroupedSequences::Fork(SequenceId parent, SequenceId child) {
  PKV_ASSIGN_OR_RETURN(Sequence * p, Find(parent));
  if (p->state != SequenceState::kRunning) {
    return NotRunning(parent, p->state, "Fork");
  }
  if (sequences_.contains(child)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("Fork onto sequence %d, which exists", child));
  }
  // Its shared blocks may all be copied or diverge: its whole worst case.
  PKV_RETURN_IF_ERROR(Reserve(child, p->placed, p->max_tokens));
  Sequence c;
  c.tables.reserve(groups_.size());
  for (const WindowTable& t : p->tables) c.tables.push_back(t.Fork());
  c.num_tokens = p->num_tokens;
  c.max_tokens = p->max_tokens;
  c.computed = p->computed;  // The same window: the same holes.
  c.placed = p->placed;
  c.prefix = p->prefix;
  c.group_hashes = p->group_hashes;
  c.group_published = p->group_published;
  c.may_share = true;
  p->may_share = true;
  c.entry = ++next_entry_;
  sequences_.emplace(child, std::move(c));  // May move *p: not used after.
  ++num_running_;
  return absl::OkStatus();
}

absl::Status GroupedSequences::Free(SequenceId seq) {
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
  ClearTables(s);
  s.host_tables.clear();
  if (s.state == SequenceState::kRunning) {
    --num_running_;
    Unreserve(s.placed, s.max_tokens);
  }
  sequences_.erase(it);
  return absl::OkStatus();
}

absl::Status GroupedSequences::Truncate(SequenceId seq, int64_t new_length) {
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "Truncate");
  }
  if (new_length < 0 || new_length > s->num_tokens) {
    return absl::OutOfRangeError(absl::StrFormat(
        "truncate sequence %d to %d tokens: must be in [0, %d]", seq,
        new_length, s->num_tokens));
  }
  // The next token (position new_length) reads its window: those blocks
  // must still be held.
  const int64_t keep = BlocksFor(new_length);
  for (int32_t g = 0; g < num_groups(); ++g) {
    if (!groups_[g].is_window()) continue;
    const int64_t first = WindowFirstNeededBlock(
        new_length, groups_[g].sliding_window, block_tokens_);
    if (first < s->tables[g].first_unpassed() && first < keep) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "truncate sequence %d to %d tokens: group %d's window (%d tokens) "
          "then reads block %d, released already (blocks below %d are)",
          seq, new_length, g, groups_[g].sliding_window, first,
          s->tables[g].first_unpassed()));
    }
  }
  for (WindowTable& t : s->tables) {
    t.DropBack(t.num_entries() - static_cast<int32_t>(keep));
  }
  // A tail inside a block another holder has, or inside a block in the
  // prefix cache (whose bytes are the entry's), is copied on its next
  // write: the step checks for that only when may_share.
  if (OffsetOf(new_length) != 0) {
    for (const WindowTable& t : s->tables) {
      const BlockId tail = t.entries()[keep - 1];
      if (tail.is_valid() && books_->SharedOrCached(tail)) s->may_share = true;
    }
  }
  s->num_tokens = new_length;
  s->computed = std::min(s->computed, new_length);
  if (s->prefix.has_value()) TruncatePrefix(*s, new_length);
  SyncReservation();
  return absl::OkStatus();
}

absl::StatusOr<SequenceState> GroupedSequences::state(SequenceId seq) const {
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  return s->state;
}

absl::StatusOr<int64_t> GroupedSequences::num_tokens(SequenceId seq) const {
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  return s->num_tokens;
}

bool GroupedSequences::FindGroupTable(SequenceId seq, int32_t g,
                                      GroupTable* out) const {
  if (g < 0 || g >= num_groups()) return false;
  auto it = sequences_.find(seq);
  if (it == sequences_.end() || it->second.state != SequenceState::kRunning) {
    return false;
  }
  const Sequence& s = it->second;
  out->entries = s.tables[g].entries();
  out->num_tokens = s.num_tokens;
  out->sequence_entry = s.entry;
  out->generation = s.tables[g].generation();
  return true;
}

absl::Status GroupedSequences::GroupTableError(SequenceId seq,
                                               int32_t g) const {
  if (g < 0 || g >= num_groups()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "layer group %d of a manager with %d groups", g, num_groups()));
  }
  PKV_ASSIGN_OR_RETURN(const Sequence* s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "group_table");
  }
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace pagedkv
