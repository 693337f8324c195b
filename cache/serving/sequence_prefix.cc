#include "cache/serving/sequence_prefix.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
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

absl::Status CheckMultimodalSpans(int64_t seq,
                                  absl::Span<const MultimodalSpan> spans,
                                  int64_t prompt_tokens) {
  for (const MultimodalSpan& m : spans) {
    if (m.start < 0 || m.length <= 0 || m.start > prompt_tokens - m.length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d: multimodal span [%d, %d + %d) is not inside its %d "
          "prompt tokens",
          seq, m.start, m.start, m.length, prompt_tokens));
    }
  }
  return absl::OkStatus();
}

absl::Status CommitOutOfRange(int64_t seq, int64_t commit, int64_t last,
                              int64_t num_tokens) {
  return absl::OutOfRangeError(absl::StrFormat(
      "commit of %d tokens of sequence %d: must be in [%d, %d] (its last "
      "commit and its tokens)",
      commit, seq, last, num_tokens));
}

absl::Status CheckTokenCommit(int64_t seq, bool running, const char* state,
                              const SequencePrefix* p, int64_t num_tokens,
                              int64_t commit, int64_t num_ids, bool ids_given) {
  if (!running) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CommitTokens of sequence %d, which is %s, not running", seq, state));
  }
  if (p == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CommitTokens of sequence %d, which was added without token ids",
        seq));
  }
  if (commit < p->committed || commit > num_tokens) {
    return CommitOutOfRange(seq, commit, p->committed, num_tokens);
  }
  if (num_ids == 0) return absl::OkStatus();
  const int64_t known = static_cast<int64_t>(p->tokens.size());
  if (num_ids > num_tokens - known) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CommitTokens of sequence %d with %d token ids: it has the ids of "
        "%d of its %d tokens, so at most %d more",
        seq, num_ids, known, num_tokens, num_tokens - known));
  }
  if (ids_given) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CommitTokens gives token ids of sequence %d twice", seq));
  }
  return absl::OkStatus();
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
