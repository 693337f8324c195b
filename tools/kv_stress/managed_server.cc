// tools/kv_stress/managed_server.cc
#include "tools/kv_stress/managed_server.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/status_macros.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "tools/kv_stress/kv_stamps.h"
#include "tools/kv_stress/policy.h"
#include "tools/kv_stress/prefix_tokens.h"
#include "tools/kv_stress/scheduling.h"
#include "tools/kv_stress/sim_metrics.h"

namespace pagedkv::kv_stress::internal {

absl::StatusOr<std::unique_ptr<ManagedServer>> ManagedServer::Create(
    const SimConfig& config, ModelReport* report, RemoteTier* remote) {
  // The manager takes a tier in books-only mode too (load lists), but this
  // server plays no device: it would leave sequences loading forever.
  if (remote != nullptr && config.storage != StorageMode::kHost) {
    return absl::InvalidArgumentError(
        "kv_stress: a remote tier needs host storage here (the simulated "
        "server does not perform books-only load lists)");
  }
  KVCacheManager::Options options{.layout = config.layout,
                                  .num_blocks = config.pool_blocks,
                                  .storage = config.storage,
                                  .admission = config.admission,
                                  .watermark = config.watermark_pct / 100.0,
                                  .num_host_blocks = config.swap_tier_blocks()};
  options.prefix_caching.enabled = config.prefix_caching;
  options.prefix_caching.remote = remote;
  options.layer_groups = config.layer_groups;
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<KVCacheManager> manager,
                       KVCacheManager::Create(options));
  return std::unique_ptr<ManagedServer>(
      new ManagedServer(config, report, std::move(manager), remote));
}

ManagedServer::ManagedServer(const SimConfig& config, ModelReport* report,
                             std::unique_ptr<KVCacheManager> manager,
                             RemoteTier* remote)
    : config_(config),
      report_(report),
      manager_(std::move(manager)),
      remote_(remote),
      beam_rng_(config.workload.seed ^ 0x9e3779b97f4a7c15ULL),
      check_rng_(config.workload.seed ^ 0x5851f42d4c957f2dULL),
      waiting_(config.max_waiting) {
  if (manager_->storage() == StorageMode::kHost) {
    stamper_.emplace(manager_->kv_pool());
  }
  if (prefix()) {
    block_seen_.assign(static_cast<size_t>(config.pool_blocks), -1);
    block_fill_.assign(static_cast<size_t>(config.pool_blocks), 0);
  }
}

template <typename F>
bool ManagedServer::ForEachHeldBlock(SequenceId row, F&& fn) const {
  const int32_t groups = manager_->num_layer_groups();
  if (groups == 0) {
    absl::StatusOr<absl::Span<const BlockId>> table =
        manager_->block_table(row);
    if (!table.ok()) return false;
    for (size_t i = 0; i < table->size(); ++i) {
      fn(static_cast<int64_t>(i), (*table)[i]);
    }
    return true;
  }
  for (int32_t g = 0; g < groups; ++g) {
    absl::StatusOr<KVCacheManager::RunningTable> table =
        manager_->group_table(row, g);
    if (!table.ok()) return false;
    for (size_t i = 0; i < table->blocks.size(); ++i) {
      if (table->blocks[i].is_valid()) {
        fn(static_cast<int64_t>(i), table->blocks[i]);
      }
    }
  }
  return true;
}

int64_t ManagedServer::remote_loaded_blocks() const {
  return remote_ == nullptr ? 0 : remote_->stats().loaded_blocks;
}

void ManagedServer::VerifyHits(const Group& g, const Row& row,
                               int64_t cached_tokens, int64_t remote_blocks) {
  if (!host() || cached_tokens == 0) return;
  absl::StatusOr<absl::Span<const BlockId>> table =
      manager_->block_table(row.id);
  if (!table.ok()) return;
  const int64_t bt = manager_->block_tokens();
  const int64_t hit_blocks = cached_tokens / bt;
  // The manager loads remote blocks right after the local hits.
  const int64_t first_remote = hit_blocks - remote_blocks;
  for (int64_t b = 0; b < hit_blocks; ++b) {
    const bool from_remote = b >= first_remote;
    for (const int64_t pos : {b * bt, b * bt + bt - 1}) {
      ++report_->hit_stamp_checks;
      if (from_remote) ++report_->remote_hit_stamp_checks;
      if (stamper_->Verify(*table, pos, row.history)) continue;
      ++num_hit_failures_;
      if (from_remote) ++report_->remote_hit_stamp_failures;
      if (hit_failures_.size() < 10) {
        hit_failures_.push_back(absl::StrFormat(
            "request %d row %d: %s hit block %d (block id %d) does not hold "
            "this row's KV at position %d",
            g.request.id, row.id, from_remote ? "remote-tier" : "prefix-cache",
            b, (*table)[b].value(), pos));
      }
    }
  }
}

absl::Status ManagedServer::CommitRows(const Group& g) {
  if (!prefix()) return absl::OkStatus();
  commits_.clear();
  for (const Row& row : g.rows) commits_.push_back({row.id, row.length});
  absl::Status st = manager_->CommitTokens(commits_);
  if (!st.ok()) return Unexpected("CommitTokens", st);
  return absl::OkStatus();
}

template <typename F>
auto ManagedServer::Timed(OpKind op, F&& f) {
  const Clock::time_point t0 = Clock::now();
  auto result = f();
  latency_ns_[op].Add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0)
          .count());
  return result;
}

absl::Status ManagedServer::Unexpected(std::string_view op,
                                       const absl::Status& s) const {
  return absl::InternalError(absl::StrCat("step ", step_, ": ", std::string(op),
                                          " failed: ", s.ToString()));
}

int32_t ManagedServer::num_running() const { return num_running_; }

void ManagedServer::Arrive(const Request& r) {
  auto g = std::make_unique<Group>();
  g->request = r;
  if (!waiting_.Arrive(std::move(g))) ++report_->refused_queue_full;
}

absl::Status ManagedServer::Step(int64_t step) {
  step_ = step;
  absl::Status error;
  waiting_.AdmitInOrder(
      &num_running_, config_.max_running, config_.max_prefill_tokens_per_step,
      [](const GroupPtr& g) -> int64_t {
        switch (g->where) {
          case Where::kNew:
            return g->request.prompt_tokens;
          case Where::kPreempted:
            return g->row_tokens();  // Recomputed.
          default:
            return 0;  // Swapped: copied back, not computed.
        }
      },
      [&](GroupPtr& g) {
        absl::StatusOr<Verdict> v = TryAdmit(*g);
        if (!v.ok()) {
          error = v.status();
          return Verdict::kLater;
        }
        if (*v == Verdict::kAdmitted) running_.push_back(std::move(g));
        return *v;
      },
      &report_->refused_too_large);
  PKV_RETURN_IF_ERROR(error);
  PKV_RETURN_IF_ERROR(Decode());
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr),
                 running_.end());
  return absl::OkStatus();
}

absl::StatusOr<Verdict> ManagedServer::TryAdmit(Group& g) {
  absl::StatusOr<Verdict> v;
  switch (g.where) {
    case Where::kNew:
      v = AdmitNew(g);
      break;
    case Where::kPreempted:
      v = Readmit(g);
      break;
    case Where::kSwapped:
      v = SwapIn(g);
      break;
    case Where::kRunning:
      return absl::InternalError("a running request in the waiting queue");
  }
  if (v.ok() && *v == Verdict::kAdmitted) {
    g.where = Where::kRunning;
    g.admission_seq = next_admission_seq_++;
    ++report_->admitted;
    PKV_RETURN_IF_ERROR(MaybeCrop(g));
  }
  return v;
}

absl::StatusOr<Verdict> ManagedServer::DidNotFit(Group& g) {
  if (num_running_ > 0) return Verdict::kLater;
  // Alone in the pool and still too large: it can never run here.
  report_->ledger_freed += g.row_tokens();
  PKV_RETURN_IF_ERROR(FreeRows(g));
  return Verdict::kNever;
}

absl::StatusOr<Verdict> ManagedServer::AdmitNew(Group& g) {
  const Request& r = g.request;
  // Token ids: the manager's prefix cache keys on them, and host-mode stamps
  // are a function of them.
  const bool ids = prefix() || host();
  if (ids && g.prompt_ids.empty()) PromptTokenIds(r, &g.prompt_ids);
  const Admission admission =
      prefix() ? manager_->CanAdmit(g.prompt_ids, r.output_tokens)
               : manager_->CanAdmit(r.prompt_tokens, r.output_tokens);
  switch (admission) {
    case Admission::kNever:
      return Verdict::kNever;
    case Admission::kLater:
      return Verdict::kLater;
    case Admission::kAdmit:
      break;
  }
  const SequenceId id = next_seq_id_++;
  const int64_t loaded_before = remote_loaded_blocks();
  absl::Status st = Timed(kOpAddSequence, [&] {
    return prefix()
               ? manager_->AddSequence(id, g.prompt_ids, r.output_tokens, &out_)
               : manager_->AddSequence(id, r.prompt_tokens, r.output_tokens,
                                       &out_);
  });
  if (!st.ok()) return Unexpected("AddSequence after kAdmit", st);
  const int64_t cached = out_.num_cached_tokens;
  const int64_t remote_blocks = remote_loaded_blocks() - loaded_before;
  Row first;
  first.id = id;
  first.length = r.prompt_tokens;
  if (host()) {
    first.history.Append(g.prompt_ids);
    // Prefill computes (and writes) only what the cache did not serve.
    stamper_->Write(out_.slot_mapping, cached, first.history);
  }
  std::vector<int32_t>().swap(g.prompt_ids);
  g.rows.push_back(std::move(first));
  VerifyHits(g, g.rows.front(), cached, remote_blocks);
  // The prompt's KV is written: its full blocks become matchable.
  PKV_RETURN_IF_ERROR(CommitRows(g));
  for (int32_t k = 1; k < r.width; ++k) {
    const SequenceId child = next_seq_id_++;
    st = Timed(kOpFork, [&] { return manager_->Fork(id, child); });
    if (absl::IsResourceExhausted(st)) {
      // kReservation: the samples' own futures do not fit now.
      PKV_RETURN_IF_ERROR(FreeRows(g));
      return DidNotFit(g);
    }
    if (!st.ok()) return Unexpected("Fork at admission", st);
    Row row = g.rows.front();
    row.id = child;
    row.salt = child;
    g.rows.push_back(std::move(row));
  }
  report_->tokens_prefilled += r.prompt_tokens;
  report_->prefill_tokens_cached += cached;
  report_->prefill_tokens_remote += remote_blocks * manager_->block_tokens();
  report_->prefill_tokens_computed += r.prompt_tokens - cached;
  report_->ledger_written += g.row_tokens();
  return Verdict::kAdmitted;
}

absl::StatusOr<Verdict> ManagedServer::Readmit(Group& g) {
  for (size_t i = 0; i < g.rows.size(); ++i) {
    Row& row = g.rows[i];
    const int64_t loaded_before = remote_loaded_blocks();
    absl::Status st =
        Timed(kOpReadmit, [&] { return manager_->Readmit(row.id, &out_); });
    if (absl::IsResourceExhausted(st)) {
      for (size_t j = 0; j < i; ++j) {
        const SequenceId id = g.rows[j].id;
        PKV_RETURN_IF_ERROR(
            Timed(kOpPreempt, [&] { return manager_->Preempt(id); }));
      }
      return DidNotFit(g);
    }
    if (!st.ok()) return Unexpected("Readmit", st);
    // Recompute writes the very KV it wrote before: the same stamps. The
    // blocks the cache still had are not recomputed.
    // Readmit consults the remote tier after the local re-hits, as
    // admission does: those blocks are checked and counted the same way.
    const int64_t cached = out_.num_cached_tokens;
    const int64_t remote_blocks = remote_loaded_blocks() - loaded_before;
    if (host()) stamper_->Write(out_.slot_mapping, cached, row.history);
    VerifyHits(g, row, cached, remote_blocks);
    report_->tokens_recomputed += row.length - cached;
    report_->prefill_tokens_cached += cached;
    report_->readmit_tokens_remote += remote_blocks * manager_->block_tokens();
    report_->prefill_tokens_computed += row.length - cached;
    if (prefix()) {
      const TokenCommit commit{row.id, row.length};
      st = manager_->CommitTokens(absl::MakeConstSpan(&commit, 1));
      if (!st.ok()) return Unexpected("CommitTokens after Readmit", st);
    }
  }
  report_->tokens_prefilled += g.row_tokens();
  return Verdict::kAdmitted;
}

absl::Status ManagedServer::SwapOutRow(SequenceId id) {
  absl::StatusOr<SwapPlan> plan =
      Timed(kOpSwapOut, [&] { return manager_->SwapOut(id); });
  if (!plan.ok()) return Unexpected("SwapOut", plan.status());
  ++report_->swap_outs;
  // Books-only: the device -> host copies "ran" (there are no bytes).
  if (!host()) PKV_RETURN_IF_ERROR(manager_->CompleteSwap(id));
  return absl::OkStatus();
}

absl::StatusOr<Verdict> ManagedServer::SwapIn(Group& g) {
  for (size_t i = 0; i < g.rows.size(); ++i) {
    const SequenceId id = g.rows[i].id;
    absl::StatusOr<SwapPlan> plan =
        Timed(kOpSwapIn, [&] { return manager_->SwapIn(id); });
    if (absl::IsResourceExhausted(plan.status())) {
      // Back out the rows already in: the tier just gave their blocks up.
      for (size_t j = 0; j < i; ++j) {
        PKV_RETURN_IF_ERROR(SwapOutRow(g.rows[j].id));
      }
      return DidNotFit(g);
    }
    if (!plan.ok()) return Unexpected("SwapIn", plan.status());
    ++report_->swap_ins;
    if (!host()) PKV_RETURN_IF_ERROR(manager_->CompleteSwap(id));
  }
  // The copies are back (blocks the cache kept were pinned instead):
  // republish.
  PKV_RETURN_IF_ERROR(CommitRows(g));
  return Verdict::kAdmitted;
}

absl::Status ManagedServer::FreeRows(Group& g) {
  for (const Row& row : g.rows) {
    absl::Status st = Timed(kOpFree, [&] { return manager_->Free(row.id); });
    if (!st.ok()) return Unexpected("Free", st);
  }
  g.rows.clear();
  return absl::OkStatus();
}

absl::Status ManagedServer::Release(GroupPtr& slot) {
  report_->ledger_freed += slot->row_tokens();
  PKV_RETURN_IF_ERROR(FreeRows(*slot));
  --num_running_;
  slot.reset();
  return absl::OkStatus();
}

absl::Status ManagedServer::PreemptGroup(GroupPtr& slot) {
  Group& g = *slot;
  ++report_->preemptions;
  bool swap = config_.preemption == PreemptionMode::kSwap;
  if (swap) {
    // Each row's blocks go to the tier separately (shared ones too).
    int64_t need = 0;
    const int32_t bt = manager_->block_tokens();
    for (const Row& row : g.rows) need += (row.length + bt - 1) / bt;
    const ManagerStats st = manager_->stats();
    if (need > st.host_blocks - st.host_used_blocks) {
      swap = false;
      ++report_->swap_fallbacks;
    }
  }
  if (swap) {
    for (const Row& row : g.rows) PKV_RETURN_IF_ERROR(SwapOutRow(row.id));
    g.where = Where::kSwapped;
    ++report_->swap_preemptions;
  } else {
    for (const Row& row : g.rows) {
      absl::Status st =
          Timed(kOpPreempt, [&] { return manager_->Preempt(row.id); });
      if (!st.ok()) return Unexpected("Preempt", st);
    }
    g.where = Where::kPreempted;
  }
  --num_running_;
  waiting_.PushFront(std::move(slot));  // First back in, as vLLM does.
  return absl::OkStatus();
}

absl::Status ManagedServer::MakeRoom(bool* any_left) {
  std::vector<VictimCandidate> candidates;
  std::vector<size_t> index;
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i] == nullptr) continue;
    candidates.push_back({running_[i]->admission_seq, running_[i]->decoded,
                          running_[i]->request.prompt_tokens});
    index.push_back(i);
  }
  if (candidates.empty()) {
    *any_left = false;
    return absl::OkStatus();
  }
  if (candidates.size() == 1) {
    // Alone and still out of memory: it can never finish here.
    ++report_->refused_too_large;
    *any_left = false;
    return Release(running_[index[0]]);
  }
  *any_left = true;
  return PreemptGroup(
      running_[index[SelectVictim(config_.policy, candidates)]]);
}

absl::Status ManagedServer::ReorderBeams(Group& g) {
  const int64_t n = static_cast<int64_t>(g.rows.size());
  std::vector<int64_t> idx(n);
  for (int64_t& x : idx) x = beam_rng_.Below(n);
  std::sort(idx.begin(), idx.end());
  std::vector<int32_t> drawn(n, 0);
  for (int64_t x : idx) ++drawn[x];
  // Free first: the rows dropped make room for the forks.
  for (int64_t i = 0; i < n; ++i) {
    if (drawn[i] > 0) continue;
    const SequenceId id = g.rows[i].id;
    absl::Status st = Timed(kOpFree, [&] { return manager_->Free(id); });
    if (!st.ok()) return Unexpected("Free of a dropped beam", st);
    report_->ledger_freed += g.rows[i].length;
  }
  std::vector<Row> rows;
  rows.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    const Row& source = g.rows[idx[i]];
    if (i == 0 || idx[i] != idx[i - 1]) {
      rows.push_back(source);
      continue;
    }
    const SequenceId child = next_seq_id_++;
    absl::Status st =
        Timed(kOpFork, [&] { return manager_->Fork(source.id, child); });
    // kReservation: this beam's future does not fit; keep fewer beams.
    if (absl::IsResourceExhausted(st)) continue;
    if (!st.ok()) return Unexpected("Fork of a beam", st);
    report_->ledger_written += source.length;
    Row row = source;
    row.id = child;
    row.salt = child;
    rows.push_back(std::move(row));
  }
  g.rows = std::move(rows);
  return absl::OkStatus();
}

absl::Status ManagedServer::MaybeCrop(Group& g) {
  for (Row& row : g.rows) {
    const int32_t to = CropDue(g.request, row.length, manager_->block_tokens());
    if (to < 0) continue;
    absl::Status st =
        Timed(kOpTruncate, [&] { return manager_->Truncate(row.id, to); });
    // kReservation: dropping blocks a sibling keeps live raises this row's
    // future need; when that cannot be reserved, the crop waits a step.
    if (absl::IsResourceExhausted(st)) continue;
    if (!st.ok()) return Unexpected("Truncate", st);
    report_->ledger_cropped += row.length - to;
    row.length = to;
    if (host()) row.history.Truncate(to);
  }
  return absl::OkStatus();
}

absl::Status ManagedServer::Decode() {
  for (GroupPtr& g : running_) {
    if (g != nullptr && g->request.kind == RequestKind::kBeam &&
        g->rows.size() > 1) {
      PKV_RETURN_IF_ERROR(ReorderBeams(*g));
    }
  }
  // One batched AppendSlots for every running row; all or nothing, so on
  // running out preempt a victim and ask again.
  while (true) {
    requests_.clear();
    request_rows_.clear();
    token_scratch_.clear();
    for (GroupPtr& g : running_) {
      if (g == nullptr) continue;
      for (Row& row : g->rows) {
        // With the simulated synchronous step, every token the row held
        // before this one has its KV written: commit them (never the new
        // one, whose KV this step writes).
        requests_.push_back({.seq = row.id,
                             .num_tokens = 1,
                             .commit = prefix() ? row.length : -1});
        request_rows_.push_back(&row);
        token_scratch_.push_back(
            GeneratedTokenId(g->request, row.salt, g->decoded));
      }
    }
    if (prefix() || host()) {
      // The spans point into token_scratch_, complete by now.
      for (size_t i = 0; i < requests_.size(); ++i) {
        requests_[i].token_ids = absl::MakeConstSpan(&token_scratch_[i], 1);
      }
    }
    if (requests_.empty()) return absl::OkStatus();
    absl::Status st = Timed(kOpAppendSlots, [&] {
      return manager_->AppendSlots(requests_, &out_);
    });
    if (st.ok()) break;
    if (!absl::IsResourceExhausted(st)) return Unexpected("AppendSlots", st);
    bool any_left = false;
    PKV_RETURN_IF_ERROR(MakeRoom(&any_left));
    if (!any_left) return absl::OkStatus();
  }
  // Books-only: the copy-on-write copies "ran" before the step's writes.
  out_.copies.MarkDone();
  if (host()) {
    const absl::Span<const int64_t> slots(out_.slot_mapping);
    for (size_t i = 0; i < request_rows_.size(); ++i) {
      Row& row = *request_rows_[i];
      row.history.Append(token_scratch_[i]);
      const int32_t at = out_.request_offsets[i];
      stamper_->Write(slots.subspan(at, out_.request_offsets[i + 1] - at),
                      row.length, row.history);
    }
  }
  for (GroupPtr& g : running_) {
    if (g == nullptr) continue;
    for (Row& row : g->rows) ++row.length;
    ++g->decoded;
    report_->tokens_decoded += static_cast<int64_t>(g->rows.size());
    report_->ledger_written += static_cast<int64_t>(g->rows.size());
    PKV_RETURN_IF_ERROR(MaybeCrop(*g));
    if (g->decoded >= g->request.output_tokens) {
      ++report_->completed;
      // Its last tokens are written too: cache them for the next turn.
      PKV_RETURN_IF_ERROR(CommitRows(*g));
      PKV_RETURN_IF_ERROR(Release(g));
    }
  }
  return absl::OkStatus();
}

void ManagedServer::Sample(Sampler& sampler, double* utilization,
                           int32_t* running) {
  const int64_t bt = manager_->block_tokens();
  const ManagerStats st = manager_->stats();
  const double capacity = double(st.num_blocks) * bt;
  int64_t live = 0;
  int64_t logical = 0;
  int32_t rows = 0;
  ++sample_stamp_;
  for (const GroupPtr& g : running_) {
    if (g == nullptr) continue;
    rows += static_cast<int32_t>(g->rows.size());
    logical += g->row_tokens();
    if (prefix()) {
      // Prefix-cache hits share blocks across requests: count each
      // physical block once, with the most tokens any row sees in it.
      for (const Row& row : g->rows) {
        ForEachHeldBlock(row.id, [&](int64_t i, BlockId block) {
          const int32_t fill = static_cast<int32_t>(
              std::clamp<int64_t>(row.length - i * bt, 0, bt));
          const size_t b = static_cast<size_t>(block.value());
          if (block_seen_[b] != sample_stamp_) {
            block_seen_[b] = sample_stamp_;
            block_fill_[b] = fill;
            live += fill;
          } else if (fill > block_fill_[b]) {
            live += fill - block_fill_[b];
            block_fill_[b] = fill;
          }
        });
      }
      continue;
    }
    if (g->rows.size() == 1 && manager_->num_layer_groups() == 0) {
      live += g->rows[0].length;
      continue;
    }
    // Rows of one request may share blocks (and only they do): count each
    // physical block once, with the tokens it holds.
    blocks_scratch_.clear();
    for (const Row& row : g->rows) {
      ForEachHeldBlock(row.id, [&](int64_t i, BlockId block) {
        const int64_t fill = std::clamp<int64_t>(row.length - i * bt, 0, bt);
        blocks_scratch_.emplace_back(block.value(), static_cast<int32_t>(fill));
      });
    }
    std::sort(blocks_scratch_.begin(), blocks_scratch_.end());
    for (size_t i = 0; i < blocks_scratch_.size(); ++i) {
      // Sorted by (id, fill): the last of each id has the largest fill.
      if (i + 1 < blocks_scratch_.size() &&
          blocks_scratch_[i + 1].first == blocks_scratch_[i].first) {
        continue;
      }
      live += blocks_scratch_[i].second;
    }
  }
  const double allocated = double(st.used_blocks) * bt;
  const double util = live / capacity;
  const double frag = allocated > 0 ? (allocated - live) / allocated : 0.0;
  sampler.Add(*report_, num_running_, rows, waiting_.size(), util, frag,
              logical / capacity, st.shared_blocks);
  *utilization = util;
  *running = num_running_;
}

void ManagedServer::Check(Checker& checker) {
  ++checker.checks;
  checker.Expect(
      num_hit_failures_ == 0, step_,
      absl::StrFormat("%d prefix-cache hit stamps wrong%s%s", num_hit_failures_,
                      hit_failures_.empty() ? "" : "; first: ",
                      hit_failures_.empty() ? "" : hit_failures_[0]));
  num_hit_failures_ = 0;
  hit_failures_.clear();
  manager_->CheckInvariants();
  const ManagerStats st = manager_->stats();
  int64_t held_tokens = 0;
  int32_t held_rows = 0;
  auto check_rows = [&](const Group& g, SequenceState want) {
    held_tokens += g.row_tokens();
    held_rows += static_cast<int32_t>(g.rows.size());
    for (const Row& row : g.rows) {
      absl::StatusOr<SequenceState> state = manager_->state(row.id);
      absl::StatusOr<int64_t> tokens = manager_->num_tokens(row.id);
      checker.Expect(
          state.ok() && *state == want && tokens.ok() && *tokens == row.length,
          step_,
          absl::StrFormat(
              "request %d row %d: manager has it %s with %d tokens; "
              "books say %s with %d",
              g.request.id, row.id,
              state.ok() ? SequenceStateName(*state) : "(none)",
              tokens.ok() ? *tokens : -1, SequenceStateName(want), row.length));
    }
  };
  int32_t running = 0;
  ids_scratch_.clear();
  for (const GroupPtr& g : running_) {
    if (g == nullptr) continue;
    ++running;
    check_rows(*g, SequenceState::kRunning);
    for (const Row& row : g->rows) {
      if (!ForEachHeldBlock(row.id, [&](int64_t, BlockId b) {
            ids_scratch_.push_back(b.value());
          })) {
        continue;
      }
      if (!host() || row.length == 0) continue;
      absl::StatusOr<absl::Span<const BlockId>> table =
          manager_->block_table(row.id);  // Host mode: no groups.
      if (!table.ok()) continue;
      // The stamps at the ends and a few random positions.
      const int64_t n = row.length;
      for (int32_t k = -2; k < config_.stamp_samples; ++k) {
        const int64_t pos = k == -2 ? 0 : k == -1 ? n - 1 : check_rng_.Below(n);
        ++report_->stamp_checks;
        checker.Expect(stamper_->Verify(*table, pos, row.history), step_,
                       absl::StrFormat("request %d row %d: the KV at "
                                       "position %d is not what was written",
                                       g->request.id, row.id, pos));
      }
    }
  }
  waiting_.ForEach([&](const GroupPtr& g) {
    if (g->where == Where::kPreempted) {
      check_rows(*g, SequenceState::kPreempted);
    } else if (g->where == Where::kSwapped) {
      check_rows(*g, SequenceState::kSwappedOut);
    }
  });
  checker.Expect(running == num_running_, step_,
                 absl::StrFormat("%d running requests, count says %d", running,
                                 num_running_));
  checker.Expect(held_rows == st.num_sequences, step_,
                 absl::StrFormat("the books hold %d rows, the manager %d",
                                 held_rows, st.num_sequences));
  std::sort(ids_scratch_.begin(), ids_scratch_.end());
  const int64_t distinct =
      std::unique(ids_scratch_.begin(), ids_scratch_.end()) -
      ids_scratch_.begin();
  checker.Expect(distinct == st.used_blocks, step_,
                 absl::StrFormat("running rows hold %d blocks, pool used %d",
                                 distinct, st.used_blocks));
  checker.Expect(st.free_blocks + st.used_blocks == st.num_blocks, step_,
                 "pool free + used != total");
  const int64_t expected =
      report_->ledger_written - report_->ledger_cropped - report_->ledger_freed;
  checker.Expect(held_tokens == expected, step_,
                 absl::StrFormat("paged ledger: %d tokens held, ledger %d",
                                 held_tokens, expected));
}

void ManagedServer::Finish() {
  int64_t held = 0;
  for (const GroupPtr& g : running_) {
    if (g != nullptr) held += g->row_tokens();
  }
  waiting_.ForEach([&](const GroupPtr& g) { held += g->row_tokens(); });
  const ManagerStats st = manager_->stats();
  report_->cow_copies = st.cow_copies;
  report_->prefix = st.prefix;
  report_->cow_bytes =
      st.cow_copies *
      static_cast<int64_t>(config_.block_layout().block_bytes());
  report_->swapped_blocks = st.swapped_blocks;
  // Books-only: the bytes the caller's swap copies move.
  report_->swapped_bytes =
      host() ? st.swapped_bytes
             : st.swapped_blocks *
                   static_cast<int64_t>(config_.block_layout().block_bytes());
  report_->kv_bytes_written = host() ? stamper_->bytes_written() : 0;
  report_->final_tokens = held;
  report_->final_running = num_running_;
  report_->final_waiting = waiting_.size();
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

}  // namespace pagedkv::kv_stress::internal
