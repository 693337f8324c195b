// tools/kv_stress/replica_report.cc
#include "tools/kv_stress/replica_report.h"

#include <cstdint>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tools/kv_stress/replicas.h"
#include "tools/kv_stress/report.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using nlohmann::json;

double Ratio(double a, double b) { return b > 0 ? a / b : 0.0; }
std::string Percent(double x) { return fmt::format("{:.1f}%", 100.0 * x); }

json HitsToJson(int64_t hit_blocks, const ReplicaStats& s, int32_t bt) {
  json j = json::object();
  j["hit_blocks"] = hit_blocks;
  j["hit_tokens"] = hit_blocks * bt;
  j["hit_rate_blocks"] = Ratio(hit_blocks, s.prompt_blocks);
  j["hit_rate_tokens"] = Ratio(double(hit_blocks) * bt, s.prompt_tokens);
  return j;
}

}  // namespace

json ReplicaStatsToJson(const ReplicaStats& s, int32_t block_tokens) {
  json j = json::object();
  j["requests"] = s.requests;
  j["completed"] = s.completed;
  j["preemptions"] = s.preemptions;
  j["prompt_tokens"] = s.prompt_tokens;
  j["prompt_blocks"] = s.prompt_blocks;
  j["prefill_tokens_computed"] = s.prefill_tokens_computed;
  j["prefill_tokens_remote"] = s.prefill_tokens_remote;
  j["readmit_tokens_remote"] = s.readmit_tokens_remote;
  j["tokens_decoded"] = s.tokens_decoded;
  j["local"] = HitsToJson(s.local_hit_blocks, s, block_tokens);
  json remote = HitsToJson(s.remote_hit_blocks, s, block_tokens);
  remote["tokens_saved"] = s.remote_hit_blocks * block_tokens;
  j["remote"] = remote;
  j["stamps"] = {{"hit_checks", s.hit_stamp_checks},
                 {"remote_checks", s.remote_stamp_checks},
                 {"remote_failures", s.remote_stamp_failures}};
  j["tier"] = {{"lookups", s.lookups},
               {"lookup_blocks", s.lookup_blocks},
               {"store_hit_blocks", s.store_hit_blocks},
               {"loaded_blocks", s.loaded_blocks},
               {"loaded_bytes", s.loaded_bytes},
               {"stored_blocks", s.stored_blocks},
               {"stored_bytes", s.stored_bytes},
               {"stores_skipped", s.stores_skipped},
               {"dropped", s.store_dropped},
               {"store_failed", s.store_failed},
               {"verify_failures", s.verify_failures},
               {"timeouts", s.timeouts},
               {"errors", s.errors}};
  return j;
}

json ReplicaRunToJson(const ReplicaRunResult& r) {
  const int32_t bt = r.config.layout.block_tokens;
  json j = json::object();
  j["config"] = ConfigToJson(r.config);
  if (r.host_geometry) {
    const KVLayout& l = r.requested_layout;
    j["host_geometry"] = {
        {"reason",
         "the remote tier needs host storage: books-only replicas run in host "
         "mode with a small block of the same block_tokens and the same "
         "pool_blocks (hit rates depend on block counts)"},
        {"requested_layers", l.num_layers},
        {"requested_kv_heads", l.num_kv_heads},
        {"requested_head_dim", l.head_dim},
        {"requested_dtype", std::string(DTypeName(l.dtype))},
        {"requested_block_bytes", l.block_bytes()}};
  } else {
    j["host_geometry"] = nullptr;
  }
  AddRunOutcome(r, j);
  json replicas = json::array();
  for (const ReplicaStats& s : r.replicas) {
    replicas.push_back(ReplicaStatsToJson(s, bt));
  }
  j["replicas"] = replicas;
  j["total"] = ReplicaStatsToJson(r.total, bt);
  json remote = json::object();
  remote["store"] = r.config.remote;
  remote["key_namespace"] = r.key_namespace;
  remote["tokens_saved"] = r.total.remote_hit_blocks * bt;
  if (r.without_remote.has_value()) {
    json off = json::object();
    json off_replicas = json::array();
    for (const ReplicaStats& s : *r.without_remote) {
      off_replicas.push_back(ReplicaStatsToJson(s, bt));
    }
    off["replicas"] = off_replicas;
    off["total"] = ReplicaStatsToJson(r.without_remote_total, bt);
    off["steps_run"] = r.without_remote_steps;
    remote["without_remote"] = off;
    const int64_t without = r.without_remote_total.prefill_tokens_computed;
    const int64_t with = r.total.prefill_tokens_computed;
    remote["prefill_tokens_computed_without"] = without;
    remote["prefill_tokens_computed_with"] = with;
    remote["tokens_saved_vs_off"] = without - with;
    remote["prefill_compute_ratio"] = Ratio(without, with);
  }
  j["remote"] = remote;
  return j;
}

std::string FormatReplicaTable(const ReplicaRunResult& r) {
  const SimConfig& c = r.config;
  const int32_t bt = c.layout.block_tokens;
  std::string out;
  out += fmt::format(
      "kv_stress replicas: preset {}, {} replicas round-robin, remote tier "
      "{}\n",
      c.preset, c.replicas, c.remote.empty() ? "off" : c.remote);
  out += fmt::format(
      "  each: {} blocks of {} tokens ({} B), prefix caching {}, {} steps in "
      "{:.1f} s\n",
      c.pool_blocks, bt, c.layout.block_bytes(),
      c.prefix_caching ? "on" : "off", r.steps_run, r.wall_s);
  if (r.host_geometry) {
    out += fmt::format(
        "  host mode with a small block (the tier needs KV bytes; hit rates "
        "depend on block counts): {}x{}x{} {} instead of {}x{}x{} {} ({} B "
        "blocks)\n",
        c.layout.num_layers, c.layout.num_kv_heads, c.layout.head_dim,
        DTypeName(c.layout.dtype), r.requested_layout.num_layers,
        r.requested_layout.num_kv_heads, r.requested_layout.head_dim,
        DTypeName(r.requested_layout.dtype), r.requested_layout.block_bytes());
  }
  if (!r.key_namespace.empty() && c.remote != "memory") {
    out += fmt::format("  keys under namespace {}\n", r.key_namespace);
  }
  const std::string line(110, '-');
  out += line + "\n";
  out +=
      fmt::format("{:<8}{:>9}{:>12}{:>16}{:>17}{:>13}{:>13}{:>22}\n", "replica",
                  "requests", "prompt blk", "local hit", "remote hit",
                  "tier saved", "computed", "remote stamps ok");
  auto row = [&](const std::string& name, const ReplicaStats& s) {
    out += fmt::format(
        "{:<8}{:>9}{:>12}{:>16}{:>17}{:>13}{:>13}{:>22}\n", name, s.requests,
        s.prompt_blocks,
        fmt::format("{} {}", s.local_hit_blocks,
                    Percent(Ratio(s.local_hit_blocks, s.prompt_blocks))),
        fmt::format("{} {}", s.remote_hit_blocks,
                    Percent(Ratio(s.remote_hit_blocks, s.prompt_blocks))),
        s.remote_hit_blocks * bt, s.prefill_tokens_computed,
        fmt::format("{}/{}", s.remote_stamp_checks - s.remote_stamp_failures,
                    s.remote_stamp_checks));
  };
  for (size_t i = 0; i < r.replicas.size(); ++i) {
    row(fmt::format("{}", i), r.replicas[i]);
  }
  row("total", r.total);
  out += line + "\n";
  const ReplicaStats& t = r.total;
  out += fmt::format(
      "hit rate (tokens): local {}, remote {}, together {}\n",
      Percent(Ratio(double(t.local_hit_blocks) * bt, t.prompt_tokens)),
      Percent(Ratio(double(t.remote_hit_blocks) * bt, t.prompt_tokens)),
      Percent(Ratio(double(t.local_hit_blocks + t.remote_hit_blocks) * bt,
                    t.prompt_tokens)));
  if (!c.remote.empty()) {
    out += fmt::format(
        "tier: {} lookups ({} blocks asked, {} in store), {} loaded ({:.1f} "
        "MiB), {} stored, {} skipped, {} dropped, {} put failures, {} verify "
        "failures, {} timeouts, {} errors\n",
        t.lookups, t.lookup_blocks, t.store_hit_blocks, t.loaded_blocks,
        t.loaded_bytes / 1048576.0, t.stored_blocks, t.stores_skipped,
        t.store_dropped, t.store_failed, t.verify_failures, t.timeouts,
        t.errors);
  }
  if (r.without_remote.has_value()) {
    const ReplicaStats& off = r.without_remote_total;
    out += fmt::format(
        "without the tier (same run, each replica alone): local hit {}, "
        "prefill tokens computed {} -> {} with it ({} saved, {:.2f}x less)\n",
        Percent(Ratio(double(off.local_hit_blocks) * bt, off.prompt_tokens)),
        off.prefill_tokens_computed, t.prefill_tokens_computed,
        off.prefill_tokens_computed - t.prefill_tokens_computed,
        Ratio(off.prefill_tokens_computed, t.prefill_tokens_computed));
  }
  out += fmt::format("invariant checks {}, failures {}\n", r.invariant_checks,
                     r.invariant_failures);
  return out;
}

}  // namespace pagedkv::kv_stress
