#include "allocator/prefix/block_hash.h"

#include <openssl/evp.h>

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

// One EVP context per thread, reset per block (EVP_DigestInit_ex2 on a
// fetched digest skips the name lookup the one-shot EVP_Digest does).
class Sha256Hasher final : public BlockHasher {
 public:
  BlockHash Hash(BlockHash parent, absl::Span<const int32_t> tokens,
                 const BlockExtraKeys& keys) const override {
    struct Context {
      Context()
          : md(EVP_MD_fetch(nullptr, "SHA256", nullptr)),
            ctx(EVP_MD_CTX_new()) {
        PKV_CHECK(md != nullptr && ctx != nullptr, "OpenSSL has no SHA-256");
      }
      ~Context() {
        EVP_MD_CTX_free(ctx);
        EVP_MD_free(md);
      }
      EVP_MD* md;
      EVP_MD_CTX* ctx;
    };
    thread_local Context c;
    const uint64_t head[4] = {parent, keys.tenant_salt, keys.adapter_id,
                              keys.multimodal_digest};
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    const bool ok = EVP_DigestInit_ex2(c.ctx, c.md, nullptr) == 1 &&
                    EVP_DigestUpdate(c.ctx, head, sizeof(head)) == 1 &&
                    EVP_DigestUpdate(c.ctx, tokens.data(),
                                     tokens.size() * sizeof(int32_t)) == 1 &&
                    EVP_DigestFinal_ex(c.ctx, digest, &size) == 1;
    PKV_CHECK(ok && size >= sizeof(BlockHash), "SHA-256 failed");
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
