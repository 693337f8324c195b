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
  PKV_CHECK(rows >= 0 && cols >= 0 &&
                static_cast<int64_t>(values.size()) == rows * cols,
            "CachePosition::Matrix(%d, %d) given %d values", rows, cols,
            values.size());
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
