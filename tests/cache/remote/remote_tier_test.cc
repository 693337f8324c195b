// RemoteTier on the in-memory store: blocks stored write-behind by one tier
// are loaded, verified, by another; every bad value is a counted miss that
// stops the chain; a store that is down gives misses; a full queue drops.
#include "cache/remote/remote_tier.h"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/remote/block_value.h"
#include "cache/remote/in_memory_block_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/remote/remote_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::Destinations;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::RemoteTestLayout;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TestChain;

std::unique_ptr<RemoteTier> MakeTier(InMemoryBlockStore* store,
                                     int32_t max_values = 64) {
  RemoteTier::Options o;
  o.layout = RemoteTestLayout();
  o.write_behind.max_values = max_values;
  return *RemoteTier::Create(o, store, store);
}

void StoreAll(RemoteTier& tier, const TestChain& c) {
  for (size_t i = 0; i < c.size(); ++i) {
    ASSERT_TRUE(tier.Store(c.chain(), i, c.Bytes(i))) << i;
  }
  tier.Flush();
}

TEST(RemoteTierTest, ABlockStoredByOneReplicaLoadsVerifiedInAnother) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> a = MakeTier(&store);
  std::unique_ptr<RemoteTier> b = MakeTier(&store);
  const TestChain c(RemoteTestLayout(), 6, 100);
  StoreAll(*a, c);
  EXPECT_EQ(a->stats().writes.stored, 6);
  Destinations d(6, a->block_bytes());
  ASSERT_EQ(b->LookupAndLoad(c.chain(), d.ptrs), 6);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(d.bufs[i], c.Bytes(i)) << i;
  const RemoteTierStats s = b->stats();
  EXPECT_EQ(s.lookups, 1);
  EXPECT_EQ(s.hit_blocks, 6);
  EXPECT_EQ(s.loaded_blocks, 6);
  EXPECT_EQ(s.loaded_bytes, 6 * static_cast<int64_t>(a->block_bytes()));
  EXPECT_EQ(s.verify_failures, 0);
  // Loaded blocks are known remote: storing them again sends nothing.
  EXPECT_FALSE(b->Store(c.chain(), 0, c.Bytes(0)));
  EXPECT_EQ(b->stats().stores_skipped, 1);
}

TEST(RemoteTierTest, TheChainStopsAtTheFirstMissingBlock) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MakeTier(&store);
  const TestChain c(RemoteTestLayout(), 6, 100);
  StoreAll(*tier, c);
  ASSERT_TRUE(store.Erase(tier->KeyOf(c.chain(), 3)));  // Evicted.
  std::unique_ptr<RemoteTier> reader = MakeTier(&store);
  Destinations d(6, tier->block_bytes());
  EXPECT_EQ(reader->LookupAndLoad(c.chain(), d.ptrs), 3);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(d.bufs[i], c.Bytes(i));
}

// A block the store lost (evicted, or its put failed) is forgotten by the
// lookup or load that missed it, it and the chain after it: this replica
// stores their recomputed KV again instead of skipping it forever. Both
// LookupAndLoad paths (one round trip, and lookup then load) and Lookup.
TEST(RemoteTierTest, AMissForgetsTheLostBlocksSoTheyAreStoredAgain) {
  const TestChain c(RemoteTestLayout(), 6, 100);
  for (int path = 0; path < 3; ++path) {
    SCOPED_TRACE(path);
    InMemoryBlockStore store;
    RemoteTier::Options o;
    o.layout = RemoteTestLayout();
    if (path == 1) o.direct_fetch_bytes = 0;  // Lookup, then Load.
    std::unique_ptr<RemoteTier> tier = *RemoteTier::Create(o, &store, &store);
    StoreAll(*tier, c);
    for (size_t i = 0; i < c.size(); ++i)
      EXPECT_TRUE(tier->Knows(c.chain().hashes[i]));
    ASSERT_TRUE(store.Erase(tier->KeyOf(c.chain(), 2)));  // Evicted.
    Destinations d(6, tier->block_bytes());
    const int32_t found = path == 2 ? tier->Lookup(c.chain())
                                    : tier->LookupAndLoad(c.chain(), d.ptrs);
    EXPECT_EQ(found, 2);
    for (size_t i = 0; i < c.size(); ++i) {
      EXPECT_EQ(tier->Knows(c.chain().hashes[i]), i < 2) << i;
    }
    // Recomputed and stored again, not skipped: the chain is whole again.
    const int64_t skipped = tier->stats().stores_skipped;
    EXPECT_TRUE(tier->Store(c.chain(), 2, c.Bytes(2)));
    tier->Flush();
    EXPECT_EQ(tier->stats().stores_skipped, skipped);
    EXPECT_EQ(tier->LookupAndLoad(c.chain(), d.ptrs), 6);
    for (size_t i = 0; i < 6; ++i) EXPECT_EQ(d.bufs[i], c.Bytes(i)) << i;
  }
}

// A chain within direct_fetch_bytes is fetched in one round trip; a longer
// one asks which blocks exist first. Both load the same blocks and count the
// same hits, a missing block ending the chain either way.
TEST(RemoteTierTest, AShortChainIsFetchedInOneRoundTripALongOneInTwo) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> writer = MakeTier(&store);
  const TestChain c(RemoteTestLayout(), 6, 100);
  StoreAll(*writer, c);
  ASSERT_TRUE(store.Erase(writer->KeyOf(c.chain(), 4)));
  const size_t chain_bytes = 6 * writer->block_bytes();
  for (const size_t budget : {chain_bytes, chain_bytes - 1}) {
    SCOPED_TRACE(budget);
    RemoteTier::Options o;
    o.layout = RemoteTestLayout();
    o.direct_fetch_bytes = budget;
    std::unique_ptr<RemoteTier> reader = *RemoteTier::Create(o, &store, &store);
    const int64_t calls_before = store.stats().calls;
    Destinations d(6, writer->block_bytes());
    EXPECT_EQ(reader->LookupAndLoad(c.chain(), d.ptrs), 4);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(d.bufs[i], c.Bytes(i)) << i;
    EXPECT_EQ(store.stats().calls - calls_before,
              budget == chain_bytes ? 1 : 2);
    const RemoteTierStats s = reader->stats();
    EXPECT_EQ(s.lookups, 1);
    EXPECT_EQ(s.lookup_blocks, 6);
    EXPECT_EQ(s.hit_blocks, 4);
    EXPECT_EQ(s.loaded_blocks, 4);
  }
}

TEST(RemoteTierTest, EveryBadValueIsACountedMissThatStopsTheChain) {
  const TestChain c(RemoteTestLayout(), 4, 100);
  const TestChain other(RemoteTestLayout(), 4, 900);
  const KVLayout wider = RemoteTestLayout(/*head_dim=*/4);
  // What replaces block 1's value, and the verdict it must get.
  struct Case {
    const char* name;
    BlockValueCheck want;
  };
  for (const Case& k : {Case{"short", BlockValueCheck::kTruncated},
                        Case{"garbage", BlockValueCheck::kBadMagic},
                        Case{"version", BlockValueCheck::kUnknownVersion},
                        Case{"layout", BlockValueCheck::kOtherLayout},
                        Case{"block", BlockValueCheck::kOtherBlock},
                        Case{"flipped", BlockValueCheck::kBadChecksum}}) {
    SCOPED_TRACE(k.name);
    InMemoryBlockStore store;
    std::unique_ptr<RemoteTier> tier = MakeTier(&store);
    StoreAll(*tier, c);
    const std::string key = tier->KeyOf(c.chain(), 1);
    std::string good;
    EncodeBlockValue(tier->IdentityOf(c.chain(), 1), c.Bytes(1), &good);
    std::string bad;
    if (k.want == BlockValueCheck::kTruncated) {
      bad = good.substr(0, good.size() / 2);
    } else if (k.want == BlockValueCheck::kBadMagic) {
      bad = std::string(good.size(), '\x5a');
    } else if (k.want == BlockValueCheck::kUnknownVersion) {
      bad = good;
      bad[4] = 9;
    } else if (k.want == BlockValueCheck::kOtherLayout) {
      RemoteTier::Options o;
      o.layout = wider;
      InMemoryBlockStore scratch;
      std::unique_ptr<RemoteTier> t =
          *RemoteTier::Create(o, &scratch, &scratch);
      const TestChain w(wider, 4, 100);
      EncodeBlockValue(t->IdentityOf(w.chain(), 1), w.Bytes(1), &bad);
    } else if (k.want == BlockValueCheck::kOtherBlock) {
      EncodeBlockValue(tier->IdentityOf(other.chain(), 1), other.Bytes(1),
                       &bad);
    } else {
      bad = good;
      bad[bad.size() - 10] ^= 0x10;
    }
    store.Corrupt(key, bad);
    std::unique_ptr<RemoteTier> reader = MakeTier(&store);
    Destinations d(4, tier->block_bytes());
    EXPECT_EQ(reader->LookupAndLoad(c.chain(), d.ptrs), 1);
    EXPECT_EQ(d.bufs[0], c.Bytes(0));
    const RemoteTierStats s = reader->stats();
    EXPECT_EQ(s.verify_failures, 1);
    EXPECT_EQ(s.verify_failures_by_kind[static_cast<size_t>(k.want)], 1);
    EXPECT_EQ(s.loaded_blocks, 1);
  }
}

// A store that is down gives misses and failed puts. A put that fails is
// reported back by the worker: the tier forgets the block (Knows says no,
// so a books-only server copies it out again) and the next Store sends it,
// so a replica that was down loses no block for good.
TEST(RemoteTierTest, ABlockWhosePutFailedIsStoredAgain) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MakeTier(&store);
  const TestChain c(RemoteTestLayout(), 3, 100);
  store.set_down(true);
  StoreAll(*tier, c);
  EXPECT_EQ(tier->stats().writes.failed, 3);
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_FALSE(tier->Knows(c.chain().hashes[i])) << i;
  }
  Destinations misses(3, tier->block_bytes());
  EXPECT_EQ(tier->LookupAndLoad(c.chain(), misses.ptrs), 0);
  store.set_down(false);
  StoreAll(*tier, c);  // Asserts each Store sends (not skipped).
  EXPECT_EQ(tier->stats().stores_skipped, 0);
  EXPECT_EQ(tier->stats().writes.stored, 3);
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(tier->Knows(c.chain().hashes[i])) << i;
  }
  std::unique_ptr<RemoteTier> reader = MakeTier(&store);
  Destinations d(3, tier->block_bytes());
  EXPECT_EQ(reader->LookupAndLoad(c.chain(), d.ptrs), 3);
}

TEST(RemoteTierTest, AFailedPutForgetsOnlyItsBlock) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MakeTier(&store, /*max_values=*/2);
  const TestChain c(RemoteTestLayout(), 5, 100);
  ASSERT_TRUE(tier->Store(c.chain(), 0, c.Bytes(0)));
  tier->Flush();
  store.set_down(true);
  for (size_t i = 1; i < c.size(); ++i) {
    ASSERT_TRUE(tier->Store(c.chain(), i, c.Bytes(i))) << i;
    tier->Flush();
  }
  EXPECT_EQ(tier->stats().writes.failed, 4);
  // Each Store took the failures so far: more than the queue's two, in
  // all, were named, none lost.
  EXPECT_TRUE(tier->Knows(c.chain().hashes[0]));
  for (size_t i = 1; i < c.size(); ++i) {
    EXPECT_FALSE(tier->Knows(c.chain().hashes[i])) << i;
  }
}

// A store whose Put waits until released: the queue fills behind it.
class BlockingStore final : public RemoteBlockStore {
 public:
  int32_t CountLeadingHits(absl::Span<const std::string>) override { return 0; }
  int32_t Fetch(absl::Span<const std::string>, FetchSink&) override {
    return 0;
  }
  absl::Status Put(std::string_view, std::string_view) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
    return absl::OkStatus();
  }
  RemoteStoreStats stats() const override { return {}; }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

TEST(RemoteTierTest, AFullWriteBehindQueueDropsAndCountsWithoutBlocking) {
  BlockingStore store;
  RemoteTier::Options o;
  o.layout = RemoteTestLayout();
  o.write_behind.max_values = 2;
  o.write_behind.max_batch_values = 1;  // The worker holds one at a time.
  std::unique_ptr<RemoteTier> tier = *RemoteTier::Create(o, &store, &store);
  const TestChain c(RemoteTestLayout(), 8, 100);
  int32_t queued = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    queued += tier->Store(c.chain(), i, c.Bytes(i)) ? 1 : 0;
  }
  // The worker holds at most one, the queue two: the rest were dropped.
  EXPECT_LE(queued, 3);
  EXPECT_GE(queued, 2);
  EXPECT_EQ(tier->stats().writes.dropped, 8 - queued);
  store.Open();
  tier->Flush();
  EXPECT_EQ(tier->stats().writes.stored, queued);
}

TEST(RemoteTierTest, CreateValidatesItsOptions) {
  InMemoryBlockStore store;
  RemoteTier::Options o;
  o.layout = RemoteTestLayout();
  EXPECT_THAT(RemoteTier::Create(o, nullptr, &store),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o.write_behind.max_values = 0;
  EXPECT_THAT(RemoteTier::Create(o, &store, &store),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o.write_behind = WriteBehindQueue::Options();
  o.write_behind.max_spare_values = -1;
  EXPECT_THAT(RemoteTier::Create(o, &store, &store),
              StatusIs(absl::StatusCode::kInvalidArgument));
  o.write_behind.max_spare_values = 0;  // None kept: fine.
  EXPECT_THAT(RemoteTier::Create(o, &store, &store), IsOk());
  o.write_behind.max_batch_values = 0;
  EXPECT_THAT(RemoteTier::Create(o, &store, &store),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("batch values 0")));
  o.write_behind = WriteBehindQueue::Options();
  o.write_behind.max_batch_bytes = 0;
  EXPECT_THAT(RemoteTier::Create(o, &store, &store),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("batch bytes 0")));
  o.write_behind = WriteBehindQueue::Options();
  EXPECT_THAT(RemoteTier::Create(o, &store, &store), IsOk());
  o = RemoteTier::Options();
  EXPECT_THAT(RemoteTier::Create(o, &store, &store),
              StatusIs(absl::StatusCode::kInvalidArgument));  // No layout.
}

}  // namespace
}  // namespace pagedkv
