#include "cache/storage/kv_layout.h"

#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "tensor/dtype.h"

namespace pagedkv {

absl::Status KVLayout::Validate() const {
  if (!IsValidDType(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KVLayout dtype value %d is not float32, float16 or "
                        "bfloat16",
                        static_cast<int>(dtype)));
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
  return absl::StrFormat(
      "layers=%d kv_heads=%d head_dim=%d dtype=%s block_tokens=%d", num_layers,
      num_kv_heads, head_dim, std::string(DTypeName(dtype)), block_tokens);
}

}  // namespace pagedkv
