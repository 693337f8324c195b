// base/check.h
//
// PKV_CHECK and PKV_DCHECK assert invariants whose violation is a bug in this
// library or in its caller. Such bugs are never reported as absl::Status: bad
// input gets a Status (see base/status_macros.h), broken books get an abort.
//
//   PKV_CHECK(ref_counts_[i] > 0, "release of free block %d", i);
//
// PKV_CHECK is always on: use it where going on would corrupt memory (a double
// release lets two sequences write one block). PKV_DCHECK compiles away under
// NDEBUG: use it where the check costs more than the operation it guards.
// The message takes absl::StrFormat arguments and is built only on failure,
// so a passing check costs one predictable branch.
//
// Thread safety: the macros are safe anywhere; a failure aborts the process.
#ifndef PAGEDKV_BASE_CHECK_H_
#define PAGEDKV_BASE_CHECK_H_

#include <string>

#include "absl/base/optimization.h"
#include "absl/strings/str_format.h"

namespace pagedkv::internal {

// Prints "file:line: PKV_CHECK(condition) failed: message" to stderr and
// aborts. Never returns.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& message);

}  // namespace pagedkv::internal

#define PKV_CHECK(condition, ...)                                         \
  (ABSL_PREDICT_TRUE(condition)                                           \
       ? static_cast<void>(0)                                             \
       : ::pagedkv::internal::CheckFailed(__FILE__, __LINE__, #condition, \
                                          ::absl::StrFormat(__VA_ARGS__)))

#ifdef NDEBUG
#define PKV_DCHECK(condition, ...) \
  while (false) PKV_CHECK(condition, __VA_ARGS__)
#else
#define PKV_DCHECK(condition, ...) PKV_CHECK(condition, __VA_ARGS__)
#endif

#endif  // PAGEDKV_BASE_CHECK_H_
