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
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "base/check.h"
#include "cache/cache_stats.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tools/kv_stress/contiguous_model.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/sim_metrics.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress {

absl::Status SimConfig::Validate() const {
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  if (pool_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pool_blocks %d must be > 0", pool_blocks));
  }
  if (steps <= 0 && duration_s <= 0) {
    return absl::InvalidArgumentError("need steps > 0 or duration_s > 0");
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
  if (int64_t{w.prompt.max_tokens} + w.output.max_tokens > max_len) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_len %d is below max prompt %d + max output %d",
                        max_len, w.prompt.max_tokens, w.output.max_tokens));
  }
  if (max_running < 1 || max_waiting < 0 || max_prefill_tokens_per_step < 1 ||
      watermark_pct < 0 || check_every < 0) {
    return absl::InvalidArgumentError("bad scheduler limits");
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
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown preset \"", std::string(name), "\" (chat|beam|long|tiny)"));
}

namespace {

// The simulator's private parts (sim_metrics.h, contiguous_model.h).
using internal::Checker;
using internal::Clock;
using internal::ContiguousModel;
using internal::kNumOps;
using internal::kOpCrop;
using internal::kOpDecode;
using internal::kOpNames;
using internal::kOpPrefill;
using internal::kOpReorder;
using internal::kOpRepeat;
using internal::kOpReset;
using internal::LatencySamples;
using internal::OpKind;
using internal::Sampler;

absl::Status Unexpected(std::string_view op, const absl::Status& s) {
  return absl::InternalError(
      absl::StrCat(std::string(op), " failed: ", s.ToString()));
}

// ---------------------------------------------------------------------------
// The paged server: real caches on one shared pool.
class PagedServer {
 public:
  PagedServer(const SimConfig& config, KVPool* pool, ModelReport* report)
      : config_(config),
        pool_(pool),
        report_(report),
        beam_rng_(config.workload.seed ^ 0x9e3779b97f4a7c15ULL) {
    const int64_t watermark = static_cast<int64_t>(
        std::ceil(pool->num_blocks() * config.watermark_pct / 100.0));
    watermark_blocks_ = static_cast<int32_t>(std::max<int64_t>(1, watermark));
  }

  // Makes the reusable input tensors.
  absl::Status Init() {
    const KVLayout& l = config_.layout;
    const int64_t max_rows = std::max(
        {1, config_.workload.beam_width, config_.workload.fork_samples});
    const int64_t max_prompt = config_.workload.prompt.max_tokens;
    for (Tensor* t : {&prefill_key_, &prefill_value_}) {
      absl::StatusOr<Tensor> made =
          Full(l.dtype, Shape({1, l.num_kv_heads, max_prompt, l.head_dim}),
               t == &prefill_key_ ? 0.25 : -0.25);
      if (!made.ok()) return made.status();
      *t = std::move(*made);
    }
    for (Tensor* t : {&decode_key_, &decode_value_}) {
      absl::StatusOr<Tensor> made =
          Full(l.dtype, Shape({max_rows, l.num_kv_heads, 1, l.head_dim}),
               t == &decode_key_ ? 0.5 : -0.5);
      if (!made.ok()) return made.status();
      *t = std::move(*made);
    }
    return absl::OkStatus();
  }

  void Arrive(const Request& r) {
    if (static_cast<int32_t>(waiting_.size()) >= config_.max_waiting) {
      ++report_->refused_queue_full;
      return;
    }
    waiting_.push_back(r);
  }

  absl::Status Step(int64_t step) {
    step_ = step;
    if (absl::Status s = Admit(); !s.ok()) return s;
    if (absl::Status s = Decode(); !s.ok()) return s;
    // Compact the running list (preserving admission order).
    running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                   running_.end());
    return absl::OkStatus();
  }

  // Samples utilization and the rest at the end of a step.
  void Sample(Sampler& sampler, double* utilization, int32_t* running) {
    const int64_t bt = config_.layout.block_tokens;
    const double capacity = double(pool_->num_blocks()) * bt;
    int64_t live = 0;
    int64_t logical = 0;
    int32_t rows = 0;
    std::vector<std::pair<int32_t, int32_t>> slots;  // (block id, written)
    for (const auto& s : running_) {
      rows += s->rows;
      logical += int64_t{s->rows} * s->length;
      absl::StatusOr<std::optional<KVView>> view = s->cache->Get(0);
      if (!view.ok() || !view->has_value()) continue;
      const KVView& kv = **view;
      slots.clear();
      for (const BlockTable& table : kv.tables()) {
        for (int32_t i = 0; i < table.num_blocks(); ++i) {
          const int64_t lo = std::clamp<int64_t>(kv.start() - i * bt, 0, bt);
          const int64_t hi =
              std::clamp<int64_t>(kv.start() + kv.length() - i * bt, 0, bt);
          slots.emplace_back(table[i].value(), static_cast<int32_t>(hi - lo));
        }
      }
      std::sort(slots.begin(), slots.end());
      slots.erase(std::unique(slots.begin(), slots.end(),
                              [](const auto& a, const auto& b) {
                                return a.first == b.first;
                              }),
                  slots.end());
      for (const auto& [id, n] : slots) live += n;
    }
    const PoolStats ps = pool_->books().stats();
    const double allocated = double(ps.num_used_blocks) * bt;
    const double util = live / capacity;
    const double frag = allocated > 0 ? (allocated - live) / allocated : 0.0;
    sampler.Add(*report_, static_cast<int32_t>(running_.size()), rows,
                static_cast<int32_t>(waiting_.size()), util, frag,
                logical / capacity, ps.num_shared_blocks);
    *utilization = util;
    *running = static_cast<int32_t>(running_.size());
  }

  // Runs the library's CheckInvariants (aborts on a breach) and the counted
  // consistency checks.
  void Check(Checker& checker) {
    ++checker.checks;
    pool_->books().CheckInvariants();
    int64_t logical = 0;
    int64_t blocks = 0;
    const int64_t bt = config_.layout.block_tokens;
    for (const auto& s : running_) {
      s->cache->CheckInvariants();
      logical += int64_t{s->rows} * s->length;
      const std::optional<int64_t> batch = s->cache->batch_size();
      checker.Expect(
          batch.has_value() && *batch == s->rows, step_,
          absl::StrFormat("request %d: batch %d, books say %d", s->request.id,
                          batch.value_or(-1), s->rows));
      for (int32_t layer = 0; layer < config_.layout.num_layers; ++layer) {
        absl::StatusOr<int64_t> len = s->cache->GetSeqLength(layer);
        checker.Expect(
            len.ok() && *len == s->length, step_,
            absl::StrFormat("request %d layer %d: length %d, books say %d",
                            s->request.id, layer, len.ok() ? *len : -1,
                            s->length));
      }
      const CacheStats cs = s->cache->stats();
      blocks += cs.blocks_in_use;
      const int64_t per_row = (s->length + bt - 1) / bt;
      checker.Expect(
          cs.blocks_in_use >= per_row &&
              cs.blocks_in_use <= int64_t{s->rows} * (per_row + 1),
          step_,
          absl::StrFormat("request %d: %d blocks for %d rows x %d tokens",
                          s->request.id, cs.blocks_in_use, s->rows, s->length));
    }
    const int64_t expected = report_->ledger_written - report_->ledger_cropped -
                             report_->ledger_freed;
    checker.Expect(logical == expected, step_,
                   absl::StrFormat("paged ledger: %d tokens live, ledger %d",
                                   logical, expected));
    const PoolStats ps = pool_->books().stats();
    checker.Expect(blocks == ps.num_used_blocks, step_,
                   absl::StrFormat("caches hold %d blocks, pool used %d",
                                   blocks, ps.num_used_blocks));
    checker.Expect(ps.num_free_blocks + ps.num_used_blocks == ps.num_blocks,
                   step_, "pool free + used != total");
  }

  // Fills in the end-of-run figures.
  void Finish() {
    int64_t logical = 0;
    for (const auto& s : running_) {
      const CacheStats cs = s->cache->stats();
      report_->cow_copies += cs.cow_copies;
      report_->cow_bytes += cs.cow_bytes;
      report_->kv_bytes_written += cs.bytes_written;
      logical += int64_t{s->rows} * s->length;
    }
    report_->final_tokens = logical;
    report_->final_running = static_cast<int32_t>(running_.size());
    report_->final_waiting = static_cast<int32_t>(waiting_.size());
    report_->admissions_refused =
        report_->refused_queue_full + report_->refused_too_large;
    for (int op = 0; op < kNumOps; ++op) {
      std::vector<int64_t>& v = latency_ns_[op].samples;
      OpLatency lat;
      lat.op = std::string(kOpNames[op]);
      lat.count = latency_ns_[op].count;
      report_->ops += lat.count;
      if (!v.empty()) {
        lat.mean_us = latency_ns_[op].sum_ns / lat.count / 1e3;
        auto at = [&v](double q) {
          const size_t k = std::min(v.size() - 1, size_t(q * v.size()));
          std::nth_element(v.begin(), v.begin() + k, v.end());
          return v[k] / 1e3;
        };
        lat.p50_us = at(0.50);
        lat.p99_us = at(0.99);
      }
      report_->latencies.push_back(lat);
    }
  }

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }

 private:
  struct Seq {
    Request request;
    std::unique_ptr<DynamicKVCache> cache;
    int64_t admission_seq = 0;
    int32_t rows = 1;
    int32_t length = 0;  // Tokens per row in every layer (the books).
    int32_t decoded = 0;
  };

  template <typename F>
  auto Timed(OpKind op, F&& f) {
    const Clock::time_point t0 = Clock::now();
    auto result = f();
    latency_ns_[op].Add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0)
            .count());
    return result;
  }

  ConstTensorView PrefillView(const Tensor& t, int64_t tokens) const {
    const KVLayout& l = config_.layout;
    const int64_t max_prompt = config_.workload.prompt.max_tokens;
    return ConstTensorView(t.data(), l.dtype,
                           Shape({1, l.num_kv_heads, tokens, l.head_dim}),
                           Strides{l.num_kv_heads * max_prompt * l.head_dim,
                                   max_prompt * l.head_dim, l.head_dim, 1});
  }
  ConstTensorView DecodeView(const Tensor& t, int64_t rows) const {
    const KVLayout& l = config_.layout;
    return ConstTensorView(t.data(), l.dtype,
                           Shape({rows, l.num_kv_heads, 1, l.head_dim}));
  }

  // Releases a sequence's blocks and folds its cache counters into the
  // report. The slot in running_ becomes nullptr.
  void Release(std::unique_ptr<Seq>& s) {
    const CacheStats cs = s->cache->stats();
    report_->cow_copies += cs.cow_copies;
    report_->cow_bytes += cs.cow_bytes;
    report_->kv_bytes_written += cs.bytes_written;
    report_->ledger_freed += int64_t{s->rows} * s->length;
    Timed(kOpReset, [&] {
      s->cache->Reset();
      return 0;
    });
    s.reset();
  }

  void Preempt(std::unique_ptr<Seq>& s) {
    ++report_->preemptions;
    waiting_.push_front(s->request);  // Recompute first, as vLLM does.
    Release(s);
  }

  absl::Status Admit() {
    const int32_t bt = config_.layout.block_tokens;
    int64_t budget = config_.max_prefill_tokens_per_step;
    bool admitted_any = false;
    while (!waiting_.empty() &&
           static_cast<int32_t>(running_.size()) < config_.max_running) {
      const Request r = waiting_.front();
      const int32_t need = (r.prompt_tokens + bt - 1) / bt;
      if (need + watermark_blocks_ > pool_->num_blocks()) {
        waiting_.pop_front();
        ++report_->refused_too_large;
        continue;
      }
      if (pool_->books().num_unreserved_free_blocks() - need <
          watermark_blocks_) {
        break;
      }
      if (admitted_any && r.prompt_tokens > budget) break;
      waiting_.pop_front();
      auto s = std::make_unique<Seq>();
      s->request = r;
      s->cache = std::make_unique<DynamicKVCache>(pool_);
      s->admission_seq = next_admission_seq_++;
      bool fits = true;
      for (int32_t layer = 0; layer < config_.layout.num_layers; ++layer) {
        absl::StatusOr<KVView> kv = Timed(kOpPrefill, [&] {
          return s->cache->Update(PrefillView(prefill_key_, r.prompt_tokens),
                                  PrefillView(prefill_value_, r.prompt_tokens),
                                  layer);
        });
        if (absl::IsResourceExhausted(kv.status())) {
          fits = false;
          break;
        }
        if (!kv.ok()) return Unexpected("prefill Update", kv.status());
      }
      if (!fits) {
        // Checked above, so only possible if the watermark is 0: requeue.
        s->cache->Reset();
        waiting_.push_front(r);
        break;
      }
      ++report_->admitted;
      admitted_any = true;
      budget -= r.prompt_tokens;
      report_->tokens_prefilled += r.prompt_tokens;
      report_->ledger_written += r.prompt_tokens;
      s->length = r.prompt_tokens;
      if (r.width > 1) {
        absl::Status st = Timed(kOpRepeat, [&] {
          return s->cache->BatchRepeatInterleave(r.width);
        });
        if (!st.ok()) return Unexpected("BatchRepeatInterleave", st);
        report_->ledger_written += int64_t{r.width - 1} * s->length;
        s->rows = r.width;
      }
      if (absl::Status st = MaybeCrop(*s); !st.ok()) return st;
      running_.push_back(std::move(s));
    }
    return absl::OkStatus();
  }

  // Keeps a sliding-window request within its window: crops once the
  // sequence is a block past the window, so each crop frees a block.
  absl::Status MaybeCrop(Seq& s) {
    const int32_t window = s.request.crop_window;
    if (window <= 0 || s.length < window + config_.layout.block_tokens) {
      return absl::OkStatus();
    }
    absl::Status st = Timed(kOpCrop, [&] { return s.cache->Crop(window); });
    if (!st.ok()) return Unexpected("Crop", st);
    report_->ledger_cropped += int64_t{s.rows} * (s.length - window);
    s.length = window;
    return absl::OkStatus();
  }

  // Preempts by policy because running_[self] could not get a block.
  // Returns false if running_[self] itself is gone (preempted or refused).
  bool MakeRoom(size_t self) {
    std::vector<VictimCandidate> candidates;
    std::vector<size_t> index;
    for (size_t i = 0; i < running_.size(); ++i) {
      if (running_[i] == nullptr) continue;
      candidates.push_back({running_[i]->admission_seq, running_[i]->decoded,
                            running_[i]->request.prompt_tokens});
      index.push_back(i);
    }
    if (candidates.size() == 1) {
      // Alone and still out of memory: it can never finish here.
      ++report_->refused_too_large;
      Release(running_[self]);
      return false;
    }
    const size_t victim = index[SelectVictim(config_.policy, candidates)];
    Preempt(running_[victim]);
    return victim != self;
  }

  absl::Status Decode() {
    const int32_t num_layers = config_.layout.num_layers;
    // Change a few bytes per step so the data is not constant.
    StoreFromFloat(config_.layout.dtype, float(step_ % 1024),
                   decode_key_.data());
    for (size_t i = 0; i < running_.size(); ++i) {
      if (running_[i] == nullptr) continue;
      Seq* s = running_[i].get();
      if (s->request.kind == RequestKind::kBeam && s->rows > 1) {
        // Beam search keeps the best rows: a sorted draw with duplicates.
        std::vector<int64_t> idx(s->rows);
        for (int64_t& x : idx) x = beam_rng_.Below(s->rows);
        std::sort(idx.begin(), idx.end());
        absl::Status st =
            Timed(kOpReorder, [&] { return s->cache->ReorderCache(idx); });
        if (!st.ok()) return Unexpected("ReorderCache", st);
      }
      bool alive = true;
      for (int32_t layer = 0; alive && layer < num_layers; ++layer) {
        while (true) {
          absl::StatusOr<KVView> kv = Timed(kOpDecode, [&] {
            return s->cache->Update(DecodeView(decode_key_, s->rows),
                                    DecodeView(decode_value_, s->rows), layer);
          });
          if (kv.ok()) break;
          if (!absl::IsResourceExhausted(kv.status())) {
            return Unexpected("decode Update", kv.status());
          }
          if (!MakeRoom(i)) {
            alive = false;
            break;
          }
        }
      }
      if (!alive) continue;
      s->length += 1;
      s->decoded += 1;
      report_->tokens_decoded += s->rows;
      report_->ledger_written += s->rows;
      if (absl::Status st = MaybeCrop(*s); !st.ok()) return st;
      if (s->decoded >= s->request.output_tokens) {
        ++report_->completed;
        Release(running_[i]);
      }
    }
    return absl::OkStatus();
  }

  const SimConfig& config_;
  KVPool* pool_;
  ModelReport* report_;
  Rng beam_rng_;
  int32_t watermark_blocks_ = 1;
  int64_t step_ = 0;
  int64_t next_admission_seq_ = 0;
  std::deque<Request> waiting_;
  // Admission order; nullptr marks a slot freed during the current step.
  std::vector<std::unique_ptr<Seq>> running_;
  Tensor prefill_key_, prefill_value_, decode_key_, decode_value_;
  LatencySamples latency_ns_[kNumOps];
};

}  // namespace

absl::StatusOr<SimResult> RunSimulation(
    const SimConfig& config,
    const std::function<void(const Progress&)>& progress) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = config.layout,
                      .num_blocks = config.pool_blocks,
                      .concurrency = PoolConcurrency::kSingleThread});
  if (!pool.ok()) return pool.status();

  SimResult result;
  result.config = config;
  PagedServer paged(config, pool->get(), &result.paged);
  if (absl::Status s = paged.Init(); !s.ok()) return s;
  ContiguousModel contiguous(config, &result.contiguous);
  WorkloadGenerator generator(config.workload);
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
    for (const Request& r : generator.ArrivalsAt(step)) {
      paged.Arrive(r);
      contiguous.Arrive(r);
    }
    if (absl::Status s = paged.Step(step); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("step ", step, ": ", s.message()));
    }
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
