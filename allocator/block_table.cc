#include "allocator/block_table.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/check.h"

namespace pagedkv {

BlockTable::BlockTable(BlockPool* pool) : pool_(pool) {
  PKV_CHECK(pool != nullptr, "BlockTable needs a pool");
}

BlockTable::BlockTable(BlockTable&& other) noexcept
    : pool_(other.pool_),
      blocks_(std::move(other.blocks_)),
      generation_(other.generation_) {
  other.blocks_.clear();  // Moved-from: empty, same pool.
  ++other.generation_;
}

BlockTable& BlockTable::operator=(BlockTable&& other) noexcept {
  if (this != &other) {
    Clear();
    pool_ = other.pool_;
    blocks_ = std::move(other.blocks_);
    ++generation_;
    other.blocks_.clear();
    ++other.generation_;
  }
  return *this;
}

BlockTable::~BlockTable() { pool_->ReleaseAll(blocks_); }

void BlockTable::Append(BlockId id) {
  PKV_DCHECK(pool_->ref_count(id) > 0, "Append of free block %d", id.value());
  blocks_.push_back(id);
  ++generation_;
}

void BlockTable::AppendAll(absl::Span<const BlockId> ids) {
  for (BlockId id : ids) {
    PKV_DCHECK(pool_->ref_count(id) > 0, "Append of free block %d", id.value());
  }
  blocks_.insert(blocks_.end(), ids.begin(), ids.end());
  ++generation_;
}

void BlockTable::CheckReservation(const Reservation* reservation) const {
  if (reservation == nullptr) return;
  PKV_CHECK(reservation->pool() == pool_,
            "reservation on pool %p used with a table on pool %p",
            static_cast<const void*>(reservation->pool()),
            static_cast<const void*>(pool_));
}

absl::Status BlockTable::Grow(int32_t n, Reservation* reservation) {
  CheckReservation(reservation);
  absl::StatusOr<std::vector<BlockId>> ids =
      reservation != nullptr ? reservation->Allocate(n) : pool_->Allocate(n);
  if (!ids.ok()) return ids.status();
  blocks_.insert(blocks_.end(), ids->begin(), ids->end());
  ++generation_;
  return absl::OkStatus();
}

BlockTable BlockTable::Fork() const {
  BlockTable copy(pool_);
  pool_->AddRefs(blocks_);
  copy.blocks_ = blocks_;
  ++copy.generation_;
  return copy;
}

void BlockTable::DropFront(int32_t n) {
  PKV_CHECK(n >= 0 && n <= num_blocks(), "DropFront(%d) of a %d-block table", n,
            num_blocks());
  pool_->ReleaseAll(absl::MakeConstSpan(blocks_.data(), n));
  blocks_.erase(blocks_.begin(), blocks_.begin() + n);
  ++generation_;
}

void BlockTable::DropBack(int32_t n) {
  PKV_CHECK(n >= 0 && n <= num_blocks(), "DropBack(%d) of a %d-block table", n,
            num_blocks());
  const int32_t keep = num_blocks() - n;
  // Tail first, like ClearTailFirst.
  pool_->ReleaseAllTailFirst(absl::MakeConstSpan(blocks_.data() + keep, n));
  blocks_.resize(keep);
  ++generation_;
}

void BlockTable::Clear() {
  pool_->ReleaseAll(blocks_);
  blocks_.clear();
  ++generation_;
}

void BlockTable::ClearTailFirst() {
  pool_->ReleaseAllTailFirst(blocks_);
  blocks_.clear();
  ++generation_;
}

void BlockTable::Replace(int32_t block_index, BlockId id) {
  PKV_CHECK(block_index >= 0 && block_index < num_blocks(),
            "Replace(%d) in a %d-block table", block_index, num_blocks());
  PKV_DCHECK(pool_->ref_count(id) > 0, "Replace with free block %d",
             id.value());
  const BlockId old = blocks_[block_index];
  blocks_[block_index] = id;
  ++generation_;
  pool_->Release(old);
}

bool BlockTable::IsShared(int32_t block_index) const {
  PKV_CHECK(block_index >= 0 && block_index < num_blocks(),
            "IsShared(%d) of a %d-block table", block_index, num_blocks());
  return pool_->ref_count(blocks_[block_index]) > 1;
}

void BlockTable::CheckInvariants() const {
  PKV_CHECK(pool_ != nullptr, "BlockTable without a pool");
  const int32_t n = pool_->num_blocks();
  for (int32_t i = 0; i < num_blocks(); ++i) {
    const BlockId id = blocks_[i];
    PKV_CHECK(id.value() >= 0 && id.value() < n,
              "entry %d: block %d out of range [0, %d)", i, id.value(), n);
    PKV_CHECK(pool_->ref_count(id) > 0, "entry %d: block %d is free", i,
              id.value());
  }
}

void ReorderTables(std::vector<BlockTable>* tables,
                   absl::Span<const int32_t> indices) {
  PKV_CHECK(tables != nullptr, "ReorderTables needs tables");
  const int32_t num_old = static_cast<int32_t>(tables->size());
  if (num_old == 0) {
    PKV_CHECK(indices.empty(), "ReorderTables of %d indices from no tables",
              indices.size());
    return;
  }
  BlockPool* pool = (*tables)[0].pool();
  std::vector<int32_t> uses(num_old, 0);
  for (int32_t index : indices) {
    PKV_CHECK(index >= 0 && index < num_old,
              "gather index %d out of range [0, %d)", index, num_old);
    ++uses[index];
  }
  // References first, so no block shared by a kept and a dropped row hits
  // 0; each table's blocks go to the pool in place, without gathering them
  // into one list (a dropped 8k-token row is 512 ids to copy otherwise).
  for (int32_t j = 0; j < num_old; ++j) {
    const BlockTable& t = (*tables)[j];
    PKV_CHECK(t.pool() == pool, "ReorderTables across pools");
    for (int32_t k = 1; k < uses[j]; ++k) pool->AddRefs(t.blocks_);
  }
  for (int32_t j = 0; j < num_old; ++j) {
    if (uses[j] == 0) pool->ReleaseAll((*tables)[j].blocks_);
  }

  std::vector<BlockTable> result;
  result.reserve(indices.size());
  std::vector<int32_t> first_use(num_old, -1);
  for (int32_t index : indices) {
    if (first_use[index] < 0) {
      first_use[index] = static_cast<int32_t>(result.size());
      result.push_back(std::move((*tables)[index]));
    } else {
      result.emplace_back(pool);
      result.back().blocks_ = result[first_use[index]].blocks_;
      ++result.back().generation_;
    }
  }
  for (int32_t j = 0; j < num_old; ++j) {
    if (uses[j] == 0) {
      (*tables)[j].blocks_.clear();  // Released above.
      ++(*tables)[j].generation_;
    }
  }
  *tables = std::move(result);  // Every old table is empty now.
}

void CheckRefCounts(const BlockPool& pool,
                    absl::Span<const BlockTable* const> tables,
                    absl::Span<const BlockId> extra_refs) {
  pool.CheckInvariants();
  const int32_t n = pool.num_blocks();
  std::vector<int32_t> by_tables(n, 0);
  std::vector<int32_t> by_extra(n, 0);
  for (const BlockTable* table : tables) {
    PKV_CHECK(table->pool() == &pool, "table on another pool");
    for (BlockId id : table->blocks()) {
      PKV_CHECK(id.value() >= 0 && id.value() < n,
                "table holds block %d out of range [0, %d)", id.value(), n);
      ++by_tables[id.value()];
    }
  }
  for (BlockId id : extra_refs) {
    PKV_CHECK(id.value() >= 0 && id.value() < n,
              "extra ref to block %d out of range [0, %d)", id.value(), n);
    ++by_extra[id.value()];
  }
  for (int32_t i = 0; i < n; ++i) {
    const int32_t rc = pool.ref_count(BlockId(i));
    PKV_CHECK(rc == by_tables[i] + by_extra[i],
              "block %d: ref_count %d, but %d references held (%d by tables, "
              "%d extra)",
              i, rc, by_tables[i] + by_extra[i], by_tables[i], by_extra[i]);
  }
}

}  // namespace pagedkv
