// cache/remote/remote_chain.h
//
// RemoteChain names a run of consecutive full blocks of one sequence the way
// the remote tier needs them: each block's chained hash, extra keys and
// token ids, and the first block's parent. It is what a key is made of
// (RemoteTier::KeyOf) and what a fetched value must verify against
// (RemoteTier::IdentityOf). It borrows its spans.
//
//   RemoteChain chain{.parent = kRootBlockHash, .hashes = hashes,
//                     .keys = keys, .tokens = tokens};
//   int32_t loaded = tier.Load(chain, dst);  // Verified against chain.
//
// Thread safety: a value; the spans' owner decides.
#ifndef PAGEDKV_CACHE_REMOTE_REMOTE_CHAIN_H_
#define PAGEDKV_CACHE_REMOTE_REMOTE_CHAIN_H_

#include <cstdint>

#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"

namespace pagedkv {

// Block i has hash hashes[i], extra keys keys[i] and tokens
// [i * block_tokens, (i + 1) * block_tokens) of `tokens`; block 0's parent
// is `parent`, block i's (i > 0) is hashes[i - 1].
struct RemoteChain {
  BlockHash parent = kRootBlockHash;
  absl::Span<const BlockHash> hashes;
  absl::Span<const BlockExtraKeys> keys;
  absl::Span<const int32_t> tokens;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_REMOTE_REMOTE_CHAIN_H_
