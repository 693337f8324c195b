// kv_stress's window-group presets and capacity comparison.
#include "tools/kv_stress/window_capacity.h"

#include <cstdint>

#include "absl/status/status.h"
#include "cache/serving/layer_groups.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pagedkv::kv_stress {
namespace {

using ::testing::HasSubstr;

TEST(WindowModelTest, GemmaStyleIsOneFullGroupAndFiveWindowGroups) {
  const WindowModel m = *FindWindowModel("Gemma-3-12B-style");
  const std::vector<LayerGroup> g = m.Groups();
  ASSERT_EQ(g.size(), 6u);
  EXPECT_FALSE(g[0].is_window());
  for (int i = 1; i < 6; ++i) EXPECT_EQ(g[i].sliding_window, 1024);
  EXPECT_TRUE(ValidateLayerGroups(m.Layout(16), g).ok());
  const WindowModel mistral = *FindWindowModel("mistral-7b-swa");
  ASSERT_EQ(mistral.Groups().size(), 1u);
  EXPECT_EQ(mistral.Groups()[0].sliding_window, 4096);
  EXPECT_TRUE(ValidateLayerGroups(mistral.Layout(16), mistral.Groups()).ok());
}

TEST(WindowModelTest, UnknownNameListsTheKnownOnes) {
  EXPECT_THAT(FindWindowModel("gpt-9").status().message(),
              HasSubstr("gemma-3-12b-style|mistral-7b-swa"));
}

// The target: >= 3x against all-full float16 at 32k contexts with
// the Gemma-3-style preset. The expected counts follow from the books:
// full: 12 GiB per 32k sequence (2048 blocks of 6 MiB); grouped: 2048 +
// 5 x 64 blocks of 1 MiB after the decode token (the window of token 32767
// starts at token 31744, a block boundary: 64 blocks, not the bound's 65),
// and the last one's prefill peak must fit too.
TEST(WindowCapacityTest, GemmaStyleAt32kHoldsAtLeastThreeTimesFullAttention) {
  const WindowModel m = *FindWindowModel("gemma-3-12b-style");
  const WindowCapacityConfig config{.pool_bytes = int64_t{64} << 30,
                                    .context_tokens = 32768};
  const WindowCapacity c = *MeasureWindowCapacity(m, config);
  EXPECT_EQ(c.full_sequences, 5);  // 64 GiB / 12 GiB.
  EXPECT_EQ(c.grouped_blocks, 65536);
  EXPECT_EQ(c.grouped_blocks_per_sequence, 2048 + 5 * 64);
  EXPECT_EQ(c.grouped_sequences, 27);  // floor(65536 / 2368).
  EXPECT_GE(c.ratio(), 3.0);
  EXPECT_GT(c.window_released_blocks, 0);
  EXPECT_THAT(FormatWindowCapacity(m, config, c), HasSubstr("5.40x"));
  EXPECT_THAT(WindowCapacityJson(m, config, c),
              HasSubstr("\"capacity_ratio\": 5.4000"));
}

TEST(WindowCapacityTest, MistralWindowAt32k) {
  const WindowModel m = *FindWindowModel("mistral-7b-swa");
  const WindowCapacity c = *MeasureWindowCapacity(
      m, {.pool_bytes = int64_t{16} << 30, .context_tokens = 32768});
  // 4 GiB per full 32k sequence; a 4096 window keeps 256 blocks.
  EXPECT_EQ(c.full_sequences, 4);
  EXPECT_EQ(c.grouped_blocks_per_sequence, 256);
  EXPECT_GE(c.ratio(), 6.0);
}

TEST(WindowCapacityTest, BadConfigIsInvalidArgumentWithTheNumbers) {
  const WindowModel m = *FindWindowModel("mistral-7b-swa");
  EXPECT_THAT(MeasureWindowCapacity(m, {.context_tokens = 0}).status().message(),
              HasSubstr("context_tokens 0"));
  EXPECT_EQ(MeasureWindowCapacity(m, {.pool_bytes = 1 << 20}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pagedkv::kv_stress
