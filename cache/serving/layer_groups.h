// cache/serving/layer_groups.h
//
// LayerGroup splits a model's layers into groups that each keep their own
// block table per sequence (vLLM v1's KV cache groups): full-attention
// groups hold every token, sliding-window groups only the blocks the next
// token's window reads (allocator/window_table.h). Every group has the same
// number of layers, so one pool of equal blocks serves them all: a block
// holds `layers_per_group` layers of one group (GroupBlockLayout).
//
// Gemma-3 style (5 window layers of 1,024 tokens per full layer), 48 layers:
//
//   const LayerGroup groups[] = {
//       {.num_layers = 8},                            // The 8 full layers.
//       {.num_layers = 8, .sliding_window = 1024},    // 5 groups of 8
//       {.num_layers = 8, .sliding_window = 1024},    // window layers.
//       {.num_layers = 8, .sliding_window = 1024},
//       {.num_layers = 8, .sliding_window = 1024},
//       {.num_layers = 8, .sliding_window = 1024}};
//   PKV_RETURN_IF_ERROR(ValidateLayerGroups(layout, groups));
//   KVLayout block = GroupBlockLayout(layout, groups);  // num_layers 8.
//
// Which model layer is in which group is the server's mapping; the books
// only need each group's window.
//
// Thread safety: plain values.
#ifndef PAGEDKV_CACHE_SERVING_LAYER_GROUPS_H_
#define PAGEDKV_CACHE_SERVING_LAYER_GROUPS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cache/storage/kv_layout.h"

namespace pagedkv {

struct LayerGroup {
  int32_t num_layers = 0;  // > 0; equal in every group.
  // 0: full attention. Else the window W >= 1: the token at position p
  // attends to positions [p - W + 1, p] (HuggingFace's `sliding_window`).
  int32_t sliding_window = 0;

  bool is_window() const { return sliding_window > 0; }
};

// Groups at most (an int8 table index in StepOutput's group-major slots
// would do; 64 keeps the per-sequence arrays small).
inline constexpr int32_t kMaxLayerGroups = 64;

// OK when `groups` is empty (no groups: one full table) or splits
// layout.num_layers into 1..kMaxLayerGroups groups of equal num_layers > 0
// with sliding_window >= 0. Else INVALID_ARGUMENT with the numbers ("group
// 2 has 3 layers, group 0 has 4", "layers of the groups sum to 30, the
// layout has 32", "group 1's sliding_window is -5, must be >= 0 (0: full
// attention)").
absl::Status ValidateLayerGroups(const KVLayout& layout,
                                 absl::Span<const LayerGroup> groups);

// The geometry of one pool block: `layout` with num_layers =
// groups[0].num_layers (a block holds one group's layers); `layout` itself
// without groups. REQUIRES: ValidateLayerGroups(layout, groups).ok().
KVLayout GroupBlockLayout(const KVLayout& layout,
                          absl::Span<const LayerGroup> groups);

// What a pool block of this model holds, in words, for the prefix index
// (BlockPool::PrefixCacheOptions::content): the model's layout and its
// groups, e.g. "layers=2 kv_heads=2 head_dim=4 dtype=float32
// block_tokens=4, layer groups [1 full, 1 window 6]". Managers whose
// descriptions differ must not share a prefix index: with equal tokens
// their anchor chains have equal keys but hold different layers. One full
// group of every layer is described as no groups: its blocks, keys and
// events are a manager's without groups.
std::string BlockContent(const KVLayout& layout,
                         absl::Span<const LayerGroup> groups);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_LAYER_GROUPS_H_
