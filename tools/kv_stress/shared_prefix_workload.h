// tools/kv_stress/shared_prefix_workload.h
//
// A request stream made for prefix caching: multi-turn chat sessions over a
// few shared system prompts (an assistant's instructions, a RAG template).
// Sessions start as a Poisson process; each picks one of the system prompts
// and a number of turns. Turn t's prompt is the system prompt, then every
// earlier turn's user text and output, then its new user text, so it repeats
// the previous turn's whole prompt and output (TokenSpans, prefix_tokens.h:
// the output span has the key the previous turn generated with). The next
// turn arrives after the previous one's output had time to finish plus a
// think time, so a cache that kept the session's blocks serves all but the
// new text. Requests are plain (one row, no window).
//
//   SharedPrefixOptions options;  // 4 system prompts of 1024 tokens
//   SharedPrefixWorkload sessions(options, /*seed=*/1);
//   for (int64_t step = 0; step < 100; ++step) {
//     for (const Request& r : sessions.ArrivalsAt(step)) { /* enqueue r */ }
//   }
//
// Deterministic for a seed (Rng, workload.h). Thread safety: used by one
// thread at a time.
#ifndef PAGEDKV_TOOLS_KV_STRESS_SHARED_PREFIX_WORKLOAD_H_
#define PAGEDKV_TOOLS_KV_STRESS_SHARED_PREFIX_WORKLOAD_H_

#include <cstdint>
#include <queue>
#include <vector>

#include "tools/kv_stress/request_source.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {

struct SharedPrefixOptions {
  int32_t num_system_prompts = 4;
  int32_t system_prompt_tokens = 1024;
  // Mean session starts per scheduler step (Poisson).
  double sessions_per_step = 0.12;
  // Turns per session, uniform in [min_turns, max_turns].
  int32_t min_turns = 2;
  int32_t max_turns = 6;
  LengthSpec user{LengthDist::kLognormal, 96, 0.6, 8, 512};
  LengthSpec output{LengthDist::kLognormal, 128, 0.6, 8, 512};
  // Mean steps between a turn's expected end (arrival + output tokens) and
  // the next turn's arrival (exponential).
  double think_steps = 120;

  // The longest prompt + output a session can produce (for max_len).
  int64_t max_request_tokens() const {
    return int64_t{system_prompt_tokens} +
           int64_t{max_turns} * (user.max_tokens + output.max_tokens);
  }
};

class SharedPrefixWorkload : public RequestSource {
 public:
  SharedPrefixWorkload(const SharedPrefixOptions& options, uint64_t seed);

  // Returns the turns arriving in [step, step + 1), ids increasing.
  // REQUIRES: steps are asked in increasing order.
  std::vector<Request> ArrivalsAt(int64_t step) override;
  bool exhausted() const override { return false; }

 private:
  // Draws a session starting at `time` and queues all its turns.
  void StartSession(double time);

  struct Pending {
    int64_t arrival_step = 0;
    int64_t order = 0;  // Ties: the order turns were drawn.
    Request request;
  };
  struct Later {
    bool operator()(const Pending& a, const Pending& b) const {
      return a.arrival_step != b.arrival_step ? a.arrival_step > b.arrival_step
                                              : a.order > b.order;
    }
  };

  SharedPrefixOptions options_;
  Rng rng_;
  double next_session_ = 0;  // Start time of the next session not drawn.
  int64_t num_sessions_ = 0;
  int64_t num_drawn_ = 0;
  int64_t next_id_ = 0;
  std::priority_queue<Pending, std::vector<Pending>, Later> pending_;
};

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_SHARED_PREFIX_WORKLOAD_H_
