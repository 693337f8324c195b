// Tests of cache/serving/block_table_export.h: the dense (vLLM) and CSR
// (FlashInfer) exports checked entry by entry against block_table(seq) on
// random ragged batches, padding, the delta exporter against a full export
// over random serving steps, and that every error leaves the buffers (and
// the exporter) untouched. The header's examples are copied between BEGIN
// and END (checked against the header by :header_examples_check_test).
#include "cache/serving/block_table_export.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tests/cache/serving/export/serving_harness.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ServingHarness;
using ::pagedkv::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int32_t kSentinel = -7777;

KVLayout TinyLayout(int32_t block_tokens) {
  return KVLayout{.num_layers = 1,
                  .num_kv_heads = 1,
                  .head_dim = 1,
                  .dtype = DType::kFloat32,
                  .block_tokens = block_tokens};
}

std::unique_ptr<KVCacheManager> MakeManager(int32_t block_tokens,
                                            int32_t num_blocks) {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made = KVCacheManager::Create(
      {.layout = TinyLayout(block_tokens), .num_blocks = num_blocks});
  PKV_CHECK(made.ok(), "%s", made.status().ToString());
  return *std::move(made);
}

// The header's worked example: block_tokens 4; 7 has 10 tokens, 2 has 4,
// and 8 is 7's fork with one token more (its tail copied on write).
std::unique_ptr<KVCacheManager> WorkedExampleManager() {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  StepOutput out;
  PKV_CHECK(m->AddSequence(7, 10, 0, &out).ok(), "add 7");
  PKV_CHECK(m->AddSequence(2, 4, 0, &out).ok(), "add 2");
  PKV_CHECK(m->Fork(7, 8).ok(), "fork");
  const SlotRequest step[] = {{.seq = 8, .num_tokens = 1}};
  PKV_CHECK(m->AppendSlots(step, &out).ok(), "append");
  return m;
}

std::vector<int32_t> Ids(absl::Span<const BlockId> table) {
  std::vector<int32_t> ids;
  for (BlockId id : table) ids.push_back(id.value());
  return ids;
}

absl::Status WorkedExample(const KVCacheManager& manager) {
  // clang-format off
  // BEGIN cache/serving/block_table_export.h
  const SequenceId batch[] = {7, 2, 8};
  int32_t tables[3 * 4];
  int32_t lens[3];
  PKV_RETURN_IF_ERROR(ExportDenseBlockTables(
      manager, batch, {.max_blocks = 4, .pad_id = -1}, tables, lens));
  const int32_t want_tables[] = {0, 1, 2, -1,    // sequence 7
                                 3, -1, -1, -1,  // sequence 2
                                 0, 1, 4, -1};   // sequence 8
  const int32_t want_lens[] = {10, 4, 11};
  int32_t indptr[3 + 1];
  int32_t indices[7];
  int32_t last_page_len[3];
  PKV_RETURN_IF_ERROR(
      ExportCsrPageTable(manager, batch, indptr, indices, last_page_len));
  const int32_t want_indptr[] = {0, 3, 4, 7};
  const int32_t want_indices[] = {0, 1, 2, 3, 0, 1, 4};
  const int32_t want_last_page_len[] = {2, 4, 3};  // 10 = 2*4 + 2, ...
  // END cache/serving/block_table_export.h
  // clang-format on
  EXPECT_THAT(tables, ElementsAreArray(want_tables));
  EXPECT_THAT(lens, ElementsAreArray(want_lens));
  EXPECT_THAT(indptr, ElementsAreArray(want_indptr));
  EXPECT_THAT(indices, ElementsAreArray(want_indices));
  EXPECT_THAT(last_page_len, ElementsAreArray(want_last_page_len));
  // The example's story, from the books themselves.
  EXPECT_THAT(Ids(*manager.block_table(7)), ElementsAre(0, 1, 2));
  EXPECT_THAT(Ids(*manager.block_table(2)), ElementsAre(3));
  EXPECT_THAT(Ids(*manager.block_table(8)), ElementsAre(0, 1, 4));
  return absl::OkStatus();
}

TEST(BlockTableExportTest, WorkedExampleOfTheHeaderHolds) {
  std::unique_ptr<KVCacheManager> manager = WorkedExampleManager();
  EXPECT_THAT(WorkedExample(*manager), IsOk());
}

absl::Status SizingExample(const KVCacheManager& manager,
                           absl::Span<const SequenceId> batch,
                           std::vector<int32_t>* uploaded) {
  auto UploadRow = [&](int32_t row, const std::vector<int32_t>&) {
    uploaded->push_back(row);
  };
  // clang-format off
  // BEGIN cache/serving/block_table_export.h
  const ExportSizes cap = ExportCapacity(/*max_seqs=*/256,
      /*max_tokens_per_seq=*/4096, manager.block_tokens());
  std::vector<int32_t> tables(cap.dense_entries(cap.max_row_blocks));
  std::vector<int32_t> lens(cap.num_seqs), changed(cap.num_seqs);
  absl::StatusOr<BlockTableDeltaExporter> exporter =
      BlockTableDeltaExporter::Create(
          {.max_rows = cap.num_seqs, .max_blocks = cap.max_row_blocks});
  if (!exporter.ok()) return exporter.status();
  absl::StatusOr<absl::Span<const int32_t>> rows =
      exporter->Export(manager, batch, absl::MakeSpan(tables),
                       absl::MakeSpan(lens), absl::MakeSpan(changed));
  if (!rows.ok()) return rows.status();
  for (int32_t row : *rows) UploadRow(row, tables);  // To the device.
  // END cache/serving/block_table_export.h
  // clang-format on
  EXPECT_EQ(cap.num_seqs, 256);
  EXPECT_EQ(cap.max_row_blocks, 1024);  // 4096 tokens / 4 per block.
  EXPECT_EQ(cap.total_blocks, 256 * 1024);
  EXPECT_THAT(*uploaded, ElementsAreArray(*rows));
  EXPECT_EQ(tables[2 * 1024 + 2], 4);  // Row 2 (sequence 8), block 2.
  EXPECT_EQ(tables[2 * 1024 + 3], 0);  // Default pad_id.
  EXPECT_THAT(absl::MakeSpan(lens).first(3), ElementsAre(10, 4, 11));
  return absl::OkStatus();
}

TEST(BlockTableExportTest, SizingExampleOfTheHeaderExportsEveryRowOnce) {
  std::unique_ptr<KVCacheManager> manager = WorkedExampleManager();
  const SequenceId batch[] = {7, 2, 8};
  std::vector<int32_t> uploaded;
  EXPECT_THAT(SizingExample(*manager, batch, &uploaded), IsOk());
  EXPECT_THAT(uploaded, ElementsAre(0, 1, 2));
}

// --------------------------------------------------------------- checkers

// EXPECTs that a dense export of `batch` is block_table(seq) row by row,
// padded, with seq_lens = num_tokens, and nothing past the batch written.
void CheckDense(const KVCacheManager& m, absl::Span<const SequenceId> batch,
                int32_t max_blocks, int32_t pad_id,
                absl::Span<const int32_t> tables,
                absl::Span<const int32_t> lens, size_t written_entries,
                size_t written_lens) {
  ASSERT_GE(tables.size(), batch.size() * max_blocks);
  for (size_t b = 0; b < batch.size(); ++b) {
    const absl::Span<const BlockId> table = *m.block_table(batch[b]);
    for (int32_t i = 0; i < max_blocks; ++i) {
      const int32_t want =
          i < static_cast<int32_t>(table.size()) ? table[i].value() : pad_id;
      ASSERT_EQ(tables[b * max_blocks + i], want)
          << "row " << b << " (seq " << batch[b] << ") entry " << i;
    }
    ASSERT_EQ(lens[b], *m.num_tokens(batch[b])) << "row " << b;
  }
  for (size_t i = written_entries; i < tables.size(); ++i) {
    ASSERT_EQ(tables[i], kSentinel) << "entry " << i << " past the batch";
  }
  for (size_t i = written_lens; i < lens.size(); ++i) {
    ASSERT_EQ(lens[i], kSentinel) << "seq_lens " << i << " past the batch";
  }
}

void CheckCsr(const KVCacheManager& m, absl::Span<const SequenceId> batch,
              absl::Span<const int32_t> indptr,
              absl::Span<const int32_t> indices,
              absl::Span<const int32_t> last) {
  const int32_t bt = m.block_tokens();
  ASSERT_EQ(indptr[0], 0);
  for (size_t b = 0; b < batch.size(); ++b) {
    const absl::Span<const BlockId> table = *m.block_table(batch[b]);
    const int64_t tokens = *m.num_tokens(batch[b]);
    ASSERT_EQ(indptr[b + 1] - indptr[b], static_cast<int32_t>(table.size()))
        << "row " << b;
    for (size_t i = 0; i < table.size(); ++i) {
      ASSERT_EQ(indices[indptr[b] + i], table[i].value())
          << "row " << b << " page " << i;
    }
    if (tokens == 0) {
      ASSERT_EQ(last[b], 0) << "row " << b;
    } else {
      ASSERT_GE(last[b], 1) << "row " << b;
      ASSERT_LE(last[b], bt) << "row " << b;
      // FlashInfer's length: (pages - 1) * page_size + last_page_len.
      ASSERT_EQ((indptr[b + 1] - indptr[b] - 1) * int64_t{bt} + last[b], tokens)
          << "row " << b;
    }
  }
  for (size_t i = indptr[batch.size()]; i < indices.size(); ++i) {
    ASSERT_EQ(indices[i], kSentinel) << "kv_indices " << i << " past the end";
  }
  for (size_t i = batch.size() + 1; i < indptr.size(); ++i) {
    ASSERT_EQ(indptr[i], kSentinel);
  }
  for (size_t i = batch.size(); i < last.size(); ++i) {
    ASSERT_EQ(last[i], kSentinel);
  }
}

// ------------------------------------------------ random ragged batches

class ExportRandomTest
    : public ::testing::TestWithParam<std::tuple<uint32_t, AdmissionMode>> {};

TEST_P(ExportRandomTest, ExportsMatchBlockTablesEntryByEntry) {
  const auto [seed, admission] = GetParam();
  ServingHarness h({.layout = TinyLayout(2 + seed % 4),
                    .num_blocks = 96,
                    .num_host_blocks = 32,
                    .admission = admission,
                    .seed = seed});
  int32_t exports = 0;
  for (int step = 0; step < 400; ++step) {
    h.RandomStep();
    if (step % 4 != 0) continue;
    const std::vector<SequenceId> batch = h.RandomBatch();
    absl::StatusOr<ExportSizes> sizes = ComputeExportSizes(h.manager(), batch);
    ASSERT_THAT(sizes, IsOk());
    int32_t widest = 0;
    int64_t total = 0;
    for (SequenceId seq : batch) {
      const int32_t n =
          static_cast<int32_t>(h.manager().block_table(seq)->size());
      widest = std::max(widest, n);
      total += n;
    }
    ASSERT_EQ(sizes->num_seqs, static_cast<int32_t>(batch.size()));
    ASSERT_EQ(sizes->max_row_blocks, widest);
    ASSERT_EQ(sizes->total_blocks, total);

    // Dense, with a random row width >= the widest row, a random pad and
    // room to spare (never written).
    const int32_t width = std::max(1, widest) + static_cast<int32_t>(h.Draw(3));
    const int32_t pad = static_cast<int32_t>(h.Draw(3)) - 1;  // -1, 0, 1
    std::vector<int32_t> tables(batch.size() * width + 5, kSentinel);
    std::vector<int32_t> lens(batch.size() + 2, kSentinel);
    ASSERT_THAT(ExportDenseBlockTables(
                    h.manager(), batch, {.max_blocks = width, .pad_id = pad},
                    absl::MakeSpan(tables), absl::MakeSpan(lens)),
                IsOk());
    CheckDense(h.manager(), batch, width, pad, tables, lens,
               batch.size() * width, batch.size());

    std::vector<int32_t> indptr(batch.size() + 3, kSentinel);
    std::vector<int32_t> indices(total + h.Draw(4), kSentinel);
    std::vector<int32_t> last(batch.size() + 1, kSentinel);
    ASSERT_THAT(
        ExportCsrPageTable(h.manager(), batch, absl::MakeSpan(indptr),
                           absl::MakeSpan(indices), absl::MakeSpan(last)),
        IsOk());
    CheckCsr(h.manager(), batch, indptr, indices, last);
    ++exports;
  }
  EXPECT_GT(exports, 50);
  // The run reached shared tables and copied their tails on write.
  EXPECT_GT(h.manager().stats().cow_copies, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Seeds, ExportRandomTest,
    ::testing::Combine(::testing::Values(1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u),
                       ::testing::Values(AdmissionMode::kWatermark,
                                         AdmissionMode::kReservation)));

// ---------------------------------------------------- formats, edge cases

TEST(BlockTableExportTest, EmptySequenceHasNoPagesAndLastPageLenZero) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 0, &out), IsOk());
  ASSERT_THAT(m->AddSequence(2, 5, 0, &out), IsOk());
  ASSERT_THAT(m->Truncate(1, 0), IsOk());
  const SequenceId batch[] = {1, 2};
  int32_t tables[2 * 3];
  int32_t lens[2];
  ASSERT_THAT(ExportDenseBlockTables(*m, batch, {.max_blocks = 3, .pad_id = 9},
                                     tables, lens),
              IsOk());
  const int32_t b0 = (*m->block_table(2))[0].value();
  const int32_t b1 = (*m->block_table(2))[1].value();
  EXPECT_THAT(tables, ElementsAre(9, 9, 9, b0, b1, 9));
  EXPECT_THAT(lens, ElementsAre(0, 5));
  int32_t indptr[3];
  int32_t indices[2];
  int32_t last[2];
  ASSERT_THAT(ExportCsrPageTable(*m, batch, indptr, indices, last), IsOk());
  EXPECT_THAT(indptr, ElementsAre(0, 0, 2));
  EXPECT_THAT(indices, ElementsAre(b0, b1));
  EXPECT_THAT(last, ElementsAre(0, 1));
  absl::StatusOr<ExportSizes> sizes = ComputeExportSizes(*m, batch);
  ASSERT_THAT(sizes, IsOk());
  EXPECT_EQ(sizes->max_row_blocks, 2);
  EXPECT_EQ(sizes->total_blocks, 2);
}

TEST(BlockTableExportTest, FullLastPageHasLastPageLenBlockTokens) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 8, 0, &out), IsOk());
  const SequenceId batch[] = {1};
  int32_t indptr[2], indices[2], last[1];
  ASSERT_THAT(ExportCsrPageTable(*m, batch, indptr, indices, last), IsOk());
  EXPECT_THAT(indptr, ElementsAre(0, 2));
  EXPECT_THAT(last, ElementsAre(4));
}

TEST(BlockTableExportTest, EmptyBatchWritesOnlyTheFirstIndptr) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  std::vector<int32_t> indptr(2, kSentinel), indices(1, kSentinel),
      last(1, kSentinel), tables(4, kSentinel), lens(1, kSentinel);
  ASSERT_THAT(ExportCsrPageTable(*m, {}, absl::MakeSpan(indptr), {}, {}),
              IsOk());
  EXPECT_THAT(indptr, ElementsAre(0, kSentinel));
  ASSERT_THAT(ExportDenseBlockTables(*m, {}, {.max_blocks = 4}, {}, {}),
              IsOk());
  absl::StatusOr<ExportSizes> sizes = ComputeExportSizes(*m, {});
  ASSERT_THAT(sizes, IsOk());
  EXPECT_EQ(sizes->num_seqs, 0);
  EXPECT_EQ(sizes->indptr_entries(), 1);
  EXPECT_EQ(sizes->dense_entries(4), 0);
}

TEST(BlockTableExportTest, SequenceTwiceInABatchFillsTwoRows) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 5, 0, &out), IsOk());
  const SequenceId batch[] = {1, 1};
  int32_t tables[2 * 2], lens[2];
  ASSERT_THAT(
      ExportDenseBlockTables(*m, batch, {.max_blocks = 2}, tables, lens),
      IsOk());
  EXPECT_EQ(tables[0], tables[2]);
  EXPECT_EQ(tables[1], tables[3]);
  EXPECT_THAT(lens, ElementsAre(5, 5));
}

TEST(BlockTableExportTest, CapacityCoversTheLargestBatch) {
  const ExportSizes cap = ExportCapacity(8, 33, 16);
  EXPECT_EQ(cap.num_seqs, 8);
  EXPECT_EQ(cap.max_row_blocks, 3);  // ceil(33 / 16)
  EXPECT_EQ(cap.total_blocks, 24);
  EXPECT_EQ(cap.dense_entries(3), 24);
  EXPECT_EQ(cap.indptr_entries(), 9);
  EXPECT_EQ(ExportCapacity(0, 0, 16).total_blocks, 0);
}

TEST(BlockTableExportDeathTest, CapacityRejectsNegativeLimits) {
  EXPECT_DEATH(ExportCapacity(-1, 10, 16), "ExportCapacity\\(-1, 10, 16\\)");
  EXPECT_DEATH(ExportCapacity(1, 10, 0), "ExportCapacity\\(1, 10, 0\\)");
}

TEST(BlockTableExportTest, BooksOnlyManagerExportsTheSameWay) {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
      KVCacheManager::Create({.layout = TinyLayout(4),
                              .num_blocks = 16,
                              .storage = StorageMode::kBooksOnly});
  ASSERT_THAT(made, IsOk());
  KVCacheManager& m = **made;
  StepOutput out;
  ASSERT_THAT(m.AddSequence(1, 6, 0, &out), IsOk());
  ASSERT_THAT(m.Fork(1, 2), IsOk());
  const SlotRequest step[] = {{.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m.AppendSlots(step, &out), IsOk());
  ASSERT_EQ(out.copies.size(), 1);  // The caller runs the copy.
  out.copies.MarkDone();
  const SequenceId batch[] = {2, 1};
  std::vector<int32_t> tables(6, kSentinel), lens(2, kSentinel);
  ASSERT_THAT(
      ExportDenseBlockTables(m, batch, {.max_blocks = 3, .pad_id = -1},
                             absl::MakeSpan(tables), absl::MakeSpan(lens)),
      IsOk());
  CheckDense(m, batch, 3, -1, tables, lens, 6, 2);
  std::vector<int32_t> indptr(3), indices(4), last(2);
  ASSERT_THAT(ExportCsrPageTable(m, batch, absl::MakeSpan(indptr),
                                 absl::MakeSpan(indices), absl::MakeSpan(last)),
              IsOk());
  CheckCsr(m, batch, indptr, indices, last);
  EXPECT_THAT(last, ElementsAre(3, 2));
}

// ---------------------------------------------------------------- errors

// Three running sequences (7, 2, 8: the worked example), one preempted (5)
// and one swapped out (6).
std::unique_ptr<KVCacheManager> ErrorManager() {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made = KVCacheManager::Create(
      {.layout = TinyLayout(4), .num_blocks = 32, .num_host_blocks = 8});
  PKV_CHECK(made.ok(), "%s", made.status().ToString());
  std::unique_ptr<KVCacheManager> m = *std::move(made);
  StepOutput out;
  PKV_CHECK(m->AddSequence(7, 10, 0, &out).ok(), "add");
  PKV_CHECK(m->AddSequence(2, 4, 0, &out).ok(), "add");
  PKV_CHECK(m->AddSequence(8, 11, 0, &out).ok(), "add");
  PKV_CHECK(m->AddSequence(5, 3, 0, &out).ok(), "add");
  PKV_CHECK(m->Preempt(5).ok(), "preempt");
  PKV_CHECK(m->AddSequence(6, 3, 0, &out).ok(), "add");
  PKV_CHECK(m->SwapOut(6).ok(), "swap out");
  return m;
}

struct Buffers {
  explicit Buffers(size_t n = 64)
      : tables(n, kSentinel),
        lens(n, kSentinel),
        indptr(n, kSentinel),
        indices(n, kSentinel),
        last(n, kSentinel),
        changed(n, kSentinel) {}
  bool Untouched() const {
    for (const std::vector<int32_t>* v :
         {&tables, &lens, &indptr, &indices, &last, &changed}) {
      for (int32_t x : *v) {
        if (x != kSentinel) return false;
      }
    }
    return true;
  }
  std::vector<int32_t> tables, lens, indptr, indices, last, changed;
};

TEST(BlockTableExportTest, DenseBufferTooSmallSaysSizesAndWritesNothing) {
  std::unique_ptr<KVCacheManager> m = ErrorManager();
  const SequenceId batch[] = {7, 2, 8};
  Buffers buf;
  EXPECT_THAT(ExportDenseBlockTables(*m, batch, {.max_blocks = 4},
                                     absl::MakeSpan(buf.tables).first(11),
                                     absl::MakeSpan(buf.lens)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("block_tables holds 11 entries"),
                             HasSubstr("needs 12 (3 rows x 4 blocks)"))));
  EXPECT_THAT(ExportDenseBlockTables(*m, batch, {.max_blocks = 4},
                                     absl::MakeSpan(buf.tables),
                                     absl::MakeSpan(buf.lens).first(2)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("seq_lens holds 2 entries, needs 3")));
  EXPECT_THAT(ExportDenseBlockTables(*m, batch, {.max_blocks = 0},
                                     absl::MakeSpan(buf.tables),
                                     absl::MakeSpan(buf.lens)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_blocks must be > 0, got 0")));
  EXPECT_TRUE(buf.Untouched());
}

TEST(BlockTableExportTest, RowWiderThanMaxBlocksNamesTheSequence) {
  std::unique_ptr<KVCacheManager> m = ErrorManager();
  const SequenceId batch[] = {2, 8, 7};  // 8 has 3 blocks.
  Buffers buf;
  EXPECT_THAT(ExportDenseBlockTables(*m, batch, {.max_blocks = 2},
                                     absl::MakeSpan(buf.tables),
                                     absl::MakeSpan(buf.lens)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sequence 8 (row 1) has 3 blocks, more than "
                                 "max_blocks 2")));
  EXPECT_TRUE(buf.Untouched());
}

TEST(BlockTableExportTest, UnknownOrNotRunningSequenceWritesNothing) {
  std::unique_ptr<KVCacheManager> m = ErrorManager();
  const SequenceId unknown[] = {7, 2, 99};
  const SequenceId preempted[] = {7, 5};
  const SequenceId swapped[] = {6, 7};
  Buffers buf;
  for (auto [batch, code, text] :
       {std::make_tuple(absl::MakeConstSpan(unknown),
                        absl::StatusCode::kNotFound, "no sequence 99"),
        std::make_tuple(absl::MakeConstSpan(preempted),
                        absl::StatusCode::kFailedPrecondition,
                        "sequence 5, which is preempted"),
        std::make_tuple(absl::MakeConstSpan(swapped),
                        absl::StatusCode::kFailedPrecondition,
                        "sequence 6, which is swapped out")}) {
    EXPECT_THAT(ExportDenseBlockTables(*m, batch, {.max_blocks = 4},
                                       absl::MakeSpan(buf.tables),
                                       absl::MakeSpan(buf.lens)),
                StatusIs(code, HasSubstr(text)));
    EXPECT_THAT(ExportCsrPageTable(*m, batch, absl::MakeSpan(buf.indptr),
                                   absl::MakeSpan(buf.indices),
                                   absl::MakeSpan(buf.last)),
                StatusIs(code, HasSubstr(text)));
    EXPECT_THAT(ComputeExportSizes(*m, batch), StatusIs(code, HasSubstr(text)));
  }
  EXPECT_TRUE(buf.Untouched());
}

TEST(BlockTableExportTest, CsrBufferTooSmallSaysSizesAndWritesNothing) {
  std::unique_ptr<KVCacheManager> m = ErrorManager();
  const SequenceId batch[] = {7, 2, 8};  // 3 + 1 + 3 = 7 blocks.
  Buffers buf;
  auto indptr = absl::MakeSpan(buf.indptr);
  auto indices = absl::MakeSpan(buf.indices);
  auto last = absl::MakeSpan(buf.last);
  EXPECT_THAT(ExportCsrPageTable(*m, batch, indptr.first(3), indices, last),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("kv_indptr holds 3 entries, needs 4")));
  EXPECT_THAT(ExportCsrPageTable(*m, batch, indptr, indices.first(6), last),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("kv_indices holds 6 entries, needs 7")));
  EXPECT_THAT(ExportCsrPageTable(*m, batch, indptr, indices, last.first(2)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("kv_last_page_len holds 2 entries, needs 3")));
  EXPECT_TRUE(buf.Untouched());
  // Exactly the sizes ComputeExportSizes gives are enough.
  absl::StatusOr<ExportSizes> sizes = ComputeExportSizes(*m, batch);
  ASSERT_THAT(sizes, IsOk());
  EXPECT_EQ(sizes->indptr_entries(), 4);
  EXPECT_EQ(sizes->total_blocks, 7);
  EXPECT_THAT(ExportCsrPageTable(*m, batch, indptr.first(4), indices.first(7),
                                 last.first(3)),
              IsOk());
  EXPECT_THAT(ExportDenseBlockTables(
                  *m, batch, {.max_blocks = sizes->max_row_blocks},
                  absl::MakeSpan(buf.tables)
                      .first(sizes->dense_entries(sizes->max_row_blocks)),
                  absl::MakeSpan(buf.lens).first(3)),
              IsOk());
}

// ------------------------------------------------------ delta exporter

BlockTableDeltaExporter MakeExporter(int32_t max_rows, int32_t max_blocks,
                                     int32_t pad_id = -1) {
  absl::StatusOr<BlockTableDeltaExporter> e = BlockTableDeltaExporter::Create(
      {.max_rows = max_rows, .max_blocks = max_blocks, .pad_id = pad_id});
  PKV_CHECK(e.ok(), "%s", e.status().ToString());
  return *std::move(e);
}

// Runs one delta export; returns the changed rows (or fails the test).
std::vector<int32_t> Delta(BlockTableDeltaExporter& e, const KVCacheManager& m,
                           absl::Span<const SequenceId> batch,
                           std::vector<int32_t>& tables,
                           std::vector<int32_t>& lens) {
  std::vector<int32_t> changed(batch.size() + 1, kSentinel);
  absl::StatusOr<absl::Span<const int32_t>> rows =
      e.Export(m, batch, absl::MakeSpan(tables), absl::MakeSpan(lens),
               absl::MakeSpan(changed));
  EXPECT_THAT(rows, IsOk());
  if (!rows.ok()) return {};
  EXPECT_EQ(rows->data(), changed.data()) << "not a prefix of changed_rows";
  return std::vector<int32_t>(rows->begin(), rows->end());
}

TEST(BlockTableDeltaExporterTest, CreateRejectsBadOptions) {
  EXPECT_THAT(BlockTableDeltaExporter::Create({.max_rows = 0, .max_blocks = 4}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_rows (0) and max_blocks (4)")));
  EXPECT_THAT(
      BlockTableDeltaExporter::Create({.max_rows = 4, .max_blocks = -1}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("max_rows (4) and max_blocks (-1)")));
  EXPECT_THAT(
      BlockTableDeltaExporter::Create({.max_rows = 65536, .max_blocks = 65536}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("65536 rows x 65536 blocks = 4294967296 entries")));
}

TEST(BlockTableDeltaExporterTest, WritesOnlyRowsThatChanged) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 32);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 3, 0, &out), IsOk());
  ASSERT_THAT(m->AddSequence(2, 4, 0, &out), IsOk());
  ASSERT_THAT(m->AddSequence(3, 6, 0, &out), IsOk());
  BlockTableDeltaExporter e = MakeExporter(4, 3);
  std::vector<int32_t> tables(4 * 3, kSentinel), lens(4, kSentinel);
  std::vector<SequenceId> batch = {1, 2, 3};
  EXPECT_THAT(Delta(e, *m, batch, tables, lens), ElementsAre(0, 1, 2));
  EXPECT_EQ(e.num_valid_rows(), 3);
  CheckDense(*m, batch, 3, -1, tables, lens, 9, 3);

  // Scribble on every row: a row the exporter believes unchanged stays
  // scribbled, so the scribbles show exactly which rows it wrote.
  auto scribble = [&] {
    for (size_t i = 0; i < 9; ++i) tables[i] = 1000 + static_cast<int32_t>(i);
  };
  scribble();
  EXPECT_THAT(Delta(e, *m, batch, tables, lens), ElementsAre());
  EXPECT_EQ(tables[0], 1000);
  EXPECT_THAT(lens, ElementsAre(3, 4, 6, kSentinel));

  // Decode inside the last block changes no table; crossing into a new
  // block changes that row only.
  const SlotRequest in_block[] = {{.seq = 1, .num_tokens = 1},
                                  {.seq = 3, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(in_block, &out), IsOk());
  EXPECT_THAT(Delta(e, *m, batch, tables, lens), ElementsAre());
  EXPECT_THAT(absl::MakeSpan(lens).first(3), ElementsAre(4, 4, 7));
  const SlotRequest crossing[] = {{.seq = 2, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(crossing, &out), IsOk());
  EXPECT_THAT(Delta(e, *m, batch, tables, lens), ElementsAre(1));
  EXPECT_EQ(tables[0], 1000);  // Row 0 not rewritten.
  EXPECT_EQ(tables[3], (*m->block_table(2))[0].value());
  EXPECT_EQ(tables[4], (*m->block_table(2))[1].value());
  EXPECT_EQ(tables[5], -1);
  EXPECT_EQ(tables[6], 1006);  // Row 2 not rewritten.
}

TEST(BlockTableDeltaExporterTest, ForkCopyOnWriteTruncateAndReorderChangeRows) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 32);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 0, &out), IsOk());
  ASSERT_THAT(m->AddSequence(2, 9, 0, &out), IsOk());
  BlockTableDeltaExporter e = MakeExporter(4, 4);
  std::vector<int32_t> tables(16, kSentinel), lens(4, kSentinel);
  EXPECT_THAT(Delta(e, *m, {1, 2}, tables, lens), ElementsAre(0, 1));

  // The fork shares all of 1's blocks; in row 1 it replaces 2: another
  // sequence, so the row counts as changed.
  ASSERT_THAT(m->Fork(1, 3), IsOk());
  EXPECT_THAT(Delta(e, *m, {1, 3}, tables, lens), ElementsAre(1));
  CheckDense(*m, std::vector<SequenceId>{1, 3}, 4, -1, tables, lens, 16, 4);
  // Another sequence with the very same blocks still counts.
  EXPECT_THAT(Delta(e, *m, {3, 1}, tables, lens), ElementsAre(0, 1));

  // Copy-on-write of 1's shared tail changes 1's table (row 1), not 3's.
  const SlotRequest step[] = {{.seq = 1, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(step, &out), IsOk());
  ASSERT_NE((*m->block_table(1))[1], (*m->block_table(3))[1]);
  EXPECT_THAT(Delta(e, *m, {3, 1}, tables, lens), ElementsAre(1));
  CheckDense(*m, std::vector<SequenceId>{3, 1}, 4, -1, tables, lens, 16, 4);

  // Truncate drops a block: the row is rewritten with padding.
  ASSERT_THAT(m->Truncate(3, 2), IsOk());
  EXPECT_THAT(Delta(e, *m, {3, 1}, tables, lens), ElementsAre(0));
  CheckDense(*m, std::vector<SequenceId>{3, 1}, 4, -1, tables, lens, 16, 4);

  // A shrinking batch forgets the rows it dropped; growing back rewrites
  // them. Reset rewrites everything.
  EXPECT_THAT(Delta(e, *m, {3}, tables, lens), ElementsAre());
  EXPECT_EQ(e.num_valid_rows(), 1);
  EXPECT_THAT(Delta(e, *m, {3, 1, 2}, tables, lens), ElementsAre(1, 2));
  e.Reset();
  EXPECT_EQ(e.num_valid_rows(), 0);
  EXPECT_THAT(Delta(e, *m, {3, 1, 2}, tables, lens), ElementsAre(0, 1, 2));
  CheckDense(*m, std::vector<SequenceId>{3, 1, 2}, 4, -1, tables, lens, 12, 3);

  // Free + a new sequence that reuses an id and gets the same length but
  // other blocks (preempt and readmit rebuild a table too).
  ASSERT_THAT(m->Preempt(2), IsOk());
  ASSERT_THAT(m->AddSequence(4, 4, 0, &out), IsOk());  // Takes freed blocks.
  ASSERT_THAT(m->Readmit(2, &out), IsOk());
  const std::vector<int32_t> changed = Delta(e, *m, {3, 1, 2}, tables, lens);
  CheckDense(*m, std::vector<SequenceId>{3, 1, 2}, 4, -1, tables, lens, 12, 3);
  EXPECT_THAT(changed, ::testing::Contains(2));
}

// Why the exporter compares whole rows, not a fingerprint such as (length,
// first, last): a table can keep its length and both ends and still change
// in the middle. One block per token; the free list hands back the block
// released last first.
TEST(BlockTableDeltaExporterTest, NewMiddleBlockWithSameEndsCountsAsChanged) {
  std::unique_ptr<KVCacheManager> m = MakeManager(1, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(4, 1, 0, &out), IsOk());  // D: one block.
  ASSERT_THAT(m->AddSequence(1, 3, 0, &out), IsOk());  // A: three.
  BlockTableDeltaExporter e = MakeExporter(2, 3);
  std::vector<int32_t> tables(6, kSentinel), lens(2, kSentinel);
  const std::vector<SequenceId> batch = {1, 4};
  EXPECT_THAT(Delta(e, *m, batch, tables, lens), ElementsAre(0, 1));
  const std::vector<int32_t> before = Ids(*m->block_table(1));
  ASSERT_THAT(m->Truncate(1, 1), IsOk());              // Frees a2, then a1.
  ASSERT_THAT(m->AddSequence(2, 1, 0, &out), IsOk());  // Takes a1.
  ASSERT_THAT(m->Free(4), IsOk());                     // D's block first.
  const SlotRequest grow[] = {{.seq = 1, .num_tokens = 2}};
  ASSERT_THAT(m->AppendSlots(grow, &out), IsOk());  // a0, d, a2.
  const std::vector<int32_t> after = Ids(*m->block_table(1));
  ASSERT_EQ(after.size(), 3u);
  ASSERT_EQ(after.front(), before.front());
  ASSERT_EQ(after.back(), before.back()) << "the free list's order changed";
  ASSERT_NE(after[1], before[1]);
  const std::vector<SequenceId> batch2 = {1, 2};
  EXPECT_THAT(Delta(e, *m, batch2, tables, lens), ElementsAre(0, 1));
  CheckDense(*m, batch2, 3, -1, tables, lens, 6, 2);
}

// The exporter skips a row by its table version, so every way a table's ids
// change must move the version. These three change a table in the middle or
// rebuild it at the same length; each must be reported (and the buffer must
// equal a full export's).

// Copy-on-write of a block that became a fork's tail, then regrowth onto the
// block its parent just freed: only the middle id differs, same length.
TEST(BlockTableDeltaExporterTest, CopyOnWriteOfAnInteriorSharedBlockIsReported) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 12, 0, &out), IsOk());  // {0, 1, 2}
  ASSERT_THAT(m->Fork(1, 2), IsOk());
  BlockTableDeltaExporter e = MakeExporter(2, 3);
  std::vector<int32_t> tables(6, kSentinel), lens(2, kSentinel);
  EXPECT_THAT(Delta(e, *m, {2, 1}, tables, lens), ElementsAre(0, 1));
  const std::vector<int32_t> before = Ids(*m->block_table(2));

  ASSERT_THAT(m->Truncate(2, 6), IsOk());  // {0, 1}: 1 is shared.
  const SlotRequest into_shared[] = {{.seq = 2, .num_tokens = 2}};
  ASSERT_THAT(m->AppendSlots(into_shared, &out), IsOk());  // 1 -> a copy.
  ASSERT_THAT(m->Truncate(1, 8), IsOk());                  // Frees 2.
  const SlotRequest regrow[] = {{.seq = 2, .num_tokens = 4}};
  ASSERT_THAT(m->AppendSlots(regrow, &out), IsOk());  // Takes 2 back.

  const std::vector<int32_t> after = Ids(*m->block_table(2));
  ASSERT_EQ(after.size(), before.size());
  ASSERT_EQ(after.front(), before.front());
  ASSERT_EQ(after.back(), before.back()) << "the free list's order changed";
  ASSERT_NE(after[1], before[1]);
  EXPECT_THAT(Delta(e, *m, {2, 1}, tables, lens), ElementsAre(0, 1));
  CheckDense(*m, std::vector<SequenceId>{2, 1}, 3, -1, tables, lens, 6, 2);
  EXPECT_THAT(Delta(e, *m, {2, 1}, tables, lens), ElementsAre());
}

// Truncate then re-append to the same length: reported when the ids differ;
// when the free list hands back the very same ids the row is unchanged.
TEST(BlockTableDeltaExporterTest, TruncateThenReappendIsReportedIfTheIdsDiffer) {
  std::unique_ptr<KVCacheManager> m = MakeManager(4, 16);
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 12, 0, &out), IsOk());  // {0, 1, 2}
  BlockTableDeltaExporter e = MakeExporter(1, 3);
  std::vector<int32_t> tables(3, kSentinel), lens(1, kSentinel);
  EXPECT_THAT(Delta(e, *m, {1}, tables, lens), ElementsAre(0));
  const SlotRequest regrow[] = {{.seq = 1, .num_tokens = 8}};

  // Same ids back (tail first out, so 1 then 2 come back in order).
  ASSERT_THAT(m->Truncate(1, 4), IsOk());
  ASSERT_THAT(m->AppendSlots(regrow, &out), IsOk());
  ASSERT_THAT(Ids(*m->block_table(1)), ElementsAre(0, 1, 2));
  tables[1] = 1001;  // Not rewritten: the scribble stays.
  EXPECT_THAT(Delta(e, *m, {1}, tables, lens), ElementsAre());
  EXPECT_EQ(tables[1], 1001);
  tables[1] = 1;
  EXPECT_THAT(Delta(e, *m, {1}, tables, lens), ElementsAre());

  // Another sequence takes block 1 in between: {0, 2, 3}.
  ASSERT_THAT(m->Truncate(1, 4), IsOk());
  ASSERT_THAT(m->AddSequence(2, 4, 0, &out), IsOk());
  ASSERT_THAT(m->AppendSlots(regrow, &out), IsOk());
  ASSERT_THAT(Ids(*m->block_table(1)), ElementsAre(0, 2, 3));
  EXPECT_THAT(Delta(e, *m, {1}, tables, lens), ElementsAre(0));
  CheckDense(*m, std::vector<SequenceId>{1}, 3, -1, tables, lens, 3, 1);
}

// Swap out and back in onto other device blocks, same length.
TEST(BlockTableDeltaExporterTest, SwapOutAndInOntoNewBlocksIsReported) {
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
      KVCacheManager::Create({.layout = TinyLayout(4),
                              .num_blocks = 16,
                              .num_host_blocks = 8});
  ASSERT_THAT(made, IsOk());
  KVCacheManager& m = **made;
  StepOutput out;
  ASSERT_THAT(m.AddSequence(1, 8, 0, &out), IsOk());  // {0, 1}
  ASSERT_THAT(m.AddSequence(2, 4, 0, &out), IsOk());  // {2}
  BlockTableDeltaExporter e = MakeExporter(2, 2);
  std::vector<int32_t> tables(4, kSentinel), lens(2, kSentinel);
  EXPECT_THAT(Delta(e, m, {1, 2}, tables, lens), ElementsAre(0, 1));
  ASSERT_THAT(m.SwapOut(1), IsOk());                 // Frees 1, then 0.
  ASSERT_THAT(m.AddSequence(3, 4, 0, &out), IsOk());  // Takes 0.
  ASSERT_THAT(m.SwapIn(1), IsOk());
  ASSERT_THAT(Ids(*m.block_table(1)), ElementsAre(1, 3));
  EXPECT_THAT(Delta(e, m, {1, 2}, tables, lens), ElementsAre(0));
  CheckDense(m, std::vector<SequenceId>{1, 2}, 2, -1, tables, lens, 4, 2);
}

TEST(BlockTableDeltaExporterTest, ErrorsLeaveBuffersAndExporterUnchanged) {
  std::unique_ptr<KVCacheManager> m = ErrorManager();
  BlockTableDeltaExporter e = MakeExporter(3, 3);
  Buffers buf;
  const SequenceId batch[] = {7, 2, 8};
  auto run = [&](absl::Span<const SequenceId> b, size_t tables, size_t lens,
                 size_t changed) {
    return e.Export(*m, b, absl::MakeSpan(buf.tables).first(tables),
                    absl::MakeSpan(buf.lens).first(lens),
                    absl::MakeSpan(buf.changed).first(changed));
  };
  EXPECT_THAT(run(batch, 8, 3, 3),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("block_tables holds 8 entries, needs 9")));
  EXPECT_THAT(run(batch, 9, 2, 3),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("seq_lens holds 2 entries, needs 3")));
  EXPECT_THAT(run(batch, 9, 3, 2),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("changed_rows holds 2 entries, needs 3")));
  const SequenceId four[] = {7, 2, 8, 7};
  EXPECT_THAT(run(four, 64, 64, 64),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a batch of 4 rows, more than max_rows 3")));
  const SequenceId with_preempted[] = {7, 5};
  EXPECT_THAT(
      run(with_preempted, 64, 64, 64),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sequence 5")));
  const SequenceId with_unknown[] = {7, 2, 42};
  EXPECT_THAT(run(with_unknown, 64, 64, 64),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("42")));
  EXPECT_TRUE(buf.Untouched());
  EXPECT_EQ(e.num_valid_rows(), 0);

  ASSERT_THAT(run(batch, 9, 3, 3), IsOk());
  const std::vector<int32_t> tables_after = buf.tables;
  // A failing export after a good one: nothing written, the exporter still
  // vouches for the good one's rows.
  std::unique_ptr<KVCacheManager> wide = MakeManager(4, 32);
  StepOutput out;
  ASSERT_THAT(wide->AddSequence(7, 16, 0, &out), IsOk());  // 4 blocks > 3.
  EXPECT_THAT(e.Export(*wide, batch, absl::MakeSpan(buf.tables),
                       absl::MakeSpan(buf.lens), absl::MakeSpan(buf.changed)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sequence 7 (row 0) has 4 blocks, more than "
                                 "max_blocks 3")));
  EXPECT_EQ(buf.tables, tables_after);
  EXPECT_EQ(e.num_valid_rows(), 3);
  absl::StatusOr<absl::Span<const int32_t>> rows = run(batch, 9, 3, 3);
  ASSERT_THAT(rows, IsOk());
  EXPECT_TRUE(rows->empty());
}

// The delta exporter against a full export, over random serving steps and
// batch changes (append, fork, free, truncate, preempt, swap; rows moved,
// swapped, dropped, added). Every step: the persistent buffer equals a fresh
// full export, and the changed rows are exactly those whose (sequence,
// table) differ from the previous step's, or are new.
class DeltaRandomTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(DeltaRandomTest, MatchesAFullExportEveryStep) {
  const uint32_t seed = GetParam();
  constexpr int32_t kMaxRows = 24;
  ServingHarness h({.layout = TinyLayout(2 + seed % 3),
                    .num_blocks = 128,
                    .num_host_blocks = 32,
                    .seed = seed,
                    .max_prompt = 24});
  // Most tables fit; a batch holding a wider row must fail cleanly.
  constexpr int32_t kWidth = 24;
  const int32_t pad = static_cast<int32_t>(seed % 2) - 1;
  BlockTableDeltaExporter e = MakeExporter(kMaxRows, kWidth, pad);
  std::vector<int32_t> tables(kMaxRows * kWidth, kSentinel);
  std::vector<int32_t> lens(kMaxRows, kSentinel);
  std::vector<SequenceId> batch;
  // What the previous export put in each row (the test's own model).
  std::vector<SequenceId> prev_seq;
  std::vector<std::vector<int32_t>> prev_rows;
  int64_t changed_total = 0, rows_total = 0, too_wide = 0;
  for (int step = 0; step < 600; ++step) {
    h.RandomStep();
    // Evolve the batch like a scheduler: drop what stopped running, then
    // maybe shuffle, swap two rows, drop one, or admit new ones at the end.
    const std::vector<SequenceId> running = h.Running();
    std::set<SequenceId> live(running.begin(), running.end());
    batch.erase(std::remove_if(batch.begin(), batch.end(),
                               [&](SequenceId s) { return !live.count(s); }),
                batch.end());
    const uint32_t change = h.Draw(10);
    if (change == 0) {
      std::shuffle(batch.begin(), batch.end(), h.rng());
    } else if (change == 1 && batch.size() >= 2) {
      std::swap(batch[h.Draw(batch.size())], batch[h.Draw(batch.size())]);
    } else if (change == 2 && !batch.empty()) {
      batch.erase(batch.begin() + h.Draw(batch.size()));
    }
    for (SequenceId s : running) {
      if (batch.size() >= kMaxRows) break;
      const bool giant =
          static_cast<int32_t>(h.manager().block_table(s)->size()) > kWidth;
      if (std::find(batch.begin(), batch.end(), s) == batch.end() &&
          h.Draw(2) == 0 && (!giant || h.Draw(8) == 0)) {
        batch.push_back(s);
      }
    }
    int32_t widest = 0;
    for (SequenceId s : batch) {
      widest = std::max(
          widest, static_cast<int32_t>(h.manager().block_table(s)->size()));
    }
    const std::vector<int32_t> before = tables;
    std::vector<int32_t> changed(kMaxRows, kSentinel);
    absl::StatusOr<absl::Span<const int32_t>> rows =
        e.Export(h.manager(), batch, absl::MakeSpan(tables),
                 absl::MakeSpan(lens), absl::MakeSpan(changed));
    if (widest > kWidth) {
      ASSERT_THAT(rows, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("more than max_blocks")));
      ASSERT_EQ(tables, before);
      ++too_wide;
      // The exporter still holds the previous export (prev_* stay); the
      // scheduler leaves the giant rows out from now on.
      batch.erase(std::remove_if(
                      batch.begin(), batch.end(),
                      [&](SequenceId s) {
                        return static_cast<int32_t>(
                                   h.manager().block_table(s)->size()) > kWidth;
                      }),
                  batch.end());
      continue;
    }
    ASSERT_THAT(rows, IsOk()) << "step " << step;

    // The buffer is a full export's.
    std::vector<int32_t> full(batch.size() * kWidth, kSentinel);
    std::vector<int32_t> full_lens(batch.size(), kSentinel);
    ASSERT_THAT(ExportDenseBlockTables(
                    h.manager(), batch, {.max_blocks = kWidth, .pad_id = pad},
                    absl::MakeSpan(full), absl::MakeSpan(full_lens)),
                IsOk());
    ASSERT_TRUE(std::equal(full.begin(), full.end(), tables.begin()))
        << "step " << step;
    ASSERT_TRUE(std::equal(full_lens.begin(), full_lens.end(), lens.begin()))
        << "step " << step;

    // The changed rows are exactly the model's.
    std::vector<int32_t> want;
    std::vector<std::vector<int32_t>> now_rows;
    for (size_t b = 0; b < batch.size(); ++b) {
      now_rows.push_back(Ids(*h.manager().block_table(batch[b])));
      if (b >= prev_seq.size() || prev_seq[b] != batch[b] ||
          prev_rows[b] != now_rows[b]) {
        want.push_back(static_cast<int32_t>(b));
      }
    }
    ASSERT_THAT(std::vector<int32_t>(rows->begin(), rows->end()),
                ElementsAreArray(want))
        << "step " << step;
    // Rows not reported were not written.
    for (size_t b = 0; b < batch.size(); ++b) {
      if (std::find(want.begin(), want.end(), b) != want.end()) continue;
      ASSERT_TRUE(std::equal(tables.begin() + b * kWidth,
                             tables.begin() + (b + 1) * kWidth,
                             before.begin() + b * kWidth));
    }
    prev_seq = batch;
    prev_rows = std::move(now_rows);
    changed_total += static_cast<int64_t>(rows->size());
    rows_total += static_cast<int64_t>(batch.size());
  }
  // The run exercised the interesting cases: some rows changed, most not.
  EXPECT_GT(changed_total, 0);
  EXPECT_LT(changed_total, rows_total);
  EXPECT_LT(too_wide, 150);
  RecordProperty("changed_rows", static_cast<int>(changed_total));
  RecordProperty("rows", static_cast<int>(rows_total));
  RecordProperty("too_wide", static_cast<int>(too_wide));
}

INSTANTIATE_TEST_SUITE_P(Seeds, DeltaRandomTest,
                         ::testing::Values(11u, 12u, 13u, 14u, 15u, 16u, 17u,
                                           18u, 19u, 20u));

}  // namespace
}  // namespace pagedkv
