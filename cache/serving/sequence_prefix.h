// cache/serving/sequence_prefix.h
//
// SequencePrefix is one sequence's prefix-caching state in the serving
// books: its token ids, the chained keys of its full blocks, how far its KV
// is committed and how far it is published. Both KVCacheManager's books
// (one table per sequence) and the layer-grouped ones
// (grouped_sequences.h, which publish the anchor group's blocks under
// these keys) keep one per sequence added with token ids. BlockKeysOf()
// computes the keys: the block's salt and adapter, and a digest of the
// multimodal spans that overlap it.
//
// Example:
//
//   SequencePrefix p;
//   p.tokens = {1, 2, 3, 4, 5};
//   ExtendBlockKeys(Xxh3BlockHasher(), /*block_tokens=*/2, p, /*n=*/2);
//   // p.hashes[1] == Xxh3BlockHasher().Hash(p.hashes[0], {3, 4},
//   //                                      p.keys[1]).
//
// Thread safety: a value type.
#ifndef PAGEDKV_CACHE_SERVING_SEQUENCE_PREFIX_H_
#define PAGEDKV_CACHE_SERVING_SEQUENCE_PREFIX_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "allocator/prefix/block_hash.h"

namespace pagedkv {

// A multimodal input whose placeholder tokens are [start, start + length)
// of the prompt; its digest (the server's hash of the image or audio) keys
// every block those tokens fall in.
struct MultimodalSpan {
  int64_t start = 0;
  int64_t length = 0;
  uint64_t digest = 0;
};

struct SequencePrefix {
  // The decode step's fields first: one cache line with the token ids'
  // vector.
  int64_t committed = 0;  // Tokens with KV written and final.
  // Leading table blocks done publishing (published, or switched to an
  // equal cached block) in `epoch`.
  int32_t published = 0;
  // The ids of tokens [0, tokens.size()) of the sequence's num_tokens:
  // all of them, unless steps left their ids out (SlotRequest).
  std::vector<int32_t> tokens;
  // The keys of full blocks [0, hashes.size()): a memo of the tokens,
  // extended as lookups need them (ExtendBlockKeys). A call refused for
  // room (a Readmit or SwapIn that matched first) may leave it longer;
  // that changes no answer, and the retry reuses it.
  std::vector<BlockHash> hashes;
  std::vector<BlockExtraKeys> keys;  // One per hash.
  uint64_t tenant_salt = 0;
  uint64_t adapter_id = 0;
  std::vector<MultimodalSpan> multimodal;
  uint64_t epoch = 0;
  bool stopped = false;  // A collision ended its chain.
};

// The extra keys of block `block` (tokens [block * block_tokens, (block +
// 1) * block_tokens)): the salt and adapter, and a digest of the
// multimodal spans that overlap the block, with where they start relative
// to it (a shifted image is another key).
BlockExtraKeys BlockKeysOf(uint64_t salt, uint64_t adapter,
                           absl::Span<const MultimodalSpan> multimodal,
                           int64_t block, int32_t block_tokens);

// INVALID_ARGUMENT (with the numbers) unless every span of sequence `seq`
// lies inside its prompt_tokens tokens.
absl::Status CheckMultimodalSpans(int64_t seq,
                                  absl::Span<const MultimodalSpan> spans,
                                  int64_t prompt_tokens);

// The OUT_OF_RANGE of a commit of `commit` tokens of sequence `seq` outside
// [last, num_tokens] (its last commit and its tokens), with the numbers.
// Callers compare first: the decode step's common case is a commit in range.
absl::Status CommitOutOfRange(int64_t seq, int64_t commit, int64_t last,
                              int64_t num_tokens);

// One CommitTokens entry's checks, the same for both managers' books:
// sequence `seq` is running (else FAILED_PRECONDITION naming `state`), was
// added with ids (p not null), `commit` is in [p->committed, num_tokens]
// (OUT_OF_RANGE), and `num_ids` new ids fit its tokens and were not given
// in this call already (`ids_given`; INVALID_ARGUMENT).
absl::Status CheckTokenCommit(int64_t seq, bool running, const char* state,
                              const SequencePrefix* p, int64_t num_tokens,
                              int64_t commit, int64_t num_ids, bool ids_given);

// Computes the hashes and keys of p's full blocks up to n (the ones it
// lacks), each chained to the one before (the first to kRootBlockHash).
// REQUIRES: n * block_tokens <= p.tokens.size().
void ExtendBlockKeys(const BlockHasher& hasher, int32_t block_tokens,
                     SequencePrefix& p, int64_t n);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_SEQUENCE_PREFIX_H_
