// Seeded random operation sequences over BlockPool, Reservation, BlockTable
// and copy-on-write (PrepareWrite / PendingCopies), checked after every step
// against a trivially correct model: a refcount map, a std::list free list
// (which predicts the exact ids the pool hands out), per-reservation counts,
// plain vectors for the tables and, for each PendingCopies the test still
// holds, the sources it keeps a reference on. Pending copies are marked done
// (or destroyed, or merged) at random later steps, so held sources meet every
// other operation. Every failing operation must leave the full books
// unchanged.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "allocator/pool_stats.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;

constexpr int kMaxTables = 8;
constexpr int kMaxReservations = 3;
constexpr int kMaxPending = 4;

struct ModelReservation {
  int id;  // Unique per Reservation object (slots are reused, ids are not).
  int32_t capacity;
  int32_t reserved_free;
  int32_t charged_live;
};

// The model of the pool's books.
class Model {
 public:
  explicit Model(int32_t num_blocks) { Grow(num_blocks); }

  int32_t num_blocks() const { return static_cast<int32_t>(rc_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_reserved() const {
    int32_t sum = 0;
    for (const ModelReservation& r : reservations) sum += r.reserved_free;
    return sum;
  }
  int32_t num_unreserved() const { return num_free() - num_reserved(); }
  int32_t rc(BlockId id) const { return rc_.at(id.value()); }
  int32_t num_shared() const {
    int32_t n = 0;
    for (const auto& [id, count] : rc_) n += count > 1 ? 1 : 0;
    return n;
  }

  void Grow(int32_t extra) {
    const int32_t old = num_blocks();
    for (int32_t i = old; i < old + extra; ++i) {
      rc_[i] = 0;
      free_.push_back(i);
    }
  }

  // Takes the block the pool must hand out next, charged to reservation
  // index `res` (-1: unreserved).
  BlockId Take(int res) {
    const int32_t id = free_.front();
    free_.pop_front();
    EXPECT_EQ(rc_[id], 0);
    rc_[id] = 1;
    ++allocations;
    if (res >= 0) {
      ModelReservation& r = reservations[res];
      --r.reserved_free;
      ++r.charged_live;
      owner_[id] = r.id;
    }
    peak = std::max(peak, num_blocks() - num_free());
    return BlockId(id);
  }

  void AddRef(BlockId id) { ++rc_[id.value()]; }

  void Release(BlockId id) {
    const int32_t i = id.value();
    ASSERT_GT(rc_[i], 0);
    if (--rc_[i] > 0) return;
    free_.push_front(i);
    auto it = owner_.find(i);
    if (it == owner_.end()) return;
    for (ModelReservation& r : reservations) {
      if (r.id == it->second) {
        --r.charged_live;
        ++r.reserved_free;
      }
    }
    owner_.erase(it);
  }

  void DestroyReservation(int index) {
    const int id = reservations[index].id;
    for (auto it = owner_.begin(); it != owner_.end();) {
      it = it->second == id ? owner_.erase(it) : std::next(it);
    }
    reservations.erase(reservations.begin() + index);
  }

  std::vector<ModelReservation> reservations;
  std::vector<std::vector<BlockId>> tables;
  std::vector<BlockId> loose;  // References the test holds outside tables.
  // Per PendingCopies the harness holds: its CopyOps, in order. Each src is
  // one reference held by that PendingCopies.
  std::vector<std::vector<CopyOp>> pending;
  int next_reservation_id = 0;
  int64_t allocations = 0;
  int64_t failed = 0;
  int32_t peak = 0;

 private:
  std::map<int32_t, int32_t> rc_;
  std::map<int32_t, int> owner_;  // Block -> live reservation id.
  std::list<int32_t> free_;       // Front is handed out next.
};

// Everything observable about the books, for before/after comparison.
struct Books {
  std::vector<int32_t> rc;
  PoolStats stats;
  std::vector<std::vector<BlockId>> tables;
  std::vector<std::vector<int32_t>> reservations;

  bool operator==(const Books& o) const {
    return rc == o.rc && stats == o.stats && tables == o.tables &&
           reservations == o.reservations;
  }
};

class Harness {
 public:
  explicit Harness(int32_t num_blocks)
      : initial_blocks_(num_blocks), model_(num_blocks) {
    BlockPool::Options options;
    options.num_blocks = num_blocks;
    pool_ = *BlockPool::Create(options);
  }

  ~Harness() {
    pending_.clear();
    tables_.clear();
    pool_->ReleaseAll(model_.loose);
    reservations_.clear();
    pool_->CheckInvariants();
    EXPECT_EQ(pool_->num_free_blocks(), pool_->num_blocks());
  }

  Books Snapshot(bool ignore_failed_count) const {
    Books b;
    for (int32_t i = 0; i < pool_->num_blocks(); ++i) {
      b.rc.push_back(pool_->ref_count(BlockId(i)));
    }
    b.stats = pool_->stats();
    if (ignore_failed_count) b.stats.num_failed_allocations = 0;
    for (const BlockTable& t : tables_) {
      b.tables.emplace_back(t.blocks().begin(), t.blocks().end());
    }
    for (const Reservation& r : reservations_) {
      b.reservations.push_back(
          {r.capacity(), r.num_reserved_free(), r.num_charged()});
    }
    return b;
  }

  // Compares the pool with the model; runs every invariant check.
  void Check(int step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    pool_->CheckInvariants();
    std::vector<const BlockTable*> tables;
    for (const BlockTable& t : tables_) {
      t.CheckInvariants();
      tables.push_back(&t);
    }
    std::vector<BlockId> extra = model_.loose;
    for (const std::vector<CopyOp>& ops : model_.pending) {
      for (const CopyOp& op : ops) extra.push_back(op.src);
    }
    CheckRefCounts(*pool_, tables, extra);
    ASSERT_EQ(pending_.size(), model_.pending.size());
    for (size_t k = 0; k < pending_.size(); ++k) {
      ASSERT_EQ(std::vector<CopyOp>(pending_[k].ops().begin(),
                                    pending_[k].ops().end()),
                model_.pending[k])
          << "pending " << k;
    }
    ASSERT_EQ(pool_->num_blocks(), model_.num_blocks());
    for (int32_t i = 0; i < model_.num_blocks(); ++i) {
      ASSERT_EQ(pool_->ref_count(BlockId(i)), model_.rc(BlockId(i))) << i;
    }
    ASSERT_EQ(tables_.size(), model_.tables.size());
    for (size_t t = 0; t < tables_.size(); ++t) {
      ASSERT_EQ(std::vector<BlockId>(tables_[t].blocks().begin(),
                                     tables_[t].blocks().end()),
                model_.tables[t])
          << "table " << t;
    }
    ASSERT_EQ(reservations_.size(), model_.reservations.size());
    for (size_t r = 0; r < reservations_.size(); ++r) {
      ASSERT_EQ(reservations_[r].capacity(), model_.reservations[r].capacity);
      ASSERT_EQ(reservations_[r].num_reserved_free(),
                model_.reservations[r].reserved_free);
      ASSERT_EQ(reservations_[r].num_charged(),
                model_.reservations[r].charged_live);
    }
    const PoolStats s = pool_->stats();
    ASSERT_EQ(s.num_free_blocks, model_.num_free());
    ASSERT_EQ(s.num_reserved_blocks, model_.num_reserved());
    ASSERT_EQ(pool_->num_unreserved_free_blocks(), model_.num_unreserved());
    ASSERT_EQ(s.num_shared_blocks, model_.num_shared());
    ASSERT_EQ(s.num_reservations,
              static_cast<int32_t>(model_.reservations.size()));
    ASSERT_EQ(s.num_allocations, model_.allocations);
    ASSERT_EQ(s.num_failed_allocations, model_.failed);
    ASSERT_EQ(s.peak_used_blocks, model_.peak);
  }

  void Step(std::mt19937& rng) {
    const int num_tables = static_cast<int>(tables_.size());
    const int num_res = static_cast<int>(reservations_.size());
    // -1 for the pool, else a reservation index.
    const int res =
        num_res > 0 && rng() % 2 == 0 ? static_cast<int>(rng() % num_res) : -1;
    Reservation* reservation = res >= 0 ? &reservations_[res] : nullptr;
    const int32_t available = res >= 0 ? model_.reservations[res].reserved_free
                                       : model_.num_unreserved();
    const int t = num_tables > 0 ? static_cast<int>(rng() % num_tables) : -1;

    switch (rng() % 15) {
      case 0:  // New table.
        if (num_tables < kMaxTables) {
          tables_.emplace_back(pool_.get());
          model_.tables.emplace_back();
        }
        break;
      case 1:
      case 2: {  // Grow a table.
        if (t < 0) break;
        const int32_t n = static_cast<int32_t>(rng() % 4);
        if (n > available) {
          const Books before = Snapshot(true);
          ASSERT_THAT(tables_[t].Grow(n, reservation),
                      StatusIs(absl::StatusCode::kResourceExhausted));
          ++model_.failed;
          ASSERT_TRUE(before == Snapshot(true)) << "failed Grow changed books";
        } else {
          ASSERT_THAT(tables_[t].Grow(n, reservation), IsOk());
          for (int32_t k = 0; k < n; ++k) {
            model_.tables[t].push_back(model_.Take(res));
          }
        }
        break;
      }
      case 3:  // Fork.
        if (t >= 0 && num_tables < kMaxTables) {
          tables_.push_back(tables_[t].Fork());
          model_.tables.push_back(model_.tables[t]);
          for (BlockId id : model_.tables.back()) model_.AddRef(id);
        }
        break;
      case 4:
      case 5:  // Copy-on-write: one write over some entries, maybe growth.
        ASSERT_NO_FATAL_FAILURE(PrepareWriteStep(rng, res));
        break;
      case 6: {  // Drop front or back.
        if (t < 0) break;
        std::vector<BlockId>& m = model_.tables[t];
        const int32_t n = static_cast<int32_t>(rng() % (m.size() + 1));
        if (rng() % 2 == 0) {
          tables_[t].DropFront(n);
          for (int32_t k = 0; k < n; ++k) model_.Release(m[k]);
          m.erase(m.begin(), m.begin() + n);
        } else {
          tables_[t].DropBack(n);
          const int32_t keep = static_cast<int32_t>(m.size()) - n;
          // The last entry first.
          for (int32_t k = static_cast<int32_t>(m.size()) - 1; k >= keep; --k) {
            model_.Release(m[k]);
          }
          m.resize(keep);
        }
        break;
      }
      case 7: {  // Reorder (beam reorder / batch select / repeat-interleave).
        if (t < 0) break;
        // Mostly 1..kMaxTables rows; sometimes none (every row released).
        const int n =
            rng() % 16 == 0 ? 0 : 1 + static_cast<int>(rng() % kMaxTables);
        std::vector<int32_t> indices;
        for (int k = 0; k < n; ++k) {
          indices.push_back(static_cast<int32_t>(rng() % num_tables));
        }
        std::vector<std::vector<BlockId>> model_reordered;
        for (int32_t index : indices) {
          model_reordered.push_back(model_.tables[index]);
        }
        // In place: extra uses add references, unused rows release, in row
        // order (the model mirrors the free-list order).
        ReorderTables(&tables_, indices);
        std::vector<int> uses(num_tables, 0);
        for (int32_t index : indices) ++uses[index];
        for (int j = 0; j < num_tables; ++j) {
          for (int k = 1; k < uses[j]; ++k) {
            for (BlockId id : model_.tables[j]) model_.AddRef(id);
          }
        }
        for (int j = 0; j < num_tables; ++j) {
          if (uses[j] > 0) continue;
          for (BlockId id : model_.tables[j]) model_.Release(id);
        }
        model_.tables = std::move(model_reordered);
        break;
      }
      case 8: {  // Reserve.
        if (num_res >= kMaxReservations) break;
        const int32_t n = static_cast<int32_t>(rng() % 5);
        if (n > model_.num_unreserved()) {
          const Books before = Snapshot(true);
          ASSERT_THAT(pool_->Reserve(n),
                      StatusIs(absl::StatusCode::kResourceExhausted));
          ++model_.failed;
          ASSERT_TRUE(before == Snapshot(true)) << "failed Reserve changed";
        } else {
          absl::StatusOr<Reservation> r = pool_->Reserve(n);
          ASSERT_THAT(r, IsOk());
          reservations_.push_back(*std::move(r));
          model_.reservations.push_back(
              {model_.next_reservation_id++, n, n, 0});
        }
        break;
      }
      case 9: {  // Resize.
        if (res < 0) break;
        ModelReservation& m = model_.reservations[res];
        const int32_t new_capacity = static_cast<int32_t>(rng() % 7);
        const int32_t delta = new_capacity - m.capacity;
        if (delta > model_.num_unreserved()) {
          const Books before = Snapshot(true);
          ASSERT_THAT(reservation->Resize(new_capacity),
                      StatusIs(absl::StatusCode::kResourceExhausted));
          ++model_.failed;
          ASSERT_TRUE(before == Snapshot(true)) << "failed Resize changed";
        } else if (new_capacity < m.charged_live) {
          const Books before = Snapshot(false);
          ASSERT_THAT(reservation->Resize(new_capacity),
                      StatusIs(absl::StatusCode::kFailedPrecondition));
          ASSERT_TRUE(before == Snapshot(false)) << "failed shrink changed";
        } else {
          ASSERT_THAT(reservation->Resize(new_capacity), IsOk());
          m.capacity = new_capacity;
          m.reserved_free += delta;
        }
        break;
      }
      case 10:  // Destroy a reservation.
        if (res >= 0 && rng() % 3 == 0) {
          reservations_.erase(reservations_.begin() + res);
          model_.DestroyReservation(res);
        }
        break;
      case 11: {  // Loose references: allocate, share, release.
        const uint32_t what = rng() % 3;
        if (what == 0) {
          std::optional<BlockId> id = reservation != nullptr
                                          ? reservation->TryAllocate()
                                          : pool_->TryAllocate();
          if (available < 1) {
            ASSERT_EQ(id, std::nullopt);
            ++model_.failed;
          } else {
            ASSERT_EQ(id, model_.Take(res));
            model_.loose.push_back(*id);
          }
        } else if (!model_.loose.empty()) {
          const size_t k = rng() % model_.loose.size();
          const BlockId id = model_.loose[k];
          if (what == 1) {
            pool_->AddRef(id);
            model_.AddRef(id);
            model_.loose.push_back(id);
          } else {
            pool_->Release(id);
            model_.Release(id);
            model_.loose.erase(model_.loose.begin() + k);
          }
        }
        break;
      }
      case 12:  // Hand a loose reference to a table.
        if (t >= 0 && !model_.loose.empty()) {
          const BlockId id = model_.loose.back();
          model_.loose.pop_back();
          tables_[t].Append(id);
          model_.tables[t].push_back(id);
        }
        break;
      case 13:  // Destroy or clear a table; rarely grow the pool.
        if (t >= 0 && rng() % 2 == 0) {
          const std::vector<BlockId>& m = model_.tables[t];
          if (rng() % 2 == 0) {
            tables_[t].Clear();
            for (BlockId id : m) model_.Release(id);
          } else {
            tables_[t].ClearTailFirst();
            for (auto it = m.rbegin(); it != m.rend(); ++it) {
              model_.Release(*it);
            }
          }
          tables_.erase(tables_.begin() + t);
          model_.tables.erase(model_.tables.begin() + t);
        } else if (rng() % 16 == 0 && initial_blocks_ >= 16 &&
                   model_.num_blocks() < 64) {
          // The smallest pool never grows: its operations keep failing.
          ASSERT_THAT(pool_->Grow(2), IsOk());
          model_.Grow(2);
        }
        break;
      case 14:  // The bytes' copies ran: finish, drop or merge pending ones.
        ASSERT_NO_FATAL_FAILURE(PendingStep(rng));
        break;
    }
  }

  // One PrepareWrite: 0..3 distinct targets over random tables, 0..2 growths,
  // through the pool or a reservation, modelled exactly: walking the targets
  // in order, an entry needs a copy while its block has another holder
  // besides the references already moved to copies in this write
  // (ref_count - moved > 1); a fresh block comes from the reservation while
  // it has one, else from the unreserved pool; copies are taken first, then
  // growth, all or nothing. The entry's reference moves to the pending copy.
  void PrepareWriteStep(std::mt19937& rng, int res) {
    const int num_tables = static_cast<int>(tables_.size());
    Reservation* reservation = res >= 0 ? &reservations_[res] : nullptr;
    std::vector<WriteTarget> targets;
    std::vector<std::pair<int, int32_t>> model_targets;  // (table, index).
    std::vector<TableGrowth> growth;
    std::vector<std::pair<int, int32_t>> model_growth;  // (table, blocks).
    if (num_tables > 0) {
      const int num_targets = static_cast<int>(rng() % 4);
      for (int k = 0; k < num_targets; ++k) {
        const int t = static_cast<int>(rng() % num_tables);
        if (model_.tables[t].empty()) continue;
        const int32_t i = static_cast<int32_t>(rng() % model_.tables[t].size());
        const std::pair<int, int32_t> target(t, i);
        if (std::find(model_targets.begin(), model_targets.end(), target) !=
            model_targets.end()) {
          continue;  // Targets are distinct entries.
        }
        model_targets.push_back(target);
        targets.push_back({&tables_[t], i});
      }
      const int num_growth = rng() % 3 == 0 ? static_cast<int>(rng() % 3) : 0;
      for (int k = 0; k < num_growth; ++k) {
        const int t = static_cast<int>(rng() % num_tables);
        const int32_t n = static_cast<int32_t>(rng() % 3);
        model_growth.push_back({t, n});
        growth.push_back({&tables_[t], n});
      }
    }
    WriteRequest request;
    request.targets = targets;
    request.growth = growth;
    request.reservation = reservation;

    // The model's decision.
    std::map<int32_t, int32_t> moved;  // Block -> references moved so far.
    std::vector<bool> copy(model_targets.size(), false);
    int64_t needed = 0;
    for (size_t k = 0; k < model_targets.size(); ++k) {
      const auto [t, i] = model_targets[k];
      const BlockId id = model_.tables[t][i];
      if (model_.rc(id) - moved[id.value()] > 1) {
        copy[k] = true;
        ++moved[id.value()];
        ++needed;
      }
    }
    for (const auto& [t, n] : model_growth) needed += n;
    const int32_t available =
        model_.num_unreserved() +
        (res >= 0 ? model_.reservations[res].reserved_free : 0);
    ASSERT_EQ(FreshBlocksNeeded(*pool_, request), needed);

    if (needed > available) {
      const Books before = Snapshot(true);
      ASSERT_THAT(PrepareWrite(*pool_, request),
                  StatusIs(absl::StatusCode::kResourceExhausted));
      ++model_.failed;
      ASSERT_TRUE(before == Snapshot(true)) << "failed PrepareWrite changed";
      return;
    }
    absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool_, request);
    ASSERT_THAT(copies, IsOk());
    auto take = [&] {
      const bool from_reservation =
          res >= 0 && model_.reservations[res].reserved_free > 0;
      return model_.Take(from_reservation ? res : -1);
    };
    std::vector<CopyOp> model_ops;
    for (size_t k = 0; k < model_targets.size(); ++k) {
      if (!copy[k]) continue;
      const auto [t, i] = model_targets[k];
      const BlockId fresh = take();
      model_ops.push_back(CopyOp{model_.tables[t][i], fresh});
      model_.tables[t][i] = fresh;  // Its reference is the copy's now.
    }
    for (const auto& [t, n] : model_growth) {
      for (int32_t k = 0; k < n; ++k) model_.tables[t].push_back(take());
    }
    ASSERT_EQ(std::vector<CopyOp>(copies->ops().begin(), copies->ops().end()),
              model_ops);
    // Keep the copies pending (their sources held) for a later step, or
    // finish them now, as a cache that copies right away does.
    if (model_ops.empty()) return;
    if (static_cast<int>(pending_.size()) < kMaxPending && rng() % 3 != 0) {
      pending_.push_back(*std::move(copies));
      model_.pending.push_back(std::move(model_ops));
    } else {
      copies->MarkDone();
      for (const CopyOp& op : model_ops) model_.Release(op.src);
    }
  }

  // Finishes (MarkDone), destroys, moves or merges (Append) a held
  // PendingCopies; each way releases the sources exactly once, in op order.
  void PendingStep(std::mt19937& rng) {
    if (pending_.empty()) return;
    const size_t k = rng() % pending_.size();
    auto release = [this](const std::vector<CopyOp>& ops) {
      for (const CopyOp& op : ops) model_.Release(op.src);
    };
    switch (rng() % 4) {
      case 0:
        pending_[k].MarkDone();
        ASSERT_TRUE(pending_[k].empty());
        release(model_.pending[k]);
        model_.pending[k].clear();
        break;
      case 1:  // Destroyed without MarkDone: the destructor releases.
        std::swap(pending_[k], pending_.back());  // Moves release nothing.
        std::swap(model_.pending[k], model_.pending.back());
        pending_.pop_back();
        release(model_.pending.back());
        model_.pending.pop_back();
        break;
      case 2: {  // Merge into another one.
        const size_t into = rng() % pending_.size();
        if (into == k) break;
        pending_[into].Append(std::move(pending_[k]));
        ASSERT_TRUE(pending_[k].empty());
        std::vector<CopyOp>& dst = model_.pending[into];
        dst.insert(dst.end(), model_.pending[k].begin(),
                   model_.pending[k].end());
        model_.pending[k].clear();
        break;
      }
      case 3: {  // Move-assign over another one: its copies are released.
        const size_t over = rng() % pending_.size();
        if (over == k) break;
        pending_[over] = std::move(pending_[k]);
        release(model_.pending[over]);
        model_.pending[over] = std::move(model_.pending[k]);
        model_.pending[k].clear();
        break;
      }
    }
    // Drop the empty ones, in both.
    for (size_t j = pending_.size(); j-- > 0;) {
      if (!model_.pending[j].empty()) continue;
      ASSERT_TRUE(pending_[j].empty());
      pending_.erase(pending_.begin() + j);
      model_.pending.erase(model_.pending.begin() + j);
    }
  }

 private:
  const int32_t initial_blocks_;
  std::unique_ptr<BlockPool> pool_;
  Model model_;
  // Declared after pool_: destroyed first (pending copies, tables, then
  // reservations).
  std::vector<Reservation> reservations_;
  std::vector<BlockTable> tables_;
  std::vector<PendingCopies> pending_;
};

// Param: seed. Pool sizes cycle through 6 (operations keep failing), 16, 48.
class AllocatorRandomOpsTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(AllocatorRandomOpsTest, MatchesReferenceModel) {
  constexpr int32_t kPoolSizes[] = {6, 16, 48};
  std::mt19937 rng(GetParam());
  Harness harness(kPoolSizes[GetParam() % 3]);
  for (int step = 0; step < 2500; ++step) {
    ASSERT_NO_FATAL_FAILURE(harness.Step(rng)) << "step " << step;
    ASSERT_NO_FATAL_FAILURE(harness.Check(step));
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, AllocatorRandomOpsTest,
                         ::testing::Range<uint32_t>(0, 32));

// An owner with a reservation of capacity C that never holds more than C
// distinct blocks never fails, while a greedy neighbour takes every
// unreserved block it can and releases some at random.
class ReservationGuaranteeTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ReservationGuaranteeTest, OwnerWithinCapacityNeverFails) {
  std::mt19937 rng(GetParam());
  BlockPool::Options options;
  options.num_blocks = 12;
  std::unique_ptr<BlockPool> pool = *BlockPool::Create(options);
  constexpr int32_t kCapacity = 5;
  Reservation reservation = *pool->Reserve(kCapacity);
  std::vector<BlockId> greedy;
  std::vector<BlockTable> owner;  // The owner's sequences.
  owner.emplace_back(pool.get());

  auto distinct = [&owner] {
    std::map<BlockId, int> seen;
    for (const BlockTable& t : owner) {
      for (BlockId id : t.blocks()) seen[id] = 1;
    }
    return static_cast<int32_t>(seen.size());
  };

  for (int step = 0; step < 2000; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    while (std::optional<BlockId> id = pool->TryAllocate()) {
      greedy.push_back(*id);
    }
    const int t = static_cast<int>(rng() % owner.size());
    switch (rng() % 6) {
      case 0: {
        const int32_t n = static_cast<int32_t>(rng() % 3);
        if (distinct() + n <= kCapacity) {
          ASSERT_THAT(owner[t].Grow(n, &reservation), IsOk());
        }
        break;
      }
      case 1:
        if (owner.size() < 4) owner.push_back(owner[t].Fork());
        break;
      case 2:
        if (!owner[t].empty() && distinct() + 1 <= kCapacity) {
          const int32_t i = static_cast<int32_t>(rng() % owner[t].num_blocks());
          const WriteTarget target[] = {{&owner[t], i}};
          WriteRequest request;
          request.targets = target;
          request.reservation = &reservation;
          absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, request);
          ASSERT_THAT(copies, IsOk());
          copies->MarkDone();
        }
        break;
      case 3:
        owner[t].DropFront(
            static_cast<int32_t>(rng() % (owner[t].num_blocks() + 1)));
        break;
      case 4:
        owner[t].DropBack(
            static_cast<int32_t>(rng() % (owner[t].num_blocks() + 1)));
        break;
      case 5:
        if (owner.size() > 1) owner.erase(owner.begin() + t);
        break;
    }
    if (!greedy.empty() && rng() % 2 == 0) {
      const size_t k = rng() % greedy.size();
      pool->Release(greedy[k]);
      greedy.erase(greedy.begin() + k);
    }
    ASSERT_LE(distinct(), kCapacity);
    ASSERT_EQ(reservation.num_charged(), distinct());
    std::vector<const BlockTable*> tables;
    for (const BlockTable& table : owner) tables.push_back(&table);
    CheckRefCounts(*pool, tables, greedy);
  }
  owner.clear();
  pool->ReleaseAll(greedy);
  EXPECT_EQ(reservation.num_reserved_free(), kCapacity);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ReservationGuaranteeTest,
                         ::testing::Range<uint32_t>(0, 32));

}  // namespace
}  // namespace pagedkv
