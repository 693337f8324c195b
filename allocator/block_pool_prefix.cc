// allocator/block_pool_prefix.cc
//
// BlockPool's prefix-cache methods: enabling the index, verified matches
// and pins of a chain (one table, or an anchor and its layer groups),
// publication, unpublication, reset, events and the eviction order. The
// PrefixIndex (allocator/prefix/prefix_index.h) holds the entries; these
// methods take the pool's lock and keep the reference counts, the LRU and
// the index in step. Split from block_pool.cc so each file holds one
// mechanism.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/block_pool.h"
#include "allocator/window_blocks.h"
#include "base/check.h"
#include "base/maybe_lock.h"

namespace pagedkv {
// ---------------------------------------------------------------------------
// BlockPool: prefix cache

absl::Status BlockPool::EnablePrefixCache(const PrefixCacheOptions& options) {
  if (options.block_tokens <= 0 || options.max_pending_events < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prefix cache needs block_tokens > 0 and max_pending_events >= 0, "
        "got %d and %d",
        options.block_tokens, options.max_pending_events));
  }
  MaybeLock lock(&mu_);
  if (prefix_ != nullptr) {
    if (prefix_options_.block_tokens == options.block_tokens &&
        prefix_options_.max_pending_events == options.max_pending_events &&
        prefix_options_.content == options.content) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(absl::StrFormat(
        "the pool's prefix cache is on with %d-token blocks, %d events and "
        "blocks of \"%s\"; asked for %d, %d and \"%s\"",
        prefix_options_.block_tokens, prefix_options_.max_pending_events,
        prefix_options_.content, options.block_tokens,
        options.max_pending_events, options.content));
  }
  prefix_ = std::make_unique<PrefixIndex>(
      num_blocks_locked(), options.block_tokens, options.max_pending_events);
  prefix_options_ = options;
  return absl::OkStatus();
}

bool BlockPool::prefix_cache_enabled() const {
  MaybeLock lock(&mu_);
  return prefix_ != nullptr;
}

void BlockPool::CheckChain(const PrefixChain& chain) const {
  PKV_CHECK(chain.keys.size() == chain.hashes.size() &&
                chain.tokens.size() ==
                    chain.hashes.size() *
                        static_cast<size_t>(prefix_options_.block_tokens),
            "prefix chain of %d hashes, %d keys, %d tokens (%d per block)",
            chain.hashes.size(), chain.keys.size(), chain.tokens.size(),
            prefix_options_.block_tokens);
}

void BlockPool::PinCachedLocked(int32_t b, std::vector<BlockId>* pin) {
  if (ref_counts_[b] == 0) {  // Revived from the LRU.
    prefix_->evictable().Remove(BlockId(b));
    ref_counts_[b] = 1;
    NoteAllocatedLocked(1);
  } else {
    AddRefLocked(BlockId(b));
  }
  pin->push_back(BlockId(b));
}

bool BlockPool::TakeEqualEntryLocked(int32_t found, int32_t b, int32_t index,
                                     std::vector<PrefixSwitch>* switches) {
  if (ref_counts_[found] > 0) {
    AddRefLocked(BlockId(found));
    switches->push_back(PrefixSwitch{index, BlockId(found)});
    return false;
  }
  // Free: our block takes over its entry and children, and it becomes a
  // plain free block.
  prefix_->evictable().Remove(BlockId(found));
  prefix_->Transplant(found, b);
  free_list_.PushBack(BlockId(found));
  return true;
}

BlockPool::PrefixMatch BlockPool::MatchLocked(const PrefixChain& chain,
                                              std::vector<BlockId>* pin,
                                              bool budget) {
  PKV_CHECK(prefix_ != nullptr, "prefix lookup without a prefix cache");
  CheckChain(chain);
  const int32_t bt = prefix_options_.block_tokens;
  PrefixMatch m;
  int32_t parent = -1;
  int32_t revivable = unreserved_free_locked();
  for (size_t i = 0; i < chain.hashes.size(); ++i) {
    const int32_t b =
        prefix_->Find(chain.hashes[i], parent, chain.tokens.subspan(i * bt, bt),
                      chain.keys[i], chain.group);
    if (b == -1) break;
    if (budget && ref_counts_[b] == 0) {
      if (revivable <= 0) break;  // It would take a reserved block.
      --revivable;
      ++m.revived;
    }
    if (pin != nullptr) PinCachedLocked(b, pin);
    ++m.blocks;
    parent = b;
  }
  return m;
}

BlockPool::PrefixMatch BlockPool::MatchPrefix(const PrefixChain& chain) const {
  MaybeLock lock(&mu_);
  return const_cast<BlockPool*>(this)->MatchLocked(chain, nullptr);
}

int32_t BlockPool::CachedPrefixLength(const PrefixChain& chain) const {
  MaybeLock lock(&mu_);
  return const_cast<BlockPool*>(this)
      ->MatchLocked(chain, nullptr, /*budget=*/false)
      .blocks;
}

BlockPool::PrefixMatch BlockPool::PinPrefix(const PrefixChain& chain,
                                            std::vector<BlockId>* out) {
  PKV_CHECK(out != nullptr, "PinPrefix needs an output");
  MaybeLock lock(&mu_);
  return MatchLocked(chain, out);
}

int32_t BlockPool::Publish(absl::Span<const BlockId> blocks, BlockId parent,
                           const PrefixChain& chain,
                           std::vector<PrefixSwitch>* switches) {
  PKV_CHECK(switches != nullptr, "Publish needs a switch list");
  MaybeLock lock(&mu_);
  PKV_CHECK(prefix_ != nullptr, "Publish without a prefix cache");
  CheckChain(chain);
  PKV_CHECK(chain.hashes.size() == blocks.size(),
            "Publish of %d blocks with %d hashes", blocks.size(),
            chain.hashes.size());
  const int32_t bt = prefix_options_.block_tokens;
  int32_t p = -1;
  if (parent.is_valid()) {
    CheckId(parent);
    p = parent.value();
    if (!prefix_->is_published(p)) return 0;
  }
  int32_t done = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const BlockId id = blocks[i];
    CheckId(id);
    const int32_t b = id.value();
    PKV_CHECK(ref_counts_[b] > 0, "Publish of free block %d", b);
    const BlockHash h = chain.hashes[i];
    const absl::Span<const int32_t> tokens = chain.tokens.subspan(i * bt, bt);
    const int32_t found =
        prefix_->TryInsert(b, h, p, tokens, chain.keys[i], chain.group);
    if (found == -1) {  // Published.
      p = b;
    } else if (found == b) {
      PKV_CHECK(prefix_->parent(b) == p,
                "block %d is published under parent %d, not %d", b,
                prefix_->parent(b), p);
      p = b;
    } else if (prefix_->Find(h, p, tokens, chain.keys[i], chain.group) ==
                   found &&
               !prefix_->is_published(b)) {
      // The same KV, computed twice (two sequences prefilled the prefix
      // before either committed it).
      // A block another table holds too (a fork's) cannot be switched:
      // that table would keep it while our next blocks were published
      // under `found`, a parent it does not hold. Stop the chain.
      if (ref_counts_[found] > 0 && ref_counts_[b] > 1) break;
      p = TakeEqualEntryLocked(found, b, static_cast<int32_t>(i), switches)
              ? b
              : found;
    } else {
      break;  // Another prefix's block under this hash: stop the chain.
    }
    ++done;
  }
  prefix_->CloseEvents();
  return done;
}

BlockPool::PrefixMatch BlockPool::MatchGroupedLocked(
    const PrefixChain& anchor, int32_t anchor_window,
    absl::Span<const PrefixGroup> groups, int64_t anchor_first,
    std::vector<BlockId>* pin) {
  PKV_CHECK(prefix_ != nullptr, "prefix lookup without a prefix cache");
  CheckChain(anchor);
  const int32_t bt = prefix_options_.block_tokens;
  // 1. The anchor's verified chain.
  std::vector<int32_t>& ids = scratch_anchor_;
  ids.clear();
  int32_t parent = -1;
  for (size_t i = 0; i < anchor.hashes.size(); ++i) {
    const int32_t b =
        prefix_->Find(anchor.hashes[i], parent,
                      anchor.tokens.subspan(i * bt, bt), anchor.keys[i],
                      anchor.group);
    if (b == -1) break;
    ids.push_back(b);
    parent = b;
  }
  for (const PrefixGroup& g : groups) {
    PKV_CHECK(g.group != anchor.group && g.window >= 0 && g.first >= 0 &&
                  g.hashes.size() == anchor.hashes.size(),
              "group %d (window %d, first %d) with %d hashes under anchor "
              "group %d of %d",
              g.group, g.window, g.first, g.hashes.size(), anchor.group,
              anchor.hashes.size());
  }
  PKV_CHECK(anchor_first >= 0, "anchor_first %d", anchor_first);
  // Group k's entry for block j, or -1; each looked up once per call (the
  // search, the revival count and the pins ask again).
  const int64_t num_ids = static_cast<int64_t>(ids.size());
  std::vector<int32_t>& found = scratch_found_;
  found.assign(groups.size() * ids.size(), -2);
  const auto entry = [&](size_t k, int64_t j) {
    int32_t& e = found[k * num_ids + j];
    if (e == -2) {
      e = prefix_->Find(groups[k].hashes[j], ids[j],
                        anchor.tokens.subspan(j * bt, bt), anchor.keys[j],
                        groups[k].group);
    }
    return e;
  };
  // What a group holds of a hit (window_blocks.h).
  const auto first_of = [bt](int32_t window, int64_t first, int64_t hit) {
    return HitFirstHeldBlock(hit, window, first, bt);
  };
  const auto first_needed = [&](const PrefixGroup& g, int64_t hit) {
    return first_of(g.window, g.first, hit);
  };
  // 2. Lower the hit until every group holds what the next token reads.
  // lo[k]: group k holds every entry in [lo[k], hit) (each entry is looked
  // at once per group: lo only moves down).
  int64_t hit = static_cast<int64_t>(ids.size());
  std::vector<int64_t>& lo = scratch_lo_;
  lo.assign(groups.size(), hit);
  const int32_t revivable = unreserved_free_locked();
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t k = 0; k < groups.size(); ++k) {
      lo[k] = std::min(lo[k], hit);
      while (lo[k] > first_needed(groups[k], hit)) {
        const int64_t j = lo[k] - 1;
        if (entry(k, j) != -1) {
          lo[k] = j;
          continue;
        }
        hit = j;  // Block j is missing: no longer hit may need it.
        lo[k] = j;
        changed = true;
      }
    }
    if (changed) continue;
    // 3. Reviving a free cached block takes a free block: at most the
    // unreserved ones (else a shorter hit, which needs fewer).
    int32_t revived = 0;
    for (int64_t j = first_of(anchor_window, anchor_first, hit); j < hit; ++j) {
      revived += ref_counts_[ids[j]] == 0;
    }
    for (size_t k = 0; k < groups.size(); ++k) {
      for (int64_t j = first_needed(groups[k], hit); j < hit; ++j) {
        revived += ref_counts_[entry(k, j)] == 0;
      }
    }
    if (revived > revivable) {
      --hit;
      changed = true;
    }
  }
  PrefixMatch m;
  m.blocks = static_cast<int32_t>(hit);
  const auto take = [&](int32_t b) {
    m.revived += ref_counts_[b] == 0;
    if (pin != nullptr) PinCachedLocked(b, pin);
  };
  for (int64_t j = first_of(anchor_window, anchor_first, hit); j < hit; ++j) {
    take(ids[j]);
  }
  for (size_t k = 0; k < groups.size(); ++k) {
    for (int64_t j = first_needed(groups[k], hit); j < hit; ++j) {
      take(entry(k, j));
    }
  }
  return m;
}

BlockPool::PrefixMatch BlockPool::MatchGroupedPrefix(
    const PrefixChain& anchor, int32_t anchor_window,
    absl::Span<const PrefixGroup> groups, int64_t anchor_first) const {
  MaybeLock lock(&mu_);
  return const_cast<BlockPool*>(this)->MatchGroupedLocked(
      anchor, anchor_window, groups, anchor_first, nullptr);
}

BlockPool::PrefixMatch BlockPool::PinGroupedPrefix(
    const PrefixChain& anchor, int32_t anchor_window,
    absl::Span<const PrefixGroup> groups, std::vector<BlockId>* out,
    int64_t anchor_first) {
  PKV_CHECK(out != nullptr, "PinGroupedPrefix needs an output");
  MaybeLock lock(&mu_);
  return MatchGroupedLocked(anchor, anchor_window, groups, anchor_first, out);
}

void BlockPool::AllowInUseUnderFreeParents() {
  MaybeLock lock(&mu_);
  PKV_CHECK(prefix_ != nullptr, "AllowInUseUnderFreeParents without a cache");
  prefix_->AllowInUseUnderFreeParents();
}

int32_t BlockPool::PublishGroupBlocks(absl::Span<const BlockId> anchors,
                                      absl::Span<const BlockId> blocks,
                                      int32_t group,
                                      absl::Span<const BlockHash> hashes,
                                      std::vector<PrefixSwitch>* switches) {
  PKV_CHECK(switches != nullptr, "PublishGroupBlocks needs a switch list");
  PKV_CHECK(anchors.size() == blocks.size() && hashes.size() == blocks.size(),
            "PublishGroupBlocks of %d blocks under %d anchors, %d hashes",
            blocks.size(), anchors.size(), hashes.size());
  MaybeLock lock(&mu_);
  PKV_CHECK(prefix_ != nullptr, "PublishGroupBlocks without a prefix cache");
  int32_t done = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!anchors[i].is_valid()) {  // A window anchor released it.
      ++done;
      continue;
    }
    CheckId(anchors[i]);
    const int32_t a = anchors[i].value();
    if (!prefix_->is_published(a)) break;
    PKV_CHECK(prefix_->group(a) != group,
              "group %d's block published under its own group's block %d",
              group, a);
    ++done;
    if (!blocks[i].is_valid()) continue;  // A hole: released already.
    CheckId(blocks[i]);
    const int32_t b = blocks[i].value();
    PKV_CHECK(ref_counts_[b] > 0, "PublishGroupBlocks of free block %d", b);
    const absl::Span<const int32_t> tokens = prefix_->tokens(a);
    const BlockExtraKeys keys = prefix_->extra_keys(a);
    // -1: b is published now.
    const int32_t found =
        prefix_->TryInsert(b, hashes[i], a, tokens, keys, group);
    if (found == b) {
      PKV_CHECK(prefix_->parent(b) == a,
                "block %d is published under parent %d, not %d", b,
                prefix_->parent(b), a);
    } else if (found != -1 &&
               prefix_->Find(hashes[i], a, tokens, keys, group) == found &&
               !prefix_->is_published(b)) {
      // The same KV computed twice. A group's entry is a leaf, so even a
      // block another table holds can switch (that one keeps it,
      // unpublished).
      TakeEqualEntryLocked(found, b, static_cast<int32_t>(i), switches);
    }
    // Else a collision (or b is some other entry already): b stays
    // unpublished.
  }
  prefix_->CloseEvents();
  return done;
}

bool BlockPool::is_cached(BlockId id) const {
  MaybeLock lock(&mu_);
  CheckId(id);
  return prefix_ != nullptr && prefix_->is_published(id.value());
}

bool BlockPool::SharedOrCached(BlockId id) const {
  MaybeLock lock(&mu_);
  CheckId(id);
  return WriteCopiesLocked(id.value(), /*holds=*/0);
}

bool BlockPool::IsCachedAs(BlockId id, int32_t group,
                           std::optional<BlockId> parent, BlockHash hash,
                           absl::Span<const int32_t> tokens,
                           const BlockExtraKeys& keys) const {
  MaybeLock lock(&mu_);
  CheckId(id);
  if (prefix_ == nullptr || !prefix_->is_published(id.value())) return false;
  const int32_t b = id.value();
  if (parent.has_value() &&
      prefix_->parent(b) != (parent->is_valid() ? parent->value() : -1)) {
    return false;
  }
  const absl::Span<const int32_t> stored = prefix_->tokens(b);
  return prefix_->group(b) == group && prefix_->hash(b) == hash &&
         prefix_->extra_keys(b) == keys &&
         std::equal(stored.begin(), stored.end(), tokens.begin(),
                    tokens.end());
}

void BlockPool::Unpublish(BlockId id) {
  MaybeLock lock(&mu_);
  CheckId(id);
  PKV_CHECK(prefix_ != nullptr && prefix_->is_published(id.value()),
            "Unpublish of uncached block %d", id.value());
  prefix_->RemoveSubtree(id.value(), /*evicted=*/false,
                         [this](int32_t b) { OnUnpublishedLocked(b); });
  prefix_->CloseEvents();
}

void BlockPool::ResetPrefixCache() {
  MaybeLock lock(&mu_);
  if (prefix_ == nullptr) return;
  prefix_->Clear([this](int32_t b) { OnUnpublishedLocked(b); });
}

std::vector<PrefixEvent> BlockPool::TakePrefixEvents() {
  MaybeLock lock(&mu_);
  if (prefix_ == nullptr) return {};
  return prefix_->TakeEvents();
}

uint64_t BlockPool::prefix_epoch() const {
  MaybeLock lock(&mu_);
  return prefix_ != nullptr ? prefix_->epoch() : 0;
}

PrefixIndexStats BlockPool::prefix_stats() const {
  MaybeLock lock(&mu_);
  if (prefix_ == nullptr) return {};
  return prefix_->stats();
}

std::vector<BlockId> BlockPool::EvictionOrder() const {
  MaybeLock lock(&mu_);
  if (prefix_ == nullptr) return {};
  return prefix_->evictable().BackToFront();
}

}  // namespace pagedkv
