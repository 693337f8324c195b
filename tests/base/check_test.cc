#include "base/check.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagedkv {
namespace {

int CountedTrue(int* calls) {
  ++*calls;
  return 1;
}

std::string ExpensiveMessage(int* calls) {
  ++*calls;
  return "expensive";
}

TEST(CheckTest, PassingCheckEvaluatesConditionOnceAndNoMessage) {
  int condition_calls = 0;
  int message_calls = 0;
  PKV_CHECK(CountedTrue(&condition_calls) == 1, "%s",
            ExpensiveMessage(&message_calls));
  EXPECT_EQ(condition_calls, 1);
  EXPECT_EQ(message_calls, 0);
}

TEST(CheckDeathTest, FailingCheckPrintsConditionAndFormattedMessage) {
  const int block = 7;
  EXPECT_DEATH(PKV_CHECK(block < 3, "release of free block %d", block),
               "PKV_CHECK\\(block < 3\\) failed: release of free block 7");
}

TEST(CheckDeathTest, FailingCheckNamesTheFile) {
  EXPECT_DEATH(PKV_CHECK(false, "x"), "check_test.cc:[0-9]+");
}

#ifndef NDEBUG
TEST(CheckDeathTest, DcheckFiresInDebugBuilds) {
  EXPECT_DEATH(PKV_DCHECK(1 + 1 == 3, "math is %s", "broken"),
               "math is broken");
}
#else
TEST(CheckTest, DcheckCompilesAwayUnderNdebug) {
  int calls = 0;
  PKV_DCHECK(CountedTrue(&calls) == 0, "never");
  EXPECT_EQ(calls, 0);
}
#endif

}  // namespace
}  // namespace pagedkv
