// tools/kv_stress/model_presets.cc
#include "tools/kv_stress/model_presets.h"

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace pagedkv::kv_stress {

std::string ModelNames() {
  std::string names;
  for (const ModelGeometry& m : kModelGeometries) {
    if (!names.empty()) names += '|';
    names += m.name;
  }
  return names;
}

absl::StatusOr<ModelGeometry> FindModelGeometry(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  for (const ModelGeometry& m : kModelGeometries) {
    if (m.name == lower) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown model \"", std::string(name), "\" (", ModelNames(), ")"));
}

}  // namespace pagedkv::kv_stress
