// The books of KVCacheManager with layer groups (Options::layer_groups):
// a step that cannot get its blocks changes nothing (tables, versions,
// ref_counts, free counts, stats), and a step counts the blocks its
// windows release as free.
#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

#include "absl/status/status.h"
#include "allocator/block_id.h"
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

// One full group and `windows` window groups of `window` tokens, 2 layers
// each, books only, no watermark.
KVCacheManager::Options Options(int32_t num_blocks, int32_t block_tokens,
                                int32_t windows, int32_t window) {
  KVCacheManager::Options o{
      .layout = {.num_layers = 2 * (1 + windows),
                 .num_kv_heads = 1,
                 .head_dim = 4,
                 .dtype = DType::kFloat16,
                 .block_tokens = block_tokens},
      .num_blocks = num_blocks,
      .storage = StorageMode::kBooksOnly,
      .watermark = 0.0};
  o.layer_groups.push_back({.num_layers = 2});
  for (int32_t i = 0; i < windows; ++i) {
    o.layer_groups.push_back({.num_layers = 2, .sliding_window = window});
  }
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
                       HasSubstr("needs 4 blocks, 0 free and 2 the windows "
                                 "would release")));
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

}  // namespace
}  // namespace pagedkv
