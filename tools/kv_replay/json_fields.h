// tools/kv_replay/json_fields.h
//
// Checked access to nlohmann::json values for code built without relying on
// exceptions: nlohmann's at() and get<T>() throw on a missing key or a wrong
// type, and const operator[] on a missing key is undefined. These helpers
// test first and report a problem as absl::Status (or nullptr) instead, so a
// malformed trace becomes a message, never a throw or a crash.
//
// Example:
//
//   const nlohmann::json* layer = FindField(op, "layer");
//   if (layer == nullptr) return absl::InvalidArgumentError("no layer");
//   absl::StatusOr<int64_t> l = ToInt64(*layer, "layer");
//
// Thread safety: pure functions.
#ifndef PAGEDKV_TOOLS_KV_REPLAY_JSON_FIELDS_H_
#define PAGEDKV_TOOLS_KV_REPLAY_JSON_FIELDS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pagedkv::kv_replay {

// Returns the member `key` of `object`, or nullptr when `object` is not an
// object or has no such member.
const nlohmann::json* FindField(const nlohmann::json& object,
                                const std::string& key);

// Returns `value` as int64. INVALID_ARGUMENT (naming `what`) unless it is a
// JSON integer (not a float, not a bool) that fits in int64.
absl::StatusOr<int64_t> ToInt64(const nlohmann::json& value,
                                const std::string& what);

// Returns `value` as a string. INVALID_ARGUMENT unless it is a JSON string.
absl::StatusOr<std::string> ToString(const nlohmann::json& value,
                                     const std::string& what);

// Returns a one-line rendering of `value` for messages (never throws, even
// on invalid UTF-8).
std::string Render(const nlohmann::json& value);

}  // namespace pagedkv::kv_replay

#endif  // PAGEDKV_TOOLS_KV_REPLAY_JSON_FIELDS_H_
