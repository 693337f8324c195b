// cache/serving/group_table_export.h
//
// The dense block-table export (block_table_export.h) of one layer group
// of a KVCacheManager with Options::layer_groups. A kernel runs each
// group's layers with that group's table: the batch's rows for group g are
// written exactly as the ungrouped dense format (vLLM's
// block_tables[num_seqs][max_blocks] + seq_lens), except that in a window
// group the entries whose blocks fell out of the window are hole_id:
//
//   row b, entry i: the block of tokens [i * bt, (i + 1) * bt) of batch[b]
//                   in group g, or hole_id if group g released it (i below
//                   the window's first block), then pad_id up to
//                   max_blocks;
//   seq_lens[b]:    batch[b]'s tokens (every group has the same length).
//
// Logical indices are the ungrouped ones, so a sliding-window kernel
// (FlashAttention's window_size, vLLM's sliding_window) indexes the row by
// token position as before and reads only entries inside its window, which
// are never holes. Rows keep growing by one entry per block of tokens
// (holes included): size max_blocks for the longest sequence.
//
// Worked example (the test checks these numbers): block_tokens 4, group 0
// full, group 1 a window of 4 tokens; sequence 1 has 10 tokens (its last
// step gave one token, so 9 were computed: the window reads from token 6,
// block 1):
//
//   int32_t tables[4], lens[1];
//   const SequenceId batch[] = {1};
//   PKV_RETURN_IF_ERROR(ExportDenseGroupBlockTables(
//       manager, /*group=*/1, batch, {.max_blocks = 4, .pad_id = 0}, tables,
//       lens));
//   // tables == {-1, b1, b2, 0}: entry 0 a hole, blocks 1 and 2, a pad.
//
// The CSR export of a group (FlashInfer's paged KV: kv_indptr, kv_indices,
// kv_last_page_len, as ExportCsrPageTable) lists only the live pages: row
// b's pages are the group's entries [first_page[b], entries) of batch[b],
// in order, so a window group's row holds at most
// WindowBlockBound(W, block_tokens) pages and no holes; a full group's
// first_page is 0 and its row is the ungrouped one. kv_last_page_len is
// the tokens of the last page, as ungrouped. Token t of the sequence lies
// in page t / block_tokens - first_page[b] of the row. A kernel whose
// window mask is aligned to the end of the KV (FlashInfer's window_left =
// W - 1 with the queries at the end) needs nothing else; one that needs
// absolute positions adds first_page[b] * block_tokens.
//
// Worked example, the same sequence as above (the test checks it):
//
//   int32_t indptr[2], indices[2], last[1], first[1];
//   PKV_RETURN_IF_ERROR(ExportCsrGroupPageTable(
//       manager, /*group=*/1, batch, indptr, indices, last, first));
//   // indptr == {0, 2}, indices == {b1, b2}, last == {2}, first == {1}.
//
// BlockTableDeltaExporter (block_table_export.h) with Options::group = g
// keeps group g's dense rows (holes as Options::hole_id) on the device.
//
// Thread safety: reads the manager; as KVCacheManager.
#ifndef PAGEDKV_CACHE_SERVING_GROUP_TABLE_EXPORT_H_
#define PAGEDKV_CACHE_SERVING_GROUP_TABLE_EXPORT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv {

struct GroupDenseExportOptions {
  int32_t max_blocks = 0;  // Row width; > 0.
  int32_t pad_id = 0;      // After a row's entries.
  int32_t hole_id = -1;    // For entries a window released.
};

// Writes group `group`'s dense tables for `batch`: block_tables[0 ..
// batch.size() * max_blocks), seq_lens[0 .. batch.size()).
// INVALID_ARGUMENT for max_blocks <= 0, a buffer too small or a row wider
// than max_blocks; FAILED_PRECONDITION for a manager without groups or a
// sequence not running; NOT_FOUND; OUT_OF_RANGE for a bad group. Nothing is
// written on error.
absl::Status ExportDenseGroupBlockTables(
    const KVCacheManager& manager, int32_t group,
    absl::Span<const SequenceId> batch, const GroupDenseExportOptions& options,
    absl::Span<int32_t> block_tables, absl::Span<int32_t> seq_lens);

// Writes group `group`'s CSR page table for `batch` (see above):
// kv_indptr[0 .. batch.size()], kv_indices[0 .. live pages),
// kv_last_page_len[0 .. batch.size()) and first_page[0 .. batch.size()).
// INVALID_ARGUMENT for a buffer too small (with the entries needed);
// OUT_OF_RANGE past an int32 kv_indptr or a bad group; FAILED_PRECONDITION
// / NOT_FOUND as ExportDenseGroupBlockTables. Nothing is written on error.
absl::Status ExportCsrGroupPageTable(const KVCacheManager& manager,
                                     int32_t group,
                                     absl::Span<const SequenceId> batch,
                                     absl::Span<int32_t> kv_indptr,
                                     absl::Span<int32_t> kv_indices,
                                     absl::Span<int32_t> kv_last_page_len,
                                     absl::Span<int32_t> first_page);

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_GROUP_TABLE_EXPORT_H_
