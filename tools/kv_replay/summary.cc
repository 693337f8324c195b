#include "tools/kv_replay/summary.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace pagedkv::kv_replay {
namespace {

// Bound for clamping non-integral garbage, so the int64 arithmetic below
// cannot overflow (a correct cache never gets near it: |x| < 2^24).
constexpr double kClamp = 4611686018427387904.0;  // 2^62

// Returns `x` as an exact integer and sets *integral = false when it is not
// a finite integer (then rounded and clamped, NaN as 0).
int64_t ToInteger(double x, bool* integral) {
  if (std::isnan(x)) {
    *integral = false;
    return 0;
  }
  if (!std::isfinite(x) || std::trunc(x) != x) *integral = false;
  if (x > kClamp) x = kClamp;
  if (x < -kClamp) x = -kClamp;
  return static_cast<int64_t>(std::nearbyint(x));
}

}  // namespace

uint64_t Fnv1a64(absl::Span<const uint8_t> bytes, uint64_t hash) {
  for (const uint8_t byte : bytes) {
    hash ^= byte;
    hash *= kFnv1a64Prime;
  }
  return hash;
}

std::string FormatFnv1a64(uint64_t hash) {
  return absl::StrFormat("%016x", hash);
}

TensorSummary Summarize(ConstTensorView view) {
  TensorSummary summary;
  const absl::Span<const int64_t> dims = view.shape().dims();
  summary.shape.assign(dims.begin(), dims.end());
  summary.dtype = std::string(DTypeName(view.dtype()));

  const std::vector<float> values = ToFloatVector(view);
  // Unsigned accumulation: wraps instead of overflowing (only reachable with
  // clamped garbage, and then the fnv1a64 mismatch tells the story anyway).
  uint64_t sum = 0;
  uint64_t wsum = 0;
  std::vector<int64_t> integers(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const int64_t x = ToInteger(values[i], &summary.all_integral);
    integers[i] = x;
    sum += static_cast<uint64_t>(x);
    wsum += static_cast<uint64_t>((i % 1009) + 1) * static_cast<uint64_t>(x);
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof(bits));
    const uint8_t le[4] = {
        static_cast<uint8_t>(bits), static_cast<uint8_t>(bits >> 8),
        static_cast<uint8_t>(bits >> 16), static_cast<uint8_t>(bits >> 24)};
    summary.fnv1a64 = Fnv1a64(le, summary.fnv1a64);
  }
  summary.sum = static_cast<int64_t>(sum);
  summary.wsum = static_cast<int64_t>(wsum);

  if (dims.size() == 4 && dims[1] > 0 && dims[3] > 0) {
    const int64_t batch = dims[0], heads = dims[1], seq = dims[2],
                  head_dim = dims[3];
    summary.probe.resize(batch);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < seq; ++t) {
        summary.probe[b].push_back(
            integers[((b * heads) * seq + t) * head_dim]);
      }
    }
  }
  return summary;
}

nlohmann::json SummaryToJson(const TensorSummary& summary) {
  nlohmann::json j = nlohmann::json::object();
  j["shape"] = summary.shape;
  j["dtype"] = summary.dtype;
  j["sum"] = summary.sum;
  j["wsum"] = summary.wsum;
  j["fnv1a64"] = FormatFnv1a64(summary.fnv1a64);
  nlohmann::json probe = nlohmann::json::array();
  for (const std::vector<int64_t>& row : summary.probe) probe.push_back(row);
  j["probe"] = std::move(probe);
  if (!summary.all_integral) j["non_integral"] = true;
  return j;
}

}  // namespace pagedkv::kv_replay
