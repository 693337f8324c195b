// tools/kv_stress/shared_prefix_workload.cc
#include "tools/kv_stress/shared_prefix_workload.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "tools/kv_stress/prefix_tokens.h"
#include "tools/kv_stress/request_source.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {

SharedPrefixWorkload::SharedPrefixWorkload(const SharedPrefixOptions& options,
                                           uint64_t seed)
    : options_(options), rng_(seed ^ 0x5ea5105ULL) {
  next_session_ = rng_.Exponential(1.0 / options_.sessions_per_step);
}

void SharedPrefixWorkload::StartSession(double time) {
  const uint64_t session = static_cast<uint64_t>(num_sessions_++);
  const int32_t system =
      static_cast<int32_t>(rng_.Below(options_.num_system_prompts));
  const int32_t turns =
      options_.min_turns + static_cast<int32_t>(rng_.Below(
                               options_.max_turns - options_.min_turns + 1));
  std::vector<TokenSpan> history = {
      {SpanKey(TokenKeyTag::kSystemPrompt, static_cast<uint64_t>(system)),
       options_.system_prompt_tokens}};
  int32_t history_tokens = options_.system_prompt_tokens;
  for (int32_t t = 0; t < turns; ++t) {
    const int32_t user = options_.user.Draw(rng_);
    const int32_t output = options_.output.Draw(rng_);
    Pending p;
    p.arrival_step = static_cast<int64_t>(std::floor(time));
    p.order = num_drawn_++;
    Request& r = p.request;
    r.arrival_step = p.arrival_step;
    history.push_back(
        {SpanKey(TokenKeyTag::kUserText, session, static_cast<uint64_t>(t)),
         user});
    history_tokens += user;
    r.prompt_spans = history;
    r.prompt_tokens = history_tokens;
    r.output_tokens = output;
    r.output_key =
        SpanKey(TokenKeyTag::kOutput, session, static_cast<uint64_t>(t));
    pending_.push(std::move(p));
    // The next turn repeats this one's output.
    history.push_back({r.output_key, output});
    history_tokens += output;
    time += output + rng_.Exponential(options_.think_steps);
  }
}

std::vector<Request> SharedPrefixWorkload::ArrivalsAt(int64_t step) {
  // Every session started by the end of this step has its turns queued;
  // later sessions' turns all arrive later.
  while (next_session_ < static_cast<double>(step + 1)) {
    StartSession(next_session_);
    next_session_ += rng_.Exponential(1.0 / options_.sessions_per_step);
  }
  std::vector<Request> out;
  while (!pending_.empty() && pending_.top().arrival_step <= step) {
    Request r = pending_.top().request;
    pending_.pop();
    r.id = next_id_++;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace pagedkv::kv_stress
