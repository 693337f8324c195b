#include "allocator/prefix/block_hash.h"

// The low-level SHA-256 calls are deprecated in OpenSSL 3 (see below).
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <cstdint>
#include <cstring>

#include "absl/types/span.h"
#include "base/check.h"

// The header-only build of Debian's xxhash: a 64-byte block hashes in a few
// nanoseconds, and a call into the shared library (plus its dispatch) would
// cost as much again.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace pagedkv {
namespace {

// The byte order the format promises (see the header) is the machine's own
// on every target we build for; a big-endian port must swap here.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "block hashes are defined over little-endian bytes");

class Xxh3Hasher final : public BlockHasher {
 public:
  BlockHash Hash(BlockHash parent, absl::Span<const int32_t> tokens,
                 const BlockExtraKeys& keys) const override {
    XXH64_hash_t seed = parent;
    if (!keys.is_zero()) {
      const uint64_t words[3] = {keys.tenant_salt, keys.adapter_id,
                                 keys.multimodal_digest};
      seed = XXH3_64bits_withSeed(words, sizeof(words), parent);
    }
    return XXH3_64bits_withSeed(tokens.data(), tokens.size() * sizeof(int32_t),
                                seed);
  }
  const char* name() const override { return "xxh3-64"; }
};

// OpenSSL's low-level incremental API (SHA256_Init / _Update / _Final,
// deprecated in OpenSSL 3 in favour of EVP but kept): EVP_DigestInit_ex2 on
// a reused context cost 181 ns per 16-token block here, against the
// target of 150; this keeps the SHA-NI compression and drops the EVP
// dispatch. Not the one-shot SHA256(), which the issue measured 3x slower.
class Sha256Hasher final : public BlockHasher {
 public:
  BlockHash Hash(BlockHash parent, absl::Span<const int32_t> tokens,
                 const BlockExtraKeys& keys) const override {
    const uint64_t head[4] = {parent, keys.tenant_salt, keys.adapter_id,
                              keys.multimodal_digest};
    SHA256_CTX ctx;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const bool ok = SHA256_Init(&ctx) == 1 &&
                    SHA256_Update(&ctx, head, sizeof(head)) == 1 &&
                    SHA256_Update(&ctx, tokens.data(),
                                  tokens.size() * sizeof(int32_t)) == 1 &&
                    SHA256_Final(digest, &ctx) == 1;
    PKV_CHECK(ok, "SHA-256 failed");
    BlockHash h;
    std::memcpy(&h, digest, sizeof(h));
    return h;
  }
  const char* name() const override { return "sha256-64"; }
};

}  // namespace

uint64_t HashWords(absl::Span<const uint64_t> words, uint64_t seed) {
  return XXH3_64bits_withSeed(words.data(), words.size() * sizeof(uint64_t),
                              seed);
}

const BlockHasher& Xxh3BlockHasher() {
  static const Xxh3Hasher* const hasher = new Xxh3Hasher();
  return *hasher;
}

const BlockHasher& Sha256BlockHasher() {
  static const Sha256Hasher* const hasher = new Sha256Hasher();
  return *hasher;
}

}  // namespace pagedkv
