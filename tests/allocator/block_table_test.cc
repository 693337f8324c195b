#include "allocator/block_table.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/copy_on_write.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;

std::unique_ptr<BlockPool> MakePool(int32_t num_blocks) {
  BlockPool::Options options;
  options.num_blocks = num_blocks;
  return *BlockPool::Create(options);
}

std::vector<BlockId> Ids(std::initializer_list<int32_t> values) {
  std::vector<BlockId> ids;
  for (int32_t v : values) ids.push_back(BlockId(v));
  return ids;
}

// Stands in for the cache's byte copy in the header example.
void CopyBlock(BlockId /*src*/, BlockId /*dst*/) {}

// The example in block_table.h.
absl::Status HeaderExample(BlockPool* pool) {
  BlockTable table(pool);  // pool outlives the table.
  if (absl::Status s = table.Grow(3); !s.ok()) return s;
  BlockTable beam = table.Fork();  // Shares all 3 blocks.
  absl::StatusOr<std::optional<CopyOp>> op = beam.PrepareWrite(2);
  if (!op.ok()) return op.status();  // RESOURCE_EXHAUSTED.
  if (op->has_value()) CopyBlock((*op)->src, (*op)->dst);  // Then write.
  return absl::OkStatus();
}

TEST(BlockTableTest, HeaderExampleWorks) {
  auto pool = MakePool(8);
  EXPECT_THAT(HeaderExample(pool.get()), IsOk());
  EXPECT_EQ(pool->num_free_blocks(), 8);
}

TEST(BlockTableTest, GrowAppendsOwnedBlocksAndDestructorReleasesThem) {
  auto pool = MakePool(4);
  {
    BlockTable table(pool.get());
    EXPECT_TRUE(table.empty());
    EXPECT_EQ(table.pool(), pool.get());
    ASSERT_THAT(table.Grow(3), IsOk());
    EXPECT_EQ(table.num_blocks(), 3);
    EXPECT_THAT(table.blocks(), ElementsAreArray(Ids({0, 1, 2})));
    EXPECT_EQ(table[1], BlockId(1));
    EXPECT_EQ(pool->num_free_blocks(), 1);
    const BlockTable* tables[] = {&table};
    CheckRefCounts(*pool, tables);
  }
  EXPECT_EQ(pool->num_free_blocks(), 4);
}

TEST(BlockTableTest, GrowFailureLeavesTableAndPoolUnchanged) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(3), IsOk());
  EXPECT_THAT(table.Grow(2),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 2 blocks, 1 free (0 reserved)")));
  EXPECT_EQ(table.num_blocks(), 3);
  EXPECT_EQ(pool->num_free_blocks(), 1);
  EXPECT_THAT(table.Grow(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(table.Grow(0), IsOk());
}

TEST(BlockTableTest, GrowFromReservationChargesIt) {
  auto pool = MakePool(4);
  Reservation r = *pool->Reserve(2);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2, &r), IsOk());
  EXPECT_EQ(r.num_charged(), 2);
  EXPECT_THAT(table.Grow(1, &r), StatusIs(absl::StatusCode::kResourceExhausted,
                                          HasSubstr("reservation has 0 free")));
  table.Clear();
  EXPECT_EQ(r.num_reserved_free(), 2);
}

TEST(BlockTableTest, AppendTakesOverCallersReferences) {
  auto pool = MakePool(4);
  std::vector<BlockId> ids = *pool->Allocate(3);
  {
    BlockTable table(pool.get());
    table.Append(ids[0]);
    table.AppendAll({ids[1], ids[2]});
    EXPECT_THAT(table.blocks(), ElementsAreArray(ids));
    table.CheckInvariants();
  }
  EXPECT_EQ(pool->num_free_blocks(), 4);
}

TEST(BlockTableTest, ForkSharesEveryBlock) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2), IsOk());
  BlockTable fork = table.Fork();
  EXPECT_THAT(fork.blocks(), ElementsAreArray(table.blocks()));
  EXPECT_TRUE(table.IsShared(0));
  EXPECT_TRUE(fork.IsShared(1));
  EXPECT_EQ(pool->ref_count(table[0]), 2);
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables);
  table.Clear();
  EXPECT_FALSE(fork.IsShared(0));
  EXPECT_EQ(pool->num_free_blocks(), 2);
}

TEST(BlockTableTest, MoveLeavesAnEmptyUsableTableOnTheSamePool) {
  auto pool = MakePool(4);
  BlockTable a(pool.get());
  ASSERT_THAT(a.Grow(2), IsOk());
  BlockTable b = std::move(a);
  EXPECT_EQ(b.num_blocks(), 2);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.pool(), pool.get());
  ASSERT_THAT(a.Grow(1), IsOk());
  b = std::move(a);  // Releases b's two blocks.
  EXPECT_EQ(b.num_blocks(), 1);
  EXPECT_EQ(pool->num_free_blocks(), 3);
  BlockTable& same = b;  // Through a reference: a deliberate self-move.
  b = std::move(same);   // Self-move keeps the table.
  EXPECT_EQ(b.num_blocks(), 1);
}

TEST(BlockTableTest, DropFrontAndDropBackReleaseThoseEntries) {
  auto pool = MakePool(6);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(5), IsOk());
  table.DropFront(2);
  EXPECT_THAT(table.blocks(), ElementsAreArray(Ids({2, 3, 4})));
  table.DropBack(1);
  EXPECT_THAT(table.blocks(), ElementsAreArray(Ids({2, 3})));
  EXPECT_EQ(pool->num_free_blocks(), 4);
  table.DropFront(0);
  table.DropBack(2);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(pool->num_free_blocks(), 6);
}

TEST(BlockTableTest, PrepareWriteOnPrivateBlockIsNoOp) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(1), IsOk());
  absl::StatusOr<std::optional<CopyOp>> op = table.PrepareWrite(0);
  ASSERT_THAT(op, IsOk());
  EXPECT_EQ(*op, std::nullopt);
  EXPECT_EQ(pool->num_free_blocks(), 3);
}

TEST(BlockTableTest, PrepareWriteUnsharesTheEntry) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2), IsOk());
  BlockTable fork = table.Fork();
  absl::StatusOr<std::optional<CopyOp>> op = fork.PrepareWrite(1);
  ASSERT_THAT(op, IsOk());
  EXPECT_THAT(*op, Optional(CopyOp{BlockId(1), BlockId(2)}));
  EXPECT_THAT(fork.blocks(), ElementsAreArray(Ids({0, 2})));
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
  EXPECT_FALSE(table.IsShared(1));
  EXPECT_EQ(fork.NumSharedIn(0, 2), 1);
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables);
}

TEST(BlockTableTest, PrepareWriteFailsWithNumbersAndChangesNothing) {
  auto pool = MakePool(2);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2), IsOk());
  BlockTable fork = table.Fork();
  EXPECT_THAT(fork.PrepareWrite(0),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 1 blocks, 0 free (0 reserved)")));
  EXPECT_THAT(fork.blocks(), ElementsAreArray(table.blocks()));
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables);
}

TEST(BlockTableTest, PrepareWriteCanTakeTheBlockFromAReservation) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2), IsOk());
  Reservation r = *pool->Reserve(1);
  BlockTable fork = table.Fork();
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 1);
  absl::StatusOr<std::optional<CopyOp>> op = fork.PrepareWrite(0, &r);
  ASSERT_THAT(op, IsOk());
  ASSERT_TRUE(op->has_value());
  EXPECT_EQ(r.num_charged(), 1);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 1);
  EXPECT_THAT(fork.PrepareWrite(1, &r),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("reservation has 0 free")));
}

TEST(BlockTableTest, NumSharedInCountsSharedEntriesOfARange) {
  auto pool = MakePool(8);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(4), IsOk());
  BlockTable fork = table.Fork();
  fork.DropBack(1);
  EXPECT_EQ(table.NumSharedIn(0, 4), 3);
  EXPECT_EQ(table.NumSharedIn(2, 4), 1);
  EXPECT_EQ(table.NumSharedIn(3, 3), 0);
}

TEST(BlockTableTest, GatherTablesForksTheChosenRows) {
  auto pool = MakePool(8);
  std::vector<BlockTable> old;
  old.emplace_back(pool.get());
  old.emplace_back(pool.get());
  ASSERT_THAT(old[0].Grow(2), IsOk());
  ASSERT_THAT(old[1].Grow(1), IsOk());
  std::vector<BlockTable> gathered = GatherTables(old, {1, 1, 0});
  ASSERT_EQ(gathered.size(), 3u);
  EXPECT_THAT(gathered[0].blocks(), ElementsAreArray(old[1].blocks()));
  EXPECT_THAT(gathered[1].blocks(), ElementsAreArray(old[1].blocks()));
  EXPECT_THAT(gathered[2].blocks(), ElementsAreArray(old[0].blocks()));
  EXPECT_EQ(pool->ref_count(old[1][0]), 3);
  std::vector<const BlockTable*> all;
  for (const BlockTable& t : old) all.push_back(&t);
  for (const BlockTable& t : gathered) all.push_back(&t);
  CheckRefCounts(*pool, all);
  old.clear();  // Beam reorder: the old tables go, the new ones stay.
  EXPECT_EQ(pool->ref_count(gathered[0][0]), 2);
  EXPECT_THAT(GatherTables(gathered, {}), IsEmpty());
}

TEST(BlockTableTest, ReorderTablesMatchesGatherAndTouchesOnlyTheNetChange) {
  auto pool = MakePool(8);
  std::vector<BlockTable> tables;
  for (int i = 0; i < 3; ++i) {
    tables.emplace_back(pool.get());
    ASSERT_THAT(tables.back().Grow(2), IsOk());
  }
  const std::vector<BlockId> row0(tables[0].blocks().begin(),
                                  tables[0].blocks().end());
  const std::vector<BlockId> row2(tables[2].blocks().begin(),
                                  tables[2].blocks().end());
  ReorderTables(&tables, {2, 0, 2});  // Row 1 dropped, row 2 twice.
  ASSERT_EQ(tables.size(), 3u);
  EXPECT_THAT(tables[0].blocks(), ElementsAreArray(row2));
  EXPECT_THAT(tables[1].blocks(), ElementsAreArray(row0));
  EXPECT_THAT(tables[2].blocks(), ElementsAreArray(row2));
  EXPECT_EQ(pool->ref_count(row2[0]), 2);
  EXPECT_EQ(pool->ref_count(row0[0]), 1);
  EXPECT_EQ(pool->num_free_blocks(), 4);
  std::vector<const BlockTable*> all;
  for (const BlockTable& t : tables) all.push_back(&t);
  CheckRefCounts(*pool, all);

  ReorderTables(&tables, {2, 1, 0});  // Permutation: no refcount changes.
  EXPECT_EQ(pool->ref_count(row2[0]), 2);
  ReorderTables(&tables, {});
  EXPECT_TRUE(tables.empty());
  EXPECT_EQ(pool->num_free_blocks(), 8);
}

TEST(BlockTableTest, CheckRefCountsCountsExtraHolders) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(1), IsOk());
  pool->AddRef(table[0]);
  const BlockId loose = *pool->TryAllocate();
  const BlockTable* tables[] = {&table};
  CheckRefCounts(*pool, tables, {table[0], loose});
  pool->ReleaseAll({table[0], loose});
}

// --- Contract violations ----------------------------------------------------

TEST(BlockTableDeathTest, DropPastSizeAborts) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2), IsOk());
  EXPECT_DEATH(table.DropFront(3), "DropFront\\(3\\) of a 2-block table");
  EXPECT_DEATH(table.DropBack(3), "DropBack\\(3\\) of a 2-block table");
  EXPECT_DEATH(table.DropFront(-1), "DropFront\\(-1\\)");
}

TEST(BlockTableDeathTest, OutOfRangeEntryAborts) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(1), IsOk());
  EXPECT_DEATH(table.PrepareWrite(1).IgnoreError(),
               "PrepareWrite\\(1\\) of a 1-block table");
  EXPECT_DEATH(table.IsShared(-1), "IsShared\\(-1\\)");
  EXPECT_DEATH(table.NumSharedIn(0, 2), "NumSharedIn\\(0, 2\\)");
}

TEST(BlockTableDeathTest, GatherIndexOutOfRangeAborts) {
  auto pool = MakePool(4);
  std::vector<BlockTable> old;
  old.emplace_back(pool.get());
  EXPECT_DEATH(GatherTables(old, {0, 1}),
               "gather index 1 out of range \\[0, 1\\)");
  EXPECT_DEATH(GatherTables(old, {-1}), "gather index -1 out of range");
  EXPECT_DEATH(GatherTables({}, {0}), "from no tables");
  EXPECT_DEATH(ReorderTables(&old, {3}), "gather index 3 out of range");
}

TEST(BlockTableDeathTest, GatherAcrossPoolsAborts) {
  auto pool_a = MakePool(2);
  auto pool_b = MakePool(2);
  std::vector<BlockTable> old;
  old.emplace_back(pool_a.get());
  old.emplace_back(pool_b.get());
  EXPECT_DEATH(GatherTables(old, {0}), "across pools");
}

TEST(BlockTableDeathTest, ReservationOfAnotherPoolAborts) {
  auto pool_a = MakePool(2);
  auto pool_b = MakePool(2);
  Reservation r = *pool_b->Reserve(1);
  BlockTable table(pool_a.get());
  EXPECT_DEATH(table.Grow(1, &r).IgnoreError(), "reservation on pool");
}

TEST(BlockTableDeathTest, NullPoolAborts) {
  EXPECT_DEATH(BlockTable table(nullptr), "needs a pool");
}

TEST(BlockTableDeathTest, CheckRefCountsReportsTheFirstMismatch) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(2), IsOk());
  pool->AddRef(table[1]);  // A holder the check is not told about.
  const BlockTable* tables[] = {&table};
  EXPECT_DEATH(CheckRefCounts(*pool, tables),
               "block 1: ref_count 2, but 1 references held");
  pool->Release(table[1]);
}

TEST(BlockTableDeathTest, AppendOfFreeBlockAbortsInDebugBuilds) {
#ifdef NDEBUG
  GTEST_SKIP() << "PKV_DCHECK is compiled out";
#else
  auto pool = MakePool(2);
  BlockTable table(pool.get());
  EXPECT_DEATH(table.Append(BlockId(0)), "Append of free block 0");
#endif
}

}  // namespace
}  // namespace pagedkv
