// GroupedSequences' preemption (cache/serving/grouped_sequences.h):
// recompute (Preempt / Readmit, which re-hits the cached prefix) and swap
// to the host tier (SwapOut / SwapIn / CompleteSwap).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"
#include "cache/serving/sequence_state_error.h"

namespace pagedkv {
namespace internal {

absl::Status GroupedSequences::Preempt(SequenceId seq) {
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "Preempt");
  }
  ClearTables(*s);
  s->state = SequenceState::kPreempted;
  s->computed = 0;
  --num_running_;
  Unreserve(s->placed, s->max_tokens);
  ++preemptions_;
  return absl::OkStatus();
}

absl::Status GroupedSequences::Readmit(SequenceId seq, StepOutput* out) {
  PKV_CHECK(out != nullptr, "Readmit needs an output");
  out->Clear();
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kPreempted) {
    return WrongState("Readmit", seq, s->state, "preempted");
  }
  // Its window groups hold every token again until the next step.
  PKV_RETURN_IF_ERROR(Reserve(seq, s->num_tokens, s->max_tokens));
  // Recompute only what the cache lost (always the last token).
  int64_t hit = 0;
  if (s->prefix.has_value()) {
    const int64_t max_hits = std::min<int64_t>(
        (s->num_tokens - 1) / block_tokens_,
        static_cast<int64_t>(s->prefix->tokens.size()) / block_tokens_);
    int64_t anchor_hits = 0;
    const BlockPool::PrefixMatch m = MatchHit(*s, max_hits, &anchor_hits);
    // Without room, fail before pinning: pins released again would have
    // moved the revived blocks in the eviction order.
    const int64_t fresh =
        PlaceNeed(s->num_tokens) - int64_t{m.blocks} * num_groups() + m.revived;
    if (fresh > Available()) {
      Unreserve(s->num_tokens, s->max_tokens);
      return absl::ResourceExhaustedError(absl::StrFormat(
          "Readmit of sequence %d: needs %d free blocks (%d tokens in %d "
          "groups, %d blocks cached, %d blocks to revive), %d free",
          seq, fresh, s->num_tokens, num_groups(), m.blocks, m.revived,
          Available()));
    }
    hit = PinHit(*s, max_hits, anchor_hits);
  }
  if (absl::Status st = Place(*s, s->num_tokens, hit, out); !st.ok()) {
    ClearTables(*s);
    Unreserve(s->num_tokens, s->max_tokens);
    return st;
  }
  if (s->prefix.has_value()) {
    SequencePrefix& p = *s->prefix;
    p.committed = hit * block_tokens_;
    p.published = static_cast<int32_t>(hit);
    std::fill(s->group_published.begin(), s->group_published.end(),
              static_cast<int32_t>(hit));
    p.epoch = books_->prefix_epoch();
    p.stopped = false;
    prefix_stats_.rehit_blocks += hit;
  }
  return absl::OkStatus();
}

int64_t GroupedSequences::LiveEntries(absl::Span<const WindowTable> tables) {
  int64_t live = 0;
  for (const WindowTable& t : tables) live += t.num_live();
  return live;
}

int64_t GroupedSequences::LiveFrom(absl::Span<const WindowTable> tables,
                                   int64_t first) {
  int64_t live = 0;
  for (const WindowTable& t : tables) {
    for (int64_t i = first; i < t.num_entries(); ++i) {
      live += t.entries()[i].is_valid() ? 1 : 0;
    }
  }
  return live;
}

SwapPlan GroupedSequences::MirrorTables(absl::Span<const WindowTable> from,
                                        int64_t first,
                                        absl::Span<const BlockId> blocks,
                                        std::vector<WindowTable>* to) const {
  PKV_CHECK(from.size() == groups_.size() && to->size() == groups_.size(),
            "mirroring %d tables onto %d, %d groups", from.size(), to->size(),
            groups_.size());
  SwapPlan plan;
  plan.src.reserve(blocks.size());
  plan.dst.reserve(blocks.size());
  plan.group_offsets.reserve(groups_.size() + 1);
  plan.group_offsets.push_back(0);
  size_t next = 0;
  for (int32_t g = 0; g < num_groups(); ++g) {
    const WindowTable& f = from[g];
    WindowTable& t = (*to)[g];
    PKV_CHECK(t.num_entries() == first && f.num_entries() >= first,
              "mirroring entries from %d of a table of %d onto one of %d",
              first, f.num_entries(), t.num_entries());
    for (int64_t i = first; i < f.num_entries(); ++i) {
      const BlockId e = f.entries()[i];
      if (!e.is_valid()) {
        t.AppendHole();
        continue;
      }
      PKV_CHECK(next < blocks.size(), "%d blocks for more live entries",
                blocks.size());
      const BlockId b = blocks[next++];
      t.Append(b);
      plan.src.push_back(e);
      plan.dst.push_back(b);
    }
    // Below first_unpassed() all are holes (the entries below `first`
    // too, the caller's): passing them releases nothing, and the next
    // window release starts where the source's would.
    PKV_CHECK(t.ReleaseBefore(f.first_unpassed()) == 0,
              "a mirrored table released live entries");
    plan.group_offsets.push_back(static_cast<int32_t>(plan.src.size()));
  }
  PKV_CHECK(next == blocks.size(), "%d blocks for %d live entries",
            blocks.size(), next);
  return plan;
}

absl::StatusOr<SwapPlan> GroupedSequences::SwapOut(SequenceId seq) {
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kRunning) {
    return NotRunning(seq, s->state, "SwapOut");
  }
  if (host_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("SwapOut of sequence %d: the manager has no host tier "
                        "(Options::num_host_blocks is 0)",
                        seq));
  }
  const int64_t live = LiveEntries(s->tables);
  PKV_ASSIGN_OR_RETURN(std::vector<BlockId> host,
                       host_->Allocate(static_cast<int32_t>(live)));
  s->host_tables.clear();
  for (int32_t g = 0; g < num_groups(); ++g) s->host_tables.emplace_back(host_);
  SwapPlan plan = MirrorTables(s->tables, 0, host, &s->host_tables);
  // The device tables stay held (and charged) until CompleteSwap: of its
  // worst case it keeps reserved just those, and gives up the rest as
  // Preempt does.
  s->state = SequenceState::kSwappingOut;
  --num_running_;
  if (reservation_.has_value()) {
    reserved_total_ -= ReservePeak(s->placed, s->max_tokens) - live;
    SyncReservation();
  }
  ++swap_outs_;
  swapped_blocks_ += live;
  return plan;
}

absl::StatusOr<SwapPlan> GroupedSequences::SwapIn(SequenceId seq) {
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state != SequenceState::kSwappedOut) {
    return WrongState("SwapIn", seq, s->state, "swapped out");
  }
  // The tables come back as they left: the worst case of its placement.
  PKV_RETURN_IF_ERROR(Reserve(seq, s->placed, s->max_tokens));
  // Blocks still cached come back without a copy. The hit stays within
  // the computed tokens, so each window group's hit entries start at or
  // below its first live one (WindowFirstNeededBlock is monotonic) and
  // the rest of its table is the host table's from the hit on. A group
  // wants no block below its host table's first live one (holes there
  // stay holes): the hit neither needs those cached nor pins them.
  int64_t max_hits = 0;
  int64_t anchor_hits = 0;
  BlockPool::PrefixMatch m;
  if (s->prefix.has_value()) {
    max_hits = std::min<int64_t>(
        s->computed / block_tokens_,
        static_cast<int64_t>(s->prefix->tokens.size()) / block_tokens_);
    scratch_firsts_.clear();
    for (const WindowTable& t : s->host_tables) {
      scratch_firsts_.push_back(t.first_unpassed());
    }
    m = MatchHit(*s, max_hits, &anchor_hits, scratch_firsts_);
  }
  // As in Readmit, the room is checked before any block is pinned.
  const int64_t fresh = LiveFrom(s->host_tables, m.blocks) + m.revived;
  if (fresh > Available()) {
    Unreserve(s->placed, s->max_tokens);
    // Without a prefix there is no hit to name.
    const std::string why =
        s->prefix.has_value()
            ? absl::StrFormat("the live entries of %d groups past a cache "
                              "hit of %d blocks, %d cached ones to revive",
                              num_groups(), m.blocks, m.revived)
            : absl::StrFormat("the live entries of %d groups", num_groups());
    return absl::ResourceExhaustedError(
        absl::StrFormat("SwapIn of sequence %d: needs %d blocks (%s), %d free",
                        seq, fresh, why, Available()));
  }
  // Its device tables, emptied by CompleteSwap, are still there (and keep
  // their generations): PinHit and MirrorTables fill them.
  // Holes where the host tables have them, below the hit too.
  const int64_t hit = s->prefix.has_value()
                          ? PinHit(*s, max_hits, anchor_hits, scratch_firsts_)
                          : 0;
  const int64_t copies = LiveFrom(s->host_tables, hit);
  if (absl::Status st = TakeBlocks(copies); !st.ok()) {
    ClearTables(*s);
    Unreserve(s->placed, s->max_tokens);
    return st;
  }
  SwapPlan plan = MirrorTables(s->host_tables, hit, step_blocks_, &s->tables);
  s->may_share = false;  // Fresh tails (a hit holds full blocks only).
  if (s->prefix.has_value()) {
    // The copies are published again at the next commit (switched to equal
    // cached entries where there are some).
    // The commit point stays the server's (its next commit may be
    // anywhere from there): hits past it are cached already, and that
    // commit finds them published.
    SequencePrefix& p = *s->prefix;
    p.published = static_cast<int32_t>(
        std::min<int64_t>(hit, p.committed / block_tokens_));
    std::fill(s->group_published.begin(), s->group_published.end(),
              p.published);
    p.epoch = books_->prefix_epoch();
    p.stopped = false;
    prefix_stats_.rehit_blocks += hit;
  }
  s->state = SequenceState::kSwappingIn;
  ++swap_ins_;
  swapped_blocks_ += copies;
  return plan;
}

absl::Status GroupedSequences::CompleteSwap(SequenceId seq) {
  PKV_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->state == SequenceState::kSwappingOut) {
    // A block another table holds stays with it.
    const int64_t held = LiveEntries(s->tables);
    ClearTables(*s);
    s->may_share = false;
    s->state = SequenceState::kSwappedOut;
    if (reservation_.has_value()) {
      reserved_total_ -= held;
      SyncReservation();
    }
    return absl::OkStatus();
  }
  if (s->state == SequenceState::kSwappingIn) {
    s->host_tables.clear();
    s->state = SequenceState::kRunning;
    ++num_running_;
    return absl::OkStatus();
  }
  return NoSwapPending(seq, s->state);
}

}  // namespace internal
}  // namespace pagedkv
