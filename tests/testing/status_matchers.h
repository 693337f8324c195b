// tests/testing/status_matchers.h
//
// gMock matchers for absl::Status and absl::StatusOr<T>, shaped like the
// upstream absl/status/status_matchers.h (not in Debian's Abseil 20220623):
//
//   EXPECT_THAT(pool.Allocate(9),
//   StatusIs(absl::StatusCode::kResourceExhausted,
//                                          HasSubstr("need 9")));
//   EXPECT_THAT(BlockPool::Create(4), IsOk());
//
// Both accept a Status or any StatusOr<T>. On mismatch they print the code and
// message that were seen.
//
// Thread safety: matchers are stateless.
#ifndef PAGEDKV_TESTS_TESTING_STATUS_MATCHERS_H_
#define PAGEDKV_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace pagedkv::testing {
namespace internal {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace internal

// Matches an OK Status or a StatusOr holding a value.
MATCHER(IsOk, "is OK") {
  const absl::Status& status = internal::GetStatus(arg);
  if (status.ok()) return true;
  *result_listener << "status is " << status.ToString();
  return false;
}

// Matches a Status (or StatusOr) whose code equals `code`.
MATCHER_P(StatusIs, code,
          std::string("has code ") + absl::StatusCodeToString(code)) {
  const absl::Status& status = internal::GetStatus(arg);
  if (status.code() == code) return true;
  *result_listener << "status is " << status.ToString();
  return false;
}

// Matches a Status (or StatusOr) whose code equals `code` and whose message
// matches `message_matcher` (a string or any std::string matcher).
MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has code ") + absl::StatusCodeToString(code) +
               " and a matching message") {
  const absl::Status& status = internal::GetStatus(arg);
  if (status.code() != code) {
    *result_listener << "status is " << status.ToString();
    return false;
  }
  return ::testing::ExplainMatchResult(
      ::testing::MatcherCast<const std::string&>(message_matcher),
      std::string(status.message()), result_listener);
}

}  // namespace pagedkv::testing

#endif  // PAGEDKV_TESTS_TESTING_STATUS_MATCHERS_H_
