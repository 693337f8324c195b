// The books of KVCacheManager with layer groups (Options::layer_groups):
// a step that cannot get its blocks changes nothing (tables, versions,
// ref_counts, free counts, stats), a step counts the blocks its windows
// release as free, and Fork shares every group's table with copy-on-write
// of the shared last block per group, checked directly and against a
// seeded reference model that names every block.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "allocator/block_id.h"
#include "allocator/copy_on_write.h"
#include "allocator/window_table.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatsEqual;
using ::pagedkv::testing::StatsString;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

// `full` full groups, then `windows` window groups of `window` tokens, 2
// layers each, books only, no watermark.
KVCacheManager::Options Options(int32_t num_blocks, int32_t block_tokens,
                                int32_t windows, int32_t window,
                                int32_t full = 1) {
  KVCacheManager::Options o = ::pagedkv::testing::GroupedBooksOnlyOptions(
      num_blocks, block_tokens, full, windows, window);
  o.watermark = 0.0;
  return o;
}

// All a caller can see of a grouped manager: stats, the windows' release
// count, every block's ref_count, and per named sequence its state, length
// and every group's table with its version.
struct GroupedSnapshot {
  ManagerStats stats;
  int64_t window_released = 0;
  std::vector<int32_t> ref_counts;
  struct Table {
    std::vector<BlockId> entries;
    KVCacheManager::TableVersion version;
    friend bool operator==(const Table& a, const Table& b) {
      return a.entries == b.entries && a.version == b.version;
    }
  };
  struct Sequence {
    SequenceId id = 0;
    bool present = false;
    SequenceState state = SequenceState::kRunning;
    int64_t num_tokens = 0;
    std::vector<Table> tables;  // Running only.
    friend bool operator==(const Sequence& a, const Sequence& b) {
      return a.id == b.id && a.present == b.present && a.state == b.state &&
             a.num_tokens == b.num_tokens && a.tables == b.tables;
    }
  };
  std::vector<Sequence> sequences;

  friend bool operator==(const GroupedSnapshot& a, const GroupedSnapshot& b) {
    return StatsEqual(a.stats, b.stats) &&
           a.window_released == b.window_released &&
           a.ref_counts == b.ref_counts && a.sequences == b.sequences;
  }
  friend bool operator!=(const GroupedSnapshot& a, const GroupedSnapshot& b) {
    return !(a == b);
  }
  friend std::ostream& operator<<(std::ostream& os, const GroupedSnapshot& s) {
    os << StatsString(s.stats) << " window_released=" << s.window_released;
    for (const Sequence& q : s.sequences) {
      os << "\n  seq " << q.id << ": " << q.num_tokens << " tokens";
      for (const Table& t : q.tables) {
        os << " [";
        for (BlockId b : t.entries) os << b.value() << " ";
        os << "]";
      }
    }
    return os;
  }
};

GroupedSnapshot TakeGroupedSnapshot(const KVCacheManager& m,
                                    const std::vector<SequenceId>& ids) {
  GroupedSnapshot snap;
  snap.stats = m.stats();
  snap.window_released = m.window_released_blocks();
  for (int32_t b = 0; b < m.books().num_blocks(); ++b) {
    snap.ref_counts.push_back(m.books().ref_count(BlockId(b)));
  }
  for (SequenceId id : ids) {
    GroupedSnapshot::Sequence q;
    q.id = id;
    q.present = m.contains(id);
    if (q.present) {
      q.state = *m.state(id);
      q.num_tokens = *m.num_tokens(id);
    }
    if (q.present && q.state == SequenceState::kRunning) {
      for (int32_t g = 0; g < m.num_layer_groups(); ++g) {
        const KVCacheManager::RunningTable t = *m.group_table(id, g);
        q.tables.push_back({{t.blocks.begin(), t.blocks.end()}, t.version});
      }
    }
    snap.sequences.push_back(q);
  }
  return snap;
}

// A failed step must not release what its windows would have: the books,
// the holes and the release count stay as they were, and the same step
// succeeds once a Free makes room.
TEST(GroupedStepTest, AFailedStepChangesNothingAndSucceedsWithRoom) {
  // Block 4 tokens, window 4: after a step from n tokens the window group
  // keeps the blocks from token n - 3 on.
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(/*num_blocks=*/12, 4, 1, 4));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 12, 100, &out), IsOk());  // 3 + 3 blocks.
  ASSERT_THAT(m->AddSequence(2, 12, 100, &out), IsOk());  // 3 + 3 blocks.
  ASSERT_EQ(m->stats().free_blocks, 0);
  // Sequence 1's window would release blocks 0 and 1 (tokens 0..7) of its
  // window group; 8 more tokens need 2 blocks per group: 4 > 0 + 2.
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 8}};
  const GroupedSnapshot before = TakeGroupedSnapshot(*m, {1, 2});
  EXPECT_THAT(m->AppendSlots(step, &out),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("needs 4 blocks (0 copies), 0 free and 2 "
                                 "the windows would release")));
  EXPECT_TRUE(out.slot_mapping.empty());
  EXPECT_EQ(TakeGroupedSnapshot(*m, {1, 2}), before);
  m->CheckInvariants();
  // A smaller step fits with the released blocks alone: 4 tokens need one
  // block per group, and nothing is free but what the window releases.
  const SlotRequest fits[] = {{.seq = 2, .num_tokens = 4}};
  ASSERT_THAT(m->AppendSlots(fits, &out), IsOk());
  EXPECT_EQ(m->window_released_blocks(), 2);
  EXPECT_EQ(m->stats().free_blocks, 0);
  m->CheckInvariants();
  // With sequence 2 gone the first step fits, and does what it would have.
  ASSERT_THAT(m->Free(2), IsOk());
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  EXPECT_EQ(*m->num_tokens(1), 20);
  EXPECT_EQ(out.group_stride, 8);
  const KVCacheManager::RunningTable w = *m->group_table(1, 1);
  ASSERT_EQ(w.blocks.size(), 5u);
  EXPECT_FALSE(w.blocks[0].is_valid());
  EXPECT_FALSE(w.blocks[1].is_valid());
  EXPECT_TRUE(w.blocks[2].is_valid());
  EXPECT_EQ(m->window_released_blocks(), 4);
  EXPECT_EQ(m->stats().used_blocks, 5 + 3);
  m->CheckInvariants();
}

// A decode step on a full pool gets its block from what the windows release
// in the same step.
TEST(GroupedStepTest, ADecodeStepOnAFullPoolUsesTheBlocksItsWindowsRelease) {
  // Window 1: only the last token is read, so a step from n = 8 (a block
  // boundary) releases blocks 0 and 1 and needs one new block per group.
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(/*num_blocks=*/4, 4, 1, 1));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 8, 100, &out), IsOk());
  ASSERT_EQ(m->stats().free_blocks, 0);
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1}};
  const GroupedSnapshot before = TakeGroupedSnapshot(*m, {1});
  // 2 new blocks (one per group), 2 released: fits exactly.
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  EXPECT_NE(TakeGroupedSnapshot(*m, {1}), before);
  EXPECT_EQ(m->stats().used_blocks, 4);
  EXPECT_EQ(m->window_released_blocks(), 2);
  m->CheckInvariants();
  // Next: tokens 9.. in block 2, nothing to release or take.
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  m->CheckInvariants();
}

std::vector<BlockId> Entries(const KVCacheManager& m, SequenceId seq,
                             int32_t group) {
  const KVCacheManager::RunningTable t = *m.group_table(seq, group);
  return {t.blocks.begin(), t.blocks.end()};
}

// Fork shares every group's table; the first write into the shared
// partial last block copies it in each group (one CopyOp per group, source
// held until MarkDone), and the other holder then writes in place.
TEST(GroupedForkTest, TheFirstWriteCopiesTheSharedLastBlockInEveryGroup) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(/*num_blocks=*/32, 4, 1, 4));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 100, &out), IsOk());  // 2 + 2 blocks.
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 4);  // Fork takes no block.
  EXPECT_EQ(m->stats().shared_blocks, 4);
  EXPECT_EQ(m->stats().running_sequences, 2);
  EXPECT_EQ(*m->num_tokens(2), 6);
  const std::vector<BlockId> full = Entries(*m, 1, 0);
  const std::vector<BlockId> window = Entries(*m, 1, 1);
  EXPECT_EQ(Entries(*m, 2, 0), full);
  EXPECT_EQ(Entries(*m, 2, 1), window);
  EXPECT_NE(m->group_table(2, 0)->version, m->group_table(1, 0)->version);
  m->CheckInvariants();

  const SlotRequest parent[] = {{.seq = 1, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(parent, &out), IsOk());
  ASSERT_EQ(out.copies.size(), 2);
  const std::vector<BlockId> full1 = Entries(*m, 1, 0);
  const std::vector<BlockId> window1 = Entries(*m, 1, 1);
  EXPECT_EQ(out.copies.ops()[0], (CopyOp{full[1], full1[1]}));
  EXPECT_EQ(out.copies.ops()[1], (CopyOp{window[1], window1[1]}));
  EXPECT_EQ(full1[0], full[0]);  // The full first block stays shared.
  EXPECT_EQ(m->books().ref_count(full[0]), 2);
  // Token 6 goes into the parent's private copies.
  EXPECT_EQ(StepOutput::BlockOf(out.slot_mapping[0], 4), full1[1]);
  EXPECT_EQ(StepOutput::BlockOf(out.slot_mapping[1], 4), window1[1]);
  // The source is the child's and the pending copy's until MarkDone.
  EXPECT_EQ(m->books().ref_count(full[1]), 2);
  m->CheckInvariants();
  out.copies.MarkDone();
  EXPECT_EQ(m->books().ref_count(full[1]), 1);
  EXPECT_EQ(m->stats().cow_copies, 2);
  EXPECT_EQ(m->stats().used_blocks, 6);
  m->CheckInvariants();

  // The child's last blocks are private now: written in place.
  const SlotRequest child[] = {{.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(child, &out), IsOk());
  EXPECT_TRUE(out.copies.empty());
  EXPECT_EQ(Entries(*m, 2, 0), full);
  EXPECT_EQ(m->stats().cow_copies, 2);
  m->CheckInvariants();
}

// Two holders writing the shared block in one step: one copies, the last
// writes in place (PrepareWrite's rule), per group.
TEST(GroupedForkTest, HoldersWritingInOneStepMakeOneCopyPerGroup) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(/*num_blocks=*/32, 4, 2, 8));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 5, 100, &out), IsOk());
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  const SlotRequest both[] = {{.seq = 1, .num_tokens = 2},
                              {.seq = 2, .num_tokens = 2}};
  ASSERT_THAT(m->AppendSlots(both, &out), IsOk());
  ASSERT_EQ(out.copies.size(), 3);  // One per group.
  for (int32_t g = 0; g < 3; ++g) {
    EXPECT_EQ(out.copies.ops()[g].dst, Entries(*m, 1, g)[1]);
    EXPECT_EQ(out.copies.ops()[g].src, Entries(*m, 2, g)[1]);
  }
  std::set<int64_t> slots(out.slot_mapping.begin(), out.slot_mapping.end());
  EXPECT_EQ(slots.size(), out.slot_mapping.size());
  out.copies.MarkDone();
  EXPECT_EQ(m->stats().shared_blocks, 3);  // Block 0 of each group.
  m->CheckInvariants();
}

// A window release of a block another table holds frees nothing: the
// child's step alone does not fit, the parent's and child's together do
// (they release the same blocks), and a failed step changes nothing.
TEST(GroupedForkTest, SharedWindowBlocksFreeOnlyWhenEveryHolderReleases) {
  // 3 window groups of window 1 and 4-token blocks: a step from 8 tokens
  // releases blocks 0 and 1 of each and takes block 2 in every group.
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(
      Options(/*num_blocks=*/10, 4, 3, 1, /*full=*/1));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 8, 100, &out), IsOk());  // 4 x 2 blocks.
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  const SlotRequest child[] = {{.seq = 2, .num_tokens = 1}};
  const GroupedSnapshot before = TakeGroupedSnapshot(*m, {1, 2});
  EXPECT_THAT(m->AppendSlots(child, &out),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("needs 4 blocks (0 copies), 2 free and 0 "
                                 "the windows would release")));
  EXPECT_EQ(TakeGroupedSnapshot(*m, {1, 2}), before);
  m->CheckInvariants();
  const SlotRequest both[] = {{.seq = 1, .num_tokens = 1},
                              {.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(both, &out), IsOk());  // 8 = 2 free + 6.
  EXPECT_EQ(m->stats().free_blocks, 0);
  for (SequenceId seq : {1, 2}) {
    for (int32_t g = 1; g < 4; ++g) {
      const std::vector<BlockId> t = Entries(*m, seq, g);
      EXPECT_FALSE(t[0].is_valid());
      EXPECT_FALSE(t[1].is_valid());
    }
  }
  EXPECT_EQ(m->window_released_blocks(), 12);  // Entries, both tables.
  m->CheckInvariants();
}

// The parent's window moves on; the child still reads the shared blocks,
// which stay live for it.
TEST(GroupedForkTest, AChildKeepsTheWindowBlocksItStillReads) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(/*num_blocks=*/64, 4, 1, 4));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 9, 100, &out), IsOk());
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  const std::vector<BlockId> window = Entries(*m, 2, 1);
  const SlotRequest parent[] = {{.seq = 1, .num_tokens = 8}};
  ASSERT_THAT(m->AppendSlots(parent, &out), IsOk());  // Reads from token 6.
  out.copies.MarkDone();
  EXPECT_FALSE(Entries(*m, 1, 1)[0].is_valid());
  EXPECT_EQ(Entries(*m, 2, 1), window);  // The child's table is untouched.
  EXPECT_EQ(m->books().ref_count(window[0]), 1);
  m->CheckInvariants();
  // The child's own step releases block 0 (then free) and copies block 2.
  const SlotRequest child[] = {{.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(child, &out), IsOk());
  EXPECT_EQ(m->books().ref_count(window[0]), 0);
  EXPECT_TRUE(out.copies.empty());  // The parent copied block 2 already.
  m->CheckInvariants();
  EXPECT_THAT(m->Fork(9, 3), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(m->Fork(1, 2), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_THAT(m->Preempt(2), IsOk());
  EXPECT_THAT(m->Fork(2, 3), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("preempted")));
}

// The header's SwapPlan example (kv_cache_manager.h): block 4 tokens, a
// full group and a window of 4; 10 tokens whose last step started at
// token 9, so the window group released entry 0. The plans pair only the
// live entries, group by group, and the tables come back with their holes.
TEST(GroupedSwapTest, PlansPairTheLiveEntriesGroupByGroup) {
  KVCacheManager::Options o = Options(/*num_blocks=*/16, 4, 1, 4);
  o.num_host_blocks = 8;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 9, 10, &out), IsOk());
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  const std::vector<BlockId> full = Entries(*m, 1, 0);
  const std::vector<BlockId> window = Entries(*m, 1, 1);
  ASSERT_EQ(full.size(), 3u);
  ASSERT_EQ(window.size(), 3u);
  ASSERT_FALSE(window[0].is_valid());

  const SwapPlan out_plan = *m->SwapOut(1);
  EXPECT_EQ(out_plan.src, (std::vector<BlockId>{full[0], full[1], full[2],
                                                window[1], window[2]}));
  EXPECT_EQ(out_plan.group_offsets, (std::vector<int32_t>{0, 3, 5}));
  ASSERT_EQ(out_plan.dst.size(), 5u);
  EXPECT_EQ(std::set<BlockId>(out_plan.dst.begin(), out_plan.dst.end()).size(),
            5u);
  EXPECT_EQ(*m->state(1), SequenceState::kSwappingOut);
  EXPECT_EQ(m->stats().used_blocks, 5);  // Held until CompleteSwap.
  EXPECT_EQ(m->stats().host_used_blocks, 5);
  EXPECT_EQ(m->stats().running_sequences, 0);
  m->CheckInvariants();
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  EXPECT_EQ(*m->state(1), SequenceState::kSwappedOut);
  EXPECT_EQ(m->stats().used_blocks, 0);
  m->CheckInvariants();

  const SwapPlan in_plan = *m->SwapIn(1);
  EXPECT_EQ(in_plan.src, out_plan.dst);
  EXPECT_EQ(in_plan.group_offsets, (std::vector<int32_t>{0, 3, 5}));
  EXPECT_EQ(*m->state(1), SequenceState::kSwappingIn);
  EXPECT_EQ(m->stats().used_blocks, 5);
  EXPECT_EQ(m->stats().host_used_blocks, 5);  // Until CompleteSwap.
  m->CheckInvariants();
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  EXPECT_EQ(m->stats().host_used_blocks, 0);
  EXPECT_EQ(Entries(*m, 1, 0), (std::vector<BlockId>{
                                   in_plan.dst[0], in_plan.dst[1],
                                   in_plan.dst[2]}));
  EXPECT_EQ(Entries(*m, 1, 1), (std::vector<BlockId>{
                                   BlockId(), in_plan.dst[3], in_plan.dst[4]}));
  const ManagerStats stats = m->stats();
  EXPECT_EQ(stats.swap_outs, 1);
  EXPECT_EQ(stats.swap_ins, 1);
  EXPECT_EQ(stats.swapped_blocks, 10);
  EXPECT_EQ(stats.running_sequences, 1);
  // It runs on from where it left: token 10's window reads tokens 7..10.
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  EXPECT_EQ(StepOutput::BlockOf(out.slot_mapping[1], 4), in_plan.dst[4]);
  m->CheckInvariants();
  ASSERT_THAT(m->Free(1), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
}

// Every refused swap call says why and changes nothing: no block taken in
// either tier, tables, versions, states and stats as they were.
TEST(GroupedSwapTest, RefusedCallsChangeNothing) {
  KVCacheManager::Options o = Options(/*num_blocks=*/12, 4, 1, 4);
  {
    std::unique_ptr<KVCacheManager> none = *KVCacheManager::Create(o);
    StepOutput out;
    ASSERT_THAT(none->AddSequence(1, 8, 4, &out), IsOk());
    const GroupedSnapshot before = TakeGroupedSnapshot(*none, {1});
    EXPECT_THAT(none->SwapOut(1).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("no host tier")));
    EXPECT_EQ(TakeGroupedSnapshot(*none, {1}), before);
    none->CheckInvariants();
  }
  o.num_host_blocks = 5;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 12, 4, &out), IsOk());  // 3 + 3 blocks.
  ASSERT_THAT(m->AddSequence(2, 8, 4, &out), IsOk());   // 2 + 2 blocks.
  const std::vector<SequenceId> ids = {1, 2, 3};
  GroupedSnapshot before = TakeGroupedSnapshot(*m, ids);
  // 6 live entries, 5 host blocks.
  EXPECT_THAT(m->SwapOut(1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("need 6 blocks, 5 free")));
  EXPECT_THAT(m->SwapOut(3).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(m->SwapIn(2).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("running, not swapped out")));
  EXPECT_THAT(m->CompleteSwap(2),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("no swap is pending")));
  EXPECT_EQ(TakeGroupedSnapshot(*m, ids), before);
  m->CheckInvariants();

  // A pending swap-out: no second swap, no Free, no step.
  ASSERT_THAT(m->SwapOut(2).status(), IsOk());
  before = TakeGroupedSnapshot(*m, ids);
  EXPECT_THAT(m->SwapOut(2).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("swapping out, not running")));
  EXPECT_THAT(m->SwapIn(2).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(m->Free(2), StatusIs(absl::StatusCode::kFailedPrecondition,
                                   HasSubstr("CompleteSwap first")));
  const SlotRequest step[] = {{.seq = 2, .num_tokens = 1}};
  EXPECT_THAT(m->AppendSlots(step, &out),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(TakeGroupedSnapshot(*m, ids), before);
  ASSERT_THAT(m->CompleteSwap(2), IsOk());

  // The device pool full: SwapIn takes nothing and stays swapped out.
  ASSERT_THAT(m->AddSequence(3, 8, 4, &out), IsOk());   // 2 + 2 blocks.
  ASSERT_THAT(m->AppendSlots({{.seq = 1, .num_tokens = 4}}, &out), IsOk());
  // 12 - 4 (sequence 3) - 6: the step took 2, the window released 2.
  ASSERT_EQ(m->stats().free_blocks, 2);
  before = TakeGroupedSnapshot(*m, ids);
  EXPECT_THAT(m->SwapIn(2).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("needs 4 blocks (the live entries of 2 "
                                 "groups), 2 free")));
  EXPECT_EQ(TakeGroupedSnapshot(*m, ids), before);
  m->CheckInvariants();
  ASSERT_THAT(m->Free(3), IsOk());
  ASSERT_THAT(m->SwapIn(2).status(), IsOk());
  ASSERT_THAT(m->CompleteSwap(2), IsOk());
  EXPECT_EQ(*m->state(2), SequenceState::kRunning);
  m->CheckInvariants();
}

// A table that comes back (Readmit, SwapIn) on other blocks has a new
// version: equal versions mean equal blocks (a delta export skips the row).
TEST(GroupedSwapTest, TablesThatComeBackHaveNewVersions) {
  KVCacheManager::Options o = Options(/*num_blocks=*/16, 4, 1, 4);
  o.num_host_blocks = 8;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 8, 10, &out), IsOk());
  ASSERT_THAT(m->AddSequence(2, 8, 10, &out), IsOk());
  const KVCacheManager::TableVersion v1 = m->group_table(1, 0)->version;
  const std::vector<BlockId> b1 = Entries(*m, 1, 0);
  const KVCacheManager::TableVersion v2 = m->group_table(2, 0)->version;
  const std::vector<BlockId> b2 = Entries(*m, 2, 0);
  // Both come back on other blocks: 2 frees its blocks first.
  ASSERT_THAT(m->Preempt(1), IsOk());
  ASSERT_THAT(m->SwapOut(2).status(), IsOk());
  ASSERT_THAT(m->CompleteSwap(2), IsOk());
  ASSERT_THAT(m->AddSequence(3, 16, 0, &out), IsOk());  // Takes 8 blocks.
  ASSERT_THAT(m->Readmit(1, &out), IsOk());
  ASSERT_THAT(m->SwapIn(2).status(), IsOk());
  ASSERT_THAT(m->CompleteSwap(2), IsOk());
  EXPECT_NE(Entries(*m, 1, 0), b1);
  EXPECT_NE(m->group_table(1, 0)->version, v1);
  EXPECT_NE(Entries(*m, 2, 0), b2);
  EXPECT_NE(m->group_table(2, 0)->version, v2);
  m->CheckInvariants();
}

// A swap of one holder of shared blocks copies them into its own host
// blocks; the other holder keeps the device blocks, and writes its shared
// last block in place once it is the only holder.
TEST(GroupedSwapTest, ASwappedForkLeavesTheOtherHolderItsBlocks) {
  KVCacheManager::Options o = Options(/*num_blocks=*/16, 4, 1, 4);
  o.num_host_blocks = 8;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 10, &out), IsOk());  // 2 + 2 blocks.
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  const std::vector<BlockId> full = Entries(*m, 1, 0);
  const std::vector<BlockId> window = Entries(*m, 1, 1);
  const SwapPlan plan = *m->SwapOut(1);
  EXPECT_EQ(plan.src, (std::vector<BlockId>{full[0], full[1], window[0],
                                            window[1]}));
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  EXPECT_EQ(Entries(*m, 2, 0), full);
  EXPECT_EQ(Entries(*m, 2, 1), window);
  for (BlockId b : full) EXPECT_EQ(m->books().ref_count(b), 1);
  EXPECT_EQ(m->stats().used_blocks, 4);
  m->CheckInvariants();
  // Sequence 2 holds its last blocks alone now: no copy.
  const SlotRequest step[] = {{.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  EXPECT_EQ(out.copies.size(), 0);
  ASSERT_THAT(m->SwapIn(1).status(), IsOk());
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 8);
  EXPECT_EQ(m->stats().shared_blocks, 0);
  m->CheckInvariants();
}

// A seeded random workload (add, fork, steps, truncate, free, preempt,
// readmit, swap out, swap in, complete a swap) on small pools against a
// model that names every block of both tiers: each live entry's model
// block maps to one real block for its whole life, ref_counts are the
// model's holders, the step's copies, the swaps' plans and every failure
// are the model's, and every block of both tiers is back at the end.
class GroupedForkPropertyTest : public ::testing::TestWithParam<int> {};

TEST_P(GroupedForkPropertyTest, MatchesAModelThatNamesEveryBlock) {
  std::mt19937 rng(GetParam());
  const int32_t bt = 1 + rng() % 6;
  const int32_t window = 1 + rng() % 20;
  const int32_t num_windows = 1 + rng() % 3;
  const int32_t num_full = rng() % 3 == 0 ? 0 : 1;
  const int32_t num_groups = num_full + num_windows;
  const int32_t num_blocks = 16 + rng() % 96;
  const int32_t num_host_blocks = 4 + rng() % 64;
  KVCacheManager::Options options =
      Options(num_blocks, bt, num_windows, window, num_full);
  options.num_host_blocks = num_host_blocks;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(options);
  const auto blocks_for = [&](int64_t n) { return (n + bt - 1) / bt; };
  const auto first_needed = [&](int32_t g, int64_t computed) -> int64_t {
    return g >= num_full ? WindowFirstNeededBlock(computed, window, bt) : 0;
  };

  struct Seq {
    int64_t tokens = 0;
    int64_t computed = 0;
    SequenceState state = SequenceState::kRunning;
    bool running() const { return state == SequenceState::kRunning; }
    std::vector<std::vector<int64_t>> blocks;  // Per group: model ids, -1.
    std::vector<std::vector<int64_t>> host;    // Model host ids, -1.
  };
  using Model = std::map<SequenceId, Seq>;
  Model model;
  int64_t next_block = 0;
  std::map<int64_t, BlockId> real;  // Model block -> its real block.
  const auto holders = [](const Model& md) {
    std::map<int64_t, int32_t> h;
    for (const auto& [id, q] : md) {
      for (const auto& t : q.blocks) {
        for (int64_t b : t) {
          if (b >= 0) ++h[b];
        }
      }
    }
    return h;
  };
  const auto free_in = [&](const Model& md) {
    return num_blocks - static_cast<int64_t>(holders(md).size());
  };
  const auto live = [](const std::vector<std::vector<int64_t>>& tables) {
    int64_t n = 0;
    for (const auto& t : tables) {
      n += std::count_if(t.begin(), t.end(), [](int64_t b) { return b >= 0; });
    }
    return n;
  };
  const auto host_used = [&](const Model& md) {
    int64_t n = 0;
    for (const auto& [id, q] : md) n += live(q.host);
    return n;
  };
  int64_t next_host = 0;
  std::map<int64_t, BlockId> real_host;  // Model host block -> real.
  // A swap's plan against the model: from's live entries (real ids from
  // `from_real`) -> fresh model ids of the other tier in the same layout,
  // whose real ids the plan gives; split per group.
  const auto check_plan = [&](const SwapPlan& plan,
                              const std::vector<std::vector<int64_t>>& from,
                              const std::map<int64_t, BlockId>& from_real,
                              int64_t* next_id,
                              std::map<int64_t, BlockId>* to_real,
                              std::vector<std::vector<int64_t>>* to) {
    to->assign(num_groups, {});
    ASSERT_EQ(plan.group_offsets.size(), static_cast<size_t>(num_groups + 1));
    ASSERT_EQ(plan.src.size(), plan.dst.size());
    size_t k = 0;
    for (int32_t g = 0; g < num_groups; ++g) {
      ASSERT_EQ(plan.group_offsets[g], static_cast<int32_t>(k));
      for (int64_t b : from[g]) {
        if (b < 0) {
          (*to)[g].push_back(-1);
          continue;
        }
        ASSERT_LT(k, plan.src.size());
        ASSERT_EQ(plan.src[k], from_real.at(b)) << "pair " << k;
        (*to)[g].push_back(*next_id);
        (*to_real)[(*next_id)++] = plan.dst[k];
        ++k;
      }
    }
    ASSERT_EQ(plan.group_offsets[num_groups], static_cast<int32_t>(k));
    ASSERT_EQ(k, plan.src.size());
    ASSERT_EQ(std::set<BlockId>(plan.dst.begin(), plan.dst.end()).size(), k);
  };
  // Mostly a sequence in `state` (if any), else any: the swaps' error
  // paths run too.
  const auto pick = [&](SequenceState state) {
    std::vector<Model::iterator> in;
    for (auto it = model.begin(); it != model.end(); ++it) {
      if (it->second.state == state) in.push_back(it);
    }
    if (in.empty() || rng() % 4 == 0) {
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      return it;
    }
    return in[rng() % in.size()];
  };
  int64_t model_swap_outs = 0;
  int64_t model_swap_ins = 0;
  int64_t model_swapped = 0;
  const auto place = [&](Seq& q, int64_t tokens) {
    q.tokens = tokens;
    q.computed = 0;
    q.state = SequenceState::kRunning;
    q.blocks.assign(num_groups, {});
    for (auto& t : q.blocks) {
      for (int64_t i = 0; i < blocks_for(tokens); ++i) {
        t.push_back(next_block++);
      }
    }
  };
  SequenceId next_id = 1;
  StepOutput out;
  int64_t model_copies = 0;
  for (int step = 0; step < 1200; ++step) {
    const int op = rng() % 15;
    std::vector<std::pair<int64_t, int64_t>> copies;  // Model src -> dst.
    std::vector<SlotRequest> reqs;
    if (op < 2 || model.empty()) {  // Admit.
      const int64_t prompt = 1 + rng() % 24;
      const bool fits = blocks_for(prompt) * num_groups <= free_in(model);
      const absl::Status s = m->AddSequence(next_id, prompt, 200, &out);
      ASSERT_EQ(s.ok(), fits) << s;
      if (s.ok()) place(model[next_id], prompt);
      ++next_id;
    } else if (op < 4) {  // Fork one.
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      const absl::Status s = m->Fork(it->first, next_id);
      ASSERT_EQ(s.ok(), it->second.running()) << s;
      if (s.ok()) model[next_id] = it->second;
      ++next_id;
    } else if (op < 8) {  // A step over some running sequences.
      for (const auto& [id, q] : model) {
        if (q.running() && rng() % 2 == 0) {
          reqs.push_back({.seq = id,
                          .num_tokens = static_cast<int32_t>(
                              rng() % 4 == 0 ? 1 + rng() % 10 : 1)});
        }
      }
      if (reqs.empty()) continue;
      // The model's step: every window releases, then the shared last
      // blocks are copied in request and group order (a copy while another
      // holder is left), then the tables grow.
      Model after = model;
      int64_t grow = 0;
      for (const SlotRequest& r : reqs) {
        Seq& q = after[r.seq];
        q.computed = q.tokens;
        for (int32_t g = 0; g < num_groups; ++g) {
          for (int64_t i = 0; i < first_needed(g, q.computed) &&
                              i < static_cast<int64_t>(q.blocks[g].size());
               ++i) {
            q.blocks[g][i] = -1;
          }
        }
        grow += (blocks_for(q.tokens + r.num_tokens) - blocks_for(q.tokens)) *
                num_groups;
      }
      for (const SlotRequest& r : reqs) {
        Seq& q = after[r.seq];
        if (q.tokens % bt == 0) continue;
        for (int32_t g = 0; g < num_groups; ++g) {
          int64_t& tail = q.blocks[g][q.tokens / bt];
          if (holders(after)[tail] > 1) {
            copies.push_back({tail, next_block});
            tail = next_block++;
          }
        }
      }
      const int64_t need = grow + static_cast<int64_t>(copies.size());
      // free_in(after) counts the copies' blocks as taken already.
      const bool fits =
          need <= free_in(after) + static_cast<int64_t>(copies.size());
      const absl::Status s = m->AppendSlots(reqs, &out);
      ASSERT_EQ(s.ok(), fits) << s << " need " << need;
      if (!s.ok()) {
        ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
        copies.clear();
        reqs.clear();
        // Make room: preempt a running one.
        for (auto& [id, q] : model) {
          if (!q.running()) continue;
          ASSERT_THAT(m->Preempt(id), IsOk());
          q.state = SequenceState::kPreempted;
          q.computed = 0;
          q.blocks.clear();
          break;
        }
      } else {
        for (const SlotRequest& r : reqs) {
          Seq& q = after[r.seq];
          for (int32_t g = 0; g < num_groups; ++g) {
            while (static_cast<int64_t>(q.blocks[g].size()) <
                   blocks_for(q.tokens + r.num_tokens)) {
              q.blocks[g].push_back(next_block++);
            }
          }
          q.tokens += r.num_tokens;
        }
        ASSERT_EQ(out.copies.size(), static_cast<int32_t>(copies.size()));
        for (size_t i = 0; i < copies.size(); ++i) {
          ASSERT_EQ(out.copies.ops()[i].src, real.at(copies[i].first));
          real[copies[i].second] = out.copies.ops()[i].dst;
        }
        model = std::move(after);
        model_copies += static_cast<int64_t>(copies.size());
      }
    } else if (op == 8) {  // Free one (refused while a swap is pending).
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      const bool pending = it->second.state == SequenceState::kSwappingOut ||
                           it->second.state == SequenceState::kSwappingIn;
      const absl::Status s = m->Free(it->first);
      ASSERT_EQ(s.ok(), !pending) << s;
      if (s.ok()) {
        model.erase(it);
      } else {
        ASSERT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
      }
    } else if (op == 9) {  // Preempt one.
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      const absl::Status s = m->Preempt(it->first);
      ASSERT_EQ(s.ok(), it->second.running()) << s;
      if (s.ok()) {
        it->second.state = SequenceState::kPreempted;
        it->second.computed = 0;
        it->second.blocks.clear();
      }
    } else if (op == 10) {  // Readmit a preempted one.
      for (auto& [id, q] : model) {
        if (q.state != SequenceState::kPreempted) continue;
        const bool fits =
            blocks_for(q.tokens) * num_groups <= free_in(model);
        const absl::Status s = m->Readmit(id, &out);
        ASSERT_EQ(s.ok(), fits) << s;
        if (s.ok()) place(q, q.tokens);
        break;
      }
    } else if (op == 12) {  // Swap one out (refused unless running, fits).
      const auto it = pick(SequenceState::kRunning);
      Seq& q = it->second;
      const bool fits = live(q.blocks) <= num_host_blocks - host_used(model);
      absl::StatusOr<SwapPlan> plan = m->SwapOut(it->first);
      ASSERT_EQ(plan.ok(), q.running() && fits) << plan.status();
      if (!plan.ok()) {
        ASSERT_EQ(plan.status().code(),
                  q.running() ? absl::StatusCode::kResourceExhausted
                              : absl::StatusCode::kFailedPrecondition);
      } else {
        check_plan(*plan, q.blocks, real, &next_host, &real_host, &q.host);
        if (::testing::Test::HasFatalFailure()) return;
        q.state = SequenceState::kSwappingOut;
        ++model_swap_outs;
        model_swapped += static_cast<int64_t>(plan->src.size());
      }
    } else if (op == 13) {  // Swap one in (refused unless out, fits).
      const auto it = pick(SequenceState::kSwappedOut);
      Seq& q = it->second;
      const bool out_now = q.state == SequenceState::kSwappedOut;
      const bool fits = live(q.host) <= free_in(model);
      absl::StatusOr<SwapPlan> plan = m->SwapIn(it->first);
      ASSERT_EQ(plan.ok(), out_now && fits) << plan.status();
      if (!plan.ok()) {
        ASSERT_EQ(plan.status().code(),
                  out_now ? absl::StatusCode::kResourceExhausted
                          : absl::StatusCode::kFailedPrecondition);
      } else {
        check_plan(*plan, q.host, real_host, &next_block, &real, &q.blocks);
        if (::testing::Test::HasFatalFailure()) return;
        q.state = SequenceState::kSwappingIn;
        ++model_swap_ins;
        model_swapped += static_cast<int64_t>(plan->src.size());
      }
    } else if (op == 14) {  // The caller ran a swap's copies.
      const auto it = pick(rng() % 2 == 0 ? SequenceState::kSwappingOut
                                          : SequenceState::kSwappingIn);
      Seq& q = it->second;
      const absl::Status s = m->CompleteSwap(it->first);
      if (q.state == SequenceState::kSwappingOut) {
        ASSERT_THAT(s, IsOk());
        q.state = SequenceState::kSwappedOut;
        q.blocks.clear();
      } else if (q.state == SequenceState::kSwappingIn) {
        ASSERT_THAT(s, IsOk());
        q.state = SequenceState::kRunning;
        q.host.clear();
      } else {
        ASSERT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
      }
    } else {  // Truncate one (refused when its window was released).
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      Seq& q = it->second;
      if (!q.running()) continue;
      const int64_t len = q.tokens - rng() % (q.tokens + 1);
      bool can = true;
      for (int32_t g = 0; g < num_groups; ++g) {
        const int64_t need = first_needed(g, len);
        if (need < blocks_for(len) && need < first_needed(g, q.computed)) {
          can = false;
        }
      }
      ASSERT_EQ(m->Truncate(it->first, len).ok(), can);
      if (can) {
        q.tokens = len;
        q.computed = std::min(q.computed, len);
        for (auto& t : q.blocks) t.resize(blocks_for(len));
      }
    }
    // The caller ran the copies.
    out.copies.MarkDone();
    m->CheckInvariants();

    // The books against the model: each live model block has one real
    // block for its life, ref_counts are holders, the slots of the step
    // are in the tables and distinct.
    const std::map<int64_t, int32_t> held = holders(model);
    std::map<int32_t, int64_t> model_of;  // Real -> model, this step.
    for (const auto& [id, q] : model) {
      ASSERT_TRUE(m->contains(id));
      ASSERT_EQ(*m->num_tokens(id), q.tokens);
      ASSERT_EQ(*m->state(id), q.state) << "seq " << id;
      if (!q.running()) continue;
      for (int32_t g = 0; g < num_groups; ++g) {
        const std::vector<BlockId> t = Entries(*m, id, g);
        ASSERT_EQ(t.size(), q.blocks[g].size()) << "seq " << id;
        for (size_t i = 0; i < t.size(); ++i) {
          const int64_t b = q.blocks[g][i];
          ASSERT_EQ(t[i].is_valid(), b >= 0)
              << "seq " << id << " group " << g << " entry " << i;
          if (b < 0) continue;
          const auto [r, fresh] = real.try_emplace(b, t[i]);
          ASSERT_EQ(r->second, t[i]) << "model block " << b << " moved";
          const auto [mb, first] = model_of.try_emplace(t[i].value(), b);
          ASSERT_EQ(mb->second, b) << "block " << t[i].value() << " twice";
          ASSERT_EQ(m->books().ref_count(t[i]), held.at(b));
        }
      }
    }
    for (auto it = real.begin(); it != real.end();) {
      it = held.count(it->first) > 0 ? std::next(it) : real.erase(it);
    }
    // Host blocks: one holder each, distinct, and the used count.
    std::set<int64_t> host_held;
    for (const auto& [id, q] : model) {
      for (const auto& t : q.host) {
        for (int64_t b : t) {
          if (b < 0) continue;
          ASSERT_TRUE(host_held.insert(b).second) << "host block " << b;
        }
      }
    }
    std::set<BlockId> host_real;
    for (auto it = real_host.begin(); it != real_host.end();) {
      if (host_held.count(it->first) == 0) {
        it = real_host.erase(it);
        continue;
      }
      ASSERT_TRUE(host_real.insert(it->second).second) << "host block twice";
      ++it;
    }
    const ManagerStats stats = m->stats();
    ASSERT_EQ(stats.host_used_blocks, static_cast<int32_t>(host_held.size()));
    ASSERT_EQ(stats.swap_outs, model_swap_outs);
    ASSERT_EQ(stats.swap_ins, model_swap_ins);
    ASSERT_EQ(stats.swapped_blocks, model_swapped);
    ASSERT_EQ(stats.used_blocks, static_cast<int32_t>(held.size()));
    ASSERT_EQ(stats.cow_copies, model_copies);
    std::set<int64_t> slots;
    for (size_t i = 0; i < reqs.size(); ++i) {
      const Seq& q = model[reqs[i].seq];
      for (int32_t g = 0; g < num_groups; ++g) {
        const std::vector<BlockId> t = Entries(*m, reqs[i].seq, g);
        for (int32_t j = 0; j < reqs[i].num_tokens; ++j) {
          const int64_t slot = out.slot_mapping[g * out.group_stride +
                                                out.request_offsets[i] + j];
          const int64_t tok = q.tokens - reqs[i].num_tokens + j;
          ASSERT_EQ(StepOutput::BlockOf(slot, bt), t[tok / bt]);
          ASSERT_EQ(StepOutput::OffsetOf(slot, bt), tok % bt);
          ASSERT_TRUE(slots.insert(slot).second) << "slot twice";
        }
      }
    }
  }
  for (const auto& [id, q] : model) {
    if (q.state == SequenceState::kSwappingOut ||
        q.state == SequenceState::kSwappingIn) {
      ASSERT_THAT(m->CompleteSwap(id), IsOk());
    }
    ASSERT_THAT(m->Free(id), IsOk());
  }
  m->CheckInvariants();
  EXPECT_EQ(m->stats().used_blocks, 0);  // Every block returned.
  EXPECT_EQ(m->stats().free_blocks, num_blocks);
  EXPECT_EQ(m->stats().host_used_blocks, 0);
  EXPECT_GT(m->stats().swap_ins, 0);  // The workload swapped.
  if (bt > 1) {  // With bt 1 no block is ever partial.
    EXPECT_GT(m->stats().cow_copies, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, GroupedForkPropertyTest,
                         ::testing::Range(1, 17));

}  // namespace
}  // namespace pagedkv
