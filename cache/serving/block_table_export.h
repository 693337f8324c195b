// cache/serving/block_table_export.h
//
// Block-table exports turn a KVCacheManager's per-sequence block tables into
// the index arrays that paged-attention kernels read, written into buffers
// the caller owns (sized once, reused every step: an export allocates
// nothing). The batch is a span of SequenceIds in the kernel's row order;
// row b is batch[b]. Every value is an int32, the kernels' index type.
//
// Two formats:
//
//   - Dense (vLLM's PagedAttention): block_tables[num_seqs][max_blocks], row
//     major, row b holding batch[b]'s block ids and then pad_id up to
//     max_blocks; seq_lens[num_seqs] holding each sequence's tokens.
//   - CSR (FlashInfer's paged KV): kv_indptr[num_seqs + 1], kv_indices[...],
//     kv_last_page_len[num_seqs]. Row b's pages are kv_indices[kv_indptr[b]
//     .. kv_indptr[b + 1]), kv_indptr[0] == 0; its last page holds
//     kv_last_page_len[b] tokens, in [1, block_tokens] for a sequence with
//     tokens. An empty sequence (Truncate to 0) has no pages (kv_indptr[b +
//     1] == kv_indptr[b]) and kv_last_page_len 0, which FlashInfer ignores
//     for a row without pages (its length is 0). The dense format gives it a
//     row of pad_id only and seq_len 0.
//
// Token counts are num_tokens(seq): they include the tokens AppendSlots gave
// slots to this step, so write those tokens' K/V before running the kernel.
// A sequence may appear in a batch more than once.
//
// BlockTableDeltaExporter is the dense export for a server that keeps the
// table on the device and uploads only rows that changed since its previous
// export (a row now holds another sequence, or the sequence's block ids
// changed). A change is never missed: the manager versions every table
// (KVCacheManager::TableVersion; the BlockTable bumps its generation on
// every change of its ids, copy-on-write and swaps included), so a row whose
// sequence and version are the ones it last wrote is unchanged at the cost
// of one compare, and only a row whose version moved is compared id by id
// with the exporter's copy of what it last wrote there (a fingerprint such
// as length and end blocks would miss changes: a rebuilt table can differ
// only in the middle). The CSR format has no delta form: one row's length
// change moves every later row's kv_indptr and kv_indices.
//
// Worked example (the test checks these very numbers). block_tokens = 4;
// sequence 7 has 10 tokens, 2 has 4, and 8 was forked from 7 and then given
// one token, so it shares 7's two full blocks and got a copy of the tail:
//
//   const SequenceId batch[] = {7, 2, 8};
//   int32_t tables[3 * 4];
//   int32_t lens[3];
//   PKV_RETURN_IF_ERROR(ExportDenseBlockTables(
//       manager, batch, {.max_blocks = 4, .pad_id = -1}, tables, lens));
//   const int32_t want_tables[] = {0, 1, 2, -1,    // sequence 7
//                                  3, -1, -1, -1,  // sequence 2
//                                  0, 1, 4, -1};   // sequence 8
//   const int32_t want_lens[] = {10, 4, 11};
//   int32_t indptr[3 + 1];
//   int32_t indices[7];
//   int32_t last_page_len[3];
//   PKV_RETURN_IF_ERROR(
//       ExportCsrPageTable(manager, batch, indptr, indices, last_page_len));
//   const int32_t want_indptr[] = {0, 3, 4, 7};
//   const int32_t want_indices[] = {0, 1, 2, 3, 0, 1, 4};
//   const int32_t want_last_page_len[] = {2, 4, 3};  // 10 = 2*4 + 2, ...
//
// Sizing buffers once, then exporting deltas every step:
//
//   const ExportSizes cap = ExportCapacity(/*max_seqs=*/256,
//       /*max_tokens_per_seq=*/4096, manager.block_tokens());
//   std::vector<int32_t> tables(cap.dense_entries(cap.max_row_blocks));
//   std::vector<int32_t> lens(cap.num_seqs), changed(cap.num_seqs);
//   absl::StatusOr<BlockTableDeltaExporter> exporter =
//       BlockTableDeltaExporter::Create(
//           {.max_rows = cap.num_seqs, .max_blocks = cap.max_row_blocks});
//   if (!exporter.ok()) return exporter.status();
//   absl::StatusOr<absl::Span<const int32_t>> rows =
//       exporter->Export(manager, batch, absl::MakeSpan(tables),
//                        absl::MakeSpan(lens), absl::MakeSpan(changed));
//   if (!rows.ok()) return rows.status();
//   for (int32_t row : *rows) UploadRow(row, tables);  // To the device.
//
// Errors change nothing (no output entry, no exporter state): a buffer too
// small is INVALID_ARGUMENT with the entries needed and given; a row wider
// than max_blocks is INVALID_ARGUMENT naming the sequence; an unknown
// sequence is NOT_FOUND and one that is not running FAILED_PRECONDITION.
// Output entries past what an export needs are never written.
//
// Thread safety: exports read the manager's books, so they run on the
// manager's thread (or with it quiescent). A BlockTableDeltaExporter is used
// by one thread at a time.
#ifndef PAGEDKV_CACHE_SERVING_BLOCK_TABLE_EXPORT_H_
#define PAGEDKV_CACHE_SERVING_BLOCK_TABLE_EXPORT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/serving/kv_cache_manager.h"

namespace pagedkv {

// What the exports of one batch need (ComputeExportSizes), or may need for
// any batch within limits (ExportCapacity).
struct ExportSizes {
  int32_t num_seqs = 0;        // Rows: seq_lens, kv_last_page_len entries.
  int32_t max_row_blocks = 0;  // The widest row; a dense max_blocks >= it.
  int64_t total_blocks = 0;    // kv_indices entries: the rows' sum.

  // Dense block_tables entries for a row width of max_blocks.
  int64_t dense_entries(int32_t max_blocks) const {
    return int64_t{num_seqs} * max_blocks;
  }
  int64_t indptr_entries() const { return int64_t{num_seqs} + 1; }
};

// Returns the sizes the exports of `batch` need. NOT_FOUND for an unknown
// sequence, FAILED_PRECONDITION for one that is not running.
absl::StatusOr<ExportSizes> ComputeExportSizes(
    const KVCacheManager& manager, absl::Span<const SequenceId> batch);

// Returns sizes that fit every batch of at most max_seqs sequences of at
// most max_tokens_per_seq tokens each (max_row_blocks is the blocks that
// many tokens take), for a server that sizes its buffers once.
// REQUIRES: max_seqs >= 0, max_tokens_per_seq >= 0, block_tokens > 0, and
// the result's counts fit their types (max_row_blocks an int32).
ExportSizes ExportCapacity(int32_t max_seqs, int64_t max_tokens_per_seq,
                           int32_t block_tokens);

struct DenseExportOptions {
  // Row width: entries per row of block_tables (vLLM's
  // max_num_blocks_per_seq). Must be > 0.
  int32_t max_blocks = 0;
  // Written after a row's blocks, up to max_blocks.
  int32_t pad_id = 0;
};

// Writes the dense format (see the file comment) for `batch`:
// block_tables[0 .. batch.size() * max_blocks) and seq_lens[0 ..
// batch.size()). INVALID_ARGUMENT for max_blocks <= 0, a buffer too small,
// or a row wider than max_blocks; NOT_FOUND / FAILED_PRECONDITION as above.
// Nothing is written on error.
absl::Status ExportDenseBlockTables(const KVCacheManager& manager,
                                    absl::Span<const SequenceId> batch,
                                    const DenseExportOptions& options,
                                    absl::Span<int32_t> block_tables,
                                    absl::Span<int32_t> seq_lens);

// Writes the CSR format (see the file comment) for `batch`:
// kv_indptr[0 .. batch.size()], kv_indices[0 .. total blocks) and
// kv_last_page_len[0 .. batch.size()). INVALID_ARGUMENT for a buffer too
// small (sizes from ComputeExportSizes); OUT_OF_RANGE when the batch holds
// 2^31 blocks or more (past an int32 kv_indptr); NOT_FOUND /
// FAILED_PRECONDITION as above. Nothing is written on error.
absl::Status ExportCsrPageTable(const KVCacheManager& manager,
                                absl::Span<const SequenceId> batch,
                                absl::Span<int32_t> kv_indptr,
                                absl::Span<int32_t> kv_indices,
                                absl::Span<int32_t> kv_last_page_len);

// The dense export, writing only the rows that changed since the previous
// export. It keeps, per row, the sequence, its TableVersion and the block
// ids it last wrote there (max_rows * max_blocks ids, allocated once by
// Create). Per row an export looks the sequence up once; when the sequence
// and version are the saved ones the row is unchanged (no id is read);
// when only the version differs it compares the ids with the copy (one
// memcmp); it rewrites, pads and reports only rows whose ids differ.
// seq_lens is written in full every time (a decode step changes every
// length).
//
// A row counts as changed when it is new (the batch grew past the previous
// export's rows, or after Create / Reset), holds another sequence than
// before (even one with the same blocks), or its sequence's block ids
// differ. A sequence whose table changed and came back to the same ids
// (Truncate, then the same blocks again) is not reported. An export costs
// O(rows) for the lookups, plus O(blocks) of each row whose table changed
// since the previous export for the comparison, plus O(max_blocks) per
// changed row for the writes: a decode step that adds no block costs the
// lookups only. Debug builds also compare every unchanged row with its copy
// (a missed version bump aborts).
//
// States: empty (after Create and Reset: the next export writes every row)
// and holding the previous export's rows. `block_tables` must be the buffer
// the previous export wrote (unchanged rows are left as they are); after
// handing it another buffer, call Reset().
class BlockTableDeltaExporter {
 public:
  struct Options {
    int32_t max_rows = 0;    // The largest batch; > 0.
    int32_t max_blocks = 0;  // Row width, as DenseExportOptions; > 0.
    int32_t pad_id = 0;
    // A manager with layer groups: the group whose dense rows to keep (as
    // ExportDenseGroupBlockTables, group_table_export.h), with hole_id for
    // the entries its window released. -1: the ungrouped tables.
    int32_t group = -1;
    int32_t hole_id = -1;
  };

  // INVALID_ARGUMENT unless max_rows > 0 and max_blocks > 0, group >= -1
  // and the copy (max_rows * max_blocks ids) stays below 2^31 entries. (A
  // group the manager lacks is OUT_OF_RANGE at Export.)
  static absl::StatusOr<BlockTableDeltaExporter> Create(const Options& options);

  // Movable, not copyable: a copy would vouch for a buffer it never wrote.
  BlockTableDeltaExporter(BlockTableDeltaExporter&&) = default;
  BlockTableDeltaExporter& operator=(BlockTableDeltaExporter&&) = default;
  BlockTableDeltaExporter(const BlockTableDeltaExporter&) = delete;
  BlockTableDeltaExporter& operator=(const BlockTableDeltaExporter&) = delete;

  // Brings block_tables[0 .. batch.size() * max_blocks) to what
  // ExportDenseBlockTables would write, writing only changed rows, writes
  // seq_lens[0 .. batch.size()), and returns the changed rows in ascending
  // order: a prefix of `changed_rows`, which must hold batch.size() entries.
  // INVALID_ARGUMENT for a batch of more than max_rows, a buffer too small
  // or a row wider than max_blocks; NOT_FOUND / FAILED_PRECONDITION as
  // ExportDenseBlockTables. On error nothing is written and the exporter is
  // unchanged.
  absl::StatusOr<absl::Span<const int32_t>> Export(
      const KVCacheManager& manager, absl::Span<const SequenceId> batch,
      absl::Span<int32_t> block_tables, absl::Span<int32_t> seq_lens,
      absl::Span<int32_t> changed_rows);

  // Forgets every row: the next export writes (and reports) all of them.
  void Reset() { num_valid_rows_ = 0; }

  const Options& options() const { return options_; }
  // Rows whose copy is valid: the previous export's batch size (0 when
  // empty).
  int32_t num_valid_rows() const { return num_valid_rows_; }

 private:
  explicit BlockTableDeltaExporter(const Options& options);

  Options options_;
  // Invariants, for every row r < num_valid_rows_ (<= max_rows):
  //  - row r of the caller's block_tables holds last_blocks_[r * max_blocks
  //    .. r * max_blocks + last_num_blocks_[r]) and then pad_id up to
  //    max_blocks, as the previous export wrote;
  //  - that export placed sequence last_seq_[r] in row r, and its table was
  //    exactly those last_num_blocks_[r] (<= max_blocks) ids, at version
  //    last_version_[r] (so while the sequence's version is still that, its
  //    ids are still those).
  int32_t num_valid_rows_ = 0;
  std::vector<SequenceId> last_seq_;
  std::vector<KVCacheManager::TableVersion> last_version_;
  std::vector<int32_t> last_num_blocks_;
  std::vector<BlockId> last_blocks_;
  // Scratch (max_rows entries): the tables looked up by the validation
  // pass, reused by the write pass.
  std::vector<KVCacheManager::RunningTable> tables_;
};

}  // namespace pagedkv

#endif  // PAGEDKV_CACHE_SERVING_BLOCK_TABLE_EXPORT_H_
