// base/status_macros.h
//
// Propagation helpers for absl::Status and absl::StatusOr<T>, shaped like the
// macros of later Abseil releases (absl/status/status_macros.h arrives after
// the 20220623 release Debian ships), so switching is a rename.
//
//   absl::StatusOr<int> ParseLayer(const Json& j);
//
//   absl::Status Apply(const Json& j) {
//     PKV_ASSIGN_OR_RETURN(int layer, ParseLayer(j));
//     PKV_RETURN_IF_ERROR(cache.Crop(layer));
//     return absl::OkStatus();
//   }
//
// Both evaluate their argument exactly once. PKV_ASSIGN_OR_RETURN declares or
// assigns `lhs` from the moved value; it may appear once per line.
//
// Thread safety: macros only; no state.
#ifndef PAGEDKV_BASE_STATUS_MACROS_H_
#define PAGEDKV_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status from the enclosing function when `expr` is not OK.
#define PKV_RETURN_IF_ERROR(expr)                                  \
  do {                                                             \
    const ::absl::Status pkv_status_ = (expr);                     \
    if (ABSL_PREDICT_FALSE(!pkv_status_.ok())) return pkv_status_; \
  } while (false)

#define PKV_STATUS_CONCAT_INNER_(x, y) x##y
#define PKV_STATUS_CONCAT_(x, y) PKV_STATUS_CONCAT_INNER_(x, y)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the enclosing function, otherwise moves the value into `lhs`.
#define PKV_ASSIGN_OR_RETURN(lhs, rexpr)                                       \
  PKV_ASSIGN_OR_RETURN_IMPL_(PKV_STATUS_CONCAT_(pkv_statusor_, __LINE__), lhs, \
                             rexpr)

#define PKV_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {              \
    return std::move(statusor).status();                 \
  }                                                      \
  lhs = std::move(*statusor)

#endif  // PAGEDKV_BASE_STATUS_MACROS_H_
