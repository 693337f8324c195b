// tools/kv_stress/window_capacity.h
//
// Sliding-window model presets and kv_stress's capacity comparison for them
// (--window_model): how many sequences of `context_tokens` one pool of a
// fixed size holds with the model's layer groups (KVCacheManager::Options::
// layer_groups, window groups releasing what falls out of their window)
// against the same model with every layer full attention in float16, both
// run through a books-only manager in the same run.
//
// Presets (published configs, KV side only):
//   - gemma-3-12b-style: 48 layers, 8 KV heads, head_dim 256; 5 window
//     layers of 1,024 tokens per full layer: 6 groups of 8 layers (1 full).
//   - mistral-7b-swa: Mistral-7B v0.1, 32 layers, 8 KV heads, head_dim 128,
//     every layer a 4,096-token window: one group of 32.
//
//   absl::StatusOr<WindowModel> m = FindWindowModel("gemma-3-12b-style");
//   absl::StatusOr<WindowCapacity> c = MeasureWindowCapacity(
//       *m, {.pool_bytes = int64_t{64} << 30, .context_tokens = 32768});
//   // c->ratio() >= 3 (README: the measured numbers).
//
// How a sequence is counted: it is admitted with a first prefill chunk,
// grown by chunks of chunk_tokens to context_tokens - 1, then given one
// decode token (so its windows are back to their decode bound). Sequences are
// added one after another until one does not fit (its blocks are then
// freed); the count is how many reached the context, all held at once.
// CheckInvariants() runs after each sequence.
//
// Thread safety: pure functions.
#ifndef PAGEDKV_TOOLS_KV_STRESS_WINDOW_CAPACITY_H_
#define PAGEDKV_TOOLS_KV_STRESS_WINDOW_CAPACITY_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/serving/layer_groups.h"
#include "cache/storage/kv_layout.h"

namespace pagedkv::kv_stress {

struct WindowModel {
  std::string_view name;
  int32_t layers = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t window = 0;               // Tokens of a window layer.
  int32_t window_layers_per_full = 0;  // 0: every layer is a window layer.

  // Equal groups: with a full layer per `window_layers_per_full` window
  // layers, full = layers / (ratio + 1) layers form one group and the
  // window layers `ratio` groups of the same size.
  std::vector<LayerGroup> Groups() const;
  KVLayout Layout(int32_t block_tokens) const;  // float16, all layers.
};

inline constexpr WindowModel kWindowModels[] = {
    {"gemma-3-12b-style", 48, 8, 256, 1024, 5},
    {"mistral-7b-swa", 32, 8, 128, 4096, 0},
};

// "gemma-3-12b-style|mistral-7b-swa".
std::string WindowModelNames();
// InvalidArgument listing the names for an unknown one.
absl::StatusOr<WindowModel> FindWindowModel(std::string_view name);

struct WindowCapacityConfig {
  int64_t pool_bytes = int64_t{64} << 30;  // Both runs; > 0.
  int64_t context_tokens = 32768;          // Per sequence; > 0.
  int32_t chunk_tokens = 2048;             // Prefill chunk; > 0.
  int32_t block_tokens = 16;               // > 0.
};

struct WindowCapacity {
  // All layers full attention, float16 (blocks of all layers).
  int32_t full_blocks = 0;  // The pool in blocks of that size.
  int32_t full_sequences = 0;
  // The model's groups (blocks of one group's layers).
  int32_t grouped_blocks = 0;
  int32_t grouped_sequences = 0;
  int32_t grouped_blocks_per_sequence = 0;  // Used / sequences at the end.
  int64_t window_released_blocks = 0;

  double ratio() const {
    return full_sequences > 0
               ? static_cast<double>(grouped_sequences) / full_sequences
               : 0.0;
  }
};

// Runs both managers (see the file comment). InvalidArgument for bad
// config values (the numbers in the message) or a pool smaller than one
// sequence's prompt chunk in either run.
absl::StatusOr<WindowCapacity> MeasureWindowCapacity(
    const WindowModel& model, const WindowCapacityConfig& config);

// One line of text and one JSON object, for the tool's output.
std::string FormatWindowCapacity(const WindowModel& model,
                                 const WindowCapacityConfig& config,
                                 const WindowCapacity& c);
std::string WindowCapacityJson(const WindowModel& model,
                               const WindowCapacityConfig& config,
                               const WindowCapacity& c);

}  // namespace pagedkv::kv_stress

#endif  // PAGEDKV_TOOLS_KV_STRESS_WINDOW_CAPACITY_H_
