// Tests of kv_stress's flag help: each preset-backed flag says what each
// preset uses, grouped, and the text follows the presets.
#include "tools/kv_stress/flag_help.h"

#include <string>
#include <string_view>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(PresetFlagHelpTest, ListsEachPresetsValue) {
  EXPECT_EQ(PresetFlagHelp("Scheduler steps to run", "steps"),
            "Scheduler steps to run [-1: the preset's value; chat: 40000; "
            "beam: 10000; long: 8000; tiny: 400; mooncake: 0; shared_prefix: "
            "6000]");
}

TEST(PresetFlagHelpTest, GroupsPresetsWithTheSameValue) {
  EXPECT_EQ(PresetFlagHelp("Layers", "layers"),
            "Layers [-1: the preset's value; chat, beam, long, shared_prefix: "
            "8; tiny: 2; mooncake: 32]");
}

TEST(PresetFlagHelpTest, SaysOnceWhenEveryPresetAgrees) {
  EXPECT_EQ(PresetFlagHelp("Max running requests", "max_running"),
            "Max running requests [-1: the preset's value, 256 in every "
            "preset]");
}

TEST(PresetFlagHelpTest, StringFlagsNameTheEmptyDefault) {
  EXPECT_EQ(PresetFlagHelp("float32|float16|bfloat16", "dtype"),
            "float32|float16|bfloat16 [\"\": the preset's value; chat, beam, "
            "long, tiny, shared_prefix: float16; mooncake: bfloat16]");
  EXPECT_THAT(PresetFlagHelp("Preemption", "policy"),
              HasSubstr("newest_first in every preset"));
  // --kv_dtype is a string flag too (its help once said "-1").
  EXPECT_THAT(PresetFlagHelp("Storage", "kv_dtype"),
              HasSubstr("[\"\": the preset's value"));
}

TEST(PresetFlagHelpTest, PrefixCachingIsOnForTheTracePresetAndSessions) {
  EXPECT_EQ(PresetFlagHelp("Prefix caching", "prefix_caching"),
            "Prefix caching [\"\": the preset's value; chat, beam, long, "
            "tiny: false; mooncake, shared_prefix: true]");
  EXPECT_THAT(PresetFlagHelp("Compare", "compare_prefix_caching"),
              HasSubstr("shared_prefix: true]"));
}

TEST(PresetFlagHelpTest, PoolSizeInMiBFollowsThePresetGeometry) {
  // tiny: 192 blocks of 2 layers x K|V x 2 heads x 16 tokens x 16 x 2 bytes.
  EXPECT_THAT(PresetFlagHelp("Pool size in MiB", "pool_mb"),
              HasSubstr("chat, beam, long, shared_prefix: 512; tiny: 0.75; "
                        "mooncake: 32768]"));
}

TEST(PresetFlagHelpTest, EveryPresetFlagMentionsEveryPreset) {
  ASSERT_FALSE(PresetFlagNames().empty());
  for (std::string_view flag : PresetFlagNames()) {
    const std::string help = PresetFlagHelp("Help", flag);
    SCOPED_TRACE(help);
    EXPECT_THAT(help, StartsWith("Help ["));
    EXPECT_THAT(help, HasSubstr(": the preset's value"));
    EXPECT_THAT(help, EndsWith("]"));
    if (help.find("in every preset]") == std::string::npos) {
      for (std::string_view preset : kPresetNames) {
        EXPECT_THAT(help, HasSubstr(std::string(preset)));
      }
    }
  }
}

TEST(PresetFlagHelpDeathTest, FlagWithoutPresetFieldAborts) {
  EXPECT_DEATH(PresetFlagHelp("Random seed", "seed"),
               "no preset field for flag --seed");
}

}  // namespace
}  // namespace pagedkv::kv_stress
