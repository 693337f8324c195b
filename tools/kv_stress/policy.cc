// tools/kv_stress/policy.cc
#include "tools/kv_stress/policy.h"

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/types/span.h"
#include "base/check.h"

namespace pagedkv::kv_stress {

std::string_view PolicyName(PreemptionPolicy policy) {
  switch (policy) {
    case PreemptionPolicy::kNewestFirst:
      return "newest_first";
    case PreemptionPolicy::kLeastProgress:
      return "least_progress";
  }
  return "?";
}

std::optional<PreemptionPolicy> ParsePolicy(std::string_view name) {
  if (name == "newest_first") return PreemptionPolicy::kNewestFirst;
  if (name == "least_progress") return PreemptionPolicy::kLeastProgress;
  return std::nullopt;
}

std::string_view PreemptionModeName(PreemptionMode mode) {
  return mode == PreemptionMode::kSwap ? "swap" : "recompute";
}

std::optional<PreemptionMode> ParsePreemptionMode(std::string_view name) {
  if (name == "recompute") return PreemptionMode::kRecompute;
  if (name == "swap") return PreemptionMode::kSwap;
  return std::nullopt;
}

std::string_view AdmissionModeName(AdmissionMode mode) {
  return mode == AdmissionMode::kReservation ? "reservation" : "watermark";
}

std::optional<AdmissionMode> ParseAdmissionMode(std::string_view name) {
  if (name == "watermark") return AdmissionMode::kWatermark;
  if (name == "reservation") return AdmissionMode::kReservation;
  return std::nullopt;
}

std::string_view StorageModeName(StorageMode mode) {
  return mode == StorageMode::kBooksOnly ? "books_only" : "host";
}

std::optional<StorageMode> ParseStorageMode(std::string_view name) {
  if (name == "host") return StorageMode::kHost;
  if (name == "books_only") return StorageMode::kBooksOnly;
  return std::nullopt;
}

int32_t SelectVictim(PreemptionPolicy policy,
                     absl::Span<const VictimCandidate> candidates) {
  PKV_CHECK(!candidates.empty(), "SelectVictim with no candidates");
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(candidates.size()); ++i) {
    const VictimCandidate& c = candidates[i];
    const VictimCandidate& b = candidates[best];
    bool better = false;
    switch (policy) {
      case PreemptionPolicy::kNewestFirst:
        better = c.admission_seq > b.admission_seq;
        break;
      case PreemptionPolicy::kLeastProgress:
        better =
            c.progress() < b.progress() ||
            (c.progress() == b.progress() && c.admission_seq > b.admission_seq);
        break;
    }
    if (better) best = i;
  }
  return best;
}

}  // namespace pagedkv::kv_stress
