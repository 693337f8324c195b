// tools/kv_stress/simulator.cc
#include "tools/kv_stress/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tools/kv_stress/contiguous_model.h"
#include "tools/kv_stress/managed_server.h"
#include "tools/kv_stress/model_presets.h"
#include "tools/kv_stress/mooncake_trace.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/request_source.h"
#include "tools/kv_stress/shared_prefix_workload.h"
#include "tools/kv_stress/sim_metrics.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {

absl::Status SimConfig::Validate() const {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  if (pool_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pool_blocks %d must be > 0", pool_blocks));
  }
  if (!layer_groups.empty()) {
    PKV_RETURN_IF_ERROR(ValidateLayerGroups(layout, layer_groups));
    // The stamps are read back through one table per row, and the remote
    // tier takes no groups yet (KVCacheManager::Create: UNIMPLEMENTED).
    if (storage != StorageMode::kBooksOnly || replicated()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "layer groups (model %s) run books-only, without replicas or a "
          "remote tier (storage %s, replicas %d, remote \"%s\")",
          model, storage == StorageMode::kHost ? "host" : "books_only",
          replicas, remote));
    }
  }
  if (steps < 0 || (steps == 0 && duration_s <= 0 && trace_path.empty())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "steps %d: need steps > 0, duration_s > 0 or a trace", steps));
  }
  if (!trace_path.empty() && (!(trace_step_ms > 0) || trace_max_requests < 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "trace_step_ms %f must be > 0 and trace_max_requests %d >= 0",
        trace_step_ms, trace_max_requests));
  }
  if (host_blocks < 0 || stamp_samples < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("host_blocks %d and stamp_samples %d must be >= 0",
                        host_blocks, stamp_samples));
  }
  const WorkloadOptions& w = workload;
  for (const LengthSpec* spec : {&w.prompt, &w.output}) {
    if (spec->min_tokens < 1 || spec->max_tokens < spec->min_tokens ||
        spec->median <= 0 || spec->sigma < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "bad length spec: min %d max %d median %f sigma %f", spec->min_tokens,
          spec->max_tokens, spec->median, spec->sigma));
    }
  }
  if (w.arrivals_per_step <= 0) {
    return absl::InvalidArgumentError("arrivals_per_step must be > 0");
  }
  if (w.beam_width < 1 || w.fork_samples < 1 || w.crop_window < 1) {
    return absl::InvalidArgumentError(
        "beam_width, fork_samples and crop_window must be >= 1");
  }
  if (w.beam_pct < 0 || w.fork_pct < 0 || w.crop_pct < 0 ||
      w.beam_pct + w.fork_pct > 100 || w.crop_pct > 100) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bad mix: beam %f%% fork %f%% crop %f%%", w.beam_pct,
                        w.fork_pct, w.crop_pct));
  }
  // A trace's requests may exceed max_len: the contiguous model refuses
  // those (too large), as a server with that context limit would.
  if (sessions.has_value()) {
    const SharedPrefixOptions& o = *sessions;
    if (o.num_system_prompts < 1 || o.system_prompt_tokens < 1 ||
        !(o.sessions_per_step > 0) || o.min_turns < 1 ||
        o.max_turns < o.min_turns || o.think_steps < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "bad sessions: %d system prompts of %d tokens, %f per step, turns "
          "[%d, %d], think %f steps",
          o.num_system_prompts, o.system_prompt_tokens, o.sessions_per_step,
          o.min_turns, o.max_turns, o.think_steps));
    }
    if (trace_path.empty() && o.max_request_tokens() > max_len) {
      return absl::InvalidArgumentError(
          absl::StrFormat("max_len %d is below a session's longest request %d",
                          max_len, o.max_request_tokens()));
    }
  }
  if (replicas < 1 || replicas > kMaxReplicas) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "replicas %d must be in [1, %d]", replicas, kMaxReplicas));
  }
  if (!remote.empty()) {
    if (remote != "memory" && !absl::StartsWith(remote, "redis://") &&
        !absl::StartsWith(remote, "unix:")) {
      return absl::InvalidArgumentError(
          absl::StrCat("remote \"", remote,
                       "\" is not memory, redis://HOST:PORT or unix:/PATH"));
    }
    if (!prefix_caching) {
      return absl::InvalidArgumentError(
          absl::StrCat("remote \"", remote,
                       "\" needs prefix caching (the tier shares "
                       "prefix-cache blocks)"));
    }
  }
  if (replicated() && !pool_sweep.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pool_sweep runs one server; it does not combine with %d replicas "
        "or remote \"%s\"",
        replicas, remote));
  }
  if (compare_without_remote && remote.empty()) {
    return absl::InvalidArgumentError(
        "compare_without_remote needs a remote tier to compare against");
  }
  for (int32_t blocks : pool_sweep) {
    if (blocks <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "pool_sweep holds %d blocks; every size must be > 0", blocks));
    }
  }
  if (trace_path.empty() && !sessions.has_value() &&
      int64_t{w.prompt.max_tokens} + w.output.max_tokens > max_len) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_len %d is below max prompt %d + max output %d",
                        max_len, w.prompt.max_tokens, w.output.max_tokens));
  }
  if (max_running < 1 || max_waiting < 0 || max_prefill_tokens_per_step < 1 ||
      !(watermark_pct >= 0 && watermark_pct < 100) || check_every < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bad scheduler limits: max_running %d (>= 1), max_waiting %d (>= 0), "
        "max_prefill_tokens_per_step %d (>= 1), watermark_pct %f (in [0, "
        "100)), check_every %d (>= 0)",
        max_running, max_waiting, max_prefill_tokens_per_step, watermark_pct,
        check_every));
  }
  return absl::OkStatus();
}

absl::StatusOr<SimConfig> PresetConfig(std::string_view name) {
  SimConfig c;
  c.preset = std::string(name);
  if (name == "chat") {
    // The defaults: 8 layers x 4 KV heads x 64 dims, float16, 16-token
    // blocks of 128 KiB; 4096 blocks = 512 MiB = 65536 tokens, so the
    // contiguous model (max_len 4096) fits 16 requests. ~30 s with -c opt.
    return c;
  }
  if (name == "beam") {
    c.workload.beam_pct = 60;
    c.workload.fork_pct = 10;
    c.workload.arrivals_per_step = 0.6;
    c.workload.output.median = 128;
    c.steps = 10000;
    return c;
  }
  if (name == "long") {
    c.workload.prompt = {LengthDist::kLognormal, 3000, 0.6, 256, 12288};
    c.workload.output = {LengthDist::kLognormal, 512, 0.6, 16, 4096};
    c.workload.crop_pct = 30;
    c.workload.crop_window = 4096;
    c.workload.beam_pct = 0;
    c.workload.fork_pct = 5;
    c.workload.arrivals_per_step = 0.04;
    c.max_len = 16384;
    c.pool_blocks = 4096;
    c.steps = 8000;
    return c;
  }
  if (name == "tiny") {
    c.layout = {.num_layers = 2,
                .num_kv_heads = 2,
                .head_dim = 16,
                .dtype = DType::kFloat16,
                .block_tokens = 16};
    c.workload.prompt = {LengthDist::kLognormal, 48, 0.8, 4, 256};
    c.workload.output = {LengthDist::kLognormal, 32, 0.8, 4, 256};
    c.workload.arrivals_per_step = 0.6;
    c.workload.beam_pct = 10;
    c.workload.fork_pct = 10;
    c.workload.crop_pct = 10;
    c.workload.crop_window = 64;
    c.max_len = 512;
    c.pool_blocks = 192;
    c.steps = 400;
    c.check_every = 10;
    return c;
  }
  if (name == "mooncake") {
    // The Mooncake trace (../shared/traces; 3,993 requests over 1,022 s,
    // mean prompt 15k tokens) on Llama-3.1-8B's geometry with 32 GiB of KV
    // (16,384 blocks of 2 MiB = 262,144 tokens), books only: a GPU server's
    // scheduling without the bytes. The contiguous model reserves the
    // model's 128k context per request. Runs until the trace is drained.
    absl::StatusOr<ModelGeometry> model = FindModelGeometry("llama-3.1-8b");
    PKV_CHECK(model.ok(), "the mooncake preset's model is missing");
    c.model = std::string(model->name);
    c.layout = model->Layout(16);
    c.pool_blocks = 16384;
    c.storage = StorageMode::kBooksOnly;
    c.trace_path = "../shared/traces/mooncake_synthetic_trace.jsonl";
    c.trace_step_ms = 30;
    c.steps = 0;
    c.max_len = 131072;
    c.max_running = 256;
    c.max_waiting = 4096;
    c.check_every = 1000;
    c.prefix_caching = true;
    return c;
  }
  if (name == "shared_prefix") {
    // Multi-turn chat sessions over 4 system prompts of 1024 tokens (about
    // 0.12 sessions a step, 2-6 turns each), on chat's geometry and 512 MiB
    // pool in host mode, so every prefix-cache hit's stamps are read back.
    // Runs twice, prefix caching on and off, and reports both.
    c.sessions = SharedPrefixOptions{};
    c.prefix_caching = true;
    c.compare_without_prefix_caching = true;
    c.workload.beam_pct = 0;
    c.workload.fork_pct = 0;
    c.max_len = 8192;
    c.steps = 6000;
    c.check_every = 100;
    return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset \"", std::string(name),
                   "\" (chat|beam|long|tiny|mooncake|shared_prefix)"));
}

namespace {

using internal::Checker;
using internal::Clock;
using internal::ContiguousModel;
using internal::ManagedServer;
using internal::Sampler;

}  // namespace

absl::StatusOr<std::unique_ptr<RequestSource>> MakeRequestSource(
    const SimConfig& config) {
  if (config.trace_path.empty()) {
    if (config.sessions.has_value()) {
      return std::make_unique<SharedPrefixWorkload>(*config.sessions,
                                                    config.workload.seed);
    }
    return std::make_unique<WorkloadGenerator>(config.workload);
  }
  PKV_ASSIGN_OR_RETURN(
      MooncakeTrace trace,
      MooncakeTrace::Load({.path = config.trace_path,
                           .step_ms = config.trace_step_ms,
                           .max_requests = config.trace_max_requests}));
  return std::make_unique<MooncakeTrace>(std::move(trace));
}

absl::StatusOr<SimResult> RunSimulation(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (config.replicated()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "RunSimulation runs one server; %d replicas with remote \"%s\" run "
        "in RunReplicas (replicas.h)",
        config.replicas, config.remote));
  }
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<RequestSource> source,
                       MakeRequestSource(config));
  SimResult result;
  result.config = config;
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<ManagedServer> server,
                       ManagedServer::Create(config, &result.paged));
  ManagedServer& paged = *server;
  ContiguousModel contiguous(config, &result.contiguous);
  Sampler paged_sampler, contiguous_sampler;
  Checker checker;

  const Clock::time_point start = Clock::now();
  auto elapsed = [&start] {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  int64_t step = 0;
  for (;; ++step) {
    if (config.steps > 0 && step >= config.steps) break;
    if (config.duration_s > 0 && elapsed() >= config.duration_s) break;
    // A trace ends when it is drained and the paged server is done with it
    // (what the contiguous model has left is its backlog at the end).
    if (source->exhausted() && paged.idle()) break;
    for (const Request& r : source->ArrivalsAt(step)) {
      paged.Arrive(r);
      contiguous.Arrive(r);
    }
    PKV_RETURN_IF_ERROR(paged.Step(step));
    contiguous.Step();

    TimePoint point;
    point.step = step;
    paged.Sample(paged_sampler, &point.paged_utilization, &point.paged_running);
    contiguous.Sample(contiguous_sampler, &point.contiguous_utilization,
                      &point.contiguous_running);
    result.series.push_back(point);

    if (config.check_every > 0 && (step + 1) % config.check_every == 0) {
      paged.Check(checker);
      contiguous.Check(checker, step);
    }
    if (progress) {
      Progress p;
      p.step = step + 1;
      p.steps = config.steps;
      p.elapsed_s = elapsed();
      p.paged_running = point.paged_running;
      p.paged_waiting = paged.num_waiting();
      p.contiguous_running = point.contiguous_running;
      p.paged_utilization = point.paged_utilization;
      p.preemptions = result.paged.preemptions;
      p.swap_preemptions = result.paged.swap_preemptions;
      progress(p);
    }
  }
  result.steps_run = step;
  paged.Check(checker);
  contiguous.Check(checker, step);
  result.wall_s = elapsed();

  paged.Finish();
  contiguous.Finish();
  paged_sampler.Finish(result.paged);
  contiguous_sampler.Finish(result.contiguous);
  for (ModelReport* r : {&result.paged, &result.contiguous}) {
    const int64_t tokens = r->tokens_prefilled + r->tokens_decoded;
    r->tokens_per_step = step > 0 ? double(tokens) / step : 0.0;
    r->tokens_per_s = result.wall_s > 0 ? tokens / result.wall_s : 0.0;
    r->ops_per_s = result.wall_s > 0 ? r->ops / result.wall_s : 0.0;
  }
  result.invariant_checks = checker.checks;
  result.invariant_failures = checker.failures;
  result.first_failure_step = checker.first_failure_step;
  result.failure_messages = checker.messages;
  result.capacity_ratio =
      result.contiguous.peak_running > 0
          ? double(result.paged.peak_running) / result.contiguous.peak_running
          : 0.0;
  return result;
}

}  // namespace pagedkv::kv_stress
