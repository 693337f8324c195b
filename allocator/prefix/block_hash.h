// allocator/prefix/block_hash.h
//
// The key of a full KV block in the prefix cache: a chained hash of the
// parent block's hash, the block's token ids and its typed extra keys. Two
// blocks with equal hashes almost surely hold the KV of equal token
// prefixes; the prefix index (prefix_index.h) still compares the stored
// tokens, extra keys and parent of every hit, so a collision is a miss.
//
// Reproducible across processes and machines (the remote tier and event
// consumers rely on it): token ids are hashed as little-endian int32, the
// extra keys as three little-endian uint64, and the first block's parent is
// kRootBlockHash.
//
//   XXH3-64 (default, Debian's libxxhash):
//     seed = extra keys all zero ? parent
//                                : XXH3_64(extra keys, 24 bytes, parent)
//     hash = XXH3_64(token ids, 4 * n bytes, seed)
//   SHA-256 (multi-tenant option, OpenSSL's incremental API):
//     hash = first 8 bytes, little-endian, of
//            SHA-256(parent (8 bytes) | extra keys (24) | token ids (4 n))
//
// Example:
//
//   const BlockHasher& hasher = Xxh3BlockHasher();
//   const int32_t tokens[4] = {1, 2, 3, 4};
//   BlockExtraKeys keys;
//   keys.tenant_salt = 42;  // Tenants with different salts share nothing.
//   BlockHash first = hasher.Hash(kRootBlockHash, tokens, keys);
//   BlockHash second = hasher.Hash(first, tokens, keys);  // Chained.
//
// Thread safety: hashers are stateless; any thread may call any hasher.
#ifndef PAGEDKV_ALLOCATOR_PREFIX_BLOCK_HASH_H_
#define PAGEDKV_ALLOCATOR_PREFIX_BLOCK_HASH_H_

#include <cstdint>

#include "absl/types/span.h"

namespace pagedkv {

using BlockHash = uint64_t;

// The parent hash of a sequence's first block.
inline constexpr BlockHash kRootBlockHash = 0x70616765646b7601;  // "pagedkv\1"

// Typed extra keys of one block, compared exactly on every hit.
struct BlockExtraKeys {
  // Set by the server per tenant: equal tokens under different salts never
  // share a block (the cache cannot be used to probe another tenant).
  uint64_t tenant_salt = 0;
  // The LoRA adapter whose weights computed the KV (0: the base model).
  uint64_t adapter_id = 0;
  // A digest of the multimodal inputs whose placeholder tokens fall in the
  // block (0: none); the server hashes the image or audio bytes.
  uint64_t multimodal_digest = 0;

  bool is_zero() const {
    return tenant_salt == 0 && adapter_id == 0 && multimodal_digest == 0;
  }
  friend bool operator==(const BlockExtraKeys& a, const BlockExtraKeys& b) {
    return a.tenant_salt == b.tenant_salt && a.adapter_id == b.adapter_id &&
           a.multimodal_digest == b.multimodal_digest;
  }
  friend bool operator!=(const BlockExtraKeys& a, const BlockExtraKeys& b) {
    return !(a == b);
  }
};

// Computes block keys. An interface so tests can force collisions (a
// hasher that returns one value for everything); the library's two are
// below.
class BlockHasher {
 public:
  virtual ~BlockHasher() = default;
  virtual BlockHash Hash(BlockHash parent, absl::Span<const int32_t> tokens,
                         const BlockExtraKeys& keys) const = 0;
  // "xxh3-64", "sha256-64", ...: for reports and remote-tier fingerprints.
  virtual const char* name() const = 0;
};

// XXH3-64 of `words` (little-endian) with `seed`: for folding several
// digests into one key, such as the multimodal inputs of a block.
uint64_t HashWords(absl::Span<const uint64_t> words, uint64_t seed);

// Layer groups (cache/serving/grouped_sequences.h): the parent hash a
// group's block i is keyed under, from the anchor group's block i hash:
// HashWords({anchor, group}, kRootBlockHash). So group g's key of block i
// is hasher.Hash(GroupChainParent(anchor_i, g), tokens_i, keys_i): the
// configured hasher (a forced collision reaches the groups too), and no two
// groups share a key.
inline uint64_t GroupChainParent(BlockHash anchor, int32_t group) {
  const uint64_t words[2] = {anchor, static_cast<uint64_t>(group)};
  return HashWords(words, kRootBlockHash);
}

// The default: chained XXH3-64. Process-lifetime singletons.
const BlockHasher& Xxh3BlockHasher();
// SHA-256 truncated to 64 bits, through OpenSSL's incremental API.
const BlockHasher& Sha256BlockHasher();

}  // namespace pagedkv

#endif  // PAGEDKV_ALLOCATOR_PREFIX_BLOCK_HASH_H_
