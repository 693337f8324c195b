// tools/kv_stress/managed_server.h
//
// Internal to the simulator: the paged server, a continuous-batching
// scheduler that is a plain user of KVCacheManager (see simulator.h for what
// it does each step). A request is a group of rows, one manager sequence
// each: the prompt row, plus forked rows for beams and parallel samples.
//
// Thread safety: one simulation thread.
#ifndef PAGEDKV_TOOLS_KV_STRESS_MANAGED_SERVER_H_
#define PAGEDKV_TOOLS_KV_STRESS_MANAGED_SERVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "tools/kv_stress/kv_stamps.h"
#include "tools/kv_stress/scheduling.h"
#include "tools/kv_stress/sim_metrics.h"
#include "tools/kv_stress/simulator.h"
#include "tools/kv_stress/workload.h"

namespace pagedkv::kv_stress::internal {

class ManagedServer {
 public:
  // Makes the manager (and, in host mode, its KV bytes), with `remote` (or
  // nullptr) as its remote tier: borrowed, it must outlive the server.
  // ResourceExhausted when the memory cannot be had; InvalidArgument for a
  // bad config (a remote tier without host storage and prefix caching).
  static absl::StatusOr<std::unique_ptr<ManagedServer>> Create(
      const SimConfig& config, ModelReport* report,
      RemoteTier* remote = nullptr);

  void Arrive(const Request& r);
  // Admits, reorders beams, gives every running row its decode slot
  // (preempting when the pool runs out), crops and completes. Internal when
  // a manager call fails for another reason than running out (a bug).
  absl::Status Step(int64_t step);
  void Sample(Sampler& sampler, double* utilization, int32_t* running);
  void Check(Checker& checker);
  void Finish();

  int32_t num_running() const;
  int32_t num_waiting() const { return waiting_.size(); }
  bool idle() const { return num_running() == 0 && waiting_.empty(); }

 private:
  enum class Where { kNew, kRunning, kPreempted, kSwapped };
  // One manager sequence. Rows of a request start equal; a crop the
  // manager defers (kReservation, shared blocks) can leave them ragged.
  struct Row {
    SequenceId id = 0;
    int32_t length = 0;  // The manager's num_tokens.
    // Which tokens it generates (GeneratedTokenId): 0 for the prompt row,
    // a forked row's own id otherwise.
    int64_t salt = 0;
    RowHistory history;  // Host mode: the keys of its tokens.
  };
  struct Group {
    Request request;
    std::vector<Row> rows;
    Where where = Where::kNew;
    int64_t admission_seq = 0;
    int32_t decoded = 0;
    // The prompt's token ids while it waits for admission (prefix caching
    // or host mode; built once, dropped once the manager holds them).
    std::vector<int32_t> prompt_ids;
    int64_t row_tokens() const {
      int64_t n = 0;
      for (const Row& r : rows) n += r.length;
      return n;
    }
  };
  using GroupPtr = std::unique_ptr<Group>;

  ManagedServer(const SimConfig& config, ModelReport* report,
                std::unique_ptr<KVCacheManager> manager, RemoteTier* remote);

  bool host() const { return stamper_.has_value(); }
  bool prefix() const { return manager_->prefix_caching(); }
  // Calls fn(i, block) for each block a running row holds, i its index in
  // the row's table: one table, or with layer groups every group's table
  // (a window group's holes skipped; groups' blocks are distinct ids of the
  // one pool). False (and no call) if the row is not running.
  template <typename F>
  bool ForEachHeldBlock(SequenceId row, F&& fn) const;
  // Host mode: reads back the first and last stamp of each of the row's
  // leading cached_tokens / block_tokens blocks (a prefix-cache hit must
  // hold the KV of this row's tokens); mismatches wait for Check. The last
  // remote_blocks of those were loaded from the remote tier (another
  // replica wrote them), and are also counted apart.
  void VerifyHits(const Group& g, const Row& row, int64_t cached_tokens,
                  int64_t remote_blocks);
  // Blocks the remote tier has loaded so far (0 without one).
  int64_t remote_loaded_blocks() const;
  // Prefix caching: commits every token of the rows (all written).
  absl::Status CommitRows(const Group& g);
  template <typename F>
  auto Timed(OpKind op, F&& f);
  // Internal error for a manager call that failed unexpectedly.
  absl::Status Unexpected(std::string_view op, const absl::Status& s) const;

  // Admission of the queue's front entry: a new request, or a preempted or
  // swapped one coming back. A group that cannot fit with nothing else
  // running is kNever (its rows freed).
  absl::StatusOr<Verdict> TryAdmit(Group& g);
  absl::StatusOr<Verdict> AdmitNew(Group& g);
  absl::StatusOr<Verdict> Readmit(Group& g);
  absl::StatusOr<Verdict> SwapIn(Group& g);
  // What a group that did not fit answers: kLater, or kNever (rows freed)
  // when nothing else runs.
  absl::StatusOr<Verdict> DidNotFit(Group& g);
  absl::Status SwapOutRow(SequenceId id);
  // Beam step: keeps a sorted draw of rows with duplicates (frees the rows
  // not drawn, forks the ones drawn twice).
  absl::Status ReorderBeams(Group& g);
  absl::Status MaybeCrop(Group& g);
  // Preempts a victim, or refuses the last running request; *any_left says
  // whether something still runs.
  absl::Status MakeRoom(bool* any_left);
  absl::Status PreemptGroup(GroupPtr& slot);
  // Frees a finished or refused group; the slot becomes nullptr.
  absl::Status Release(GroupPtr& slot);
  absl::Status FreeRows(Group& g);
  absl::Status Decode();

  const SimConfig& config_;
  ModelReport* report_;
  std::unique_ptr<KVCacheManager> manager_;
  RemoteTier* remote_;                // Borrowed, or nullptr.
  std::optional<KVStamper> stamper_;  // Host mode.
  Rng beam_rng_;
  Rng check_rng_;
  int64_t step_ = 0;
  int64_t next_admission_seq_ = 0;
  SequenceId next_seq_id_ = 0;
  WaitingQueue<GroupPtr> waiting_;
  // Admission order; nullptr marks a slot emptied during the current step.
  std::vector<GroupPtr> running_;
  int32_t num_running_ = 0;
  // Reused every step.
  StepOutput out_;
  std::vector<SlotRequest> requests_;
  std::vector<Row*> request_rows_;
  std::vector<std::pair<int32_t, int32_t>> blocks_scratch_;  // (id, fill)
  std::vector<int32_t> ids_scratch_;
  std::vector<int32_t> token_scratch_;  // One decode token per request.
  std::vector<TokenCommit> commits_;
  // Sampling with prefix caching (blocks shared across requests): per
  // block, the sample that last saw it and the most tokens seen in it.
  std::vector<int64_t> block_seen_;
  std::vector<int32_t> block_fill_;
  int64_t sample_stamp_ = 0;
  // Hit blocks whose stamps were wrong (reported at the next Check).
  std::vector<std::string> hit_failures_;
  int64_t num_hit_failures_ = 0;
  LatencySamples latency_ns_[kNumOps];
};

}  // namespace pagedkv::kv_stress::internal

#endif  // PAGEDKV_TOOLS_KV_STRESS_MANAGED_SERVER_H_
