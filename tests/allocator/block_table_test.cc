#include "allocator/block_table.h"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
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

// The example in block_table.h.
absl::Status HeaderExample(BlockPool* pool) {
  BlockTable table(pool);  // pool outlives the table.
  if (absl::Status s = table.Grow(3); !s.ok()) return s;
  BlockTable beam = table.Fork();  // Shares all 3 blocks.
  EXPECT_TRUE(beam.IsShared(2));   // true
  beam.DropBack(1);                // table keeps its 3.
  EXPECT_EQ(table.num_blocks(), 3);
  EXPECT_FALSE(table.IsShared(2));
  EXPECT_TRUE(table.IsShared(1));
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

// The release order shows in the pool's LIFO free list: the entry released
// last is handed out first.
TEST(BlockTableTest, DropBackAndClearTailFirstReleaseTheLastEntryFirst) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(3), IsOk());  // {0, 1, 2}
  table.DropBack(2);                   // Releases 2, then 1.
  EXPECT_EQ(*pool->TryAllocate(), BlockId(1));
  EXPECT_EQ(*pool->TryAllocate(), BlockId(2));
  pool->ReleaseAll(Ids({2, 1}));  // Free list: 1, 2, 3.

  BlockTable other(pool.get());
  ASSERT_THAT(other.Grow(2), IsOk());  // {1, 2}
  other.ClearTailFirst();              // Releases 2, then 1.
  EXPECT_TRUE(other.empty());
  EXPECT_EQ(*pool->TryAllocate(), BlockId(1));
  EXPECT_EQ(*pool->TryAllocate(), BlockId(2));
  pool->ReleaseAll(Ids({2, 1}));
  table.Clear();  // Releases in entry order.
  EXPECT_EQ(pool->num_free_blocks(), 4);
}

// Which entries another table still holds: the per-entry question the
// removed NumSharedIn answered for a range (copy-on-write now asks it inside
// PrepareWrite; see copy_on_write_test.cc).
TEST(BlockTableTest, IsSharedTellsWhichEntriesAnotherHolderHas) {
  auto pool = MakePool(8);
  BlockTable table(pool.get());
  ASSERT_THAT(table.Grow(4), IsOk());
  BlockTable fork = table.Fork();
  fork.DropBack(1);
  EXPECT_TRUE(table.IsShared(0));
  EXPECT_TRUE(table.IsShared(2));
  EXPECT_FALSE(table.IsShared(3));
  pool->AddRef(table[3]);  // A holder outside any table counts too.
  EXPECT_TRUE(table.IsShared(3));
  pool->Release(table[3]);
  fork.Clear();
  for (int32_t i = 0; i < table.num_blocks(); ++i) {
    EXPECT_FALSE(table.IsShared(i)) << i;
  }
}

// Repeat-interleave: every row is kept and row 1 is picked twice, so the only
// pool traffic is one extra reference per block of row 1.
TEST(BlockTableTest, ReorderTablesRepeatsAChosenRowBySharingItsBlocks) {
  auto pool = MakePool(8);
  std::vector<BlockTable> tables;
  tables.emplace_back(pool.get());
  tables.emplace_back(pool.get());
  ASSERT_THAT(tables[0].Grow(2), IsOk());
  ASSERT_THAT(tables[1].Grow(1), IsOk());
  const std::vector<BlockId> row0(tables[0].blocks().begin(),
                                  tables[0].blocks().end());
  const std::vector<BlockId> row1(tables[1].blocks().begin(),
                                  tables[1].blocks().end());
  const int64_t allocations = pool->stats().num_allocations;
  ReorderTables(&tables, {1, 1, 0});
  ASSERT_EQ(tables.size(), 3u);
  EXPECT_THAT(tables[0].blocks(), ElementsAreArray(row1));
  EXPECT_THAT(tables[1].blocks(), ElementsAreArray(row1));
  EXPECT_THAT(tables[2].blocks(), ElementsAreArray(row0));
  EXPECT_EQ(pool->ref_count(row1[0]), 2);
  EXPECT_EQ(pool->ref_count(row0[0]), 1);
  EXPECT_EQ(pool->num_free_blocks(), 5);
  EXPECT_EQ(pool->stats().num_allocations, allocations);  // No block taken.
  for (const BlockTable& t : tables) EXPECT_EQ(t.pool(), pool.get());
  std::vector<const BlockTable*> all;
  for (const BlockTable& t : tables) all.push_back(&t);
  CheckRefCounts(*pool, all);
  ReorderTables(&tables, {2});  // Batch select: the two copies of row 1 go.
  ASSERT_EQ(tables.size(), 1u);
  EXPECT_THAT(tables[0].blocks(), ElementsAreArray(row0));
  EXPECT_EQ(pool->num_free_blocks(), 6);
}

TEST(BlockTableTest, ReorderTablesTouchesOnlyTheNetChange) {
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
  EXPECT_THAT(tables[1].blocks(), ElementsAreArray(row0));
  ReorderTables(&tables, {});
  EXPECT_TRUE(tables.empty());
  EXPECT_EQ(pool->num_free_blocks(), 8);
  ReorderTables(&tables, {});  // No tables, no indices: nothing to do.
  EXPECT_TRUE(tables.empty());
}

// A row dropped by the reorder may share blocks with a kept row (a fork):
// those blocks stay live with the kept row's reference.
TEST(BlockTableTest, ReorderTablesKeepsBlocksADroppedRowSharesWithAKeptOne) {
  auto pool = MakePool(4);
  std::vector<BlockTable> tables;
  tables.emplace_back(pool.get());
  ASSERT_THAT(tables[0].Grow(2), IsOk());
  tables.push_back(tables[0].Fork());
  ASSERT_THAT(tables[1].Grow(1), IsOk());
  const std::vector<BlockId> row1(tables[1].blocks().begin(),
                                  tables[1].blocks().end());
  ReorderTables(&tables, {1});
  ASSERT_EQ(tables.size(), 1u);
  EXPECT_THAT(tables[0].blocks(), ElementsAreArray(row1));
  for (BlockId id : row1) EXPECT_EQ(pool->ref_count(id), 1) << id;
  EXPECT_EQ(pool->num_free_blocks(), 1);
  const BlockTable* all[] = {&tables[0]};
  CheckRefCounts(*pool, all);
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

// generation() is what lets an exporter skip unchanged rows: every change of
// blocks() must move it.
TEST(BlockTableTest, GenerationGrowsWithEveryChangeOfTheBlocks) {
  auto pool = MakePool(16);
  BlockTable table(pool.get());
  EXPECT_EQ(table.generation(), 0u);
  uint64_t last = 0;
  auto expect_moved = [&](const BlockTable& t, const char* what) {
    EXPECT_GT(t.generation(), last) << what;
    last = t.generation();
  };
  ASSERT_THAT(table.Grow(3), IsOk());
  expect_moved(table, "Grow");
  EXPECT_FALSE(table.Grow(100).ok());
  EXPECT_EQ(table.generation(), last) << "a failed Grow changes nothing";
  table.Append(*pool->TryAllocate());
  expect_moved(table, "Append");
  const BlockId two[] = {*pool->TryAllocate(), *pool->TryAllocate()};
  table.AppendAll(two);
  expect_moved(table, "AppendAll");
  table.DropFront(1);
  expect_moved(table, "DropFront");
  table.DropBack(1);
  expect_moved(table, "DropBack");
  BlockTable fork = table.Fork();
  EXPECT_EQ(table.generation(), last) << "Fork reads the table only";
  EXPECT_GT(fork.generation(), 0u);

  // Moves: the moved-to table holds what the moved-from one had at its
  // generation; the moved-from one (now empty) moves on.
  BlockTable moved(std::move(table));
  EXPECT_EQ(moved.generation(), last);
  EXPECT_GT(table.generation(), last);  // NOLINT(bugprone-use-after-move)
  BlockTable target(pool.get());
  ASSERT_THAT(target.Grow(1), IsOk());
  const uint64_t target_before = target.generation();
  const uint64_t fork_before = fork.generation();
  target = std::move(fork);
  EXPECT_GT(target.generation(), target_before);
  EXPECT_GT(fork.generation(), fork_before);  // NOLINT(bugprone-use-after-move)

  last = moved.generation();
  moved.ClearTailFirst();
  expect_moved(moved, "ClearTailFirst");
  ASSERT_THAT(moved.Grow(1), IsOk());
  expect_moved(moved, "Grow");
  moved.Clear();
  expect_moved(moved, "Clear");

  // ReorderTables: the rows that get another table's blocks move on.
  std::vector<BlockTable> rows;
  rows.emplace_back(pool.get());
  rows.emplace_back(pool.get());
  ASSERT_THAT(rows[0].Grow(1), IsOk());
  ASSERT_THAT(rows[1].Grow(1), IsOk());
  const uint64_t row0 = rows[0].generation();
  const int32_t indices[] = {0, 0};
  ReorderTables(&rows, indices);
  EXPECT_EQ(rows[0].generation(), row0);  // The very table, moved.
  EXPECT_GT(rows[1].generation(), 0u);    // A new row sharing its blocks.
}

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
  EXPECT_DEATH(table.IsShared(1), "IsShared\\(1\\) of a 1-block table");
  EXPECT_DEATH(table.IsShared(-1), "IsShared\\(-1\\)");
}

TEST(BlockTableDeathTest, ReorderIndexOutOfRangeAborts) {
  auto pool = MakePool(4);
  std::vector<BlockTable> tables;
  tables.emplace_back(pool.get());
  EXPECT_DEATH(ReorderTables(&tables, {0, 1}),
               "index 1 out of range \\[0, 1\\)");
  EXPECT_DEATH(ReorderTables(&tables, {-1}), "index -1 out of range");
  std::vector<BlockTable> none;
  EXPECT_DEATH(ReorderTables(&none, {0}), "from no tables");
  EXPECT_DEATH(ReorderTables(nullptr, {0}), "needs tables");
}

TEST(BlockTableDeathTest, ReorderAcrossPoolsAborts) {
  auto pool_a = MakePool(2);
  auto pool_b = MakePool(2);
  std::vector<BlockTable> tables;
  tables.emplace_back(pool_a.get());
  tables.emplace_back(pool_b.get());
  EXPECT_DEATH(ReorderTables(&tables, {0}), "ReorderTables across pools");
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
