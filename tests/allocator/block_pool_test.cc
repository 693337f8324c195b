#include "allocator/block_pool.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/pool_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// operator* on an error StatusOr crashes with the status: the message a
// failing test should show.
std::unique_ptr<BlockPool> MakePool(
    int32_t num_blocks,
    PoolConcurrency concurrency = PoolConcurrency::kSingleThread) {
  BlockPool::Options options;
  options.num_blocks = num_blocks;
  options.concurrency = concurrency;
  return *BlockPool::Create(options);
}

// The pool part of the example in block_pool.h.
absl::Status HeaderExample() {
  BlockPool::Options options;
  options.num_blocks = 4096;
  absl::StatusOr<std::unique_ptr<BlockPool>> pool = BlockPool::Create(options);
  if (!pool.ok()) return pool.status();
  std::optional<BlockId> id = (*pool)->TryAllocate();  // ref_count 1.
  if (!id.has_value()) return absl::InternalError("no block");
  (*pool)->AddRef(*id);  // A fork shares it.
  (*pool)->Release(*id);
  (*pool)->Release(*id);  // Free again.

  absl::StatusOr<Reservation> r = (*pool)->Reserve(64);  // Static cache.
  if (!r.ok()) return r.status();                        // Nothing taken.
  std::optional<BlockId> mine = r->TryAllocate();
  if (!mine.has_value()) return absl::InternalError("reserved block missing");
  (*pool)->Release(*mine);  // Back to r.
  if (r->num_reserved_free() != 64) return absl::InternalError("not back");
  return absl::OkStatus();
}

TEST(BlockPoolTest, HeaderExampleWorks) {
  EXPECT_THAT(HeaderExample(), IsOk());
}

TEST(BlockPoolTest, CreateValidatesNumBlocks) {
  BlockPool::Options options;
  options.num_blocks = 1;
  EXPECT_THAT(BlockPool::Create(options), IsOk());
  options.num_blocks = 0;
  EXPECT_THAT(BlockPool::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("num_blocks must be > 0, got 0")));
  options.num_blocks = -3;
  EXPECT_THAT(BlockPool::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BlockPoolTest, HandsOutEveryBlockOnceThenReportsExhaustion) {
  auto pool = MakePool(4);
  absl::flat_hash_set<BlockId> seen;
  for (int i = 0; i < 4; ++i) {
    std::optional<BlockId> id = pool->TryAllocate();
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(pool->ref_count(*id), 1);
    EXPECT_TRUE(seen.insert(*id).second) << *id << " handed out twice";
  }
  EXPECT_EQ(pool->TryAllocate(), std::nullopt);
  EXPECT_EQ(pool->num_free_blocks(), 0);
  EXPECT_EQ(pool->num_used_blocks(), 4);
  pool->CheckInvariants();
}

TEST(BlockPoolTest, FreshPoolHandsOutLowIdsFirst) {
  auto pool = MakePool(3);
  EXPECT_EQ(*pool->TryAllocate(), BlockId(0));
  EXPECT_EQ(*pool->TryAllocate(), BlockId(1));
}

TEST(BlockPoolTest, ReusesMostRecentlyFreedBlockFirst) {
  auto pool = MakePool(8);
  std::vector<BlockId> ids = *pool->Allocate(4);
  pool->Release(ids[1]);
  pool->Release(ids[3]);
  EXPECT_EQ(*pool->TryAllocate(), ids[3]);
  EXPECT_EQ(*pool->TryAllocate(), ids[1]);
}

TEST(BlockPoolTest, SharedBlockIsFreedByLastRelease) {
  auto pool = MakePool(1);
  const BlockId id = *pool->TryAllocate();
  pool->AddRef(id);
  EXPECT_EQ(pool->stats().num_shared_blocks, 1);

  pool->Release(id);
  EXPECT_EQ(pool->ref_count(id), 1);
  EXPECT_EQ(pool->num_free_blocks(), 0);
  EXPECT_EQ(pool->stats().num_shared_blocks, 0);

  pool->Release(id);
  EXPECT_EQ(pool->num_free_blocks(), 1);
  pool->CheckInvariants();
}

TEST(BlockPoolTest, AllocateIsAllOrNothing) {
  auto pool = MakePool(4);
  EXPECT_THAT(pool->Allocate(3), IsOk());
  const PoolStats before = pool->stats();
  EXPECT_THAT(pool->Allocate(2),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 2 blocks, 1 free (0 reserved)")));
  EXPECT_EQ(pool->num_free_blocks(), 1);
  EXPECT_EQ(pool->stats().num_failed_allocations,
            before.num_failed_allocations + 1);
  EXPECT_THAT(pool->Allocate(1), IsOk());
  pool->CheckInvariants();
}

TEST(BlockPoolTest, AllocateZeroIsEmptyAndNegativeIsInvalid) {
  auto pool = MakePool(2);
  absl::StatusOr<std::vector<BlockId>> none = pool->Allocate(0);
  ASSERT_THAT(none, IsOk());
  EXPECT_THAT(*none, IsEmpty());
  EXPECT_THAT(pool->Allocate(-1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-1")));
}

TEST(BlockPoolTest, AddRefsAndReleaseAllTakeSpans) {
  auto pool = MakePool(4);
  std::vector<BlockId> ids = *pool->Allocate(2);
  pool->AddRefs(ids);
  pool->AddRefs({ids[0]});
  EXPECT_EQ(pool->ref_count(ids[0]), 3);
  EXPECT_EQ(pool->ref_count(ids[1]), 2);
  EXPECT_EQ(pool->stats().num_shared_blocks, 2);
  pool->ReleaseAll({ids[0], ids[0], ids[1]});
  EXPECT_EQ(pool->ref_count(ids[0]), 1);
  EXPECT_EQ(pool->ref_count(ids[1]), 1);
  EXPECT_EQ(pool->stats().num_shared_blocks, 0);
  pool->ReleaseAll(ids);
  EXPECT_EQ(pool->num_free_blocks(), 4);
  pool->CheckInvariants();
}

TEST(BlockPoolTest, GrowAppendsFreeBlocksBehindWarmOnes) {
  auto pool = MakePool(2);
  std::vector<BlockId> ids = *pool->Allocate(2);
  pool->Release(ids[0]);
  ASSERT_THAT(pool->Grow(3), IsOk());
  EXPECT_EQ(pool->num_blocks(), 5);
  EXPECT_EQ(pool->num_free_blocks(), 4);
  EXPECT_EQ(*pool->TryAllocate(), ids[0]);  // Warm block first.
  EXPECT_EQ(*pool->TryAllocate(), BlockId(2));
  EXPECT_EQ(pool->ref_count(BlockId(4)), 0);
  pool->CheckInvariants();
}

TEST(BlockPoolTest, GrowRejectsBadSizesAndChangesNothing) {
  auto pool = MakePool(2);
  EXPECT_THAT(pool->Grow(0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 0")));
  EXPECT_THAT(pool->Grow(-4), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pool->Grow(std::numeric_limits<int32_t>::max()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("overflows int32")));
  EXPECT_EQ(pool->num_blocks(), 2);
  pool->CheckInvariants();
}

TEST(BlockPoolTest, ShrinkUndoesGrowWhenTheDroppedBlocksAreFree) {
  auto pool = MakePool(2);
  const BlockId held = *pool->TryAllocate();
  ASSERT_THAT(pool->Grow(3), IsOk());
  ASSERT_THAT(pool->Shrink(2), IsOk());
  EXPECT_EQ(pool->num_blocks(), 2);
  EXPECT_EQ(pool->num_free_blocks(), 1);
  EXPECT_EQ(pool->ref_count(held), 1);
  pool->CheckInvariants();
  // The free block left is the old one, and growth works again.
  EXPECT_NE(*pool->TryAllocate(), held);
  ASSERT_THAT(pool->Grow(1), IsOk());
  pool->CheckInvariants();
}

TEST(BlockPoolTest, ShrinkRefusesInUseOrReservedBlocksAndChangesNothing) {
  auto pool = MakePool(4);
  std::vector<BlockId> ids = *pool->Allocate(4);  // 0..3 in use.
  pool->Release(ids[0]);
  pool->Release(ids[1]);
  EXPECT_THAT(pool->Shrink(2), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("block 2 is in use")));
  pool->Release(ids[2]);
  pool->Release(ids[3]);
  absl::StatusOr<Reservation> r = pool->Reserve(3);
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(pool->Shrink(2), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("2 free for 3 reserved")));
  EXPECT_EQ(pool->num_blocks(), 4);
  EXPECT_THAT(pool->Shrink(0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pool->Shrink(5), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(r->Resize(2), IsOk());
  EXPECT_THAT(pool->Shrink(2), IsOk());
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 0);
  pool->CheckInvariants();
}

TEST(BlockPoolTest, StatsCountAllocationsFailuresAndPeak) {
  auto pool = MakePool(3);
  std::vector<BlockId> ids = *pool->Allocate(3);
  EXPECT_EQ(pool->TryAllocate(), std::nullopt);
  pool->ReleaseAll(ids);
  ASSERT_TRUE(pool->TryAllocate().has_value());
  const PoolStats s = pool->stats();
  EXPECT_EQ(s.num_blocks, 3);
  EXPECT_EQ(s.num_free_blocks, 2);
  EXPECT_EQ(s.num_used_blocks, 1);
  EXPECT_EQ(s.num_allocations, 4);
  EXPECT_EQ(s.num_failed_allocations, 1);
  EXPECT_EQ(s.peak_used_blocks, 3);
}

TEST(BlockPoolTest, SharedPoolBehavesLikeSingleThreadPool) {
  auto pool = MakePool(2, PoolConcurrency::kShared);
  EXPECT_EQ(pool->concurrency(), PoolConcurrency::kShared);
  std::vector<BlockId> ids = *pool->Allocate(2);
  EXPECT_EQ(pool->TryAllocate(), std::nullopt);
  pool->ReleaseAll(ids);
  absl::StatusOr<Reservation> r = pool->Reserve(1);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 1);
  pool->CheckInvariants();
}

// --- Reservations ---------------------------------------------------------

TEST(ReservationTest, ReserveSetsBlocksAsideFromUnreservedAllocation) {
  auto pool = MakePool(4);
  absl::StatusOr<Reservation> r = pool->Reserve(3);
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->is_valid());
  EXPECT_EQ(r->pool(), pool.get());
  EXPECT_EQ(r->capacity(), 3);
  EXPECT_EQ(r->num_reserved_free(), 3);
  EXPECT_EQ(r->num_charged(), 0);
  EXPECT_EQ(pool->num_free_blocks(), 4);
  EXPECT_EQ(pool->num_reserved_blocks(), 3);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 1);
  EXPECT_TRUE(pool->TryAllocate().has_value());
  EXPECT_EQ(pool->TryAllocate(), std::nullopt);
  EXPECT_THAT(pool->Allocate(1),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 1 blocks, 3 free (3 reserved)")));
  pool->CheckInvariants();
}

TEST(ReservationTest, ReserveFailsWithNumbersAndChangesNothing) {
  auto pool = MakePool(4);
  absl::StatusOr<Reservation> r1 = pool->Reserve(3);
  ASSERT_THAT(r1, IsOk());
  EXPECT_THAT(pool->Reserve(2),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 2 blocks, 4 free (3 reserved)")));
  EXPECT_THAT(pool->Reserve(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(pool->num_reserved_blocks(), 3);
  EXPECT_EQ(pool->stats().num_reservations, 1);
  pool->CheckInvariants();
}

TEST(ReservationTest, AllocationsAreChargedAndReturnToTheReservation) {
  auto pool = MakePool(4);
  Reservation r = *pool->Reserve(2);
  const BlockId a = *r.TryAllocate();
  EXPECT_EQ(pool->ref_count(a), 1);
  EXPECT_EQ(r.num_charged(), 1);
  EXPECT_EQ(r.num_reserved_free(), 1);
  EXPECT_EQ(pool->num_reserved_blocks(), 1);

  // Another holder shares it; the block goes back to r only at the last
  // release, whoever does it.
  pool->AddRef(a);
  pool->Release(a);
  EXPECT_EQ(r.num_charged(), 1);
  pool->Release(a);
  EXPECT_EQ(r.num_charged(), 0);
  EXPECT_EQ(r.num_reserved_free(), 2);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 2);
  pool->CheckInvariants();
}

TEST(ReservationTest, TryAllocateReturnsNulloptOnlyWhenItsBlocksAreTaken) {
  auto pool = MakePool(4);
  Reservation r = *pool->Reserve(2);
  std::vector<BlockId> others = *pool->Allocate(2);  // Greedy neighbour.
  EXPECT_EQ(pool->TryAllocate(), std::nullopt);
  ASSERT_TRUE(r.TryAllocate().has_value());
  ASSERT_TRUE(r.TryAllocate().has_value());
  EXPECT_EQ(r.TryAllocate(), std::nullopt);
  pool->CheckInvariants();
}

TEST(ReservationTest, AllocateIsAllOrNothingWithNumbers) {
  auto pool = MakePool(8);
  Reservation r = *pool->Reserve(3);
  absl::StatusOr<std::vector<BlockId>> two = r.Allocate(2);
  ASSERT_THAT(two, IsOk());
  EXPECT_THAT(*two, SizeIs(2));
  EXPECT_THAT(r.Allocate(2),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 2 blocks, reservation has 1 free "
                                 "(capacity 3, 2 charged)")));
  EXPECT_EQ(r.num_reserved_free(), 1);
  EXPECT_THAT(r.Allocate(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r.Allocate(0), IsOk());
  pool->CheckInvariants();
}

TEST(ReservationTest, ResizeGrowsFromUnreservedBlocksOrChangesNothing) {
  auto pool = MakePool(6);
  Reservation r = *pool->Reserve(2);
  std::vector<BlockId> others = *pool->Allocate(2);
  ASSERT_THAT(r.Resize(3), IsOk());
  EXPECT_EQ(r.capacity(), 3);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 1);
  EXPECT_THAT(r.Resize(5),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 2 blocks, 4 free (3 reserved)")));
  EXPECT_EQ(r.capacity(), 3);
  EXPECT_EQ(pool->num_reserved_blocks(), 3);
  pool->CheckInvariants();
}

TEST(ReservationTest, ResizeShrinksUnlessLiveChargedBlocksWouldNotFit) {
  auto pool = MakePool(6);
  Reservation r = *pool->Reserve(4);
  std::vector<BlockId> mine = *r.Allocate(2);
  EXPECT_THAT(r.Resize(1), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("2 charged blocks are live")));
  EXPECT_EQ(r.capacity(), 4);
  ASSERT_THAT(r.Resize(2), IsOk());
  EXPECT_EQ(r.num_reserved_free(), 0);
  EXPECT_EQ(pool->num_reserved_blocks(), 0);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 4);
  EXPECT_THAT(r.Resize(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  pool->ReleaseAll(mine);
  EXPECT_EQ(r.num_reserved_free(), 2);
  pool->CheckInvariants();
}

TEST(ReservationTest, DestructionUnreservesFreeBlocksAndUnchargesLiveOnes) {
  auto pool = MakePool(4);
  BlockId kept;
  {
    Reservation r = *pool->Reserve(3);
    kept = *r.TryAllocate();
    EXPECT_EQ(pool->num_unreserved_free_blocks(), 1);
  }
  EXPECT_EQ(pool->num_reserved_blocks(), 0);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 3);
  EXPECT_EQ(pool->stats().num_reservations, 0);
  pool->CheckInvariants();
  pool->Release(kept);  // To general use now.
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 4);
  pool->CheckInvariants();
}

TEST(ReservationTest, SlotOfDetachedReservationIsNotConfusedWithANewOne) {
  auto pool = MakePool(4);
  std::optional<Reservation> old(*pool->Reserve(2));
  const BlockId kept = *old->TryAllocate();
  old.reset();
  Reservation fresh = *pool->Reserve(2);
  pool->Release(kept);  // Must not go to `fresh`.
  EXPECT_EQ(fresh.num_reserved_free(), 2);
  EXPECT_EQ(fresh.num_charged(), 0);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 2);
  pool->CheckInvariants();
}

TEST(ReservationTest, MoveTransfersOwnership) {
  auto pool = MakePool(4);
  Reservation a = *pool->Reserve(2);
  Reservation b = std::move(a);
  EXPECT_FALSE(a.is_valid());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.pool(), nullptr);
  EXPECT_EQ(b.capacity(), 2);
  Reservation c = *pool->Reserve(1);
  c = std::move(b);  // Drops c's own reservation of 1.
  EXPECT_EQ(pool->num_reserved_blocks(), 2);
  EXPECT_EQ(pool->stats().num_reservations, 1);
  Reservation empty;
  EXPECT_FALSE(empty.is_valid());
  pool->CheckInvariants();
}

TEST(ReservationTest, ZeroCapacityReservationCanGrowLater) {
  auto pool = MakePool(2);
  Reservation r = *pool->Reserve(0);
  EXPECT_EQ(r.TryAllocate(), std::nullopt);
  ASSERT_THAT(r.Resize(2), IsOk());
  EXPECT_TRUE(r.TryAllocate().has_value());
  pool->CheckInvariants();
}

// An owner holding at most capacity distinct blocks never fails, however
// greedy an unreserved neighbour is.
TEST(ReservationTest, OwnerWithinCapacityNeverFailsAgainstGreedyNeighbour) {
  auto pool = MakePool(10);
  Reservation r = *pool->Reserve(4);
  std::vector<BlockId> greedy;
  std::vector<BlockId> mine;
  for (int step = 0; step < 200; ++step) {
    while (std::optional<BlockId> id = pool->TryAllocate()) {
      greedy.push_back(*id);
    }
    if (mine.size() < 4) {
      std::optional<BlockId> id = r.TryAllocate();
      ASSERT_TRUE(id.has_value()) << "step " << step;
      mine.push_back(*id);
    } else {
      pool->Release(mine[step % mine.size()]);
      mine.erase(mine.begin() + step % mine.size());
    }
    if (step % 7 == 0 && !greedy.empty()) {
      pool->Release(greedy.back());
      greedy.pop_back();
    }
    pool->CheckInvariants();
  }
  pool->ReleaseAll(greedy);
  pool->ReleaseAll(mine);
}

// --- Batched calls against one-at-a-time ----------------------------------

// The batched calls (Allocate, Reservation::Allocate, ReleaseAllTailFirst)
// on one pool against TryAllocate / Release one block at a time on a twin
// pool, with the same random operations: the same ids in the same order,
// the same refcounts and stats after every step, and so the same free-list
// order (every later allocation compares the ids it is handed).
class BatchedMatchesOneAtATimeTest
    : public ::testing::TestWithParam<uint32_t> {};

TEST_P(BatchedMatchesOneAtATimeTest, SameIdsRefCountsStatsAndFreeOrder) {
  std::mt19937 rng(GetParam());
  constexpr int32_t kBlocks = 48;
  auto batched = MakePool(kBlocks);
  auto single = MakePool(kBlocks);
  std::optional<Reservation> rb(*batched->Reserve(8));
  std::optional<Reservation> rs(*single->Reserve(8));
  // Tables held in both pools: the same ids, one reference each.
  std::vector<std::vector<BlockId>> tables;
  int32_t batches = 0, releases = 0;
  for (int step = 0; step < 1500; ++step) {
    switch (rng() % 5) {
      case 0: {  // Unreserved blocks.
        const int32_t n = static_cast<int32_t>(rng() % 9);
        if (n > batched->num_unreserved_free_blocks()) break;
        absl::StatusOr<std::vector<BlockId>> ids = batched->Allocate(n);
        ASSERT_THAT(ids, IsOk());
        std::vector<BlockId> one;
        for (int32_t k = 0; k < n; ++k) one.push_back(*single->TryAllocate());
        ASSERT_EQ(*ids, one) << "step " << step;
        tables.push_back(*ids);
        ++batches;
        break;
      }
      case 1: {  // A reservation's blocks.
        const int32_t n = static_cast<int32_t>(rng() % 5);
        if (n > rb->num_reserved_free()) break;
        absl::StatusOr<std::vector<BlockId>> ids = rb->Allocate(n);
        ASSERT_THAT(ids, IsOk());
        std::vector<BlockId> one;
        for (int32_t k = 0; k < n; ++k) one.push_back(*rs->TryAllocate());
        ASSERT_EQ(*ids, one) << "step " << step;
        tables.push_back(*ids);
        ++batches;
        break;
      }
      case 2: {  // A fork shares a table.
        if (tables.empty()) break;
        const std::vector<BlockId> t = tables[rng() % tables.size()];
        batched->AddRefs(t);
        single->AddRefs(t);
        tables.push_back(t);
        break;
      }
      case 3: {  // A table released tail first.
        if (tables.empty()) break;
        const size_t i = rng() % tables.size();
        batched->ReleaseAllTailFirst(tables[i]);
        for (auto it = tables[i].rbegin(); it != tables[i].rend(); ++it) {
          single->Release(*it);
        }
        tables.erase(tables.begin() + i);
        ++releases;
        break;
      }
      case 4:  // Now and then a new reservation (the old one detaches).
        if (rng() % 4 == 0) {
          rb.reset();
          rs.reset();
          const int32_t n =
              std::min<int32_t>(8, batched->num_unreserved_free_blocks());
          rb.emplace(*batched->Reserve(n));
          rs.emplace(*single->Reserve(n));
        }
        break;
    }
    batched->CheckInvariants();
    ASSERT_TRUE(batched->stats() == single->stats()) << "step " << step;
    for (int32_t i = 0; i < kBlocks; ++i) {
      ASSERT_EQ(batched->ref_count(BlockId(i)), single->ref_count(BlockId(i)))
          << "block " << i << ", step " << step;
    }
  }
  EXPECT_GT(batches, 100);
  EXPECT_GT(releases, 100);
  for (const std::vector<BlockId>& t : tables) {
    batched->ReleaseAllTailFirst(t);
    for (auto it = t.rbegin(); it != t.rend(); ++it) single->Release(*it);
  }
  rb.reset();
  rs.reset();
  // The whole free list, in order.
  std::vector<BlockId> drained_batched, drained_single;
  while (std::optional<BlockId> id = batched->TryAllocate()) {
    drained_batched.push_back(*id);
  }
  while (std::optional<BlockId> id = single->TryAllocate()) {
    drained_single.push_back(*id);
  }
  EXPECT_EQ(drained_batched, drained_single);
  EXPECT_THAT(drained_batched, SizeIs(kBlocks));
  batched->ReleaseAll(drained_batched);
  single->ReleaseAll(drained_single);
}

INSTANTIATE_TEST_SUITE_P(Seeds, BatchedMatchesOneAtATimeTest,
                         ::testing::Range<uint32_t>(0, 8));

TEST(BlockPoolTest, ReleaseAllTailFirstLeavesTheFirstIdAtTheFront) {
  auto pool = MakePool(4);
  const std::vector<BlockId> table = *pool->Allocate(3);  // 0, 1, 2.
  pool->AddRef(table[1]);  // Shared: stays live.
  pool->ReleaseAllTailFirst(table);
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
  EXPECT_EQ(pool->num_free_blocks(), 3);
  // Block 2 went first, block 0 last: 0 is handed out next, then 2.
  EXPECT_THAT(*pool->Allocate(3),
              ElementsAre(BlockId(0), BlockId(2), BlockId(3)));
  pool->ReleaseAllTailFirst({});  // Nothing to do.
  pool->CheckInvariants();
}

// --- Contract violations ----------------------------------------------------

TEST(BlockPoolDeathTest, DoubleReleaseAborts) {
  auto pool = MakePool(1);
  const BlockId id = *pool->TryAllocate();
  pool->Release(id);
  EXPECT_DEATH(pool->Release(id), "Release of free block 0");
}

TEST(BlockPoolDeathTest, ReleaseAllWithTooManyCopiesAborts) {
  auto pool = MakePool(2);
  const BlockId id = *pool->TryAllocate();
  EXPECT_DEATH(pool->ReleaseAll({id, id}), "Release of free block");
}

TEST(BlockPoolDeathTest, ReleaseAllTailFirstOfAFreeBlockAborts) {
  auto pool = MakePool(3);
  const std::vector<BlockId> ids = *pool->Allocate(2);
  EXPECT_DEATH(pool->ReleaseAllTailFirst({ids[0], ids[1], ids[1]}),
               "Release of free block 1");
  EXPECT_DEATH(pool->ReleaseAllTailFirst({BlockId(5)}), "block 5 out of range");
}

TEST(BlockPoolTest, CopyHoldsAreReferencesReleasedTailFirst) {
  auto pool = MakePool(3);
  const std::vector<BlockId> ids = *pool->Allocate(2);
  pool->AddCopyHolds(ids);
  pool->ReleaseAll(ids);  // The holders go; the holds keep both.
  EXPECT_EQ(pool->num_free_blocks(), 1);
  pool->CheckInvariants();
  pool->ReleaseCopyHoldsTailFirst(ids);
  EXPECT_EQ(pool->num_free_blocks(), 3);
  // Freed tail first: the first id is the free list's newest.
  EXPECT_EQ(*pool->TryAllocate(), ids[0]);
  pool->CheckInvariants();
}

TEST(BlockPoolDeathTest, ReleasingACopyHoldNotTakenAborts) {
  auto pool = MakePool(2);
  const BlockId id = *pool->TryAllocate();
  EXPECT_DEATH(pool->ReleaseCopyHoldsTailFirst({id}),
               "copy source 0 released without a hold");
  EXPECT_DEATH(pool->AddCopyHolds({BlockId(1)}), "AddRef of free block 1");
}

TEST(BlockPoolDeathTest, AddRefOfFreeBlockAborts) {
  auto pool = MakePool(2);
  EXPECT_DEATH(pool->AddRef(BlockId(1)), "AddRef of free block 1");
  EXPECT_DEATH(pool->AddRefs({BlockId(0)}), "AddRef of free block 0");
}

TEST(BlockPoolDeathTest, OutOfRangeIdAborts) {
  auto pool = MakePool(2);
  EXPECT_DEATH(pool->ref_count(BlockId(2)), "block 2 out of range \\[0, 2\\)");
  EXPECT_DEATH(pool->Release(BlockId(-1)), "block -1 out of range");
  EXPECT_DEATH(pool->AddRef(BlockId(7)), "block 7 out of range");
  EXPECT_DEATH(pool->ref_count(BlockId()), "out of range");
}

TEST(BlockPoolDeathTest, SharedPoolChecksToo) {
  auto pool = MakePool(1, PoolConcurrency::kShared);
  EXPECT_DEATH(pool->Release(BlockId(0)), "Release of free block 0");
}

TEST(BlockPoolDeathTest, UsingAnInvalidReservationAborts) {
  Reservation r;
  EXPECT_DEATH(r.TryAllocate(), "invalid");
  EXPECT_DEATH(r.capacity(), "invalid");
}

TEST(BlockPoolDeathTest, DestroyingPoolBeforeItsReservationsAborts) {
  EXPECT_DEATH(
      {
        auto pool = MakePool(2);
        Reservation* leaked = new Reservation(*pool->Reserve(1));
        (void)leaked;
        pool.reset();
      },
      "1 reservations still point at it");
}

}  // namespace
}  // namespace pagedkv
