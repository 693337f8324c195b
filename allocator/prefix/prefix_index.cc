#include "allocator/prefix/prefix_index.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "base/check.h"

namespace pagedkv {

PrefixIndex::PrefixIndex(int32_t num_blocks, int32_t block_tokens,
                         int32_t max_pending_events)
    : block_tokens_(block_tokens), max_pending_events_(max_pending_events) {
  PKV_CHECK(num_blocks >= 0 && block_tokens > 0 && max_pending_events >= 0,
            "PrefixIndex(%d blocks, %d tokens, %d events)", num_blocks,
            block_tokens, max_pending_events);
  Grow(num_blocks);
}

void PrefixIndex::Grow(int32_t new_num_blocks) {
  PKV_CHECK(new_num_blocks >= num_blocks(), "PrefixIndex cannot shrink");
  published_.resize(new_num_blocks, 0);
  hash_.resize(new_num_blocks, 0);
  parent_.resize(new_num_blocks, -1);
  extra_.resize(new_num_blocks);
  group_.resize(new_num_blocks, 0);
  tokens_.resize(int64_t{new_num_blocks} * block_tokens_, 0);
  first_child_.resize(new_num_blocks, -1);
  next_sibling_.resize(new_num_blocks, -1);
  prev_sibling_.resize(new_num_blocks, -1);
  evictable_.Grow(new_num_blocks);
}

PrefixEvent* PrefixIndex::OpenEvent(PrefixEvent::Kind kind, int32_t* open) {
  if (max_pending_events_ == 0) return nullptr;
  if (*open >= 0) return &events_[*open];
  const uint64_t number = next_event_++;
  if (static_cast<int32_t>(events_.size()) >= max_pending_events_) {
    ++events_dropped_;  // The gap in sequence numbers tells the consumer.
    return nullptr;
  }
  PrefixEvent& e = events_.emplace_back();
  e.kind = kind;
  e.sequence_number = number;
  e.block_size = block_tokens_;
  *open = static_cast<int32_t>(events_.size()) - 1;
  return &e;
}

int32_t PrefixIndex::TryInsert(int32_t block, BlockHash hash, int32_t parent,
                               absl::Span<const int32_t> tokens,
                               const BlockExtraKeys& keys, int32_t group) {
  const auto [it, inserted] = by_hash_.try_emplace(hash, block);
  if (!inserted) {
    const int32_t b = it->second;
    if (published_[b] && hash_[b] == hash) return b;
    it->second = block;  // Over a stale entry.
  }
  PKV_CHECK(!is_published(block), "Insert of published block %d", block);
  PKV_CHECK(group >= 0, "Insert of block %d into group %d", block, group);
  PKV_CHECK(parent == -1 || is_published(parent),
            "Insert of block %d under unpublished parent %d", block, parent);
  PKV_CHECK(static_cast<int32_t>(tokens.size()) == block_tokens_,
            "Insert of %d tokens into a %d-token block", tokens.size(),
            block_tokens_);
  published_[block] = 1;
  hash_[block] = hash;
  parent_[block] = parent;
  extra_[block] = keys;
  group_[block] = group;
  std::memcpy(tokens_.data() + int64_t{block} * block_tokens_, tokens.data(),
              sizeof(int32_t) * block_tokens_);
  if (parent != -1) {
    const int32_t first = first_child_[parent];
    next_sibling_[block] = first;
    prev_sibling_[block] = -1;
    if (first != -1) prev_sibling_[first] = block;
    first_child_[parent] = block;
  }
  ++num_published_;
  ++stored_blocks_;
  // A chain continues the open event only from its last block.
  if (open_stored_ >= 0) {
    const PrefixEvent& open = events_[open_stored_];
    const BlockHash last = open.block_hashes.back();
    if (parent == -1 || hash_[parent] != last || open.layer_group != group) {
      open_stored_ = -1;
    }
  }
  PrefixEvent* e = OpenEvent(PrefixEvent::Kind::kBlockStored, &open_stored_);
  if (e != nullptr) {
    if (e->block_hashes.empty()) {
      e->parent_hash = parent == -1 ? kRootBlockHash : hash_[parent];
      e->layer_group = group;
    }
    e->block_hashes.push_back(hash);
    e->token_ids.insert(e->token_ids.end(), tokens.begin(), tokens.end());
    e->extra_keys.push_back(keys);
  }
  return -1;
}

void PrefixIndex::Unlink(int32_t block) {
  const int32_t p = parent_[block];
  if (p == -1) return;
  const int32_t prev = prev_sibling_[block];
  const int32_t next = next_sibling_[block];
  if (prev == -1) {
    first_child_[p] = next;
  } else {
    next_sibling_[prev] = next;
  }
  if (next != -1) prev_sibling_[next] = prev;
  prev_sibling_[block] = next_sibling_[block] = -1;
}

void PrefixIndex::Transplant(int32_t from, int32_t to) {
  PKV_CHECK(is_published(from) && !is_published(to),
            "Transplant of block %d (published %d) onto %d (published %d)",
            from, is_published(from), to, is_published(to));
  const int32_t p = parent_[from];
  Unlink(from);
  published_[to] = 1;
  hash_[to] = hash_[from];
  parent_[to] = p;
  extra_[to] = extra_[from];
  group_[to] = group_[from];
  std::memcpy(tokens_.data() + int64_t{to} * block_tokens_,
              tokens_.data() + int64_t{from} * block_tokens_,
              sizeof(int32_t) * block_tokens_);
  if (p != -1) {
    const int32_t first = first_child_[p];
    next_sibling_[to] = first;
    if (first != -1) prev_sibling_[first] = to;
    first_child_[p] = to;
  }
  first_child_[to] = first_child_[from];
  for (int32_t c = first_child_[to]; c != -1; c = next_sibling_[c]) {
    parent_[c] = to;
  }
  by_hash_[hash_[to]] = to;
  published_[from] = 0;
  parent_[from] = first_child_[from] = -1;
}

void PrefixIndex::SweepStale() {
  for (auto it = by_hash_.begin(); it != by_hash_.end();) {
    const int32_t b = it->second;
    if (published_[b] && hash_[b] == it->first) {
      ++it;
    } else {
      by_hash_.erase(it++);
    }
  }
}

std::vector<PrefixEvent> PrefixIndex::TakeEvents() {
  CloseEvents();
  std::vector<PrefixEvent> out;
  out.swap(events_);
  return out;
}

PrefixIndexStats PrefixIndex::stats() const {
  PrefixIndexStats s;
  s.cached_blocks = num_published_;
  s.evictable_blocks = evictable_.size();
  s.stored_blocks = stored_blocks_;
  s.evicted_blocks = evicted_blocks_;
  s.dropped_blocks = dropped_blocks_;
  s.events_dropped = events_dropped_;
  s.epoch = epoch_;
  return s;
}

void PrefixIndex::CheckInvariants(absl::Span<const int32_t> ref_counts,
                                  absl::Span<const int32_t> copy_holds) const {
  const int32_t n = num_blocks();
  PKV_CHECK(static_cast<int32_t>(ref_counts.size()) == n &&
                (copy_holds.empty() ||
                 static_cast<int32_t>(copy_holds.size()) == n),
            "%d ref counts and %d copy holds for an index of %d blocks",
            ref_counts.size(), copy_holds.size(), n);
  evictable_.CheckInvariants();
  PKV_CHECK(num_published_ <= static_cast<int32_t>(by_hash_.size()) &&
                by_hash_.size() - num_published_ <=
                    static_cast<size_t>(std::max(2 * n, kMinStale)),
            "%d published, %d hashes indexed (stale bound %d)", num_published_,
            by_hash_.size(), std::max(2 * n, kMinStale));
  int32_t published = 0;
  std::vector<int32_t> listed(n, 0);
  for (int32_t b = 0; b < n; ++b) {
    for (int32_t c = first_child_[b]; c != -1; c = next_sibling_[c]) {
      PKV_CHECK(c >= 0 && c < n, "child link %d out of range", c);
      PKV_CHECK(++listed[c] == 1, "block %d listed twice as a child", c);
      PKV_CHECK(parent_[c] == b, "block %d listed under %d, parent %d", c, b,
                parent_[c]);
    }
  }
  for (int32_t b = 0; b < n; ++b) {
    const bool free = ref_counts[b] == 0;
    PKV_CHECK(evictable_.Contains(BlockId(b)) == (published_[b] && free),
              "block %d: published %d, ref_count %d, %s the LRU", b,
              published_[b], ref_counts[b],
              evictable_.Contains(BlockId(b)) ? "in" : "not in");
    if (!published_[b]) {
      PKV_CHECK(parent_[b] == -1 && first_child_[b] == -1 && listed[b] == 0,
                "unpublished block %d keeps links", b);
      continue;
    }
    ++published;
    auto it = by_hash_.find(hash_[b]);
    PKV_CHECK(it != by_hash_.end() && it->second == b,
              "published block %d not indexed under its hash", b);
    const int32_t p = parent_[b];
    if (p != -1) {
      PKV_CHECK(published_[p], "block %d has unpublished parent %d", b, p);
      PKV_CHECK(listed[b] == 1, "block %d not in its parent's child list", b);
      const bool copy_source_only =
          !copy_holds.empty() && ref_counts[b] == copy_holds[b];
      PKV_CHECK(free || ref_counts[p] > 0 || copy_source_only ||
                    in_use_under_free_,
                "block %d is in use but its parent %d is free", b, p);
    } else {
      PKV_CHECK(listed[b] == 0, "root block %d listed as a child", b);
    }
  }
  PKV_CHECK(published == num_published_, "%d published, counted %d", published,
            num_published_);
}

}  // namespace pagedkv
