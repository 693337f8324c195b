// KVCacheManager with layer groups (Options::layer_groups): validation,
// the modes refused with UNIMPLEMENTED, the window bound per decode step,
// group-major slots, and a seeded random workload against a reference
// model with CheckInvariants() after every step.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "allocator/block_id.h"
#include "allocator/window_table.h"
#include "cache/serving/group_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

KVLayout Layout(int32_t layers, int32_t block_tokens) {
  return KVLayout{.num_layers = layers,
                  .num_kv_heads = 2,
                  .head_dim = 8,
                  .dtype = DType::kFloat16,
                  .block_tokens = block_tokens};
}

// Gemma-3 style: one full group, then `windows` window groups.
std::vector<LayerGroup> Groups(int32_t layers_per_group, int32_t windows,
                               int32_t window) {
  std::vector<LayerGroup> g = {{.num_layers = layers_per_group}};
  for (int32_t i = 0; i < windows; ++i) {
    g.push_back({.num_layers = layers_per_group, .sliding_window = window});
  }
  return g;
}

KVCacheManager::Options GroupOptions(int32_t num_blocks, int32_t block_tokens,
                                     std::vector<LayerGroup> groups) {
  int32_t layers = 0;
  for (const LayerGroup& g : groups) layers += g.num_layers;
  KVCacheManager::Options o{.layout = Layout(layers, block_tokens),
                            .num_blocks = num_blocks,
                            .storage = StorageMode::kBooksOnly,
                            .watermark = 0.0};
  o.layer_groups = std::move(groups);
  return o;
}

TEST(LayerGroupsTest, BadGroupsAreInvalidArgumentWithTheNumbers) {
  const KVLayout layout = Layout(12, 16);
  const LayerGroup unequal[] = {{.num_layers = 8}, {.num_layers = 4}};
  EXPECT_THAT(ValidateLayerGroups(layout, unequal),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("group 1 has 4 layers, group 0 has 8")));
  const LayerGroup short_sum[] = {{.num_layers = 4}, {.num_layers = 4}};
  EXPECT_THAT(ValidateLayerGroups(layout, short_sum),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sum to 8, the layout has 12")));
  const LayerGroup negative[] = {{.num_layers = 6},
                                 {.num_layers = 6, .sliding_window = -5}};
  EXPECT_THAT(ValidateLayerGroups(layout, negative),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sliding_window is -5")));
  const LayerGroup zero[] = {{.num_layers = 0}};
  EXPECT_THAT(ValidateLayerGroups(layout, zero),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("group 0 has 0 layers")));
  const LayerGroup good[] = {{.num_layers = 6},
                             {.num_layers = 6, .sliding_window = 1}};
  EXPECT_THAT(ValidateLayerGroups(layout, good), IsOk());
  EXPECT_EQ(GroupBlockLayout(layout, good).num_layers, 6);
  EXPECT_EQ(GroupBlockLayout(layout, {}).num_layers, 12);

  KVCacheManager::Options o = GroupOptions(64, 16, Groups(4, 2, 32));
  o.layer_groups[1].num_layers = 3;
  EXPECT_THAT(KVCacheManager::Create(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("group 1 has 3 layers, group 0 has 4")));
}

TEST(LayerGroupsTest, ModesNotSupportedYetAreUnimplementedAtCreate) {
  const auto create_with = [](auto edit) {
    KVCacheManager::Options o = GroupOptions(64, 16, Groups(2, 2, 32));
    edit(o);
    return KVCacheManager::Create(o).status();
  };
  EXPECT_THAT(create_with([](auto& o) {
                o.admission = AdmissionMode::kReservation;
                o.max_step_tokens = -1;
              }),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_step_tokens must be >= 0, got -1")));
  // Prefix caching works with groups, also without a full group (a window
  // anchor: window_groups_prefix_test).
  EXPECT_THAT(create_with([](auto& o) { o.prefix_caching.enabled = true; }),
              IsOk());
  EXPECT_THAT(create_with([](auto& o) {
                o.prefix_caching.enabled = true;
                o.layer_groups.erase(o.layer_groups.begin());
                o.layout.num_layers = 4;
              }),
              IsOk());
}

TEST(LayerGroupsTest, CallsNotSupportedYetAreUnimplementedAndChangeNothing) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupOptions(64, 4, Groups(2, 1, 8)));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 10, &out), IsOk());
  const int32_t used = m->stats().used_blocks;
  EXPECT_THAT(m->block_table(1).status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("group_table")));
  EXPECT_THAT(m->running_table(1).status(),
              StatusIs(absl::StatusCode::kUnimplemented));
  // Without prefix caching, as without groups: commits are refused.
  const TokenCommit commit[] = {{.seq = 1, .num_tokens = 2}};
  EXPECT_THAT(m->CommitTokens(commit),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("without prefix caching")));
  EXPECT_EQ(m->stats().used_blocks, used);
  EXPECT_TRUE(m->contains(1));
  EXPECT_FALSE(m->contains(3));
  m->CheckInvariants();
}

TEST(LayerGroupsTest, GroupTableErrorsSayWhy) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupOptions(64, 4, Groups(2, 1, 8)));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 10, &out), IsOk());
  EXPECT_THAT(m->group_table(1, 2).status(),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("layer group 2 of a manager with 2")));
  EXPECT_THAT(m->group_table(9, 0).status(),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(m->Preempt(1), IsOk());
  EXPECT_THAT(m->group_table(1, 0).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  std::unique_ptr<KVCacheManager> plain = *KVCacheManager::Create(
      {.layout = Layout(4, 4), .num_blocks = 8,
       .storage = StorageMode::kBooksOnly});
  EXPECT_EQ(plain->num_layer_groups(), 0);
  EXPECT_THAT(plain->group_table(1, 0).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// The bound: after every decode step a window group holds at most
// ceil(W / block_tokens) + 1 blocks, the full group all of them, and the
// slots are group-major and point into each group's table.
TEST(LayerGroupsTest, DecodeKeepsEachWindowGroupWithinItsBound) {
  constexpr int32_t kBt = 16, kWindow = 100;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(
      GroupOptions(4096, kBt, Groups(4, 5, kWindow)));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(7, 40, 4000, &out), IsOk());
  ASSERT_EQ(out.group_stride, 40);
  ASSERT_EQ(out.slot_mapping.size(), 6u * 40);
  const int64_t bound = WindowBlockBound(kWindow, kBt);
  EXPECT_EQ(bound, 8);
  for (int step = 0; step < 3000; ++step) {
    const SlotRequest r[] = {{.seq = 7, .num_tokens = 1}};
    ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
    const int64_t n = *m->num_tokens(7);
    ASSERT_EQ(out.group_stride, 1);
    for (int32_t g = 0; g < 6; ++g) {
      const KVCacheManager::RunningTable t = *m->group_table(7, g);
      const int64_t live = std::count_if(t.blocks.begin(), t.blocks.end(),
                                         [](BlockId b) { return b.is_valid(); });
      ASSERT_EQ(t.blocks.size(), static_cast<size_t>((n + kBt - 1) / kBt));
      if (g == 0) {
        ASSERT_EQ(live, static_cast<int64_t>(t.blocks.size()));
      } else {
        ASSERT_LE(live, bound) << "step " << step;
      }
      // The new token's slot in group g is in its table's block.
      const int64_t slot = out.slot_mapping[g * out.group_stride];
      ASSERT_EQ(StepOutput::BlockOf(slot, kBt), t.blocks[(n - 1) / kBt]);
      ASSERT_EQ(StepOutput::OffsetOf(slot, kBt), (n - 1) % kBt);
    }
    m->CheckInvariants();
  }
  // 3040 tokens: 190 full blocks + 5 windows of at most 8.
  EXPECT_LE(m->stats().used_blocks, 190 + 5 * 8);
  EXPECT_GT(m->window_released_blocks(), 0);
  ASSERT_THAT(m->Free(7), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
}

TEST(LayerGroupsTest, AdmissionCountsEveryGroupsPromptBlocks) {
  // 3 groups; a 16-token prompt of 4-token blocks takes 4 blocks a group.
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupOptions(24, 4, Groups(2, 2, 4)));
  EXPECT_EQ(m->CanAdmit(16, 0), Admission::kAdmit);
  EXPECT_EQ(m->CanAdmit(33, 0), Admission::kNever);  // 9 x 3 > 24.
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 16, 100, &out), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 12);
  EXPECT_EQ(m->CanAdmit(16, 0), Admission::kAdmit);
  ASSERT_THAT(m->AddSequence(2, 16, 100, &out), IsOk());
  EXPECT_EQ(m->CanAdmit(4, 0), Admission::kLater);
  EXPECT_THAT(m->AddSequence(3, 4, 0, &out),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("needs 3 blocks (3 groups), 0 free")));
  // A decode step releases the windows' old blocks (window 4: only the
  // last block stays), which pays for the new ones.
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1},
                              {.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 2 * (5 + 2 + 2));
  m->CheckInvariants();
}

TEST(LayerGroupsTest, AFailedStepGivesNoSlotsAndKeepsEveryLength) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupOptions(8, 4, Groups(2, 1, 4)));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 8, 100, &out), IsOk());  // 4 blocks.
  ASSERT_THAT(m->AddSequence(2, 8, 100, &out), IsOk());  // 4 blocks.
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 8},
                              {.seq = 2, .num_tokens = 8}};
  EXPECT_THAT(m->AppendSlots(step, &out),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("needs 8 blocks")));
  EXPECT_TRUE(out.slot_mapping.empty());
  EXPECT_EQ(*m->num_tokens(1), 8);
  EXPECT_EQ(*m->num_tokens(2), 8);
  m->CheckInvariants();
}

TEST(LayerGroupsTest, TruncateNeedsTheWindowItWouldReadAgain) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupOptions(64, 4, Groups(2, 1, 4)));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 4, 100, &out), IsOk());
  for (int i = 0; i < 12; ++i) {
    const SlotRequest r[] = {{.seq = 1, .num_tokens = 1}};
    ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
  }
  // 16 tokens, computed 15: the window group keeps blocks from 3 (token 12).
  EXPECT_THAT(m->Truncate(1, 6),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("released already")));
  EXPECT_EQ(*m->num_tokens(1), 16);
  EXPECT_THAT(m->Truncate(1, 17), StatusIs(absl::StatusCode::kOutOfRange));
  // Token 14 would read 11..14: block 2 is a hole.
  EXPECT_THAT(m->Truncate(1, 14),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("group 1's window (4 tokens) then reads "
                                 "block 2")));
  ASSERT_THAT(m->Truncate(1, 15), IsOk());  // Reads 12..15: block 3, live.
  EXPECT_EQ(*m->num_tokens(1), 15);
  const KVCacheManager::RunningTable full = *m->group_table(1, 0);
  EXPECT_EQ(full.blocks.size(), 4u);
  m->CheckInvariants();
}

// A seeded random workload against a model: lengths, each group's hole
// pattern, distinct live blocks, used blocks, and every block back at the
// end.
class WindowGroupsPropertyTest : public ::testing::TestWithParam<int> {};

TEST_P(WindowGroupsPropertyTest, MatchesAReferenceModel) {
  std::mt19937 rng(GetParam());
  const int32_t bt = 1 + rng() % 8;
  const int32_t window = 1 + rng() % 40;
  const int32_t num_windows = 1 + rng() % 4;
  std::vector<LayerGroup> groups = Groups(2, num_windows, window);
  if (rng() % 3 == 0) groups.erase(groups.begin());  // All window groups.
  const int32_t num_groups = static_cast<int32_t>(groups.size());
  const int32_t num_blocks = 64 + rng() % 256;
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupOptions(num_blocks, bt, groups));
  struct Model {
    int64_t tokens = 0;
    int64_t computed = 0;
    bool running = true;
  };
  std::map<SequenceId, Model> model;
  SequenceId next_id = 1;
  StepOutput out;
  const auto blocks_for = [&](int64_t n) { return (n + bt - 1) / bt; };
  const auto first_needed = [&](int32_t g, int64_t computed) -> int64_t {
    return groups[g].is_window()
               ? WindowFirstNeededBlock(computed, window, bt)
               : 0;
  };
  for (int step = 0; step < 1500; ++step) {
    const int op = rng() % 10;
    if (op < 2 || model.empty()) {  // Admit.
      const int64_t prompt = 1 + rng() % 60;
      const Admission a = m->CanAdmit(prompt, 100);
      const absl::Status s = m->AddSequence(next_id, prompt, 100, &out);
      ASSERT_EQ(s.ok(), a == Admission::kAdmit) << s;
      if (s.ok()) {
        ASSERT_EQ(out.group_stride, prompt);
        ASSERT_EQ(out.slot_mapping.size(),
                  static_cast<size_t>(prompt * num_groups));
        model[next_id] = {prompt, 0, true};
      }
      ++next_id;
    } else if (op < 7) {  // A step over some running sequences.
      std::vector<SlotRequest> reqs;
      for (const auto& [id, md] : model) {
        if (md.running && rng() % 2 == 0) {
          reqs.push_back({.seq = id,
                          .num_tokens = static_cast<int32_t>(
                              rng() % 4 == 0 ? 1 + rng() % 20 : 1)});
        }
      }
      if (reqs.empty()) continue;
      const absl::Status s = m->AppendSlots(reqs, &out);
      if (!s.ok()) {
        ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
        // Nothing changed (the windows did not move either).
        // Preempt one to make room.
        for (auto& [id, md] : model) {
          if (md.running) {
            ASSERT_THAT(m->Preempt(id), IsOk());
            md.running = false;
            md.computed = 0;
            break;
          }
        }
      } else {
        int64_t total = 0;
        for (const SlotRequest& r : reqs) total += r.num_tokens;
        ASSERT_EQ(out.group_stride, total);
        std::set<int64_t> seen;
        for (size_t i = 0; i < reqs.size(); ++i) {
          Model& md = model[reqs[i].seq];
          md.computed = md.tokens;
          for (int32_t g = 0; g < num_groups; ++g) {
            const KVCacheManager::RunningTable t =
                *m->group_table(reqs[i].seq, g);
            for (int32_t j = 0; j < reqs[i].num_tokens; ++j) {
              const int64_t slot = out.slot_mapping[g * out.group_stride +
                                                    out.request_offsets[i] + j];
              const int64_t tok = md.tokens + j;
              ASSERT_EQ(StepOutput::BlockOf(slot, bt), t.blocks[tok / bt]);
              ASSERT_EQ(StepOutput::OffsetOf(slot, bt), tok % bt);
              ASSERT_TRUE(seen.insert(slot).second) << "slot twice";
            }
          }
          md.tokens += reqs[i].num_tokens;
        }
      }
    } else if (op == 7) {  // Free one.
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      ASSERT_THAT(m->Free(it->first), IsOk());
      model.erase(it);
    } else if (op == 8) {  // Readmit a preempted one.
      for (auto& [id, md] : model) {
        if (!md.running) {
          const absl::Status s = m->Readmit(id, &out);
          if (s.ok()) {
            md.running = true;
            md.computed = 0;
          } else {
            ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
          }
          break;
        }
      }
    } else {  // Truncate one (may refuse: its window was released).
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      Model& md = it->second;
      if (!md.running) continue;
      const int64_t len = md.tokens - rng() % (md.tokens + 1);
      bool can = true;
      for (int32_t g = 0; g < num_groups; ++g) {
        const int64_t need = first_needed(g, len);
        if (need < blocks_for(len) && need < first_needed(g, md.computed)) {
          can = false;
        }
      }
      const absl::Status s = m->Truncate(it->first, len);
      ASSERT_EQ(s.ok(), can) << s << " len " << len << " of " << md.tokens
                             << " computed " << md.computed;
      if (s.ok()) {
        md.tokens = len;
        md.computed = std::min(md.computed, len);
      }
    }
    // The books against the model.
    m->CheckInvariants();
    std::set<int32_t> live_blocks;
    int64_t live = 0;
    for (const auto& [id, md] : model) {
      ASSERT_TRUE(m->contains(id));
      ASSERT_EQ(*m->num_tokens(id), md.tokens);
      if (!md.running) continue;
      for (int32_t g = 0; g < num_groups; ++g) {
        const KVCacheManager::RunningTable t = *m->group_table(id, g);
        ASSERT_EQ(t.blocks.size(), static_cast<size_t>(blocks_for(md.tokens)));
        for (size_t i = 0; i < t.blocks.size(); ++i) {
          const bool want_live =
              static_cast<int64_t>(i) >= first_needed(g, md.computed);
          ASSERT_EQ(t.blocks[i].is_valid(), want_live)
              << "seq " << id << " group " << g << " entry " << i;
          if (want_live) {
            ASSERT_TRUE(live_blocks.insert(t.blocks[i].value()).second);
            ++live;
          }
        }
      }
    }
    ASSERT_EQ(m->stats().used_blocks, live);
  }
  for (const auto& [id, md] : model) ASSERT_THAT(m->Free(id), IsOk());
  EXPECT_EQ(m->stats().num_sequences, 0);
  m->CheckInvariants();
  EXPECT_EQ(m->stats().used_blocks, 0);  // Every block returned.
  EXPECT_EQ(m->stats().free_blocks, num_blocks);
}

INSTANTIATE_TEST_SUITE_P(Seeds, WindowGroupsPropertyTest,
                         ::testing::Range(1, 13));

}  // namespace
}  // namespace pagedkv

namespace pagedkv {
namespace {

TEST(GroupTableExportTest, HeaderExampleWritesHolesAndPads) {
  const std::vector<LayerGroup> groups = {{.num_layers = 2},
                                          {.num_layers = 2,
                                           .sliding_window = 4}};
  KVCacheManager::Options o{.layout = {.num_layers = 4, .num_kv_heads = 1,
                                       .head_dim = 4, .block_tokens = 4},
                            .num_blocks = 32,
                            .storage = StorageMode::kBooksOnly};
  o.layer_groups = groups;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_TRUE(m->AddSequence(1, 9, 10, &out).ok());
  const SlotRequest r[] = {{.seq = 1, .num_tokens = 1}};
  ASSERT_TRUE(m->AppendSlots(r, &out).ok());
  const KVCacheManager::RunningTable w = *m->group_table(1, 1);
  const SequenceId batch[] = {1};
  int32_t tables[4], lens[1];
  ASSERT_TRUE(ExportDenseGroupBlockTables(*m, 1, batch,
                                          {.max_blocks = 4, .pad_id = 0},
                                          tables, lens)
                  .ok());
  EXPECT_EQ(tables[0], -1);
  EXPECT_EQ(tables[1], w.blocks[1].value());
  EXPECT_EQ(tables[2], w.blocks[2].value());
  EXPECT_EQ(tables[3], 0);
  EXPECT_EQ(lens[0], 10);
  // The full group has no hole.
  const KVCacheManager::RunningTable f = *m->group_table(1, 0);
  ASSERT_TRUE(ExportDenseGroupBlockTables(*m, 0, batch,
                                          {.max_blocks = 4, .pad_id = 0},
                                          tables, lens)
                  .ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(tables[i], f.blocks[i].value());
  // Bad input writes nothing.
  int32_t untouched[4] = {7, 7, 7, 7};
  EXPECT_EQ(ExportDenseGroupBlockTables(*m, 1, batch, {.max_blocks = 2},
                                        untouched, lens)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExportDenseGroupBlockTables(*m, 2, batch, {.max_blocks = 4},
                                        untouched, lens)
                .code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(untouched[0], 7);
}

}  // namespace
}  // namespace pagedkv
