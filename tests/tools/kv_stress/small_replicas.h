// tests/tools/kv_stress/small_replicas.h
//
// The multi-replica tests' config: shared_prefix's sessions, small (a tiny
// geometry, 256-token system prompts, 3 replicas of 256 blocks, checked
// every 10 steps), on the tier `remote` names.
//
//   SimConfig c = SmallReplicas("memory", /*steps=*/300);
//   absl::StatusOr<ReplicaRunResult> r = RunReplicas(c);
#ifndef PAGEDKV_TESTS_TOOLS_KV_STRESS_SMALL_REPLICAS_H_
#define PAGEDKV_TESTS_TOOLS_KV_STRESS_SMALL_REPLICAS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "base/check.h"
#include "tensor/dtype.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

inline SimConfig SmallReplicas(const std::string& remote, int64_t steps) {
  absl::StatusOr<SimConfig> c = PresetConfig("shared_prefix");
  PKV_CHECK(c.ok(), "shared_prefix preset");
  c->layout = {.num_layers = 2,
               .num_kv_heads = 2,
               .head_dim = 16,
               .dtype = DType::kFloat16,
               .block_tokens = 16};
  c->sessions->system_prompt_tokens = 256;
  c->sessions->user.max_tokens = 128;
  c->sessions->output.max_tokens = 128;
  c->sessions->think_steps = 30;
  c->sessions->sessions_per_step = 0.3;
  c->max_len = 2048;
  c->pool_blocks = 256;
  c->steps = steps;
  c->check_every = 10;
  c->compare_without_prefix_caching = false;
  c->replicas = 3;
  c->remote = remote;
  return *c;
}

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TESTS_TOOLS_KV_STRESS_SMALL_REPLICAS_H_
