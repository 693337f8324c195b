// Tests of the kv_stress preemption policies.
#include "tools/kv_stress/policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace pagedkv::kv_stress {
namespace {

TEST(PolicyTest, NewestFirstPicksTheLatestAdmission) {
  const std::vector<VictimCandidate> c = {{3, 10}, {9, 50}, {5, 0}};
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kNewestFirst, c), 1);
}

TEST(PolicyTest, LeastProgressPicksTheFewestComputedTokens) {
  // Progress is prompt + decoded: 110, 60, 502.
  const std::vector<VictimCandidate> c = {
      {3, 10, 100}, {9, 50, 10}, {5, 2, 500}};
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kLeastProgress, c), 1);
}

TEST(PolicyTest, LeastProgressCanSpareTheNewestAdmission) {
  // The newest request has a long prompt; an older short one costs less.
  const std::vector<VictimCandidate> c = {{1, 30, 20}, {2, 0, 900}};
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kNewestFirst, c), 1);
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kLeastProgress, c), 0);
}

TEST(PolicyTest, LeastProgressBreaksTiesByNewestAdmission) {
  const std::vector<VictimCandidate> c = {{3, 4, 6}, {8, 5, 5}, {5, 4, 6}};
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kLeastProgress, c), 1);
}

TEST(PolicyTest, SingleCandidateIsTheVictim) {
  const std::vector<VictimCandidate> c = {{1, 1}};
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kNewestFirst, c), 0);
  EXPECT_EQ(SelectVictim(PreemptionPolicy::kLeastProgress, c), 0);
}

TEST(PolicyTest, NamesRoundTrip) {
  for (PreemptionPolicy p :
       {PreemptionPolicy::kNewestFirst, PreemptionPolicy::kLeastProgress}) {
    EXPECT_EQ(ParsePolicy(PolicyName(p)), p);
  }
  EXPECT_EQ(ParsePolicy("oldest"), std::nullopt);
}

TEST(PolicyDeathTest, EmptyCandidatesAbort) {
  EXPECT_DEATH(SelectVictim(PreemptionPolicy::kNewestFirst, {}),
               "no candidates");
}

}  // namespace
}  // namespace pagedkv::kv_stress
