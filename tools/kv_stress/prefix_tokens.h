// tools/kv_stress/prefix_tokens.h
//
// The token ids kv_stress gives the manager when prefix caching is on (and
// that host-mode KV stamps are keyed by): a request names its prompt's
// content as TokenSpans (request_source.h), and each span's key expands to
// deterministic ids, so equal keys give equal tokens (a Mooncake hash id's
// 512 tokens, a shared system prompt, a previous turn) and different keys
// different ones (with the odds of a 31-bit collision per token). Generated
// tokens come from the request's output key, the row and the decode index,
// so a multi-turn session's next prompt repeats the previous turn's output
// exactly, and forked rows diverge.
//
//   std::vector<int32_t> ids;
//   PromptTokenIds(request, &ids);                 // request.prompt_tokens ids
//   const int32_t next = GeneratedTokenId(request, /*row_salt=*/0, decoded);
//
// Thread safety: pure functions.
#ifndef PAGEDKV_TOOLS_KV_STRESS_PREFIX_TOKENS_H_
#define PAGEDKV_TOOLS_KV_STRESS_PREFIX_TOKENS_H_

#include <cstdint>
#include <vector>

#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {

// What a span key names; keys of different tags never collide by design.
enum class TokenKeyTag : uint64_t {
  kTraceBlock = 1,    // A Mooncake hash id (a = the id).
  kOwnPrompt = 2,     // A request's own prompt tokens (a = request id).
  kSystemPrompt = 3,  // A shared system prompt (a = its index).
  kUserText = 4,      // A session's user turn (a = session, b = turn).
  kOutput = 5,        // Generated tokens (a = session or request, b = turn).
};

// Returns the key of (tag, a, b): a 64-bit mix, never 0.
uint64_t SpanKey(TokenKeyTag tag, uint64_t a, uint64_t b = 0);

// Returns token j of the run keyed `key`: an id in [0, 2^31).
int32_t TokenId(uint64_t key, int64_t j);

// Replaces *out with the request's prompt_tokens ids: its spans' tokens in
// order, then (past them) tokens of SpanKey(kOwnPrompt, id). Spans past
// prompt_tokens are cut.
void PromptTokenIds(const Request& r, std::vector<int32_t>* out);

// Returns the key of the tokens r's first row generates: r.output_key, or
// SpanKey(kOutput, r.id, ~0) when that is 0.
uint64_t OutputKey(const Request& r);

// Returns the id of the token at decode index `index` of a row of r: row
// salt 0 (the prompt row) gives TokenId(OutputKey(r), index), so a later
// turn whose span has that key repeats it; other salts (a forked row's id)
// give ids of their own.
int32_t GeneratedTokenId(const Request& r, int64_t row_salt, int64_t index);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_PREFIX_TOKENS_H_
