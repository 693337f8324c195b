#include "base/status_macros.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

absl::Status FailIf(bool fail, int* calls) {
  ++*calls;
  return fail ? absl::OutOfRangeError("position 9 >= 8") : absl::OkStatus();
}

absl::Status TwoSteps(bool fail_first, int* calls, int* reached_end) {
  PKV_RETURN_IF_ERROR(FailIf(fail_first, calls));
  PKV_RETURN_IF_ERROR(FailIf(false, calls));
  ++*reached_end;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtFirstError) {
  int calls = 0;
  int reached_end = 0;
  EXPECT_THAT(TwoSteps(true, &calls, &reached_end),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("9 >= 8")));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(reached_end, 0);
}

TEST(StatusMacrosTest, ReturnIfErrorContinuesOnOk) {
  int calls = 0;
  int reached_end = 0;
  EXPECT_THAT(TwoSteps(false, &calls, &reached_end), IsOk());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(reached_end, 1);
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(int value) {
  if (value < 0) return absl::InvalidArgumentError("negative");
  return std::make_unique<int>(value);
}

absl::StatusOr<int> AddOne(int value) {
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(value));
  return *p + 1;
}

absl::StatusOr<int> AssignExisting(int value) {
  std::unique_ptr<int> p;
  PKV_ASSIGN_OR_RETURN(p, MakeInt(value));
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<int> q, MakeInt(value + 1));
  return *p + *q;
}

TEST(StatusMacrosTest, AssignOrReturnMovesValue) {
  absl::StatusOr<int> r = AddOne(41);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(*r, 42);
  absl::StatusOr<int> s = AssignExisting(2);
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(*s, 5);
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesError) {
  EXPECT_THAT(AddOne(-1),
              StatusIs(absl::StatusCode::kInvalidArgument, "negative"));
}

TEST(StatusMatchersTest, MatchersDescribeMismatches) {
  const absl::Status error =
      absl::ResourceExhaustedError("need 3 blocks, 1 free");
  EXPECT_THAT(error, ::testing::Not(IsOk()));
  EXPECT_THAT(error, ::testing::Not(StatusIs(absl::StatusCode::kOutOfRange)));
  EXPECT_THAT(error,
              ::testing::Not(StatusIs(absl::StatusCode::kResourceExhausted,
                                      HasSubstr("9"))));
  EXPECT_THAT(absl::StatusOr<int>(3), IsOk());
}

}  // namespace
}  // namespace pagedkv
