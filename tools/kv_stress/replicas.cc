// tools/kv_stress/replicas.cc
#include "tools/kv_stress/replicas.h"

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "cache/remote/in_memory_block_store.h"
#include "cache/remote/redis_block_store.h"
#include "cache/remote/remote_block_store.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/storage/kv_layout.h"
#include "tensor/dtype.h"
#include "tools/kv_stress/managed_server.h"
#include "tools/kv_stress/request_source.h"
#include "tools/kv_stress/sim_metrics.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {

KVLayout ReplicaHostLayout(int32_t block_tokens) {
  // float32: stamps up to 2^24 are exact (kv_stamps.h).
  return {.num_layers = 1,
          .num_kv_heads = 1,
          .head_dim = 4,
          .dtype = DType::kFloat32,
          .block_tokens = block_tokens};
}

ReplicaStats& ReplicaStats::operator+=(const ReplicaStats& o) {
  requests += o.requests;
  completed += o.completed;
  preemptions += o.preemptions;
  prompt_tokens += o.prompt_tokens;
  prompt_blocks += o.prompt_blocks;
  local_hit_blocks += o.local_hit_blocks;
  remote_hit_blocks += o.remote_hit_blocks;
  prefill_tokens_computed += o.prefill_tokens_computed;
  prefill_tokens_remote += o.prefill_tokens_remote;
  readmit_tokens_remote += o.readmit_tokens_remote;
  tokens_decoded += o.tokens_decoded;
  hit_stamp_checks += o.hit_stamp_checks;
  remote_stamp_checks += o.remote_stamp_checks;
  remote_stamp_failures += o.remote_stamp_failures;
  lookups += o.lookups;
  lookup_blocks += o.lookup_blocks;
  store_hit_blocks += o.store_hit_blocks;
  loaded_blocks += o.loaded_blocks;
  loaded_bytes += o.loaded_bytes;
  stored_blocks += o.stored_blocks;
  stored_bytes += o.stored_bytes;
  stores_skipped += o.stores_skipped;
  store_dropped += o.store_dropped;
  store_failed += o.store_failed;
  verify_failures += o.verify_failures;
  timeouts += o.timeouts;
  errors += o.errors;
  return *this;
}

namespace {

using internal::Checker;
using internal::Clock;
using internal::ManagedServer;
using internal::Sampler;

// Blocks one replica may have queued for the store: a whole long prompt's
// (a 128k-token prompt is 8192 blocks of 16), so a drained-every-step
// queue drops nothing but what a slow store cannot take.
constexpr int32_t kWriteBehindValues = 1 << 16;

// The stores and tiers of one run: the shared store (memory) or each
// replica's connections (Redis), and one tier per replica.
struct Tiers {
  std::unique_ptr<InMemoryBlockStore> memory;
  std::vector<std::unique_ptr<RemoteTier>> tiers;
};

absl::StatusOr<Tiers> MakeTiers(const SimConfig& config,
                                const std::string& key_namespace) {
  Tiers t;
  if (config.remote.empty()) return t;
  RemoteTier::Options options;
  options.layout = config.layout;
  options.key_namespace = key_namespace;
  options.write_behind.max_values = kWriteBehindValues;
  if (config.remote == "memory") {
    t.memory = std::make_unique<InMemoryBlockStore>();
  }
  for (int32_t i = 0; i < config.replicas; ++i) {
    absl::StatusOr<std::unique_ptr<RemoteTier>> tier;
    if (t.memory != nullptr) {
      tier = RemoteTier::Create(options, t.memory.get(), t.memory.get());
    } else {
      std::unique_ptr<RemoteBlockStore> conn[2];
      for (std::unique_ptr<RemoteBlockStore>& c : conn) {
        absl::StatusOr<std::unique_ptr<RedisBlockStore>> store =
            RedisBlockStore::Create({.address = config.remote});
        if (!store.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--remote=", config.remote, ": ", store.status().message()));
        }
        // Create does not connect, and a store that cannot reach its
        // server counts every call as failed: the run would report a tier
        // that never held a block. One lookup at start-up connects.
        if (i == 0 && &c == &conn[0]) {
          const std::string probe = absl::StrCat(key_namespace, "-probe");
          (*store)->CountLeadingHits({&probe, 1});
          if (!(*store)->connected()) {
            return absl::UnavailableError(
                absl::StrCat("cannot connect to --remote=", config.remote,
                             " (is redis-server running there? README "
                             "\"kv_stress with replicas\")"));
          }
        }
        c = std::move(*store);
      }
      tier =
          RemoteTier::Create(options, std::move(conn[0]), std::move(conn[1]));
    }
    if (!tier.ok()) return tier.status();
    t.tiers.push_back(std::move(*tier));
  }
  return t;
}

ReplicaStats StatsOf(const ModelReport& r, const RemoteTier* tier,
                     int64_t requests, int32_t block_tokens) {
  ReplicaStats s;
  s.requests = requests;
  s.completed = r.completed;
  s.preemptions = r.preemptions;
  s.prompt_tokens = r.prefix.query_tokens;
  s.prompt_blocks = r.prefix.query_blocks;
  s.prefill_tokens_computed = r.prefill_tokens_computed;
  s.prefill_tokens_remote = r.prefill_tokens_remote;
  s.readmit_tokens_remote = r.readmit_tokens_remote;
  s.tokens_decoded = r.tokens_decoded;
  s.hit_stamp_checks = r.hit_stamp_checks;
  s.remote_stamp_checks = r.remote_hit_stamp_checks;
  s.remote_stamp_failures = r.remote_hit_stamp_failures;
  if (tier != nullptr) {
    const RemoteTierStats t = tier->stats();
    s.lookups = t.lookups;
    s.lookup_blocks = t.lookup_blocks;
    s.store_hit_blocks = t.hit_blocks;
    s.loaded_blocks = t.loaded_blocks;
    s.loaded_bytes = t.loaded_bytes;
    s.stored_blocks = t.writes.stored;
    s.stored_bytes = t.writes.stored_bytes;
    s.stores_skipped = t.stores_skipped;
    s.store_dropped = t.writes.dropped;
    s.store_failed = t.writes.failed;
    s.verify_failures = t.verify_failures;
    s.timeouts = t.read_store.timeouts + t.writes.store.timeouts;
    s.errors = t.read_store.errors + t.writes.store.errors;
  }
  // The manager counts an admission's tier loads among its prompt hits (a
  // readmission's are rehits, not prompt hits).
  s.remote_hit_blocks = r.prefill_tokens_remote / block_tokens;
  s.local_hit_blocks = r.prefix.hit_blocks - s.remote_hit_blocks;
  return s;
}

// Checks every replica; its failure messages say which one.
void CheckAll(std::vector<std::unique_ptr<ManagedServer>>& servers,
              Checker& checker) {
  for (size_t i = 0; i < servers.size(); ++i) {
    const size_t before = checker.messages.size();
    servers[i]->Check(checker);
    for (size_t m = before; m < checker.messages.size(); ++m) {
      checker.messages[m] =
          absl::StrCat("replica ", i, ": ", checker.messages[m]);
    }
  }
}

// One run of the replicas (no comparison). `config` is already in host
// mode when it has a tier.
absl::StatusOr<ReplicaRunResult> RunOnce(
    const SimConfig& config, const std::string& key_namespace,
    const std::function<void(const Progress&)>& progress) {
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<RequestSource> source,
                       MakeRequestSource(config));
  PKV_ASSIGN_OR_RETURN(Tiers tiers, MakeTiers(config, key_namespace));
  const size_t n = static_cast<size_t>(config.replicas);
  std::vector<ModelReport> reports(n);
  std::vector<Sampler> samplers(n);
  std::vector<int64_t> routed(n, 0);
  std::vector<std::unique_ptr<ManagedServer>> servers;
  for (size_t i = 0; i < n; ++i) {
    RemoteTier* tier = tiers.tiers.empty() ? nullptr : tiers.tiers[i].get();
    PKV_ASSIGN_OR_RETURN(std::unique_ptr<ManagedServer> server,
                         ManagedServer::Create(config, &reports[i], tier));
    servers.push_back(std::move(server));
  }
  auto idle = [&] {
    for (const auto& s : servers) {
      if (!s->idle()) return false;
    }
    return true;
  };
  Checker checker;
  const Clock::time_point start = Clock::now();
  auto elapsed = [&start] {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  int64_t next = 0;  // Requests routed so far.
  int64_t step = 0;
  for (;; ++step) {
    if (config.steps > 0 && step >= config.steps) break;
    if (config.duration_s > 0 && elapsed() >= config.duration_s) break;
    if (source->exhausted() && idle()) break;
    for (const Request& r : source->ArrivalsAt(step)) {
      const size_t to = static_cast<size_t>(next++ % config.replicas);
      ++routed[to];
      servers[to]->Arrive(r);
    }
    Progress p;
    p.step = step + 1;
    p.steps = config.steps;
    for (size_t i = 0; i < n; ++i) {
      PKV_RETURN_IF_ERROR(servers[i]->Step(step));
      // What it published this step is in the store before the next
      // replica steps (deterministic on "memory").
      if (!tiers.tiers.empty()) tiers.tiers[i]->Flush();
      double utilization = 0;
      int32_t running = 0;
      servers[i]->Sample(samplers[i], &utilization, &running);
      p.paged_running += running;
      p.paged_waiting += servers[i]->num_waiting();
      p.paged_utilization += utilization / static_cast<double>(n);
      p.preemptions += reports[i].preemptions;
    }
    if (config.check_every > 0 && (step + 1) % config.check_every == 0) {
      CheckAll(servers, checker);
    }
    if (progress) {
      p.elapsed_s = elapsed();
      progress(p);
    }
  }
  CheckAll(servers, checker);
  ReplicaRunResult result;
  result.config = config;
  result.key_namespace = tiers.tiers.empty() ? "" : key_namespace;
  result.steps_run = step;
  for (size_t i = 0; i < n; ++i) {
    servers[i]->Finish();
    samplers[i].Finish(reports[i]);
    const RemoteTier* tier =
        tiers.tiers.empty() ? nullptr : tiers.tiers[i].get();
    if (tier != nullptr) tiers.tiers[i]->Flush();
    result.replicas.push_back(
        StatsOf(reports[i], tier, routed[i], config.layout.block_tokens));
    result.total += result.replicas.back();
  }
  result.wall_s = elapsed();
  result.invariant_checks = checker.checks;
  result.invariant_failures = checker.failures;
  result.first_failure_step = checker.first_failure_step;
  result.failure_messages = checker.messages;
  // Servers (their managers) go before the tiers they borrow.
  servers.clear();
  return result;
}

// A namespace no earlier run's keys are in (a Redis server outlives runs).
std::string UniqueNamespace(const SimConfig& config) {
  if (config.remote == "memory") return "kv_stress";
  const int64_t now_us =
      std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count();
  return absl::StrFormat("kv_stress-%d-%d", static_cast<int64_t>(getpid()),
                         now_us);
}

}  // namespace

absl::StatusOr<ReplicaRunResult> RunReplicas(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  SimConfig run = config;
  bool host_geometry = false;
  if (run.storage == StorageMode::kBooksOnly) {
    // Hit rates depend on block counts: the same blocks, small bytes.
    run.storage = StorageMode::kHost;
    run.layout = ReplicaHostLayout(config.layout.block_tokens);
    host_geometry = true;
  }
  PKV_ASSIGN_OR_RETURN(ReplicaRunResult result,
                       RunOnce(run, UniqueNamespace(run), progress));
  result.host_geometry = host_geometry;
  result.requested_layout = config.layout;
  const bool compare =
      config.compare_without_remote || config.compare_without_prefix_caching;
  if (compare && !run.remote.empty()) {
    SimConfig alone = run;
    alone.remote.clear();
    alone.compare_without_remote = false;
    PKV_ASSIGN_OR_RETURN(ReplicaRunResult r, RunOnce(alone, "", nullptr));
    result.without_remote = r.replicas;
    result.without_remote_total = r.total;
    result.without_remote_steps = r.steps_run;
    result.invariant_checks += r.invariant_checks;
    result.invariant_failures += r.invariant_failures;
    for (const std::string& m : r.failure_messages) {
      result.failure_messages.push_back("(remote tier off) " + m);
    }
    if (result.first_failure_step < 0) {
      result.first_failure_step = r.first_failure_step;
    }
  }
  return result;
}

}  // namespace pagedkv::kv_stress
