// Prefix caching with layer groups: the anchor group's chain and the other
// groups' entries under it. A hit covers the window the next token reads
// in every group (and only that, holes below), is never matched before its
// commit, is a miss on a forced hash collision, stops where a window group
// lost a block, and survives eviction, truncation, preemption and swap
// (SwapIn re-hits what stayed cached), also when no group is full (a
// window group anchors the cache). A seeded property test writes a
// content model into every slot the manager hands out (group, position,
// digest of the tokens up to it) and checks that every block of every hit
// and of every swapped-in table holds exactly the sequence's content:
// nothing wrong is ever served.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/copy_on_write.h"
#include "allocator/pool_stats.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_event.h"
#include "allocator/window_blocks.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

// Books only, `full` full groups then `windows` window groups of `window`
// tokens, prefix caching on, no watermark.
KVCacheManager::Options Options(int32_t num_blocks, int32_t block_tokens,
                                int32_t full, int32_t windows, int32_t window) {
  KVCacheManager::Options o = ::pagedkv::testing::GroupedBooksOnlyOptions(
      num_blocks, block_tokens, full, windows, window);
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.prefix_caching.max_pending_events = 1 << 16;
  return o;
}

std::vector<int32_t> Iota(int32_t n, int32_t from = 100) {
  std::vector<int32_t> v(n);
  for (int32_t i = 0; i < n; ++i) v[i] = from + i;
  return v;
}

std::vector<BlockId> Table(const KVCacheManager& m, SequenceId seq,
                           int32_t g) {
  const KVCacheManager::RunningTable t = *m.group_table(seq, g);
  return {t.blocks.begin(), t.blocks.end()};
}

// A manager of `layout` and `groups` on the caller's shared `pool`, prefix
// caching on, no watermark.
KVCacheManager::Options SharedPoolOptions(const KVLayout& layout, KVPool* pool,
                                          std::vector<LayerGroup> groups) {
  KVCacheManager::Options o;
  o.layout = layout;
  o.pool = pool;
  o.watermark = 0.0;
  o.prefix_caching.enabled = true;
  o.layer_groups = std::move(groups);
  return o;
}

// Commits every token of seq.
void CommitAll(KVCacheManager& m, SequenceId seq) {
  const TokenCommit c[] = {{.seq = seq, .num_tokens = *m.num_tokens(seq)}};
  ASSERT_THAT(m.CommitTokens(c), IsOk());
}

// One decode step of seq with token id `token`, then the invariants.
void Step(KVCacheManager& m, SequenceId seq, int32_t token) {
  const int32_t ids[] = {token};
  const SlotRequest r[] = {{.seq = seq, .num_tokens = 1, .token_ids = ids}};
  StepOutput out;
  ASSERT_THAT(m.AppendSlots(r, &out), IsOk());
  m.CheckInvariants();
}

// A Readmit without room fails before pinning its cached blocks, so the
// pool's books (allocations, the LRU of cached blocks) are as they were.
// Block 4 tokens; 1 full group and 1 window group of 8 tokens, 16 blocks.
TEST(GroupedPrefixTest, AReadmitWithoutRoomChangesNothing) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(16, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(9), 8, &out), IsOk());
  CommitAll(*m, 1);
  ASSERT_THAT(m->Preempt(1), IsOk());  // 4 cached free blocks, 12 plain.
  ASSERT_THAT(m->AddSequence(2, 24, 0, &out), IsOk());  // The 12 plain.
  const PoolStats pool_before = m->books().stats();
  const ManagerStats before = m->stats();
  // 3 blocks a group: 2 hits each to revive, 1 fresh each; 4 free.
  EXPECT_THAT(m->Readmit(1, &out),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("needs 6 free blocks")));
  m->CheckInvariants();
  EXPECT_EQ(m->books().stats(), pool_before);
  EXPECT_EQ(m->stats().prefix.evictable_blocks, before.prefix.evictable_blocks);
  EXPECT_EQ(*m->state(1), SequenceState::kPreempted);
  ASSERT_THAT(m->Free(2), IsOk());
  ASSERT_THAT(m->Readmit(1, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  m->CheckInvariants();
}

// SwapIn takes the blocks still cached back without a copy (within the
// computed tokens) and copies only the live entries past the hit; where
// the hit is shorter than a window group's holes, its pins there go back.
// Block 4 tokens; 1 full group and 1 window group of 8 tokens.
TEST(GroupedPrefixTest, ASwapInReHitsWhatStayedCached) {
  for (const bool lagging_commit : {false, true}) {
    SCOPED_TRACE(lagging_commit ? "1 block committed" : "all committed");
    KVCacheManager::Options o = Options(32, 4, 1, 1, 8);
    o.num_host_blocks = 16;
    std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
    StepOutput out;
    ASSERT_THAT(m->AddSequence(1, Iota(12), 8, &out), IsOk());
    const TokenCommit c[] = {{.seq = 1, .num_tokens = lagging_commit ? 4 : 12}};
    ASSERT_THAT(m->CommitTokens(c), IsOk());
    // 13 tokens, 12 computed: the window group released block 0.
    Step(*m, 1, 500);
    const std::vector<BlockId> full = Table(*m, 1, 0);
    const std::vector<BlockId> window = Table(*m, 1, 1);
    ASSERT_EQ(full.size(), 4u);
    ASSERT_FALSE(window[0].is_valid());
    const absl::StatusOr<SwapPlan> out_plan = m->SwapOut(1);
    ASSERT_THAT(out_plan.status(), IsOk());
    EXPECT_EQ(out_plan->src.size(), 7u);  // 4 + 3 live entries.
    ASSERT_THAT(m->CompleteSwap(1), IsOk());
    const int64_t swapped_before = m->stats().swapped_blocks;

    const absl::StatusOr<SwapPlan> in = m->SwapIn(1);
    ASSERT_THAT(in.status(), IsOk());
    m->CheckInvariants();
    const int64_t hit = lagging_commit ? 1 : 3;
    EXPECT_EQ(m->stats().prefix.rehit_blocks, hit);
    // Copied: the full group's entries past the hit, the window's live
    // ones past it (entries 1..3 when only block 0 hit, else entry 3).
    const size_t window_copies = lagging_commit ? 3 : 1;
    ASSERT_EQ(
        in->group_offsets,
        (std::vector<int32_t>{0, static_cast<int32_t>(4 - hit),
                              static_cast<int32_t>(4 - hit + window_copies)}));
    EXPECT_EQ(m->stats().swapped_blocks - swapped_before,
              static_cast<int64_t>(in->src.size()));
    ASSERT_THAT(m->CompleteSwap(1), IsOk());
    // The hit entries are the very blocks the sequence left cached, the
    // others the plan's copy targets, in order; the window group's holes
    // are where they were.
    const std::vector<BlockId> full_in = Table(*m, 1, 0);
    const std::vector<BlockId> window_in = Table(*m, 1, 1);
    ASSERT_EQ(full_in.size(), 4u);
    ASSERT_EQ(window_in.size(), 4u);
    std::vector<BlockId> copied;
    for (int64_t i = 0; i < 4; ++i) {
      if (i < hit) {
        EXPECT_EQ(full_in[i], full[i]) << "full entry " << i;
      } else {
        copied.push_back(full_in[i]);
      }
    }
    for (int64_t i = 0; i < 4; ++i) {
      EXPECT_EQ(window_in[i].is_valid(), i >= 1) << "window entry " << i;
      if (i >= 1 && i < hit) {
        EXPECT_EQ(window_in[i], window[i]) << "window entry " << i;
      } else if (i >= 1) {
        copied.push_back(window_in[i]);
      }
    }
    EXPECT_EQ(in->dst, copied);
    // The hit's tokens are final now; the next commit publishes the rest.
    Step(*m, 1, 501);
    CommitAll(*m, 1);
    m->CheckInvariants();
    ASSERT_THAT(m->Free(1), IsOk());
    EXPECT_EQ(m->stats().used_blocks, 0);
    m->CheckInvariants();
  }
}

// Blocks another request published past this one's commit point come
// back as hits, but the commit point stays the server's: its next commit,
// anywhere from there, is taken, and finds those blocks published in every
// group. Block 4 tokens; 1 full group and 1 window group of 8 tokens.
TEST(GroupedPrefixTest, ASwapInKeepsTheServersCommitPoint) {
  KVCacheManager::Options o = Options(32, 4, 1, 1, 8);
  o.num_host_blocks = 16;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(12), 8, &out), IsOk());
  const TokenCommit first[] = {{.seq = 1, .num_tokens = 4}};
  ASSERT_THAT(m->CommitTokens(first), IsOk());
  ASSERT_THAT(m->AddSequence(2, Iota(12), 8, &out), IsOk());
  CommitAll(*m, 2);  // Publishes blocks 1 and 2 in both groups.
  Step(*m, 1, 500);  // 13 tokens, 12 computed (a SwapIn's hits lie within).
  ASSERT_THAT(m->SwapOut(1).status(), IsOk());
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  const int64_t rehits = m->stats().prefix.rehit_blocks;
  ASSERT_THAT(m->SwapIn(1).status(), IsOk());
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  m->CheckInvariants();
  EXPECT_EQ(m->stats().prefix.rehit_blocks - rehits, 3);
  const int32_t ids[] = {999};
  const SlotRequest r[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = ids, .commit = 8}};
  EXPECT_THAT(m->AppendSlots(r, &out), IsOk());
  m->CheckInvariants();
  ASSERT_THAT(m->Free(2), IsOk());
  ASSERT_THAT(m->Free(1), IsOk());
  m->CheckInvariants();
  ASSERT_THAT(m->AddSequence(3, Iota(12), 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);  // Leaving the last token.
}

// A swapped-out sequence 29 tokens long (28 computed; block 4 tokens, 1
// full group and 1 window group of 8 tokens): 3 blocks of each group
// committed and cached, the window's host table live from block 5 on.
std::unique_ptr<KVCacheManager> SwappedOutAt29() {
  KVCacheManager::Options o = Options(32, 4, 1, 1, 8);
  o.num_host_blocks = 16;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  EXPECT_THAT(m->AddSequence(1, Iota(12), 40, &out), IsOk());
  const TokenCommit c[] = {{.seq = 1, .num_tokens = 12}};
  EXPECT_THAT(m->CommitTokens(c), IsOk());
  for (int32_t t = 0; t < 17; ++t) Step(*m, 1, 900 + t);
  const absl::StatusOr<SwapPlan> plan = m->SwapOut(1);
  EXPECT_THAT(plan.status(), IsOk());
  EXPECT_EQ(plan->src.size(), 11u);  // 8 full + 3 window (5..7) live.
  EXPECT_THAT(m->CompleteSwap(1), IsOk());
  return m;
}

// SwapIn needs room only for what it keeps: the full group's 3 cached
// blocks revived and 8 copies (full 3..7, window 5..7) = 11. The window
// group's cached blocks 1..2 are holes in its host table, so they are
// neither counted nor pinned (it counted them, 13, and refused with 12
// free).
TEST(GroupedPrefixTest, ASwapInCountsOnlyTheBlocksItKeeps) {
  std::unique_ptr<KVCacheManager> m = SwappedOutAt29();
  StepOutput out;
  // 20 of the 32 blocks go to another sequence (uncached ones first): 12
  // free, 6 of them cached (each group's 0..2).
  ASSERT_THAT(m->AddSequence(2, 40, 0, &out), IsOk());
  ASSERT_EQ(m->stats().free_blocks, 12);
  const absl::StatusOr<SwapPlan> in = m->SwapIn(1);
  ASSERT_THAT(in.status(), IsOk());
  m->CheckInvariants();
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 3);
  EXPECT_EQ(in->group_offsets, (std::vector<int32_t>{0, 5, 8}));
  EXPECT_EQ(m->stats().free_blocks, 1);
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  const std::vector<BlockId> window = Table(*m, 1, 1);
  ASSERT_EQ(window.size(), 8u);
  for (int32_t i = 0; i < 8; ++i) {
    EXPECT_EQ(window[i].is_valid(), i >= 5) << "window entry " << i;
  }
  Step(*m, 1, 950);
  CommitAll(*m, 1);
  ASSERT_THAT(m->Free(1), IsOk());
  ASSERT_THAT(m->Free(2), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
  m->CheckInvariants();
}

// Evicting window blocks the swapped-in table would not hold leaves the
// re-hit whole: the LRU's oldest are the window group's released blocks 0
// and 1, below its host table's first live entry (5). Before, their loss
// lowered the hit to 0 and every block was copied back.
TEST(GroupedPrefixTest, ASwapInReHitsPastEvictedWindowBlocksItDoesNotHold) {
  std::unique_ptr<KVCacheManager> m = SwappedOutAt29();
  StepOutput out;
  // 28 blocks: the 26 uncached ones and the 2 oldest cached.
  ASSERT_THAT(m->AddSequence(2, 56, 0, &out), IsOk());
  EXPECT_EQ(m->stats().prefix.evicted_blocks, 2);
  ASSERT_THAT(m->Free(2), IsOk());
  const absl::StatusOr<SwapPlan> in = m->SwapIn(1);
  ASSERT_THAT(in.status(), IsOk());
  m->CheckInvariants();
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 3)
      << "the full group's blocks 0..2 are still cached";
  EXPECT_EQ(in->src.size(), 8u);
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  ASSERT_THAT(m->Free(1), IsOk());
  m->CheckInvariants();
}

// A step writing into a tail that may be shared copies it in every group
// that holds it: a truncation back into a published block (its only
// holder is the sequence, but its bytes are the cached entry's), and a
// fork's shared partial tail. The cached entries stay hits on the old
// blocks. Block 4 tokens; 1 full group and 1 window group of 8 tokens.
TEST(GroupedPrefixTest, WritingATruncatedPublishedTailCopiesItInEveryGroup) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(16, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(9), 8, &out), IsOk());
  CommitAll(*m, 1);  // Blocks 0 and 1 of both groups are published.
  const std::vector<BlockId> full = Table(*m, 1, 0);
  const std::vector<BlockId> window = Table(*m, 1, 1);
  ASSERT_THAT(m->Truncate(1, 6), IsOk());  // The tail is block 1 (4, 5).
  Step(*m, 1, 4242);
  EXPECT_EQ(m->stats().cow_copies, 2);
  EXPECT_NE(Table(*m, 1, 0)[1], full[1]);
  EXPECT_NE(Table(*m, 1, 1)[1], window[1]);
  // The next step writes the private copy in place.
  Step(*m, 1, 4243);
  EXPECT_EQ(m->stats().cow_copies, 2);
  // The same prompt hits 2 blocks, the ones sequence 1 wrote first.
  ASSERT_THAT(m->AddSequence(2, Iota(9), 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  EXPECT_EQ(Table(*m, 2, 0)[1], full[1]);
  EXPECT_EQ(Table(*m, 2, 1)[1], window[1]);
  m->CheckInvariants();
}

TEST(GroupedPrefixTest, WritingAForkedTailCopiesItInEveryGroup) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(16, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(9), 8, &out), IsOk());
  CommitAll(*m, 1);
  ASSERT_THAT(m->Fork(1, 2), IsOk());  // Both hold block 2 (token 8).
  const std::vector<BlockId> full = Table(*m, 1, 0);
  const std::vector<BlockId> window = Table(*m, 1, 1);
  Step(*m, 2, 4242);
  EXPECT_EQ(m->stats().cow_copies, 2);
  EXPECT_NE(Table(*m, 2, 0)[2], full[2]);
  EXPECT_NE(Table(*m, 2, 1)[2], window[2]);
  EXPECT_EQ(Table(*m, 1, 0), full);  // The parent's tables are unchanged.
  EXPECT_EQ(Table(*m, 1, 1), window);
  // Sequence 1 is now the only holder of its tail: no copy.
  Step(*m, 1, 4242);
  EXPECT_EQ(m->stats().cow_copies, 2);
  EXPECT_EQ(Table(*m, 1, 0)[2], full[2]);
  EXPECT_EQ(Table(*m, 1, 1)[2], window[2]);
}

// Block 4 tokens; 1 full group, 2 window groups of 8 tokens. A 32-token
// prompt committed and freed; the same prompt and 5 more hits 8 blocks:
// the full group pins all 8, each window group only blocks 6 and 7 (the
// next token, 32, reads positions 25..32), holes below.
TEST(GroupedPrefixTest, AHitCoversTheWindowTheNextTokenReadsAndNoMore) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(64, 4, 1, 2, 8));
  StepOutput out;
  const std::vector<int32_t> prompt = Iota(32);
  ASSERT_THAT(m->AddSequence(1, prompt, 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  CommitAll(*m, 1);
  const std::vector<BlockId> full1 = Table(*m, 1, 0);
  const std::vector<BlockId> window1 = Table(*m, 1, 1);
  ASSERT_THAT(m->Free(1), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 3 * 8);
  EXPECT_EQ(m->stats().used_blocks, 0);

  std::vector<int32_t> longer = prompt;
  for (int32_t t : {7, 7, 7, 7, 7}) longer.push_back(t);
  ASSERT_EQ(m->CanAdmit(longer, 8), Admission::kAdmit);
  ASSERT_THAT(m->AddSequence(2, longer, 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 32);
  EXPECT_EQ(out.group_stride, 5);
  ASSERT_EQ(out.slot_mapping.size(), 3u * 5);
  const std::vector<BlockId> full2 = Table(*m, 2, 0);
  ASSERT_EQ(full2.size(), 10u);
  EXPECT_EQ(std::vector<BlockId>(full2.begin(), full2.begin() + 8), full1);
  for (int32_t g = 1; g <= 2; ++g) {
    const std::vector<BlockId> w = Table(*m, 2, g);
    ASSERT_EQ(w.size(), 10u);
    EXPECT_EQ(WindowFirstNeededBlock(32, 8, 4), 6);
    for (int32_t i = 0; i < 6; ++i) EXPECT_FALSE(w[i].is_valid()) << i;
    for (int32_t i = 6; i < 10; ++i) EXPECT_TRUE(w[i].is_valid()) << i;
  }
  EXPECT_EQ(Table(*m, 2, 1)[6], window1[6]);
  EXPECT_EQ(Table(*m, 2, 1)[7], window1[7]);
  // 8 + 2 + 2 pinned, 2 new per group: the window groups' blocks 0..5 stay
  // cached and free.
  EXPECT_EQ(m->stats().used_blocks, 8 + 2 + 2 + 3 * 2);
  EXPECT_EQ(m->stats().prefix.hit_blocks, 8);
  EXPECT_EQ(m->stats().prefix.hit_tokens, 32);
  m->CheckInvariants();
  ASSERT_THAT(m->Free(2), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
  m->CheckInvariants();
}

// A window group that released blocks before they were committed cannot
// serve a hit that needs them: the hit drops to the longest point where
// every group holds its window (here none), though the full group matches.
TEST(GroupedPrefixTest, AHitStopsWhereAWindowGroupLostABlock) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(64, 4, 1, 1, 8));
  StepOutput out;
  const std::vector<int32_t> prompt = Iota(8);
  ASSERT_THAT(m->AddSequence(1, prompt, 64, &out), IsOk());
  // 24 decode steps with ids, no commit: the window releases blocks 0..3.
  for (int32_t t = 0; t < 24; ++t) {
    const int32_t id = 108 + t;
    const SlotRequest r[] = {{.seq = 1, .num_tokens = 1, .token_ids = {&id, 1}}};
    ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
  }
  EXPECT_FALSE(Table(*m, 1, 1)[3].is_valid());
  CommitAll(*m, 1);
  // The full group published its 8 blocks, the window group its 2 live
  // ones (blocks 6 and 7: the last step, from token 31, read 24..31).
  EXPECT_EQ(m->stats().prefix.cached_blocks, 8 + 2);
  // A prompt sharing tokens 0..17: the full group matches 4 blocks; at 4
  // the window needs blocks 2 and 3, lost; at 2 blocks 0 and 1, lost.
  std::vector<int32_t> other = Iota(18);
  ASSERT_THAT(m->AddSequence(2, other, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  EXPECT_EQ(m->stats().prefix.hit_blocks, 0);
  // The whole committed sequence plus one token hits all of it: the
  // window's blocks 6 and 7 are the running sequence's own.
  std::vector<int32_t> all = Iota(32);
  all.push_back(1);
  ASSERT_THAT(m->AddSequence(3, all, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 32);
  EXPECT_EQ(Table(*m, 3, 1)[6], Table(*m, 1, 1)[6]);
  const std::vector<BlockId> full3 = Table(*m, 3, 0);
  EXPECT_EQ(std::vector<BlockId>(full3.begin(), full3.begin() + 8),
            Table(*m, 1, 0));  // The 8 full blocks are shared.
  m->CheckInvariants();
}

// Never matched before the commit; a sequence freed before its commit
// publishes nothing; a commit of 8 tokens makes two blocks matchable in
// every group.
TEST(GroupedPrefixTest, NothingIsMatchedBeforeItsCommit) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(64, 4, 1, 1, 8));
  StepOutput out;
  const std::vector<int32_t> prompt = Iota(17);
  ASSERT_THAT(m->AddSequence(1, prompt, 4, &out), IsOk());
  ASSERT_THAT(m->AddSequence(2, prompt, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  ASSERT_THAT(m->Free(2), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  const TokenCommit c[] = {{.seq = 1, .num_tokens = 8}};
  ASSERT_THAT(m->CommitTokens(c), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 2 * 2);
  ASSERT_THAT(m->AddSequence(3, prompt, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  m->CheckInvariants();
}

// Every key equal: a collision is a miss, never another prompt's KV, and
// the groups' entries collide too (one hasher for all).
class ConstantHasher : public BlockHasher {
 public:
  BlockHash Hash(BlockHash, absl::Span<const int32_t>,
                 const BlockExtraKeys&) const override {
    return 7;
  }
  const char* name() const override { return "constant"; }
};

TEST(GroupedPrefixTest, AForcedCollisionIsAMiss) {
  static const ConstantHasher hasher;
  KVCacheManager::Options o = Options(64, 4, 1, 1, 8);
  o.prefix_caching.hasher = &hasher;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(16), 4, &out), IsOk());
  CommitAll(*m, 1);
  // One entry under key 7 (the anchor's first block); the rest collide.
  EXPECT_EQ(m->stats().prefix.cached_blocks, 1);
  ASSERT_THAT(m->AddSequence(2, Iota(16, 500), 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  // The same tokens: the anchor's block 0 verifies, but the window group
  // holds no entry for it (its key collided), so no hit either.
  ASSERT_THAT(m->AddSequence(3, Iota(16), 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  m->CheckInvariants();
}

// Tenants with other salts share nothing; the same salt shares.
TEST(GroupedPrefixTest, SaltsIsolateTenants) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(64, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(16), 4, &out, {.tenant_salt = 1}),
              IsOk());
  CommitAll(*m, 1);
  ASSERT_THAT(m->AddSequence(2, Iota(16), 4, &out, {.tenant_salt = 2}),
              IsOk());
  EXPECT_EQ(out.num_cached_tokens, 0);
  ASSERT_THAT(m->AddSequence(3, Iota(16), 4, &out, {.tenant_salt = 1}),
              IsOk());
  EXPECT_EQ(out.num_cached_tokens, 12);
}

// Events: the anchor's chain as one BlockStored, each other group's blocks
// as chains of one under the anchor's block of the same index, in that
// group's name; eviction and a reset are reported.
TEST(GroupedPrefixTest, EventsNameTheGroupAndTheAnchorParent) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(64, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(8), 4, &out), IsOk());
  CommitAll(*m, 1);
  const std::vector<PrefixEvent> events = m->TakeEvents();
  const std::vector<int32_t> tokens = Iota(8);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].layer_group, 0);
  ASSERT_EQ(events[0].block_hashes.size(), 2u);
  EXPECT_EQ(events[0].parent_hash, kRootBlockHash);
  for (int32_t i = 0; i < 2; ++i) {
    const PrefixEvent& e = events[1 + i];
    EXPECT_EQ(e.kind, PrefixEvent::Kind::kBlockStored);
    EXPECT_EQ(e.layer_group, 1);
    ASSERT_EQ(e.block_hashes.size(), 1u);
    EXPECT_EQ(e.parent_hash, events[0].block_hashes[i]);
    EXPECT_EQ(e.block_hashes[0],
              Xxh3BlockHasher().Hash(
                  GroupChainParent(events[0].block_hashes[i], 1),
                  absl::MakeConstSpan(tokens.data() + 4 * i, 4), {}));
    EXPECT_EQ(e.token_ids, std::vector<int32_t>(tokens.begin() + 4 * i,
                                                tokens.begin() + 4 * i + 4));
  }
  m->ResetPrefixCache();
  const std::vector<PrefixEvent> cleared = m->TakeEvents();
  ASSERT_EQ(cleared.size(), 1u);
  EXPECT_EQ(cleared[0].kind, PrefixEvent::Kind::kAllBlocksCleared);
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  // The sequence republishes at its next commit.
  const int32_t id = 1;
  const SlotRequest r[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = {&id, 1}, .commit = 8}};
  ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 4);
  m->CheckInvariants();
}

// Eviction under pressure takes free cached blocks (leaves first), and a
// hit costs no new block: admission counts it.
TEST(GroupedPrefixTest, AdmissionCountsTheHitAndEvictsWhenFull) {
  // 1 full + 1 window group; 16 blocks.
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(16, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(24), 4, &out), IsOk());  // 12 blocks.
  CommitAll(*m, 1);
  // 4 free: a 24-token prompt without a hit needs 12.
  EXPECT_EQ(m->CanAdmit(Iota(24, 900), 4), Admission::kLater);
  // The same prompt with 1 more token: a hit of 6 blocks (full: 6; window:
  // blocks 4 and 5), 1 new block per group.
  std::vector<int32_t> more = Iota(24);
  more.push_back(5);
  ASSERT_EQ(m->CanAdmit(more, 4), Admission::kAdmit);
  ASSERT_THAT(m->AddSequence(2, more, 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 24);
  EXPECT_EQ(m->stats().used_blocks, 12 + 2);
  ASSERT_THAT(m->Free(1), IsOk());
  ASSERT_THAT(m->Free(2), IsOk());
  // A new 32-token prompt needs all 16 blocks: every cached one is
  // evicted for it.
  ASSERT_THAT(m->AddSequence(3, Iota(32, 900), 4, &out), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  EXPECT_GT(m->stats().prefix.evicted_blocks, 0);
  m->CheckInvariants();
}

// Managers on one pool share its prefix index only when their blocks
// mean the same. Equal prompts key equal chains: a one-layer model without
// groups would hit the full group's layer of the other; two window groups
// (a window anchor, group 1) would collide with the full anchor's entries
// and relax the index's in-use invariant for both. Their Create fails and
// changes nothing.
TEST(GroupedPrefixTest, ManagersWhoseBlocksDifferCannotShareAPrefixIndex) {
  const KVLayout two_layers = ::pagedkv::testing::SmallLayout();
  const std::vector<LayerGroup> full_window = {
      {.num_layers = 1}, {.num_layers = 1, .sliding_window = 6}};
  std::unique_ptr<KVPool> pool = *KVPool::Create(
      {.layout = GroupBlockLayout(two_layers, full_window),
       .num_blocks = 32,
       .concurrency = PoolConcurrency::kShared});
  auto options = [&](const KVLayout& layout, std::vector<LayerGroup> groups) {
    return SharedPoolOptions(layout, pool.get(), std::move(groups));
  };
  // A Create that fails on its own options leaves the index off, so it
  // binds the pool to no model.
  KVCacheManager::Options bad = options(two_layers, full_window);
  bad.max_step_tokens = -1;
  EXPECT_THAT(KVCacheManager::Create(bad),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(pool->books().prefix_cache_enabled());
  std::unique_ptr<KVCacheManager> a =
      *KVCacheManager::Create(options(two_layers, full_window));
  StepOutput out;
  ASSERT_THAT(a->AddSequence(1, Iota(9), 4, &out), IsOk());
  CommitAll(*a, 1);
  ASSERT_THAT(a->Free(1), IsOk());  // Its cached blocks are evictable.
  const PoolStats before = pool->books().stats();
  const std::vector<BlockId> lru = pool->books().EvictionOrder();
  ASSERT_EQ(lru.size(), 4);
  // Two window groups: the anchor is the 10-token window's layer.
  EXPECT_THAT(
      KVCacheManager::Create(options(
          two_layers, {{.num_layers = 1, .sliding_window = 6},
                       {.num_layers = 1, .sliding_window = 10}})),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("layer groups [1 full, 1 window 6]\"; asked for 4, "
                         "0 and \"layers=2 kv_heads=2 head_dim=2 "
                         "dtype=float32 block_tokens=4, layer groups [1 "
                         "window 6, 1 window 10]\"")));
  // A one-layer model without groups has blocks of the same geometry.
  KVLayout one_layer = two_layers;
  one_layer.num_layers = 1;
  EXPECT_THAT(KVCacheManager::Create(options(one_layer, {})),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("block_tokens=4, no layer groups")));
  EXPECT_EQ(pool->books().stats(), before);
  EXPECT_EQ(pool->books().EvictionOrder(), lru);
  EXPECT_EQ(pool->books().prefix_stats().cached_blocks, 4);
  // A manager of the same model shares the index: a hit.
  std::unique_ptr<KVCacheManager> b =
      *KVCacheManager::Create(options(two_layers, full_window));
  ASSERT_THAT(b->AddSequence(2, Iota(9), 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  a->CheckInvariants();
  b->CheckInvariants();
}

// The header's SwapPlan example with prefix caching (kv_cache_manager.h):
// block 4 tokens, group 0 full, group 1 a window of 4 tokens, 10 tokens
// of which the last step's started at token 9, 8 committed. The blocks
// that stayed cached come back pinned; only group 0's entry 2 and group
// 1's entry 2 are copied.
TEST(GroupedPrefixTest, TheHeadersSwapPlanExampleWithCachedBlocks) {
  KVCacheManager::Options o = Options(16, 4, 1, 1, 4);
  o.num_host_blocks = 8;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(9), 10, &out), IsOk());
  const int32_t id[] = {500};
  const SlotRequest step[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = id, .commit = 8}};
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  const std::vector<BlockId> full = Table(*m, 1, 0);
  const std::vector<BlockId> window = Table(*m, 1, 1);
  ASSERT_FALSE(window[0].is_valid());
  const SwapPlan out_plan = *m->SwapOut(1);
  ASSERT_EQ(out_plan.dst.size(), 5u);
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  const SwapPlan in_plan = *m->SwapIn(1);
  EXPECT_EQ(in_plan.src,
            (std::vector<BlockId>{out_plan.dst[2], out_plan.dst[4]}));
  EXPECT_EQ(in_plan.group_offsets, (std::vector<int32_t>{0, 1, 2}));
  m->CheckInvariants();
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  EXPECT_EQ(Table(*m, 1, 0),
            (std::vector<BlockId>{full[0], full[1], in_plan.dst[0]}));
  EXPECT_EQ(Table(*m, 1, 1),
            (std::vector<BlockId>{BlockId(), window[1], in_plan.dst[1]}));
  EXPECT_EQ(m->stats().prefix.rehit_blocks, 2);
  m->CheckInvariants();
}

// One full group of every layer is a model without groups to the index:
// the same blocks under the same keys, so managers of both kinds on one
// pool share it and hit each other's blocks.
TEST(GroupedPrefixTest, OneFullGroupSharesAnIndexWithNoGroups) {
  const KVLayout two_layers = ::pagedkv::testing::SmallLayout();
  std::unique_ptr<KVPool> pool =
      *KVPool::Create({.layout = two_layers,
                       .num_blocks = 32,
                       .concurrency = PoolConcurrency::kShared});
  auto options = [&](std::vector<LayerGroup> groups) {
    return SharedPoolOptions(two_layers, pool.get(), std::move(groups));
  };
  std::unique_ptr<KVCacheManager> plain = *KVCacheManager::Create(options({}));
  absl::StatusOr<std::unique_ptr<KVCacheManager>> grouped =
      KVCacheManager::Create(options({{.num_layers = 2}}));
  ASSERT_THAT(grouped.status(), IsOk());
  ASSERT_EQ((*grouped)->num_layer_groups(), 1);
  StepOutput out;
  // Each way: a prompt one committed, the other hits (all but the last
  // token), on the very blocks.
  ASSERT_THAT(plain->AddSequence(1, Iota(9), 4, &out), IsOk());
  CommitAll(*plain, 1);
  ASSERT_THAT((*grouped)->AddSequence(2, Iota(9), 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 8);
  const std::vector<BlockId> t2 = Table(**grouped, 2, 0);
  const KVCacheManager::RunningTable t1 = *plain->running_table(1);
  EXPECT_EQ(t2[0], t1.blocks[0]);
  EXPECT_EQ(t2[1], t1.blocks[1]);
  ASSERT_THAT((*grouped)->AddSequence(3, Iota(13, 500), 4, &out), IsOk());
  CommitAll(**grouped, 3);
  ASSERT_THAT(plain->AddSequence(4, Iota(13, 500), 4, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 12);
  plain->CheckInvariants();
  (*grouped)->CheckInvariants();
  for (SequenceId id : {1, 4}) ASSERT_THAT(plain->Free(id), IsOk());
  for (SequenceId id : {2, 3}) ASSERT_THAT((*grouped)->Free(id), IsOk());
  EXPECT_EQ(pool->books().stats().num_used_blocks, 0);
}

// A step's commit is published before its windows release what it
// committed, so a chunked prefill that commits the previous chunk in the
// next chunk's step (vLLM's way) caches the blocks that leave the window in
// that step. Before, they went unpublished: a window anchor's chain then
// stopped at its first block (no hit ever), and a window group's entries
// were missing where a shorter hit needs them.
TEST(GroupedPrefixTest, AStepPublishesItsCommitBeforeItsWindowsRelease) {
  for (const int32_t full : {0, 1}) {
    SCOPED_TRACE(full == 0 ? "a window anchor" : "a full anchor");
    std::unique_ptr<KVCacheManager> m =
        *KVCacheManager::Create(Options(32, 4, full, 1, 8));
    StepOutput out;
    ASSERT_THAT(m->AddSequence(1, Iota(16), 40, &out), IsOk());
    // The second 16-token chunk commits the first: the window (8 tokens,
    // computed 16) releases blocks 0 and 1 in this step.
    const std::vector<int32_t> chunk = Iota(16, 116);
    const SlotRequest r[] = {
        {.seq = 1, .num_tokens = 16, .token_ids = chunk, .commit = 16}};
    ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
    m->CheckInvariants();
    EXPECT_FALSE(Table(*m, 1, full)[1].is_valid());
    EXPECT_EQ(m->stats().prefix.cached_blocks, 4 * (full + 1));
    // The committed 4 blocks hit whole (the window's 2..3 and the chain to
    // them); a 2-block hit needs the window's blocks 0..1.
    ASSERT_THAT(m->AddSequence(2, Iota(17), 8, &out), IsOk());
    EXPECT_EQ(out.num_cached_tokens, 16);
    ASSERT_THAT(m->AddSequence(3, Iota(9), 8, &out), IsOk());
    EXPECT_EQ(out.num_cached_tokens, 8);
    m->CheckInvariants();
    for (SequenceId seq : {1, 2, 3}) ASSERT_THAT(m->Free(seq), IsOk());
    m->CheckInvariants();
  }
}

// The early publication meets copy-on-write: a fork's tail that another
// holder's commit publishes in the same step is copied, not written in
// place, even when that holder's window releases it in the step (which
// alone would leave the fork its only holder). Found by the grouped
// fuzzer: written in place, the published block's KV changed under its
// entry.
TEST(GroupedPrefixTest, AStepCopiesATailItsCommitsPublish) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(32, 4, 1, 1, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, Iota(16), 40, &out), IsOk());
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  ASSERT_THAT(m->Truncate(2, 6), IsOk());  // Block 1 is its partial tail.
  const BlockId window_block = Table(*m, 1, 1)[1];
  ASSERT_EQ(Table(*m, 2, 1)[1], window_block);
  // Sequence 1 commits its 16 tokens, and its window (computed 16)
  // releases blocks 0 and 1; sequence 2 writes token 6 into block 1.
  const int32_t a[] = {500};
  const int32_t b[] = {600};
  const SlotRequest r[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = a, .commit = 16},
      {.seq = 2, .num_tokens = 1, .token_ids = b}};
  ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
  m->CheckInvariants();
  EXPECT_EQ(out.copies.size(), 2u);  // Block 1 of each group.
  EXPECT_NE(Table(*m, 2, 1)[1], window_block);
  EXPECT_FALSE(Table(*m, 1, 1)[1].is_valid());
  EXPECT_TRUE(m->books().is_cached(window_block));
  out.copies.MarkDone();
  for (SequenceId seq : {1, 2}) ASSERT_THAT(m->Free(seq), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
  m->CheckInvariants();
}

// No full group (Mistral-7B's one window group): the window group anchors
// the cache itself. A hit pins only its window; the chain is verified from
// the root through cached free entries; evicting a free head unpublishes
// the in-use tail below it (its holder keeps it, and stops publishing).
TEST(GroupedPrefixTest, AWindowAnchorCachesWithoutAFullGroup) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(14, 4, 0, 1, 8));
  StepOutput out;
  const std::vector<int32_t> prompt = Iota(32);
  ASSERT_THAT(m->AddSequence(1, prompt, 8, &out), IsOk());  // 8 blocks.
  CommitAll(*m, 1);
  ASSERT_THAT(m->Free(1), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 8);
  std::vector<int32_t> longer = prompt;
  longer.push_back(7);
  ASSERT_THAT(m->AddSequence(2, longer, 8, &out), IsOk());
  EXPECT_EQ(out.num_cached_tokens, 32);
  const std::vector<BlockId> w = Table(*m, 2, 0);
  ASSERT_EQ(w.size(), 9u);
  for (int32_t i = 0; i < 6; ++i) EXPECT_FALSE(w[i].is_valid()) << i;
  for (int32_t i = 6; i < 9; ++i) EXPECT_TRUE(w[i].is_valid()) << i;
  EXPECT_EQ(m->stats().used_blocks, 3);  // Blocks 0..5 stay cached, free.
  m->CheckInvariants();
  // An unrelated 44-token prompt needs 11 blocks: the 5 plain free ones
  // and all 6 cached free heads are taken. Evicting the LRU's back, block
  // 5 (the tail was freed first, but the hit revived blocks 6 and 7),
  // drops sequence 2's pinned blocks 6 and 7 from the index with it.
  ASSERT_THAT(m->AddSequence(3, Iota(44, 900), 8, &out), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  EXPECT_EQ(m->stats().used_blocks, 14);
  EXPECT_EQ(m->stats().prefix.evicted_blocks + m->stats().prefix.dropped_blocks,
            8);
  m->CheckInvariants();
  ASSERT_THAT(m->Free(3), IsOk());  // Never committed: nothing published.
  // Sequence 2 runs on (its blocks are its own) and publishes nothing more:
  // its chain's parent left the index.
  const int32_t ids[4] = {8, 8, 8, 8};
  const SlotRequest a[] = {
      {.seq = 2, .num_tokens = 4, .token_ids = ids, .commit = 33}};
  ASSERT_THAT(m->AppendSlots(a, &out), IsOk());
  const SlotRequest b[] = {
      {.seq = 2, .num_tokens = 1, .token_ids = {ids, 1}, .commit = 37}};
  ASSERT_THAT(m->AppendSlots(b, &out), IsOk());
  EXPECT_EQ(m->stats().prefix.cached_blocks, 0);
  m->CheckInvariants();
  ASSERT_THAT(m->Free(2), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
}

// ---------------------------------------------------------------------------
// Property test: random workloads on small pools with a content model.

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct ModelSequence {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> digest;  // digest[i]: of tokens [0, i].
  int64_t committed = 0;
  bool preempted = false;
  bool swapped = false;

  void Push(int32_t t) {
    const uint64_t prev = digest.empty() ? 1 : digest.back();
    tokens.push_back(t);
    digest.push_back(Mix(prev ^ Mix(static_cast<uint64_t>(t) + 17)));
  }
  void Resize(int64_t n) {
    tokens.resize(n);
    digest.resize(n);
    committed = std::min(committed, n);
  }
};

class GroupedPrefixProperty : public ::testing::TestWithParam<int> {};

TEST_P(GroupedPrefixProperty, NothingWrongIsServedAndInvariantsHold) {
  const int seed = GetParam();
  std::mt19937 rng(seed);
  const int32_t bt = 4;
  // Two seeds in three: full, window 6, full, window 10 (group 2 is a
  // full group under the anchor, group 0). Every third: window 6 and
  // window 10 only (the anchor is the 10-token window: its head is
  // released while its tail runs).
  const bool all_windows = seed % 3 == 2;
  KVCacheManager::Options o{
      .layout = {.num_layers = all_windows ? 4 : 8, .num_kv_heads = 1,
                 .head_dim = 4, .dtype = DType::kFloat16, .block_tokens = bt},
      .num_blocks = (all_windows ? 24 : 48) + 8 * (seed % 3),
      .storage = StorageMode::kBooksOnly,
      .watermark = 0.0,
      .num_host_blocks = 40};
  if (all_windows) {
    o.layer_groups = {{.num_layers = 2, .sliding_window = 6},
                      {.num_layers = 2, .sliding_window = 10}};
  } else {
    o.layer_groups = {{.num_layers = 2},
                      {.num_layers = 2, .sliding_window = 6},
                      {.num_layers = 2},
                      {.num_layers = 2, .sliding_window = 10}};
  }
  o.prefix_caching.enabled = true;
  // Seeds 24 on: kReservation (each sequence's worst case reserved at
  // admission, steps of at most 5 tokens).
  const bool reservation = seed >= 24;
  if (reservation) {
    o.admission = AdmissionMode::kReservation;
    o.max_step_tokens = 5;
  }
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  const int32_t groups = static_cast<int32_t>(o.layer_groups.size());
  const auto window = [&](int32_t g) {
    return o.layer_groups[g].sliding_window;
  };

  // What each slot holds: (group, position, digest of the tokens up to it)
  // of the sequence that wrote it; 0: never written.
  std::vector<uint64_t> device(int64_t{o.num_blocks} * bt, 0);
  std::vector<uint64_t> host(int64_t{o.num_host_blocks} * bt, 0);
  const auto key = [](int32_t g, int64_t pos, uint64_t digest) {
    return Mix(digest ^ Mix((static_cast<uint64_t>(g) << 40) ^
                            static_cast<uint64_t>(pos)));
  };
  std::map<SequenceId, ModelSequence> seqs;
  std::map<SequenceId, int64_t> max_tokens;  // Prompt + 24 new tokens.
  SequenceId next_id = 1;
  int64_t hits_checked = 0;        // Hits of at least one block.
  int64_t hits_past_a_window = 0;  // Hits longer than the widest window.
  int64_t swap_rehits = 0;         // Blocks SwapIn found cached.
  const int64_t max_window = 10;

  // The slots of tokens [first, first + k) of seq, written (group-major).
  const auto write = [&](const ModelSequence& s, const StepOutput& out,
                         int32_t request, int64_t first) {
    const int64_t begin = out.request_offsets[request];
    const int64_t k = out.request_offsets[request + 1] - begin;
    for (int32_t g = 0; g < groups; ++g) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t slot = out.slot_mapping[g * out.group_stride + begin + j];
        device[slot] = key(g, first + j, s.digest[first + j]);
      }
    }
  };
  const auto run_copies = [&](StepOutput& out) {
    for (const CopyOp& c : out.copies.ops()) {
      std::copy_n(device.begin() + int64_t{c.src.value()} * bt, bt,
                  device.begin() + int64_t{c.dst.value()} * bt);
    }
    out.copies.MarkDone();
  };
  // Every block a fresh placement got from the cache holds exactly seq's
  // KV, and each group holds the window the next token reads.
  const auto check_hit = [&](SequenceId id, const ModelSequence& s,
                             int64_t cached) {
    ASSERT_EQ(cached % bt, 0);
    const int64_t hit = cached / bt;
    for (int32_t g = 0; g < groups; ++g) {
      const std::vector<BlockId> t = Table(*m, id, g);
      const int64_t first =
          window(g) == 0 ? 0 : WindowFirstNeededBlock(cached, window(g), bt);
      for (int64_t i = 0; i < hit; ++i) {
        ASSERT_EQ(t[i].is_valid(), i >= first)
            << "seed " << seed << " seq " << id << " group " << g << " entry "
            << i << " of a hit of " << hit;
        if (!t[i].is_valid()) continue;
        for (int64_t o2 = 0; o2 < bt; ++o2) {
          const int64_t pos = i * bt + o2;
          ASSERT_EQ(device[int64_t{t[i].value()} * bt + o2],
                    key(g, pos, s.digest[pos]))
              << "seed " << seed << ": sequence " << id << " was served "
              << "another's KV in group " << g << " block " << i;
        }
      }
      if (hit > 0) ++hits_checked;
      if (cached > max_window) ++hits_past_a_window;
    }
  };
  // Prompts: one of 3 system prompts, then a suffix from a 3-token
  // alphabet (equal suffixes are common: real sharing beyond the prompts).
  std::vector<std::vector<int32_t>> systems(3);
  for (int32_t i = 0; i < 3; ++i) {
    const int32_t n = 6 + 5 * i;
    for (int32_t t = 0; t < n; ++t) systems[i].push_back(1000 * (i + 1) + t);
  }
  const auto running = [&]() {
    std::vector<SequenceId> r;
    for (const auto& [id, s] : seqs) {
      if (!s.preempted && !s.swapped) r.push_back(id);
    }
    return r;
  };
  const auto pick = [&](const std::vector<SequenceId>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
  };

  StepOutput out;
  for (int op = 0; op < 1500; ++op) {
    const int dice = std::uniform_int_distribution<int>(0, 99)(rng);
    const std::vector<SequenceId> run = running();
    if (dice < 22 || run.empty()) {  // Add.
      ModelSequence s;
      for (int32_t t : systems[rng() % 3]) s.Push(t);
      const int32_t suffix = 1 + static_cast<int32_t>(rng() % 10);
      for (int32_t i = 0; i < suffix; ++i) s.Push(static_cast<int32_t>(rng() % 3));
      const SequenceId id = next_id++;
      const absl::Status st = m->AddSequence(id, s.tokens, 24, &out);
      if (st.ok()) {
        check_hit(id, s, out.num_cached_tokens);
        write(s, out, 0, out.num_cached_tokens);
        s.committed = out.num_cached_tokens;
        max_tokens[id] = static_cast<int64_t>(s.tokens.size()) + 24;
        seqs.emplace(id, std::move(s));
      } else {
        ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
        ASSERT_FALSE(m->contains(id));
      }
    } else if (dice < 62) {  // A step of some running sequences.
      std::vector<SequenceId> chosen;
      for (SequenceId id : run) {
        // kReservation: only within what the sequence reserved.
        if (reservation &&
            static_cast<int64_t>(seqs[id].tokens.size()) + 5 > max_tokens[id]) {
          continue;
        }
        if (rng() % 2 == 0) chosen.push_back(id);
      }
      if (chosen.empty() && !reservation) chosen.push_back(run[0]);
      if (chosen.empty()) continue;
      std::vector<std::vector<int32_t>> ids(chosen.size());
      std::vector<SlotRequest> reqs;
      for (size_t i = 0; i < chosen.size(); ++i) {
        const ModelSequence& s = seqs[chosen[i]];
        const int32_t k = rng() % 4 == 0 ? 1 + static_cast<int32_t>(rng() % 5)
                                         : 1;
        for (int32_t j = 0; j < k; ++j) ids[i].push_back(static_cast<int32_t>(rng() % 3));
        const int64_t n = static_cast<int64_t>(s.tokens.size());
        // Commit the held tokens, or lag behind.
        const int64_t commit =
            rng() % 3 == 0 ? -1
                           : s.committed + static_cast<int64_t>(
                                               rng() % (n - s.committed + 1));
        reqs.push_back({.seq = chosen[i], .num_tokens = k,
                        .token_ids = ids[i], .commit = commit});
      }
      const absl::Status st = m->AppendSlots(reqs, &out);
      if (st.ok()) {
        run_copies(out);
        for (size_t i = 0; i < chosen.size(); ++i) {
          ModelSequence& s = seqs[chosen[i]];
          const int64_t first = static_cast<int64_t>(s.tokens.size());
          for (int32_t t : ids[i]) s.Push(t);
          if (reqs[i].commit != -1) s.committed = reqs[i].commit;
          write(s, out, static_cast<int32_t>(i), first);
        }
      } else {
        ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
        // Make room: free the longest running sequence.
        SequenceId longest = run[0];
        for (SequenceId id : run) {
          if (seqs[id].tokens.size() > seqs[longest].tokens.size()) longest = id;
        }
        ASSERT_THAT(m->Free(longest), IsOk());
        seqs.erase(longest);
      }
    } else if (dice < 72) {  // Free.
      const SequenceId id = pick(run);
      ASSERT_THAT(m->Free(id), IsOk());
      seqs.erase(id);
    } else if (dice < 77) {  // Fork.
      const SequenceId parent = pick(run);
      const SequenceId child = next_id++;
      const absl::Status st = m->Fork(parent, child);
      if (reservation && st.code() == absl::StatusCode::kResourceExhausted) {
        continue;  // No room to reserve the child's worst case.
      }
      ASSERT_THAT(st, IsOk());
      seqs.emplace(child, seqs[parent]);
      max_tokens[child] = max_tokens[parent];
    } else if (dice < 83) {  // Truncate (speculative tokens rejected).
      const SequenceId id = pick(run);
      ModelSequence& s = seqs[id];
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      if (n == 0) continue;  // Truncated to nothing already.
      const int64_t to = n - 1 - static_cast<int64_t>(rng() % std::min<int64_t>(n, 6));
      const absl::Status st = m->Truncate(id, to);
      if (st.ok()) {
        s.Resize(to);
      } else {
        ASSERT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
      }
    } else if (dice < 88) {  // Commit through CommitTokens.
      const SequenceId id = pick(run);
      ModelSequence& s = seqs[id];
      const TokenCommit c[] = {
          {.seq = id, .num_tokens = static_cast<int64_t>(s.tokens.size())}};
      ASSERT_THAT(m->CommitTokens(c), IsOk());
      s.committed = static_cast<int64_t>(s.tokens.size());
    } else if (dice < 93) {  // Preempt, and readmit some preempted one.
      const SequenceId id = pick(run);
      ASSERT_THAT(m->Preempt(id), IsOk());
      seqs[id].preempted = true;
      for (auto& [pid, s] : seqs) {
        if (!s.preempted || rng() % 2 != 0) continue;
        const absl::Status st = m->Readmit(pid, &out);
        if (!st.ok()) {
          ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
          continue;
        }
        s.preempted = false;
        check_hit(pid, s, out.num_cached_tokens);
        write(s, out, 0, out.num_cached_tokens);  // Recomputed.
        s.committed = out.num_cached_tokens;
        break;
      }
    } else if (dice < 98) {  // Swap out one, swap in another.
      const SequenceId id = pick(run);
      absl::StatusOr<SwapPlan> plan = m->SwapOut(id);
      if (plan.ok()) {
        for (size_t i = 0; i < plan->src.size(); ++i) {
          std::copy_n(device.begin() + int64_t{plan->src[i].value()} * bt, bt,
                      host.begin() + int64_t{plan->dst[i].value()} * bt);
        }
        ASSERT_THAT(m->CompleteSwap(id), IsOk());
        seqs[id].swapped = true;
      }
      for (auto& [sid, s] : seqs) {
        if (!s.swapped || sid == id) continue;
        const int64_t rehits_before = m->stats().prefix.rehit_blocks;
        absl::StatusOr<SwapPlan> in = m->SwapIn(sid);
        if (!in.ok()) break;
        for (size_t i = 0; i < in->src.size(); ++i) {
          std::copy_n(host.begin() + int64_t{in->src[i].value()} * bt, bt,
                      device.begin() + int64_t{in->dst[i].value()} * bt);
        }
        ASSERT_THAT(m->CompleteSwap(sid), IsOk());
        s.swapped = false;
        // Its cached blocks came back without a copy, their KV final; its
        // commit point stays.
        const int64_t rehits = m->stats().prefix.rehit_blocks - rehits_before;
        swap_rehits += rehits;
        // Every live entry, re-hit or copied back, holds its own KV.
        for (int32_t g = 0; g < groups; ++g) {
          const std::vector<BlockId> t = Table(*m, sid, g);
          for (size_t i = 0; i < t.size(); ++i) {
            if (!t[i].is_valid()) continue;
            for (int64_t o2 = 0; o2 < bt; ++o2) {
              const int64_t pos = static_cast<int64_t>(i) * bt + o2;
              if (pos >= static_cast<int64_t>(s.tokens.size())) break;
              ASSERT_EQ(device[int64_t{t[i].value()} * bt + o2],
                        key(g, pos, s.digest[pos]))
                  << "seed " << seed << ": swapped-in sequence " << sid
                  << " holds another's KV in group " << g << " block " << i
                  << " (" << rehits << " blocks re-hit)";
            }
          }
        }
        break;
      }
    } else {  // A reset now and then.
      m->ResetPrefixCache();
    }
    m->CheckInvariants();
  }
  const ManagerStats stats = m->stats();
  EXPECT_GT(stats.prefix.hit_blocks, 0) << "seed " << seed << ": no hits";
  // Hits whose bytes were read back, some longer than every window (so
  // the holes below a window group's window were exercised).
  EXPECT_GT(hits_checked, 0) << "seed " << seed;
  EXPECT_GT(hits_past_a_window, 0) << "seed " << seed;
  EXPECT_GT(swap_rehits, 0) << "seed " << seed << ": no SwapIn re-hit";
  for (const auto& [id, s] : seqs) ASSERT_THAT(m->Free(id), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0) << "every block returned";
  m->CheckInvariants();
}

INSTANTIATE_TEST_SUITE_P(Seeds, GroupedPrefixProperty, ::testing::Range(0, 32));

}  // namespace
}  // namespace pagedkv
