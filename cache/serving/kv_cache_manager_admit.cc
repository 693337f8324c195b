// cache/serving/kv_cache_manager_admit.cc
//
// KVCacheManager's admission: CanAdmit (the watermark or reservation
// decision, counting what the prefix cache would hit), AddSequence (by
// count, or by token ids with a verified prefix hit pinned first) and
// Place, which takes a new sequence's blocks. Split from
// kv_cache_manager.cc so each file holds one mechanism; a grouped manager
// forwards to GroupedSequences.
#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv {
// ---------------------------------------------------------------------------
// Admission and sequences

Admission KVCacheManager::CanAdmit(int64_t prompt_tokens,
                                   int64_t max_new_tokens) const {
  if (windows_ != nullptr) return windows_->CanAdmit(prompt_tokens, max_new_tokens);
  return AdmitWithHits(prompt_tokens, max_new_tokens, 0);
}

Admission KVCacheManager::CanAdmit(absl::Span<const int32_t> prompt,
                                   int64_t max_new_tokens,
                                   const PrefixKeys& keys) const {
  if (windows_ != nullptr) {
    return windows_->CanAdmit(prompt, max_new_tokens, keys);
  }
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  if (!prefix_caching() || prompt_tokens <= 0 ||
      prompt_tokens > kMaxSequenceTokens) {
    return CanAdmit(prompt_tokens, max_new_tokens);
  }
  const BlockPool::PrefixMatch m = MatchPrompt(prompt, keys);
  return AdmitWithHits(prompt_tokens, max_new_tokens, m.blocks - m.revived);
}

BlockPool::PrefixMatch KVCacheManager::MatchPrompt(
    absl::Span<const int32_t> prompt, const PrefixKeys& keys) const {
  // The prompt's keys in scratch state (no allocation once warm).
  PrefixState& p = scratch_prefix_;
  p.tokens.assign(prompt.begin(), prompt.end());
  p.hashes.clear();
  p.keys.clear();
  p.tenant_salt = keys.tenant_salt;
  p.adapter_id = keys.adapter_id;
  p.multimodal.assign(keys.multimodal.begin(), keys.multimodal.end());
  const int64_t matchable =
      (static_cast<int64_t>(prompt.size()) - 1) / layout_.block_tokens;
  if (matchable <= 0) return {};
  return MatchHashing(p, matchable);
}

Admission KVCacheManager::AdmitWithHits(int64_t prompt_tokens,
                                        int64_t max_new_tokens,
                                        int64_t hits_in_use) const {
  if (prompt_tokens <= 0 || max_new_tokens < 0) return Admission::kNever;
  // AddSequence refuses what no sequence may hold; this says so first (and
  // keeps BlocksFor from overflowing).
  if (prompt_tokens > kMaxSequenceTokens ||
      max_new_tokens > kMaxSequenceTokens - prompt_tokens) {
    return Admission::kNever;
  }
  const int64_t total = books_->num_blocks();
  int64_t free = books_->num_unreserved_free_blocks();
  if (reservation_.has_value()) {
    free += std::max<int64_t>(
        0, reservation_->num_reserved_free() - reserved_for_sequences_);
  }
  // Hits in use are held already; a cached free hit costs its free block
  // like a new one (hits_in_use excludes them).
  if (admission_ == AdmissionMode::kReservation) {
    const int64_t need = BlocksFor(prompt_tokens + max_new_tokens);
    if (need > total) return Admission::kNever;
    return need - hits_in_use <= free ? Admission::kAdmit : Admission::kLater;
  }
  const int64_t need = BlocksFor(prompt_tokens);
  // The epsilon keeps an exact fraction exact (0.07 * 100 is 7.000...01).
  const int64_t keep =
      static_cast<int64_t>(std::ceil(watermark_ * total - 1e-9));
  if (need > total - keep) return Admission::kNever;
  return free - (need - hits_in_use) >= keep ? Admission::kAdmit
                                             : Admission::kLater;
}

absl::Status KVCacheManager::NotAdmitted(SequenceId seq, int64_t prompt_tokens,
                                         int64_t max_new_tokens,
                                         Admission admission) const {
  return absl::ResourceExhaustedError(absl::StrFormat(
      "sequence %d (%d prompt + %d new tokens) %s: %d of %d blocks free "
      "and unreserved",
      seq, prompt_tokens, max_new_tokens,
      admission == Admission::kNever ? "can never fit" : "does not fit now",
      books_->num_unreserved_free_blocks(), books_->num_blocks()));
}

absl::Status KVCacheManager::AddSequence(SequenceId seq, int64_t prompt_tokens,
                                         int64_t max_new_tokens,
                                         StepOutput* out) {
  if (windows_ != nullptr) return windows_->AddSequence(seq, prompt_tokens, max_new_tokens, out);
  PKV_CHECK(out != nullptr, "AddSequence needs an output");
  if (prompt_tokens <= 0 || max_new_tokens < 0 ||
      prompt_tokens > kMaxSequenceTokens ||
      max_new_tokens > kMaxSequenceTokens - prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sequence %d: prompt_tokens %d must be in [1, %d] and "
        "prompt + max_new_tokens %d at most that",
        seq, prompt_tokens, kMaxSequenceTokens, max_new_tokens));
  }
  if (sequences_.contains(seq)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("sequence %d already exists", seq));
  }
  const Admission admission = CanAdmit(prompt_tokens, max_new_tokens);
  if (admission != Admission::kAdmit) {
    return NotAdmitted(seq, prompt_tokens, max_new_tokens, admission);
  }
  Sequence& s = InsertSequence(seq, prompt_tokens + max_new_tokens);
  absl::Status status = Place(s, prompt_tokens, out);
  if (!status.ok()) {
    sequences_.erase(seq);
    return status;
  }
  ++num_running_;
  return absl::OkStatus();
}

absl::Status KVCacheManager::AddSequence(SequenceId seq,
                                         absl::Span<const int32_t> prompt,
                                         int64_t max_new_tokens,
                                         StepOutput* out,
                                         const PrefixKeys& keys) {
  if (windows_ != nullptr) {
    return windows_->AddSequence(seq, prompt, max_new_tokens, out, keys);
  }
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  if (!prefix_caching()) {
    return AddSequence(seq, prompt_tokens, max_new_tokens, out);
  }
  PKV_CHECK(out != nullptr, "AddSequence needs an output");
  if (prompt_tokens <= 0 || max_new_tokens < 0 ||
      prompt_tokens > kMaxSequenceTokens ||
      max_new_tokens > kMaxSequenceTokens - prompt_tokens) {
    return AddSequence(seq, prompt_tokens, max_new_tokens, out);  // Says why.
  }
  PKV_RETURN_IF_ERROR(
      CheckMultimodalSpans(seq, keys.multimodal, prompt_tokens));
  if (sequences_.contains(seq)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("sequence %d already exists", seq));
  }
  const BlockPool::PrefixMatch match = MatchPrompt(prompt, keys);
  const Admission admission = AdmitWithHits(prompt_tokens, max_new_tokens,
                                            match.blocks - match.revived);
  if (admission != Admission::kAdmit) {
    return NotAdmitted(seq, prompt_tokens, max_new_tokens, admission);
  }
  Sequence& s = InsertSequence(seq, prompt_tokens + max_new_tokens);
  // MatchPrompt left the prompt's state (tokens, keys, the hashes it
  // computed) in scratch: take it over.
  s.prefix.emplace(std::move(scratch_prefix_));
  scratch_prefix_ = PrefixState();
  PrefixState& p = *s.prefix;
  p.epoch = books_->prefix_epoch();
  int32_t hits =
      PinHits(s, (prompt_tokens - 1) / layout_.block_tokens, match.blocks);
  absl::Status status = Place(s, prompt_tokens, out);
  if (!status.ok()) {
    s.table.ClearTailFirst();
    sequences_.erase(seq);
    return status;
  }
  const int32_t bt = layout_.block_tokens;
  p.committed = int64_t{hits} * bt;
  p.published = hits;
  ++prefix_stats_.queries;
  prefix_stats_.query_tokens += prompt_tokens;
  prefix_stats_.query_blocks += prompt_tokens / bt;
  if (storage_ == StorageMode::kBooksOnly) {
    if (BeginRemoteLoad(s, hits, out)) {
      s.load_at_admission = true;  // Its hits count at completion.
      prefix_stats_.hit_tokens += int64_t{hits} * bt;
      prefix_stats_.hit_blocks += hits;
      return absl::OkStatus();
    }
  } else {
    hits += FillFromRemote(s, hits, out);  // Publishes what it loads.
  }
  prefix_stats_.hit_tokens += int64_t{hits} * bt;
  prefix_stats_.hit_blocks += hits;
  ++num_running_;
  return absl::OkStatus();
}

KVCacheManager::Sequence& KVCacheManager::InsertSequence(SequenceId seq,
                                                         int64_t max_tokens) {
  auto [it, inserted] = sequences_.try_emplace(seq, books_, ++next_entry_);
  PKV_CHECK(inserted, "sequence %d appeared", seq);
  it->second.max_tokens = max_tokens;
  return it->second;
}

absl::Status KVCacheManager::Place(Sequence& s, int64_t num_tokens,
                                   StepOutput* out) {
  // Reserve first (kReservation), then take the blocks from the reservation.
  const int64_t old_reserved = s.reserved;
  const int32_t held = s.table.num_blocks();  // Pinned cache hits.
  PKV_CHECK(int64_t{held} * layout_.block_tokens <= num_tokens,
            "placing %d tokens over %d held blocks", num_tokens, held);
  s.state = SequenceState::kRunning;
  s.may_share = false;  // Fresh blocks only.
  const int32_t old_capacity =
      reservation_.has_value() ? reservation_->capacity() : 0;
  if (admission_ == AdmissionMode::kReservation) {
    Rereserve(s, ReserveNeed(s));
    if (absl::Status st = SyncReservation(); !st.ok()) {
      Rereserve(s, old_reserved);  // The failed Resize changed nothing.
      return st;
    }
  }
  const TableGrowth growth{&s.table,
                           static_cast<int32_t>(BlocksFor(num_tokens) - held)};
  absl::StatusOr<PendingCopies> copies = PrepareWrite(
      *books_, {.targets = {},
                .growth = absl::MakeConstSpan(&growth, 1),
                .reservation = reservation_ ? &*reservation_ : nullptr});
  if (!copies.ok()) {
    Rereserve(s, old_reserved);
    if (reservation_.has_value()) {
      PKV_CHECK(reservation_->Resize(old_capacity).ok(),
                "shrinking a reservation failed");
    }
    return copies.status();
  }
  PKV_CHECK(copies->empty(), "placing a sequence copied %d blocks",
            copies->size());
  s.num_tokens = num_tokens;
  if (admission_ == AdmissionMode::kReservation) Rereserve(s, ReserveNeed(s));
  out->Clear();
  const int64_t cached = int64_t{held} * layout_.block_tokens;
  out->num_cached_tokens = cached;
  out->request_offsets.push_back(0);
  AddSlots(s.table, cached, num_tokens - cached, out);
  out->request_offsets.push_back(
      static_cast<int32_t>(out->slot_mapping.size()));
  return absl::OkStatus();
}

}  // namespace pagedkv
