// tools/kv_stress/contiguous_model.h
//
// Internal to the simulator: what a non-paged server does with the same
// request stream, the same bytes and the same scheduling rules
// (scheduling.h). Every admitted request reserves max_len
// tokens per row up front (a crop request its window plus one block), so it
// never preempts but admits far fewer sequences; a request longer than
// max_len (prompt + output, from a trace) is refused as too large. Pure
// bookkeeping: no KV bytes.
//
// Thread safety: one simulation thread.
#ifndef PAGEDKV_TOOLS_KV_STRESS_CONTIGUOUS_MODEL_H_
#define PAGEDKV_TOOLS_KV_STRESS_CONTIGUOUS_MODEL_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "tools/kv_stress/scheduling.h"
#include "tools/kv_stress/sim_metrics.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress::internal {

class ContiguousModel {
 public:
  ContiguousModel(const SimConfig& config, ModelReport* report)
      : config_(config),
        report_(report),
        capacity_tokens_(config.contiguous_capacity_tokens()),
        waiting_(config.max_waiting) {}

  void Arrive(const Request& r) {
    if (!waiting_.Arrive(r)) ++report_->refused_queue_full;
  }

  void Step() {
    Admit();
    Decode();
  }

  void Sample(Sampler& sampler, double* utilization, int32_t* running) {
    int64_t live = 0;
    int32_t rows = 0;
    for (const Seq& s : running_) {
      live += int64_t{s.rows} * s.length;
      rows += s.rows;
    }
    const double util = double(live) / capacity_tokens_;
    const double frag =
        reserved_ > 0 ? double(reserved_ - live) / reserved_ : 0.0;
    sampler.Add(*report_, static_cast<int32_t>(running_.size()), rows,
                waiting_.size(), util, frag, util, 0);
    *utilization = util;
    *running = static_cast<int32_t>(running_.size());
  }

  void Check(Checker& checker, int64_t step) {
    ++checker.checks;
    int64_t live = 0;
    int64_t reserved = 0;
    for (const Seq& s : running_) {
      live += int64_t{s.rows} * s.length;
      reserved += s.reserved;
      checker.Expect(int64_t{s.rows} * s.length <= s.reserved, step,
                     absl::StrFormat("contiguous request %d outgrew its "
                                     "reservation",
                                     s.request.id));
    }
    checker.Expect(reserved == reserved_ && reserved_ <= capacity_tokens_, step,
                   "contiguous reservations exceed capacity");
    const int64_t expected = report_->ledger_written - report_->ledger_cropped -
                             report_->ledger_freed;
    checker.Expect(live == expected, step,
                   absl::StrFormat("contiguous ledger: %d live, ledger %d",
                                   live, expected));
  }

  void Finish() {
    int64_t live = 0;
    for (const Seq& s : running_) live += int64_t{s.rows} * s.length;
    report_->final_tokens = live;
    report_->final_running = static_cast<int32_t>(running_.size());
    report_->final_waiting = waiting_.size();
    report_->admissions_refused =
        report_->refused_queue_full + report_->refused_too_large;
  }

 private:
  struct Seq {
    Request request;
    int32_t rows = 1;
    int32_t length = 0;
    int32_t decoded = 0;
    int64_t reserved = 0;
  };

  int64_t ReservationFor(const Request& r) const {
    const int32_t per_row =
        r.crop_window > 0
            ? std::min(config_.max_len,
                       r.crop_window + config_.layout.block_tokens)
            : config_.max_len;
    return int64_t{r.width} * per_row;
  }

  // True if a plain request's prompt and output do not fit in max_len
  // (a crop request holds its window, ReservationFor).
  bool ExceedsMaxLen(const Request& r) const {
    return r.crop_window == 0 &&
           int64_t{r.prompt_tokens} + r.output_tokens > config_.max_len;
  }

  void Admit() {
    int32_t running = static_cast<int32_t>(running_.size());
    waiting_.AdmitInOrder(
        &running, config_.max_running, config_.max_prefill_tokens_per_step,
        [](const Request& r) { return int64_t{r.prompt_tokens}; },
        [&](Request& r) {
          const int64_t need = ReservationFor(r);
          // A trace's request may need more than max_len (the generator's
          // cannot: SimConfig::Validate); a server with that context limit
          // refuses it, counted as too large, and so does this model.
          if (need > capacity_tokens_ || ExceedsMaxLen(r)) {
            return Verdict::kNever;
          }
          if (reserved_ + need > capacity_tokens_) return Verdict::kLater;
          ++report_->admitted;
          reserved_ += need;
          Seq s;
          s.request = r;
          s.reserved = need;
          s.length = r.prompt_tokens;
          s.rows = r.width;
          report_->tokens_prefilled += r.prompt_tokens;
          // A non-paged server copies the prompt into every beam/sample row.
          report_->ledger_written += int64_t{r.width} * r.prompt_tokens;
          MaybeCrop(s);
          running_.push_back(s);
          return Verdict::kAdmitted;
        },
        &report_->refused_too_large);
  }

  void MaybeCrop(Seq& s) {
    const int32_t to =
        CropDue(s.request, s.length, config_.layout.block_tokens);
    if (to < 0) return;
    report_->ledger_cropped += int64_t{s.rows} * (s.length - to);
    s.length = to;
  }

  void Decode() {
    std::vector<Seq> still;
    still.reserve(running_.size());
    for (Seq& s : running_) {
      // The reservation covers max_len, so a decode step always fits (the
      // preemption rule of the paged server never triggers here).
      s.length += 1;
      s.decoded += 1;
      report_->tokens_decoded += s.rows;
      report_->ledger_written += s.rows;
      MaybeCrop(s);
      if (s.decoded >= s.request.output_tokens) {
        ++report_->completed;
        report_->ledger_freed += int64_t{s.rows} * s.length;
        reserved_ -= s.reserved;
      } else {
        still.push_back(s);
      }
    }
    running_ = std::move(still);
  }

  const SimConfig& config_;
  ModelReport* report_;
  const int64_t capacity_tokens_;
  int64_t reserved_ = 0;
  WaitingQueue<Request> waiting_;
  std::vector<Seq> running_;
};

}  // namespace pagedkv::kv_stress::internal

#endif  // PAGEDKV_TOOLS_KV_STRESS_CONTIGUOUS_MODEL_H_
