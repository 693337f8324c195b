#include "cache/serving/group_table_export.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace pagedkv {

absl::Status ExportDenseGroupBlockTables(
    const KVCacheManager& manager, int32_t group,
    absl::Span<const SequenceId> batch, const GroupDenseExportOptions& options,
    absl::Span<int32_t> block_tables, absl::Span<int32_t> seq_lens) {
  const int64_t width = options.max_blocks;
  if (width <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_blocks must be > 0, got %d", width));
  }
  const int64_t rows = static_cast<int64_t>(batch.size());
  if (static_cast<int64_t>(block_tables.size()) < rows * width) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "block_tables holds %d entries, needs %d (%d rows x %d blocks)",
        block_tables.size(), rows * width, rows, width));
  }
  if (static_cast<int64_t>(seq_lens.size()) < rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "seq_lens holds %d entries, needs %d (one per row)", seq_lens.size(),
        rows));
  }
  for (size_t b = 0; b < batch.size(); ++b) {
    PKV_ASSIGN_OR_RETURN(const KVCacheManager::RunningTable t,
                         manager.group_table(batch[b], group));
    if (static_cast<int64_t>(t.blocks.size()) > width) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d (row %d) has %d blocks in group %d, past max_blocks %d",
          batch[b], b, t.blocks.size(), group, width));
    }
    if (t.num_tokens > INT32_MAX) {
      return absl::OutOfRangeError(absl::StrFormat(
          "sequence %d has %d tokens, past an int32 seq_len", batch[b],
          t.num_tokens));
    }
  }
  for (size_t b = 0; b < batch.size(); ++b) {
    // Cannot fail: the loop above found every row.
    const KVCacheManager::RunningTable t = *manager.group_table(batch[b], group);
    int32_t* row = &block_tables[b * width];
    int64_t i = 0;
    for (; i < static_cast<int64_t>(t.blocks.size()); ++i) {
      row[i] = t.blocks[i].is_valid() ? t.blocks[i].value() : options.hole_id;
    }
    for (; i < width; ++i) row[i] = options.pad_id;
    seq_lens[b] = static_cast<int32_t>(t.num_tokens);
  }
  return absl::OkStatus();
}

}  // namespace pagedkv
