#include "allocator/window_table.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace pagedkv {

WindowTable::WindowTable(WindowTable&& other) noexcept
    : pool_(other.pool_),
      entries_(std::move(other.entries_)),
      num_live_(other.num_live_),
      first_unpassed_(other.first_unpassed_),
      generation_(other.generation_) {
  other.entries_.clear();
  other.num_live_ = 0;
  other.first_unpassed_ = 0;
  ++other.generation_;
}

WindowTable& WindowTable::operator=(WindowTable&& other) noexcept {
  if (this == &other) return *this;
  Clear();
  pool_ = other.pool_;
  entries_ = std::move(other.entries_);
  num_live_ = other.num_live_;
  first_unpassed_ = other.first_unpassed_;
  generation_ = std::max(generation_, other.generation_) + 1;
  other.entries_.clear();
  other.num_live_ = 0;
  other.first_unpassed_ = 0;
  ++other.generation_;
  return *this;
}

void WindowTable::Append(BlockId id) {
  PKV_DCHECK(pool_->ref_count(id) > 0, "appending free block %d", id.value());
  entries_.push_back(id);
  ++num_live_;
  ++generation_;
}

void WindowTable::AppendHole() {
  entries_.push_back(BlockId());
  ++generation_;
}

template <typename OnLive>
int32_t WindowTable::PassBefore(int64_t block_index, OnLive on_live) {
  PKV_CHECK(block_index >= 0, "Release/DetachBefore(%d)", block_index);
  const int32_t end = block_index < num_entries()
                          ? static_cast<int32_t>(block_index)
                          : num_entries();
  int32_t passed = 0;
  for (; first_unpassed_ < end; ++first_unpassed_) {
    BlockId& e = entries_[first_unpassed_];
    if (!e.is_valid()) continue;
    on_live(e);
    e = BlockId();
    ++passed;
  }
  if (passed > 0) {
    num_live_ -= passed;
    ++generation_;
  }
  return passed;
}

int32_t WindowTable::ReleaseBeforeSlow(int64_t block_index) {
  return PassBefore(block_index, [this](BlockId id) { pool_->Release(id); });
}

int32_t WindowTable::DetachBeforeSlow(int64_t block_index,
                                      std::vector<BlockId>* out) {
  PKV_CHECK(out != nullptr, "DetachBefore needs an output");
  return PassBefore(block_index, [out](BlockId id) { out->push_back(id); });
}

void WindowTable::DropBack(int32_t n) {
  PKV_CHECK(n >= 0 && n <= num_entries(), "DropBack(%d) of %d entries", n,
            num_entries());
  if (n == 0) return;
  for (int32_t i = 0; i < n; ++i) {
    const BlockId e = entries_.back();
    entries_.pop_back();
    if (e.is_valid()) {
      pool_->Release(e);
      --num_live_;
    }
  }
  if (first_unpassed_ > num_entries()) first_unpassed_ = num_entries();
  ++generation_;
}

void WindowTable::Clear() {
  if (entries_.empty()) return;
  DropBack(num_entries());
  first_unpassed_ = 0;
}

WindowTable WindowTable::Fork() const {
  WindowTable copy(pool_);
  for (int32_t i = first_unpassed_; i < num_entries(); ++i) {
    if (entries_[i].is_valid()) pool_->AddRef(entries_[i]);
  }
  copy.entries_ = entries_;
  copy.num_live_ = num_live_;
  copy.first_unpassed_ = first_unpassed_;
  return copy;
}

void WindowTable::Replace(int32_t i, BlockId id) {
  PKV_CHECK(i >= 0 && i < num_entries() && entries_[i].is_valid(),
            "Replace of entry %d (of %d), which is not live", i,
            num_entries());
  const BlockId old = entries_[i];
  entries_[i] = id;
  pool_->Release(old);
  ++generation_;
}

void WindowTable::CheckInvariants() const {
  PKV_CHECK(first_unpassed_ >= 0 && first_unpassed_ <= num_entries(),
            "first_unpassed %d outside [0, %d]", first_unpassed_,
            num_entries());
  int32_t live = 0;
  for (int32_t i = 0; i < num_entries(); ++i) {
    const BlockId e = entries_[i];
    if (!e.is_valid()) continue;
    PKV_CHECK(i >= first_unpassed_, "entry %d below first_unpassed %d is live",
              i, first_unpassed_);
    PKV_CHECK(e.value() < pool_->num_blocks() && pool_->ref_count(e) > 0,
              "entry %d holds free or bad block %d", i, e.value());
    ++live;
  }
  PKV_CHECK(live == num_live_, "%d live entries, counted %d", live,
            num_live_);
}

void CheckWindowRefCounts(const BlockPool& pool,
                          absl::Span<const WindowTable* const> tables,
                          absl::Span<const BlockId> extra_refs) {
  pool.CheckInvariants();
  std::vector<int32_t> refs(pool.num_blocks(), 0);
  for (const WindowTable* t : tables) {
    PKV_CHECK(t->pool() == &pool, "a table on another pool");
    t->CheckInvariants();
    for (BlockId e : t->entries()) {
      if (e.is_valid()) ++refs[e.value()];
    }
  }
  for (BlockId e : extra_refs) ++refs[e.value()];
  for (int32_t b = 0; b < pool.num_blocks(); ++b) {
    PKV_CHECK(refs[b] == pool.ref_count(BlockId(b)),
              "block %d: ref_count %d, %d references held", b,
              pool.ref_count(BlockId(b)), refs[b]);
  }
}

}  // namespace pagedkv
