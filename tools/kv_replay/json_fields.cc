#include "tools/kv_replay/json_fields.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace pagedkv::kv_replay {

const nlohmann::json* FindField(const nlohmann::json& object,
                                const std::string& key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  if (it == object.end()) return nullptr;
  return &*it;
}

absl::StatusOr<int64_t> ToInt64(const nlohmann::json& value,
                                const std::string& what) {
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", u, " does not fit in int64"));
    }
    return static_cast<int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": expected an integer, got ", Render(value)));
}

absl::StatusOr<std::string> ToString(const nlohmann::json& value,
                                     const std::string& what) {
  if (!value.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a string, got ", Render(value)));
  }
  return value.get<std::string>();
}

std::string Render(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace pagedkv::kv_replay
