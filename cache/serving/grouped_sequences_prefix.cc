// GroupedSequences' prefix caching: the anchor group's chain, the other
// groups' entries under it, hits that cover every window, commits,
// truncation and resets. The books are the pool's (BlockPool's prefix
// methods, allocator/prefix/); this file decides which blocks of which
// group of which sequence to ask about. See grouped_sequences.h.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/window_blocks.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"

namespace pagedkv {
namespace internal {

void GroupedSequences::EnsureKeys(Sequence& s, int64_t n) const {
  SequencePrefix& p = *s.prefix;
  ExtendBlockKeys(*hasher_, block_tokens_, p, n);
  const int64_t bt = block_tokens_;
  for (int32_t g = 0; g < num_groups(); ++g) {
    if (g == anchor_) continue;
    std::vector<BlockHash>& h = s.group_hashes[g];
    for (int64_t i = static_cast<int64_t>(h.size()); i < n; ++i) {
      h.push_back(hasher_->Hash(
          GroupChainParent(p.hashes[i], g),
          absl::MakeConstSpan(p.tokens.data() + i * bt, bt), p.keys[i]));
    }
  }
}

void GroupedSequences::SetPrompt(Sequence& s, absl::Span<const int32_t> prompt,
                                 const PrefixKeys& keys) const {
  s.prefix.emplace();
  SequencePrefix& p = *s.prefix;
  p.tokens.assign(prompt.begin(), prompt.end());
  p.tenant_salt = keys.tenant_salt;
  p.adapter_id = keys.adapter_id;
  p.multimodal.assign(keys.multimodal.begin(), keys.multimodal.end());
  s.group_hashes.resize(groups_.size());
  for (std::vector<BlockHash>& h : s.group_hashes) h.clear();
}

BlockPool::PrefixChain GroupedSequences::AnchorChain(const SequencePrefix& p,
                                                     int64_t first,
                                                     int64_t n) const {
  const int64_t bt = block_tokens_;
  BlockPool::PrefixChain c;
  c.hashes = absl::MakeConstSpan(p.hashes.data() + first, n);
  c.keys = absl::MakeConstSpan(p.keys.data() + first, n);
  c.tokens = absl::MakeConstSpan(p.tokens.data() + first * bt, n * bt);
  c.group = anchor_;
  return c;
}

namespace {

// Group g's first wanted block of a hit (MatchHit's firsts; empty: 0).
int64_t FirstWanted(absl::Span<const int64_t> firsts, int32_t g) {
  PKV_DCHECK(firsts.empty() || static_cast<size_t>(g) < firsts.size(),
             "group %d of %d firsts", g, firsts.size());
  return firsts.empty() ? 0 : firsts[g];
}

}  // namespace

absl::Span<const BlockPool::PrefixGroup> GroupedSequences::GroupQuery(
    const Sequence& s, int64_t n, absl::Span<const int64_t> firsts) const {
  scratch_groups_.clear();
  for (int32_t g = 0; g < num_groups(); ++g) {
    if (g == anchor_) continue;
    scratch_groups_.push_back(BlockPool::PrefixGroup{
        .group = g,
        .window = groups_[g].is_window() ? groups_[g].sliding_window : 0,
        .hashes = absl::MakeConstSpan(s.group_hashes[g].data(), n),
        .first = FirstWanted(firsts, g)});
  }
  return scratch_groups_;
}

namespace {

// The anchor's verified cached blocks among p's first max_blocks, keying
// as the ungrouped manager does: 16 blocks, then 8x as many while all hit,
// so a prompt that misses early is not keyed whole. Free ones count without
// a revival budget: MatchGroupedPrefix applies it to the blocks it pins (a
// window anchor pins only its window).
int64_t AnchorHits(const BlockPool& books, const BlockHasher& hasher,
                   int32_t block_tokens, int32_t anchor, SequencePrefix& p,
                   int64_t max_blocks) {
  int64_t hits = 0;
  for (int64_t n = std::min<int64_t>(max_blocks, 16); n > 0;
       n = std::min<int64_t>(max_blocks, 8 * n)) {
    ExtendBlockKeys(hasher, block_tokens, p, n);
    BlockPool::PrefixChain c;
    c.hashes = absl::MakeConstSpan(p.hashes.data(), n);
    c.keys = absl::MakeConstSpan(p.keys.data(), n);
    c.tokens = absl::MakeConstSpan(p.tokens.data(), n * block_tokens);
    c.group = anchor;
    hits = books.CachedPrefixLength(c);
    if (hits < n || n == max_blocks) break;
  }
  return hits;
}

}  // namespace

BlockPool::PrefixMatch GroupedSequences::MatchHit(
    Sequence& s, int64_t max_blocks, int64_t* anchor_hits,
    absl::Span<const int64_t> firsts) const {
  if (anchor_hits != nullptr) *anchor_hits = 0;
  if (max_blocks <= 0) return {};
  const int64_t a = AnchorHits(*books_, *hasher_, block_tokens_, anchor_,
                               *s.prefix, max_blocks);
  if (anchor_hits != nullptr) *anchor_hits = a;
  if (a == 0) return {};
  EnsureKeys(s, a);
  return books_->MatchGroupedPrefix(AnchorChain(*s.prefix, 0, a),
                                    anchor_window_, GroupQuery(s, a, firsts),
                                    FirstWanted(firsts, anchor_));
}

int64_t GroupedSequences::PinHit(Sequence& s, int64_t max_blocks,
                                 int64_t anchor_hits,
                                 absl::Span<const int64_t> firsts) {
  if (s.tables.empty()) {
    for (int32_t g = 0; g < num_groups(); ++g) s.tables.emplace_back(books_);
  }
  for (const WindowTable& t : s.tables) {
    PKV_CHECK(t.num_entries() == 0, "pinning hits into a table of %d entries",
              t.num_entries());
  }
  if (max_blocks <= 0) return 0;
  // The keys of [0, a) are in s already when the caller matched.
  const int64_t a = anchor_hits >= 0
                        ? anchor_hits
                        : AnchorHits(*books_, *hasher_, block_tokens_, anchor_,
                                     *s.prefix, max_blocks);
  if (a == 0) return 0;
  EnsureKeys(s, a);
  scratch_pins_.clear();
  const int64_t hit =
      books_
          ->PinGroupedPrefix(AnchorChain(*s.prefix, 0, a), anchor_window_,
                             GroupQuery(s, a, firsts), &scratch_pins_,
                             FirstWanted(firsts, anchor_))
          .blocks;
  // The pins: the anchor's, then group by group (the query's order), each
  // from its first needed block on, holes below.
  const BlockId* next = scratch_pins_.data();
  for (int32_t k = -1; k < num_groups(); ++k) {
    const int32_t g = k == -1 ? anchor_ : k;
    if (k == anchor_) continue;
    WindowTable& t = s.tables[g];
    // What MatchGroupedPrefix pinned of this group: holes below.
    const int64_t first = HitFirstHeldBlock(
        hit, groups_[g].sliding_window, FirstWanted(firsts, g), block_tokens_);
    for (int64_t i = 0; i < first; ++i) t.AppendHole();
    for (int64_t i = first; i < hit; ++i) t.Append(*next++);
    PKV_CHECK(t.ReleaseBefore(first) == 0, "a pinned hit released a block");
  }
  PKV_CHECK(next == scratch_pins_.data() + scratch_pins_.size(),
            "%d pins for a hit of %d blocks", scratch_pins_.size(), hit);
  return hit;
}

void GroupedSequences::ClearTables(Sequence& s) {
  for (int32_t g = 0; g < static_cast<int32_t>(s.tables.size()); ++g) {
    if (g != anchor_) s.tables[g].Clear();  // Tail first.
  }
  if (anchor_ >= 0 && anchor_ < static_cast<int32_t>(s.tables.size())) {
    s.tables[anchor_].Clear();
  }
}

void GroupedSequences::PublishCommitted(Sequence& s) {
  SequencePrefix& p = *s.prefix;
  const uint64_t epoch = books_->prefix_epoch();
  if (p.epoch != epoch) {  // A reset unpublished everything: start again.
    p.epoch = epoch;
    p.published = 0;
    p.stopped = false;
    std::fill(s.group_published.begin(), s.group_published.end(), 0);
  }
  WindowTable& anchor = s.tables[anchor_];
  const int64_t full = std::min<int64_t>(
      std::min<int64_t>(p.committed / block_tokens_,
                        static_cast<int64_t>(p.tokens.size()) / block_tokens_),
      anchor.num_entries());
  // A window anchor may have released the block to chain to (holes are a
  // prefix of its table): the chain ends there.
  if (full > p.published && !p.stopped &&
      !anchor.entries()[std::max(p.published - 1, 0)].is_valid()) {
    p.stopped = true;
  }
  if (full > p.published && !p.stopped) {
    ExtendBlockKeys(*hasher_, block_tokens_, p, full);
    const int64_t n = full - p.published;
    const BlockId parent =
        p.published > 0 ? anchor.entries()[p.published - 1] : BlockId();
    scratch_switches_.clear();
    const int32_t done = books_->Publish(
        anchor.entries().subspan(p.published, n), parent,
        AnchorChain(p, p.published, n), &scratch_switches_);
    for (const BlockPool::PrefixSwitch& sw : scratch_switches_) {
      anchor.Replace(p.published + sw.index, sw.cached);
      ++prefix_stats_.switched_blocks;
    }
    p.published += done;
    if (done < n) p.stopped = true;
  }
  // Every other group up to the anchor, under its (switched) blocks.
  EnsureKeys(s, p.published);
  for (int32_t g = 0; g < num_groups(); ++g) {
    if (g == anchor_) continue;
    const int32_t from = s.group_published[g];
    const int32_t n = p.published - from;
    if (n <= 0) continue;
    scratch_switches_.clear();
    const int32_t done = books_->PublishGroupBlocks(
        anchor.entries().subspan(from, n), s.tables[g].entries().subspan(from, n),
        g, absl::MakeConstSpan(s.group_hashes[g].data() + from, n),
        &scratch_switches_);
    for (const BlockPool::PrefixSwitch& sw : scratch_switches_) {
      s.tables[g].Replace(from + sw.index, sw.cached);
      ++prefix_stats_.switched_blocks;
    }
    s.group_published[g] = from + done;
  }
}

void GroupedSequences::TruncatePrefix(Sequence& s, int64_t new_length) {
  SequencePrefix& p = *s.prefix;
  const int64_t full = new_length / block_tokens_;
  if (static_cast<int64_t>(p.tokens.size()) > new_length) {
    p.tokens.resize(new_length);
  }
  if (static_cast<int64_t>(p.hashes.size()) > full) {
    p.hashes.resize(full);
    p.keys.resize(full);
  }
  for (std::vector<BlockHash>& h : s.group_hashes) {
    if (static_cast<int64_t>(h.size()) > full) h.resize(full);
  }
  p.committed = std::min(p.committed, new_length);
  p.published = static_cast<int32_t>(std::min<int64_t>(p.published, full));
  for (int32_t& done : s.group_published) done = std::min(done, p.published);
  // A new tail inside a published block stays published: Truncate made
  // the sequence may_share, so its next write copies it (CountCopies) and
  // the entry keeps its KV.
}

Admission GroupedSequences::AdmitBlocks(int64_t prompt_tokens,
                                        int64_t max_new_tokens, int64_t fresh,
                                        int64_t revived) const {
  if (prompt_tokens <= 0 || max_new_tokens < 0 ||
      prompt_tokens > KVCacheManager::kMaxSequenceTokens - max_new_tokens) {
    return Admission::kNever;
  }
  const int64_t unreserved = books_->num_unreserved_free_blocks();
  if (reservation_.has_value()) {
    // The reservation grows by what its capacity lacks for this one's
    // worst case (it may hold more: copies' sources not yet done); a hit
    // lowers what is taken, not what is reserved, and each revived cached
    // block takes an unreserved free one besides.
    const int64_t peak =
        ReservePeak(prompt_tokens, prompt_tokens + max_new_tokens);
    if (peak > books_->num_blocks()) return Admission::kNever;
    const int64_t grow =
        std::max<int64_t>(reserved_total_ + peak, reservation_->num_charged()) -
        reservation_->capacity();
    return grow + revived <= unreserved ? Admission::kAdmit
                                        : Admission::kLater;
  }
  // Every prompt token gets a slot in every group; the windows release
  // only from the next step on. Never: not even without a hit.
  if (PlaceNeed(prompt_tokens) > books_->num_blocks()) return Admission::kNever;
  const int64_t keep =
      static_cast<int64_t>(watermark_ * books_->num_blocks());
  return fresh + revived + keep <= unreserved ? Admission::kAdmit
                                              : Admission::kLater;
}

Admission GroupedSequences::CanAdmit(absl::Span<const int32_t> prompt,
                                     int64_t max_new_tokens,
                                     const PrefixKeys& keys) const {
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  if (!prefix_caching() || prompt_tokens <= 0 ||
      prompt_tokens > KVCacheManager::kMaxSequenceTokens) {
    return CanAdmit(prompt_tokens, max_new_tokens);
  }
  // The prompt's keys in scratch (SetPrompt rebuilds its prefix state, so
  // each call allocates its vectors).
  Sequence& s = scratch_match_;
  SetPrompt(s, prompt, keys);
  const BlockPool::PrefixMatch m =
      MatchHit(s, (prompt_tokens - 1) / block_tokens_);
  return AdmitBlocks(prompt_tokens, max_new_tokens,
                     PlaceNeed(prompt_tokens) - int64_t{m.blocks} * num_groups(),
                     m.revived);
}

absl::Status GroupedSequences::AddSequence(SequenceId seq,
                                           absl::Span<const int32_t> prompt,
                                           int64_t max_new_tokens,
                                           StepOutput* out,
                                           const PrefixKeys& keys) {
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  if (!prefix_caching() || sequences_.contains(seq) || prompt_tokens <= 0 ||
      max_new_tokens < 0 ||
      prompt_tokens > KVCacheManager::kMaxSequenceTokens - max_new_tokens) {
    // Without caching it is the plain call; else that call says why not
    // (and changes nothing).
    return AddSequence(seq, prompt_tokens, max_new_tokens, out);
  }
  PKV_CHECK(out != nullptr, "AddSequence needs an output");
  out->Clear();
  PKV_RETURN_IF_ERROR(
      CheckMultimodalSpans(seq, keys.multimodal, prompt_tokens));
  Sequence s;
  s.max_tokens = prompt_tokens + max_new_tokens;
  SetPrompt(s, prompt, keys);
  SequencePrefix& p = *s.prefix;
  p.epoch = books_->prefix_epoch();
  s.group_published.assign(groups_.size(), 0);
  const int64_t max_blocks = (prompt_tokens - 1) / block_tokens_;
  int64_t anchor_hits = 0;
  const BlockPool::PrefixMatch m = MatchHit(s, max_blocks, &anchor_hits);
  const int64_t fresh =
      PlaceNeed(prompt_tokens) - int64_t{m.blocks} * num_groups();
  const Admission a =
      AdmitBlocks(prompt_tokens, max_new_tokens, fresh, m.revived);
  if (a != Admission::kAdmit) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "sequence %d: a prompt of %d tokens with a cache hit of %d blocks "
        "(%d of them free, revived) needs %d new blocks (%d groups), %d free "
        "and unreserved, watermark %g%s: %s",
        seq, prompt_tokens, m.blocks, m.revived, fresh, num_groups(),
        books_->num_unreserved_free_blocks(), watermark_,
        reservation_.has_value() ? ", reserving its worst case" : "",
        a == Admission::kNever ? "never fits" : "fits later"));
  }
  PKV_RETURN_IF_ERROR(Reserve(seq, prompt_tokens, s.max_tokens));
  // Pinned in one lock: no allocation between lookup and pin can evict a
  // hit (reserving may have made it shorter: revivals need unreserved
  // blocks).
  const int64_t hit = PinHit(s, max_blocks, anchor_hits);
  if (absl::Status st = Place(s, prompt_tokens, hit, out); !st.ok()) {
    ClearTables(s);
    Unreserve(prompt_tokens, s.max_tokens);
    return st;
  }
  p.committed = hit * block_tokens_;
  p.published = static_cast<int32_t>(hit);
  std::fill(s.group_published.begin(), s.group_published.end(),
            static_cast<int32_t>(hit));
  ++prefix_stats_.queries;
  prefix_stats_.query_tokens += prompt_tokens;
  prefix_stats_.query_blocks += prompt_tokens / block_tokens_;
  prefix_stats_.hit_tokens += hit * block_tokens_;
  prefix_stats_.hit_blocks += hit;
  s.entry = ++next_entry_;
  sequences_.emplace(seq, std::move(s));
  return absl::OkStatus();
}

absl::Status GroupedSequences::CommitTokens(
    absl::Span<const TokenCommit> commits) {
  if (!prefix_caching()) {
    return absl::FailedPreconditionError(
        "CommitTokens on a manager without prefix caching");
  }
  ++step_stamp_;  // Marks the sequences given ids in this call.
  for (const TokenCommit& c : commits) {
    PKV_ASSIGN_OR_RETURN(Sequence * s, Find(c.seq));
    PKV_RETURN_IF_ERROR(CheckTokenCommit(
        c.seq, s->state == SequenceState::kRunning,
        SequenceStateName(s->state),
        s->prefix.has_value() ? &*s->prefix : nullptr, s->num_tokens,
        c.num_tokens, static_cast<int64_t>(c.token_ids.size()),
        s->step_stamp == step_stamp_));
    if (!c.token_ids.empty()) s->step_stamp = step_stamp_;
  }
  for (const TokenCommit& c : commits) {
    Sequence& s = sequences_.find(c.seq)->second;
    SequencePrefix& p = *s.prefix;
    p.tokens.insert(p.tokens.end(), c.token_ids.begin(), c.token_ids.end());
    p.committed = std::max(p.committed, c.num_tokens);
    PublishCommitted(s);
  }
  return absl::OkStatus();
}

void GroupedSequences::ResetPrefixCache() {
  books_->ResetPrefixCache();
  // This manager's sequences republish from their first block at their
  // next commit.
  const uint64_t epoch = books_->prefix_epoch();
  for (auto& [id, s] : sequences_) {
    if (!s.prefix.has_value()) continue;
    s.prefix->published = 0;
    s.prefix->stopped = false;
    s.prefix->epoch = epoch;
    std::fill(s.group_published.begin(), s.group_published.end(), 0);
  }
}

}  // namespace internal
}  // namespace pagedkv
