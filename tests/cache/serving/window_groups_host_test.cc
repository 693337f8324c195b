// Layer groups in host storage (StorageMode::kHost): the manager owns a
// pool of GroupBlockLayout blocks (one group's layers each) and runs the
// copy-on-write copies itself. Random workloads of admissions, prefill
// chunks, decode steps, forks, truncations, preemptions, swaps (host mode
// copies and completes them) and frees write a
// stamp per (token, group, layer, K|V) into each step's group-major slots,
// as a server would, and after every step every token a group still holds
// (all of them in a full group, the window's in a window group) reads back
// its stamp through group_table: forks see their parent's history in their
// own copies, and no write of one sequence shows in another.
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "allocator/block_id.h"
#include "allocator/window_table.h"
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

using ::pagedkv::testing::GroupedBooksOnlyOptions;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

KVCacheManager::Options HostOptions(int32_t num_blocks, int32_t block_tokens,
                                    int32_t windows, int32_t window) {
  KVCacheManager::Options o =
      GroupedBooksOnlyOptions(num_blocks, block_tokens, 1, windows, window);
  o.storage = StorageMode::kHost;
  o.num_host_blocks = 64;
  return o;
}

// The stamp of a token (a uint16 in the first element of its K or V row of
// head 0): distinct per token write, group, layer and K|V.
uint16_t Stamp(uint32_t token_stamp, int32_t group, int32_t layer, KV kv) {
  return static_cast<uint16_t>(token_stamp * 31 + group * 7 + layer * 3 +
                               static_cast<int32_t>(kv));
}

class WindowGroupsHostTest : public ::testing::TestWithParam<int> {};

TEST_P(WindowGroupsHostTest, EveryHeldTokenReadsBackItsStamp) {
  std::mt19937 rng(GetParam());
  const int32_t bt = 4;
  const int32_t window = 2 + static_cast<int32_t>(rng() % 10);
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(HostOptions(160, bt, 2, window));
  KVPool& pool = *m->kv_pool();
  const KVLayout& block = pool.layout();
  ASSERT_EQ(block.num_layers, 2);  // One group's layers per block.
  const int32_t groups = m->num_layer_groups();

  // The model: each sequence's token stamps (a fork copies its parent's).
  std::map<SequenceId, std::vector<uint32_t>> model;
  std::map<SequenceId, bool> running;
  std::map<SequenceId, bool> swapped;  // Of those not running.
  uint32_t next_stamp = 1;
  SequenceId next_id = 1;
  StepOutput out;

  const auto write_slots = [&](const std::vector<SequenceId>& seqs,
                               const std::vector<int64_t>& firsts) {
    for (size_t i = 0; i < seqs.size(); ++i) {
      const std::vector<uint32_t>& stamps = model[seqs[i]];
      const int32_t begin = out.request_offsets[i];
      const int32_t end = out.request_offsets[i + 1];
      for (int32_t g = 0; g < groups; ++g) {
        for (int32_t j = begin; j < end; ++j) {
          const int64_t slot = out.slot_mapping[g * out.group_stride + j];
          const BlockId b = StepOutput::BlockOf(slot, bt);
          const int32_t off = StepOutput::OffsetOf(slot, bt);
          const uint32_t stamp = stamps[firsts[i] + (j - begin)];
          for (int32_t layer = 0; layer < block.num_layers; ++layer) {
            for (KV kv : {KV::kKey, KV::kValue}) {
              const uint16_t v = Stamp(stamp, g, layer, kv);
              std::memcpy(pool.BlockData(b) +
                              block.DataOffset(layer, kv, 0, off),
                          &v, sizeof(v));
            }
          }
        }
      }
    }
  };

  int64_t checked = 0, forks = 0, copies = 0, swaps = 0;
  for (int step = 0; step < 250; ++step) {
    const uint32_t op = rng() % 14;
    std::vector<SequenceId> live;
    for (const auto& [id, r] : running) {
      if (r) live.push_back(id);
    }
    if (op < 2 && model.size() < 6) {
      const int64_t prompt = 1 + rng() % 14;
      const SequenceId id = next_id++;
      if (m->AddSequence(id, prompt, 64, &out).ok()) {
        std::vector<uint32_t>& stamps = model[id];
        for (int64_t t = 0; t < prompt; ++t) stamps.push_back(next_stamp++);
        running[id] = true;
        write_slots({id}, {0});
      }
    } else if (op == 2 && !live.empty() && model.size() < 6) {
      const SequenceId parent = live[rng() % live.size()];
      const SequenceId child = next_id++;
      ASSERT_THAT(m->Fork(parent, child), IsOk());
      model[child] = model[parent];
      running[child] = true;
      ++forks;
    } else if (op == 3 && !live.empty()) {
      const SequenceId id = live[rng() % live.size()];
      const int64_t n = static_cast<int64_t>(model[id].size());
      const int64_t keep = rng() % (n + 1);
      const absl::Status st = m->Truncate(id, keep);
      if (st.ok()) {
        model[id].resize(keep);
      } else {
        ASSERT_THAT(st, StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("released already")));
      }
    } else if (op == 4 && !live.empty()) {
      const SequenceId id = live[rng() % live.size()];
      ASSERT_THAT(m->Free(id), IsOk());
      model.erase(id);
      running.erase(id);
    } else if (op == 5 && !live.empty()) {
      const SequenceId id = live[rng() % live.size()];
      ASSERT_THAT(m->Preempt(id), IsOk());
      running[id] = false;
    } else if (op == 7 && !live.empty()) {
      const SequenceId id = live[rng() % live.size()];
      const int32_t host_used = m->stats().host_used_blocks;
      absl::StatusOr<SwapPlan> plan = m->SwapOut(id);
      if (plan.ok()) {
        ASSERT_TRUE(plan->src.empty());  // Host mode copied and completed.
        ASSERT_EQ(*m->state(id), SequenceState::kSwappedOut);
        running[id] = false;
        swapped[id] = true;
        ++swaps;
      } else {
        ASSERT_THAT(plan.status(),
                    StatusIs(absl::StatusCode::kResourceExhausted));
        ASSERT_EQ(m->stats().host_used_blocks, host_used);
      }
    } else if (op == 8) {
      for (auto& [id, r] : running) {
        if (r || !swapped[id] || !m->SwapIn(id).ok()) continue;
        ASSERT_EQ(*m->state(id), SequenceState::kRunning);
        r = true;
        swapped[id] = false;
        break;  // Its bytes came back: checked below.
      }
    } else if (op == 6) {
      for (auto& [id, r] : running) {
        if (r || swapped[id] || !m->Readmit(id, &out).ok()) continue;
        r = true;
        write_slots({id}, {0});  // The server recomputes every token.
        break;
      }
    } else if (!live.empty()) {
      std::vector<SlotRequest> requests;
      std::vector<SequenceId> seqs;
      std::vector<int64_t> firsts;
      for (SequenceId id : live) {
        const int64_t k = rng() % 5 == 0 ? 1 + rng() % 7 : 1;
        if (static_cast<int64_t>(model[id].size()) + k > 64) continue;
        requests.push_back({.seq = id, .num_tokens = k});
        seqs.push_back(id);
        firsts.push_back(static_cast<int64_t>(model[id].size()));
      }
      const int64_t cow_before = m->stats().cow_copies;
      if (m->AppendSlots(requests, &out).ok()) {
        // Host mode ran the copies: nothing is left for the caller.
        ASSERT_TRUE(out.copies.empty());
        copies += m->stats().cow_copies - cow_before;
        for (size_t i = 0; i < seqs.size(); ++i) {
          for (int64_t t = 0; t < requests[i].num_tokens; ++t) {
            model[seqs[i]].push_back(next_stamp++);
          }
        }
        write_slots(seqs, firsts);
      }
    }
    m->CheckInvariants();

    // Every token each group holds reads back its stamp.
    for (const auto& [id, stamps] : model) {
      if (!running[id]) continue;
      for (int32_t g = 0; g < groups; ++g) {
        const KVCacheManager::RunningTable t = *m->group_table(id, g);
        ASSERT_EQ(t.num_tokens, static_cast<int64_t>(stamps.size()));
        for (int64_t tok = 0; tok < t.num_tokens; ++tok) {
          const BlockId b = t.blocks[tok / bt];
          if (!b.is_valid()) {
            ASSERT_GT(g, 0) << "a hole in the full group";
            continue;
          }
          for (int32_t layer = 0; layer < block.num_layers; ++layer) {
            for (KV kv : {KV::kKey, KV::kValue}) {
              uint16_t v;
              std::memcpy(&v,
                          pool.BlockData(b) +
                              block.DataOffset(layer, kv, 0, tok % bt),
                          sizeof(v));
              ASSERT_EQ(v, Stamp(stamps[tok], g, layer, kv))
                  << "sequence " << id << " group " << g << " token " << tok
                  << " step " << step;
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 10000);
  EXPECT_GT(forks, 0);
  for (const auto& [id, stamps] : model) ASSERT_THAT(m->Free(id), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);  // Every block returned.
  EXPECT_EQ(m->stats().host_used_blocks, 0);
  RecordProperty("cow_copies", static_cast<int>(copies));
  RecordProperty("swap_outs", static_cast<int>(swaps));
}

INSTANTIATE_TEST_SUITE_P(Seeds, WindowGroupsHostTest, ::testing::Range(1, 13));

TEST(WindowGroupsHostOptionsTest, AForkedTailIsCopiedWithItsBytes) {
  // 5 tokens of 4 per block: both sequences write into the shared second
  // block in the same step, so one copies it (in every group), and the
  // manager runs the copy: the copy holds token 4's bytes.
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(HostOptions(32, 4, 1, 8));
  KVPool& pool = *m->kv_pool();
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 5, 8, &out), IsOk());
  const int32_t groups = m->num_layer_groups();
  for (int32_t g = 0; g < groups; ++g) {
    const int64_t slot = out.slot_mapping[g * out.group_stride + 4];
    const uint16_t v = static_cast<uint16_t>(100 + g);
    std::memcpy(pool.BlockData(StepOutput::BlockOf(slot, 4)) +
                    pool.layout().DataOffset(0, KV::kKey, 0,
                                             StepOutput::OffsetOf(slot, 4)),
                &v, sizeof(v));
  }
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1},
                              {.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  EXPECT_TRUE(out.copies.empty());
  EXPECT_EQ(m->stats().cow_copies, groups);
  for (int32_t g = 0; g < groups; ++g) {
    const BlockId a = m->group_table(1, g)->blocks[1];
    const BlockId b = m->group_table(2, g)->blocks[1];
    ASSERT_NE(a, b) << "group " << g;
    for (BlockId id : {a, b}) {
      uint16_t v;
      std::memcpy(&v,
                  pool.BlockData(id) +
                      pool.layout().DataOffset(0, KV::kKey, 0, 0),
                  sizeof(v));
      EXPECT_EQ(v, 100 + g) << "group " << g << " block " << id.value();
    }
  }
  m->CheckInvariants();
}

TEST(WindowGroupsHostOptionsTest, AManagerGoesWithSequencesInEveryState) {
  // Destroyed holding a running, a forked, a preempted and a swapped-out
  // sequence: every table releases into pools still alive (ASan checks).
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(HostOptions(32, 4, 1, 4));
  StepOutput out;
  for (SequenceId id = 1; id <= 3; ++id) {
    ASSERT_THAT(m->AddSequence(id, 6, 4, &out), IsOk());
  }
  ASSERT_THAT(m->Fork(1, 4), IsOk());
  ASSERT_THAT(m->Preempt(2), IsOk());
  ASSERT_THAT(m->SwapOut(3).status(), IsOk());
  EXPECT_GT(m->stats().host_used_blocks, 0);
  m->CheckInvariants();
  m.reset();
}

TEST(WindowGroupsHostOptionsTest, APoolMustHaveTheGroupBlockLayout) {
  KVCacheManager::Options o = HostOptions(16, 4, 2, 8);
  // The model's layout (6 layers) is not a block's (2 layers).
  std::unique_ptr<KVPool> wrong =
      *KVPool::Create({.layout = o.layout, .num_blocks = 16});
  o.pool = wrong.get();
  EXPECT_THAT(KVCacheManager::Create(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("block layout")));
  std::unique_ptr<KVPool> right = *KVPool::Create(
      {.layout = GroupBlockLayout(o.layout, o.layer_groups), .num_blocks = 16});
  o.pool = right.get();
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  EXPECT_EQ(m->kv_pool(), right.get());
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 5, 3, &out), IsOk());
  EXPECT_EQ(right->books().num_free_blocks(), 16 - 3 * 2);  // 3 groups.
}

}  // namespace
}  // namespace pagedkv
