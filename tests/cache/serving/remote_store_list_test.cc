// The books-only store list of KVCacheManager (TakeRemoteStores): each
// published block listed once, pinned as a copy source until MarkDone.
#include <cstdint>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/prefix/block_hash.h"
#include "cache/remote/in_memory_block_store.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/pending_remote_stores.h"
#include "cache/serving/step_output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::TableOf;
using ::testing::Contains;
using ::testing::Not;

std::vector<int32_t> Ids(int32_t n, int32_t first) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::unique_ptr<RemoteTier> MemoryTier(InMemoryBlockStore* store) {
  RemoteTier::Options o;
  o.layout = SmallLayout();
  return *RemoteTier::Create(o, store, store);
}

CheckedManager MakeBooksOnly(RemoteTier* tier, int32_t num_blocks = 64) {
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = num_blocks;
  o.storage = StorageMode::kBooksOnly;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.prefix_caching.remote = tier;
  return CheckedManager(*KVCacheManager::Create(o));
}

void Commit(CheckedManager& m, SequenceId seq, int64_t n) {
  const TokenCommit c{.seq = seq, .num_tokens = n};
  ASSERT_THAT(m->CommitTokens(absl::MakeConstSpan(&c, 1)), IsOk());
  m->CheckInvariants();
}

// Stores every listed block (bytes irrelevant here) and marks the list done.
void StoreAll(RemoteTier& tier, PendingRemoteStores stores) {
  std::vector<std::byte> staging(tier.block_bytes());
  for (int32_t i = 0; i < stores.size(); ++i) {
    tier.Store(stores.chain(i), 0, staging);
  }
  stores.MarkDone();
}

// CommitTokens + Free in one step (the flow pending_remote_stores.h is
// for), where the committed block's parent is a local hit: the pinned
// block is then in use under a free parent, which the books allow for a
// pending copy's source (CheckedManager checks them after every call).
TEST(RemoteStoreListTest, APinnedBlockOutlivesItsSequenceAndItsParent) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  CheckedManager m = MakeBooksOnly(tier.get());
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Ids(9, 100), 8, &out), IsOk());
  Commit(m, 1, 9);  // Blocks 0, 1 published and listed.
  StoreAll(*tier, m->TakeRemoteStores());
  ASSERT_THAT(m.Free(1), IsOk());

  // Sequence 2 hits blocks 0, 1 locally, computes block 2 and commits it.
  ASSERT_THAT(m->AddSequence(2, Ids(13, 100), 8, &out), IsOk());
  ASSERT_EQ(out.num_cached_tokens, 8);
  ASSERT_TRUE(out.remote_load.empty());
  Commit(m, 2, 13);  // Block 2 listed (pinned).
  ASSERT_EQ(m->stats().remote.pending_store_blocks, 1);
  // Freed before the caller took the list: block 2 stays pinned.
  ASSERT_THAT(m.Free(2), IsOk());
  PendingRemoteStores stores = m->TakeRemoteStores();
  ASSERT_EQ(stores.size(), 1);
  const BlockId pinned = stores.block(0);
  const BlockHash hash = stores.chain(0).hashes[0];
  // A request that takes every free block evicts the cached parents; the
  // pin keeps block 2 from it.
  const int32_t free_blocks = m->books().num_unreserved_free_blocks();
  ASSERT_THAT(m->AddSequence(3, Ids(free_blocks * 4, 5000), 0, &out), IsOk());
  EXPECT_THAT(TableOf(*m, 3), Not(Contains(pinned)));
  EXPECT_EQ(m->books().num_unreserved_free_blocks(), 0);
  StoreAll(*tier, std::move(stores));
  EXPECT_TRUE(tier->Knows(hash));
  EXPECT_EQ(m->books().num_unreserved_free_blocks(), 1);  // The pin's.
}

// A fork and its parent commit the blocks they share in one step: each
// block is listed (and pinned, and copied out) once.
TEST(RemoteStoreListTest, AForkListsItsSharedBlocksOnce) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  CheckedManager m = MakeBooksOnly(tier.get());
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Ids(9, 100), 8, &out), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const TokenCommit c[] = {{.seq = 1, .num_tokens = 9},
                           {.seq = 2, .num_tokens = 9}};
  ASSERT_THAT(m->CommitTokens(c), IsOk());
  EXPECT_EQ(m->stats().remote.store_listed_blocks, 2);
  PendingRemoteStores stores = m->TakeRemoteStores();
  EXPECT_EQ(stores.size(), 2);
  EXPECT_NE(stores.block(0), stores.block(1));
}

// The same when the caller took the parent's list before the child
// commits: the child leaves off the blocks the parent published.
TEST(RemoteStoreListTest, AForkCommittingLaterListsNothingItsParentListed) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  CheckedManager m = MakeBooksOnly(tier.get());
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Ids(9, 100), 8, &out), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  Commit(m, 1, 9);
  PendingRemoteStores taken = m->TakeRemoteStores();  // In flight.
  ASSERT_EQ(taken.size(), 2);
  Commit(m, 2, 9);
  EXPECT_TRUE(m->TakeRemoteStores().empty());
  EXPECT_EQ(m->stats().remote.store_listed_blocks, 2);
  StoreAll(*tier, std::move(taken));
}

// A local reset before the caller took the list: the republished blocks
// are on it already, and are not listed again.
TEST(RemoteStoreListTest, AResetDoesNotListPendingBlocksTwice) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  CheckedManager m = MakeBooksOnly(tier.get());
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Ids(9, 100), 8, &out), IsOk());
  Commit(m, 1, 9);
  m->ResetPrefixCache();
  Commit(m, 1, 9);
  EXPECT_EQ(m->TakeRemoteStores().size(), 2);
  EXPECT_EQ(m->stats().remote.store_listed_blocks, 2);
}


// A local reset while a sequence with local hits is loading unpublishes
// those hits; completing the load publishes them again with the loaded
// blocks (CheckedManager checks the books after every call).
TEST(RemoteStoreListTest, AResetWhileLoadingAfterLocalHits) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = 64;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.prefix_caching.remote = ta.get();
  CheckedManager a(*KVCacheManager::Create(o));  // Host replica.
  StepOutput out;
  ASSERT_THAT(a->AddSequence(1, Ids(25, 100), 8, &out), IsOk());
  Commit(a, 1, 25);  // 6 blocks stored.
  ta->Flush();

  CheckedManager b = MakeBooksOnly(tb.get());
  ASSERT_THAT(b->AddSequence(1, Ids(9, 100), 8, &out), IsOk());
  ASSERT_EQ(out.remote_load.num_blocks(), 2);
  ASSERT_THAT(b.CompleteRemoteLoads(1, 2, &out), IsOk());  // 2 local now.
  ASSERT_THAT(b->AddSequence(2, Ids(25, 100), 8, &out), IsOk());
  ASSERT_EQ(out.num_cached_tokens, 8);  // 2 local hits, 4 listed.
  ASSERT_EQ(out.remote_load.num_blocks(), 4);
  b->ResetPrefixCache();
  b->CheckInvariants();
  ASSERT_THAT(b.CompleteRemoteLoads(2, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 24);
  // All 6 blocks are local again: a third request hits them all.
  ASSERT_THAT(b->AddSequence(3, Ids(25, 100), 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 24);
  EXPECT_TRUE(out.remote_load.empty());
}

}  // namespace
}  // namespace pagedkv
