// KVCacheManager with layer groups and AdmissionMode::kReservation: each
// running sequence reserves its worst case for its life (full groups
// BlocksFor(max_tokens); a window group what its placement holds or what a
// step of Options::max_step_tokens holds, whichever is more), admission
// refuses what it cannot guarantee, and admitted sequences reach
// max_tokens under random steps, forks, truncations and preemptions
// without RESOURCE_EXHAUSTED.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
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
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

// `full` full groups and `windows` window groups of `window` tokens, 2
// layers each, books only, kReservation with steps of up to `max_step`.
KVCacheManager::Options Options(int32_t num_blocks, int32_t block_tokens,
                                int32_t full, int32_t windows, int32_t window,
                                int32_t max_step) {
  KVCacheManager::Options o = ::pagedkv::testing::GroupedBooksOnlyOptions(
      num_blocks, block_tokens, full, windows, window);
  o.admission = AdmissionMode::kReservation;
  o.max_step_tokens = max_step;
  return o;
}

// 4-token blocks, window 8, steps of up to 4: a 20 + 80 token request
// reserves 25 full blocks and max(5 placed, ceil(11 / 4) + 1 = 4) = 5
// window blocks: 30.
TEST(GroupedReservationTest, AdmissionReservesTheWorstCaseAndRefusesTheRest) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(59, 4, 1, 1, 8, 4));
  EXPECT_EQ(m->CanAdmit(20, 80), Admission::kAdmit);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 20, 80, &out), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 10);
  EXPECT_EQ(m->stats().reserved_blocks, 20);  // 30 reserved, 10 taken.
  // 29 unreserved free blocks left: a second one fits later.
  EXPECT_EQ(m->CanAdmit(20, 80), Admission::kLater);
  EXPECT_EQ(m->CanAdmit(20, 75), Admission::kAdmit);  // 24 + 5 = 29.
  EXPECT_THAT(m->AddSequence(2, 20, 80, &out),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("worst case of 30 blocks (20 + 80 tokens, 2 "
                                 "groups, steps of up to 4 tokens) fits "
                                 "later: 30 reserved for 1 running, 29 free")));
  EXPECT_FALSE(m->contains(2));
  EXPECT_EQ(m->stats().reserved_blocks, 20);
  m->CheckInvariants();
  // A fork reserves its worst case again: 30 > 29.
  EXPECT_THAT(m->Fork(1, 3), StatusIs(absl::StatusCode::kResourceExhausted,
                                      HasSubstr("worst case of 30 blocks")));
  EXPECT_FALSE(m->contains(3));
  m->CheckInvariants();
  ASSERT_THAT(m->Free(1), IsOk());
  EXPECT_EQ(m->stats().reserved_blocks, 0);
  EXPECT_EQ(m->stats().free_blocks, 59);
  // Never: 30 blocks do not fit in 29; without a step bound the window
  // group reserves as a full one (50).
  EXPECT_EQ((*KVCacheManager::Create(Options(29, 4, 1, 1, 8, 4)))
                ->CanAdmit(20, 80),
            Admission::kNever);
  EXPECT_EQ((*KVCacheManager::Create(Options(49, 4, 1, 1, 8, 0)))
                ->CanAdmit(20, 80),
            Admission::kNever);
  EXPECT_EQ((*KVCacheManager::Create(Options(50, 4, 1, 1, 8, 0)))
                ->CanAdmit(20, 80),
            Admission::kAdmit);
}

TEST(GroupedReservationTest, StepsPastTheReservationAreOutOfRange) {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(Options(64, 4, 1, 1, 8, 4));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 6, &out), IsOk());
  const SlotRequest big[] = {{.seq = 1, .num_tokens = 5}};
  EXPECT_THAT(m->AppendSlots(big, &out),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("a step of 5 tokens is larger than the 4")));
  const SlotRequest four[] = {{.seq = 1, .num_tokens = 4}};
  ASSERT_THAT(m->AppendSlots(four, &out), IsOk());
  const SlotRequest three[] = {{.seq = 1, .num_tokens = 3}};
  EXPECT_THAT(m->AppendSlots(three, &out),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("10 + 3 tokens pass its reserved 12")));
  EXPECT_EQ(*m->num_tokens(1), 10);
  m->CheckInvariants();
}

// A swap gives up the reservation as Preempt does (its device blocks stay
// charged until CompleteSwap); SwapIn takes the same worst case back, or
// fails with nothing changed, and the sequence then reaches max_tokens.
TEST(GroupedReservationTest, ASwapGivesUpTheReservationAndSwapInTakesItBack) {
  KVCacheManager::Options o = Options(60, 4, 1, 1, 8, 4);
  o.num_host_blocks = 16;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(o);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 20, 80, &out), IsOk());  // Reserves 30.
  ASSERT_EQ(m->stats().reserved_blocks, 20);
  ASSERT_THAT(m->SwapOut(1).status(), IsOk());
  EXPECT_EQ(m->stats().reserved_blocks, 0);  // Only its 10 held blocks.
  EXPECT_EQ(m->stats().used_blocks, 10);
  m->CheckInvariants();
  // Its held blocks are not the others' reserved ones: 50 blocks are left
  // for worst cases, one of 30 fits and a second does not.
  EXPECT_EQ(m->CanAdmit(20, 80), Admission::kAdmit);
  ASSERT_THAT(m->AddSequence(4, 20, 80, &out), IsOk());
  EXPECT_EQ(m->CanAdmit(20, 80), Admission::kLater);
  ASSERT_THAT(m->Free(4), IsOk());
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
  m->CheckInvariants();
  // Two others take every block: 30 + 30 reserved of 60.
  ASSERT_THAT(m->AddSequence(2, 20, 80, &out), IsOk());
  ASSERT_THAT(m->AddSequence(3, 20, 80, &out), IsOk());
  const ManagerStats before = m->stats();
  EXPECT_THAT(m->SwapIn(1).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("reserving its worst case of 30 blocks")));
  EXPECT_TRUE(::pagedkv::testing::StatsEqual(m->stats(), before))
      << ::pagedkv::testing::StatsString(m->stats());
  EXPECT_EQ(*m->state(1), SequenceState::kSwappedOut);
  m->CheckInvariants();
  ASSERT_THAT(m->Free(3), IsOk());
  ASSERT_THAT(m->SwapIn(1).status(), IsOk());
  EXPECT_EQ(m->stats().reserved_blocks, 20 + 20);
  ASSERT_THAT(m->CompleteSwap(1), IsOk());
  m->CheckInvariants();
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 4}};
  for (int i = 0; i < 20; ++i) {
    ASSERT_THAT(m->AppendSlots(step, &out), IsOk()) << "step " << i;
    m->CheckInvariants();
  }
  EXPECT_EQ(*m->num_tokens(1), 100);
}

// Admitted sequences always get their steps up to max_tokens: random
// admissions (as CanAdmit says), steps of up to max_step_tokens, forks,
// truncations, preemptions and readmissions on small pools; a step never
// fails for memory, swapped-in sequences included, CheckInvariants (each
// sequence within what it reserved) after every call, and every block of
// both tiers back at the end.
class GroupedReservationPropertyTest : public ::testing::TestWithParam<int> {
};

TEST_P(GroupedReservationPropertyTest, AdmittedSequencesReachMaxTokens) {
  std::mt19937 rng(GetParam());
  const int32_t bt = 1 + rng() % 6;
  const int32_t window = 1 + rng() % 20;
  const int32_t full = rng() % 3 == 0 ? 0 : 1;
  const int32_t windows = 1 + rng() % 3;
  const int32_t max_step = rng() % 4 == 0 ? 0 : 1 + rng() % 8;
  const int32_t num_blocks = 40 + rng() % 160;
  KVCacheManager::Options options =
      Options(num_blocks, bt, full, windows, window, max_step);
  options.num_host_blocks = 8 + rng() % 64;
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(options);
  struct Seq {
    int64_t tokens = 0;
    int64_t max_tokens = 0;
    SequenceState state = SequenceState::kRunning;
    bool running() const { return state == SequenceState::kRunning; }
  };
  std::map<SequenceId, Seq> model;
  SequenceId next_id = 1;
  StepOutput out;
  int64_t steps = 0, finished = 0;
  for (int op_count = 0; op_count < 1500; ++op_count) {
    const int op = rng() % 10;
    if (op < 2 || model.empty()) {  // Admit as CanAdmit says.
      const int64_t prompt = 1 + rng() % 30;
      const int64_t max_new = rng() % 60;
      const Admission a = m->CanAdmit(prompt, max_new);
      const absl::Status s = m->AddSequence(next_id, prompt, max_new, &out);
      ASSERT_EQ(s.ok(), a == Admission::kAdmit) << s;
      if (s.ok()) model[next_id] = {prompt, prompt + max_new};
      ++next_id;
    } else if (op < 7) {  // A step: must never run out of memory.
      std::vector<SlotRequest> reqs;
      for (const auto& [id, q] : model) {
        const int64_t room = q.max_tokens - q.tokens;
        if (!q.running() || room == 0 || rng() % 3 == 0) continue;
        const int64_t most =
            std::min<int64_t>(room, max_step > 0 ? max_step : 16);
        reqs.push_back(
            {.seq = id, .num_tokens = static_cast<int32_t>(1 + rng() % most)});
      }
      if (reqs.empty()) continue;
      ASSERT_THAT(m->AppendSlots(reqs, &out), IsOk());
      out.copies.MarkDone();  // The caller ran the copies.
      ++steps;
      for (const SlotRequest& r : reqs) {
        Seq& q = model[r.seq];
        q.tokens += r.num_tokens;
        if (q.tokens == q.max_tokens) {
          ASSERT_THAT(m->Free(r.seq), IsOk());
          model.erase(r.seq);
          ++finished;
        }
      }
    } else if (op == 7) {  // Fork: reserves or fails with nothing changed.
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      const int32_t reserved = m->stats().reserved_blocks;
      const absl::Status s = m->Fork(it->first, next_id);
      if (s.ok()) {
        model[next_id] = it->second;
      } else {
        ASSERT_TRUE(absl::IsResourceExhausted(s) ||
                    absl::IsFailedPrecondition(s))
            << s;
        ASSERT_FALSE(m->contains(next_id));
        ASSERT_EQ(m->stats().reserved_blocks, reserved);
      }
      ++next_id;
    } else if (op == 8) {  // Truncate (refused if the window is gone).
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      if (!it->second.running()) continue;
      const int64_t len = it->second.tokens - rng() % (it->second.tokens + 1);
      const absl::Status s = m->Truncate(it->first, len);
      if (s.ok()) {
        it->second.tokens = len;
      } else {
        ASSERT_TRUE(absl::IsFailedPrecondition(s)) << s;
      }
    } else {  // Preempt or swap out one, or bring one back (may wait).
      auto it = model.begin();
      std::advance(it, rng() % model.size());
      SequenceState& state = it->second.state;
      if (state == SequenceState::kRunning && rng() % 2 == 0) {
        ASSERT_THAT(m->Preempt(it->first), IsOk());
        state = SequenceState::kPreempted;
      } else if (state == SequenceState::kRunning) {
        const absl::Status s = m->SwapOut(it->first).status();
        if (s.ok()) {
          state = SequenceState::kSwappingOut;
        } else {
          ASSERT_TRUE(absl::IsResourceExhausted(s)) << s;  // Host full.
        }
      } else if (state == SequenceState::kSwappingOut ||
                 state == SequenceState::kSwappingIn) {
        ASSERT_THAT(m->CompleteSwap(it->first), IsOk());
        state = state == SequenceState::kSwappingOut
                    ? SequenceState::kSwappedOut
                    : SequenceState::kRunning;
      } else {
        const bool out_now = state == SequenceState::kSwappedOut;
        const absl::Status s = out_now ? m->SwapIn(it->first).status()
                                       : m->Readmit(it->first, &out);
        if (s.ok()) {
          state = out_now ? SequenceState::kSwappingIn
                          : SequenceState::kRunning;
        } else {
          ASSERT_TRUE(absl::IsResourceExhausted(s)) << s;
        }
      }
    }
    m->CheckInvariants();
    for (const auto& [id, q] : model) {
      ASSERT_EQ(*m->num_tokens(id), q.tokens);
      ASSERT_EQ(*m->state(id), q.state);
    }
  }
  EXPECT_GT(steps, 100);
  EXPECT_GT(finished, 0);
  EXPECT_GT(m->stats().swap_ins, 0);
  for (const auto& [id, q] : model) {
    if (q.state == SequenceState::kSwappingOut ||
        q.state == SequenceState::kSwappingIn) {
      ASSERT_THAT(m->CompleteSwap(id), IsOk());
    }
    ASSERT_THAT(m->Free(id), IsOk());
  }
  m->CheckInvariants();
  EXPECT_EQ(m->stats().host_used_blocks, 0);
  EXPECT_EQ(m->stats().used_blocks, 0);
  EXPECT_EQ(m->stats().reserved_blocks, 0);
  EXPECT_EQ(m->stats().free_blocks, num_blocks);
}

INSTANTIATE_TEST_SUITE_P(Seeds, GroupedReservationPropertyTest,
                         ::testing::Range(1, 17));

}  // namespace
}  // namespace pagedkv
