// Two KVCacheManagers ("replicas", each with its own pool) sharing one
// remote store: the second serves from the store what the first committed,
// every byte verified with token tags (manager_testing.h), against the
// in-memory store and a real redis-server (killed mid-run: the managers
// keep serving by recomputing).
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cache/remote/in_memory_block_store.h"
#include "cache/remote/redis_block_store.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/remote/remote_testing.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::RedisServer;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TableOf;
using ::pagedkv::testing::TestChain;
using ::pagedkv::testing::WriteToken;

constexpr int32_t kBt = 4;

std::vector<int32_t> Ids(int32_t n, int32_t first) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

CheckedManager Make(RemoteTier* tier, int32_t num_blocks = 64) {
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = num_blocks;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.prefix_caching.remote = tier;
  return CheckedManager(*KVCacheManager::Create(o));
}

std::unique_ptr<RemoteTier> MemoryTier(InMemoryBlockStore* store) {
  RemoteTier::Options o;
  o.layout = SmallLayout();
  return *RemoteTier::Create(o, store, store);
}

// Adds, writes every computed token's tag, commits the prompt; returns the
// cached tokens.
int64_t Serve(CheckedManager& m, SequenceId seq,
              const std::vector<int32_t>& prompt) {
  StepOutput out;
  EXPECT_THAT(m->AddSequence(seq, prompt, 8, &out), IsOk());
  m->CheckInvariants();
  for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
    WriteToken(*m->kv_pool(), out.slot_mapping[i],
               static_cast<uint32_t>(prompt[out.num_cached_tokens + i]));
  }
  const TokenCommit c{.seq = seq,
                      .num_tokens = static_cast<int64_t>(prompt.size())};
  EXPECT_THAT(m->CommitTokens(absl::MakeConstSpan(&c, 1)), IsOk());
  m->CheckInvariants();
  return out.num_cached_tokens;
}

void ExpectBytes(CheckedManager& m, SequenceId seq,
                 const std::vector<int32_t>& tokens) {
  const std::vector<BlockId> table = TableOf(*m, seq);
  for (size_t t = 0; t < tokens.size(); ++t) {
    EXPECT_EQ(CheckToken(*m->kv_pool(), SlotOf(table, kBt, t),
                         static_cast<uint32_t>(tokens[t])),
              "")
        << "sequence " << seq << " token " << t;
  }
}

TEST(RemoteTierManagerTest, ASecondReplicaServesWhatTheFirstCommitted) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get());
  CheckedManager b = Make(tb.get());
  const std::vector<int32_t> prompt = Ids(18, 100);
  EXPECT_EQ(Serve(a, 1, prompt), 0);
  ta->Flush();
  EXPECT_EQ(ta->stats().writes.stored, 4);  // Full blocks of 18 tokens.
  EXPECT_EQ(Serve(b, 1, prompt), 16);       // (18 - 1) / 4 blocks.
  ExpectBytes(b, 1, prompt);
  EXPECT_EQ(tb->stats().loaded_blocks, 4);
  EXPECT_EQ(b->stats().prefix.hit_tokens, 16);
  // Loaded blocks are local cached blocks now: a second request hits
  // locally, with no remote lookup.
  EXPECT_EQ(Serve(b, 2, prompt), 16);
  EXPECT_EQ(tb->stats().lookups, 1);
  ExpectBytes(b, 2, prompt);
  // b sends nothing back that came from the store.
  tb->Flush();
  EXPECT_EQ(tb->stats().writes.enqueued, 0);
}

TEST(RemoteTierManagerTest, LocalHitsFirstThenTheRemoteRest) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get());
  CheckedManager b = Make(tb.get());
  const std::vector<int32_t> longer = Ids(25, 100);
  const std::vector<int32_t> shorter(longer.begin(), longer.begin() + 9);
  EXPECT_EQ(Serve(b, 1, shorter), 0);  // b has 2 blocks locally.
  tb->Flush();
  EXPECT_EQ(Serve(a, 1, longer), 8);  // b's 2 from the store; a adds 4.
  ta->Flush();
  EXPECT_EQ(Serve(b, 2, longer), 24);  // 2 local + 4 remote.
  EXPECT_EQ(tb->stats().loaded_blocks, 4);
  ExpectBytes(b, 2, longer);
}

TEST(RemoteTierManagerTest, ACorruptedBlockIsRecomputedNotServed) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get());
  CheckedManager b = Make(tb.get());
  const std::vector<int32_t> prompt = Ids(17, 100);
  Serve(a, 1, prompt);
  ta->Flush();
  // Block 2's value damaged under its valid key.
  const TestChain chain(SmallLayout(), 4, 100);  // prompt's first 4 blocks.
  store.Corrupt(tb->KeyOf(chain.chain(), 2), "garbage");
  EXPECT_EQ(Serve(b, 1, prompt), 8);  // Blocks 0 and 1; 2 on is computed.
  ExpectBytes(b, 1, prompt);
  EXPECT_EQ(tb->stats().verify_failures, 1);
}

TEST(RemoteTierManagerTest, CreateRefusesAMismatchedTier) {
  InMemoryBlockStore store;
  RemoteTier::Options o;
  o.layout = SmallLayout(/*block_tokens=*/8);
  std::unique_ptr<RemoteTier> tier = *RemoteTier::Create(o, &store, &store);
  KVCacheManager::Options m;
  m.layout = SmallLayout();
  m.num_blocks = 16;
  m.prefix_caching.enabled = true;
  m.prefix_caching.remote = tier.get();
  EXPECT_THAT(KVCacheManager::Create(m),
              StatusIs(absl::StatusCode::kInvalidArgument));
  m.prefix_caching.enabled = false;
  EXPECT_THAT(KVCacheManager::Create(m),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RemoteTierManagerTest, ReplicasShareThroughRedisAndSurviveItsDeath) {
  if (!RedisServer::Available()) GTEST_SKIP() << RedisServer::kSkipMessage;
  absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start();
  ASSERT_THAT(redis.status(), IsOk());
  RedisBlockStore::Options so;
  so.address = (*redis)->address();
  so.call_timeout = absl::Milliseconds(100);
  so.backoff_initial = absl::Milliseconds(5);
  so.backoff_max = absl::Milliseconds(20);
  const auto tier = [&] {
    RemoteTier::Options o;
    o.layout = SmallLayout();
    return *RemoteTier::Create(o, *RedisBlockStore::Create(so),
                               *RedisBlockStore::Create(so));
  };
  std::unique_ptr<RemoteTier> ta = tier();
  std::unique_ptr<RemoteTier> tb = tier();
  CheckedManager a = Make(ta.get());
  CheckedManager b = Make(tb.get());
  const std::vector<int32_t> p1 = Ids(33, 100);
  EXPECT_EQ(Serve(a, 1, p1), 0);
  ta->Flush();
  EXPECT_EQ(Serve(b, 1, p1), 32);
  ExpectBytes(b, 1, p1);

  (*redis)->Kill();
  const std::vector<int32_t> p2 = Ids(33, 9000);
  EXPECT_EQ(Serve(a, 2, p2), 0);  // Stores fail, counted.
  ta->Flush();
  EXPECT_EQ(Serve(b, 2, p2), 0);  // A miss: b computes it.
  ExpectBytes(b, 2, p2);
  EXPECT_GE(ta->stats().writes.failed, 1);

  ASSERT_THAT((*redis)->Restart(), IsOk());
  absl::SleepFor(absl::Milliseconds(40));
  const std::vector<int32_t> p3 = Ids(33, 20000);
  EXPECT_EQ(Serve(a, 3, p3), 0);
  ta->Flush();
  EXPECT_EQ(Serve(b, 3, p3), 32);
  ExpectBytes(b, 3, p3);
  for (SequenceId s : {1, 2, 3}) {
    ASSERT_THAT(a.Free(s), IsOk());
    ASSERT_THAT(b.Free(s), IsOk());
  }
  EXPECT_EQ(a->stats().used_blocks, 0);
  EXPECT_EQ(b->stats().used_blocks, 0);
}

}  // namespace
}  // namespace pagedkv
