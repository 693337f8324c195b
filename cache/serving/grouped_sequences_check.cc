// GroupedSequences::CheckInvariants (cache/serving/grouped_sequences.h):
// the tables, holes and windows of every sequence, the references they
// account for, and the cached entries each published.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "base/check.h"
#include "cache/serving/grouped_sequences.h"

namespace pagedkv {
namespace internal {

void GroupedSequences::CheckPublishedEntries(SequenceId id,
                                             const Sequence& s) const {
  const SequencePrefix& p = *s.prefix;
  const int64_t bt = block_tokens_;
  const absl::Span<const BlockId> anchor = s.tables[anchor_].entries();
  PKV_CHECK(p.keys.size() == p.hashes.size() &&
                p.published <= static_cast<int64_t>(p.keys.size()),
            "sequence %d: %d keys, %d hashes, %d published", id, p.keys.size(),
            p.hashes.size(), p.published);
  // A published entry may since have left the index (a window anchor's
  // evicted head takes its in-use tail along; a leaf may have found its
  // place taken), and holes hold nothing; what is still cached must be
  // this sequence's block: its tokens and keys, its group, under its
  // anchor block (unchecked where the anchor's entry is a hole).
  for (int32_t g = 0; g < num_groups(); ++g) {
    const bool is_anchor = g == anchor_;
    const int64_t published = is_anchor ? p.published : s.group_published[g];
    const std::vector<BlockHash>& hashes =
        is_anchor ? p.hashes : s.group_hashes[g];
    const absl::Span<const BlockId> t = s.tables[g].entries();
    PKV_CHECK(published <= static_cast<int64_t>(hashes.size()) &&
                  published <= static_cast<int64_t>(t.size()) &&
                  published * bt <= static_cast<int64_t>(p.tokens.size()),
              "sequence %d group %d: %d published, %d keyed, %d entries, %d "
              "ids",
              id, g, published, hashes.size(), t.size(), p.tokens.size());
    for (int64_t i = 0; i < published; ++i) {
      if (!t[i].is_valid() || !books_->is_cached(t[i])) continue;
      std::optional<BlockId> parent;
      if (is_anchor) {
        if (i == 0) {
          parent = BlockId();
        } else if (anchor[i - 1].is_valid()) {
          parent = anchor[i - 1];
        }
      } else if (anchor[i].is_valid()) {
        parent = anchor[i];
      }
      PKV_CHECK(
          books_->IsCachedAs(t[i], g, parent, hashes[i],
                             absl::MakeConstSpan(p.tokens).subspan(i * bt, bt),
                             p.keys[i]),
          "sequence %d group %d: published block %d (block#%d) is "
          "cached as another chain's, group's or tokens'",
          id, g, i, t[i].value());
    }
  }
}

void GroupedSequences::CheckInvariants() const {
  int32_t running = 0;
  std::vector<const WindowTable*> tables;
  std::vector<const WindowTable*> host_tables;
  std::vector<uint64_t> entries;
  // A table of group g covering s's tokens, holes below its window.
  const auto check_layout = [this](SequenceId id, const Sequence& s, int32_t g,
                                   const WindowTable& t, const char* tier) {
    PKV_CHECK(t.num_entries() == BlocksFor(s.num_tokens),
              "sequence %d group %d (%s): %d entries for %d tokens", id, g,
              tier, t.num_entries(), s.num_tokens);
    const int64_t first =
        groups_[g].is_window()
            ? WindowFirstNeededBlock(s.computed, groups_[g].sliding_window,
                                     block_tokens_)
            : 0;
    for (int32_t i = 0; i < t.num_entries(); ++i) {
      PKV_CHECK(t.entries()[i].is_valid() == (i >= first),
                "sequence %d group %d (%s): entry %d is %s, the window starts "
                "at block %d (computed %d)",
                id, g, tier, i, t.entries()[i].is_valid() ? "live" : "a hole",
                first, s.computed);
    }
  };
  for (const auto& [id, s] : sequences_) {
    PKV_CHECK(s.entry >= 1 && s.entry <= next_entry_,
              "sequence %d: entry %d out of [1, %d]", id, s.entry, next_entry_);
    entries.push_back(s.entry);
    PKV_CHECK(0 <= s.computed && s.computed <= s.num_tokens &&
                  s.num_tokens <= KVCacheManager::kMaxSequenceTokens,
              "sequence %d: computed %d, num_tokens %d", id, s.computed,
              s.num_tokens);
    const bool holds_device = s.state == SequenceState::kRunning ||
                              s.state == SequenceState::kSwappingOut ||
                              s.state == SequenceState::kSwappingIn;
    const bool holds_host = s.state == SequenceState::kSwappedOut ||
                            s.state == SequenceState::kSwappingOut ||
                            s.state == SequenceState::kSwappingIn;
    if (s.state == SequenceState::kRunning) ++running;
    if (holds_host) {
      PKV_CHECK(host_ != nullptr && s.host_tables.size() == groups_.size(),
                "sequence %d (%s): %d host tables", id,
                SequenceStateName(s.state), s.host_tables.size());
      for (int32_t g = 0; g < num_groups(); ++g) {
        PKV_CHECK(s.host_tables[g].pool() == host_, "a host table elsewhere");
        check_layout(id, s, g, s.host_tables[g], "host");
        host_tables.push_back(&s.host_tables[g]);
      }
    } else {
      PKV_CHECK(s.host_tables.empty(), "sequence %d (%s) holds host tables", id,
                SequenceStateName(s.state));
    }
    if (!holds_device) {
      for (const WindowTable& t : s.tables) {
        PKV_CHECK(t.num_entries() == 0, "sequence %d (%s) holds entries", id,
                  SequenceStateName(s.state));
      }
      continue;
    }
    PKV_CHECK(s.tables.size() == groups_.size(), "sequence %d: %d tables", id,
              s.tables.size());
    for (int32_t g = 0; g < num_groups(); ++g) {
      tables.push_back(&s.tables[g]);
      check_layout(id, s, g, s.tables[g], "device");
    }
  }
  // The host tier's references are the host tables' live entries, one
  // each.
  if (host_ != nullptr) CheckWindowRefCounts(*host_, host_tables);
  PKV_CHECK(running == num_running_, "%d running, counted %d", running,
            num_running_);
  std::sort(entries.begin(), entries.end());
  PKV_CHECK(std::adjacent_find(entries.begin(), entries.end()) == entries.end(),
            "two sequences share an entry number");
  // Every reference is a live entry's or a pending copy's source (the
  // caller marks those done): CheckWindowRefCounts' rule, with room for
  // at most cow_copies_ references held by copies.
  books_->CheckInvariants();
  std::vector<int32_t> refs(books_->num_blocks(), 0);
  for (const WindowTable* t : tables) {
    PKV_CHECK(t->pool() == books_, "a table on another pool");
    t->CheckInvariants();
    for (BlockId e : t->entries()) {
      if (e.is_valid()) ++refs[e.value()];
    }
  }
  int64_t copy_refs = 0;
  for (int32_t b = 0; b < books_->num_blocks(); ++b) {
    const int32_t held = books_->ref_count(BlockId(b));
    PKV_CHECK(held >= refs[b], "block %d: ref_count %d, %d entries name it", b,
              held, refs[b]);
    copy_refs += held - refs[b];
  }
  PKV_CHECK(!sole_user_ || copy_refs <= cow_copies_,
            "%d references held by no table, %d copies handed out", copy_refs,
            cow_copies_);
  if (reservation_.has_value()) {
    // Every running (or swapping-in) sequence within the worst case it
    // reserved, and the reservation their sum (or its charged blocks, if
    // more).
    int64_t total = 0;
    for (const auto& [id, s] : sequences_) {
      if (s.state == SequenceState::kSwappingOut) {
        total += LiveEntries(s.tables);  // What it holds until CompleteSwap.
        continue;
      }
      if (s.state != SequenceState::kRunning &&
          s.state != SequenceState::kSwappingIn) {
        continue;
      }
      PKV_CHECK(s.num_tokens <= s.max_tokens,
                "sequence %d: %d tokens past its reserved %d", id, s.num_tokens,
                s.max_tokens);
      total += ReservePeak(s.placed, s.max_tokens);
      for (int32_t g = 0; g < num_groups(); ++g) {
        PKV_CHECK(
            s.tables[g].num_live() <= GroupPeak(g, s.placed, s.max_tokens),
            "sequence %d group %d: %d live blocks, %d reserved", id, g,
            s.tables[g].num_live(), GroupPeak(g, s.placed, s.max_tokens));
      }
    }
    PKV_CHECK(total == reserved_total_, "sequences reserve %d, total says %d",
              total, reserved_total_);
    PKV_CHECK(reservation_->capacity() ==
                  std::max<int64_t>(total, reservation_->num_charged()),
              "reservation of %d blocks, %d charged, sequences reserve %d",
              reservation_->capacity(), reservation_->num_charged(), total);
  } else {
    PKV_CHECK(reserved_total_ == 0, "%d reserved without a reservation",
              reserved_total_);
  }
  for (const auto& [id, s] : sequences_) {
    if (!s.prefix.has_value()) continue;
    const SequencePrefix& p = *s.prefix;
    PKV_CHECK(prefix_caching() && s.group_published.size() == groups_.size() &&
                  s.group_hashes.size() == groups_.size(),
              "sequence %d: prefix state without caching or sizes", id);
    PKV_CHECK(p.committed <= s.num_tokens &&
                  static_cast<int64_t>(p.tokens.size()) <= s.num_tokens &&
                  p.published <= static_cast<int64_t>(p.hashes.size()) &&
                  int64_t{p.published} * block_tokens_ <= p.committed,
              "sequence %d: %d tokens, %d ids, committed %d, published %d of "
              "%d keyed",
              id, s.num_tokens, p.tokens.size(), p.committed, p.published,
              p.hashes.size());
    for (int32_t g = 0; g < num_groups(); ++g) {
      PKV_CHECK(s.group_published[g] <= p.published &&
                    s.group_hashes[g].size() <= p.hashes.size(),
                "sequence %d group %d: %d published, %d keyed; the anchor "
                "%d, %d",
                id, g, s.group_published[g], s.group_hashes[g].size(),
                p.published, p.hashes.size());
    }
    if (s.state == SequenceState::kRunning &&
        p.epoch == books_->prefix_epoch()) {
      CheckPublishedEntries(id, s);
    }
  }
  // A sequence that is not may_share has its steps write its tails in
  // place: no tail is a block another holder has, or one in the prefix
  // cache (whose bytes must stay the entry's). Without prefix caching
  // nothing else of it is shared either.
  for (const auto& [id, s] : sequences_) {
    if (s.may_share) continue;
    PKV_CHECK(s.tables.size() == groups_.size(),
              "sequence %d has %d tables, %d groups", id, s.tables.size(),
              groups_.size());
    const bool partial_tail = OffsetOf(s.num_tokens) != 0;
    for (int32_t g = 0; g < num_groups(); ++g) {
      const absl::Span<const BlockId> entries = s.tables[g].entries();
      for (size_t i = 0; i < entries.size(); ++i) {
        const BlockId e = entries[i];
        const bool tail = partial_tail && i + 1 == entries.size();
        if (!e.is_valid() || (s.prefix.has_value() && !tail)) continue;
        PKV_CHECK(books_->ref_count(e) == 1 && !books_->is_cached(e),
                  "sequence %d (%d tokens) is not may_share but its group %d "
                  "holds block#%d (entry %d%s) of ref_count %d (cached: %d)",
                  id, s.num_tokens, g, e.value(), i, tail ? ", its tail" : "",
                  books_->ref_count(e), books_->is_cached(e));
      }
    }
  }
}

}  // namespace internal
}  // namespace pagedkv
