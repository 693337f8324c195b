#include "tools/kv_stress/window_capacity.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "tensor/dtype.h"

namespace pagedkv::kv_stress {

std::vector<LayerGroup> WindowModel::Groups() const {
  if (window_layers_per_full == 0) {
    return {{.num_layers = layers, .sliding_window = window}};
  }
  const int32_t per_group = layers / (window_layers_per_full + 1);
  std::vector<LayerGroup> g = {{.num_layers = per_group}};
  for (int32_t i = 0; i < window_layers_per_full; ++i) {
    g.push_back({.num_layers = per_group, .sliding_window = window});
  }
  return g;
}

KVLayout WindowModel::Layout(int32_t block_tokens) const {
  return {.num_layers = layers,
          .num_kv_heads = kv_heads,
          .head_dim = head_dim,
          .dtype = DType::kFloat16,
          .block_tokens = block_tokens};
}

std::string WindowModelNames() {
  std::vector<std::string> names;
  for (const WindowModel& m : kWindowModels) names.emplace_back(m.name);
  return absl::StrJoin(names, "|");
}

absl::StatusOr<WindowModel> FindWindowModel(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  for (const WindowModel& m : kWindowModels) {
    if (m.name == lower) return m;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown window model \"%s\" (known: %s)", std::string(name),
      WindowModelNames()));
}

namespace {

struct RunResult {
  int32_t num_blocks = 0;
  int32_t sequences = 0;
  int32_t used_blocks = 0;
  int64_t released = 0;
};

// Adds sequences of config.context_tokens until one does not fit.
absl::StatusOr<RunResult> FillPool(const KVLayout& layout,
                                   std::vector<LayerGroup> groups,
                                   const WindowCapacityConfig& config) {
  const KVLayout block = GroupBlockLayout(layout, groups);
  const int64_t blocks = config.pool_bytes / block.block_bytes();
  if (blocks <= 0 || blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a pool of %d bytes is %d blocks of %d bytes: must be in [1, 2^31)",
        config.pool_bytes, blocks, block.block_bytes()));
  }
  KVCacheManager::Options options{.layout = layout,
                                  .num_blocks = static_cast<int32_t>(blocks),
                                  .storage = StorageMode::kBooksOnly,
                                  .watermark = 0.0};
  options.layer_groups = std::move(groups);
  PKV_ASSIGN_OR_RETURN(std::unique_ptr<KVCacheManager> m,
                       KVCacheManager::Create(options));
  RunResult r{.num_blocks = static_cast<int32_t>(blocks)};
  StepOutput out;
  // Prefill to context - 1 in chunks (the first at admission), then one
  // decode token, so each window group ends at its decode bound.
  const int64_t prefill = std::max<int64_t>(1, config.context_tokens - 1);
  const int64_t first = std::min<int64_t>(config.chunk_tokens, prefill);
  for (SequenceId seq = 0;; ++seq) {
    if (!m->AddSequence(seq, first, config.context_tokens - first, &out)
             .ok()) {
      break;
    }
    bool fits = true;
    for (int64_t n = first; fits && n < config.context_tokens;) {
      const int64_t k =
          n < prefill ? std::min<int64_t>(config.chunk_tokens, prefill - n)
                      : 1;
      const SlotRequest req[] = {{.seq = seq,
                                  .num_tokens = static_cast<int32_t>(k)}};
      fits = m->AppendSlots(req, &out).ok();
      n += k;
    }
    if (!fits) {
      PKV_RETURN_IF_ERROR(m->Free(seq));
      break;
    }
    ++r.sequences;
    m->CheckInvariants();
  }
  r.used_blocks = m->stats().used_blocks;
  r.released = m->window_released_blocks();
  return r;
}

}  // namespace

absl::StatusOr<WindowCapacity> MeasureWindowCapacity(
    const WindowModel& model, const WindowCapacityConfig& config) {
  if (config.pool_bytes <= 0 || config.context_tokens <= 0 ||
      config.chunk_tokens <= 0 || config.block_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pool_bytes %d, context_tokens %d, chunk_tokens %d and block_tokens "
        "%d must all be > 0",
        config.pool_bytes, config.context_tokens, config.chunk_tokens,
        config.block_tokens));
  }
  const KVLayout layout = model.Layout(config.block_tokens);
  PKV_ASSIGN_OR_RETURN(RunResult full, FillPool(layout, {}, config));
  PKV_ASSIGN_OR_RETURN(RunResult grouped,
                       FillPool(layout, model.Groups(), config));
  if (full.sequences == 0 || grouped.sequences == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a pool of %d bytes holds no sequence of %d tokens (full: %d, "
        "grouped: %d)",
        config.pool_bytes, config.context_tokens, full.sequences,
        grouped.sequences));
  }
  WindowCapacity c;
  c.full_blocks = full.num_blocks;
  c.full_sequences = full.sequences;
  c.grouped_blocks = grouped.num_blocks;
  c.grouped_sequences = grouped.sequences;
  c.grouped_blocks_per_sequence = grouped.used_blocks / grouped.sequences;
  c.window_released_blocks = grouped.released;
  return c;
}

std::string FormatWindowCapacity(const WindowModel& model,
                                 const WindowCapacityConfig& config,
                                 const WindowCapacity& c) {
  return absl::StrFormat(
      "%s, %d-token contexts, %.1f GiB pool: all-full float16 %d sequences "
      "(%d blocks), window groups %d sequences (%d blocks, %d per "
      "sequence): %.2fx",
      model.name, config.context_tokens,
      static_cast<double>(config.pool_bytes) / (int64_t{1} << 30),
      c.full_sequences, c.full_blocks, c.grouped_sequences, c.grouped_blocks,
      c.grouped_blocks_per_sequence, c.ratio());
}

std::string WindowCapacityJson(const WindowModel& model,
                               const WindowCapacityConfig& config,
                               const WindowCapacity& c) {
  return absl::StrFormat(
      "{\"window_model\": \"%s\", \"context_tokens\": %d, \"chunk_tokens\": "
      "%d, \"block_tokens\": %d, \"pool_bytes\": %d, \"full_float16\": "
      "{\"blocks\": %d, \"sequences\": %d}, \"window_groups\": {\"blocks\": "
      "%d, \"sequences\": %d, \"blocks_per_sequence\": %d, "
      "\"window_released_blocks\": %d}, \"capacity_ratio\": %.4f}",
      model.name, config.context_tokens, config.chunk_tokens,
      config.block_tokens, config.pool_bytes, c.full_blocks, c.full_sequences,
      c.grouped_blocks, c.grouped_sequences, c.grouped_blocks_per_sequence,
      c.window_released_blocks, c.ratio());
}

}  // namespace pagedkv::kv_stress
