#include "cache/remote/block_value.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "base/check.h"

// The checksum covers whole blocks (64 KiB to MiBs): Debian's libxxhash
// picks its AVX2 / AVX-512 loop at run time (XXH3_64bits_update becomes
// XXH3_64bits_update_dispatch), where the header-only build would be held
// to SSE2 by our baseline flags (perf: 30% of a 2 MiB store was its loop).
// The hash is the same either way. XXH_STATIC_LINKING_ONLY: the state
// lives on the stack.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h>  // Only x86 builds of libxxhash dispatch.
#endif

namespace pagedkv {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "block values are little-endian; add byte swaps for this host");

constexpr size_t kChecksumOffset = 80;
// Copy and hash in pieces that stay in L2, so the bytes are read once.
constexpr size_t kPieceBytes = size_t{64} << 10;

template <typename T>
void Put(char* base, size_t offset, T v) {
  std::memcpy(base + offset, &v, sizeof(T));
}
template <typename T>
T Get(const char* base, size_t offset) {
  T v;
  std::memcpy(&v, base + offset, sizeof(T));
  return v;
}

}  // namespace

const char* BlockValueCheckName(BlockValueCheck check) {
  switch (check) {
    case BlockValueCheck::kOk:
      return "ok";
    case BlockValueCheck::kTruncated:
      return "truncated";
    case BlockValueCheck::kBadMagic:
      return "bad magic";
    case BlockValueCheck::kUnknownVersion:
      return "unknown version";
    case BlockValueCheck::kOtherLayout:
      return "other layout";
    case BlockValueCheck::kOtherBlock:
      return "other block";
    case BlockValueCheck::kOtherTokens:
      return "other tokens";
    case BlockValueCheck::kWrongSize:
      return "wrong size";
    case BlockValueCheck::kBadChecksum:
      return "bad checksum";
  }
  return "?";
}

size_t BlockValueBytes(size_t num_tokens, size_t block_bytes) {
  return kBlockValueHeaderBytes + num_tokens * sizeof(int32_t) + block_bytes;
}

void EncodeBlockValue(const BlockIdentity& id,
                      absl::Span<const std::byte> block, std::string* out) {
  PKV_CHECK(out != nullptr, "EncodeBlockValue needs an output");
  const size_t token_bytes = id.tokens.size() * sizeof(int32_t);
  out->resize(BlockValueBytes(id.tokens.size(), block.size()));
  char* v = out->data();
  std::memset(v, 0, kBlockValueHeaderBytes);
  Put<uint32_t>(v, 0, kBlockValueMagic);
  Put<uint16_t>(v, 4, kBlockValueVersion);
  Put<uint16_t>(v, 6, kBlockValueHeaderBytes);
  Put<uint64_t>(v, 8, id.layout_fingerprint);
  Put<uint64_t>(v, 16, id.hash);
  Put<uint64_t>(v, 24, id.parent);
  Put<uint64_t>(v, 32, id.keys.tenant_salt);
  Put<uint64_t>(v, 40, id.keys.adapter_id);
  Put<uint64_t>(v, 48, id.keys.multimodal_digest);
  Put<uint32_t>(v, 56, static_cast<uint32_t>(id.tokens.size()));
  Put<uint64_t>(v, 64, block.size());
  if (token_bytes > 0) {
    std::memcpy(v + kBlockValueHeaderBytes, id.tokens.data(), token_bytes);
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, v, kChecksumOffset);
  XXH3_64bits_update(&state, v + kBlockValueHeaderBytes, token_bytes);
  // Copied and hashed piece by piece, as DecodeBlockValue does: each piece
  // is hashed while it is still in cache.
  char* bytes = v + kBlockValueHeaderBytes + token_bytes;
  for (size_t done = 0; done < block.size(); done += kPieceBytes) {
    const size_t n = std::min(kPieceBytes, block.size() - done);
    std::memcpy(bytes + done, block.data() + done, n);
    XXH3_64bits_update(&state, bytes + done, n);
  }
  Put<uint64_t>(v, kChecksumOffset, XXH3_64bits_digest(&state));
}

BlockValueCheck DecodeBlockValue(std::string_view value,
                                 const BlockIdentity& expected,
                                 absl::Span<std::byte> dst) {
  const char* v = value.data();
  if (value.size() < 8) return BlockValueCheck::kTruncated;
  if (Get<uint32_t>(v, 0) != kBlockValueMagic)
    return BlockValueCheck::kBadMagic;
  if (Get<uint16_t>(v, 4) != kBlockValueVersion ||
      Get<uint16_t>(v, 6) != kBlockValueHeaderBytes) {
    return BlockValueCheck::kUnknownVersion;
  }
  if (value.size() < kBlockValueHeaderBytes) return BlockValueCheck::kTruncated;
  if (Get<uint64_t>(v, 8) != expected.layout_fingerprint) {
    return BlockValueCheck::kOtherLayout;
  }
  if (Get<uint64_t>(v, 16) != expected.hash ||
      Get<uint64_t>(v, 24) != expected.parent ||
      Get<uint64_t>(v, 32) != expected.keys.tenant_salt ||
      Get<uint64_t>(v, 40) != expected.keys.adapter_id ||
      Get<uint64_t>(v, 48) != expected.keys.multimodal_digest) {
    return BlockValueCheck::kOtherBlock;
  }
  const size_t num_tokens = Get<uint32_t>(v, 56);
  const uint64_t block_bytes = Get<uint64_t>(v, 64);
  if (num_tokens != expected.tokens.size() || block_bytes != dst.size()) {
    return BlockValueCheck::kWrongSize;
  }
  const size_t total = BlockValueBytes(num_tokens, dst.size());
  if (value.size() < total) return BlockValueCheck::kTruncated;
  if (value.size() != total) return BlockValueCheck::kWrongSize;
  const size_t token_bytes = num_tokens * sizeof(int32_t);
  if (token_bytes > 0 &&
      std::memcmp(v + kBlockValueHeaderBytes, expected.tokens.data(),
                  token_bytes) != 0) {
    return BlockValueCheck::kOtherTokens;
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, v, kChecksumOffset);
  XXH3_64bits_update(&state, v + kBlockValueHeaderBytes, token_bytes);
  const char* bytes = v + kBlockValueHeaderBytes + token_bytes;
  for (size_t done = 0; done < dst.size(); done += kPieceBytes) {
    const size_t n = std::min(kPieceBytes, dst.size() - done);
    XXH3_64bits_update(&state, bytes + done, n);
    std::memcpy(dst.data() + done, bytes + done, n);
  }
  if (XXH3_64bits_digest(&state) != Get<uint64_t>(v, kChecksumOffset)) {
    return BlockValueCheck::kBadChecksum;
  }
  return BlockValueCheck::kOk;
}

}  // namespace pagedkv
