// KVCacheManager's layer groups: Create's checks and the per-group reads.
// The books are GroupedSequences' (grouped_sequences.h); the manager's
// calls forward to it with one line each in kv_cache_manager.cc.
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/grouped_sequences.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/storage/kv_pool.h"

namespace pagedkv {

absl::Status KVCacheManager::CheckLayerGroups(const Options& options) {
  // The groups themselves passed ValidateLayerGroups first thing in Create.
  if (options.layer_groups.empty()) return absl::OkStatus();
  if (options.max_step_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_step_tokens must be >= 0, got %d", options.max_step_tokens));
  }
  if (options.prefix_caching.remote != nullptr) {
    return absl::UnimplementedError(
        "layer groups with a remote tier are not implemented yet");
  }
  return absl::OkStatus();
}

absl::Status KVCacheManager::AttachLayerGroups(const Options& options) {
  if (options.layer_groups.empty()) return absl::OkStatus();
  windows_ = std::make_unique<internal::GroupedSequences>(
      internal::GroupedSequences::Config{
          .books = books_,
          .host = has_host_tier() ? &host_books() : nullptr,
          .block_tokens = options.layout.block_tokens,
          .groups = options.layer_groups,
          .watermark = options.watermark,
          .instance_id = instance_id_,
          .admission = options.admission,
          .max_step_tokens = options.max_step_tokens,
          .hasher = prefix_caching() ? hasher_ : nullptr,
          .sole_user = options.pool == nullptr});
  return windows_->Init();
}

absl::StatusOr<SwapPlan> KVCacheManager::GroupedSwap(SequenceId seq,
                                                     bool out) {
  PKV_ASSIGN_OR_RETURN(SwapPlan plan,
                       out ? windows_->SwapOut(seq) : windows_->SwapIn(seq));
  if (storage_ != StorageMode::kHost) return plan;
  // Host mode runs the copies and completes at once, as without groups.
  KVPool& from = out ? *pool_ : *host_pool_;
  KVPool& to = out ? *host_pool_ : *pool_;
  PKV_CHECK(CopyBlocksBetween(from, plan.src, to, plan.dst).ok(),
            "grouped swap copy between pools of one layout failed");
  swapped_bytes_ += static_cast<int64_t>(plan.src.size() * pool_->block_bytes());
  const absl::Status done = windows_->CompleteSwap(seq);
  PKV_CHECK(done.ok(), "completing a grouped swap: %s", done.ToString());
  return SwapPlan();
}

absl::Status KVCacheManager::GroupsUnimplemented(const char* op) const {
  return absl::UnimplementedError(absl::StrFormat(
      "%s is not implemented yet for a manager with %d layer groups", op,
      windows_->num_groups()));
}

bool KVCacheManager::GroupedContains(SequenceId seq) const {
  return windows_->contains(seq);
}

int32_t KVCacheManager::num_layer_groups() const {
  return windows_ != nullptr ? windows_->num_groups() : 0;
}

int64_t KVCacheManager::window_released_blocks() const {
  return windows_ != nullptr ? windows_->window_released_blocks() : 0;
}

absl::StatusOr<KVCacheManager::RunningTable> KVCacheManager::group_table(
    SequenceId seq, int32_t group) const {
  if (windows_ == nullptr) {
    return absl::FailedPreconditionError(
        "group_table of a manager without layer groups (use running_table)");
  }
  internal::GroupedSequences::GroupTable t;
  if (!windows_->FindGroupTable(seq, group, &t)) {
    return windows_->GroupTableError(seq, group);
  }
  return RunningTable{.blocks = t.entries,
                      .num_tokens = t.num_tokens,
                      .version = TableVersion{instance_id_, t.sequence_entry,
                                              t.generation}};
}

}  // namespace pagedkv
