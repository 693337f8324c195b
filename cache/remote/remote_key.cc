#include "cache/remote/remote_key.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace pagedkv {

uint64_t LayoutFingerprint(const KVLayout& layout, const BlockHasher& hasher) {
  const std::string text =
      absl::StrFormat("%s block_bytes=%d hasher=%s", layout.ToString(),
                      layout.block_bytes(), hasher.name());
  return XXH3_64bits(text.data(), text.size());
}

std::string RemoteBlockKey(std::string_view key_namespace,
                           uint64_t layout_fingerprint, uint64_t tenant_salt,
                           BlockHash hash) {
  return absl::StrFormat(
      "%s:%016x:%016x:%016x",
      absl::string_view(key_namespace.data(), key_namespace.size()),
      layout_fingerprint, tenant_salt, hash);
}

}  // namespace pagedkv
