// PrefixIndex on its own (the pool's tests, prefix_books_test.cc, reach it
// through BlockPool): what TryInsert's one probe does, as Find and FindHash
// see it.
#include <cstdint>
#include <vector>

#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_index.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

constexpr int32_t kBt = 2;

// The ref counts CheckInvariants compares against: every published block
// in use (none is in the LRU), the others free.
std::vector<int32_t> InUse(const PrefixIndex& index) {
  std::vector<int32_t> rc(index.num_blocks());
  for (int32_t b = 0; b < index.num_blocks(); ++b) {
    rc[b] = index.is_published(b);
  }
  return rc;
}

TEST(PrefixIndexTest, TryInsertReturnsTheLiveHolderAndChangesNothing) {
  PrefixIndex index(/*num_blocks=*/4, kBt, /*max_pending_events=*/8);
  const int32_t a[kBt] = {1, 2};
  const int32_t b[kBt] = {3, 4};
  const BlockHash h = Xxh3BlockHasher().Hash(kRootBlockHash, a, {});
  EXPECT_EQ(index.TryInsert(/*block=*/0, h, /*parent=*/-1, a, {}), -1);
  EXPECT_EQ(index.FindHash(h), 0);
  EXPECT_EQ(index.stats().stored_blocks, 1);

  // Another block under the same hash (a collision, or the same KV twice):
  // the holder comes back; block 1 stays out, the entry keeps block 0's
  // tokens, and no event is queued for it.
  EXPECT_EQ(index.TryInsert(/*block=*/1, h, -1, b, {}), 0);
  EXPECT_FALSE(index.is_published(1));
  EXPECT_EQ(index.Find(h, -1, a, {}), 0);
  EXPECT_EQ(index.Find(h, -1, b, {}), -1);
  EXPECT_EQ(index.stats().stored_blocks, 1);
  // The holder itself: itself.
  EXPECT_EQ(index.TryInsert(/*block=*/0, h, -1, a, {}), 0);
  index.CheckInvariants(InUse(index));
  const std::vector<PrefixEvent> events = index.TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].block_hashes, std::vector<BlockHash>{h});
}

TEST(PrefixIndexTest, TryInsertTakesOverAStaleEntry) {
  // Removal leaves the hash-map entry behind, stale: TryInsert treats it as
  // no entry and takes its slot (the map does not grow).
  PrefixIndex index(/*num_blocks=*/4, kBt);
  const int32_t a[kBt] = {1, 2};
  const BlockHash h = Xxh3BlockHasher().Hash(kRootBlockHash, a, {});
  ASSERT_EQ(index.TryInsert(/*block=*/0, h, -1, a, {}), -1);
  index.RemoveSubtree(0, /*evicted=*/true, [](int32_t) {});
  EXPECT_EQ(index.FindHash(h), -1);

  EXPECT_EQ(index.TryInsert(/*block=*/2, h, -1, a, {}), -1);
  EXPECT_EQ(index.Find(h, -1, a, {}), 2);
  index.CheckInvariants(InUse(index));
  // Block 0 was evicted and can be published again, as itself.
  const int32_t c[kBt] = {5, 6};
  const BlockHash hc = Xxh3BlockHasher().Hash(h, c, {});
  EXPECT_EQ(index.TryInsert(/*block=*/0, hc, /*parent=*/2, c, {}), -1);
  EXPECT_EQ(index.Find(hc, 2, c, {}), 0);
  index.CheckInvariants(InUse(index));
}

TEST(PrefixIndexDeathTest, TryInsertOfABlockPublishedUnderAnotherHashAborts) {
  PrefixIndex index(/*num_blocks=*/4, kBt);
  const int32_t a[kBt] = {1, 2};
  const int32_t b[kBt] = {3, 4};
  const BlockHash ha = Xxh3BlockHasher().Hash(kRootBlockHash, a, {});
  const BlockHash hb = Xxh3BlockHasher().Hash(kRootBlockHash, b, {});
  ASSERT_EQ(index.TryInsert(/*block=*/0, ha, -1, a, {}), -1);
  EXPECT_DEATH(index.TryInsert(/*block=*/0, hb, -1, b, {}),
               "Insert of published block 0");
}

}  // namespace
}  // namespace pagedkv
