// cache/remote/block_value.h
//
// The value a remote store keeps for one KV block: a small versioned header
// that names exactly which block it is, the block's token ids, then the
// block's bytes. A reader uses a value only when every field matches the
// block it asked for and the checksum holds; anything else is a miss and the
// server recomputes the KV ("nothing wrong is ever served").
//
// Layout (little-endian, 88-byte header):
//
//   off size field
//     0   4  magic "PKVB" (0x42564b50)
//     4   2  version (kBlockValueVersion)
//     6   2  header bytes (88)
//     8   8  layout fingerprint (remote_key.h)
//    16   8  the block's chained hash
//    24   8  its parent's hash (kRootBlockHash for a first block)
//    32  24  extra keys: tenant salt, adapter id, multimodal digest
//    56   4  number of token ids (the layout's block_tokens)
//    60   4  reserved, 0
//    64   8  block bytes
//    72   8  reserved, 0
//    80   8  checksum: XXH3-64 of bytes [0, 80) and [88, end)
//    88      token ids (4 bytes each), then the block's bytes
//
//   std::string value;
//   EncodeBlockValue({.layout_fingerprint = fp, .hash = h, .parent = p,
//                     .keys = keys, .tokens = tokens}, block, &value);
//   // ... later, on another machine:
//   if (DecodeBlockValue(value, expected, dst) != BlockValueCheck::kOk) {
//     // A miss: recompute.
//   }
//
// Thread safety: pure functions of their arguments.
#ifndef PAGEDKV_CACHE_REMOTE_BLOCK_VALUE_H_
#define PAGEDKV_CACHE_REMOTE_BLOCK_VALUE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"

namespace pagedkv {

inline constexpr uint32_t kBlockValueMagic = 0x42564b50;  // "PKVB"
inline constexpr uint16_t kBlockValueVersion = 1;
inline constexpr size_t kBlockValueHeaderBytes = 88;

// Which block a value holds (what a writer records and a reader expects).
// `tokens` is borrowed for the call.
struct BlockIdentity {
  uint64_t layout_fingerprint = 0;
  BlockHash hash = 0;
  BlockHash parent = kRootBlockHash;
  BlockExtraKeys keys;
  absl::Span<const int32_t> tokens;
};

// DecodeBlockValue's verdict; everything but kOk is a miss.
enum class BlockValueCheck {
  kOk,
  kTruncated,       // Shorter than its header says (or than a header).
  kBadMagic,        // Not a block value (garbage).
  kUnknownVersion,  // A format this reader does not know.
  kOtherLayout,     // Another model geometry, dtype, block size or hasher.
  kOtherBlock,      // Another hash, parent or extra keys.
  kOtherTokens,     // Other token ids (a hash collision).
  kWrongSize,       // Block bytes or length differ from the reader's.
  kBadChecksum,     // The bytes were damaged.
};

// "ok", "truncated", "bad magic", ...: for messages and reports.
const char* BlockValueCheckName(BlockValueCheck check);

// Bytes of a value for a block of num_tokens tokens and block_bytes bytes.
size_t BlockValueBytes(size_t num_tokens, size_t block_bytes);

// Writes the value of block `id` with contents `block` to *out (resized: a
// buffer of a value of the same layout is overwritten in place, with no
// allocation).
void EncodeBlockValue(const BlockIdentity& id,
                      absl::Span<const std::byte> block, std::string* out);

// Checks `value` against `expected` (dst.size() is the block's bytes). On
// kOk the block's bytes are in dst. Otherwise dst's contents are unspecified
// (the bytes are copied while the checksum is computed, in one pass): the
// caller must not serve them.
BlockValueCheck DecodeBlockValue(std::string_view value,
                                 const BlockIdentity& expected,
                                 absl::Span<std::byte> dst);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_BLOCK_VALUE_H_
