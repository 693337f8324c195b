// tools/kv_stress/request_source.h
//
// Where kv_stress's requests come from: a seeded generator
// (WorkloadGenerator, workload.h) or a recorded trace (MooncakeTrace,
// mooncake_trace.h). The simulation asks for each step's arrivals in order
// and, for a finite source, stops once it is drained and both servers are
// idle.
//
//   std::unique_ptr<RequestSource> source = ...;
//   for (int64_t step = 0; !source->exhausted(); ++step) {
//     for (const Request& r : source->ArrivalsAt(step)) { /* enqueue r */ }
//   }
//
// Thread safety: used by one thread at a time.
#ifndef PAGEDKV_TOOLS_KV_STRESS_REQUEST_SOURCE_H_
#define PAGEDKV_TOOLS_KV_STRESS_REQUEST_SOURCE_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace pagedkv::kv_stress {

// A run of prompt tokens named by one key: token j of the run is
// TokenId(key, j) (prefix_tokens.h), so two runs with one key hold equal
// tokens (a Mooncake hash id's 512 tokens, a system prompt, an earlier turn).
struct TokenSpan {
  uint64_t key = 0;
  int32_t length = 0;  // > 0.
};

enum class RequestKind { kPlain, kBeam, kFork };
inline std::string_view RequestKindName(RequestKind kind) {
  switch (kind) {
    case RequestKind::kPlain:
      return "plain";
    case RequestKind::kBeam:
      return "beam";
    case RequestKind::kFork:
      return "fork";
  }
  return "?";
}

// One request of the stream (generated or from a trace).
struct Request {
  int64_t id = 0;
  // Step at which the request arrives.
  int64_t arrival_step = 0;
  int32_t prompt_tokens = 0;
  int32_t output_tokens = 0;
  RequestKind kind = RequestKind::kPlain;
  // Rows after prefill: beam width, fork samples, or 1.
  int32_t width = 1;
  // Sliding window kept with Crop, or 0 for none.
  int32_t crop_window = 0;
  // What the prompt holds, for prefix caching: runs covering its first
  // tokens in order (at most prompt_tokens in all); the tokens past them are
  // the request's own. Empty: every token is the request's own.
  std::vector<TokenSpan> prompt_spans;
  // The key of the tokens its first row generates (a later turn's prompt
  // repeats them); 0: one of its own, from its id.
  uint64_t output_key = 0;
};

class RequestSource {
 public:
  virtual ~RequestSource() = default;
  // Returns the requests arriving in [step, step + 1), ids increasing.
  // REQUIRES: steps are asked in increasing order.
  virtual std::vector<Request> ArrivalsAt(int64_t step) = 0;
  // True once every request has been handed out (never for an endless
  // generator).
  virtual bool exhausted() const = 0;
};

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_REQUEST_SOURCE_H_
