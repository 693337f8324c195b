// cache/cache_position.h
//
// CachePosition is the `cache_position` argument of KVCache::Update: where
// the tokens of an update go. It has four modes, as in lucid.nn.cache:
//
//   none    append at the end of the layer (the default);
//   scalar  one position p for the single token of the update (seq == 1);
//   1-D     pos[t] for token t, shared by every batch row;
//   2-D     pos[b][t] for row b's token t (rows may be ragged).
//
// Positions are plain int64 values here: the C++ API cannot express float or
// boolean position tensors, so those are rejected before they reach a cache.
// Validation against a cache (negative values, capacity, shape) happens in
// Update, which returns the Status; a CachePosition itself holds any values.
//
//   CachePosition::None();
//   CachePosition::Scalar(5);
//   CachePosition::Vector({3, 0, 3});           // duplicates: last wins
//   CachePosition::Matrix(2, 2, {0, 2, 1, 3});  // row-major (rows, cols)
//
// Thread safety: an immutable value type.
#ifndef PAGEDKV_CACHE_CACHE_POSITION_H_
#define PAGEDKV_CACHE_CACHE_POSITION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pagedkv {

class CachePosition {
 public:
  enum class Kind { kNone, kScalar, kVector, kMatrix };

  // Append mode.
  CachePosition() = default;
  static CachePosition None() { return CachePosition(); }
  static CachePosition Scalar(int64_t position) {
    return CachePosition(Kind::kScalar, 1, 1, {position});
  }
  static CachePosition Vector(std::vector<int64_t> positions) {
    const int64_t n = static_cast<int64_t>(positions.size());
    return CachePosition(Kind::kVector, 1, n, std::move(positions));
  }
  // REQUIRES: values.size() == rows * cols (checked; a mismatch aborts).
  static CachePosition Matrix(int64_t rows, int64_t cols,
                              std::vector<int64_t> values);

  Kind kind() const { return kind_; }
  bool is_append() const { return kind_ == Kind::kNone; }
  // kScalar: 1 x 1; kVector: 1 x n; kMatrix: rows x cols; kNone: 0 x 0.
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  // Row-major values, rows() * cols() of them.
  const std::vector<int64_t>& values() const { return values_; }
  int64_t at(int64_t row, int64_t col) const {
    return values_[row * cols_ + col];
  }

  // "none", "5", "[3, 0, 3]", "[[0, 2], [1, 3]]".
  std::string ToString() const;

 private:
  CachePosition(Kind kind, int64_t rows, int64_t cols,
                std::vector<int64_t> values)
      : kind_(kind), rows_(rows), cols_(cols), values_(std::move(values)) {}

  Kind kind_ = Kind::kNone;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::vector<int64_t> values_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_CACHE_POSITION_H_
