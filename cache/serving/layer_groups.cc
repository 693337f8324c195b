#include "cache/serving/layer_groups.h"

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace pagedkv {

absl::Status ValidateLayerGroups(const KVLayout& layout,
                                 absl::Span<const LayerGroup> groups) {
  if (groups.empty()) return absl::OkStatus();
  if (groups.size() > static_cast<size_t>(kMaxLayerGroups)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d layer groups, at most %d", groups.size(), kMaxLayerGroups));
  }
  int64_t sum = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].num_layers <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "group %d has %d layers, must be > 0", g, groups[g].num_layers));
    }
    if (groups[g].num_layers != groups[0].num_layers) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "group %d has %d layers, group 0 has %d: every group needs the "
          "same layer count (one block size)",
          g, groups[g].num_layers, groups[0].num_layers));
    }
    if (groups[g].sliding_window < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "group %d's sliding_window is %d, must be >= 0 (0: full attention)",
          g, groups[g].sliding_window));
    }
    sum += groups[g].num_layers;
  }
  if (sum != layout.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layers of the %d groups sum to %d, the layout has %d", groups.size(),
        sum, layout.num_layers));
  }
  return absl::OkStatus();
}

KVLayout GroupBlockLayout(const KVLayout& layout,
                          absl::Span<const LayerGroup> groups) {
  KVLayout block = layout;
  if (!groups.empty()) block.num_layers = groups[0].num_layers;
  return block;
}

std::string BlockContent(const KVLayout& layout,
                         absl::Span<const LayerGroup> groups) {
  std::string text = layout.ToString();
  // One full group of every layer holds what a block without groups does,
  // under the same keys (its anchor is group 0, the chain from the root).
  if (groups.empty() || (groups.size() == 1 && !groups[0].is_window())) {
    return text + ", no layer groups";
  }
  text += ", layer groups [";
  for (size_t g = 0; g < groups.size(); ++g) {
    if (g > 0) text += ", ";
    text += groups[g].is_window()
                ? absl::StrFormat("%d window %d", groups[g].num_layers,
                                  groups[g].sliding_window)
                : absl::StrFormat("%d full", groups[g].num_layers);
  }
  return text + "]";
}

}  // namespace pagedkv
