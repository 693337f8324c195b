#include "cache/serving/sequence_prefix.h"

#include <cstdint>

#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"
#include "base/check.h"

namespace pagedkv {

BlockExtraKeys BlockKeysOf(uint64_t salt, uint64_t adapter,
                           absl::Span<const MultimodalSpan> multimodal,
                           int64_t block, int32_t block_tokens) {
  BlockExtraKeys k;
  k.tenant_salt = salt;
  k.adapter_id = adapter;
  const int64_t begin = block * block_tokens;
  const int64_t end = begin + block_tokens;
  for (const MultimodalSpan& m : multimodal) {
    if (m.length <= 0 || m.start >= end || m.start + m.length <= begin) {
      continue;
    }
    const uint64_t words[3] = {m.digest, static_cast<uint64_t>(m.start - begin),
                               static_cast<uint64_t>(m.length)};
    k.multimodal_digest = HashWords(words, k.multimodal_digest);
  }
  return k;
}

void ExtendBlockKeys(const BlockHasher& hasher, int32_t block_tokens,
                     SequencePrefix& p, int64_t n) {
  const int64_t bt = block_tokens;
  PKV_DCHECK(n * bt <= static_cast<int64_t>(p.tokens.size()),
             "hashes of %d blocks of %d tokens", n, p.tokens.size());
  for (int64_t i = static_cast<int64_t>(p.hashes.size()); i < n; ++i) {
    const BlockExtraKeys keys =
        BlockKeysOf(p.tenant_salt, p.adapter_id, p.multimodal, i, block_tokens);
    const BlockHash parent = i == 0 ? kRootBlockHash : p.hashes[i - 1];
    p.hashes.push_back(hasher.Hash(
        parent, absl::MakeConstSpan(p.tokens.data() + i * bt, bt), keys));
    p.keys.push_back(keys);
  }
}

}  // namespace pagedkv
