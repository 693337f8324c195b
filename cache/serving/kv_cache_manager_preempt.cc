// cache/serving/kv_cache_manager_preempt.cc
//
// KVCacheManager's preemption: recompute (Preempt / Readmit, which re-hits
// what the prefix cache kept) and swap to the host tier (SwapOut / SwapIn /
// CompleteSwap, copied in host mode, planned for the caller books-only).
// Split from kv_cache_manager.cc so each file holds one mechanism; a
// grouped manager forwards to GroupedSequences.
#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/sequence_state_error.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv {

using internal::NoSwapPending;
using internal::NotRunning;
using internal::WrongState;

// ---------------------------------------------------------------------------
// Preemption

absl::Status KVCacheManager::Preempt(SequenceId seq) {
  if (windows_ != nullptr) return windows_->Preempt(seq);
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "Preempt");
  }
  s->table.ClearTailFirst();
  s->state = SequenceState::kPreempted;
  s->forked = false;
  DropShare(*s);
  --num_running_;
  ++preemptions_;
  return absl::OkStatus();
}

absl::StatusOr<BlockPool::PrefixMatch> KVCacheManager::MatchWithRoom(
    SequenceId seq, Sequence& s, int64_t max_hits, const char* call) {
  const BlockPool::PrefixMatch m = MatchHashing(*s.prefix, max_hits);
  // Without room, fail before pinning: pins released again would have
  // moved the revived blocks in the eviction order and counted their
  // allocations. kWatermark needs its fresh blocks; kReservation the growth
  // of the reservation Place makes for the rest (up to max_tokens,
  // ReserveNeed with the hits held). Each revived hit takes a free block
  // too. (The match already stops where revivals run out of free blocks; a
  // shorter hit would only grow the need.)
  int64_t fresh = BlocksFor(s.num_tokens) - m.blocks;
  if (admission_ == AdmissionMode::kReservation) {
    fresh = std::max<int64_t>(
        0, reservation_->num_charged() + reserved_for_sequences_ -
               s.reserved + ReserveNeed(s, m.blocks) -
               reservation_->capacity());
  }
  if (fresh + m.revived > books_->num_unreserved_free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s of sequence %d: needs %d free blocks (%d tokens, %d blocks "
        "cached, %d of them free%s), %d free",
        call, seq, fresh + m.revived, s.num_tokens, m.blocks, m.revived,
        admission_ == AdmissionMode::kReservation
            ? absl::StrFormat("; %d reserved to %d tokens", fresh,
                              s.max_tokens)
            : "",
        books_->num_unreserved_free_blocks()));
  }
  return m;
}

absl::Status KVCacheManager::Readmit(SequenceId seq, StepOutput* out) {
  if (windows_ != nullptr) return windows_->Readmit(seq, out);
  PKV_CHECK(out != nullptr, "Readmit needs an output");
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kPreempted) {
    return WrongState("Readmit", seq, s->state, "preempted");
  }
  int32_t hits = 0;
  if (s->prefix.has_value()) {
    // Recompute only what the cache lost (always the last token).
    const int64_t max_hits = std::min(
        (s->num_tokens - 1) / layout_.block_tokens, BlocksWithIds(*s->prefix));
    PKV_ASSIGN_OR_RETURN(const BlockPool::PrefixMatch m,
                         MatchWithRoom(seq, *s, max_hits, "Readmit"));
    hits = PinHits(*s, max_hits, m.blocks);
  }
  if (absl::Status st = Place(*s, s->num_tokens, out); !st.ok()) {
    s->table.ClearTailFirst();
    s->state = SequenceState::kPreempted;
    return st;
  }
  if (s->prefix.has_value()) {
    PrefixState& p = *s->prefix;
    p.committed = int64_t{hits} * layout_.block_tokens;
    p.published = hits;
    p.epoch = books_->prefix_epoch();
    p.stopped = false;
    prefix_stats_.rehit_blocks += hits;
    // What the local cache lost may be in the remote tier.
    if (storage_ == StorageMode::kBooksOnly) {
      if (BeginRemoteLoad(*s, hits, out)) {
        s->load_at_admission = false;
        return absl::OkStatus();
      }
    } else {
      FillFromRemote(*s, hits, out);
    }
  }
  ++num_running_;
  return absl::OkStatus();
}

absl::StatusOr<SwapPlan> KVCacheManager::SwapOut(SequenceId seq) {
  if (windows_ != nullptr) return GroupedSwap(seq, /*out=*/true);
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "SwapOut");
  }
  if (!has_host_tier()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("SwapOut of sequence %d: the manager has no host tier "
                        "(Options::num_host_blocks is 0)",
                        seq));
  }
  PKV_ASSIGN_OR_RETURN(s->host_blocks,
                       host_books().Allocate(s->table.num_blocks()));
  SwapPlan plan;
  ++swap_outs_;
  swapped_blocks_ += s->table.num_blocks();
  --num_running_;
  if (storage_ == StorageMode::kHost) {
    PKV_CHECK(CopyBlocksBetween(*pool_, s->table.blocks(), *host_pool_,
                                s->host_blocks)
                  .ok(),
              "swap-out copy between pools of one layout failed");
    swapped_bytes_ +=
        static_cast<int64_t>(s->host_blocks.size() * pool_->block_bytes());
    s->table.ClearTailFirst();
    s->state = SequenceState::kSwappedOut;
    s->forked = false;
    DropShare(*s);
    return plan;
  }
  plan.src.assign(s->table.blocks().begin(), s->table.blocks().end());
  plan.dst = s->host_blocks;
  s->state = SequenceState::kSwappingOut;
  s->forked = false;
  DropShare(*s);
  return plan;
}

absl::StatusOr<SwapPlan> KVCacheManager::SwapIn(SequenceId seq) {
  if (windows_ != nullptr) return GroupedSwap(seq, /*out=*/false);
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kSwappedOut) {
    return WrongState("SwapIn", seq, s->state, "swapped out");
  }
  const int64_t num_tokens = s->num_tokens;
  // Blocks still cached come back without a copy; as in Readmit, the room
  // is checked before any is pinned.
  int32_t hits = 0;
  if (s->prefix.has_value()) {
    const int64_t max_hits = std::min(num_tokens / layout_.block_tokens,
                                      BlocksWithIds(*s->prefix));
    PKV_ASSIGN_OR_RETURN(const BlockPool::PrefixMatch m,
                         MatchWithRoom(seq, *s, max_hits, "SwapIn"));
    hits = PinHits(*s, max_hits, m.blocks);
  }
  StepOutput unused;
  if (absl::Status st = Place(*s, num_tokens, &unused); !st.ok()) {
    s->table.ClearTailFirst();
    s->state = SequenceState::kSwappedOut;
    return st;
  }
  if (s->prefix.has_value()) {
    PrefixState& p = *s->prefix;
    // The copies are published at the next commit. The commit point stays
    // the server's (its next commit may be anywhere from there): hits past
    // it are cached already, and that commit finds them published.
    p.published = static_cast<int32_t>(
        std::min<int64_t>(hits, p.committed / layout_.block_tokens));
    p.epoch = books_->prefix_epoch();
    p.stopped = false;
    prefix_stats_.rehit_blocks += hits;
  }
  PKV_CHECK(
      s->table.num_blocks() == static_cast<int32_t>(s->host_blocks.size()),
      "swap-in of %d host blocks into %d", s->host_blocks.size(),
      s->table.num_blocks());
  SwapPlan plan;
  ++swap_ins_;
  const absl::Span<const BlockId> host_src =
      absl::MakeConstSpan(s->host_blocks).subspan(hits);
  const absl::Span<const BlockId> device_dst = s->table.blocks().subspan(hits);
  swapped_blocks_ += static_cast<int64_t>(device_dst.size());
  if (storage_ == StorageMode::kHost) {
    PKV_CHECK(CopyBlocksBetween(*host_pool_, host_src, *pool_, device_dst).ok(),
              "swap-in copy between pools of one layout failed");
    swapped_bytes_ +=
        static_cast<int64_t>(host_src.size() * pool_->block_bytes());
    host_books().ReleaseAll(s->host_blocks);
    s->host_blocks.clear();
    ++num_running_;
    return plan;
  }
  plan.src.assign(host_src.begin(), host_src.end());
  plan.dst.assign(device_dst.begin(), device_dst.end());
  s->state = SequenceState::kSwappingIn;
  return plan;
}

absl::Status KVCacheManager::CompleteSwap(SequenceId seq) {
  if (windows_ != nullptr) return windows_->CompleteSwap(seq);
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state == SequenceState::kSwappingOut) {
    s->table.ClearTailFirst();
    s->state = SequenceState::kSwappedOut;
    s->forked = false;
    DropShare(*s);
    return absl::OkStatus();
  }
  if (s->state == SequenceState::kSwappingIn) {
    host_books().ReleaseAll(s->host_blocks);
    s->host_blocks.clear();
    s->state = SequenceState::kRunning;
    ++num_running_;
    return absl::OkStatus();
  }
  return NoSwapPending(seq, s->state);
}

}  // namespace pagedkv
