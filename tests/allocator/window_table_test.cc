#include "allocator/window_table.h"

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

std::unique_ptr<BlockPool> MakePool(int32_t n) {
  return *BlockPool::Create({.num_blocks = n});
}

TEST(WindowTableTest, HeaderExampleReleasesTheOldestEntryIntoAHole) {
  std::unique_ptr<BlockPool> pool_owner = MakePool(4);
  BlockPool* pool = pool_owner.get();
  WindowTable table(pool);
  table.Append(*pool->TryAllocate());
  table.Append(*pool->TryAllocate());
  EXPECT_EQ(table.ReleaseBefore(1), 1);
  EXPECT_EQ(table.num_entries(), 2);
  EXPECT_EQ(table.num_live(), 1);
  EXPECT_FALSE(table.entries()[0].is_valid());
  EXPECT_EQ(pool->num_free_blocks(), 3);
  table.CheckInvariants();
}

TEST(WindowTableTest, FirstNeededBlockFollowsTheNextTokensWindow) {
  // Next token 10 with window 4 reads 7..10: block 1 (tokens 4..7) stays.
  EXPECT_EQ(WindowFirstNeededBlock(10, 4, 4), 1);
  // Next token 12 reads 9..12: tokens 4..7 are out, block 2 first.
  EXPECT_EQ(WindowFirstNeededBlock(12, 4, 4), 2);
  EXPECT_EQ(WindowFirstNeededBlock(3, 4, 4), 0);
  EXPECT_EQ(WindowFirstNeededBlock(0, 1, 16), 0);
  EXPECT_EQ(WindowBlockBound(1024, 16), 65);
  EXPECT_EQ(WindowBlockBound(1, 16), 2);
}

TEST(WindowTableTest, AHitsFirstHeldBlockIsTheWindowsClampedToFirstAndHit) {
  // A hit of 5 blocks of 4 tokens: a full group holds all of it, a window
  // of 8 tokens from block 3 (the next token, 20, reads 13..20).
  EXPECT_EQ(HitFirstHeldBlock(5, /*window=*/0, /*first=*/0, 4), 0);
  EXPECT_EQ(HitFirstHeldBlock(5, 8, 0, 4), 3);
  // Not below the first block wanted (a swapped-in table's holes).
  EXPECT_EQ(HitFirstHeldBlock(5, 8, 4, 4), 4);
  EXPECT_EQ(HitFirstHeldBlock(5, 0, 2, 4), 2);
  // Nothing held when that is past the hit.
  EXPECT_EQ(HitFirstHeldBlock(5, 8, 7, 4), 5);
  EXPECT_EQ(HitFirstHeldBlock(0, 8, 0, 4), 0);
}

TEST(WindowTableTest, ForkSharesLiveEntriesAndKeepsHoles) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  WindowTable a(pool.get());
  for (int i = 0; i < 3; ++i) a.Append(*pool->TryAllocate());
  a.ReleaseBefore(1);
  WindowTable b = a.Fork();
  EXPECT_EQ(b.num_entries(), 3);
  EXPECT_EQ(b.num_live(), 2);
  EXPECT_EQ(pool->ref_count(a.entries()[1]), 2);
  const WindowTable* tables[] = {&a, &b};
  CheckWindowRefCounts(*pool, tables);
  a.Clear();
  b.DropBack(1);
  EXPECT_EQ(pool->num_free_blocks(), 7);
  b.Clear();
  EXPECT_EQ(pool->num_free_blocks(), 8);
}

TEST(WindowTableTest, DetachBeforeHandsTheReferencesToTheCaller) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  WindowTable a(pool.get());
  std::vector<BlockId> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(*pool->TryAllocate());
    a.Append(ids.back());
  }
  a.ReleaseBefore(1);
  const uint64_t generation = a.generation();
  std::vector<BlockId> out = {BlockId(7)};  // Appended to, not cleared.
  EXPECT_EQ(a.DetachBefore(3, &out), 2);
  EXPECT_EQ(out, (std::vector<BlockId>{BlockId(7), ids[1], ids[2]}));
  EXPECT_GT(a.generation(), generation);
  EXPECT_EQ(a.DetachBefore(3, &out), 0);  // Nothing new out of the window.
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(a.num_entries(), 5);
  EXPECT_EQ(a.num_live(), 2);
  EXPECT_EQ(a.first_unpassed(), 3);
  a.CheckInvariants();
  // The two detached blocks are still held, by the caller now.
  const WindowTable* tables[] = {&a};
  CheckWindowRefCounts(*pool, tables, absl::MakeConstSpan(out).subspan(1));
  pool->ReleaseAll(absl::MakeConstSpan(out).subspan(1));
  EXPECT_EQ(pool->num_free_blocks(), 6);
  CheckWindowRefCounts(*pool, tables);
}

TEST(WindowTableTest, MovedFromTableIsEmptyAndUsable) {
  std::unique_ptr<BlockPool> pool = MakePool(4);
  WindowTable a(pool.get());
  a.Append(*pool->TryAllocate());
  WindowTable b(std::move(a));
  EXPECT_EQ(a.num_entries(), 0);  // NOLINT(bugprone-use-after-move)
  a.AppendHole();
  EXPECT_EQ(b.num_live(), 1);
  a = std::move(b);
  EXPECT_EQ(a.num_live(), 1);
  EXPECT_EQ(pool->num_free_blocks(), 3);
}

TEST(WindowTableDeathTest, ReplaceOfAHoleAborts) {
  std::unique_ptr<BlockPool> pool = MakePool(4);
  WindowTable a(pool.get());
  a.AppendHole();
  EXPECT_DEATH(a.Replace(0, BlockId(1)), "not live");
}

// Random appends, holes, releases, drops, forks and clears against a model
// (a vector of ids per table, -1 for holes); refcounts checked every step.
TEST(WindowTablePropertyTest, MatchesAReferenceModel) {
  constexpr int32_t kBlocks = 64;
  std::unique_ptr<BlockPool> pool = MakePool(kBlocks);
  std::mt19937 rng(15);
  std::vector<WindowTable> tables;
  std::vector<std::vector<int32_t>> model;
  for (int step = 0; step < 20000; ++step) {
    if (tables.empty() || rng() % 16 == 0) {
      if (tables.size() < 6) {
        tables.emplace_back(pool.get());
        model.emplace_back();
        continue;
      }
    }
    const size_t t = rng() % tables.size();
    WindowTable& table = tables[t];
    std::vector<int32_t>& m = model[t];
    switch (rng() % 7) {
      case 0:
      case 1: {  // Append a fresh block.
        std::optional<BlockId> id = pool->TryAllocate();
        if (!id.has_value()) break;
        table.Append(*id);
        m.push_back(id->value());
        break;
      }
      case 2:
        table.AppendHole();
        m.push_back(-1);
        break;
      case 3: {  // Release the window's tail.
        const int64_t idx = rng() % (m.size() + 2);
        int32_t expect = 0;
        for (size_t i = 0; i < m.size() && static_cast<int64_t>(i) < idx;
             ++i) {
          if (m[i] >= 0) ++expect;
          m[i] = -1;
        }
        EXPECT_EQ(table.ReleaseBefore(idx), expect);
        break;
      }
      case 4: {
        const int32_t n = m.empty() ? 0 : rng() % (m.size() + 1);
        table.DropBack(n);
        m.resize(m.size() - n);
        break;
      }
      case 5:
        if (tables.size() < 6) {
          WindowTable copy = table.Fork();
          std::vector<int32_t> mc = m;
          tables.push_back(std::move(copy));
          model.push_back(std::move(mc));
          }
        break;
      case 6:
        if (rng() % 4 == 0) {
          table.Clear();
          m.clear();
        }
        break;
    }
    // Compare with the model.
    for (size_t i = 0; i < tables.size(); ++i) {
      ASSERT_EQ(tables[i].num_entries(), static_cast<int32_t>(model[i].size()));
      int32_t live = 0;
      for (size_t j = 0; j < model[i].size(); ++j) {
        ASSERT_EQ(tables[i].entries()[j].value(), model[i][j]) << step;
        if (model[i][j] >= 0) ++live;
      }
      ASSERT_EQ(tables[i].num_live(), live);
    }
    std::vector<const WindowTable*> ptrs;
    for (const WindowTable& w : tables) ptrs.push_back(&w);
    CheckWindowRefCounts(*pool, ptrs);
  }
  tables.clear();
  EXPECT_EQ(pool->num_free_blocks(), kBlocks);  // Every block returned.
}

}  // namespace
}  // namespace pagedkv
