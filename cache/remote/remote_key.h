// cache/remote/remote_key.h
//
// The names of KV blocks in a remote store shared by server replicas. A key
// says everything that must match before a block's bytes can be reused:
//
//   <namespace>:<layout fingerprint>:<tenant salt>:<chained block hash>
//   pkv:9c1f0e55d2a7b3e1:000000000000002a:5d41402abc4b2a76   (hex, 16 each)
//
// The layout fingerprint is XXH3-64 of the layout's description (model
// geometry, dtype, block tokens), its block bytes and the block hasher's
// name, so replicas of another model, dtype or block size never share keys.
// The chained hash is the prefix cache's (allocator/prefix/block_hash.h),
// reproducible across machines; it already covers the tenant salt, which the
// key repeats so that an operator can find (and drop) one tenant's blocks
// with a pattern.
//
//   const uint64_t fp = LayoutFingerprint(layout, Xxh3BlockHasher());
//   std::string key = RemoteBlockKey("pkv", fp, /*tenant_salt=*/42, hash);
//
// Thread safety: pure functions.
#ifndef PAGEDKV_CACHE_REMOTE_REMOTE_KEY_H_
#define PAGEDKV_CACHE_REMOTE_REMOTE_KEY_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "allocator/prefix/block_hash.h"
#include "cache/storage/kv_layout.h"

namespace pagedkv {

// XXH3-64 of layout.ToString(), layout.block_bytes() and hasher.name().
uint64_t LayoutFingerprint(const KVLayout& layout, const BlockHasher& hasher);

// "<key_namespace>:<fingerprint>:<tenant_salt>:<hash>", numbers as 16
// lower-case hex digits.
std::string RemoteBlockKey(std::string_view key_namespace,
                           uint64_t layout_fingerprint, uint64_t tenant_salt,
                           BlockHash hash);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_REMOTE_KEY_H_
