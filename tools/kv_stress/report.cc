// tools/kv_stress/report.cc
#include "tools/kv_stress/report.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "cache/serving/layer_groups.h"
#include "cache/storage/kv_layout.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tools/kv_stress/mooncake_trace.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/shared_prefix_workload.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/trace_bound.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {
namespace {

using nlohmann::json;

int32_t MooncakeBlockTokens() { return MooncakeTrace::kTraceBlockTokens; }

json LengthToJson(const LengthSpec& s) {
  json j = json::object();
  j["dist"] = std::string(LengthDistName(s.dist));
  j["median"] = s.median;
  j["sigma"] = s.sigma;
  j["min_tokens"] = s.min_tokens;
  j["max_tokens"] = s.max_tokens;
  return j;
}

json ModelToJson(const ModelReport& r, bool paged) {
  json j = json::object();
  j["peak_running"] = r.peak_running;
  j["mean_running"] = r.mean_running;
  j["peak_rows"] = r.peak_rows;
  j["final_running"] = r.final_running;
  j["final_waiting"] = r.final_waiting;
  j["peak_waiting"] = r.peak_waiting;
  j["peak_utilization"] = r.peak_utilization;
  j["mean_utilization"] = r.mean_utilization;
  j["mean_internal_fragmentation"] = r.mean_fragmentation;
  j["peak_logical_tokens_ratio"] = r.peak_logical_tokens_ratio;
  j["admitted"] = r.admitted;
  j["completed"] = r.completed;
  j["preemptions"] = r.preemptions;
  j["admissions_refused"] = r.admissions_refused;
  j["refused_queue_full"] = r.refused_queue_full;
  j["refused_too_large"] = r.refused_too_large;
  j["tokens_prefilled"] = r.tokens_prefilled;
  j["tokens_decoded"] = r.tokens_decoded;
  j["tokens_per_step"] = r.tokens_per_step;
  j["tokens_per_s"] = r.tokens_per_s;
  json ledger = json::object();
  ledger["written"] = r.ledger_written;
  ledger["cropped"] = r.ledger_cropped;
  ledger["freed"] = r.ledger_freed;
  ledger["final"] = r.final_tokens;
  j["token_ledger"] = ledger;
  if (paged) {
    j["ops"] = r.ops;
    j["ops_per_s"] = r.ops_per_s;
    j["cow_copies"] = r.cow_copies;
    j["cow_bytes"] = r.cow_bytes;
    j["kv_bytes_written"] = r.kv_bytes_written;
    j["peak_shared_blocks"] = r.peak_shared_blocks;
    j["mean_shared_blocks"] = r.mean_shared_blocks;
    j["swap_preemptions"] = r.swap_preemptions;
    j["swap_fallbacks"] = r.swap_fallbacks;
    j["swap_outs"] = r.swap_outs;
    j["swap_ins"] = r.swap_ins;
    j["swapped_blocks"] = r.swapped_blocks;
    j["swapped_bytes"] = r.swapped_bytes;
    j["tokens_recomputed"] = r.tokens_recomputed;
    j["prefill_tokens_cached"] = r.prefill_tokens_cached;
    j["prefill_tokens_computed"] = r.prefill_tokens_computed;
    j["stamp_checks"] = r.stamp_checks;
    j["hit_stamp_checks"] = r.hit_stamp_checks;
    json lat = json::object();
    for (const OpLatency& l : r.latencies) {
      json o = json::object();
      o["count"] = l.count;
      o["p50_us"] = l.p50_us;
      o["p99_us"] = l.p99_us;
      o["mean_us"] = l.mean_us;
      lat[l.op] = o;
    }
    j["latency"] = lat;
  } else {
    j["ops_per_s"] = 0.0;  // Bookkeeping only: no cache operations.
  }
  return j;
}

std::string Percent(double x) { return fmt::format("{:.1f}%", 100.0 * x); }

double Ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

json PrefixStatsToJson(const PrefixCacheStats& p) {
  json j = json::object();
  j["hit_rate"] = p.hit_rate();
  j["blocks_saved"] = p.hit_blocks;
  j["evictions"] = p.evicted_blocks;
  j["queries"] = p.queries;
  j["query_tokens"] = p.query_tokens;
  j["hit_tokens"] = p.hit_tokens;
  j["query_blocks"] = p.query_blocks;
  j["hit_blocks"] = p.hit_blocks;
  j["rehit_blocks"] = p.rehit_blocks;
  j["switched_blocks"] = p.switched_blocks;
  j["stored_blocks"] = p.stored_blocks;
  j["dropped_blocks"] = p.dropped_blocks;
  j["cached_blocks_at_end"] = p.cached_blocks;
  return j;
}

json BoundToJson(const PrefixBound& b) {
  json j = json::object();
  j["span_tokens"] = MooncakeBlockTokens();
  j["spans"] = b.spans;
  j["repeat_spans"] = b.repeat_spans;
  j["distinct_spans"] = b.distinct_spans;
  j["span_hit_rate"] = b.span_hit_rate();
  j["block_tokens"] = b.block_tokens;
  j["prompt_tokens"] = b.prompt_tokens;
  j["hit_tokens"] = b.hit_tokens;
  j["token_hit_rate"] = b.token_hit_rate();
  return j;
}

// The prefix_cache object: the run's figures (all zero with caching off),
// and the comparison, bound and sweep when the experiment made them.
json PrefixCacheToJson(const SimResult& r) {
  json j = PrefixStatsToJson(r.paged.prefix);
  j["enabled"] = r.config.prefix_caching;
  j["prefill_tokens_cached"] = r.paged.prefill_tokens_cached;
  j["prefill_tokens_computed"] = r.paged.prefill_tokens_computed;
  j["hit_stamp_checks"] = r.paged.hit_stamp_checks;
  if (r.without_prefix_caching.has_value()) {
    const ModelReport& off = *r.without_prefix_caching;
    json o = json::object();
    o["hit_rate"] = off.prefix.hit_rate();
    o["prefill_tokens_computed"] = off.prefill_tokens_computed;
    o["tokens_prefilled"] = off.tokens_prefilled;
    o["tokens_decoded"] = off.tokens_decoded;
    o["tokens_per_step"] = off.tokens_per_step;
    o["mean_running"] = off.mean_running;
    o["completed"] = off.completed;
    o["preemptions"] = off.preemptions;
    o["steps_run"] = r.without_prefix_caching_steps;
    j["without_caching"] = o;
    // Prefill work off / on: how many times less the cache computes.
    j["prefill_compute_ratio"] = Ratio(double(off.prefill_tokens_computed),
                                       double(r.paged.prefill_tokens_computed));
    // Tokens served per step, on / off.
    j["throughput_ratio"] = Ratio(r.paged.tokens_per_step, off.tokens_per_step);
  }
  if (r.bound.has_value()) j["bound"] = BoundToJson(*r.bound);
  json sweep = json::array();
  for (const SweepPoint& p : r.sweep) {
    json s = PrefixStatsToJson(p.prefix);
    s["pool_blocks"] = p.pool_blocks;
    s["pool_bytes"] = p.pool_bytes;
    s["pool_gib"] = p.pool_bytes / 1073741824.0;
    s["prefill_tokens_computed"] = p.prefill_tokens_computed;
    s["preemptions"] = p.preemptions;
    s["completed"] = p.completed;
    s["steps_run"] = p.steps_run;
    s["wall_s"] = p.wall_s;
    s["invariant_failures"] = p.invariant_failures;
    sweep.push_back(s);
  }
  j["sweep"] = sweep;
  return j;
}

constexpr double kGiB = 1073741824.0;

// The kv_storage object: how blocks store K/V and how many a GiB holds, and
// on a quantized layout the unquantized run of the same pool bytes with the
// ratios (quantized / unquantized) of blocks, peak running requests and
// tokens per step.
json KVStorageToJson(const SimResult& r) {
  const KVLayout l = r.config.block_layout();
  json j = json::object();
  j["storage"] = std::string(KVStorageName(l.storage));
  j["block_bytes"] = l.block_bytes();
  j["blocks_per_gib"] = std::floor(kGiB / double(l.block_bytes()));
  if (!r.unquantized.has_value()) return j;
  const ModelReport& u = *r.unquantized;
  json o = json::object();
  o["dtype"] = std::string(DTypeName(l.dtype));
  o["block_bytes"] = r.unquantized_block_bytes;
  o["blocks_per_gib"] = std::floor(kGiB / double(r.unquantized_block_bytes));
  o["pool_blocks"] = r.unquantized_pool_blocks;
  o["peak_running"] = u.peak_running;
  o["mean_running"] = u.mean_running;
  o["tokens_per_step"] = u.tokens_per_step;
  o["completed"] = u.completed;
  o["preemptions"] = u.preemptions;
  o["steps_run"] = r.unquantized_steps;
  j["unquantized"] = o;
  j["blocks_ratio"] =
      Ratio(double(r.config.pool_blocks), double(r.unquantized_pool_blocks));
  j["peak_running_ratio"] =
      Ratio(double(r.paged.peak_running), double(u.peak_running));
  j["mean_running_ratio"] = Ratio(r.paged.mean_running, u.mean_running);
  j["throughput_ratio"] = Ratio(r.paged.tokens_per_step, u.tokens_per_step);
  return j;
}

}  // namespace

std::string FormatKVStorageTable(const SimResult& r) {
  if (!r.unquantized.has_value()) return "";
  const KVLayout l = r.config.block_layout();
  const ModelReport& p = r.paged;
  const ModelReport& u = *r.unquantized;
  std::string out = "\n";
  const std::string line(62, '-');
  auto row = [&out](const std::string& name, const std::string& a,
                    const std::string& b) {
    out += fmt::format("{:<34}{:>14}{:>14}\n", name, a, b);
  };
  auto num = [](auto v) { return fmt::format("{}", v); };
  row("KV blocks (paged, same bytes)", std::string(KVStorageName(l.storage)),
      std::string(DTypeName(l.dtype)));
  out += line + "\n";
  row("block bytes", num(l.block_bytes()), num(r.unquantized_block_bytes));
  row("blocks per GiB", num(std::floor(kGiB / double(l.block_bytes()))),
      num(std::floor(kGiB / double(r.unquantized_block_bytes))));
  row("pool blocks", num(r.config.pool_blocks), num(r.unquantized_pool_blocks));
  row("peak running", num(p.peak_running), num(u.peak_running));
  row("mean running", fmt::format("{:.1f}", p.mean_running),
      fmt::format("{:.1f}", u.mean_running));
  row("tokens / step", fmt::format("{:.1f}", p.tokens_per_step),
      fmt::format("{:.1f}", u.tokens_per_step));
  row("completed", num(p.completed), num(u.completed));
  row("preemptions", num(p.preemptions), num(u.preemptions));
  out += line + "\n";
  out += fmt::format(
      "capacity {} / {}: blocks {:.2f}x  peak running {:.2f}x  tokens / "
      "step {:.2f}x\n",
      KVStorageName(l.storage), DTypeName(l.dtype),
      Ratio(double(r.config.pool_blocks), double(r.unquantized_pool_blocks)),
      Ratio(double(p.peak_running), double(u.peak_running)),
      Ratio(p.tokens_per_step, u.tokens_per_step));
  return out;
}

json ConfigToJson(const SimConfig& c) {
  json j = json::object();
  j["preset"] = c.preset;
  j["seed"] = c.workload.seed;
  j["steps"] = c.steps;
  j["duration_s"] = c.duration_s;
  j["layers"] = c.layout.num_layers;
  j["kv_heads"] = c.layout.num_kv_heads;
  j["head_dim"] = c.layout.head_dim;
  j["dtype"] = std::string(DTypeName(c.layout.dtype));
  j["kv_dtype"] = std::string(KVStorageName(c.layout.storage));
  j["block_tokens"] = c.layout.block_tokens;
  j["block_bytes"] = c.block_layout().block_bytes();
  j["pool_blocks"] = c.pool_blocks;
  j["pool_bytes"] = c.pool_bytes();
  // Tokens of every layer the pool's bytes hold (with layer groups a block
  // holds one group's layers, so the pool has more blocks than this / 16).
  j["capacity_tokens"] = c.contiguous_capacity_tokens();
  json groups = json::array();
  for (const LayerGroup& g : c.layer_groups) {
    groups.push_back(
        {{"layers", g.num_layers}, {"sliding_window", g.sliding_window}});
  }
  j["layer_groups"] = std::move(groups);
  j["max_len"] = c.max_len;
  j["max_running"] = c.max_running;
  j["max_waiting"] = c.max_waiting;
  j["max_prefill_tokens_per_step"] = c.max_prefill_tokens_per_step;
  j["watermark_pct"] = c.watermark_pct;
  j["policy"] = std::string(PolicyName(c.policy));
  j["model"] = c.model;
  j["storage"] = std::string(StorageModeName(c.storage));
  j["admission"] = std::string(AdmissionModeName(c.admission));
  j["preemption"] = std::string(PreemptionModeName(c.preemption));
  j["host_blocks"] = c.swap_tier_blocks();
  j["trace"] = c.trace_path;
  j["trace_step_ms"] = c.trace_step_ms;
  j["trace_max_requests"] = c.trace_max_requests;
  j["prefix_caching"] = c.prefix_caching;
  j["compare_without_prefix_caching"] = c.compare_without_prefix_caching;
  j["replicas"] = c.replicas;
  j["remote"] = c.remote;
  j["compare_without_remote"] = c.compare_without_remote;
  json sweep = json::array();
  for (int32_t b : c.pool_sweep) sweep.push_back(b);
  j["pool_sweep"] = sweep;
  if (c.sessions.has_value()) {
    const SharedPrefixOptions& o = *c.sessions;
    json s = json::object();
    s["num_system_prompts"] = o.num_system_prompts;
    s["system_prompt_tokens"] = o.system_prompt_tokens;
    s["sessions_per_step"] = o.sessions_per_step;
    s["min_turns"] = o.min_turns;
    s["max_turns"] = o.max_turns;
    s["user"] = LengthToJson(o.user);
    s["output"] = LengthToJson(o.output);
    s["think_steps"] = o.think_steps;
    j["sessions"] = s;
  }
  j["check_every"] = c.check_every;
  j["arrivals_per_step"] = c.workload.arrivals_per_step;
  j["prompt"] = LengthToJson(c.workload.prompt);
  j["output"] = LengthToJson(c.workload.output);
  j["beam_pct"] = c.workload.beam_pct;
  j["fork_pct"] = c.workload.fork_pct;
  j["crop_pct"] = c.workload.crop_pct;
  j["beam_width"] = c.workload.beam_width;
  j["fork_samples"] = c.workload.fork_samples;
  j["crop_window"] = c.workload.crop_window;
  return j;
}

json ToJson(const SimResult& r) {
  json j = json::object();
  j["config"] = ConfigToJson(r.config);
  j["paged"] = ModelToJson(r.paged, true);
  j["contiguous"] = ModelToJson(r.contiguous, false);
  AddRunOutcome(r, j);
  j["capacity_ratio"] = r.capacity_ratio;
  j["prefix_cache"] = PrefixCacheToJson(r);
  j["kv_storage"] = KVStorageToJson(r);
  return j;
}

std::string FormatPrefixTable(const SimResult& r) {
  const PrefixCacheStats& on = r.paged.prefix;
  if (!r.config.prefix_caching) return "";
  std::string out = "\n";
  const std::string line(62, '-');
  auto row = [&out](const std::string& name, const std::string& a,
                    const std::string& b) {
    out += fmt::format("{:<34}{:>14}{:>14}\n", name, a, b);
  };
  const bool off = r.without_prefix_caching.has_value();
  out += fmt::format("{:<34}{:>14}{:>14}\n", "prefix cache (paged)", "on",
                     off ? "off" : "");
  out += line + "\n";
  const ModelReport& p = r.paged;
  const ModelReport* q = off ? &*r.without_prefix_caching : nullptr;
  auto both = [&](const std::string& name, int64_t a, int64_t b) {
    row(name, fmt::format("{}", a), q ? fmt::format("{}", b) : "");
  };
  row("hit rate (hit / prompt tokens)", Percent(on.hit_rate()),
      q ? Percent(q->prefix.hit_rate()) : "");
  both("blocks saved (prompt hits)", on.hit_blocks,
       q ? q->prefix.hit_blocks : 0);
  both("blocks rehit at readmission", on.rehit_blocks,
       q ? q->prefix.rehit_blocks : 0);
  both("evictions (cached blocks reused)", on.evicted_blocks,
       q ? q->prefix.evicted_blocks : 0);
  both("prefill tokens served", p.tokens_prefilled,
       q ? q->tokens_prefilled : 0);
  both("prefill tokens computed", p.prefill_tokens_computed,
       q ? q->prefill_tokens_computed : 0);
  row("tokens / step", fmt::format("{:.1f}", p.tokens_per_step),
      q ? fmt::format("{:.1f}", q->tokens_per_step) : "");
  both("completed", p.completed, q ? q->completed : 0);
  both("preemptions", p.preemptions, q ? q->preemptions : 0);
  out += line + "\n";
  if (q != nullptr) {
    out += fmt::format(
        "prefill computed off / on: {:.2f}x   tokens / step on / off: "
        "{:.2f}x\n",
        Ratio(double(q->prefill_tokens_computed),
              double(p.prefill_tokens_computed)),
        Ratio(p.tokens_per_step, q->tokens_per_step));
  }
  if (p.hit_stamp_checks > 0) {
    out += fmt::format("hit blocks' stamps read at admission: {}\n",
                       p.hit_stamp_checks);
  }
  if (r.bound.has_value()) {
    const PrefixBound& b = *r.bound;
    out += fmt::format(
        "infinite-cache bound: {} of the trace's {}-token blocks ({} of "
        "{}); {} of prompt tokens in {}-token blocks (measured: {})\n",
        Percent(b.span_hit_rate()), MooncakeBlockTokens(), b.repeat_spans,
        b.spans, Percent(b.token_hit_rate()), b.block_tokens,
        Percent(on.hit_rate()));
  }
  if (!r.sweep.empty()) {
    out += fmt::format("{:>12}{:>12}{:>12}{:>14}{:>12}{:>12}\n", "pool GiB",
                       "blocks", "hit rate", "blocks saved", "evictions",
                       "preempt");
    for (const SweepPoint& s : r.sweep) {
      out += fmt::format("{:>12.1f}{:>12}{:>12}{:>14}{:>12}{:>12}\n",
                         s.pool_bytes / 1073741824.0, s.pool_blocks,
                         Percent(s.prefix.hit_rate()), s.prefix.hit_blocks,
                         s.prefix.evicted_blocks, s.preemptions);
    }
  }
  return out;
}

std::string FormatTable(const SimResult& r) {
  const SimConfig& c = r.config;
  const ModelReport& p = r.paged;
  const ModelReport& q = r.contiguous;
  std::string out;
  out += fmt::format(
      "kv_stress  preset={} seed={} steps={} wall={:.1f}s policy={}\n",
      c.preset, c.workload.seed, r.steps_run, r.wall_s, PolicyName(c.policy));
  out += fmt::format(
      "manager    storage={} admission={} preemption={}{}  model={}  "
      "source={}\n",
      StorageModeName(c.storage), AdmissionModeName(c.admission),
      PreemptionModeName(c.preemption),
      c.preemption == PreemptionMode::kSwap
          ? fmt::format(" (host tier {} blocks)", c.swap_tier_blocks())
          : std::string(),
      c.model.empty() ? "custom" : c.model,
      c.trace_path.empty() ? std::string("generator") : c.trace_path);
  out += fmt::format(
      "geometry   {}  block={} KiB  pool={} blocks = {:.0f} MiB = {} tokens  "
      "max_len={}\n",
      c.layout.ToString(), c.block_layout().block_bytes() / 1024, c.pool_blocks,
      c.pool_bytes() / 1048576.0, c.contiguous_capacity_tokens(), c.max_len);
  if (!c.layer_groups.empty()) {
    std::string groups;
    for (const LayerGroup& g : c.layer_groups) {
      if (!groups.empty()) groups += ", ";
      groups += g.is_window() ? fmt::format("window {}", g.sliding_window)
                              : std::string("full");
    }
    out += fmt::format(
        "groups     {} groups of {} layers ({}); a block holds one group's "
        "layers; the contiguous model keeps every layer\n",
        c.layer_groups.size(), c.layer_groups[0].num_layers, groups);
  }
  out += "\n";
  const std::string line(62, '-');
  out += fmt::format("{:<34}{:>14}{:>14}\n", "", "paged", "contiguous");
  out += line + "\n";
  auto row = [&out](const std::string& name, const std::string& a,
                    const std::string& b) {
    out += fmt::format("{:<34}{:>14}{:>14}\n", name, a, b);
  };
  auto num = [](int64_t x) { return fmt::format("{}", x); };
  auto fix = [](double x, int digits) {
    return fmt::format("{:.{}f}", x, digits);
  };
  row("peak running requests", num(p.peak_running), num(q.peak_running));
  row("mean running requests", fix(p.mean_running, 1), fix(q.mean_running, 1));
  row("peak running rows (beams/samples)", num(p.peak_rows), num(q.peak_rows));
  row("peak utilization", Percent(p.peak_utilization),
      Percent(q.peak_utilization));
  row("mean utilization", Percent(p.mean_utilization),
      Percent(q.mean_utilization));
  row("mean internal fragmentation", Percent(p.mean_fragmentation),
      Percent(q.mean_fragmentation));
  row("waiting at end / peak",
      fmt::format("{} / {}", p.final_waiting, p.peak_waiting),
      fmt::format("{} / {}", q.final_waiting, q.peak_waiting));
  row("admitted (incl. recomputes)", num(p.admitted), num(q.admitted));
  row("completed", num(p.completed), num(q.completed));
  row("preemptions (swapped)",
      fmt::format("{} ({})", p.preemptions, p.swap_preemptions),
      num(q.preemptions));
  row("admissions refused (queue/size)",
      fmt::format("{}/{}", p.refused_queue_full, p.refused_too_large),
      fmt::format("{}/{}", q.refused_queue_full, q.refused_too_large));
  row("tokens prefilled", num(p.tokens_prefilled), num(q.tokens_prefilled));
  row("tokens decoded", num(p.tokens_decoded), num(q.tokens_decoded));
  row("tokens / step", fix(p.tokens_per_step, 1), fix(q.tokens_per_step, 1));
  row("tokens / s (run wall clock)", fix(p.tokens_per_s, 0),
      fix(q.tokens_per_s, 0));
  row("tokens recomputed", num(p.tokens_recomputed), "-");
  row("rows swapped out / in", fmt::format("{} / {}", p.swap_outs, p.swap_ins),
      "-");
  row("swapped blocks / MiB",
      fmt::format("{} / {:.1f}", p.swapped_blocks, p.swapped_bytes / 1048576.0),
      "-");
  row("manager ops / s", fix(p.ops_per_s, 0), "-");
  row("copy-on-write copies", num(p.cow_copies), "-");
  row("copy-on-write MiB", fix(p.cow_bytes / 1048576.0, 1), "-");
  row("blocks shared (peak / mean)",
      fmt::format("{} / {:.0f}", p.peak_shared_blocks, p.mean_shared_blocks),
      "-");
  out += line + "\n";
  out += fmt::format(
      "capacity ratio (peak running, paged / contiguous): "
      "{:.2f}x\n",
      r.capacity_ratio);
  out += fmt::format("invariant checks: {}  failures: {}  stamps read: {}",
                     r.invariant_checks, r.invariant_failures, p.stamp_checks);
  if (r.invariant_failures > 0) {
    out += fmt::format("  (first at step {})", r.first_failure_step);
  }
  out += "\n";
  out += FormatPrefixTable(r);
  out += FormatKVStorageTable(r);
  out += "\n";
  out += fmt::format("{:<20}{:>12}{:>12}{:>12}{:>12}\n", "paged op latency",
                     "count", "p50 us", "p99 us", "mean us");
  for (const OpLatency& l : p.latencies) {
    out += fmt::format("{:<20}{:>12}{:>12.2f}{:>12.2f}{:>12.2f}\n", l.op,
                       l.count, l.p50_us, l.p99_us, l.mean_us);
  }
  return out;
}

std::string RenderSvg(const SimResult& r) {
  constexpr double kWidth = 1000, kHeight = 680;
  constexpr double kLeft = 70, kRight = 170, kTop = 75, kPanel = 250, kGap = 60;
  const double plot_w = kWidth - kLeft - kRight;
  const auto& series = r.series;
  const int64_t n = static_cast<int64_t>(series.size());
  const double max_step = std::max<double>(1.0, double(r.steps_run));
  int32_t max_running = 1;
  for (const TimePoint& t : series) {
    max_running =
        std::max({max_running, t.paged_running, t.contiguous_running});
  }
  // At most ~1000 points per line.
  const int64_t stride = std::max<int64_t>(1, n / 1000);

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
      "height=\"{1}\" viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n",
      kWidth, kHeight);
  svg += fmt::format(
      "<text x=\"{}\" y=\"28\" font-size=\"15\">kv_stress preset={} seed={}: "
      "paged pool vs contiguous max_len={} reservation, same {:.0f} "
      "MiB</text>\n",
      kLeft, r.config.preset, r.config.workload.seed, r.config.max_len,
      r.config.pool_bytes() / 1048576.0);
  svg += fmt::format(
      "<text x=\"{}\" y=\"48\" fill=\"#444\">peak running requests {} vs "
      "{} ({:.2f}x); mean utilization {:.1f}% vs {:.1f}%; {} preemptions "
      "(paged)</text>\n",
      kLeft, r.paged.peak_running, r.contiguous.peak_running, r.capacity_ratio,
      100 * r.paged.mean_utilization, 100 * r.contiguous.mean_utilization,
      r.paged.preemptions);

  struct Line {
    const char* name;
    const char* color;
    double (*value)(const TimePoint&);
  };
  auto panel = [&](int index, const std::string& title, double y_max,
                   const std::string& y_unit, const Line* lines,
                   int num_lines) {
    const double top = kTop + index * (kPanel + kGap);
    const double bottom = top + kPanel;
    svg +=
        fmt::format("<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>\n",
                    kLeft, top - 8, title);
    // Axes and grid.
    for (int k = 0; k <= 4; ++k) {
      const double y = bottom - kPanel * k / 4.0;
      svg += fmt::format(
          "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" "
          "stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{:.1f}\" "
          "text-anchor=\"end\">{:.0f}{}</text>\n",
          kLeft, y, kLeft + plot_w, y, kLeft - 6, y + 4, y_max * k / 4.0,
          y_unit);
    }
    for (int k = 0; k <= 5; ++k) {
      const double x = kLeft + plot_w * k / 5.0;
      svg += fmt::format(
          "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:.0f}</text>\n",
          x, bottom + 16, max_step * k / 5.0);
    }
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n"
        "<line x1=\"{0}\" y1=\"{2}\" x2=\"{3}\" y2=\"{2}\" stroke=\"black\"/>\n"
        "<text x=\"{4}\" y=\"{5}\" text-anchor=\"middle\">step</text>\n",
        kLeft, top, bottom, kLeft + plot_w, kLeft + plot_w / 2, bottom + 32);
    for (int li = 0; li < num_lines; ++li) {
      std::string points;
      for (int64_t i = 0; i < n; i += stride) {
        const TimePoint& t = series[i];
        const double x = kLeft + plot_w * t.step / std::max(1.0, max_step);
        const double v = std::min(lines[li].value(t), y_max);
        const double y = bottom - kPanel * v / y_max;
        absl::StrAppend(&points, fmt::format("{:.1f},{:.1f} ", x, y));
      }
      svg += fmt::format(
          "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" "
          "points=\"{}\"/>\n",
          lines[li].color, points);
      // Legend.
      const double ly = top + 20 + 20 * li;
      svg += fmt::format(
          "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" "
          "stroke-width=\"3\"/>\n<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
          kLeft + plot_w + 15, ly, kLeft + plot_w + 40, lines[li].color,
          kLeft + plot_w + 46, ly + 4, lines[li].name);
    }
  };
  const Line util_lines[] = {
      {"paged", "#1f77b4",
       [](const TimePoint& t) { return 100.0 * t.paged_utilization; }},
      {"contiguous", "#d62728",
       [](const TimePoint& t) { return 100.0 * t.contiguous_utilization; }},
  };
  const Line running_lines[] = {
      {"paged", "#1f77b4",
       [](const TimePoint& t) { return double(t.paged_running); }},
      {"contiguous", "#d62728",
       [](const TimePoint& t) { return double(t.contiguous_running); }},
  };
  panel(0, "utilization (live tokens / pool capacity)", 100.0, "%", util_lines,
        2);
  // A round axis top: 4 grid steps of a round number.
  double tick = 1;
  for (double base = 1; 4 * tick < max_running; base *= 10) {
    for (double m : {1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 8.0}) {
      tick = m * base;
      if (4 * tick >= max_running) break;
    }
  }
  const double y_running = 4 * tick;
  panel(1, "running requests", y_running, "", running_lines, 2);
  svg += "</svg>\n";
  return svg;
}

std::string RenderSweepSvg(const SimResult& r) {
  constexpr double kWidth = 1000, kHeight = 560;
  constexpr double kLeft = 80, kRight = 230, kTop = 80, kPlotH = 400;
  const double plot_w = kWidth - kLeft - kRight;
  // Pool sizes double from point to point in a typical sweep: a log axis,
  // ticked at the sizes swept.
  double min_gib = 0, max_gib = 0;
  for (const SweepPoint& p : r.sweep) {
    const double gib = p.pool_bytes / 1073741824.0;
    min_gib = min_gib == 0 ? gib : std::min(min_gib, gib);
    max_gib = std::max(max_gib, gib);
  }
  const double span = std::log2(std::max(max_gib / min_gib, 2.0));
  auto x_of = [&](double gib) {
    return kLeft + 20 + (plot_w - 40) * std::log2(gib / min_gib) / span;
  };
  auto y_of = [&](double rate) { return kTop + kPlotH * (1.0 - rate); };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
      "height=\"{1}\" viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n",
      kWidth, kHeight);
  const std::string source =
      r.config.trace_path.empty()
          ? std::string("generator")
          : r.config.trace_path.substr(r.config.trace_path.rfind('/') + 1);
  svg += fmt::format(
      "<text x=\"{}\" y=\"28\" font-size=\"15\">kv_stress preset={}: "
      "prefix-cache hit rate vs pool size ({}, {}, {}-token blocks)</text>\n",
      kLeft, r.config.preset, source,
      r.config.model.empty() ? std::string("custom geometry") : r.config.model,
      r.config.layout.block_tokens);
  svg += fmt::format(
      "<text x=\"{}\" y=\"48\" fill=\"#444\">hit rate = prompt tokens "
      "served from the cache / prompt tokens; books-only replays, one per "
      "pool size</text>\n",
      kLeft);
  for (int k = 0; k <= 5; ++k) {
    const double y = y_of(k / 5.0);
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" "
        "stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{:.1f}\" "
        "text-anchor=\"end\">{}%</text>\n",
        kLeft, y, kLeft + plot_w, y, kLeft - 6, y + 4, 20 * k);
  }
  for (const SweepPoint& p : r.sweep) {
    const double gib = p.pool_bytes / 1073741824.0;
    svg += fmt::format(
        "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n",
        x_of(gib), kTop + kPlotH + 16, gib);
  }
  svg += fmt::format(
      "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" "
      "stroke=\"black\"/>\n<line x1=\"{0}\" y1=\"{2}\" x2=\"{3}\" "
      "y2=\"{2}\" stroke=\"black\"/>\n<text x=\"{4}\" y=\"{5}\" "
      "text-anchor=\"middle\">pool size (GiB of KV, log scale)</text>\n<text "
      "x=\"{6}\" y=\"{7}\" text-anchor=\"middle\" transform=\"rotate(-90 "
      "{6} {7})\">hit rate</text>\n",
      kLeft, kTop, kTop + kPlotH, kLeft + plot_w, kLeft + plot_w / 2,
      kTop + kPlotH + 36, kLeft - 50, kTop + kPlotH / 2);
  struct Legend {
    std::string name;
    std::string color;
    bool dashed;
  };
  std::vector<Legend> legend;
  if (r.bound.has_value()) {
    const struct {
      double rate;
      std::string name;
      const char* color;
    } bounds[] = {
        {r.bound->span_hit_rate(),
         fmt::format("bound: {} of {}-token blocks",
                     Percent(r.bound->span_hit_rate()), MooncakeBlockTokens()),
         "#d62728"},
        {r.bound->token_hit_rate(),
         fmt::format("bound in tokens: {}", Percent(r.bound->token_hit_rate())),
         "#ff7f0e"},
    };
    for (const auto& b : bounds) {
      svg += fmt::format(
          "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" "
          "stroke=\"{}\" stroke-width=\"1.5\" "
          "stroke-dasharray=\"6,4\"/>\n",
          kLeft, y_of(b.rate), kLeft + plot_w, y_of(b.rate), b.color);
      legend.push_back({b.name, b.color, true});
    }
  }
  std::string points;
  for (const SweepPoint& p : r.sweep) {
    absl::StrAppend(&points, fmt::format("{:.1f},{:.1f} ",
                                         x_of(p.pool_bytes / 1073741824.0),
                                         y_of(p.prefix.hit_rate())));
  }
  svg += fmt::format(
      "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" "
      "points=\"{}\"/>\n",
      points);
  for (const SweepPoint& p : r.sweep) {
    const double x = x_of(p.pool_bytes / 1073741824.0);
    const double y = y_of(p.prefix.hit_rate());
    svg += fmt::format(
        "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"#1f77b4\"/>\n"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" "
        "fill=\"#1f77b4\">{}</text>\n",
        x, y, x, y - 9, Percent(p.prefix.hit_rate()));
  }
  legend.insert(legend.begin(), {"measured hit rate", "#1f77b4", false});
  for (size_t i = 0; i < legend.size(); ++i) {
    const double ly = kTop + 20 + 22 * static_cast<double>(i);
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" "
        "stroke=\"{3}\" stroke-width=\"3\"{4}/>\n<text x=\"{5}\" "
        "y=\"{6}\">{7}</text>\n",
        kLeft + plot_w + 15, ly, kLeft + plot_w + 40, legend[i].color,
        legend[i].dashed ? " stroke-dasharray=\"6,4\"" : "",
        kLeft + plot_w + 46, ly + 4, legend[i].name);
  }
  svg += "</svg>\n";
  return svg;
}

namespace {

// The status of a failed open of `path` from errno.
absl::Status OpenError(const std::string& path) {
  const int err = errno;
  const std::string message =
      absl::StrCat("cannot open ", path, " for writing: ", std::strerror(err));
  if (err == EACCES || err == EPERM || err == EROFS) {
    return absl::PermissionDeniedError(message);
  }
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
  return absl::InternalError(message);
}

}  // namespace

absl::StatusOr<OutputFile> OutputFile::Open(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return OpenError(path);
  return OutputFile(path, f);
}

OutputFile::OutputFile(OutputFile&& other) noexcept
    : path_(std::move(other.path_)),
      file_(std::exchange(other.file_, nullptr)) {}

OutputFile& OutputFile::operator=(OutputFile&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, nullptr);
  }
  return *this;
}

OutputFile::~OutputFile() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status OutputFile::Write(const std::string& contents) {
  PKV_CHECK(file_ != nullptr, "%s was already written", path_);
  std::FILE* f = std::exchange(file_, nullptr);
  const size_t written = std::fwrite(contents.data(), 1, contents.size(), f);
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (written != contents.size() || !closed) {
    return absl::InternalError(absl::StrCat(
        "cannot write ", path_, ": ",
        std::strerror(written != contents.size() ? write_errno : errno)));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  absl::StatusOr<OutputFile> f = OutputFile::Open(path);
  if (!f.ok()) return f.status();
  return f->Write(contents);
}

}  // namespace pagedkv::kv_stress
