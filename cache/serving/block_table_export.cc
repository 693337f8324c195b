#include "cache/serving/block_table_export.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/status_macros.h"

namespace pagedkv {
namespace {

// Rows are compared and copied as raw int32 ids.
static_assert(std::is_trivially_copyable_v<BlockId> &&
                  sizeof(BlockId) == sizeof(int32_t),
              "BlockId must be a bare int32 for memcmp");

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

absl::Status TooSmall(const char* name, size_t given, int64_t needed,
                      const char* what) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s holds %d entries, needs %d (%s)", name, given, needed, what));
}

absl::Status TooWide(SequenceId seq, size_t row, size_t blocks,
                     int32_t max_blocks) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "sequence %d (row %d) has %d blocks, more than max_blocks %d", seq, row,
      blocks, max_blocks));
}

// The tokens of a running sequence, checked against its table: the export
// hands both to a kernel, which would read past the table if they disagreed.
int32_t CheckedTokens(SequenceId seq, const KVCacheManager::RunningTable& t,
                      int64_t bt) {
  // ceil(tokens / bt) == blocks, without a division (this runs per row of
  // every export, and a 64-bit divide costs tens of cycles).
  const int64_t blocks = static_cast<int64_t>(t.blocks.size());
  PKV_CHECK(t.num_tokens <= blocks * bt && t.num_tokens > (blocks - 1) * bt &&
                t.num_tokens >= 0,
            "sequence %d: %d tokens in %d blocks of %d", seq, t.num_tokens,
            blocks, bt);
  return static_cast<int32_t>(t.num_tokens);
}

void WriteRow(absl::Span<const BlockId> table, int32_t max_blocks,
              int32_t pad_id, int32_t* row) {
  const size_t n = table.size();
  if (n > 0) std::memcpy(row, table.data(), n * sizeof(int32_t));
  std::fill(row + n, row + max_blocks, pad_id);
}

}  // namespace

absl::StatusOr<ExportSizes> ComputeExportSizes(
    const KVCacheManager& manager, absl::Span<const SequenceId> batch) {
  if (batch.size() > static_cast<size_t>(kMaxInt32)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a batch of %d sequences is past 2^31 - 1", batch.size()));
  }
  ExportSizes sizes;
  sizes.num_seqs = static_cast<int32_t>(batch.size());
  for (SequenceId seq : batch) {
    PKV_ASSIGN_OR_RETURN(absl::Span<const BlockId> table,
                         manager.block_table(seq));
    const int32_t n = static_cast<int32_t>(table.size());
    sizes.max_row_blocks = std::max(sizes.max_row_blocks, n);
    sizes.total_blocks += n;
  }
  return sizes;
}

ExportSizes ExportCapacity(int32_t max_seqs, int64_t max_tokens_per_seq,
                           int32_t block_tokens) {
  PKV_CHECK(max_seqs >= 0 && max_tokens_per_seq >= 0 && block_tokens > 0,
            "ExportCapacity(%d, %d, %d)", max_seqs, max_tokens_per_seq,
            block_tokens);
  const int64_t row = (max_tokens_per_seq + block_tokens - 1) / block_tokens;
  PKV_CHECK(row <= kMaxInt32, "%d tokens take %d blocks, past int32",
            max_tokens_per_seq, row);
  ExportSizes sizes;
  sizes.num_seqs = max_seqs;
  sizes.max_row_blocks = static_cast<int32_t>(row);
  sizes.total_blocks = int64_t{max_seqs} * row;
  return sizes;
}

absl::Status ExportDenseBlockTables(const KVCacheManager& manager,
                                    absl::Span<const SequenceId> batch,
                                    const DenseExportOptions& options,
                                    absl::Span<int32_t> block_tables,
                                    absl::Span<int32_t> seq_lens) {
  const int32_t width = options.max_blocks;
  if (width <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_blocks must be > 0, got %d", width));
  }
  // Sizes first (no lookups), then every row, then the writes.
  const int64_t rows = static_cast<int64_t>(batch.size());
  if (static_cast<int64_t>(block_tables.size()) < rows * width) {
    return TooSmall(
        "block_tables", block_tables.size(), rows * width,
        absl::StrFormat("%d rows x %d blocks", rows, width).c_str());
  }
  if (seq_lens.size() < batch.size()) {
    return TooSmall("seq_lens", seq_lens.size(), rows, "one per row");
  }
  for (size_t b = 0; b < batch.size(); ++b) {
    PKV_ASSIGN_OR_RETURN(absl::Span<const BlockId> table,
                         manager.block_table(batch[b]));
    if (table.size() > static_cast<size_t>(width)) {
      return TooWide(batch[b], b, table.size(), width);
    }
  }
  const int64_t bt = manager.block_tokens();
  for (size_t b = 0; b < batch.size(); ++b) {
    // Cannot fail: the loop above found every sequence running.
    const KVCacheManager::RunningTable t = *manager.running_table(batch[b]);
    WriteRow(t.blocks, width, options.pad_id, &block_tables[b * width]);
    seq_lens[b] = CheckedTokens(batch[b], t, bt);
  }
  return absl::OkStatus();
}

absl::Status ExportCsrPageTable(const KVCacheManager& manager,
                                absl::Span<const SequenceId> batch,
                                absl::Span<int32_t> kv_indptr,
                                absl::Span<int32_t> kv_indices,
                                absl::Span<int32_t> kv_last_page_len) {
  const int64_t rows = static_cast<int64_t>(batch.size());
  if (static_cast<int64_t>(kv_indptr.size()) < rows + 1) {
    return TooSmall("kv_indptr", kv_indptr.size(), rows + 1,
                    "one per row, plus one");
  }
  if (kv_last_page_len.size() < batch.size()) {
    return TooSmall("kv_last_page_len", kv_last_page_len.size(), rows,
                    "one per row");
  }
  int64_t total = 0;
  for (SequenceId seq : batch) {
    PKV_ASSIGN_OR_RETURN(absl::Span<const BlockId> table,
                         manager.block_table(seq));
    total += static_cast<int64_t>(table.size());
  }
  if (total > kMaxInt32) {
    return absl::OutOfRangeError(absl::StrFormat(
        "the batch of %d sequences holds %d blocks, past an int32 kv_indptr",
        rows, total));
  }
  if (static_cast<int64_t>(kv_indices.size()) < total) {
    return TooSmall("kv_indices", kv_indices.size(), total,
                    absl::StrFormat("the blocks of %d rows", rows).c_str());
  }
  const int32_t bt = manager.block_tokens();
  int32_t offset = 0;
  kv_indptr[0] = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const KVCacheManager::RunningTable t = *manager.running_table(batch[b]);
    const int32_t n = static_cast<int32_t>(t.blocks.size());
    if (n > 0) {
      std::memcpy(&kv_indices[offset], t.blocks.data(), n * sizeof(int32_t));
    }
    offset += n;
    kv_indptr[b + 1] = offset;
    const int32_t tokens = CheckedTokens(batch[b], t, bt);
    kv_last_page_len[b] = n == 0 ? 0 : tokens - (n - 1) * bt;
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// BlockTableDeltaExporter

absl::StatusOr<BlockTableDeltaExporter> BlockTableDeltaExporter::Create(
    const Options& options) {
  if (options.max_rows <= 0 || options.max_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_rows (%d) and max_blocks (%d) must be > 0",
                        options.max_rows, options.max_blocks));
  }
  if (options.group < -1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "group must be >= 0 (or -1 for no groups), got %d", options.group));
  }
  const int64_t entries = int64_t{options.max_rows} * options.max_blocks;
  if (entries > kMaxInt32) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d rows x %d blocks = %d entries, past 2^31 - 1",
                        options.max_rows, options.max_blocks, entries));
  }
  return BlockTableDeltaExporter(options);
}

BlockTableDeltaExporter::BlockTableDeltaExporter(const Options& options)
    : options_(options),
      last_seq_(options.max_rows),
      last_version_(options.max_rows),
      last_num_blocks_(options.max_rows),
      last_blocks_(static_cast<size_t>(options.max_rows) * options.max_blocks),
      tables_(options.max_rows) {}

absl::StatusOr<absl::Span<const int32_t>> BlockTableDeltaExporter::Export(
    const KVCacheManager& manager, absl::Span<const SequenceId> batch,
    absl::Span<int32_t> block_tables, absl::Span<int32_t> seq_lens,
    absl::Span<int32_t> changed_rows) {
  const int32_t width = options_.max_blocks;
  const int64_t rows = static_cast<int64_t>(batch.size());
  if (rows > options_.max_rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a batch of %d rows, more than max_rows %d", rows, options_.max_rows));
  }
  if (static_cast<int64_t>(block_tables.size()) < rows * width) {
    return TooSmall(
        "block_tables", block_tables.size(), rows * width,
        absl::StrFormat("%d rows x %d blocks", rows, width).c_str());
  }
  if (seq_lens.size() < batch.size()) {
    return TooSmall("seq_lens", seq_lens.size(), rows, "one per row");
  }
  if (changed_rows.size() < batch.size()) {
    return TooSmall("changed_rows", changed_rows.size(), rows,
                    "one per row: every row may change");
  }
  // Validate every row before touching anything.
  for (size_t b = 0; b < batch.size(); ++b) {
    if (options_.group >= 0) {
      PKV_ASSIGN_OR_RETURN(tables_[b],
                           manager.group_table(batch[b], options_.group));
    } else if (!manager.FindRunningTable(batch[b], &tables_[b])) {
      return manager.running_table(batch[b]).status();  // Says why.
    }
    if (tables_[b].blocks.size() > static_cast<size_t>(width)) {
      return TooWide(batch[b], b, tables_[b].blocks.size(), width);
    }
  }
  const int64_t bt = manager.block_tokens();
  size_t num_changed = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const KVCacheManager::RunningTable& t = tables_[b];
    const size_t n = t.blocks.size();
    BlockId* copy = &last_blocks_[b * width];
    seq_lens[b] = CheckedTokens(batch[b], t, bt);
    if (static_cast<int64_t>(b) < num_valid_rows_ && last_seq_[b] == batch[b]) {
      if (last_version_[b] == t.version) {
        // The common case, O(1): the table has not changed since.
        PKV_DCHECK(static_cast<size_t>(last_num_blocks_[b]) == n &&
                       (n == 0 || std::memcmp(copy, t.blocks.data(),
                                              n * sizeof(BlockId)) == 0),
                   "row %d: sequence %d's table changed without a new "
                   "version (a BlockTable mutation that does not bump its "
                   "generation?)",
                   b, batch[b]);
        continue;
      }
      // Changed since, perhaps back to the same ids: only then compare.
      if (static_cast<size_t>(last_num_blocks_[b]) == n &&
          (n == 0 ||
           std::memcmp(copy, t.blocks.data(), n * sizeof(BlockId)) == 0)) {
        last_version_[b] = t.version;
        continue;
      }
    }
    int32_t* row = &block_tables[b * width];
    WriteRow(t.blocks, width, options_.pad_id, row);
    if (options_.hole_id != BlockId().value()) {
      // Only a window group's leading entries are holes.
      for (size_t i = 0; i < n && !t.blocks[i].is_valid(); ++i) {
        row[i] = options_.hole_id;
      }
    }
    if (n > 0) std::memcpy(copy, t.blocks.data(), n * sizeof(BlockId));
    last_seq_[b] = batch[b];
    last_version_[b] = t.version;
    last_num_blocks_[b] = static_cast<int32_t>(n);
    changed_rows[num_changed++] = static_cast<int32_t>(b);
  }
  num_valid_rows_ = static_cast<int32_t>(rows);
  return absl::Span<const int32_t>(changed_rows.data(), num_changed);
}

}  // namespace pagedkv
