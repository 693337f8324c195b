#include "cache/serving/pending_remote_stores.h"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/prefix/block_hash.h"
#include "cache/remote/remote_chain.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

constexpr int32_t kBt = 2;

// Three chained blocks of 2 tokens: hashes 11, 12, 13 (any values do: the
// list only carries them), parent 10.
struct Chain {
  std::vector<BlockHash> hashes = {11, 12, 13};
  std::vector<BlockExtraKeys> keys = std::vector<BlockExtraKeys>(3);
  std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  RemoteChain chain() const {
    return RemoteChain{
        .parent = 10, .hashes = hashes, .keys = keys, .tokens = tokens};
  }
  // Its first block alone.
  RemoteChain first() const {
    return RemoteChain{.parent = 10,
                       .hashes = absl::MakeConstSpan(hashes).subspan(0, 1),
                       .keys = absl::MakeConstSpan(keys).subspan(0, 1),
                       .tokens = absl::MakeConstSpan(tokens).subspan(0, kBt)};
  }
};

TEST(PendingRemoteStoresTest, PinsEachBlockUntilMarkDone) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  std::vector<BlockId> held;
  for (int i = 0; i < 3; ++i) held.push_back(*pool->TryAllocate());
  const Chain c;
  PendingRemoteStores stores;
  stores.Add(pool.get(), held, c.chain());
  ASSERT_EQ(stores.size(), 3);
  pool->ReleaseAll(held);  // The sequence goes; the pins keep the blocks.
  EXPECT_EQ(pool->num_free_blocks(), 1);
  for (BlockId id : held) EXPECT_EQ(pool->ref_count(id), 1);
  stores.MarkDone();
  EXPECT_TRUE(stores.empty());
  EXPECT_EQ(pool->num_free_blocks(), 4);
  pool->CheckInvariants();
}

TEST(PendingRemoteStoresTest, EachEntryIsAOneBlockChainWithItsParent) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  std::vector<BlockId> held;
  for (int i = 0; i < 3; ++i) held.push_back(*pool->TryAllocate());
  const Chain c;
  PendingRemoteStores stores;
  stores.Add(pool.get(), absl::MakeConstSpan(held).subspan(0, 1), c.first());
  stores.Add(pool.get(), absl::MakeConstSpan(held).subspan(1),
             RemoteChain{.parent = 11,
                         .hashes = absl::MakeConstSpan(c.hashes).subspan(1),
                         .keys = absl::MakeConstSpan(c.keys).subspan(1),
                         .tokens = absl::MakeConstSpan(c.tokens).subspan(2)});
  ASSERT_EQ(stores.size(), 3);
  for (int32_t i = 0; i < 3; ++i) {
    const RemoteChain e = stores.chain(i);
    EXPECT_EQ(stores.block(i), held[i]);
    EXPECT_EQ(e.parent, i == 0 ? BlockHash{10} : c.hashes[i - 1]);
    ASSERT_EQ(e.hashes.size(), 1u);
    EXPECT_EQ(e.hashes[0], c.hashes[i]);
    ASSERT_EQ(e.tokens.size(), static_cast<size_t>(kBt));
    EXPECT_EQ(e.tokens[0], c.tokens[i * kBt]);
    EXPECT_EQ(e.tokens[1], c.tokens[i * kBt + 1]);
  }
  pool->ReleaseAll(held);
}

TEST(PendingRemoteStoresTest, MovingHandsOverThePinsAndDestroyingReleases) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  std::vector<BlockId> held;
  for (int i = 0; i < 3; ++i) held.push_back(*pool->TryAllocate());
  const Chain c;
  PendingRemoteStores a;
  a.Add(pool.get(), held, c.chain());
  pool->ReleaseAll(held);
  {
    PendingRemoteStores b = std::move(a);
    EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): specified.
    EXPECT_EQ(b.size(), 3);
    a.MarkDone();  // Nothing to release.
    EXPECT_EQ(pool->num_free_blocks(), 1);
  }
  EXPECT_EQ(pool->num_free_blocks(), 4);
  pool->CheckInvariants();
}

TEST(PendingRemoteStoresDeathTest, AnEntryPastTheEndAborts) {
  PendingRemoteStores stores;
  EXPECT_DEATH(stores.block(0), "store entry 0 of 0");
  EXPECT_DEATH(stores.chain(-1), "store entry -1 of 0");
}

TEST(PendingRemoteStoresDeathTest, EntriesFromTwoPoolsAbort) {
  std::unique_ptr<BlockPool> p1 = *BlockPool::Create({.num_blocks = 4});
  std::unique_ptr<BlockPool> p2 = *BlockPool::Create({.num_blocks = 4});
  const BlockId a = *p1->TryAllocate();
  const BlockId b = *p2->TryAllocate();
  const Chain c;
  const RemoteChain one = c.first();
  PendingRemoteStores stores;
  stores.Add(p1.get(), absl::MakeConstSpan(&a, 1), one);
  EXPECT_DEATH(stores.Add(p2.get(), absl::MakeConstSpan(&b, 1), one),
               "two pools");
  stores.MarkDone();
  p1->Release(a);
  p2->Release(b);
}

TEST(PendingRemoteStoresDeathTest, AChainOfAnotherLengthAborts) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  const BlockId a = *pool->TryAllocate();
  const Chain c;  // Three blocks.
  PendingRemoteStores stores;
  EXPECT_DEATH(stores.Add(pool.get(), absl::MakeConstSpan(&a, 1), c.chain()),
               "store list of 1 blocks from a chain of 3 hashes");
  pool->Release(a);
}

TEST(PendingRemoteStoresTest, ListsSaysWhichBlocksAreOnTheList) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  const BlockId a = *pool->TryAllocate();
  const BlockId b = *pool->TryAllocate();
  const Chain c;
  PendingRemoteStores stores;
  stores.Add(pool.get(), absl::MakeConstSpan(&a, 1), c.first());
  EXPECT_TRUE(stores.Lists(a));
  EXPECT_FALSE(stores.Lists(b));
  PendingRemoteStores moved = std::move(stores);
  EXPECT_TRUE(moved.Lists(a));
  EXPECT_FALSE(stores.Lists(a));  // NOLINT(bugprone-use-after-move): empty.
  moved.MarkDone();
  EXPECT_FALSE(moved.Lists(a));
  pool->Release(a);
  pool->Release(b);
}

TEST(PendingRemoteStoresDeathTest, ListingABlockTwiceAborts) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  const BlockId a = *pool->TryAllocate();
  const Chain c;
  const RemoteChain one = c.first();
  PendingRemoteStores stores;
  stores.Add(pool.get(), absl::MakeConstSpan(&a, 1), one);
  EXPECT_DEATH(stores.Add(pool.get(), absl::MakeConstSpan(&a, 1), one),
               "block 0 listed twice");
  stores.MarkDone();
  pool->Release(a);
}

}  // namespace
}  // namespace pagedkv
