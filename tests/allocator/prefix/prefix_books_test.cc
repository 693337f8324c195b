// The prefix cache's books as BlockPool exposes them: publish, verified
// lookup and pin, the LRU of cached free blocks, eviction (leaves first, or
// with the descendants), dedup, reservations, events.
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kBt = 2;

// A chain of blocks with its keys, as the manager builds one.
struct Chain {
  std::vector<int32_t> tokens;
  std::vector<BlockHash> hashes;
  std::vector<BlockExtraKeys> keys;

  Chain(std::vector<int32_t> t, const BlockHasher& hasher = Xxh3BlockHasher(),
        BlockExtraKeys k = {})
      : tokens(std::move(t)) {
    BlockHash parent = kRootBlockHash;
    for (size_t i = 0; i + kBt <= tokens.size(); i += kBt) {
      parent = hasher.Hash(parent, absl::MakeConstSpan(&tokens[i], kBt), k);
      hashes.push_back(parent);
      keys.push_back(k);
    }
  }
  BlockPool::PrefixChain view(size_t first = 0, size_t n = ~size_t{0}) const {
    n = std::min(n, hashes.size() - first);
    return {absl::MakeConstSpan(hashes).subspan(first, n),
            absl::MakeConstSpan(tokens).subspan(first * kBt, n * kBt),
            absl::MakeConstSpan(keys).subspan(first, n)};
  }
};

// Returns the same key for every block: every lookup finds a candidate,
// and only the stored tokens tell blocks apart.
class ConstantHasher final : public BlockHasher {
 public:
  BlockHash Hash(BlockHash, absl::Span<const int32_t>,
                 const BlockExtraKeys&) const override {
    return 42;
  }
  const char* name() const override { return "constant"; }
};

std::unique_ptr<BlockPool> MakePool(int32_t blocks, int32_t events = 0) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = blocks});
  EXPECT_THAT(pool->EnablePrefixCache(
                  {.block_tokens = kBt, .max_pending_events = events}),
              IsOk());
  return pool;
}

// Publishes chain c into freshly allocated blocks; returns them (held).
std::vector<BlockId> PublishNew(BlockPool& pool, const Chain& c) {
  std::vector<BlockId> blocks = *pool.Allocate(c.hashes.size());
  std::vector<BlockPool::PrefixSwitch> switches;
  EXPECT_EQ(pool.Publish(blocks, BlockId(), c.view(), &switches),
            static_cast<int32_t>(blocks.size()));
  EXPECT_TRUE(switches.empty());
  pool.CheckInvariants();
  return blocks;
}

TEST(PrefixBooksTest, EnableIsIdempotentAndChecksOptions) {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4});
  EXPECT_THAT(pool->EnablePrefixCache({.block_tokens = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(pool->prefix_cache_enabled());
  EXPECT_THAT(pool->EnablePrefixCache({.block_tokens = 16}), IsOk());
  EXPECT_THAT(pool->EnablePrefixCache({.block_tokens = 16}), IsOk());
  EXPECT_THAT(pool->EnablePrefixCache({.block_tokens = 8}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // Blocks that mean something else under the same keys.
  EXPECT_THAT(
      pool->EnablePrefixCache({.block_tokens = 16, .content = "model B"}),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("blocks of \"\"; asked for 16, 0 and \"model B\"")));
  EXPECT_THAT(pool->Shrink(2), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// A write into a published block copies it even when the writer is its
// only holder: the entry's bytes stay its tokens', and the decision is made
// under the lock a pin takes (no pin can land between decision and write).
TEST(PrefixBooksTest, AWriteIntoACachedBlockCopiesItEvenWithOneHolder) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  const Chain c({1, 2, 3, 4});
  const std::vector<BlockId> blocks = PublishNew(*pool, c);
  BlockTable table(pool.get());
  table.AppendAll(blocks);  // Takes over the references.
  ASSERT_EQ(pool->ref_count(blocks[1]), 1);
  const WriteTarget targets[] = {{&table, 1}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  ASSERT_EQ(copies->ops().size(), 1u);
  EXPECT_EQ(copies->ops()[0].src, blocks[1]);
  EXPECT_EQ(copies->ops()[0].dst, table[1]);
  EXPECT_FALSE(pool->is_cached(table[1]));
  copies->MarkDone();
  // The entry's block is free and cached: the chain still hits.
  EXPECT_EQ(pool->ref_count(blocks[1]), 0);
  EXPECT_TRUE(pool->is_cached(blocks[1]));
  EXPECT_EQ(pool->MatchPrefix(c.view()).blocks, 2);
  // The private copy, not cached, is written in place.
  copies = PrepareWrite(*pool, {.targets = targets});
  ASSERT_THAT(copies, IsOk());
  EXPECT_TRUE(copies->ops().empty());
  pool->CheckInvariants();
  table.Clear();
}

// MatchPrefix stops where reviving one more free cached block would need
// a reserved one; CachedPrefixLength counts the whole verified chain (a
// window anchor pins only its window, so its head needs no free block).
TEST(PrefixBooksTest, CachedPrefixLengthIgnoresTheRevivalBudget) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  const Chain c({1, 2, 3, 4, 5, 6});
  pool->ReleaseAll(PublishNew(*pool, c));  // 3 cached free blocks.
  absl::StatusOr<Reservation> r = pool->Reserve(6);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(pool->MatchPrefix(c.view()).blocks, 2);  // 2 unreserved free.
  EXPECT_EQ(pool->CachedPrefixLength(c.view()), 3);
  EXPECT_EQ(pool->CachedPrefixLength(Chain({1, 2, 9, 9, 5, 6}).view()), 1);
  EXPECT_EQ(pool->CachedPrefixLength(Chain({7, 7}).view()), 0);
  pool->CheckInvariants();
}

TEST(PrefixBooksTest, FreedPublishedBlocksStayCachedAndCountAsFree) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  const Chain c({1, 2, 3, 4, 5, 6});
  std::vector<BlockId> blocks = PublishNew(*pool, c);
  EXPECT_EQ(pool->prefix_stats().cached_blocks, 3);
  pool->ReleaseAllTailFirst(blocks);
  pool->CheckInvariants();
  EXPECT_EQ(pool->num_free_blocks(), 8);
  EXPECT_EQ(pool->prefix_stats().evictable_blocks, 3);

  const BlockPool::PrefixMatch m = pool->MatchPrefix(c.view());
  EXPECT_EQ(m.blocks, 3);
  EXPECT_EQ(m.revived, 3);
  std::vector<BlockId> pinned;
  EXPECT_EQ(pool->PinPrefix(c.view(), &pinned).blocks, 3);
  EXPECT_EQ(pinned, blocks);  // The same blocks, no copy.
  EXPECT_EQ(pool->num_free_blocks(), 5);
  pool->CheckInvariants();
  pool->ReleaseAllTailFirst(pinned);
}

TEST(PrefixBooksTest, AHitNeedsTheWholePrefixToMatch) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  std::vector<BlockId> held = PublishNew(*pool, Chain({1, 2, 3, 4}));
  EXPECT_EQ(pool->MatchPrefix(Chain({1, 2, 3, 4, 9, 9}).view()).blocks, 2);
  EXPECT_EQ(pool->MatchPrefix(Chain({1, 2, 3, 5}).view()).blocks, 1);
  EXPECT_EQ(pool->MatchPrefix(Chain({0, 2, 3, 4}).view()).blocks, 0);
  BlockExtraKeys salted;
  salted.tenant_salt = 1;
  EXPECT_EQ(
      pool->MatchPrefix(Chain({1, 2}, Xxh3BlockHasher(), salted).view()).blocks,
      0);
  pool->ReleaseAll(held);
}

TEST(PrefixBooksTest, ACollisionIsAMissAndStopsPublishing) {
  const ConstantHasher constant;
  std::unique_ptr<BlockPool> pool = MakePool(8);
  std::vector<BlockId> a = PublishNew(*pool, Chain({1, 2}, constant));
  const Chain b({7, 8}, constant);  // Same key, other tokens.
  EXPECT_EQ(pool->MatchPrefix(b.view()).blocks, 0);
  std::vector<BlockId> mine = *pool->Allocate(1);
  std::vector<BlockPool::PrefixSwitch> switches;
  EXPECT_EQ(pool->Publish(mine, BlockId(), b.view(), &switches), 0);
  EXPECT_FALSE(pool->is_cached(mine[0]));
  EXPECT_EQ(pool->MatchPrefix(Chain({1, 2}, constant).view()).blocks, 1);
  pool->CheckInvariants();
  // A chain whose second block collides with its first: the parent check
  // tells them apart.
  const Chain twice({1, 2, 1, 2}, constant);
  EXPECT_EQ(pool->MatchPrefix(twice.view()).blocks, 1);
  pool->ReleaseAll(a);
  pool->ReleaseAll(mine);
}

TEST(PrefixBooksTest, EvictsTheLeastRecentlyFreedTailFirst) {
  std::unique_ptr<BlockPool> pool = MakePool(4);
  const Chain old_chain({1, 1, 2, 2});
  const Chain new_chain({3, 3, 4, 4});
  std::vector<BlockId> a = PublishNew(*pool, old_chain);
  std::vector<BlockId> b = PublishNew(*pool, new_chain);
  pool->ReleaseAllTailFirst(a);
  pool->ReleaseAllTailFirst(b);
  EXPECT_THAT(pool->EvictionOrder(), ElementsAre(a[1], a[0], b[1], b[0]));
  // No plain block is left: the allocation evicts old_chain's tail.
  std::optional<BlockId> got = pool->TryAllocate();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, a[1]);
  EXPECT_THAT(pool->EvictionOrder(), ElementsAre(a[0], b[1], b[0]));
  EXPECT_EQ(pool->MatchPrefix(old_chain.view()).blocks, 1);
  EXPECT_EQ(pool->MatchPrefix(new_chain.view()).blocks, 2);
  EXPECT_EQ(pool->prefix_stats().evicted_blocks, 1);
  EXPECT_EQ(pool->prefix_stats().dropped_blocks, 0);
  pool->CheckInvariants();
  pool->Release(*got);
}

TEST(PrefixBooksTest, EvictingAParentDropsItsCachedDescendants) {
  std::unique_ptr<BlockPool> pool = MakePool(3);
  const Chain c({1, 1, 2, 2, 3, 3});
  std::vector<BlockId> blocks = PublishNew(*pool, c);
  pool->ReleaseAll(blocks);  // Head first: the head is the LRU's oldest.
  std::optional<BlockId> got = pool->TryAllocate();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, blocks[0]);
  const PrefixIndexStats s = pool->prefix_stats();
  EXPECT_EQ(s.evicted_blocks, 1);
  EXPECT_EQ(s.dropped_blocks, 2);  // Unreachable without their parent.
  EXPECT_EQ(s.cached_blocks, 0);
  EXPECT_EQ(pool->num_free_blocks(), 2);  // Plain free blocks now.
  pool->CheckInvariants();
  pool->Release(*got);
}

TEST(PrefixBooksTest, EvictedEntriesDoNotPileUpInTheIndex) {
  // Removal leaves a stale hash-map entry (no erase per eviction); the
  // index sweeps them once they pass max(2 x num_blocks, 1024), which
  // CheckInvariants bounds. 3,000 evictions of distinct blocks run it.
  std::unique_ptr<BlockPool> pool = MakePool(4);
  for (int32_t round = 0; round < 1000; ++round) {
    for (int32_t b = 0; b < 3; ++b) {
      const Chain c({round, b});
      std::vector<BlockId> ids = PublishNew(*pool, c);
      pool->ReleaseAll(ids);
      // The older entries stay matchable until evicted.
      EXPECT_EQ(pool->MatchPrefix(c.view()).blocks, 1);
    }
    if (round % 100 == 0) pool->CheckInvariants();
  }
  pool->CheckInvariants();
  EXPECT_GE(pool->prefix_stats().evicted_blocks, 2990);
  EXPECT_EQ(pool->MatchPrefix(Chain({0, 0}).view()).blocks, 0);
  EXPECT_EQ(pool->MatchPrefix(Chain({999, 2}).view()).blocks, 1);
}

TEST(PrefixBooksTest, AnEqualBlockInUseIsSwitchedTo) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  const Chain c({1, 2, 3, 4});
  std::vector<BlockId> first = PublishNew(*pool, c);
  std::vector<BlockId> second = *pool->Allocate(2);  // Computed again.
  std::vector<BlockPool::PrefixSwitch> switches;
  EXPECT_EQ(pool->Publish(second, BlockId(), c.view(), &switches), 2);
  ASSERT_EQ(switches.size(), 2u);
  EXPECT_EQ(switches[0].index, 0);
  EXPECT_EQ(switches[0].cached, first[0]);
  EXPECT_EQ(switches[1].cached, first[1]);
  EXPECT_EQ(pool->ref_count(first[0]), 2);  // The caller's new reference.
  EXPECT_FALSE(pool->is_cached(second[0]));
  pool->ReleaseAll(second);  // What the table does when it switches.
  pool->ReleaseAll(first);
  pool->ReleaseAll(first);
  pool->CheckInvariants();
}

TEST(PrefixBooksTest, AnEqualFreeBlockHandsItsEntryOver) {
  std::unique_ptr<BlockPool> pool = MakePool(8);
  const Chain c({1, 2, 3, 4});
  std::vector<BlockId> first = PublishNew(*pool, c);
  pool->ReleaseAllTailFirst(first);  // Cached, free.
  std::vector<BlockId> second = *pool->Allocate(1);
  ASSERT_NE(second[0], first[0]);
  std::vector<BlockPool::PrefixSwitch> switches;
  EXPECT_EQ(pool->Publish(second, BlockId(), c.view(0, 1), &switches), 1);
  EXPECT_TRUE(switches.empty());
  EXPECT_TRUE(pool->is_cached(second[0]));
  EXPECT_FALSE(pool->is_cached(first[0]));
  // The old entry's child now hangs under the new block.
  std::vector<BlockId> pinned;
  EXPECT_EQ(pool->PinPrefix(c.view(), &pinned).blocks, 2);
  EXPECT_THAT(pinned, ElementsAre(second[0], first[1]));
  pool->CheckInvariants();
  pool->ReleaseAllTailFirst(pinned);
  pool->ReleaseAll(second);
  pool->CheckInvariants();
}

TEST(PrefixBooksTest, RevivingNeverTakesAReservedBlock) {
  std::unique_ptr<BlockPool> pool = MakePool(4);
  const Chain c({1, 2, 3, 4});
  pool->ReleaseAllTailFirst(PublishNew(*pool, c));
  absl::StatusOr<Reservation> r = pool->Reserve(3);
  ASSERT_THAT(r.status(), IsOk());
  // One unreserved free block: one hit may be revived, not two.
  EXPECT_EQ(pool->MatchPrefix(c.view()).blocks, 1);
  std::vector<BlockId> pinned;
  EXPECT_EQ(pool->PinPrefix(c.view(), &pinned).blocks, 1);
  pool->CheckInvariants();
  // The reservation still gets all three of its blocks.
  absl::StatusOr<std::vector<BlockId>> mine = r->Allocate(3);
  ASSERT_THAT(mine.status(), IsOk());
  pool->CheckInvariants();
  pool->ReleaseAll(*mine);
  pool->ReleaseAll(pinned);
}

TEST(PrefixBooksTest, UnpublishKeepsHoldersAndFreesCachedChildren) {
  std::unique_ptr<BlockPool> pool = MakePool(4);
  const Chain c({1, 2, 3, 4});
  std::vector<BlockId> blocks = PublishNew(*pool, c);
  pool->Release(blocks[1]);  // The child is cached and free.
  pool->Unpublish(blocks[0]);
  EXPECT_FALSE(pool->is_cached(blocks[0]));
  EXPECT_FALSE(pool->is_cached(blocks[1]));
  EXPECT_EQ(pool->ref_count(blocks[0]), 1);
  EXPECT_EQ(pool->prefix_stats().evictable_blocks, 0);
  EXPECT_EQ(pool->num_free_blocks(), 3);
  pool->CheckInvariants();
  pool->Release(blocks[0]);
}

TEST(PrefixBooksTest, EventsDescribeStoresRemovalsAndResets) {
  std::unique_ptr<BlockPool> pool = MakePool(2, /*events=*/8);
  const Chain c({1, 2, 3, 4});
  std::vector<BlockId> blocks = PublishNew(*pool, c);
  pool->ReleaseAllTailFirst(blocks);
  ASSERT_TRUE(pool->TryAllocate().has_value());  // Evicts the tail.
  pool->ResetPrefixCache();
  std::vector<PrefixEvent> events = pool->TakePrefixEvents();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kind, PrefixEvent::Kind::kBlockStored);
  EXPECT_EQ(events[0].sequence_number, 1u);
  EXPECT_EQ(events[0].parent_hash, kRootBlockHash);
  EXPECT_EQ(events[0].block_hashes, c.hashes);
  EXPECT_EQ(events[0].token_ids, c.tokens);
  EXPECT_EQ(events[0].block_size, kBt);
  EXPECT_EQ(events[0].extra_keys.size(), 2u);
  EXPECT_EQ(events[1].kind, PrefixEvent::Kind::kBlockRemoved);
  EXPECT_THAT(events[1].block_hashes, ElementsAre(c.hashes[1]));
  EXPECT_EQ(events[2].kind, PrefixEvent::Kind::kAllBlocksCleared);
  EXPECT_EQ(events[2].sequence_number, 3u);
  EXPECT_TRUE(pool->TakePrefixEvents().empty());
  EXPECT_EQ(pool->prefix_stats().epoch, 1u);
  EXPECT_EQ(pool->prefix_stats().cached_blocks, 0);
  pool->CheckInvariants();
}

TEST(PrefixBooksTest, AFullEventQueueDropsAndLeavesAGap) {
  std::unique_ptr<BlockPool> pool = MakePool(8, /*events=*/1);
  std::vector<BlockId> a = PublishNew(*pool, Chain({1, 2}));
  std::vector<BlockId> b = PublishNew(*pool, Chain({3, 4}));  // Dropped.
  std::vector<PrefixEvent> events = pool->TakePrefixEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(pool->prefix_stats().events_dropped, 1);
  std::vector<BlockId> c = PublishNew(*pool, Chain({5, 6}));
  events = pool->TakePrefixEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].sequence_number, 3u);  // 2 was dropped.
  pool->ReleaseAll(a);
  pool->ReleaseAll(b);
  pool->ReleaseAll(c);
}

}  // namespace
}  // namespace pagedkv
