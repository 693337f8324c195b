#include "cache/cache_position.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"

namespace pagedkv {

CachePosition CachePosition::Matrix(int64_t rows, int64_t cols,
                                    std::vector<int64_t> values) {
  // rows * cols is compared without forming it (it may overflow int64):
  // values.size() == rows * cols  <=>  (cols == 0 ? size == 0 :
  // size % cols == 0 && size / cols == rows).
  const int64_t size = static_cast<int64_t>(values.size());
  const bool matches =
      rows >= 0 && cols >= 0 &&
      (cols == 0 ? size == 0 : size % cols == 0 && size / cols == rows);
  PKV_CHECK(matches, "CachePosition::Matrix(%d, %d) given %d values", rows,
            cols, size);
  return CachePosition(Kind::kMatrix, rows, cols, std::move(values));
}

std::string CachePosition::ToString() const {
  switch (kind_) {
    case Kind::kNone:
      return "none";
    case Kind::kScalar:
      return absl::StrCat(values_[0]);
    case Kind::kVector:
      return absl::StrCat("[", absl::StrJoin(values_, ", "), "]");
    case Kind::kMatrix: {
      if (cols_ == 0) return absl::StrCat("(", rows_, " x 0)");
      std::vector<std::string> rows;
      for (int64_t r = 0; r < rows_; ++r) {
        std::vector<int64_t> row(values_.begin() + r * cols_,
                                 values_.begin() + (r + 1) * cols_);
        rows.push_back(absl::StrCat("[", absl::StrJoin(row, ", "), "]"));
      }
      return absl::StrCat("[", absl::StrJoin(rows, ", "), "]");
    }
  }
  return "?";
}

}  // namespace pagedkv
