#include "cache/private_pool_options.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace pagedkv::internal {

absl::Status ValidatePrivatePoolOptions(int32_t block_tokens,
                                        int64_t max_private_pool_bytes) {
  if (block_tokens < 1 || block_tokens > kMaxBlockTokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block_tokens must be in [1, %d], got %d",
                        kMaxBlockTokens, block_tokens));
  }
  if (max_private_pool_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_private_pool_bytes must be > 0, got %d", max_private_pool_bytes));
  }
  return absl::OkStatus();
}

}  // namespace pagedkv::internal
