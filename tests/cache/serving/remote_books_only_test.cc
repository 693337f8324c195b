// The remote tier with a books-only manager (load lists and
// CompleteRemoteLoads, the pinned store list) and on Readmit in both
// storage modes. Replicas share an InMemoryBlockStore; the test plays the
// books-only caller, whose "device" is a KVPool used only as bytes indexed
// by block id, and checks every token's bytes with token tags
// (manager_testing.h). Every manager call is followed by CheckInvariants()
// (CheckedManager).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/status_macros.h"
#include "cache/remote/in_memory_block_store.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/pending_remote_stores.h"
#include "cache/serving/remote_load.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/remote/remote_testing.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::ExpectEveryBlockFree;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ManagerSnapshot;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TableOf;
using ::pagedkv::testing::TakeSnapshot;
using ::pagedkv::testing::TestChain;
using ::pagedkv::testing::WriteToken;
using ::testing::HasSubstr;

constexpr int32_t kBt = 4;

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

struct Setup {
  StorageMode storage = StorageMode::kBooksOnly;
  int32_t num_blocks = 64;
  AdmissionMode admission = AdmissionMode::kWatermark;
  int32_t max_pending_remote_stores = 1024;
};

CheckedManager Make(RemoteTier* tier, const Setup& setup = {}) {
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = setup.num_blocks;
  o.storage = setup.storage;
  o.admission = setup.admission;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.prefix_caching.remote = tier;
  o.prefix_caching.max_pending_remote_stores = setup.max_pending_remote_stores;
  return CheckedManager(*KVCacheManager::Create(o));
}

// The books-only manager's caller: owns the device bytes (a KVPool whose
// own books are unused) and runs the loads and stores the manager lists.
class Device {
 public:
  explicit Device(int32_t num_blocks)
      : bytes_(*KVPool::Create(
            {.layout = SmallLayout(), .num_blocks = num_blocks})) {}

  KVPool& bytes() { return *bytes_; }

  // Fetches and verifies the listed blocks into host staging memory, then
  // "uploads" the first min(verified, max_blocks) of them into their
  // destination blocks. Returns how many it uploaded.
  int32_t Load(RemoteTier& tier, const RemoteLoad& load,
               int32_t max_blocks = std::numeric_limits<int32_t>::max()) {
    const size_t bb = bytes_->block_bytes();
    std::vector<std::vector<std::byte>> staging(
        load.blocks.size(), std::vector<std::byte>(bb, std::byte{0xEE}));
    std::vector<std::byte*> dst;
    for (std::vector<std::byte>& s : staging) dst.push_back(s.data());
    const int32_t n = std::min(tier.Load(load.chain(), dst), max_blocks);
    for (int32_t i = 0; i < n; ++i) {
      std::memcpy(bytes_->BlockData(load.blocks[i]), staging[i].data(), bb);
    }
    return n;
  }

  // Copies every listed block out, hands it to the tier, marks the list
  // done. Returns the entries.
  int32_t Store(RemoteTier& tier, PendingRemoteStores stores) {
    return StoreKept(tier, stores);
  }
  // The same for a list the caller keeps (left empty, its buffers kept).
  int32_t StoreKept(RemoteTier& tier, PendingRemoteStores& stores) {
    std::vector<std::byte> staging(bytes_->block_bytes());
    for (int32_t i = 0; i < stores.size(); ++i) {
      std::memcpy(staging.data(), bytes_->BlockData(stores.block(i)),
                  staging.size());
      tier.Store(stores.chain(i), 0, staging);
    }
    const int32_t n = stores.size();
    stores.MarkDone();
    return n;
  }

 private:
  std::unique_ptr<KVPool> bytes_;
};

// Writes the tags of tokens [out.num_cached_tokens, ...) of `tokens` at
// out's slots (the model's prefill).
void Compute(KVPool& bytes, const StepOutput& out,
             const std::vector<int32_t>& tokens) {
  ASSERT_EQ(
      out.num_cached_tokens + static_cast<int64_t>(out.slot_mapping.size()),
      static_cast<int64_t>(tokens.size()));
  for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
    WriteToken(bytes, out.slot_mapping[i],
               static_cast<uint32_t>(tokens[out.num_cached_tokens + i]));
  }
}

void Commit(CheckedManager& m, SequenceId seq, int64_t num_tokens) {
  const TokenCommit c{.seq = seq, .num_tokens = num_tokens};
  ASSERT_THAT(m->CommitTokens(absl::MakeConstSpan(&c, 1)), IsOk());
  m->CheckInvariants();
}

// Host mode: adds, computes, commits; returns the cached tokens.
int64_t ServeHost(CheckedManager& m, SequenceId seq,
                  const std::vector<int32_t>& prompt) {
  StepOutput out;
  EXPECT_THAT(m->AddSequence(seq, prompt, 8, &out), IsOk());
  m->CheckInvariants();
  Compute(*m->kv_pool(), out, prompt);
  Commit(m, seq, static_cast<int64_t>(prompt.size()));
  return out.num_cached_tokens;
}

void ExpectBytes(const KVPool& bytes, absl::Span<const BlockId> table,
                 const std::vector<int32_t>& tokens, int64_t num_tokens) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    ASSERT_EQ(CheckToken(bytes, SlotOf(table, kBt, t),
                         static_cast<uint32_t>(tokens[t])),
              "")
        << "token " << t;
  }
}

// Blocks [0, n) of a running table.
// Adds seq with `prompt`, computes its KV into `device` and commits it all
// (publishing its full blocks and listing them for the tier).
void Prefill(CheckedManager& m, KVPool& device, SequenceId seq,
             const std::vector<int32_t>& prompt) {
  StepOutput out;
  ASSERT_THAT(m->AddSequence(seq, prompt, 8, &out), IsOk());
  Compute(device, out, prompt);
  Commit(m, seq, static_cast<int64_t>(prompt.size()));
}

std::vector<BlockId> Head(const CheckedManager& m, SequenceId seq, int32_t n) {
  const std::vector<BlockId> t = TableOf(*m, seq);
  return std::vector<BlockId>(t.begin(), t.begin() + n);
}

// A stores `prompt` (host mode) and flushes.
void StoreOnA(CheckedManager& a, RemoteTier& ta, SequenceId seq,
              const std::vector<int32_t>& prompt) {
  EXPECT_EQ(ServeHost(a, seq, prompt), 0);
  ta.Flush();
}

// ----------------------------------------------------------------- loads

TEST(RemoteBooksOnlyTest, ALoadListThenCompletionServesTheVerifiedBlocks) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get());
  Device device(64);
  const std::vector<int32_t> prompt = Ids(18, 100);
  StoreOnA(a, *ta, 1, prompt);

  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  b->CheckInvariants();
  // (18 - 1) / 4 = 4 blocks listed; no slots yet; not running.
  const RemoteLoad& load = out.remote_load;
  ASSERT_EQ(load.num_blocks(), 4);
  EXPECT_EQ(load.first_token, 0);
  EXPECT_TRUE(out.slot_mapping.empty());
  EXPECT_EQ(*b->state(1), SequenceState::kLoading);
  EXPECT_EQ(b->stats().running_sequences, 0);
  EXPECT_EQ(b->stats().used_blocks, 5);        // The destinations are its own.
  EXPECT_EQ(b->stats().prefix.hit_tokens, 0);  // Not before completion.
  EXPECT_EQ(tb->KeyOf(load.chain(), 3), ta->KeyOf(load.chain(), 3));

  const std::vector<BlockId> listed = load.blocks;
  ASSERT_EQ(device.Load(*tb, load), 4);
  ASSERT_THAT(b.CompleteRemoteLoads(1, 4, &out), IsOk());
  EXPECT_EQ(*b->state(1), SequenceState::kRunning);
  EXPECT_EQ(out.num_cached_tokens, 16);
  ASSERT_EQ(out.slot_mapping.size(), 2u);
  const std::vector<BlockId> table = TableOf(*b, 1);
  EXPECT_EQ(out.slot_mapping[0], SlotOf(table, kBt, 16));  // After them.
  EXPECT_TRUE(out.remote_load.empty());
  EXPECT_EQ(Head(b, 1, 4), listed);  // Loaded in place, then published.
  Compute(device.bytes(), out, prompt);
  ExpectBytes(device.bytes(), table, prompt, 18);

  const ManagerStats st = b->stats();
  EXPECT_EQ(st.remote.load_lists, 1);
  EXPECT_EQ(st.remote.listed_blocks, 4);
  EXPECT_EQ(st.remote.loaded_blocks, 4);
  EXPECT_EQ(st.remote.failed_blocks, 0);
  EXPECT_EQ(st.prefix.hit_tokens, 16);
  EXPECT_EQ(st.running_sequences, 1);
  // They are local cached blocks now: no second lookup, and nothing of them
  // is listed for storing back.
  StepOutput again;
  ASSERT_THAT(b->AddSequence(2, prompt, 8, &again), IsOk());
  EXPECT_TRUE(again.remote_load.empty());
  EXPECT_EQ(again.num_cached_tokens, 16);
  EXPECT_EQ(Head(b, 2, 4), Head(b, 1, 4));
  EXPECT_EQ(tb->stats().lookups, 1);
  EXPECT_TRUE(b->TakeRemoteStores().empty());
  for (SequenceId s : {1, 2}) ASSERT_THAT(b.Free(s), IsOk());
  ExpectEveryBlockFree(b->books());
}

TEST(RemoteBooksOnlyTest, LocalHitsComeFirstAndTheListStartsAfterThem) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get());
  Device device(64);
  const std::vector<int32_t> longer = Ids(25, 100);
  const std::vector<int32_t> shorter(longer.begin(), longer.begin() + 9);
  StoreOnA(a, *ta, 1, longer);  // 6 blocks remote.
  // b computes the first 2 blocks itself (after loading them: the store
  // has them too). Complete with 0: b computes everything.
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, shorter, 8, &out), IsOk());
  ASSERT_EQ(out.remote_load.num_blocks(), 2);
  ASSERT_THAT(b.CompleteRemoteLoads(1, 0, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  EXPECT_EQ(b->stats().remote.failed_blocks, 2);
  Compute(device.bytes(), out, shorter);
  Commit(b, 1, 9);

  ASSERT_THAT(b->AddSequence(2, longer, 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);         // 2 local blocks.
  ASSERT_EQ(out.remote_load.num_blocks(), 4);  // (25 - 1) / 4 - 2.
  EXPECT_EQ(out.remote_load.first_token, 8);
  ASSERT_EQ(device.Load(*tb, out.remote_load), 4);
  ASSERT_THAT(b.CompleteRemoteLoads(2, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 24);
  EXPECT_EQ(Head(b, 2, 2), Head(b, 1, 2));
  Compute(device.bytes(), out, longer);
  ExpectBytes(device.bytes(), TableOf(*b, 2), longer, 25);
}

TEST(RemoteBooksOnlyTest, ACorruptedValueMakesThatBlockAndTheRestRecompute) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get());
  Device device(64);
  const std::vector<int32_t> prompt = Ids(21, 100);
  StoreOnA(a, *ta, 1, prompt);
  const TestChain chain(SmallLayout(), 5, 100);
  store.Corrupt(tb->KeyOf(chain.chain(), 2), "garbage");

  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  ASSERT_EQ(out.remote_load.num_blocks(), 5);  // A lookup sees keys only.
  const std::vector<BlockId> listed = out.remote_load.blocks;
  const int32_t loaded = device.Load(*tb, out.remote_load);
  EXPECT_EQ(loaded, 2);
  EXPECT_EQ(tb->stats().verify_failures, 1);
  ASSERT_THAT(b.CompleteRemoteLoads(1, loaded, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  // Block 2's destination is the first block computed into.
  EXPECT_EQ(StepOutput::BlockOf(out.slot_mapping[0], kBt), listed[2]);
  EXPECT_EQ(StepOutput::OffsetOf(out.slot_mapping[0], kBt), 0);
  EXPECT_EQ(b->stats().remote.failed_blocks, 3);
  EXPECT_EQ(b->stats().prefix.cached_blocks, 2);  // Only the verified ones.
  Compute(device.bytes(), out, prompt);
  ExpectBytes(device.bytes(), TableOf(*b, 1), prompt, 21);
}

TEST(RemoteBooksOnlyTest, CompletingWithFewerBlocksPublishesOnlyThose) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get());
  Device device(64);
  const std::vector<int32_t> prompt = Ids(18, 100);
  StoreOnA(a, *ta, 1, prompt);
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  // The caller's deadline passed after one block.
  ASSERT_EQ(device.Load(*tb, out.remote_load, /*max_blocks=*/1), 1);
  ASSERT_THAT(b.CompleteRemoteLoads(1, 1, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 4);
  EXPECT_EQ(out.slot_mapping.size(), 14u);
  EXPECT_EQ(b->stats().prefix.cached_blocks, 1);
  // Before sequence 1 commits, another request hits the one block locally
  // and is listed the other three.
  StepOutput out2;
  ASSERT_THAT(b->AddSequence(2, prompt, 8, &out2), IsOk());
  EXPECT_EQ(out2.num_cached_tokens, 4);
  EXPECT_EQ(out2.remote_load.first_token, 4);
  EXPECT_EQ(out2.remote_load.num_blocks(), 3);
  ASSERT_EQ(device.Load(*tb, out2.remote_load), 3);
  ASSERT_THAT(b.CompleteRemoteLoads(2, 3, &out2), IsOk());
  Compute(device.bytes(), out, prompt);
  Compute(device.bytes(), out2, prompt);
  ExpectBytes(device.bytes(), TableOf(*b, 1), prompt, 18);
  ExpectBytes(device.bytes(), TableOf(*b, 2), prompt, 18);
  // Sequence 1's commit switches its computed blocks to 2's loaded ones.
  Commit(b, 1, 18);
  EXPECT_EQ(Head(b, 1, 4), Head(b, 2, 4));
  EXPECT_EQ(b->stats().prefix.switched_blocks, 3);
  EXPECT_TRUE(b->TakeRemoteStores().empty());  // All came from the store.
}

TEST(RemoteBooksOnlyTest, ALoadingSequenceKeepsItsBlocksUntilCompleted) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get(), {.num_blocks = 8});
  const std::vector<int32_t> prompt = Ids(18, 100);
  StoreOnA(a, *ta, 1, prompt);
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  const std::vector<BlockId> listed = out.remote_load.blocks;
  ASSERT_EQ(listed.size(), 4u);

  // Nothing but completion may touch it.
  const ManagerSnapshot before = TakeSnapshot(*b, {1});
  EXPECT_THAT(b.Free(1), StatusIs(absl::StatusCode::kFailedPrecondition,
                                  HasSubstr("remote load of 4 blocks")));
  const int32_t next[] = {118};
  const SlotRequest r[] = {{.seq = 1, .num_tokens = 1, .token_ids = next}};
  EXPECT_THAT(b.Append(r), StatusIs(absl::StatusCode::kFailedPrecondition,
                                    HasSubstr("loading")));
  EXPECT_THAT(b.Preempt(1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(b.Fork(1, 2), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(b.Truncate(1, 4),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(b.Readmit(1), StatusIs(absl::StatusCode::kFailedPrecondition));
  const TokenCommit c{.seq = 1, .num_tokens = 4};
  EXPECT_THAT(b->CommitTokens(absl::MakeConstSpan(&c, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(b->block_table(1),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(TakeSnapshot(*b, {1}), before);

  // The pool runs dry around it: its blocks are never handed out.
  StepOutput other;
  ASSERT_THAT(b.Add(3, 12, 0, &other), IsOk());  // The 3 other blocks.
  const absl::flat_hash_set<BlockId> mine(listed.begin(), listed.end());
  for (BlockId blk : TableOf(*b, 3)) EXPECT_FALSE(mine.contains(blk));
  EXPECT_THAT(b.Add(4, 4, 0), StatusIs(absl::StatusCode::kResourceExhausted));

  // Giving the load up: complete with 0, then free.
  ASSERT_THAT(b.CompleteRemoteLoads(1, 0, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  EXPECT_EQ(out.slot_mapping.size(), 18u);
  EXPECT_EQ(b->stats().prefix.cached_blocks, 0);
  ASSERT_THAT(b.Free(1), IsOk());
  ASSERT_THAT(b.Free(3), IsOk());
  ExpectEveryBlockFree(b->books());
}

TEST(RemoteBooksOnlyTest, BadCompletionsReturnAStatusAndChangeNothing) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get());
  Device device(64);
  const std::vector<int32_t> prompt = Ids(18, 100);
  StoreOnA(a, *ta, 1, prompt);
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  ASSERT_THAT(b.Add(2, 8, 8), IsOk());  // Running, nothing to load.
  ManagerSnapshot before = TakeSnapshot(*b, {1, 2, 3});
  StepOutput scratch;
  EXPECT_THAT(b.CompleteRemoteLoads(3, 1, &scratch),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("3")));
  EXPECT_THAT(
      b.CompleteRemoteLoads(2, 0, &scratch),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("running")));
  EXPECT_THAT(b.CompleteRemoteLoads(1, 5, &scratch),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("5 blocks loaded, must be in [0, 4]")));
  EXPECT_THAT(b.CompleteRemoteLoads(1, -1, &scratch),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(TakeSnapshot(*b, {1, 2, 3}), before);

  ASSERT_EQ(device.Load(*tb, out.remote_load), 4);
  ASSERT_THAT(b.CompleteRemoteLoads(1, 4, &out), IsOk());
  before = TakeSnapshot(*b, {1, 2, 3});
  EXPECT_THAT(b.CompleteRemoteLoads(1, 4, &scratch),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("no remote load is pending")));
  EXPECT_EQ(TakeSnapshot(*b, {1, 2, 3}), before);
}

TEST(RemoteBooksOnlyTest, ReservationAdmissionCountsALoadingSequencesShare) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(
      tb.get(), {.num_blocks = 12, .admission = AdmissionMode::kReservation});
  Device device(12);
  const std::vector<int32_t> prompt = Ids(18, 100);
  StoreOnA(a, *ta, 1, prompt);
  StepOutput out;
  // 18 + 8 tokens: 7 blocks reserved, 5 of them taken now.
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  ASSERT_EQ(out.remote_load.num_blocks(), 4);
  // Its share of 7 stays set aside while it loads: 5 of 12 blocks left.
  EXPECT_EQ(b->CanAdmit(20, 0), Admission::kAdmit);
  EXPECT_EQ(b->CanAdmit(21, 0), Admission::kLater);
  ASSERT_EQ(device.Load(*tb, out.remote_load), 4);
  ASSERT_THAT(b.CompleteRemoteLoads(1, 4, &out), IsOk());
  Compute(device.bytes(), out, prompt);
  Commit(b, 1, 18);
  ExpectBytes(device.bytes(), TableOf(*b, 1), prompt, 18);
  ASSERT_THAT(b.Free(1), IsOk());
  EXPECT_EQ(b->stats().used_blocks, 0);
  EXPECT_EQ(b->stats().reserved_blocks, 0);
}

// ---------------------------------------------------------------- stores

TEST(RemoteBooksOnlyTest, StoresArePinnedUntilTheCallerTookTheBytes) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tc = MemoryTier(&store);
  CheckedManager b = Make(tb.get(), {.num_blocks = 8});
  CheckedManager c = Make(tc.get(), {.storage = StorageMode::kHost});
  Device device(8);
  const std::vector<int32_t> prompt = Ids(18, 100);
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  EXPECT_TRUE(out.remote_load.empty());  // The store is empty.
  Compute(device.bytes(), out, prompt);
  const std::vector<BlockId> published = Head(b, 1, 4);
  Commit(b, 1, 18);
  EXPECT_EQ(b->stats().remote.pending_store_blocks, 4);

  // Freed and the pool drained before the caller copies: the pinned blocks
  // keep their bytes.
  ASSERT_THAT(b.Free(1), IsOk());
  EXPECT_EQ(b->stats().used_blocks, 4);
  StepOutput other;
  ASSERT_THAT(b.Add(2, 16, 0, &other), IsOk());  // The 4 unpinned blocks.
  EXPECT_THAT(b.Add(3, 1, 0), StatusIs(absl::StatusCode::kResourceExhausted));
  for (int64_t slot : other.slot_mapping) WriteToken(device.bytes(), slot, 7);

  PendingRemoteStores stores = b->TakeRemoteStores();
  ASSERT_EQ(stores.size(), 4);
  EXPECT_EQ(
      std::vector<BlockId>(stores.blocks().begin(), stores.blocks().end()),
      published);
  EXPECT_EQ(b->stats().remote.pending_store_blocks, 0);
  EXPECT_TRUE(b->TakeRemoteStores().empty());
  EXPECT_EQ(device.Store(*tb, std::move(stores)), 4);
  b->CheckInvariants();
  EXPECT_EQ(b->stats().used_blocks, 4);  // Only sequence 2's now.
  EXPECT_EQ(b->stats().remote.store_listed_blocks, 4);
  tb->Flush();
  EXPECT_EQ(tb->stats().writes.stored, 4);

  // A host replica serves them, every byte checked.
  EXPECT_EQ(
      [&] {
        StepOutput o;
        EXPECT_THAT(c->AddSequence(1, prompt, 8, &o), IsOk());
        return o.num_cached_tokens;
      }(),
      16);
  ExpectBytes(*c->kv_pool(), TableOf(*c, 1), prompt, 16);
  ASSERT_THAT(b.Free(2), IsOk());
  ExpectEveryBlockFree(b->books());
}

// A server that keeps one store list across steps: TakeRemoteStores into
// it swaps the lists, so it gets the same entries as the returned list, and
// from the second step on the two lists' buffers take turns: no step makes
// a new one. (While a list is alive its buffer cannot be handed out again,
// so seeing it come back shows the recycling.)
TEST(RemoteBooksOnlyTest, TakeRemoteStoresIntoAKeptListRecyclesItsBuffers) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager b = Make(tb.get());
  Device device(64);
  PendingRemoteStores kept;
  std::vector<const BlockId*> buffers;
  for (int32_t round = 0; round < 4; ++round) {
    const std::vector<int32_t> prompt = Ids(18, 1000 * (round + 1));
    Prefill(b, device.bytes(), 1, prompt);
    const std::vector<BlockId> published = Head(b, 1, 4);
    b->TakeRemoteStores(&kept);
    ASSERT_EQ(kept.size(), 4);
    EXPECT_EQ(std::vector<BlockId>(kept.blocks().begin(), kept.blocks().end()),
              published);
    EXPECT_EQ(std::vector<int32_t>(kept.chain(0).tokens.begin(),
                                   kept.chain(0).tokens.end()),
              std::vector<int32_t>(prompt.begin(), prompt.begin() + 4));
    // (Not TakeRemoteStores() to see it: that would move the recycled
    // buffers out.)
    EXPECT_EQ(b->stats().remote.pending_store_blocks, 0);
    buffers.push_back(kept.blocks().data());
    ASSERT_THAT(b.Free(1), IsOk());  // The pins keep the 4 blocks.
    EXPECT_EQ(device.StoreKept(*tb, kept), 4);
    b->CheckInvariants();
  }
  EXPECT_EQ(buffers[2], buffers[0]);
  EXPECT_EQ(buffers[3], buffers[1]);
  tb->Flush();
  EXPECT_EQ(tb->stats().writes.stored, 16);
  ExpectEveryBlockFree(b->books());
}

TEST(RemoteBooksOnlyDeathTest, TakeRemoteStoresIntoAFullListAborts) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager b = Make(tb.get());
  Device device(64);
  Prefill(b, device.bytes(), 1, Ids(18, 100));
  PendingRemoteStores kept;
  b->TakeRemoteStores(&kept);
  ASSERT_EQ(kept.size(), 4);
  EXPECT_DEATH(b->TakeRemoteStores(&kept), "still holding 4 stores");
}

// Blocks the tier has already are left off the store list (their device
// copy would be skipped): here every block, republished after a reset of
// the local prefix cache, was stored once before.
TEST(RemoteBooksOnlyTest, BlocksTheTierHasAreLeftOffTheStoreList) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager b = Make(tb.get());
  Device device(64);
  const std::vector<int32_t> prompt = Ids(21, 100);  // 5 full blocks.
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  Compute(device.bytes(), out, prompt);
  Commit(b, 1, 16);  // Blocks 0..3 listed.
  ASSERT_EQ(device.Store(*tb, b->TakeRemoteStores()), 4);
  EXPECT_EQ(b->stats().remote.store_listed_blocks, 4);
  b->ResetPrefixCache();  // Republished at the next commit.
  Commit(b, 1, 21);       // 0..3 known to the tier, block 4 new.
  EXPECT_EQ(b->stats().remote.store_known_blocks, 4);
  EXPECT_EQ(b->stats().remote.store_listed_blocks, 5);
  PendingRemoteStores stores = b->TakeRemoteStores();
  ASSERT_EQ(stores.size(), 1);
  EXPECT_EQ(stores.block(0), Head(b, 1, 5)[4]);
  EXPECT_EQ(stores.chain(0).hashes.size(), 1u);
  ASSERT_EQ(device.Store(*tb, std::move(stores)), 1);
  tb->Flush();
  EXPECT_EQ(tb->stats().stores_skipped, 0);  // Nothing was sent twice.
  EXPECT_EQ(store.num_keys(), 5);
  ASSERT_THAT(b.Free(1), IsOk());
  ExpectEveryBlockFree(b->books());
}

TEST(RemoteBooksOnlyTest, AFullStoreListDropsAndCountsTheRest) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager b = Make(tb.get(), {.max_pending_remote_stores = 3});
  Device device(64);
  const std::vector<int32_t> prompt = Ids(21, 100);  // 5 full blocks.
  StepOutput out;
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  Compute(device.bytes(), out, prompt);
  Commit(b, 1, 21);
  EXPECT_EQ(b->stats().remote.store_listed_blocks, 3);
  EXPECT_EQ(b->stats().remote.store_dropped_blocks, 2);
  PendingRemoteStores stores = b->TakeRemoteStores();
  EXPECT_EQ(
      std::vector<BlockId>(stores.blocks().begin(), stores.blocks().end()),
      Head(b, 1, 3));
  // Destroying the list releases the pins too.
  stores = PendingRemoteStores();
  ASSERT_THAT(b.Free(1), IsOk());
  ExpectEveryBlockFree(b->books());
}

TEST(RemoteBooksOnlyTest, CreateValidatesTheStoreListBound) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = 16;
  o.storage = StorageMode::kBooksOnly;
  o.prefix_caching.enabled = true;
  o.prefix_caching.remote = tier.get();
  EXPECT_THAT(KVCacheManager::Create(o), IsOk());
  o.prefix_caching.max_pending_remote_stores = 0;
  EXPECT_THAT(KVCacheManager::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_pending_remote_stores must be > 0, got "
                                 "0")));
}

// --------------------------------------------------------------- readmit

// Sequence 1 of `m` computes and commits 18 prompt tokens and 3 decoded
// ones (committing 18), is preempted, and its cached blocks are evicted by
// a sequence that takes the whole pool. Returns its 21 token ids.
// Books-only (device given): the caller stores the published blocks first,
// so their pins go.
std::vector<int32_t> PreemptAndEvict(CheckedManager& m, RemoteTier& tier,
                                     KVPool& bytes, Device* device = nullptr) {
  const std::vector<int32_t> tokens = Ids(21, 100);
  const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 18);
  StepOutput out;
  EXPECT_THAT(m->AddSequence(1, prompt, 8, &out), IsOk());
  Compute(bytes, out, prompt);
  const SlotRequest r[] = {
      {.seq = 1,
       .num_tokens = 3,
       .token_ids = absl::MakeConstSpan(tokens).subspan(18),
       .commit = 18}};
  EXPECT_THAT(m.Append(r, &out), IsOk());
  for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
    WriteToken(bytes, out.slot_mapping[i],
               static_cast<uint32_t>(tokens[18 + i]));
  }
  if (device != nullptr) {
    EXPECT_EQ(device->Store(tier, m->TakeRemoteStores()), 4);
  }
  EXPECT_THAT(m.Preempt(1), IsOk());
  EXPECT_THAT(m.Add(2, int64_t{m->books().num_blocks()} * kBt, 0), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  EXPECT_THAT(m.Free(2), IsOk());
  tier.Flush();
  return tokens;
}

TEST(RemoteReadmitTest, HostModeReadmitReHitsEvictedBlocksRemotely) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  CheckedManager m =
      Make(tier.get(), {.storage = StorageMode::kHost, .num_blocks = 8});
  const std::vector<int32_t> tokens = PreemptAndEvict(m, *tier, *m->kv_pool());
  EXPECT_EQ(tier->stats().writes.stored, 4);  // Its committed full blocks.
  // Garbage where the evicted blocks were, so a stale byte cannot pass.
  for (int32_t blk = 0; blk < 8; ++blk) {
    std::memset(m->kv_pool()->BlockData(BlockId(blk)), 0xAB,
                m->kv_pool()->block_bytes());
  }
  StepOutput out;
  ASSERT_THAT(m.Readmit(1, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 16);
  EXPECT_EQ(out.slot_mapping.size(), 5u);  // Tokens 16..20.
  EXPECT_EQ(out.slot_mapping[0], SlotOf(TableOf(*m, 1), kBt, 16));
  EXPECT_EQ(tier->stats().loaded_blocks, 4);
  EXPECT_EQ(m->stats().remote.loaded_blocks, 4);
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 0);  // None were local.
  ExpectBytes(*m->kv_pool(), TableOf(*m, 1), tokens, 16);
  Compute(*m->kv_pool(), out, tokens);
  ExpectBytes(*m->kv_pool(), TableOf(*m, 1), tokens, 21);
  // The loaded blocks are published again, and not sent back.
  EXPECT_EQ(m->stats().prefix.cached_blocks, 4);
  tier->Flush();
  EXPECT_EQ(tier->stats().writes.enqueued, 4);
}

TEST(RemoteReadmitTest, BooksOnlyReadmitListsEvictedBlocksForLoading) {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> tier = MemoryTier(&store);
  CheckedManager m = Make(tier.get(), {.num_blocks = 8});
  Device device(8);
  const std::vector<int32_t> tokens =
      PreemptAndEvict(m, *tier, device.bytes(), &device);
  for (int32_t blk = 0; blk < 8; ++blk) {
    std::memset(device.bytes().BlockData(BlockId(blk)), 0xAB,
                device.bytes().block_bytes());
  }
  const int64_t hit_tokens = m->stats().prefix.hit_tokens;
  StepOutput out;
  ASSERT_THAT(m.Readmit(1, &out), IsOk());
  EXPECT_EQ(*m->state(1), SequenceState::kLoading);
  ASSERT_EQ(out.remote_load.num_blocks(), 4);  // Of (21 - 1) / 4 = 5.
  EXPECT_TRUE(out.slot_mapping.empty());
  ASSERT_EQ(device.Load(*tier, out.remote_load), 4);
  ASSERT_THAT(m.CompleteRemoteLoads(1, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 16);
  EXPECT_EQ(out.slot_mapping.size(), 5u);
  EXPECT_EQ(m->stats().remote.loaded_blocks, 4);
  EXPECT_EQ(m->stats().prefix.hit_tokens, hit_tokens);  // A re-hit.
  Compute(device.bytes(), out, tokens);
  ExpectBytes(device.bytes(), TableOf(*m, 1), tokens, 21);
  ASSERT_THAT(m.Free(1), IsOk());
  ExpectEveryBlockFree(m->books());
}

// ------------------------------------------------------------- property

// Random requests from three prompt families (a family's token t is
// family * 1000 + t, so a prompt's bytes are a function of its family and
// length) on a books-only replica b next to a host replica a, with damaged
// values, local cache resets and callers giving up part-way: every token b
// serves, loaded or computed, has the right bytes, and invariants hold
// after every call.
class RemoteBooksOnlyRandomTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(RemoteBooksOnlyRandomTest, EveryServedTokenHasItsBytes) {
  std::mt19937 rng(GetParam());
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> ta = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tb = MemoryTier(&store);
  CheckedManager a = Make(ta.get(), {.storage = StorageMode::kHost});
  CheckedManager b = Make(tb.get(), {.num_blocks = 48});
  Device device(48);
  std::vector<SequenceId> live_a;
  std::vector<std::pair<SequenceId, std::vector<int32_t>>> live_b;
  SequenceId next = 1;
  const auto prompt_of = [&](int32_t family, int32_t len) {
    return Ids(len, family * 1000);
  };
  for (int step = 0; step < 60; ++step) {
    const int32_t family = static_cast<int32_t>(rng() % 3);
    const int32_t len = 2 + static_cast<int32_t>(rng() % 30);
    const std::vector<int32_t> prompt = prompt_of(family, len);
    const uint32_t op = rng() % 10;
    switch (op < 3 ? 0 : op < 4 ? 1 : op < 5 ? 3 : 2) {
      case 0: {  // a computes and stores.
        if (a->CanAdmit(prompt, 8) != Admission::kAdmit) break;
        const SequenceId id = next++;
        ServeHost(a, id, prompt);
        ta->Flush();
        live_a.push_back(id);
        if (live_a.size() > 3) {
          ASSERT_THAT(a.Free(live_a.front()), IsOk());
          live_a.erase(live_a.begin());
        }
        break;
      }
      case 1: {  // Damage a stored block of a family.
        const TestChain chain(SmallLayout(), 1 + rng() % 7, family * 1000);
        store.Corrupt(tb->KeyOf(chain.chain(), chain.chain().hashes.size() - 1),
                      "bad");
        break;
      }
      case 3:  // b forgets its local cache: what it had is remote now.
        b->ResetPrefixCache();
        b->CheckInvariants();
        break;
      default: {  // b serves, its caller loading all, some or none.
        if (b->CanAdmit(prompt, 8) != Admission::kAdmit) {
          if (live_b.empty()) break;
          ASSERT_THAT(b.Free(live_b.front().first), IsOk());
          live_b.erase(live_b.begin());
          break;
        }
        const SequenceId id = next++;
        StepOutput out;
        ASSERT_THAT(b->AddSequence(id, prompt, 8, &out), IsOk());
        b->CheckInvariants();
        if (!out.remote_load.empty()) {
          ASSERT_EQ(*b->state(id), SequenceState::kLoading);
          const int32_t listed = out.remote_load.num_blocks();
          const int32_t cap = static_cast<int32_t>(rng() % (listed + 2));
          const int32_t n = device.Load(*tb, out.remote_load, cap);
          ASSERT_THAT(b.CompleteRemoteLoads(id, n, &out), IsOk());
        }
        ASSERT_EQ(*b->state(id), SequenceState::kRunning);
        Compute(device.bytes(), out, prompt);
        ExpectBytes(device.bytes(), TableOf(*b, id), prompt, len);
        Commit(b, id, len);
        device.Store(*tb, b->TakeRemoteStores());
        b->CheckInvariants();
        live_b.emplace_back(id, prompt);
        break;
      }
    }
    // Every live sequence of b still has its bytes (loads never landed in
    // another sequence's blocks).
    for (const auto& [id, tokens] : live_b) {
      ExpectBytes(device.bytes(), TableOf(*b, id), tokens,
                  static_cast<int64_t>(tokens.size()));
    }
  }
  EXPECT_GT(b->stats().remote.loaded_blocks, 0);
  EXPECT_GT(b->stats().remote.failed_blocks, 0);
  for (const auto& [id, tokens] : live_b) ASSERT_THAT(b.Free(id), IsOk());
  ExpectEveryBlockFree(b->books());
}

INSTANTIATE_TEST_SUITE_P(Seeds, RemoteBooksOnlyRandomTest,
                         ::testing::Range<uint32_t>(0, 16));

// ------------------------------------------------ header and README examples

namespace examples {

// A books-only replica next to a host one that stored an 18-token prompt;
// the "device" is a KVPool's bytes.
struct World {
  InMemoryBlockStore store;
  std::unique_ptr<RemoteTier> host_tier = MemoryTier(&store);
  std::unique_ptr<RemoteTier> tier_ptr = MemoryTier(&store);
  RemoteTier& tier = *tier_ptr;
  CheckedManager host = Make(host_tier.get(), {.storage = StorageMode::kHost});
  CheckedManager books = Make(tier_ptr.get());
  KVCacheManager& manager = *books;
  Device device{64};
  std::vector<int32_t> prompt = Ids(18, 100);
  std::vector<std::vector<std::byte>> buffers;

  World() { StoreOnA(host, *host_tier, 1, prompt); }
  std::vector<std::byte*> HostBuffers(int32_t n) {
    buffers.assign(n, std::vector<std::byte>(tier.block_bytes()));
    std::vector<std::byte*> p;
    for (std::vector<std::byte>& b : buffers) p.push_back(b.data());
    return p;
  }
  void UploadToDevice(const std::byte* src, BlockId dst) {
    std::memcpy(device.bytes().BlockData(dst), src, tier.block_bytes());
  }
  void CopyFromDevice(BlockId src, std::vector<std::byte>& dst) {
    std::memcpy(dst.data(), device.bytes().BlockData(src), dst.size());
  }
};

absl::Status RemoteLoadExample() {
  World w;
  KVCacheManager& manager = w.manager;
  RemoteTier& tier = w.tier;
  const auto HostBuffers = [&](int32_t n) { return w.HostBuffers(n); };
  const auto UploadToDevice = [&](const std::byte* src, BlockId dst) {
    w.UploadToDevice(src, dst);
  };
  const SequenceId seq = 7;
  StepOutput out;
  PKV_RETURN_IF_ERROR(manager.AddSequence(seq, w.prompt, 8, &out));
  const std::vector<BlockId> listed = out.remote_load.blocks;
  // clang-format off
  // BEGIN cache/serving/remote_load.h
  const RemoteLoad& load = out.remote_load;        // After AddSequence.
  std::vector<std::byte*> staging = HostBuffers(load.num_blocks());
  int32_t verified = tier.Load(load.chain(), staging);  // Leading ones.
  for (int32_t i = 0; i < verified; ++i) {
    UploadToDevice(staging[i], load.blocks[i]);
  }
  PKV_RETURN_IF_ERROR(manager.CompleteRemoteLoads(seq, verified, &out));
  // out.slot_mapping now starts at token out.num_cached_tokens.
  // END cache/serving/remote_load.h
  // clang-format on
  EXPECT_EQ(verified, 4);
  EXPECT_EQ(out.num_cached_tokens, 16);
  EXPECT_EQ(out.slot_mapping[0], SlotOf(TableOf(manager, seq), kBt, 16));
  EXPECT_EQ(Head(w.books, seq, 4), listed);
  ExpectBytes(w.device.bytes(), TableOf(manager, seq), w.prompt, 16);
  return absl::OkStatus();
}

TEST(RemoteBooksOnlyExamplesTest, RemoteLoad) {
  EXPECT_THAT(RemoteLoadExample(), IsOk());
}

absl::Status PendingRemoteStoresExample() {
  World w;
  KVCacheManager& manager = w.manager;
  RemoteTier& tier = w.tier;
  std::vector<std::byte> staging(tier.block_bytes());
  const auto CopyFromDevice = [&](BlockId src, std::vector<std::byte>& dst) {
    w.CopyFromDevice(src, dst);
  };
  const std::vector<int32_t> other = Ids(9, 5000);  // Not in the store.
  StepOutput out;
  PKV_RETURN_IF_ERROR(manager.AddSequence(1, other, 8, &out));
  Compute(w.device.bytes(), out, other);
  const TokenCommit c{.seq = 1, .num_tokens = 9};
  PKV_RETURN_IF_ERROR(manager.CommitTokens(absl::MakeConstSpan(&c, 1)));
  // clang-format off
  // BEGIN cache/serving/pending_remote_stores.h
  PendingRemoteStores stores = manager.TakeRemoteStores();
  for (int32_t i = 0; i < stores.size(); ++i) {
    CopyFromDevice(stores.block(i), staging);       // block_bytes.
    tier.Store(stores.chain(i), /*index=*/0, staging);  // Copies them.
  }
  stores.MarkDone();  // The pins go; the blocks may be reused.
  // END cache/serving/pending_remote_stores.h
  // clang-format on
  tier.Flush();
  EXPECT_EQ(tier.stats().writes.stored, 2);  // The 2 full blocks.
  // The host replica now serves them.
  StepOutput host_out;
  PKV_RETURN_IF_ERROR(w.host->AddSequence(2, other, 8, &host_out));
  EXPECT_EQ(host_out.num_cached_tokens, 8);
  ExpectBytes(*w.host->kv_pool(), TableOf(*w.host, 2), other, 8);
  return absl::OkStatus();
}

TEST(RemoteBooksOnlyExamplesTest, PendingRemoteStores) {
  EXPECT_THAT(PendingRemoteStoresExample(), IsOk());
}

// The README's books-only loop ("Remote tier on Redis"), as written there.
absl::Status ReadmeBooksOnlyExample() {
  World w;
  std::unique_ptr<RemoteTier>& tier = w.tier_ptr;
  KVCacheManager::Options options{.layout = SmallLayout(), .num_blocks = 64};
  options.prefix_caching.enabled = true;
  options.prefix_caching.remote = tier.get();
  const SequenceId id = 3;
  const std::vector<int32_t>& prompt_ids = w.prompt;
  const int64_t max_new = 8;
  StepOutput out;
  const auto HostBuffers = [&](int32_t n) { return w.HostBuffers(n); };
  const auto Upload = [&](const std::byte* src, BlockId dst) {
    w.UploadToDevice(src, dst);
  };
  const auto Prefill = [&](const StepOutput& o) {
    Compute(w.device.bytes(), o, prompt_ids);
  };
  const TokenCommit commits[] = {{.seq = id, .num_tokens = 18}};
  std::vector<std::byte> block(tier->block_bytes());
  const auto Download = [&](BlockId src, std::vector<std::byte>& dst) {
    w.CopyFromDevice(src, dst);
  };
  // clang-format off
  options.storage = pagedkv::StorageMode::kBooksOnly;
  auto manager = *pagedkv::KVCacheManager::Create(options);
  PKV_RETURN_IF_ERROR(manager->AddSequence(id, prompt_ids, max_new, &out));
  if (!out.remote_load.empty()) {  // kLoading: load, then complete.
    const pagedkv::RemoteLoad& load = out.remote_load;
    std::vector<std::byte*> staging = HostBuffers(load.num_blocks());
    const int32_t verified = tier->Load(load.chain(), staging);  // Leading run.
    for (int32_t i = 0; i < verified; ++i) Upload(staging[i], load.blocks[i]);
    PKV_RETURN_IF_ERROR(manager->CompleteRemoteLoads(id, verified, &out));
  }
  Prefill(out);  // Tokens [out.num_cached_tokens, prompt size) at out's slots.
  PKV_RETURN_IF_ERROR(manager->CommitTokens(commits));
  pagedkv::PendingRemoteStores stores = manager->TakeRemoteStores();
  for (int32_t i = 0; i < stores.size(); ++i) {
    Download(stores.block(i), block);  // block_bytes of host memory.
    tier->Store(stores.chain(i), /*index=*/0, block);  // Copied: returns at once.
  }
  stores.MarkDone();  // The pins go.
  // clang-format on
  EXPECT_EQ(out.num_cached_tokens, 16);  // All 4 blocks loaded.
  tier->Flush();
  EXPECT_EQ(tier->stats().writes.enqueued, 0);  // Nothing new to send back.
  const absl::Span<const BlockId> table = *manager->block_table(id);
  ExpectBytes(w.device.bytes(), table, prompt_ids, 18);
  manager->CheckInvariants();
  return absl::OkStatus();
}

TEST(RemoteBooksOnlyExamplesTest, TheReadmeLoopLoadsStoresAndServes) {
  EXPECT_THAT(ReadmeBooksOnlyExample(), IsOk());
}

}  // namespace examples

}  // namespace
}  // namespace pagedkv
