// Replays every golden trace in tests/conformance/golden/ (copied from the
// shared conformance kit, conformance/FORMAT.md) through the real caches and
// compares each op with the recorded answer. One test per file; a failure
// lists every mismatching op as "scenario op#i (opname): what differs".
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/kv_replay/compare.h"
#include "tools/kv_replay/scenario_runner.h"

namespace pagedkv::kv_replay {
namespace {

// Returns $TEST_SRCDIR/$TEST_WORKSPACE/tests/conformance/golden, or the
// source-tree-relative path when run outside `bazel test`.
std::string GoldenDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return "tests/conformance/golden";
  return std::string(srcdir) + "/" +
         (workspace == nullptr ? "pagedkv" : workspace) +
         "/tests/conformance/golden";
}

// Returns the sorted names of the *.json files in GoldenDir().
std::vector<std::string> GoldenFiles() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(GoldenDir(), error)) {
    const std::filesystem::path& path = entry.path();
    if (path.extension() == ".json") names.push_back(path.filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(GoldenFilesTest, AllGoldenFilesArePresent) {
  EXPECT_THAT(
      GoldenFiles(),
      ::testing::IsSupersetOf(
          {"dyn_append_basic.json", "dyn_beam_flow.json", "dyn_crop.json",
           "dyn_pos_0d.json", "dyn_pos_1d.json", "dyn_pos_2d.json",
           "dyn_reset.json", "edc_default.json", "random_public_seed1.json",
           "static_append_basic.json", "static_beam_flow.json",
           "static_overflow.json", "static_positions.json"}))
      << "in " << GoldenDir();
}

class GoldenReplayTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenReplayTest, ReplayMatchesRecordedAnswers) {
  const std::string path = GoldenDir() + "/" + GetParam();
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << "cannot read " << path;
  std::ostringstream text;
  text << in.rdbuf();
  const nlohmann::json expected =
      nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(expected.is_discarded()) << path << ": not valid JSON";

  absl::StatusOr<nlohmann::json> actual = RunTrace(expected);
  ASSERT_TRUE(actual.ok()) << actual.status();

  const TraceComparison cmp = CompareTraces(expected, *actual);
  EXPECT_GT(cmp.num_passed + cmp.num_failed, 0) << "no scenarios in " << path;
  EXPECT_EQ(cmp.num_failed, 0)
      << cmp.num_passed << " passed, " << cmp.num_failed << " failed:\n"
      << absl::StrJoin(cmp.mismatch_lines, "\n");
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param.substr(0, info.param.rfind('.'));
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenReplayTest,
                         ::testing::ValuesIn(GoldenFiles()), TestName);

}  // namespace
}  // namespace pagedkv::kv_replay
