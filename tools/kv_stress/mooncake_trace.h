// tools/kv_stress/mooncake_trace.h
//
// A recorded request trace in the Mooncake format (kvcache-ai/Mooncake,
// FAST'25), replayed as kv_stress's request stream. One JSON object a line:
//
//   {"timestamp": 27482, "input_length": 6955, "output_length": 52,
//    "hash_ids": [46, 47, 48, 2353]}
//
// timestamp is the arrival in milliseconds; a request arrives in scheduler
// step floor(timestamp / step_ms). hash_ids name the prompt's 512-token
// blocks (kTraceBlockTokens): each becomes a TokenSpan keyed by the id
// (SpanKey(kTraceBlock, id), prefix_tokens.h) of 512 tokens, the last cut to
// what is left of input_length, so equal ids give equal tokens; prompt
// tokens past the ids are the request's own. Every request is plain (one
// row, no window). Lines that are empty or only blanks are skipped.
//
//   absl::StatusOr<MooncakeTrace> trace = MooncakeTrace::Load(
//       {.path = "../shared/traces/mooncake_synthetic_trace.jsonl",
//        .step_ms = 30});
//   if (!trace.ok()) return trace.status();
//   for (int64_t step = 0; !trace->exhausted(); ++step) {
//     for (const Request& r : trace->ArrivalsAt(step)) { /* enqueue r */ }
//   }
//
// Errors: a file that cannot be read is NOT_FOUND (with the OS reason); a
// path that is not a regular file (a directory), a trace without requests
// and a malformed line (not JSON, a missing or non-integer field, lengths
// < 1, hash_ids not an array of integers >= 0 or naming more 512-token
// blocks than input_length has, a timestamp below the previous line's) are
// INVALID_ARGUMENT, a line's error naming the line and the field.
//
// Thread safety: used by one thread at a time.
#ifndef PAGEDKV_TOOLS_KV_STRESS_MOONCAKE_TRACE_H_
#define PAGEDKV_TOOLS_KV_STRESS_MOONCAKE_TRACE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/check.h"
#include "tools/kv_stress/request_source.h"

namespace pagedkv::kv_stress {

class MooncakeTrace : public RequestSource {
 public:
  // Tokens one hash id names.
  static constexpr int32_t kTraceBlockTokens = 512;

  struct Options {
    std::string path;
    // Milliseconds of trace time per scheduler step; > 0.
    double step_ms = 30;
    // Replay only the first this many requests; 0: all.
    int64_t max_requests = 0;
  };

  static absl::StatusOr<MooncakeTrace> Load(const Options& options);
  // Parses `text` as the file's contents (tests; Load reads then calls it).
  static absl::StatusOr<MooncakeTrace> Parse(const std::string& text,
                                             const Options& options);

  std::vector<Request> ArrivalsAt(int64_t step) override;
  bool exhausted() const override { return next_ == requests_.size(); }

  // Every request, in arrival order (handed out or not).
  const std::vector<Request>& requests() const { return requests_; }
  int64_t num_requests() const {
    return static_cast<int64_t>(requests_.size());
  }
  int32_t max_prompt_tokens() const { return max_prompt_; }
  int32_t max_output_tokens() const { return max_output_; }
  // The file's line (from 1) of the request with id `id`.
  // REQUIRES: 0 <= id < num_requests().
  int64_t line_of(int64_t id) const {
    PKV_CHECK(id >= 0 && id < num_requests(), "request %d of %d", id,
              num_requests());
    return lines_[id];
  }
  // The step of the last arrival (-1 for an empty trace).
  int64_t last_arrival_step() const {
    return requests_.empty() ? -1 : requests_.back().arrival_step;
  }

 private:
  MooncakeTrace() = default;

  // In arrival order; ids are the line's index among the requests.
  std::vector<Request> requests_;
  std::vector<int64_t> lines_;  // lines_[id]: the line of requests_[id].
  size_t next_ = 0;             // The first request not yet handed out.
  int32_t max_prompt_ = 0;
  int32_t max_output_ = 0;
};

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_MOONCAKE_TRACE_H_
