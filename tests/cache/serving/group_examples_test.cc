// The usage examples of the layer-group headers (window_table.h,
// layer_groups.h, group_table_export.h), compiled and run, each copied
// between "// BEGIN <header>" and "// END <header>" exactly as in the
// header (//tests/cache/serving:group_examples_drift_test fails when a
// copy and its header differ); what the examples' comments promise is
// checked after each END.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "allocator/block_pool.h"
#include "allocator/window_table.h"
#include "base/status_macros.h"
#include "cache/serving/group_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::testing::ElementsAre;

TEST(GroupExamplesTest, WindowTable) {
  std::unique_ptr<BlockPool> owned = *BlockPool::Create({.num_blocks = 4});
  BlockPool* pool = owned.get();
  {
    // clang-format off
    // BEGIN allocator/window_table.h
    WindowTable table(pool);                     // pool outlives the table.
    table.Append(*pool->TryAllocate());          // Entry 0.
    table.Append(*pool->TryAllocate());          // Entry 1.
    table.ReleaseBefore(1);                      // Entry 0 is a hole now.
    table.num_entries();                         // 2
    table.num_live();                            // 1
    table.entries()[0].is_valid();               // false
    // END allocator/window_table.h
    // clang-format on
    EXPECT_EQ(table.num_entries(), 2);
    EXPECT_EQ(table.num_live(), 1);
    EXPECT_FALSE(table.entries()[0].is_valid());
    EXPECT_TRUE(table.entries()[1].is_valid());
    EXPECT_EQ(pool->num_free_blocks(), 3);
  }
  EXPECT_EQ(pool->num_free_blocks(), 4);  // The table gave its block back.
}

absl::Status LayerGroupsExample(const KVLayout& layout, KVLayout* out) {
  // clang-format off
  // BEGIN cache/serving/layer_groups.h
  const LayerGroup groups[] = {
      {.num_layers = 8},                            // The 8 full layers.
      {.num_layers = 8, .sliding_window = 1024},    // 5 groups of 8
      {.num_layers = 8, .sliding_window = 1024},    // window layers.
      {.num_layers = 8, .sliding_window = 1024},
      {.num_layers = 8, .sliding_window = 1024},
      {.num_layers = 8, .sliding_window = 1024}};
  PKV_RETURN_IF_ERROR(ValidateLayerGroups(layout, groups));
  KVLayout block = GroupBlockLayout(layout, groups);  // num_layers 8.
  // END cache/serving/layer_groups.h
  // clang-format on
  *out = block;
  return absl::OkStatus();
}

TEST(GroupExamplesTest, LayerGroups) {
  const KVLayout layout{.num_layers = 48, .num_kv_heads = 8, .head_dim = 128,
                        .block_tokens = 16};
  KVLayout block;
  ASSERT_THAT(LayerGroupsExample(layout, &block), IsOk());
  EXPECT_EQ(block.num_layers, 8);
  EXPECT_EQ(block.num_kv_heads, 8);
  EXPECT_EQ(block.block_bytes() * 6, layout.block_bytes());
  KVLayout unused;
  const KVLayout forty{.num_layers = 40, .num_kv_heads = 8, .head_dim = 128,
                       .block_tokens = 16};
  EXPECT_FALSE(LayerGroupsExample(forty, &unused).ok());  // 48 != 40.
}

// The export header's sequence: block_tokens 4, group 1 a window of 4,
// sequence 1 with 9 prompt tokens and one more.
absl::Status DenseExample(const KVCacheManager& manager, int32_t* tables_out,
                          int32_t* lens_out) {
  // clang-format off
  // BEGIN cache/serving/group_table_export.h
  int32_t tables[4], lens[1];
  const SequenceId batch[] = {1};
  PKV_RETURN_IF_ERROR(ExportDenseGroupBlockTables(
      manager, /*group=*/1, batch, {.max_blocks = 4, .pad_id = 0}, tables,
      lens));
  // tables == {-1, b1, b2, 0}: entry 0 a hole, blocks 1 and 2, a pad.
  // END cache/serving/group_table_export.h
  // clang-format on
  std::copy(tables, tables + 4, tables_out);
  lens_out[0] = lens[0];
  return absl::OkStatus();
}

absl::Status CsrExample(const KVCacheManager& manager, int32_t* out) {
  const SequenceId batch[] = {1};
  // clang-format off
  // BEGIN cache/serving/group_table_export.h
  int32_t indptr[2], indices[2], last[1], first[1];
  PKV_RETURN_IF_ERROR(ExportCsrGroupPageTable(
      manager, /*group=*/1, batch, indptr, indices, last, first));
  // indptr == {0, 2}, indices == {b1, b2}, last == {2}, first == {1}.
  // END cache/serving/group_table_export.h
  // clang-format on
  const int32_t all[] = {indptr[0], indptr[1], indices[0], indices[1],
                         last[0],   first[0]};
  std::copy(all, all + 6, out);
  return absl::OkStatus();
}

TEST(GroupExamplesTest, GroupTableExport) {
  std::unique_ptr<KVCacheManager> m = *KVCacheManager::Create(
      ::pagedkv::testing::GroupedBooksOnlyOptions(32, 4, 1, 1, 4));
  StepOutput out;
  ASSERT_THAT(m->AddSequence(1, 9, 10, &out), IsOk());
  const SlotRequest r[] = {{.seq = 1, .num_tokens = 1}};
  ASSERT_THAT(m->AppendSlots(r, &out), IsOk());
  const KVCacheManager::RunningTable w = *m->group_table(1, 1);
  const int32_t b1 = w.blocks[1].value(), b2 = w.blocks[2].value();
  int32_t tables[4], lens[1];
  ASSERT_THAT(DenseExample(*m, tables, lens), IsOk());
  EXPECT_THAT(tables, ElementsAre(-1, b1, b2, 0));
  EXPECT_THAT(lens, ElementsAre(10));
  int32_t csr[6];
  ASSERT_THAT(CsrExample(*m, csr), IsOk());
  EXPECT_THAT(csr, ElementsAre(0, 2, b1, b2, 2, 1));
}

}  // namespace
}  // namespace pagedkv
