// The per-group CSR export and the per-group delta exporter, checked
// against the dense per-group export (ExportDenseGroupBlockTables, whose
// rows window_groups_test checks against a model) over random workloads of
// decode steps, prefill chunks, forks, truncations and preemptions.
#include "cache/serving/group_table_export.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "cache/serving/block_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::GroupedBooksOnlyOptions;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Each;
using ::testing::HasSubstr;

constexpr int32_t kHole = -7;
constexpr int32_t kPad = -3;

// The group-table export's header example: block_tokens 4, group 1 a
// window of 4, sequence 1 with 9 prompt tokens and one decoded.
std::unique_ptr<KVCacheManager> HeaderExample() {
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupedBooksOnlyOptions(32, 4, 1, 1, 4));
  StepOutput out;
  PKV_CHECK(m->AddSequence(1, 9, 10, &out).ok(), "AddSequence");
  const SlotRequest r[] = {{.seq = 1, .num_tokens = 1}};
  PKV_CHECK(m->AppendSlots(r, &out).ok(), "AppendSlots");
  return m;
}

TEST(GroupCsrExportTest, HeaderExampleListsOnlyLivePages) {
  std::unique_ptr<KVCacheManager> m = HeaderExample();
  const KVCacheManager::RunningTable w = *m->group_table(1, 1);
  const SequenceId batch[] = {1};
  int32_t indptr[2], indices[2], last[1], first[1];
  ASSERT_THAT(
      ExportCsrGroupPageTable(*m, 1, batch, indptr, indices, last, first),
      IsOk());
  EXPECT_THAT(indptr, ElementsAre(0, 2));
  EXPECT_THAT(indices, ElementsAre(w.blocks[1].value(), w.blocks[2].value()));
  EXPECT_THAT(last, ElementsAre(2));
  EXPECT_THAT(first, ElementsAre(1));

  // The full group is the ungrouped CSR row: three pages from 0.
  const KVCacheManager::RunningTable f = *m->group_table(1, 0);
  int32_t full_indices[3];
  ASSERT_THAT(
      ExportCsrGroupPageTable(*m, 0, batch, indptr, full_indices, last, first),
      IsOk());
  EXPECT_THAT(indptr, ElementsAre(0, 3));
  EXPECT_THAT(full_indices,
              ElementsAre(f.blocks[0].value(), f.blocks[1].value(),
                          f.blocks[2].value()));
  EXPECT_THAT(first, ElementsAre(0));
}

TEST(GroupCsrExportTest, BadInputWritesNothing) {
  std::unique_ptr<KVCacheManager> m = HeaderExample();
  const SequenceId batch[] = {1};
  int32_t indptr[2] = {5, 5}, indices[2] = {5, 5}, last[1] = {5},
          first[1] = {5};
  const auto untouched = [&] {
    EXPECT_THAT(indptr, Each(5));
    EXPECT_THAT(indices, Each(5));
    EXPECT_THAT(last, Each(5));
    EXPECT_THAT(first, Each(5));
  };
  EXPECT_THAT(ExportCsrGroupPageTable(*m, 1, batch, indptr,
                                      absl::MakeSpan(indices, 1), last, first),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("kv_indices holds 1 entries, needs 2")));
  untouched();
  EXPECT_THAT(ExportCsrGroupPageTable(*m, 1, batch, absl::MakeSpan(indptr, 1),
                                      indices, last, first),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("kv_indptr holds 1 entries, needs 2")));
  EXPECT_THAT(ExportCsrGroupPageTable(*m, 1, batch, indptr, indices, last,
                                      absl::Span<int32_t>()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("first_page holds 0 entries, needs 1")));
  EXPECT_THAT(
      ExportCsrGroupPageTable(*m, 2, batch, indptr, indices, last, first),
      StatusIs(absl::StatusCode::kOutOfRange));
  const SequenceId unknown[] = {1, 9};
  int32_t indptr3[3] = {5, 5, 5}, last2[2] = {5, 5}, first2[2] = {5, 5};
  EXPECT_THAT(ExportCsrGroupPageTable(*m, 1, unknown, indptr3, indices, last2,
                                      first2),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(indptr3, Each(5));
  untouched();

  std::unique_ptr<KVCacheManager> plain = *KVCacheManager::Create(
      {.layout = {.num_layers = 2, .num_kv_heads = 1, .head_dim = 4,
                  .block_tokens = 4},
       .num_blocks = 8,
       .storage = StorageMode::kBooksOnly});
  StepOutput out;
  ASSERT_THAT(plain->AddSequence(1, 3, 1, &out), IsOk());
  EXPECT_THAT(
      ExportCsrGroupPageTable(*plain, 0, batch, indptr, indices, last, first),
      StatusIs(absl::StatusCode::kFailedPrecondition));
  untouched();
}

TEST(GroupDeltaExportTest, BadGroupIsRefused) {
  EXPECT_THAT(BlockTableDeltaExporter::Create(
                  {.max_rows = 1, .max_blocks = 1, .group = -2})
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-2")));
  std::unique_ptr<KVCacheManager> m = HeaderExample();
  BlockTableDeltaExporter e =
      *BlockTableDeltaExporter::Create({.max_rows = 1, .max_blocks = 4,
                                        .group = 2});
  const SequenceId batch[] = {1};
  int32_t tables[4] = {5, 5, 5, 5}, lens[1] = {5}, changed[1];
  EXPECT_THAT(e.Export(*m, batch, tables, lens, changed).status(),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tables, Each(5));
  EXPECT_EQ(e.num_valid_rows(), 0);
}

TEST(GroupDeltaExportTest, AReadmittedSequenceIsRewritten) {
  // Readmission rebuilds the tables on other blocks; its version must move
  // (it once restarted at the preempted one's, and the delta export kept
  // the stale row).
  std::unique_ptr<KVCacheManager> m =
      *KVCacheManager::Create(GroupedBooksOnlyOptions(32, 4, 1, 1, 4));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 6, 10, &out), IsOk());
  const int32_t before = m->group_table(1, 0)->blocks[0].value();
  BlockTableDeltaExporter e = *BlockTableDeltaExporter::Create(
      {.max_rows = 1, .max_blocks = 4, .group = 0});
  const SequenceId batch[] = {1};
  int32_t tables[4], lens[1], changed[1];
  ASSERT_THAT(e.Export(*m, batch, tables, lens, changed), IsOk());
  ASSERT_THAT(m->Preempt(1), IsOk());
  ASSERT_THAT(m->AddSequence(2, 6, 10, &out), IsOk());  // Takes 1's blocks.
  ASSERT_THAT(m->Readmit(1, &out), IsOk());
  const int32_t after = m->group_table(1, 0)->blocks[0].value();
  ASSERT_NE(after, before);
  absl::StatusOr<absl::Span<const int32_t>> rows =
      e.Export(*m, batch, tables, lens, changed);
  ASSERT_THAT(rows, IsOk());
  EXPECT_THAT(*rows, ElementsAre(0));
  EXPECT_EQ(tables[0], after);
}

// Random workloads: after every step, every group's CSR export is the
// dense export's live suffix, and a device copy kept by each group's delta
// exporter (only the rows it reports written) equals the dense export.
class GroupExportPropertyTest : public ::testing::TestWithParam<int> {};

TEST_P(GroupExportPropertyTest, CsrAndDeltaAgreeWithDense) {
  std::mt19937 rng(GetParam());
  constexpr int32_t kBlockTokens = 4;
  constexpr int32_t kWidth = 24;  // 96 tokens at most.
  constexpr int32_t kRows = 8;
  const int32_t window = 3 + static_cast<int32_t>(rng() % 9);
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(
      GroupedBooksOnlyOptions(400, kBlockTokens, 1, 2, window));
  const int32_t groups = m->num_layer_groups();
  std::vector<BlockTableDeltaExporter> exporters;
  std::vector<std::vector<int32_t>> device(groups);
  for (int32_t g = 0; g < groups; ++g) {
    exporters.push_back(*BlockTableDeltaExporter::Create(
        {.max_rows = kRows, .max_blocks = kWidth, .pad_id = kPad, .group = g,
         .hole_id = kHole}));
    device[g].assign(kRows * kWidth, 0);
  }
  std::vector<SequenceId> live;
  SequenceId next = 1;
  StepOutput out;
  int64_t checked_rows = 0, hole_entries = 0;
  for (int step = 0; step < 300; ++step) {
    const uint32_t op = rng() % 10;
    if (live.size() < 5 && op < 3) {
      const int64_t prompt = 1 + rng() % 20;
      if (m->AddSequence(next, prompt, 96 - prompt, &out).ok()) {
        live.push_back(next);
      }
      ++next;
    } else if (!live.empty() && live.size() < 6 && op == 3) {
      const SequenceId parent = live[rng() % live.size()];
      if (m->Fork(parent, next).ok()) live.push_back(next);
      ++next;
    } else if (!live.empty() && op == 4) {
      const size_t i = rng() % live.size();
      const int64_t n = *m->num_tokens(live[i]);
      // A cut below what a window released is refused, changing nothing.
      const absl::Status st = m->Truncate(live[i], rng() % (n + 1));
      if (!st.ok()) {
        ASSERT_THAT(st, StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("released already")));
        ASSERT_EQ(*m->num_tokens(live[i]), n);
      }
    } else if (!live.empty() && op == 5) {
      const size_t i = rng() % live.size();
      ASSERT_THAT(m->Free(live[i]), IsOk());
      live.erase(live.begin() + i);
    } else if (!live.empty() && op == 6) {
      // Preempted and readmitted at once: rebuilt tables, new versions.
      const size_t i = rng() % live.size();
      ASSERT_THAT(m->Preempt(live[i]), IsOk());
      if (!m->Readmit(live[i], &out).ok()) {
        ASSERT_THAT(m->Free(live[i]), IsOk());
        live.erase(live.begin() + i);
      }
    } else if (!live.empty()) {
      std::vector<SlotRequest> requests;
      for (SequenceId s : live) {
        const int64_t k = rng() % 4 == 0 ? 1 + rng() % 6 : 1;
        if (*m->num_tokens(s) + k <= 96) {
          requests.push_back({.seq = s, .num_tokens = k});
        }
      }
      if (m->AppendSlots(requests, &out).ok()) out.copies.MarkDone();
    }
    m->CheckInvariants();

    // A batch of the live sequences in random order, with a repeat.
    std::vector<SequenceId> batch = live;
    std::shuffle(batch.begin(), batch.end(), rng);
    if (!batch.empty() && batch.size() < kRows) batch.push_back(batch[0]);
    const size_t rows = batch.size();
    for (int32_t g = 0; g < groups; ++g) {
      std::vector<int32_t> dense(rows * kWidth), lens(rows);
      ASSERT_THAT(ExportDenseGroupBlockTables(
                      *m, g, batch,
                      {.max_blocks = kWidth, .pad_id = kPad, .hole_id = kHole},
                      absl::MakeSpan(dense), absl::MakeSpan(lens)),
                  IsOk());
      std::vector<int32_t> indptr(rows + 1), indices(rows * kWidth),
          last(rows), first(rows);
      ASSERT_THAT(ExportCsrGroupPageTable(
                      *m, g, batch, absl::MakeSpan(indptr),
                      absl::MakeSpan(indices), absl::MakeSpan(last),
                      absl::MakeSpan(first)),
                  IsOk());
      std::vector<int32_t> delta_lens(rows), changed(rows);
      ASSERT_THAT(exporters[g]
                      .Export(*m, batch, absl::MakeSpan(device[g]),
                              absl::MakeSpan(delta_lens),
                              absl::MakeSpan(changed))
                      .status(),
                  IsOk());
      EXPECT_EQ(delta_lens, lens);
      EXPECT_THAT(absl::MakeSpan(device[g]).subspan(0, rows * kWidth),
                  ElementsAreArray(dense))
          << "group " << g << " step " << step;
      ASSERT_EQ(indptr[0], 0);
      for (size_t b = 0; b < rows; ++b) {
        const int32_t* row = &dense[b * kWidth];
        const int32_t entries =
            static_cast<int32_t>((lens[b] + kBlockTokens - 1) / kBlockTokens);
        int32_t holes = 0;
        while (holes < entries && row[holes] == kHole) ++holes;
        hole_entries += holes;
        EXPECT_EQ(first[b], holes) << "row " << b;
        ASSERT_EQ(indptr[b + 1] - indptr[b], entries - holes) << "row " << b;
        for (int32_t i = holes; i < entries; ++i) {
          EXPECT_EQ(indices[indptr[b] + i - holes], row[i]);
        }
        EXPECT_EQ(last[b],
                  entries == 0 ? 0 : lens[b] - (entries - 1) * kBlockTokens);
        if (g == 0) EXPECT_EQ(holes, 0);  // The full group.
        ++checked_rows;
      }
    }
  }
  EXPECT_GT(checked_rows, 1000);
  EXPECT_GT(hole_entries, 100);  // The windows did release blocks.
  for (SequenceId s : live) ASSERT_THAT(m->Free(s), IsOk());
  EXPECT_EQ(m->stats().used_blocks, 0);
}

INSTANTIATE_TEST_SUITE_P(Seeds, GroupExportPropertyTest,
                         ::testing::Range(1, 9));

}  // namespace
}  // namespace pagedkv
