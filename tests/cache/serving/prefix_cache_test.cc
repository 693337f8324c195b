// KVCacheManager with prefix caching: hits only after commits, verified
// (collisions and other tenants miss), the bytes a hit serves, eviction and
// admission accounting, and interplay with fork, copy-on-write, truncate,
// swap and recompute preemption. Every call is followed by
// CheckInvariants() (CheckedManager).
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::CheckToken;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ManagerSnapshot;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::SmallLayout;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TableOf;
using ::pagedkv::testing::TakeSnapshot;
using ::pagedkv::testing::WriteToken;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using Code = absl::StatusCode;

constexpr int32_t kBt = 4;  // SmallLayout's block_tokens.

class ConstantHasher final : public BlockHasher {
 public:
  BlockHash Hash(BlockHash, absl::Span<const int32_t>,
                 const BlockExtraKeys&) const override {
    return 7;
  }
  const char* name() const override { return "constant"; }
};

struct Config {
  StorageMode storage = StorageMode::kHost;
  AdmissionMode admission = AdmissionMode::kWatermark;
  int32_t num_blocks = 64;
  int32_t num_host_blocks = 0;
  const BlockHasher* hasher = nullptr;
  int32_t events = 0;
};

CheckedManager Make(const Config& c) {
  KVCacheManager::Options o;
  o.layout = SmallLayout();
  o.num_blocks = c.num_blocks;
  o.storage = c.storage;
  o.admission = c.admission;
  o.watermark = 0.0;
  o.num_host_blocks = c.num_host_blocks;
  o.prefix_caching.enabled = true;
  o.prefix_caching.hasher = c.hasher;
  o.prefix_caching.max_pending_events = c.events;
  return CheckedManager(*KVCacheManager::Create(o));
}

// Token ids first, first + 1, ...
std::vector<int32_t> Ids(int32_t n, int32_t first = 100) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<int32_t> Concat(std::vector<int32_t> a,
                            const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Adds `seq` with its token ids and returns the output.
StepOutput Add(CheckedManager& m, SequenceId seq,
               const std::vector<int32_t>& prompt, const PrefixKeys& keys = {},
               int64_t max_new = 16) {
  StepOutput out;
  EXPECT_THAT(m->AddSequence(seq, prompt, max_new, &out, keys), IsOk());
  m->CheckInvariants();
  return out;
}

void Commit(CheckedManager& m, SequenceId seq, int64_t n) {
  const TokenCommit c{.seq = seq, .num_tokens = n};
  EXPECT_THAT(m->CommitTokens(absl::MakeConstSpan(&c, 1)), IsOk());
  m->CheckInvariants();
}

// Host mode: writes each slot's token tag (its token id) for tokens
// [first, first + out.slot_mapping.size()) of `prompt`.
void WriteTokens(CheckedManager& m, const StepOutput& out,
                 const std::vector<int32_t>& tokens, int64_t first) {
  for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
    WriteToken(*m->kv_pool(), out.slot_mapping[i],
               static_cast<uint32_t>(tokens[first + i]));
  }
}

// Host mode: every token of `seq` holds its id's words.
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

TEST(PrefixCacheTest, HeaderExampleRuns) {
  KVCacheManager::Options options{.layout = SmallLayout(4), .num_blocks = 64};
  options.prefix_caching.enabled = true;
  std::unique_ptr<KVCacheManager> cm = *KVCacheManager::Create(options);
  const int32_t prompt[] = {101, 7592, 2088, 102};
  PrefixKeys keys{.tenant_salt = 42};
  StepOutput step;
  ASSERT_THAT(cm->AddSequence(1, prompt, 16, &step, keys), IsOk());
  EXPECT_EQ(step.num_cached_tokens, 0);
  const int32_t sampled[] = {2023};
  const SlotRequest decode[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = sampled, .commit = 4}};
  ASSERT_THAT(cm->AppendSlots(decode, &step), IsOk());
  EXPECT_EQ(cm->stats().prefix.cached_blocks, 1);
  cm->CheckInvariants();
}

TEST(PrefixCacheTest, HitsOnlyWhatWasCommitted) {
  CheckedManager m = Make({});
  const std::vector<int32_t> prompt = Ids(10);
  StepOutput a = Add(m, 1, prompt);
  EXPECT_EQ(a.num_cached_tokens, 0);
  EXPECT_THAT(a.slot_mapping, SizeIs(10));
  // Not committed yet: nothing to match.
  EXPECT_EQ(Add(m, 2, prompt).num_cached_tokens, 0);
  Commit(m, 1, 10);
  StepOutput c = Add(m, 3, prompt);
  EXPECT_EQ(c.num_cached_tokens, 8);  // Two whole blocks; (10 - 1) / 4.
  EXPECT_THAT(c.slot_mapping, SizeIs(2));
  const std::vector<BlockId> t1 = TableOf(*m, 1);
  const std::vector<BlockId> t3 = TableOf(*m, 3);
  EXPECT_EQ(t3[0], t1[0]);
  EXPECT_EQ(t3[1], t1[1]);
  EXPECT_NE(t3[2], t1[2]);
  EXPECT_EQ(c.slot_mapping[0], SlotOf(t3, kBt, 8));
  const PrefixCacheStats s = m->stats().prefix;
  EXPECT_EQ(s.queries, 3);
  EXPECT_EQ(s.query_tokens, 30);
  EXPECT_EQ(s.hit_tokens, 8);
  EXPECT_EQ(s.hit_blocks, 2);
  EXPECT_DOUBLE_EQ(s.hit_rate(), 8.0 / 30.0);
}

TEST(PrefixCacheTest, AFullyCachedPromptStillComputesItsLastToken) {
  CheckedManager m = Make({});
  const std::vector<int32_t> prompt = Ids(8);
  Add(m, 1, prompt);
  Commit(m, 1, 8);
  StepOutput b = Add(m, 2, prompt);
  EXPECT_EQ(b.num_cached_tokens, 4);
  EXPECT_THAT(b.slot_mapping, SizeIs(4));
}

TEST(PrefixCacheTest, ASequenceFreedBeforeItsCommitPublishesNothing) {
  CheckedManager m = Make({});
  Add(m, 1, Ids(12));
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  EXPECT_EQ(Add(m, 2, Ids(12)).num_cached_tokens, 0);
}

TEST(PrefixCacheTest, AHitServesTheBytesThePublisherWrote) {
  CheckedManager m = Make({});
  const std::vector<int32_t> shared = Ids(8, 500);
  const std::vector<int32_t> a = Concat(shared, Ids(3, 1));
  const std::vector<int32_t> b = Concat(shared, Ids(5, 2000));
  WriteTokens(m, Add(m, 1, a), a, 0);
  Commit(m, 1, 11);
  StepOutput out = Add(m, 2, b);
  ASSERT_EQ(out.num_cached_tokens, 8);
  WriteTokens(m, out, b, 8);
  ExpectBytes(m, 1, a);
  ExpectBytes(m, 2, b);
}

TEST(PrefixCacheTest, AHashCollisionIsAMiss) {
  const ConstantHasher constant;
  CheckedManager m = Make({.hasher = &constant});
  const std::vector<int32_t> a = Ids(9, 10);
  const std::vector<int32_t> b = Ids(9, 50);  // Other tokens, same keys.
  WriteTokens(m, Add(m, 1, a), a, 0);
  Commit(m, 1, 9);
  StepOutput out = Add(m, 2, b);
  EXPECT_EQ(out.num_cached_tokens, 0);
  WriteTokens(m, out, b, 0);
  Commit(m, 2, 9);  // Its chain stops at the taken key; nothing breaks.
  ExpectBytes(m, 2, b);
  // Every block of a's chain has key 7 too; the parent check keeps the
  // second block from matching the first.
  EXPECT_EQ(Add(m, 3, a).num_cached_tokens, 4);
}

TEST(PrefixCacheTest, SaltsAdaptersAndImagesKeepPrefixesApart) {
  CheckedManager m = Make({});
  const std::vector<int32_t> p = Ids(9);
  Add(m, 1, p, {.tenant_salt = 1});
  Commit(m, 1, 9);
  EXPECT_EQ(Add(m, 2, p, {.tenant_salt = 2}).num_cached_tokens, 0);
  EXPECT_EQ(Add(m, 3, p).num_cached_tokens, 0);
  EXPECT_EQ(Add(m, 4, p, {.tenant_salt = 1}).num_cached_tokens, 8);
  EXPECT_EQ(Add(m, 5, p, {.tenant_salt = 1, .adapter_id = 3}).num_cached_tokens,
            0);
  // An image in tokens [5, 7): block 0 still hits, block 1 does not.
  const MultimodalSpan image[] = {{.start = 5, .length = 2, .digest = 99}};
  EXPECT_EQ(
      Add(m, 6, p, {.tenant_salt = 1, .multimodal = image}).num_cached_tokens,
      4);
}

TEST(PrefixCacheTest, DecodedBlocksAreCachedOnceCommitted) {
  CheckedManager m = Make({});
  const std::vector<int32_t> prompt = Ids(4);
  Add(m, 1, prompt);
  std::vector<int32_t> all = prompt;
  // Speculative step: 4 draft tokens, 2 accepted.
  const std::vector<int32_t> drafts = Ids(4, 900);
  const SlotRequest spec[] = {
      {.seq = 1, .num_tokens = 4, .token_ids = drafts, .commit = 4}};
  ASSERT_THAT(m.Append(spec), IsOk());
  ASSERT_THAT(m.Truncate(1, 6), IsOk());
  all.insert(all.end(), drafts.begin(), drafts.begin() + 2);
  // Drafts were never committed: a prompt with them hits the prompt only.
  EXPECT_EQ(Add(m, 2, Concat(all, Ids(3, 7))).num_cached_tokens, 4);
  for (int32_t id = 950; all.size() < 12; ++id) {
    const int32_t token[] = {id};
    const SlotRequest r[] = {{.seq = 1,
                              .num_tokens = 1,
                              .token_ids = token,
                              .commit = static_cast<int64_t>(all.size())}};
    ASSERT_THAT(m.Append(r), IsOk());
    all.push_back(id);
  }
  // Tokens [0, 11) are committed: blocks 0 and 1 are matchable.
  EXPECT_EQ(Add(m, 3, all).num_cached_tokens, 8);
}

TEST(PrefixCacheTest, TruncatingIntoAPublishedBlockKeepsItAndCopiesOnWrite) {
  CheckedManager m = Make({});
  const std::vector<int32_t> p = Ids(9);
  WriteTokens(m, Add(m, 1, p), p, 0);
  Commit(m, 1, 9);
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  // Block 1 is rewritten next; its only holder is sequence 1, but its
  // bytes are the cached entry's: the write copies it (under the lock a
  // pin takes, so no other thread can pin it half rewritten).
  ASSERT_THAT(m.Truncate(1, 6), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  const int32_t other[] = {4242};
  const SlotRequest r[] = {{.seq = 1, .num_tokens = 1, .token_ids = other}};
  StepOutput out;
  ASSERT_THAT(m.Append(r, &out), IsOk());
  EXPECT_EQ(m->stats().cow_copies, 1);
  WriteToken(*m->kv_pool(), out.slot_mapping[0], 4242);
  std::vector<int32_t> rewritten(p.begin(), p.begin() + 6);
  rewritten.push_back(4242);
  ExpectBytes(m, 1, rewritten);
  EXPECT_EQ(Add(m, 2, p).num_cached_tokens, 8);
  ExpectBytes(m, 2, std::vector<int32_t>(p.begin(), p.begin() + 8));
}

TEST(PrefixCacheTest, TruncatingIntoASharedCachedBlockCopiesOnWrite) {
  CheckedManager m = Make({});
  const std::vector<int32_t> p = Ids(9);
  WriteTokens(m, Add(m, 1, p), p, 0);
  Commit(m, 1, 9);
  StepOutput b = Add(m, 2, p);
  ASSERT_EQ(b.num_cached_tokens, 8);
  WriteTokens(m, b, p, 8);
  ASSERT_THAT(m.Truncate(2, 6), IsOk());
  const int32_t other[] = {4242};
  const SlotRequest r[] = {{.seq = 2, .num_tokens = 1, .token_ids = other}};
  StepOutput out;
  ASSERT_THAT(m.Append(r, &out), IsOk());
  EXPECT_EQ(m->stats().cow_copies, 1);
  WriteToken(*m->kv_pool(), out.slot_mapping[0], 4242);
  ExpectBytes(m, 1, p);  // The cached block kept its bytes.
  EXPECT_EQ(Add(m, 3, p).num_cached_tokens, 8);
  ExpectBytes(m, 3, std::vector<int32_t>(p.begin(), p.begin() + 8));
}

TEST(PrefixCacheTest, ForkedSequencesShareAndPublishOnce) {
  CheckedManager m = Make({});
  const std::vector<int32_t> p = Ids(8);
  Add(m, 1, p);
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  Commit(m, 2, 8);
  Commit(m, 1, 8);
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  EXPECT_EQ(m->stats().prefix.switched_blocks, 0);
  EXPECT_EQ(TableOf(*m, 1), TableOf(*m, 2));
}

TEST(PrefixCacheTest, APrefixComputedTwiceIsKeptOnce) {
  CheckedManager m = Make({});
  const std::vector<int32_t> p = Ids(9);
  Add(m, 1, p);
  Add(m, 2, p);  // Admitted before 1 committed: computed again.
  const int32_t used = m->stats().used_blocks;
  Commit(m, 1, 9);
  Commit(m, 2, 9);
  EXPECT_EQ(m->stats().prefix.switched_blocks, 2);
  EXPECT_EQ(m->stats().used_blocks, used - 2);
  const std::vector<BlockId> t1 = TableOf(*m, 1);
  const std::vector<BlockId> t2 = TableOf(*m, 2);
  EXPECT_EQ(t2[0], t1[0]);
  EXPECT_EQ(t2[1], t1[1]);
}

TEST(PrefixCacheTest, CachedFreeBlocksCountAsFreeAndAreEvictedLazily) {
  CheckedManager m = Make({.num_blocks = 4});
  Add(m, 1, Ids(16));
  Commit(m, 1, 16);
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_EQ(m->stats().free_blocks, 4);
  EXPECT_EQ(m->stats().prefix.evictable_blocks, 4);
  const std::vector<int32_t> other = Ids(16, 5000);
  EXPECT_EQ(m->CanAdmit(other, 0), Admission::kAdmit);
  Add(m, 2, other, {}, 0);
  EXPECT_EQ(m->stats().prefix.evicted_blocks, 4);
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
}

TEST(PrefixCacheTest, AHitInUseCostsNoNewBlock) {
  CheckedManager m = Make({.num_blocks = 4});
  const std::vector<int32_t> p = Ids(9);  // 3 blocks.
  Add(m, 1, p, {}, 0);
  Commit(m, 1, 9);
  // One free block: 9 tokens need 3, two of them are hits in use.
  EXPECT_EQ(m->CanAdmit(9, 0), Admission::kLater);
  EXPECT_EQ(m->CanAdmit(p, 0), Admission::kAdmit);
  EXPECT_EQ(Add(m, 2, p, {}, 0).num_cached_tokens, 8);
  EXPECT_EQ(m->stats().free_blocks, 0);
}

TEST(PrefixCacheTest, ReservationCountsHitsAsHeld) {
  CheckedManager m =
      Make({.admission = AdmissionMode::kReservation, .num_blocks = 5});
  const std::vector<int32_t> p = Ids(9);
  Add(m, 1, p, {}, 3);  // 12 tokens: 3 blocks reserved.
  Commit(m, 1, 9);
  // 2 free blocks: 12 tokens need 3, of which 2 are hits in use.
  EXPECT_EQ(m->CanAdmit(9, 3), Admission::kLater);
  EXPECT_EQ(m->CanAdmit(p, 3), Admission::kAdmit);
  EXPECT_EQ(Add(m, 2, p, {}, 3).num_cached_tokens, 8);
  // Both can still grow to their 12 tokens.
  for (SequenceId seq : {1, 2}) {
    const std::vector<int32_t> more = Ids(3, 777);
    const SlotRequest r[] = {{.seq = seq, .num_tokens = 3, .token_ids = more}};
    EXPECT_THAT(m.Append(r), IsOk());
  }
}

// A Readmit or SwapIn without room fails before pinning its cached blocks,
// so the pool's books (allocations, the LRU of cached blocks) are as they
// were; with exactly the room it needs, it succeeds. Sequence 1 (9 tokens,
// at most 9 + max_new) is preempted or swapped out (host mode: its blocks
// are free again) with 2 cached blocks; sequence 2 holds `refused_with`
// tokens of the other 6 blocks at the refusal and `fits_with` at the exact
// fit. Under kReservation the room is the reservation's growth to
// max_tokens. (Readmit used to pin the hits and release them again: that
// moved the revived blocks in the LRU, and a failed resize counted a
// failed allocation. SwapIn did so until manager_fuzzer's prefix mode
// found its failed calls counting the revivals as allocations.)
struct ReadmitRoom {
  std::string name;
  bool swap;  // SwapOut + SwapIn, else Preempt + Readmit.
  AdmissionMode admission;
  int64_t max_new;
  int64_t refused_with;
  int64_t fits_with;
  std::string refusal;
};

class ReadmitRoomTest : public ::testing::TestWithParam<ReadmitRoom> {};

TEST_P(ReadmitRoomTest, AReadmitWithoutRoomChangesNothing) {
  const ReadmitRoom& c = GetParam();
  CheckedManager m = Make(
      {.admission = c.admission, .num_blocks = 8, .num_host_blocks = 4});
  Add(m, 1, Ids(9), {}, c.max_new);
  Commit(m, 1, 9);
  // 2 cached free blocks + 6 plain.
  ASSERT_THAT(c.swap ? m->SwapOut(1).status() : m->Preempt(1), IsOk());
  const SequenceState away =
      c.swap ? SequenceState::kSwappedOut : SequenceState::kPreempted;
  const auto bring_back = [&](StepOutput* out) {
    return c.swap ? m->SwapIn(1).status() : m->Readmit(1, out);
  };
  StepOutput out;
  ASSERT_THAT(m->AddSequence(2, c.refused_with, 0, &out), IsOk());
  const PoolStats pool_before = m->books().stats();
  const std::vector<BlockId> lru_before = m->books().EvictionOrder();
  ASSERT_EQ(lru_before.size(), 2);
  const ManagerStats before = m->stats();
  EXPECT_THAT(bring_back(&out),
              StatusIs(Code::kResourceExhausted,
                       HasSubstr(absl::StrCat(c.swap ? "SwapIn" : "Readmit",
                                              " of sequence 1: ", c.refusal))));
  m->CheckInvariants();
  EXPECT_EQ(m->books().stats(), pool_before);
  EXPECT_EQ(m->books().EvictionOrder(), lru_before);
  EXPECT_EQ(m->stats().prefix.evictable_blocks, before.prefix.evictable_blocks);
  EXPECT_EQ(m->stats().prefix.rehit_blocks, before.prefix.rehit_blocks);
  EXPECT_EQ(m->stats().reserved_blocks, before.reserved_blocks);
  EXPECT_EQ(*m->state(1), away);
  // With one block more it fits exactly: the check refuses nothing Place
  // would take.
  ASSERT_THAT(m->Free(2), IsOk());
  ASSERT_THAT(m->AddSequence(2, c.fits_with, 0, &out), IsOk());
  ASSERT_THAT(bring_back(&out), IsOk());
  EXPECT_EQ(m->stats().prefix.rehit_blocks, before.prefix.rehit_blocks + 2);
  if (!c.swap) EXPECT_EQ(out.num_cached_tokens, 8);
  EXPECT_EQ(m->books().num_unreserved_free_blocks(), 0);
  m->CheckInvariants();
}

INSTANTIATE_TEST_SUITE_P(
    PrefixCacheTest, ReadmitRoomTest,
    ::testing::Values(
        // 2 hits to revive and 1 fresh block, with 2 free.
        ReadmitRoom{"Watermark", false, AdmissionMode::kWatermark, 3, 24, 20,
                    "needs 3 free blocks (9 tokens, 2 blocks cached, 2 of "
                    "them free), 2 free"},
        ReadmitRoom{"WatermarkSwapIn", true, AdmissionMode::kWatermark, 3, 24,
                    20,
                    "needs 3 free blocks (9 tokens, 2 blocks cached, 2 of "
                    "them free), 2 free"},
        // 12 tokens at most: the same 3 blocks, all reserved.
        ReadmitRoom{"Reservation", false, AdmissionMode::kReservation, 3, 24,
                    20,
                    "needs 3 free blocks (9 tokens, 2 blocks cached, 2 of "
                    "them free; 1 reserved to 12 tokens), 2 free"},
        ReadmitRoom{"ReservationSwapIn", true, AdmissionMode::kReservation, 3,
                    24, 20,
                    "needs 3 free blocks (9 tokens, 2 blocks cached, 2 of "
                    "them free; 1 reserved to 12 tokens), 2 free"},
        // 17 tokens at most: 3 blocks reserved past the 2 hits, 5 in all,
        // with 4 free (kWatermark's count, 3, would have fit).
        ReadmitRoom{"ReservationGrowsToMaxTokens", false,
                    AdmissionMode::kReservation, 8, 16, 12,
                    "needs 5 free blocks (9 tokens, 2 blocks cached, 2 of "
                    "them free; 3 reserved to 17 tokens), 4 free"},
        ReadmitRoom{"ReservationGrowsToMaxTokensSwapIn", true,
                    AdmissionMode::kReservation, 8, 16, 12,
                    "needs 5 free blocks (9 tokens, 2 blocks cached, 2 of "
                    "them free; 3 reserved to 17 tokens), 4 free"}),
    [](const ::testing::TestParamInfo<ReadmitRoom>& info) {
      return info.param.name;
    });

TEST(PrefixCacheTest, RecomputePreemptionRecomputesOnlyWhatWasLost) {
  CheckedManager m = Make({});
  const std::vector<int32_t> p = Ids(12);
  Add(m, 1, p);
  Commit(m, 1, 12);
  ASSERT_THAT(m.Preempt(1), IsOk());
  StepOutput out;
  ASSERT_THAT(m.Readmit(1, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  EXPECT_THAT(out.slot_mapping, SizeIs(4));
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 2);
}

TEST(PrefixCacheTest, SwapInReHitsItsOwnPrefix) {
  CheckedManager m = Make({.num_host_blocks = 8});
  const std::vector<int32_t> p = Ids(14);
  WriteTokens(m, Add(m, 1, p), p, 0);
  Commit(m, 1, 14);
  ASSERT_THAT(m.SwapOut(1).status(), IsOk());
  const int64_t swapped = m->stats().swapped_blocks;
  ASSERT_THAT(m.SwapIn(1).status(), IsOk());
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 3);
  EXPECT_EQ(m->stats().swapped_blocks - swapped, 1);  // Only the tail.
  ExpectBytes(m, 1, p);
}

// Blocks another request published past this one's commit point come
// back as hits, but the commit point stays the server's: its next commit,
// anywhere from there, is taken, and finds those blocks published.
TEST(PrefixCacheTest, SwapInKeepsTheServersCommitPoint) {
  CheckedManager m = Make({.num_host_blocks = 8});
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Ids(12), 8, &out), IsOk());
  Commit(m, 1, 4);  // The server committed 4 of its 12 tokens.
  ASSERT_THAT(m->AddSequence(2, Ids(12), 8, &out), IsOk());
  Commit(m, 2, 12);  // Another request publishes blocks 1 and 2.
  ASSERT_THAT(m.SwapOut(1).status(), IsOk());
  ASSERT_THAT(m.SwapIn(1).status(), IsOk());
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 3);  // Its 12 tokens' KV.
  const int32_t next[] = {999};
  const SlotRequest r[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = next, .commit = 8}};
  EXPECT_THAT(m.Append(r), IsOk());
  ASSERT_THAT(m.Free(2), IsOk());
  ASSERT_THAT(m.Free(1), IsOk());
  // Blocks 0 and 1 stayed cached under sequence 1's chain.
  ASSERT_THAT(m->AddSequence(3, Ids(12), 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);  // Leaving the last token.
}

TEST(PrefixCacheTest, BooksOnlySwapInCopiesOnlyUncachedBlocks) {
  CheckedManager m =
      Make({.storage = StorageMode::kBooksOnly, .num_host_blocks = 8});
  Add(m, 1, Ids(14));
  Commit(m, 1, 14);
  absl::StatusOr<SwapPlan> out = m.SwapOut(1);
  ASSERT_THAT(out.status(), IsOk());
  EXPECT_THAT(out->src, SizeIs(4));
  ASSERT_THAT(m.CompleteSwap(1), IsOk());
  absl::StatusOr<SwapPlan> in = m.SwapIn(1);
  ASSERT_THAT(in.status(), IsOk());
  EXPECT_THAT(in->src, SizeIs(1));
  EXPECT_THAT(in->dst, SizeIs(1));
  ASSERT_THAT(m.CompleteSwap(1), IsOk());
  EXPECT_EQ(in->dst[0], TableOf(*m, 1).back());
}

// Books-only: a copy-on-write source stays held until the caller ran the
// copy. Here that source is a cached block whose prefix's holders all let
// go first: an entry in use under a free parent, which the books allow
// (manager_fuzzer's prefix mode found CheckInvariants refusing it). A hit
// then serves it, and evicting its parent unpublishes it with the copy
// still holding it.
TEST(PrefixCacheTest, ACopySourceMayOutliveItsPrefix) {
  CheckedManager m =
      Make({.storage = StorageMode::kBooksOnly, .num_blocks = 5});
  const std::vector<int32_t> p = Ids(8);
  Add(m, 1, std::vector<int32_t>(p.begin(), p.begin() + 7));  // Blocks A, B.
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  // Both write their 8th token into the shared tail B: one of them copies
  // it, and the copy is left to run later.
  const int32_t last[] = {p[7]};
  const SlotRequest both[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = last, .commit = 7},
      {.seq = 2, .num_tokens = 1, .token_ids = last}};
  StepOutput out;
  ASSERT_THAT(m->AppendSlots(both, &out), IsOk());
  ASSERT_EQ(out.copies.size(), 1);
  PendingCopies copy = std::move(out.copies);
  const BlockId b = copy.ops()[0].src;
  const SequenceId keeper = TableOf(*m, 1)[1] == b ? 1 : 2;
  ASSERT_THAT(m.Free(3 - keeper), IsOk());
  Commit(m, keeper, 8);  // A and B are published.
  ASSERT_THAT(m.Free(keeper), IsOk());
  m->CheckInvariants();
  EXPECT_EQ(m->books().ref_count(b), 1);  // The copy's hold only.
  EXPECT_TRUE(m->books().is_cached(b));
  EXPECT_EQ(m->stats().prefix.evictable_blocks, 1);  // A.

  // A hit revives A and pins B too.
  EXPECT_EQ(Add(m, 3, Concat(p, {9})).num_cached_tokens, 8);
  EXPECT_EQ(m->books().ref_count(b), 2);
  ASSERT_THAT(m.Free(3), IsOk());
  // Four fresh blocks take the plain free blocks and then evict A, which
  // drops B from the index; the copy still holds it.
  Add(m, 4, Ids(16, 900), {}, 0);
  EXPECT_FALSE(m->books().is_cached(b));
  EXPECT_EQ(m->books().ref_count(b), 1);
  copy.MarkDone();
  m->CheckInvariants();
  EXPECT_EQ(m->books().ref_count(b), 0);
  ASSERT_THAT(m.Free(4), IsOk());
  EXPECT_EQ(m->stats().free_blocks, 5);
}

TEST(PrefixCacheTest, EventsAndResets) {
  CheckedManager m = Make({.events = 16});
  const std::vector<int32_t> p = Ids(9);
  Add(m, 1, p);
  Commit(m, 1, 9);
  std::vector<PrefixEvent> events = m->TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind, PrefixEvent::Kind::kBlockStored);
  EXPECT_THAT(events[0].block_hashes, SizeIs(2));
  EXPECT_EQ(events[0].token_ids,
            std::vector<int32_t>(p.begin(), p.begin() + 8));
  m->ResetPrefixCache();
  m->CheckInvariants();
  events = m->TakeEvents();
  ASSERT_THAT(events, SizeIs(1));
  EXPECT_EQ(events[0].kind, PrefixEvent::Kind::kAllBlocksCleared);
  EXPECT_EQ(Add(m, 2, p).num_cached_tokens, 0);
  // Sequence 1 republishes at its next commit.
  const int32_t next[] = {1};
  const SlotRequest r[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = next, .commit = 9}};
  ASSERT_THAT(m.Append(r), IsOk());
  EXPECT_EQ(Add(m, 3, p).num_cached_tokens, 8);
}

TEST(PrefixCacheTest, AForkedBlockIsNotSwitchedUnderItsOtherHolder) {
  // Sequences 1 and 2 (a fork) share two uncommitted blocks; sequence 3
  // commits an equal first block. Switching 1's first block to 3's would
  // publish the shared second block under a parent 2 does not hold, and
  // freeing 1 and 3 would leave 2 holding a block whose parent is free.
  CheckedManager m = Make({});
  const std::vector<int32_t> prompt = Ids(8);
  Add(m, 1, prompt);
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  Add(m, 3, Concat(Ids(4), Ids(4, 900)));
  Commit(m, 3, 8);
  Commit(m, 1, 8);  // Block 0 is shared with 2: the chain stops.
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  ASSERT_THAT(m.Free(3), IsOk());
  ASSERT_THAT(m.Free(1), IsOk());  // CheckedManager checks the parents.
  // Now 2 holds its blocks alone: its commit takes over 3's cached entry.
  Commit(m, 2, 8);
  EXPECT_EQ(Add(m, 4, Concat(prompt, {1})).num_cached_tokens, 8);
}

TEST(PrefixCacheTest, BadInputChangesNothing) {
  CheckedManager m = Make({});
  Add(m, 1, Ids(6));
  const std::vector<SequenceId> ids = {1, 2};
  const ManagerSnapshot before = TakeSnapshot(*m, ids);
  const int32_t two[] = {1, 2};
  const SlotRequest wrong_ids[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = two}};
  EXPECT_THAT(m.Append(wrong_ids), StatusIs(Code::kInvalidArgument));
  const int32_t one[] = {1};
  const SlotRequest too_far[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = one, .commit = 7}};
  EXPECT_THAT(m.Append(too_far), StatusIs(Code::kOutOfRange));
  const TokenCommit unknown{.seq = 9, .num_tokens = 1};
  EXPECT_THAT(m->CommitTokens(absl::MakeConstSpan(&unknown, 1)),
              StatusIs(Code::kNotFound));
  EXPECT_EQ(TakeSnapshot(*m, ids), before);
  Commit(m, 1, 4);
  const ManagerSnapshot committed = TakeSnapshot(*m, ids);
  const TokenCommit back{.seq = 1, .num_tokens = 3};
  EXPECT_THAT(m->CommitTokens(absl::MakeConstSpan(&back, 1)),
              StatusIs(Code::kOutOfRange));
  const MultimodalSpan outside[] = {{.start = 4, .length = 4, .digest = 1}};
  StepOutput out;
  EXPECT_THAT(m->AddSequence(2, Ids(6), 1, &out, {.multimodal = outside}),
              StatusIs(Code::kInvalidArgument));
  EXPECT_EQ(TakeSnapshot(*m, ids), committed);
  EXPECT_EQ(m->stats().prefix.queries, 1);

  KVCacheManager::Options plain{.layout = SmallLayout(), .num_blocks = 8};
  std::unique_ptr<KVCacheManager> off = *KVCacheManager::Create(plain);
  EXPECT_THAT(off->CommitTokens({}), StatusIs(Code::kFailedPrecondition));
  EXPECT_FALSE(off->prefix_caching());
}

// --- Token ids kept by the server (SlotRequest::token_ids left out) ---

// One decode step of `seq` without token ids, committing what it held.
void DecodeWithoutIds(CheckedManager& m, SequenceId seq) {
  const int64_t held = *m->num_tokens(seq);
  const SlotRequest r[] = {{.seq = seq, .num_tokens = 1, .commit = held}};
  ASSERT_THAT(m.Append(r), IsOk());
}

TEST(PrefixCacheTest, IdsGivenAtTheEndPublishTheDecodedBlocksThen) {
  CheckedManager m = Make({});
  const std::vector<int32_t> prompt = Ids(8);
  const std::vector<int32_t> generated = Ids(9, 900);
  Add(m, 1, prompt, {}, 32);
  Commit(m, 1, 8);
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  for (int i = 0; i < 9; ++i) DecodeWithoutIds(m, 1);
  // Committed through token 16, but the ids past the prompt are unknown:
  // nothing more is matchable.
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  const std::vector<int32_t> all = Concat(prompt, generated);
  EXPECT_EQ(Add(m, 2, all).num_cached_tokens, 8);
  ASSERT_THAT(m.Free(2), IsOk());
  const TokenCommit done{.seq = 1, .num_tokens = 17, .token_ids = generated};
  ASSERT_THAT(m->CommitTokens(absl::MakeConstSpan(&done, 1)), IsOk());
  m->CheckInvariants();
  EXPECT_EQ(m->stats().prefix.cached_blocks, 4);  // Tokens [0, 16).
  ASSERT_THAT(m.Free(1), IsOk());
  EXPECT_EQ(Add(m, 3, all).num_cached_tokens, 16);  // (17 - 1) / 4 blocks.
}

TEST(PrefixCacheTest, IdsAtTheEndCacheWhatIdsPerStepCache) {
  // The same random decode runs twice: with ids in every step, and with
  // none and all of them in one CommitTokens at the end. Then both caches
  // hold the same blocks and every sequence's whole history hits.
  std::mt19937 rng(20261202);
  for (int trial = 0; trial < 20; ++trial) {
    CheckedManager per_step = Make({.num_blocks = 512});
    CheckedManager at_end = Make({.num_blocks = 512});
    constexpr SequenceId kSeqs = 4;
    std::vector<std::vector<int32_t>> tokens(kSeqs);
    std::vector<int64_t> prompt_size(kSeqs), committed(kSeqs, 0);
    for (SequenceId seq = 0; seq < kSeqs; ++seq) {
      // Half the sequences share their first block, so publishing meets
      // equal blocks too.
      const std::vector<int32_t> prompt =
          Concat(seq % 2 == 0 ? Ids(4, 7) : Ids(4, 1000 * (seq + 1)),
                 Ids(1 + static_cast<int32_t>(rng() % 9), 100 * (seq + 1)));
      Add(per_step, seq, prompt, {}, 160);
      Add(at_end, seq, prompt, {}, 160);
      tokens[seq] = prompt;
      prompt_size[seq] = static_cast<int64_t>(prompt.size());
    }
    for (int step = 0; step < 40; ++step) {
      const SequenceId seq = static_cast<SequenceId>(rng() % kSeqs);
      std::vector<int32_t>& t = tokens[seq];
      const int64_t held = static_cast<int64_t>(t.size());
      const int32_t k = 1 + static_cast<int32_t>(rng() % 3);
      const std::vector<int32_t> ids =
          Ids(k, 10000 * (seq + 1) + static_cast<int32_t>(held));
      int64_t commit = -1;
      if (rng() % 2 == 0) {
        commit = committed[seq] +
                 static_cast<int64_t>(rng() % (held - committed[seq] + 1));
        committed[seq] = commit;
      }
      const SlotRequest with{
          .seq = seq, .num_tokens = k, .token_ids = ids, .commit = commit};
      const SlotRequest without{.seq = seq, .num_tokens = k, .commit = commit};
      ASSERT_THAT(per_step.Append(absl::MakeConstSpan(&with, 1)), IsOk());
      ASSERT_THAT(at_end.Append(absl::MakeConstSpan(&without, 1)), IsOk());
      t.insert(t.end(), ids.begin(), ids.end());
    }
    for (SequenceId seq = 0; seq < kSeqs; ++seq) {
      const std::vector<int32_t>& t = tokens[seq];
      const int64_t n = static_cast<int64_t>(t.size());
      const TokenCommit all{.seq = seq, .num_tokens = n};
      ASSERT_THAT(per_step->CommitTokens(absl::MakeConstSpan(&all, 1)), IsOk());
      const TokenCommit late{
          .seq = seq,
          .num_tokens = n,
          .token_ids = absl::MakeConstSpan(t).subspan(prompt_size[seq])};
      ASSERT_THAT(at_end->CommitTokens(absl::MakeConstSpan(&late, 1)), IsOk());
      at_end->CheckInvariants();
    }
    ASSERT_EQ(per_step->stats().prefix.cached_blocks,
              at_end->stats().prefix.cached_blocks);
    for (SequenceId seq = 0; seq < kSeqs; ++seq) {
      const std::vector<int32_t> probe = Concat(tokens[seq], {1});
      const int64_t whole = static_cast<int64_t>(tokens[seq].size()) / kBt * kBt;
      EXPECT_EQ(Add(per_step, 100 + seq, probe).num_cached_tokens, whole);
      EXPECT_EQ(Add(at_end, 100 + seq, probe).num_cached_tokens, whole)
          << "trial " << trial << " sequence " << seq;
    }
  }
}

TEST(PrefixCacheTest, LateIdsBadInputChangesNothing) {
  CheckedManager m = Make({});
  Add(m, 1, Ids(8), {}, 32);
  Add(m, 2, Ids(8, 300), {}, 32);
  // Sequence 1: 12 tokens, 12 committed, ids of 8 (its prompt's two blocks
  // are published).
  for (int i = 0; i < 4; ++i) DecodeWithoutIds(m, 1);
  const TokenCommit prompt_done{.seq = 1, .num_tokens = 12};
  ASSERT_THAT(m->CommitTokens(absl::MakeConstSpan(&prompt_done, 1)), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  const std::vector<SequenceId> ids = {1, 2};
  const ManagerSnapshot before = TakeSnapshot(*m, ids);
  // Ids again while four are missing.
  const int32_t one[] = {5};
  const SlotRequest lagging[] = {{.seq = 1, .num_tokens = 1, .token_ids = one}};
  EXPECT_THAT(m.Append(lagging), StatusIs(Code::kInvalidArgument));
  // Five ids for the four missing; the valid entry before it is not applied.
  const int32_t five[] = {5, 6, 7, 8, 9};
  const TokenCommit too_many[] = {
      {.seq = 2, .num_tokens = 8},
      {.seq = 1, .num_tokens = 12, .token_ids = five}};
  EXPECT_THAT(m->CommitTokens(too_many), StatusIs(Code::kInvalidArgument));
  // The same sequence's ids twice in one call.
  const TokenCommit twice[] = {{.seq = 1, .num_tokens = 12, .token_ids = one},
                               {.seq = 1, .num_tokens = 12, .token_ids = one}};
  EXPECT_THAT(m->CommitTokens(twice), StatusIs(Code::kInvalidArgument));
  EXPECT_EQ(TakeSnapshot(*m, ids), before);
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2);
  // Exactly the four missing ids are still taken, and publish block 2.
  const int32_t four[] = {5, 6, 7, 8};
  const TokenCommit right{.seq = 1, .num_tokens = 12, .token_ids = four};
  ASSERT_THAT(m->CommitTokens(absl::MakeConstSpan(&right, 1)), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 3);
  // Caught up: ids per step are taken again.
  const SlotRequest again[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = one, .commit = 12}};
  EXPECT_THAT(m.Append(again), IsOk());
}

TEST(PrefixCacheTest, LateIdsWithPreemptionAndTruncation) {
  CheckedManager m = Make({});
  const std::vector<int32_t> prompt = Ids(8);
  Add(m, 1, prompt, {}, 32);
  Commit(m, 1, 8);
  for (int i = 0; i < 6; ++i) DecodeWithoutIds(m, 1);  // 14 tokens, ids of 8.
  ASSERT_THAT(m.Preempt(1), IsOk());
  StepOutput out;
  ASSERT_THAT(m.Readmit(1, &out), IsOk());
  // Only blocks with ids can hit; the rest is recomputed.
  EXPECT_EQ(out.num_cached_tokens, 8);
  EXPECT_THAT(out.slot_mapping, SizeIs(6));
  // Truncating past the ids keeps them; below them drops the rest.
  ASSERT_THAT(m.Truncate(1, 12), IsOk());
  const int32_t four[] = {40, 41, 42, 43};
  const TokenCommit late{.seq = 1, .num_tokens = 12, .token_ids = four};
  ASSERT_THAT(m->CommitTokens(absl::MakeConstSpan(&late, 1)), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 3);
  EXPECT_EQ(Add(m, 2, Concat(prompt, {40, 41, 42, 43, 9})).num_cached_tokens,
            12);
  ASSERT_THAT(m.Free(2), IsOk());
  ASSERT_THAT(m.Truncate(1, 6), IsOk());
  const int32_t one[] = {7};
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1, .token_ids = one}};
  EXPECT_THAT(m.Append(step), IsOk());  // The ids of all 6 kept: caught up.
}

}  // namespace
}  // namespace pagedkv
