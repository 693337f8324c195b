// KVCacheManager's prefix caching: block keys of a sequence, pinning hits,
// publishing committed blocks, commits, truncation, events. The books are
// the pool's (BlockPool's prefix methods, allocator/prefix/); this file
// only decides which blocks of which sequence to ask about.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv {
void KVCacheManager::EnsureHashes(PrefixState& p, int64_t n) const {
  ExtendBlockKeys(*hasher_, layout_.block_tokens, p, n);
}

BlockPool::PrefixChain KVCacheManager::Chain(const PrefixState& p,
                                             int64_t first, int64_t n) const {
  const int32_t bt = layout_.block_tokens;
  BlockPool::PrefixChain c;
  c.hashes = absl::MakeConstSpan(p.hashes.data() + first, n);
  c.keys = absl::MakeConstSpan(p.keys.data() + first, n);
  c.tokens = absl::MakeConstSpan(p.tokens.data() + first * bt, n * bt);
  return c;
}

BlockPool::PrefixMatch KVCacheManager::MatchHashing(PrefixState& p,
                                                    int64_t max_blocks) const {
  // Keys cost about what lookups do, so a prompt that misses early should
  // not have all its blocks keyed first: match 16 blocks, then 8x as many
  // while every one hits. Keys stay within 8x the hit length + 16, and a
  // full hit re-looks-up at most 1/8 of its blocks.
  BlockPool::PrefixMatch m;
  for (int64_t n = std::min<int64_t>(max_blocks, 16); n > 0;
       n = std::min<int64_t>(max_blocks, 8 * n)) {
    EnsureHashes(p, n);
    m = books_->MatchPrefix(Chain(p, 0, n));
    if (m.blocks < n || n == max_blocks) break;
  }
  return m;
}

int32_t KVCacheManager::PinHits(Sequence& s, int64_t max_blocks,
                                int64_t known_hits) {
  PKV_CHECK(s.table.empty(), "pinning hits into a table of %d blocks",
            s.table.num_blocks());
  PrefixState& p = *s.prefix;
  if (max_blocks <= 0) return 0;
  // Keys up to the first miss only (the rest are keyed when published).
  const int64_t hits =
      known_hits >= 0 ? known_hits : MatchHashing(p, max_blocks).blocks;
  if (hits == 0) return 0;
  scratch_blocks_.clear();
  const BlockPool::PrefixMatch m =
      books_->PinPrefix(Chain(p, 0, hits), &scratch_blocks_);
  s.table.AppendAll(scratch_blocks_);
  return m.blocks;
}

void KVCacheManager::PublishCommitted(Sequence& s, RemoteStore remote_store) {
  PrefixState& p = *s.prefix;
  const uint64_t epoch = books_->prefix_epoch();
  if (p.epoch != epoch) {  // A reset unpublished everything: start again.
    p.epoch = epoch;
    p.published = 0;
    p.stopped = false;
  }
  if (p.stopped) return;
  const int32_t bt = layout_.block_tokens;
  const int64_t full = std::min<int64_t>(
      std::min(p.committed / bt, BlocksWithIds(p)), s.table.num_blocks());
  if (full <= p.published) return;
  EnsureHashes(p, full);
  const int64_t n = full - p.published;
  const BlockId parent = p.published > 0 ? s.table[p.published - 1] : BlockId();
  const bool store = remote_ != nullptr && remote_store == RemoteStore::kStore;
  // Blocks published already (by a fork's other holder, which holds them
  // too) were stored or listed by whoever published them.
  scratch_skips_.clear();
  if (store && s.may_share) {
    for (int64_t i = p.published; i < full; ++i) {
      if (books_->is_cached(s.table[i])) scratch_skips_.push_back(i);
    }
  }
  scratch_switches_.clear();
  const int32_t done =
      books_->Publish(s.table.blocks().subspan(p.published, n), parent,
                      Chain(p, p.published, n), &scratch_switches_);
  for (const BlockPool::PrefixSwitch& sw : scratch_switches_) {
    s.table.Replace(p.published + sw.index, sw.cached);
    ++prefix_stats_.switched_blocks;
  }
  if (store) {
    // A block switched to an equal cached one was stored (or loaded) by
    // whoever published that one: store the runs between the skips only.
    for (const BlockPool::PrefixSwitch& sw : scratch_switches_) {
      scratch_skips_.push_back(p.published + sw.index);
    }
    std::sort(scratch_skips_.begin(), scratch_skips_.end());
    int64_t run = p.published;
    for (const int64_t at : scratch_skips_) {
      if (at >= p.published + done) break;  // Past where the chain stopped.
      StoreToRemote(s, run, at - run);
      run = at + 1;
    }
    StoreToRemote(s, run, p.published + done - run);
  }
  p.published += done;
  if (done < n) p.stopped = true;
}

absl::Status KVCacheManager::CommitTokens(
    absl::Span<const TokenCommit> commits) {
  if (windows_ != nullptr) return windows_->CommitTokens(commits);
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
    s.prefix->tokens.insert(s.prefix->tokens.end(), c.token_ids.begin(),
                            c.token_ids.end());
    s.prefix->committed = std::max(s.prefix->committed, c.num_tokens);
    PublishCommitted(s);
  }
  SyncReservation().IgnoreError();  // Switched blocks only shrink it.
  return absl::OkStatus();
}

void KVCacheManager::TruncatePrefix(Sequence& s, int64_t new_length) {
  PrefixState& p = *s.prefix;
  const int32_t bt = layout_.block_tokens;
  const int64_t full = new_length / bt;
  if (static_cast<int64_t>(p.tokens.size()) > new_length) {
    p.tokens.resize(new_length);
  }
  if (static_cast<int64_t>(p.hashes.size()) > full) {
    p.hashes.resize(full);
    p.keys.resize(full);
  }
  p.committed = std::min(p.committed, new_length);
  p.published = static_cast<int32_t>(std::min<int64_t>(p.published, full));
  // A new tail inside a published block stays published: its next write
  // copies it (Truncate marks the sequence may_share), so the entry keeps
  // its KV.
}

std::vector<PrefixEvent> KVCacheManager::TakeEvents() {
  return books_->TakePrefixEvents();
}

void KVCacheManager::ResetPrefixCache() {
  if (windows_ != nullptr) {
    windows_->ResetPrefixCache();
    return;
  }
  books_->ResetPrefixCache();
  // This manager's sequences republish from their first block at their next
  // commit. (Another manager's reset on a shared pool is noticed by the
  // epoch when they next publish a block.)
  const uint64_t epoch = books_->prefix_epoch();
  for (auto& [id, s] : sequences_) {
    if (!s.prefix.has_value()) continue;
    s.prefix->published = 0;
    s.prefix->stopped = false;
    s.prefix->epoch = epoch;
  }
}

}  // namespace pagedkv
