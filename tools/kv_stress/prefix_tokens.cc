// tools/kv_stress/prefix_tokens.cc
#include "tools/kv_stress/prefix_tokens.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {
namespace {

// splitmix64's finalizer: a bijection of 64-bit words with full avalanche.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t SpanKey(TokenKeyTag tag, uint64_t a, uint64_t b) {
  const uint64_t k = Mix(Mix(Mix(static_cast<uint64_t>(tag)) ^ a) ^ b);
  return k == 0 ? 1 : k;
}

int32_t TokenId(uint64_t key, int64_t j) {
  return static_cast<int32_t>(
      Mix(key ^ Mix(static_cast<uint64_t>(j) + 0x632BE59BD9B4E019ULL)) >> 33);
}

void PromptTokenIds(const Request& r, std::vector<int32_t>* out) {
  out->clear();
  out->reserve(static_cast<size_t>(r.prompt_tokens));
  const int64_t n = r.prompt_tokens;
  for (const TokenSpan& span : r.prompt_spans) {
    const int64_t take =
        std::min<int64_t>(span.length, n - static_cast<int64_t>(out->size()));
    for (int64_t j = 0; j < take; ++j) out->push_back(TokenId(span.key, j));
  }
  const uint64_t own =
      SpanKey(TokenKeyTag::kOwnPrompt, static_cast<uint64_t>(r.id));
  for (int64_t j = static_cast<int64_t>(out->size()); j < n; ++j) {
    out->push_back(TokenId(own, j));
  }
}

uint64_t OutputKey(const Request& r) {
  return r.output_key != 0 ? r.output_key
                           : SpanKey(TokenKeyTag::kOutput,
                                     static_cast<uint64_t>(r.id), ~uint64_t{0});
}

int32_t GeneratedTokenId(const Request& r, int64_t row_salt, int64_t index) {
  const uint64_t key = OutputKey(r);
  if (row_salt == 0) return TokenId(key, index);
  return TokenId(Mix(key ^ Mix(static_cast<uint64_t>(row_salt))), index);
}

}  // namespace pagedkv::kv_stress
