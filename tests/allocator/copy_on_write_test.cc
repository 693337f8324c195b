#include "allocator/copy_on_write.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/pool_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::unique_ptr<BlockPool> MakePool(
    int32_t num_blocks,
    PoolConcurrency concurrency = PoolConcurrency::kSingleThread) {
  BlockPool::Options options;
  options.num_blocks = num_blocks;
  options.concurrency = concurrency;
  return *BlockPool::Create(options);
}

BlockTable MakeTable(BlockPool* pool, int32_t num_blocks) {
  BlockTable table(pool);
  EXPECT_THAT(table.Grow(num_blocks), IsOk());
  return table;
}

std::vector<BlockId> Ids(std::initializer_list<int32_t> values) {
  std::vector<BlockId> ids;
  for (int32_t v : values) ids.push_back(BlockId(v));
  return ids;
}

std::vector<BlockId> BlocksOf(const BlockTable& table) {
  return std::vector<BlockId>(table.blocks().begin(), table.blocks().end());
}

std::vector<BlockId> SourcesOf(const PendingCopies& copies) {
  std::vector<BlockId> sources;
  for (const CopyOp& op : copies.ops()) sources.push_back(op.src);
  return sources;
}

// Everything a failed PrepareWrite must leave alone.
struct Books {
  std::vector<std::vector<BlockId>> tables;
  std::vector<int32_t> ref_counts;
  PoolStats stats;
};

Books Snapshot(const BlockPool& pool,
               std::initializer_list<const BlockTable*> tables) {
  Books books;
  for (const BlockTable* t : tables) books.tables.push_back(BlocksOf(*t));
  for (int32_t i = 0; i < pool.num_blocks(); ++i) {
    books.ref_counts.push_back(pool.ref_count(BlockId(i)));
  }
  books.stats = pool.stats();
  return books;
}

// A failure counts itself in num_failed_allocations (as every failed
// allocation of the pool does) and changes nothing else.
void ExpectUnchangedButOneFailure(const Books& before, const Books& after) {
  EXPECT_EQ(after.tables, before.tables);
  EXPECT_EQ(after.ref_counts, before.ref_counts);
  PoolStats expected = before.stats;
  ++expected.num_failed_allocations;
  EXPECT_EQ(after.stats, expected);
}

// Stands in for the bytes' copy in the header example.
void CopyBlockBytes(BlockId /*src*/, BlockId /*dst*/) {}

// The example in copy_on_write.h: rows 0 and 1 of a fork write into their
// last block (index 3).
absl::Status HeaderExample(BlockPool& pool, BlockTable& row0,
                           BlockTable& row1) {
  WriteTarget targets[] = {{&row0, 3}, {&row1, 3}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(pool, {.targets = targets});
  if (!copies.ok()) return copies.status();  // RESOURCE_EXHAUSTED.
  for (const CopyOp& op : copies->ops()) CopyBlockBytes(op.src, op.dst);
  copies->MarkDone();  // Sources may go now.
  // ... write into row0[3] and row1[3] ...
  return absl::OkStatus();
}

// --- CopyOp ------------------------------------------------------------------

TEST(CopyOpTest, ComparesBothEnds) {
  EXPECT_EQ((CopyOp{BlockId(1), BlockId(2)}), (CopyOp{BlockId(1), BlockId(2)}));
  EXPECT_NE((CopyOp{BlockId(1), BlockId(2)}), (CopyOp{BlockId(2), BlockId(1)}));
}

TEST(CopyOpTest, PrintsSourceAndDestination) {
  std::ostringstream os;
  os << CopyOp{BlockId(1), BlockId(2)};
  EXPECT_EQ(os.str(), "CopyOp{block#1 -> block#2}");
}

// --- PrepareWrite ------------------------------------------------------------

TEST(PrepareWriteTest, HeaderExampleWorks) {
  auto pool = MakePool(8);
  BlockTable row0 = MakeTable(pool.get(), 4);
  BlockTable row1 = row0.Fork();
  ASSERT_THAT(HeaderExample(*pool, row0, row1), IsOk());
  // Block 3 was shared by the two rows only: one copy, row 1 keeps it.
  EXPECT_THAT(row0.blocks(), ElementsAreArray(Ids({0, 1, 2, 4})));
  EXPECT_THAT(row1.blocks(), ElementsAreArray(Ids({0, 1, 2, 3})));
  EXPECT_FALSE(row0.IsShared(3));
  EXPECT_FALSE(row1.IsShared(3));
  const BlockTable* tables[] = {&row0, &row1};
  CheckRefCounts(*pool, tables);
}

TEST(PrepareWriteTest, PrivateTargetNeedsNoCopyAndTakesNoBlock) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 2);
  const Books before = Snapshot(*pool, {&table});
  const WriteTarget targets[] = {{&table, 0}, {&table, 1}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  EXPECT_TRUE(copies->empty());
  EXPECT_EQ(copies->size(), 0);
  EXPECT_THAT(copies->ops(), IsEmpty());
  const Books after = Snapshot(*pool, {&table});
  EXPECT_EQ(after.tables, before.tables);
  EXPECT_EQ(after.ref_counts, before.ref_counts);
  EXPECT_EQ(after.stats, before.stats);  // Not even an allocation counted.
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.targets = targets}), 0);
}

TEST(PrepareWriteTest, EmptyRequestIsANoOp) {
  auto pool = MakePool(2);
  const PoolStats before = pool->stats();
  absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, {});
  ASSERT_THAT(copies, IsOk());
  EXPECT_TRUE(copies->empty());
  EXPECT_EQ(pool->stats(), before);
  EXPECT_EQ(FreshBlocksNeeded(*pool, {}), 0);
}

TEST(PrepareWriteTest, SharedTargetIsRepointedAndItsReferenceMovesToTheCopy) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 2);  // {0, 1}
  BlockTable fork = table.Fork();
  const int64_t allocations = pool->stats().num_allocations;
  const WriteTarget targets[] = {{&fork, 1}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  EXPECT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(1), BlockId(2)}));
  EXPECT_EQ(copies->size(), 1);
  EXPECT_THAT(fork.blocks(), ElementsAreArray(Ids({0, 2})));
  EXPECT_THAT(table.blocks(), ElementsAreArray(Ids({0, 1})));
  // The fork's reference on block 1 now belongs to the pending copy: the
  // count is unchanged until the copy is marked done.
  EXPECT_EQ(pool->ref_count(BlockId(1)), 2);
  EXPECT_EQ(pool->ref_count(BlockId(2)), 1);
  EXPECT_EQ(pool->stats().num_allocations, allocations + 1);
  EXPECT_TRUE(table.IsShared(1));  // Its bytes are still to be read.
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables, SourcesOf(*copies));

  copies->MarkDone();
  EXPECT_TRUE(copies->empty());
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
  EXPECT_FALSE(table.IsShared(1));
  EXPECT_TRUE(table.IsShared(0));  // Not a target: still shared.
  CheckRefCounts(*pool, tables);
}

// While a pending copy still reads a block, the block is not private to
// anyone, so a write into another holder's entry copies too.
TEST(PrepareWriteTest, TargetWhoseBlockAPendingCopyStillReadsIsCopied) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 1);  // {0}
  BlockTable fork = table.Fork();
  const WriteTarget fork_target[] = {{&fork, 0}};
  absl::StatusOr<PendingCopies> first =
      PrepareWrite(*pool, {.targets = fork_target});
  ASSERT_THAT(first, IsOk());
  ASSERT_EQ(first->size(), 1);
  const WriteTarget table_target[] = {{&table, 0}};
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.targets = table_target}), 1);
  absl::StatusOr<PendingCopies> second =
      PrepareWrite(*pool, {.targets = table_target});
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(second->ops(), ElementsAre(CopyOp{BlockId(0), BlockId(2)}));
  const BlockTable* tables[] = {&table, &fork};
  std::vector<BlockId> held = SourcesOf(*first);
  held.push_back(BlockId(0));
  CheckRefCounts(*pool, tables, held);
  first->MarkDone();
  second->MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(0)), 0);
  CheckRefCounts(*pool, tables);

  // Once the first copy is done, the remaining holder is private.
  BlockTable again = MakeTable(pool.get(), 1);
  BlockTable again_fork = again.Fork();
  const WriteTarget again_fork_target[] = {{&again_fork, 0}};
  absl::StatusOr<PendingCopies> done =
      PrepareWrite(*pool, {.targets = again_fork_target});
  ASSERT_THAT(done, IsOk());
  done->MarkDone();
  const WriteTarget again_target[] = {{&again, 0}};
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.targets = again_target}), 0);
}

TEST(PrepareWriteTest, RowsSharingABlockNothingElseHoldsMakeOneCopy) {
  auto pool = MakePool(8);
  BlockTable row0 = MakeTable(pool.get(), 2);  // {0, 1}
  BlockTable row1 = row0.Fork();
  const WriteTarget targets[] = {{&row0, 1}, {&row1, 1}};
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.targets = targets}), 1);
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  // The first writer gets the copy; the last keeps the block.
  EXPECT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(1), BlockId(2)}));
  EXPECT_THAT(row0.blocks(), ElementsAreArray(Ids({0, 2})));
  EXPECT_THAT(row1.blocks(), ElementsAreArray(Ids({0, 1})));
  EXPECT_EQ(pool->ref_count(BlockId(1)), 2);  // row1 + the pending copy.
  const BlockTable* tables[] = {&row0, &row1};
  CheckRefCounts(*pool, tables, SourcesOf(*copies));
  copies->MarkDone();
  EXPECT_FALSE(row0.IsShared(1));
  EXPECT_FALSE(row1.IsShared(1));
  CheckRefCounts(*pool, tables);

  // The same in the other order: row 0 is now the last writer and keeps it.
  const WriteTarget reversed[] = {{&row1, 0}, {&row0, 0}};
  absl::StatusOr<PendingCopies> other =
      PrepareWrite(*pool, {.targets = reversed});
  ASSERT_THAT(other, IsOk());
  ASSERT_EQ(other->size(), 1);
  EXPECT_EQ(other->ops()[0].src, BlockId(0));
  EXPECT_EQ(row1[0], other->ops()[0].dst);
  EXPECT_EQ(row0[0], BlockId(0));
}

TEST(PrepareWriteTest, RowsWithAnOutsideHolderEachGetACopy) {
  constexpr int kRows = 3;
  auto pool = MakePool(16);
  BlockTable prefix = MakeTable(pool.get(), 2);  // {0, 1}: the outside holder.
  std::vector<BlockTable> rows;
  std::vector<WriteTarget> targets;
  for (int k = 0; k < kRows; ++k) rows.push_back(prefix.Fork());
  for (BlockTable& row : rows) targets.push_back({&row, 1});
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.targets = targets}), kRows);
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  EXPECT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(1), BlockId(2)},
                                         CopyOp{BlockId(1), BlockId(3)},
                                         CopyOp{BlockId(1), BlockId(4)}));
  for (int k = 0; k < kRows; ++k) {
    EXPECT_EQ(rows[k][1], BlockId(2 + k));
    EXPECT_EQ(pool->ref_count(rows[k][1]), 1);
  }
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1 + kRows);  // Unchanged so far.
  copies->MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);  // The prefix alone.
  std::vector<const BlockTable*> tables = {&prefix};
  for (const BlockTable& row : rows) tables.push_back(&row);
  CheckRefCounts(*pool, tables);
}

TEST(PrepareWriteTest, GrowthAppendsFreshBlocks) {
  auto pool = MakePool(8);
  BlockTable a = MakeTable(pool.get(), 1);  // {0}
  BlockTable b(pool.get());
  const TableGrowth growth[] = {{&a, 2}, {&b, 1}, {&b, 0}};
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.growth = growth}), 3);
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.growth = growth});
  ASSERT_THAT(copies, IsOk());
  EXPECT_TRUE(copies->empty());  // Fresh blocks owe no copy.
  EXPECT_THAT(a.blocks(), ElementsAreArray(Ids({0, 1, 2})));
  EXPECT_THAT(b.blocks(), ElementsAreArray(Ids({3})));
  for (BlockId id : Ids({1, 2, 3})) EXPECT_EQ(pool->ref_count(id), 1);
  EXPECT_EQ(pool->stats().num_allocations, 4);
  EXPECT_EQ(pool->stats().peak_used_blocks, 4);
  const BlockTable* tables[] = {&a, &b};
  CheckRefCounts(*pool, tables);
}

// A decode step over a forked tail: the shared last block is copied and the
// next block is appended, in one transaction (copies first, then growth).
TEST(PrepareWriteTest, TargetAndGrowthOfOneTableTakeCopiesFirst) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 2);  // {0, 1}
  BlockTable fork = table.Fork();
  const WriteTarget targets[] = {{&fork, 1}};
  const TableGrowth growth[] = {{&fork, 1}};
  const WriteRequest request = {.targets = targets, .growth = growth};
  EXPECT_EQ(FreshBlocksNeeded(*pool, request), 2);
  absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, request);
  ASSERT_THAT(copies, IsOk());
  EXPECT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(1), BlockId(2)}));
  EXPECT_THAT(fork.blocks(), ElementsAreArray(Ids({0, 2, 3})));
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables, SourcesOf(*copies));
}

TEST(PrepareWriteTest, FreshBlocksComeFromTheReservationFirstThenThePool) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 2);  // {0, 1}
  BlockTable fork = table.Fork();
  Reservation r = *pool->Reserve(1);
  ASSERT_EQ(pool->num_unreserved_free_blocks(), 5);
  const WriteTarget targets[] = {{&fork, 0}, {&fork, 1}};
  const TableGrowth growth[] = {{&fork, 1}};
  const WriteRequest request = {
      .targets = targets, .growth = growth, .reservation = &r};
  EXPECT_EQ(FreshBlocksNeeded(*pool, request), 3);
  absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, request);
  ASSERT_THAT(copies, IsOk());
  EXPECT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(0), BlockId(2)},
                                         CopyOp{BlockId(1), BlockId(3)}));
  EXPECT_THAT(fork.blocks(), ElementsAreArray(Ids({2, 3, 4})));
  EXPECT_EQ(r.num_charged(), 1);
  EXPECT_EQ(r.num_reserved_free(), 0);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 3);  // Two from the pool.
  copies->MarkDone();
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables);
  // Block 2, the first fresh block, is the charged one: freeing it returns
  // it to the reservation.
  fork.DropFront(1);
  EXPECT_EQ(r.num_reserved_free(), 1);
  EXPECT_EQ(r.num_charged(), 0);
  EXPECT_EQ(pool->num_unreserved_free_blocks(), 3);
}

TEST(PrepareWriteTest, ReservationCoversAWriteThePoolAloneCannot) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 2);
  BlockTable fork = table.Fork();
  Reservation r = *pool->Reserve(2);
  ASSERT_EQ(pool->num_unreserved_free_blocks(), 0);
  const WriteTarget targets[] = {{&fork, 0}, {&fork, 1}};
  EXPECT_THAT(PrepareWrite(*pool, {.targets = targets}),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 2 blocks")));
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets, .reservation = &r});
  ASSERT_THAT(copies, IsOk());
  EXPECT_EQ(copies->size(), 2);
  EXPECT_EQ(r.num_charged(), 2);
  EXPECT_EQ(r.num_reserved_free(), 0);
}

TEST(PrepareWriteTest, FailureIsAllOrNothingAndStatesTheNumbers) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 2);  // {0, 1}; 2 free.
  BlockTable fork = table.Fork();
  const WriteTarget targets[] = {{&fork, 0}, {&fork, 1}};
  const TableGrowth growth[] = {{&table, 1}};
  const WriteRequest request = {.targets = targets, .growth = growth};
  EXPECT_EQ(FreshBlocksNeeded(*pool, request), 3);
  const Books before = Snapshot(*pool, {&table, &fork});
  EXPECT_THAT(PrepareWrite(*pool, request),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("need 3 blocks"),
                             HasSubstr("(2 copies, 1 appended)"),
                             HasSubstr("2 free"))));
  ExpectUnchangedButOneFailure(before, Snapshot(*pool, {&table, &fork}));
  const BlockTable* tables[] = {&table, &fork};
  CheckRefCounts(*pool, tables);
  // Without the growth it fits.
  EXPECT_THAT(PrepareWrite(*pool, {.targets = targets}), IsOk());
}

TEST(PrepareWriteTest, FailureWithAReservationLeavesItUnchanged) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 2);
  BlockTable fork = table.Fork();
  Reservation r = *pool->Reserve(1);  // 1 reserved + 1 unreserved free.
  const WriteTarget targets[] = {{&fork, 0}, {&fork, 1}};
  const TableGrowth growth[] = {{&fork, 1}};
  const Books before = Snapshot(*pool, {&table, &fork});
  EXPECT_THAT(
      PrepareWrite(*pool,
                   {.targets = targets, .growth = growth, .reservation = &r}),
      StatusIs(absl::StatusCode::kResourceExhausted,
               AllOf(HasSubstr("need 3 blocks"),
                     HasSubstr("2 free (1 reserved, 1 of them for this "
                               "writer)"))));
  ExpectUnchangedButOneFailure(before, Snapshot(*pool, {&table, &fork}));
  EXPECT_EQ(r.num_reserved_free(), 1);
  EXPECT_EQ(r.num_charged(), 0);
}

// FreshBlocksNeeded sees a snapshot; PrepareWrite decides again under its
// lock. A holder that goes in between makes the write cheaper, never wrong.
TEST(PrepareWriteTest, DecidesOnTheCountsAtTheTimeOfTheCall) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 1);
  BlockTable fork = table.Fork();
  const WriteTarget targets[] = {{&fork, 0}};
  EXPECT_EQ(FreshBlocksNeeded(*pool, {.targets = targets}), 1);
  table.Clear();  // The other holder goes.
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  EXPECT_TRUE(copies->empty());
  EXPECT_EQ(fork[0], BlockId(0));
}

// The issue: another sequence drops its reference between the decision and
// the copy. The pending copy keeps the source alive and out of the free list
// until MarkDone; nothing aborts and nothing leaks.
TEST(PrepareWriteTest, SourceOutlivesAHolderThatDropsItBeforeTheCopy) {
  auto pool = MakePool(8);
  auto holder = std::make_unique<BlockTable>(MakeTable(pool.get(), 3));
  BlockTable writer = holder->Fork();  // Shares {0, 1, 2}.
  const WriteTarget targets[] = {{&writer, 2}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  ASSERT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(2), BlockId(3)}));

  holder.reset();  // Between the decision and the copy.
  EXPECT_GE(pool->ref_count(BlockId(2)), 1);
  EXPECT_EQ(pool->ref_count(BlockId(2)), 1);  // The pending copy's.
  const BlockTable* tables[] = {&writer};
  CheckRefCounts(*pool, tables, SourcesOf(*copies));
  // No one else can be handed the source while the copy reads it.
  std::vector<BlockId> others;
  while (std::optional<BlockId> id = pool->TryAllocate()) {
    EXPECT_NE(*id, BlockId(2));
    others.push_back(*id);
  }
  EXPECT_EQ(others.size(), 4u);
  pool->ReleaseAll(others);

  for (const CopyOp& op : copies->ops()) CopyBlockBytes(op.src, op.dst);
  copies->MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(2)), 0);  // Its last reference went.
  CheckRefCounts(*pool, tables);
  EXPECT_EQ(pool->num_used_blocks(), 3);  // writer's {0, 1, 3}.
  writer.Clear();
  EXPECT_EQ(pool->num_free_blocks(), 8);
  EXPECT_EQ(pool->stats().num_shared_blocks, 0);
}

// Two rows share a block nothing else holds; the row that keeps it finishes
// (is destroyed) before the other row's copy has read it.
TEST(PrepareWriteTest, SourceOutlivesTheKeeperDroppingItBeforeTheCopy) {
  auto pool = MakePool(8);
  BlockTable row0 = MakeTable(pool.get(), 2);  // {0, 1}
  auto row1 = std::make_unique<BlockTable>(row0.Fork());
  const WriteTarget targets[] = {{&row0, 1}, {row1.get(), 1}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  ASSERT_THAT(copies->ops(), ElementsAre(CopyOp{BlockId(1), BlockId(2)}));
  row1.reset();
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
  const BlockTable* tables[] = {&row0};
  CheckRefCounts(*pool, tables, SourcesOf(*copies));
  copies->MarkDone();
  CheckRefCounts(*pool, tables);
  EXPECT_EQ(pool->num_free_blocks(), 6);
}

TEST(PrepareWriteTest, SharedPoolGivesTheSameResults) {
  auto pool = MakePool(8, PoolConcurrency::kShared);
  BlockTable row0 = MakeTable(pool.get(), 4);
  BlockTable row1 = row0.Fork();
  ASSERT_THAT(HeaderExample(*pool, row0, row1), IsOk());
  EXPECT_THAT(row0.blocks(), ElementsAreArray(Ids({0, 1, 2, 4})));
  const BlockTable* tables[] = {&row0, &row1};
  CheckRefCounts(*pool, tables);
}

// Param: seed. Random forks, outside holders and requests: FreshBlocksNeeded
// is exactly what PrepareWrite takes, and once the copies are done every
// target's block is private to it (the write is safe).
class PrepareWritePropertyTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(PrepareWritePropertyTest, TakesWhatFreshBlocksNeededSaysAndUnshares) {
  std::mt19937 rng(GetParam());
  auto pool = MakePool(128);
  for (int round = 0; round < 200; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    std::vector<BlockTable> tables;
    tables.push_back(
        MakeTable(pool.get(), 1 + static_cast<int32_t>(rng() % 4)));
    const int forks = static_cast<int>(rng() % 4);
    for (int k = 0; k < forks; ++k) {
      tables.push_back(tables[rng() % tables.size()].Fork());
      if (rng() % 2 == 0) {
        ASSERT_THAT(tables.back().Grow(static_cast<int32_t>(rng() % 2)),
                    IsOk());
      }
    }
    // Some tables are outside holders: they take part in no target.
    std::vector<WriteTarget> targets;
    std::vector<TableGrowth> growth;
    int64_t appended = 0;
    for (BlockTable& t : tables) {
      if (rng() % 3 == 0) continue;
      for (int32_t i = 0; i < t.num_blocks(); ++i) {
        if (rng() % 3 == 0) targets.push_back({&t, i});
      }
      if (rng() % 3 == 0) {
        growth.push_back({&t, static_cast<int32_t>(rng() % 3)});
        appended += growth.back().num_blocks;
      }
    }
    // Shuffle the target order (rng() % n, not std::shuffle: portable).
    for (size_t k = targets.size(); k > 1; --k) {
      std::swap(targets[k - 1], targets[rng() % k]);
    }
    const WriteRequest request = {.targets = targets, .growth = growth};
    std::vector<int32_t> rc_before;
    for (const WriteTarget& t : targets) {
      rc_before.push_back(pool->ref_count((*t.table)[t.block_index]));
    }
    const int64_t needed = FreshBlocksNeeded(*pool, request);
    const PoolStats before = pool->stats();
    absl::StatusOr<PendingCopies> copies = PrepareWrite(*pool, request);
    ASSERT_THAT(copies, IsOk());
    const PoolStats after = pool->stats();
    EXPECT_EQ(after.num_allocations - before.num_allocations, needed);
    EXPECT_EQ(after.num_used_blocks - before.num_used_blocks, needed);
    EXPECT_EQ(copies->size(), needed - appended);
    for (const CopyOp& op : copies->ops()) {
      EXPECT_EQ(pool->ref_count(op.dst), 1) << op;
      EXPECT_GE(pool->ref_count(op.src), 2) << op;  // A holder + the copy.
    }
    // Sources keep their counts until MarkDone.
    size_t next_op = 0;
    for (size_t k = 0; k < targets.size(); ++k) {
      const BlockId now = (*targets[k].table)[targets[k].block_index];
      if (next_op < copies->ops().size() && copies->ops()[next_op].dst == now) {
        EXPECT_EQ(pool->ref_count(copies->ops()[next_op].src), rc_before[k]);
        ++next_op;
      }
    }
    EXPECT_EQ(next_op, copies->ops().size()) << "ops not in target order";
    std::vector<const BlockTable*> all;
    for (const BlockTable& t : tables) all.push_back(&t);
    CheckRefCounts(*pool, all, SourcesOf(*copies));
    copies->MarkDone();
    for (const WriteTarget& t : targets) {
      EXPECT_EQ(pool->ref_count((*t.table)[t.block_index]), 1)
          << "target " << t.block_index << " still shared";
    }
    CheckRefCounts(*pool, all);
  }
  EXPECT_EQ(pool->num_free_blocks(), 128);
}

INSTANTIATE_TEST_SUITE_P(Seeds, PrepareWritePropertyTest,
                         ::testing::Range<uint32_t>(0, 16));

// --- PendingCopies -----------------------------------------------------------

// Returns the pending copy of a write into the last block of a new fork of
// `table` (which must be non-empty); the fork is appended to `forks`.
PendingCopies CopyOfForkedTail(
    BlockPool& pool, const BlockTable& table,
    std::vector<std::unique_ptr<BlockTable>>* forks) {
  forks->push_back(std::make_unique<BlockTable>(table.Fork()));
  const WriteTarget targets[] = {
      {forks->back().get(), forks->back()->num_blocks() - 1}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(pool, {.targets = targets});
  EXPECT_THAT(copies, IsOk());
  EXPECT_EQ(copies->size(), 1);
  return *std::move(copies);
}

TEST(PendingCopiesTest, DefaultIsEmptyAndMarkDoneIsANoOp) {
  PendingCopies copies;
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(copies.size(), 0);
  EXPECT_THAT(copies.ops(), IsEmpty());
  copies.MarkDone();
  EXPECT_TRUE(copies.empty());
}

TEST(PendingCopiesTest, MarkDoneReleasesEverySourceOnce) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 1);  // {0}
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies a = CopyOfForkedTail(*pool, table, &forks);
  PendingCopies b = CopyOfForkedTail(*pool, table, &forks);
  EXPECT_EQ(pool->ref_count(BlockId(0)), 3);
  a.MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
  a.MarkDone();  // Nothing left to release.
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
  b.MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(0)), 1);
}

TEST(PendingCopiesTest, DestructorReleasesTheSources) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 1);
  std::vector<std::unique_ptr<BlockTable>> forks;
  {
    PendingCopies copies = CopyOfForkedTail(*pool, table, &forks);
    EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
  }
  EXPECT_EQ(pool->ref_count(BlockId(0)), 1);
  std::vector<const BlockTable*> tables = {&table, forks[0].get()};
  CheckRefCounts(*pool, tables);
}

TEST(PendingCopiesTest, MoveConstructionTransfersTheReferences) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 1);
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies a = CopyOfForkedTail(*pool, table, &forks);
  const std::vector<CopyOp> ops(a.ops().begin(), a.ops().end());
  PendingCopies b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_THAT(b.ops(), ElementsAreArray(ops));
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);  // Moved, not released.
  a.MarkDone();                               // Owns nothing.
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
  b.MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(0)), 1);
}

TEST(PendingCopiesTest, MoveAssignmentReleasesTheOverwrittenCopies) {
  auto pool = MakePool(8);
  BlockTable first = MakeTable(pool.get(), 1);   // {0}
  BlockTable second = MakeTable(pool.get(), 1);  // {1}
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies a = CopyOfForkedTail(*pool, first, &forks);
  PendingCopies b = CopyOfForkedTail(*pool, second, &forks);
  a = std::move(b);
  EXPECT_EQ(pool->ref_count(BlockId(0)), 1);  // a's old copy was released.
  EXPECT_EQ(pool->ref_count(BlockId(1)), 2);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
  ASSERT_EQ(a.size(), 1);
  EXPECT_EQ(a.ops()[0].src, BlockId(1));
  PendingCopies& same = a;  // Through a reference: a deliberate self-move.
  a = std::move(same);
  EXPECT_EQ(a.size(), 1);
  EXPECT_EQ(pool->ref_count(BlockId(1)), 2);
  a = PendingCopies();
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
}

TEST(PendingCopiesTest, AdoptTakesOverTheSourceReference) {
  auto pool = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 2);  // {0, 1}
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies copies = CopyOfForkedTail(*pool, table, &forks);  // 1 -> 2.
  // A copy unshared by hand: the caller's reference on block 0 moves in.
  pool->AddRef(BlockId(0));
  const BlockId fresh = *pool->TryAllocate();
  copies.Adopt(pool.get(), CopyOp{BlockId(0), fresh});
  ASSERT_EQ(copies.size(), 2);
  EXPECT_EQ(copies.ops()[1], (CopyOp{BlockId(0), fresh}));
  // Block 0: the table, its fork and the adopted copy.
  EXPECT_EQ(pool->ref_count(BlockId(0)), 3);
  copies.MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);  // Released with the others.
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
  PendingCopies empty;
  pool->AddRef(BlockId(0));
  empty.Adopt(pool.get(), CopyOp{BlockId(0), fresh});  // Into an empty list.
  EXPECT_EQ(empty.size(), 1);
  empty.MarkDone();
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
}

TEST(PendingCopiesDeathTest, AdoptAcrossPoolsAborts) {
  auto pool = MakePool(8);
  auto other = MakePool(8);
  BlockTable table = MakeTable(pool.get(), 1);
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies copies = CopyOfForkedTail(*pool, table, &forks);
  const BlockId a = *other->TryAllocate();
  EXPECT_DEATH(copies.Adopt(other.get(), CopyOp{a, a}), "across pools");
}

TEST(PendingCopiesDeathTest, AdoptWithoutAReferenceToHandOverAborts) {
  // Every adopted copy takes over one reference of its source: a block
  // with one reference cannot be the source of two.
  auto pool = MakePool(8);
  const BlockId src = *pool->TryAllocate();
  const BlockId dst = *pool->TryAllocate();
  PendingCopies copies;
  copies.Adopt(pool.get(), CopyOp{src, dst});
  EXPECT_DEATH(copies.Adopt(pool.get(), CopyOp{src, dst}),
               "copy source 0 adopted without a reference to hand over");
}

TEST(PendingCopiesTest, AppendMovesCopiesAndTheirReferences) {
  auto pool = MakePool(16);
  BlockTable first = MakeTable(pool.get(), 1);   // {0}
  BlockTable second = MakeTable(pool.get(), 1);  // {1}
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies all;
  all.Append(PendingCopies());  // Empty into empty.
  EXPECT_TRUE(all.empty());
  all.Append(CopyOfForkedTail(*pool, first, &forks));  // Into empty.
  PendingCopies more = CopyOfForkedTail(*pool, second, &forks);
  all.Append(std::move(more));
  EXPECT_TRUE(more.empty());    // NOLINT(bugprone-use-after-move)
  all.Append(PendingCopies());  // Empty into non-empty.
  ASSERT_EQ(all.size(), 2);
  EXPECT_EQ(all.ops()[0].src, BlockId(0));
  EXPECT_EQ(all.ops()[1].src, BlockId(1));
  EXPECT_EQ(pool->ref_count(BlockId(0)), 2);
  EXPECT_EQ(pool->ref_count(BlockId(1)), 2);
  std::vector<const BlockTable*> tables = {&first, &second};
  for (const auto& f : forks) tables.push_back(f.get());
  CheckRefCounts(*pool, tables, SourcesOf(all));
  all.MarkDone();  // One release for both.
  EXPECT_EQ(pool->ref_count(BlockId(0)), 1);
  EXPECT_EQ(pool->ref_count(BlockId(1)), 1);
  CheckRefCounts(*pool, tables);
}

// --- Contract violations -----------------------------------------------------

TEST(PrepareWriteDeathTest, TargetOutOfRangeAborts) {
  auto pool = MakePool(4);
  BlockTable table = MakeTable(pool.get(), 1);
  const WriteTarget past[] = {{&table, 1}};
  const WriteTarget negative[] = {{&table, -1}};
  EXPECT_DEATH(PrepareWrite(*pool, {.targets = past}).IgnoreError(),
               "PrepareWrite target 1 of a 1-block table");
  EXPECT_DEATH(PrepareWrite(*pool, {.targets = negative}).IgnoreError(),
               "PrepareWrite target -1 of a 1-block table");
  EXPECT_DEATH(FreshBlocksNeeded(*pool, {.targets = past}),
               "PrepareWrite target 1 of a 1-block table");
}

TEST(PrepareWriteDeathTest, TableOnAnotherPoolAborts) {
  auto pool_a = MakePool(4);
  auto pool_b = MakePool(4);
  BlockTable table = MakeTable(pool_b.get(), 1);
  const WriteTarget targets[] = {{&table, 0}};
  const WriteTarget null_table[] = {{nullptr, 0}};
  const TableGrowth growth[] = {{&table, 1}};
  EXPECT_DEATH(PrepareWrite(*pool_a, {.targets = targets}).IgnoreError(),
               "PrepareWrite target on another pool");
  EXPECT_DEATH(PrepareWrite(*pool_a, {.targets = null_table}).IgnoreError(),
               "PrepareWrite target on another pool");
  EXPECT_DEATH(PrepareWrite(*pool_a, {.growth = growth}).IgnoreError(),
               "PrepareWrite growth on another pool");
  EXPECT_DEATH(FreshBlocksNeeded(*pool_a, {.growth = growth}),
               "PrepareWrite growth on another pool");
}

TEST(PrepareWriteDeathTest, NegativeGrowthAborts) {
  auto pool = MakePool(4);
  BlockTable table(pool.get());
  const TableGrowth growth[] = {{&table, -1}};
  EXPECT_DEATH(PrepareWrite(*pool, {.growth = growth}).IgnoreError(),
               "PrepareWrite growth of -1 blocks");
}

TEST(PrepareWriteDeathTest, ReservationOfAnotherPoolOrInvalidAborts) {
  auto pool_a = MakePool(4);
  auto pool_b = MakePool(4);
  Reservation other = *pool_b->Reserve(1);
  Reservation moved_from = *pool_a->Reserve(1);
  Reservation taker = std::move(moved_from);
  BlockTable table(pool_a.get());
  const TableGrowth growth[] = {{&table, 1}};
  EXPECT_DEATH(PrepareWrite(*pool_a, {.growth = growth, .reservation = &other})
                   .IgnoreError(),
               "PrepareWrite with a reservation of another pool");
  EXPECT_DEATH(
      PrepareWrite(*pool_a, {.growth = growth, .reservation = &moved_from})
          .IgnoreError(),
      "reservation");
}

TEST(PendingCopiesDeathTest, AppendAcrossPoolsAborts) {
  auto pool_a = MakePool(4);
  auto pool_b = MakePool(4);
  BlockTable table_a = MakeTable(pool_a.get(), 1);
  BlockTable table_b = MakeTable(pool_b.get(), 1);
  std::vector<std::unique_ptr<BlockTable>> forks;
  PendingCopies a = CopyOfForkedTail(*pool_a, table_a, &forks);
  PendingCopies b = CopyOfForkedTail(*pool_b, table_b, &forks);
  EXPECT_DEATH(a.Append(std::move(b)), "PendingCopies::Append across pools");
}

}  // namespace
}  // namespace pagedkv
