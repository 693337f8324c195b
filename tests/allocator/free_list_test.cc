#include "allocator/free_list.h"

#include <algorithm>
#include <cstdint>
#include <list>
#include <random>
#include <vector>

#include "allocator/block_id.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

std::vector<BlockId> Drain(FreeList& list) {
  std::vector<BlockId> out;
  while (!list.empty()) out.push_back(list.PopFront());
  return out;
}

TEST(FreeListTest, HeaderExampleWorks) {
  FreeList list(/*capacity=*/4);  // Empty; ids 0..3 may be pushed.
  list.PushBack(BlockId(0));
  list.PushFront(BlockId(2));  // Order: 2, 0.
  list.Remove(BlockId(0));     // O(1), from anywhere in the list.
  BlockId id = list.PopFront();
  EXPECT_EQ(id, BlockId(2));
  EXPECT_TRUE(list.empty());
  list.CheckInvariants();
}

TEST(FreeListTest, ShrinkDropsIdsNotInTheList) {
  FreeList list(4);
  list.PushBack(BlockId(0));
  list.PushBack(BlockId(1));
  list.Shrink(2);
  EXPECT_EQ(list.capacity(), 2);
  EXPECT_EQ(list.size(), 2);
  list.CheckInvariants();
  list.Grow(3);
  list.PushFront(BlockId(2));
  EXPECT_EQ(list.PopFront(), BlockId(2));
  list.CheckInvariants();
}

TEST(FreeListDeathTest, ShrinkOverAListedIdAborts) {
  FreeList list(3);
  list.PushBack(BlockId(2));
  EXPECT_DEATH(list.Shrink(2), "Shrink drops block 2, still listed");
  EXPECT_DEATH(list.Shrink(4), "cannot shrink from 3 to 4");
}

TEST(FreeListTest, StartsEmptyWithCapacity) {
  FreeList list(3);
  EXPECT_EQ(list.capacity(), 3);
  EXPECT_EQ(list.size(), 0);
  EXPECT_TRUE(list.empty());
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(list.Contains(BlockId(i)));
  list.CheckInvariants();
}

TEST(FreeListTest, PushFrontPopFrontIsLifo) {
  FreeList list(4);
  for (int i = 0; i < 4; ++i) list.PushFront(BlockId(i));
  EXPECT_EQ(Drain(list), (std::vector<BlockId>{BlockId(3), BlockId(2),
                                               BlockId(1), BlockId(0)}));
}

TEST(FreeListTest, PushBackKeepsFifoOrderAndPopBackTakesTheOldest) {
  FreeList list(4);
  for (int i = 0; i < 4; ++i) list.PushBack(BlockId(i));
  EXPECT_EQ(list.Front(), BlockId(0));
  EXPECT_EQ(list.Back(), BlockId(3));
  EXPECT_EQ(list.PopBack(), BlockId(3));
  EXPECT_EQ(Drain(list),
            (std::vector<BlockId>{BlockId(0), BlockId(1), BlockId(2)}));
}

TEST(FreeListTest, RemoveFromHeadMiddleAndTail) {
  FreeList list(5);
  for (int i = 0; i < 5; ++i) list.PushBack(BlockId(i));
  list.Remove(BlockId(0));
  list.Remove(BlockId(2));
  list.Remove(BlockId(4));
  list.CheckInvariants();
  EXPECT_FALSE(list.Contains(BlockId(2)));
  EXPECT_TRUE(list.Contains(BlockId(3)));
  EXPECT_EQ(Drain(list), (std::vector<BlockId>{BlockId(1), BlockId(3)}));
}

TEST(FreeListTest, GrowAddsAbsentIdsAndKeepsOrder) {
  FreeList list(2);
  list.PushBack(BlockId(1));
  list.PushBack(BlockId(0));
  list.Grow(4);
  EXPECT_EQ(list.capacity(), 4);
  EXPECT_FALSE(list.Contains(BlockId(3)));
  list.PushBack(BlockId(3));
  list.CheckInvariants();
  EXPECT_EQ(Drain(list),
            (std::vector<BlockId>{BlockId(1), BlockId(0), BlockId(3)}));
}

// Random pushes, pops and removes against std::list.
class FreeListRandomOpsTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(FreeListRandomOpsTest, MatchesStdList) {
  std::mt19937 rng(GetParam());
  constexpr int32_t kCapacity = 12;
  FreeList list(kCapacity);
  std::list<int32_t> model;
  for (int step = 0; step < 2000; ++step) {
    const int32_t id = static_cast<int32_t>(rng() % kCapacity);
    const bool in = list.Contains(BlockId(id));
    switch (rng() % 7) {
      case 0:
        if (!in) {
          list.PushFront(BlockId(id));
          model.push_front(id);
        }
        break;
      case 1:
        if (!in) {
          list.PushBack(BlockId(id));
          model.push_back(id);
        }
        break;
      case 2:
        if (!model.empty()) {
          ASSERT_EQ(list.PopFront().value(), model.front());
          model.pop_front();
        }
        break;
      case 3:
        if (!model.empty()) {
          ASSERT_EQ(list.PopBack().value(), model.back());
          model.pop_back();
        }
        break;
      case 4:
        if (in) {
          list.Remove(BlockId(id));
          model.remove(id);
        }
        break;
      case 5: {
        // A batch of 0 .. size() ids, as that many PopFront calls.
        const int32_t n = static_cast<int32_t>(rng() % (model.size() + 1));
        std::vector<BlockId> out(n + 1, BlockId(-7));  // One guard entry.
        list.PopFrontN(n, out.data());
        for (int32_t k = 0; k < n; ++k) {
          ASSERT_EQ(out[k].value(), model.front()) << "step " << step;
          model.pop_front();
        }
        ASSERT_EQ(out[n], BlockId(-7)) << "wrote past n";
        break;
      }
      case 6: {
        // A batch of absent ids back, as that many PushFront calls.
        std::vector<BlockId> batch;
        for (int32_t i = 0; i < kCapacity; ++i) {
          if (!list.Contains(BlockId(i)) && rng() % 2 == 0) {
            batch.push_back(BlockId(i));
          }
        }
        std::shuffle(batch.begin(), batch.end(), rng);
        list.PushFrontN(batch.data(), static_cast<int32_t>(batch.size()));
        for (BlockId b : batch) model.push_front(b.value());
        break;
      }
    }
    list.CheckInvariants();
    ASSERT_EQ(list.size(), static_cast<int32_t>(model.size())) << step;
    if (!model.empty()) {
      ASSERT_EQ(list.Front().value(), model.front());
      ASSERT_EQ(list.Back().value(), model.back());
    }
    if (step % 50 == 0) {  // The whole order, O(size).
      const std::vector<BlockId> order = list.BackToFront();
      const auto same = [](BlockId b, int32_t i) { return b.value() == i; };
      ASSERT_TRUE(std::equal(order.begin(), order.end(), model.rbegin(),
                             model.rend(), same))
          << step;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, FreeListRandomOpsTest,
                         ::testing::Range<uint32_t>(0, 32));

TEST(FreeListTest, PopFrontNTakesTheFrontInOrderAndKeepsTheRestLinked) {
  FreeList list(5);
  for (int32_t i : {3, 1, 4, 0, 2}) list.PushBack(BlockId(i));
  BlockId out[3];
  list.PopFrontN(0, out);
  EXPECT_EQ(list.size(), 5);
  list.PopFrontN(3, out);
  EXPECT_EQ(out[0], BlockId(3));
  EXPECT_EQ(out[1], BlockId(1));
  EXPECT_EQ(out[2], BlockId(4));
  list.CheckInvariants();
  EXPECT_FALSE(list.Contains(BlockId(1)));
  EXPECT_EQ(list.Front(), BlockId(0));
  list.PushFront(BlockId(4));  // Taken ids may come back.
  list.PopFrontN(3, out);      // The whole list.
  EXPECT_EQ(out[0], BlockId(4));
  EXPECT_EQ(out[2], BlockId(2));
  EXPECT_TRUE(list.empty());
  list.CheckInvariants();
  list.PushBack(BlockId(1));  // Head and tail were reset.
  EXPECT_EQ(list.Back(), BlockId(1));
  list.CheckInvariants();
}

TEST(FreeListDeathTest, PopFrontNPastTheSizeAborts) {
  FreeList list(3);
  list.PushFront(BlockId(1));
  BlockId out[2];
  EXPECT_DEATH(list.PopFrontN(2, out), "PopFrontN\\(2\\) of a free list of 1");
  EXPECT_DEATH(list.PopFrontN(-1, out), "PopFrontN");
}

TEST(FreeListTest, PushFrontNPutsTheLastIdFirst) {
  FreeList list(6);
  list.PushFront(BlockId(5));
  list.PushFrontN(nullptr, 0);  // Nothing.
  EXPECT_EQ(list.size(), 1);
  const BlockId batch[] = {BlockId(2), BlockId(0), BlockId(4)};
  list.PushFrontN(batch, 3);
  list.CheckInvariants();
  BlockId out[4];
  list.PopFrontN(4, out);
  EXPECT_EQ(out[0], BlockId(4));
  EXPECT_EQ(out[1], BlockId(0));
  EXPECT_EQ(out[2], BlockId(2));
  EXPECT_EQ(out[3], BlockId(5));
  list.PushFrontN(batch, 3);  // Onto an empty list: the tail is set.
  EXPECT_EQ(list.Back(), BlockId(2));
  list.CheckInvariants();
}

TEST(FreeListDeathTest, PushFrontNOfAListedOrOutOfRangeIdAborts) {
  FreeList list(3);
  list.PushFront(BlockId(1));
  const BlockId listed[] = {BlockId(0), BlockId(1)};
  EXPECT_DEATH(list.PushFrontN(listed, 2),
               "PushFrontN of block 1 .*already in the free list");
  const BlockId twice[] = {BlockId(2), BlockId(2)};
  EXPECT_DEATH(list.PushFrontN(twice, 2), "PushFrontN of block 2");
  const BlockId far[] = {BlockId(3)};
  EXPECT_DEATH(list.PushFrontN(far, 1), "PushFrontN of block 3");
}

TEST(FreeListDeathTest, DoublePushAborts) {
  FreeList list(2);
  list.PushFront(BlockId(1));
  EXPECT_DEATH(list.PushFront(BlockId(1)), "already in the free list");
  EXPECT_DEATH(list.PushBack(BlockId(1)), "already in the free list");
}

TEST(FreeListDeathTest, OutOfRangeIdAborts) {
  FreeList list(2);
  EXPECT_DEATH(list.PushFront(BlockId(2)), "block 2 out of range");
  EXPECT_DEATH(list.Contains(BlockId(-1)), "block -1 out of range");
}

TEST(FreeListDeathTest, PopOfEmptyListAborts) {
  FreeList list(2);
  EXPECT_DEATH(list.PopFront(), "PopFront of empty free list");
  EXPECT_DEATH(list.PopBack(), "PopBack of empty free list");
}

TEST(FreeListDeathTest, RemoveOfAbsentIdAborts) {
  FreeList list(2);
  EXPECT_DEATH(list.Remove(BlockId(0)), "not in the free list");
}

TEST(FreeListDeathTest, ShrinkAborts) {
  FreeList list(4);
  EXPECT_DEATH(list.Grow(2), "cannot shrink from 4 to 2");
}

}  // namespace
}  // namespace pagedkv
