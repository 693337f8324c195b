// tools/kv_replay/summary.h
//
// TensorSummary is the checksum record conformance/FORMAT.md (section 9)
// writes for every tensor a trace mentions: shape, dtype name, the exact sum
// and position-weighted sum of the elements, a 64-bit FNV-1a hash over the
// elements as little-endian float32 bytes, and a probe x[:, 0, :, 0] for
// humans. Two tensors with equal summaries are, for the traces' integer
// inputs, equal with overwhelming probability, so a replay compares summaries
// instead of storing whole tensors.
//
// Example:
//
//   absl::StatusOr<Tensor> key =
//       FillPattern(DType::kFloat32, Shape({1, 1, 2, 2}), /*base=*/1);
//   TensorSummary s = Summarize(key->view());
//   // s.sum == 602, s.wsum == 1706,
//   // FormatFnv1a64(s.fnv1a64) == "629e0aed02c309d6"
//   nlohmann::json j = SummaryToJson(s);  // {"shape": [1, 1, 2, 2], ...}
//
// Thread safety: all functions are pure and safe to call concurrently.
#ifndef PAGEDKV_TOOLS_KV_REPLAY_SUMMARY_H_
#define PAGEDKV_TOOLS_KV_REPLAY_SUMMARY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "tensor/tensor.h"

namespace pagedkv::kv_replay {

// The FNV-1a 64-bit offset basis: the hash of no bytes.
inline constexpr uint64_t kFnv1a64OffsetBasis = 0xcbf29ce484222325ULL;
// The FNV-1a 64-bit prime.
inline constexpr uint64_t kFnv1a64Prime = 0x100000001b3ULL;

// Returns FNV-1a 64 of `bytes`, continuing from `hash` (the offset basis for
// a fresh hash): per byte, hash ^= byte, then hash *= prime (mod 2^64).
uint64_t Fnv1a64(absl::Span<const uint8_t> bytes,
                 uint64_t hash = kFnv1a64OffsetBasis);

// Returns `hash` as 16 lower-case hex digits without "0x".
std::string FormatFnv1a64(uint64_t hash);

struct TensorSummary {
  std::vector<int64_t> shape;
  // DTypeName of the storage dtype: "float32", "float16" or "bfloat16".
  std::string dtype;
  // Sum of the elements, exact (the traces' elements are integers).
  int64_t sum = 0;
  // Sum of ((i mod 1009) + 1) * x[i] over C-order index i, exact.
  int64_t wsum = 0;
  // FNV-1a 64 over each element as IEEE float32, little-endian, C order.
  uint64_t fnv1a64 = kFnv1a64OffsetBasis;
  // x[:, 0, :, 0] as [batch][seq] for a rank-4 tensor; empty when heads or
  // head_dim is 0 or the rank is not 4.
  std::vector<std::vector<int64_t>> probe;
  // False when some element was not a finite integer (never the case for a
  // correct cache on trace inputs). sum and wsum then use each element
  // rounded to nearest and clamped to +-2^62 (0 for NaN); fnv1a64 is exact.
  bool all_integral = true;
};

// Returns the summary of `view`'s elements, read in C order and widened to
// float (exact for every storage dtype).
TensorSummary Summarize(ConstTensorView view);

// Returns the FORMAT.md SUMMARY object: {"shape", "dtype", "sum", "wsum",
// "fnv1a64", "probe"}, plus "non_integral": true when !all_integral.
nlohmann::json SummaryToJson(const TensorSummary& summary);

}  // namespace pagedkv::kv_replay

#endif  // PAGEDKV_TOOLS_KV_REPLAY_SUMMARY_H_
