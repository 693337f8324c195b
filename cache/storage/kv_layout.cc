#include "cache/storage/kv_layout.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"

namespace pagedkv {

std::string_view KVStorageName(KVStorage storage) {
  switch (storage) {
    case KVStorage::kSame:
      return "same";
    case KVStorage::kInt8:
      return "int8";
    case KVStorage::kFp8E4M3:
      return "fp8_e4m3";
  }
  return "invalid";
}

std::optional<KVStorage> ParseKVStorage(std::string_view name) {
  if (name == "same" || ParseDType(name).has_value()) return KVStorage::kSame;
  if (name == "int8") return KVStorage::kInt8;
  if (name == "fp8_e4m3" || name == "fp8" || name == "e4m3") {
    return KVStorage::kFp8E4M3;
  }
  return std::nullopt;
}

std::optional<QuantType> QuantTypeOf(KVStorage storage) {
  switch (storage) {
    case KVStorage::kSame:
      return std::nullopt;
    case KVStorage::kInt8:
      return QuantType::kInt8;
    case KVStorage::kFp8E4M3:
      return QuantType::kFp8E4M3;
  }
  return std::nullopt;
}

absl::Status KVLayout::Validate() const {
  if (!IsValidDType(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KVLayout dtype value %d is not float32, float16 or "
                        "bfloat16",
                        static_cast<int>(dtype)));
  }
  if (KVStorageName(storage) == "invalid") {
    return absl::InvalidArgumentError(
        absl::StrFormat("KVLayout storage value %d is not same, int8 or "
                        "fp8_e4m3",
                        static_cast<int>(storage)));
  }
  if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0 ||
      block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KVLayout needs positive counts, got %s", ToString()));
  }
  // Products in int64 cannot overflow: each factor is below 2^31 and the
  // check stops at the first factor that takes the product past 2^31.
  int64_t elements = 2;
  for (int64_t factor : {int64_t{num_layers}, int64_t{num_kv_heads},
                         int64_t{head_dim}, int64_t{block_tokens}}) {
    elements *= factor;
    if (elements > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "one block of %s holds over 2^31 elements", ToString()));
    }
  }
  return absl::OkStatus();
}

std::string KVLayout::ToString() const {
  std::string text = absl::StrFormat(
      "layers=%d kv_heads=%d head_dim=%d dtype=%s block_tokens=%d", num_layers,
      num_kv_heads, head_dim, std::string(DTypeName(dtype)), block_tokens);
  if (quantized()) {
    absl::StrAppend(&text, " storage=", std::string(KVStorageName(storage)));
  }
  return text;
}

}  // namespace pagedkv
