#include "cache/serving/group_table_export.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
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

namespace {

// The first live entry of a group table: entries below it are holes and
// the rest live (GroupedSequences' invariant), so the live pages are a
// suffix.
int64_t FirstLive(SequenceId seq, absl::Span<const BlockId> entries) {
  int64_t first = 0;
  const int64_t n = static_cast<int64_t>(entries.size());
  while (first < n && !entries[first].is_valid()) ++first;
  for (int64_t i = first; i < n; ++i) {
    PKV_CHECK(entries[i].is_valid(), "sequence %d: a hole at entry %d after "
              "live entry %d", seq, i, first);
  }
  return first;
}

}  // namespace

absl::Status ExportCsrGroupPageTable(const KVCacheManager& manager,
                                     int32_t group,
                                     absl::Span<const SequenceId> batch,
                                     absl::Span<int32_t> kv_indptr,
                                     absl::Span<int32_t> kv_indices,
                                     absl::Span<int32_t> kv_last_page_len,
                                     absl::Span<int32_t> first_page) {
  const int64_t rows = static_cast<int64_t>(batch.size());
  const auto too_small = [rows](const char* name, size_t given,
                                int64_t needed) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s holds %d entries, needs %d (a batch of %d rows)", name, given,
        needed, rows));
  };
  if (static_cast<int64_t>(kv_indptr.size()) < rows + 1) {
    return too_small("kv_indptr", kv_indptr.size(), rows + 1);
  }
  if (static_cast<int64_t>(kv_last_page_len.size()) < rows) {
    return too_small("kv_last_page_len", kv_last_page_len.size(), rows);
  }
  if (static_cast<int64_t>(first_page.size()) < rows) {
    return too_small("first_page", first_page.size(), rows);
  }
  int64_t total = 0;
  for (SequenceId seq : batch) {
    PKV_ASSIGN_OR_RETURN(const KVCacheManager::RunningTable t,
                         manager.group_table(seq, group));
    total += static_cast<int64_t>(t.blocks.size()) - FirstLive(seq, t.blocks);
  }
  if (total > INT32_MAX) {
    return absl::OutOfRangeError(absl::StrFormat(
        "the batch of %d sequences holds %d pages in group %d, past an int32 "
        "kv_indptr", rows, total, group));
  }
  if (static_cast<int64_t>(kv_indices.size()) < total) {
    return too_small("kv_indices", kv_indices.size(), total);
  }
  const int64_t bt = manager.block_tokens();
  int32_t offset = 0;
  kv_indptr[0] = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    // Cannot fail: the loop above found every row.
    const KVCacheManager::RunningTable t = *manager.group_table(batch[b], group);
    const int64_t n = static_cast<int64_t>(t.blocks.size());
    const int64_t first = FirstLive(batch[b], t.blocks);
    for (int64_t i = first; i < n; ++i) {
      kv_indices[offset++] = t.blocks[i].value();
    }
    kv_indptr[b + 1] = offset;
    PKV_CHECK(t.num_tokens <= n * bt && (n == 0 || t.num_tokens > (n - 1) * bt),
              "sequence %d: %d tokens in %d entries of %d", batch[b],
              t.num_tokens, n, bt);
    kv_last_page_len[b] =
        n == first ? 0 : static_cast<int32_t>(t.num_tokens - (n - 1) * bt);
    first_page[b] = static_cast<int32_t>(first);
  }
  return absl::OkStatus();
}

}  // namespace pagedkv
