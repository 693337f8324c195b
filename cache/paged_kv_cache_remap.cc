// cache/paged_kv_cache_remap.cc
//
// PagedKVCache's batch operations, which remap block tables instead of
// copying KV (reorder_cache, batch_select_indices,
// batch_repeat_interleave: rows share blocks, copy-on-write on the next
// write), crop and reset (which free blocks), and the stats and
// invariants. Split from paged_kv_cache.cc, which keeps the write path
// (Update) and the reads.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/paged_kv_cache.h"

namespace pagedkv::internal {
// ---------------------------------------------------------------------------
// Batch operations: block-table remaps.

absl::Status PagedKVCache::CheckSelect(
    absl::Span<const int64_t> indices) const {
  const int64_t batch = num_rows();
  if (static_cast<int64_t>(indices.size()) > kMaxCacheBatch) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d indices exceed the batch limit %d", indices.size(),
                        kMaxCacheBatch));
  }
  for (size_t i = 0; i < indices.size(); ++i) {
    // Before the batch is fixed there are no rows to select: the op is a
    // no-op (as lucid's loop over zero layers is), but negative indices are
    // rejected always.
    if (indices[i] < 0) {
      return absl::OutOfRangeError(
          absl::StrFormat("index %d (position %d) is negative", indices[i], i));
    }
    if (has_geometry_ && indices[i] >= batch) {
      return absl::OutOfRangeError(
          absl::StrFormat("index %d (position %d) is outside batch [0, %d)",
                          indices[i], i, batch));
    }
  }
  return absl::OkStatus();
}

absl::Status PagedKVCache::CheckRepeat(int64_t repeats) const {
  if (repeats < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("repeats must be >= 1, got %d", repeats));
  }
  const int64_t batch = num_rows();
  if (batch > 0 && repeats > kMaxCacheBatch / batch) {
    return absl::InvalidArgumentError(
        absl::StrFormat("batch %d x repeats %d exceeds the batch limit %d",
                        batch, repeats, kMaxCacheBatch));
  }
  return absl::OkStatus();
}

absl::Status PagedKVCache::PrepareForBatch(int64_t batch) {
  if (!has_geometry_ || batch <= num_rows()) {
    return absl::OkStatus();
  }
  return GrowReservation(batch);
}

absl::Status PagedKVCache::Select(std::vector<int32_t> indices) {
  const int64_t old_batch = num_rows();
  const int64_t new_batch = static_cast<int64_t>(indices.size());
  if (new_batch > old_batch) PKV_RETURN_IF_ERROR(GrowReservation(new_batch));
  const int64_t copied_before = pool_->bytes_copied();
  for (Group& group : groups_) ReorderTables(&group.rows, indices);
  remap_bytes_copied_ += pool_->bytes_copied() - copied_before;
  TrimReservation();  // Gives back what fewer rows no longer need.
  return absl::OkStatus();
}

absl::Status PagedKVCache::ReorderCache(absl::Span<const int64_t> beam_idx) {
  return BatchSelectIndices(beam_idx);
}

absl::Status PagedKVCache::BatchSelectIndices(
    absl::Span<const int64_t> indices) {
  PKV_RETURN_IF_ERROR(CheckSelect(indices));
  if (!has_geometry_) return absl::OkStatus();  // No rows to select.
  return Select(std::vector<int32_t>(indices.begin(), indices.end()));
}

absl::Status PagedKVCache::BatchRepeatInterleave(int64_t repeats) {
  PKV_RETURN_IF_ERROR(CheckRepeat(repeats));
  if (repeats == 1 || !has_geometry_) return absl::OkStatus();
  std::vector<int32_t> indices;
  indices.reserve(num_rows() * repeats);
  for (int64_t r = 0; r < num_rows(); ++r) {
    for (int64_t k = 0; k < repeats; ++k) {
      indices.push_back(static_cast<int32_t>(r));
    }
  }
  return Select(std::move(indices));
}

absl::Status PagedKVCache::Crop(int64_t max_length) {
  if (max_length < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_length %d is negative", max_length));
  }
  const int64_t copied_before = pool_ != nullptr ? pool_->bytes_copied() : 0;
  // Every layer keeps the last max_length positions of its sequence. A
  // window layer holds only the last ones of those: it keeps the held
  // tokens among them, and the rest of the max_length stay released.
  for (Layer& layer : layers_) {
    if (!layer.present || layer.released + layer.length <= max_length) {
      continue;
    }
    const int64_t keep = std::min(layer.length, max_length);
    layer.start += layer.length - keep;
    layer.length = keep;
    layer.released = max_length - keep;
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    DropLeadingBlocks(static_cast<int32_t>(g));
  }
  if (pool_ != nullptr) {
    remap_bytes_copied_ += pool_->bytes_copied() - copied_before;
  }
  if (is_static() && has_geometry_) {
    // Uneven crops widen the windows: extend the reservation so later
    // updates still cannot fail for memory (a private pool grows). On a
    // full shared pool the crop still succeeds (crop never fails for
    // memory); the reservation then covers what it can and an update that
    // needs more returns ResourceExhausted, changing nothing.
    if (!GrowReservation(num_rows()).ok()) {
      ++reservation_shortfalls_;
    }
    TrimReservation();  // Even crops may narrow the windows again.
  }
  return absl::OkStatus();
}

void PagedKVCache::DropLeadingBlocks(int32_t g) {
  if (pool_ == nullptr) return;
  const int64_t bt = block_tokens();
  Group& group = groups_[g];
  // Only layers holding tokens pin blocks; an empty layer's start is
  // arbitrary (its next write starts there), so it moves to 0.
  int64_t min_start = group.num_table_blocks * bt;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    if (group_of(static_cast<int64_t>(l)) != g) continue;
    if (layer.length > 0) {
      min_start = std::min(min_start, layer.start);
    } else {
      layer.start = 0;
    }
  }
  const int64_t drop = min_start / bt;
  if (drop == 0) return;
  for (BlockTable& row : group.rows) row.DropFront(static_cast<int32_t>(drop));
  group.num_table_blocks -= drop;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    if (group_of(static_cast<int64_t>(l)) == g && layer.length > 0) {
      layer.start -= drop * bt;
    }
  }
}

void PagedKVCache::Reset() {
  for (Group& group : groups_) {
    group.rows.clear();
    group.num_table_blocks = 0;
  }
  reservation_.reset();
  has_geometry_ = false;
  heads_ = 0;
  head_dim_ = 0;
  if (is_static()) {
    layers_.assign(options_.num_layers, Layer());
  } else {
    layers_.clear();
  }
}

// ---------------------------------------------------------------------------
// Stats and invariants

CacheStats PagedKVCache::stats() const {
  CacheStats s;
  absl::flat_hash_set<BlockId> seen;
  for (const Group& group : groups_) {
    for (const BlockTable& row : group.rows) {
      for (BlockId id : row.blocks()) {
        if (seen.insert(id).second && pool_->books().ref_count(id) > 1) {
          ++s.blocks_shared;
        }
      }
    }
  }
  s.blocks_in_use = static_cast<int32_t>(seen.size());
  s.blocks_reserved =
      reservation_.has_value() ? reservation_->num_reserved_free() : 0;
  s.reservation_shortfalls = reservation_shortfalls_;
  s.cow_copies = cow_copies_;
  s.cow_bytes = cow_bytes_;
  s.bytes_written = bytes_written_;
  s.bytes_zero_filled = bytes_zero_filled_;
  s.remap_bytes_copied = remap_bytes_copied_;
  s.reservation_capacity =
      reservation_.has_value() ? reservation_->capacity() : 0;
  return s;
}

void PagedKVCache::CheckInvariants() const {
  PKV_CHECK(!groups_.empty(), "a cache without a group");
  PKV_CHECK(group_of_.size() == options_.sliding_window.size() &&
                slot_of_.size() == group_of_.size(),
            "%d layers grouped, %d windows", group_of_.size(),
            options_.sliding_window.size());
  PKV_CHECK(has_geometry_ || num_rows() == 0, "%d rows without a batch",
            num_rows());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const Group& group = groups_[g];
    PKV_CHECK(static_cast<int64_t>(group.rows.size()) == num_rows(),
              "group %d has %d rows, group 0 has %d", g, group.rows.size(),
              num_rows());
    for (size_t b = 0; b < group.rows.size(); ++b) {
      PKV_CHECK(group.rows[b].num_blocks() == group.num_table_blocks,
                "group %d row %d has %d blocks, expected %d", g, b,
                group.rows[b].num_blocks(), group.num_table_blocks);
      group.rows[b].CheckInvariants();
    }
  }
  if (is_static()) {
    PKV_CHECK(num_layer_slots() == options_.num_layers,
              "static cache has %d slots, expected %d", num_layer_slots(),
              options_.num_layers);
  }
  const int64_t bt = pool_ != nullptr ? pool_->layout().block_tokens : 1;
  std::vector<std::optional<int64_t>> min_start(groups_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const int32_t g = group_of(static_cast<int64_t>(l));
    const int64_t table_blocks = groups_[g].num_table_blocks;
    if (!layer.present) {
      PKV_CHECK(layer.start == 0 && layer.length == 0 && layer.released == 0,
                "absent layer %d has start %d length %d released %d", l,
                layer.start, layer.length, layer.released);
      continue;
    }
    const int32_t window = window_of(static_cast<int64_t>(l));
    PKV_CHECK(layer.released >= 0 && (window > 0 || layer.released == 0),
              "layer %d (window %d) released %d tokens", l, window,
              layer.released);
    PKV_CHECK(layer.released == 0 || layer.length >= window - 1,
              "window layer %d (window %d) released %d tokens but holds %d", l,
              window, layer.released, layer.length);
    PKV_CHECK(pool_ != nullptr, "present layer %d without a pool", l);
    PKV_CHECK(layer.start >= 0 && layer.length >= 0 &&
                  layer.start + layer.length <= table_blocks * bt,
              "layer %d spans [%d, %d) beyond %d table blocks", l, layer.start,
              layer.start + layer.length, table_blocks);
    if (is_static()) {
      PKV_CHECK(layer.length <= *options_.max_cache_len,
                "layer %d length %d > max_cache_len %d", l, layer.length,
                *options_.max_cache_len);
    }
    if (layer.length > 0) {
      min_start[g] = std::min(min_start[g].value_or(layer.start), layer.start);
    } else {
      PKV_CHECK(layer.start == 0, "empty layer %d starts at %d", l,
                layer.start);
    }
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (min_start[g].has_value()) {
      PKV_CHECK(*min_start[g] < bt,
                "leading block below every start of group %d's layers (min "
                "start %d) not dropped",
                g, *min_start[g]);
    } else {
      PKV_CHECK(groups_[g].num_table_blocks == 0,
                "group %d has %d table blocks while none of its layers holds "
                "tokens",
                g, groups_[g].num_table_blocks);
    }
  }
  if (pool_ == nullptr) return;
  if (has_geometry_) {
    const KVLayout& layout = pool_->layout();
    PKV_CHECK(dtype_ == layout.dtype && heads_ == layout.num_kv_heads &&
                  head_dim_ == layout.head_dim,
              "cache geometry (heads %d, head_dim %d) does not match its pool "
              "(%s)",
              heads_, head_dim_, layout.ToString());
  }
  if (owned_pool_ != nullptr) {
    // A private pool's every reference is held by this cache's rows.
    std::vector<const BlockTable*> tables;
    for (const Group& group : groups_) {
      for (const BlockTable& row : group.rows) tables.push_back(&row);
    }
    CheckRefCounts(owned_pool_->books(), tables);
  } else {
    pool_->books().CheckInvariants();
  }
  if (reservation_.has_value()) {
    PKV_CHECK(reservation_->num_reserved_free() + reservation_->num_charged() ==
                  reservation_->capacity(),
              "reservation books: %d free + %d charged != capacity %d",
              reservation_->num_reserved_free(), reservation_->num_charged(),
              reservation_->capacity());
  }
}

}  // namespace pagedkv::internal
