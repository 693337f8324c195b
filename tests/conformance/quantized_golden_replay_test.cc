// Replays every golden trace on quantized KV blocks (issue #15): int8 and
// fp8 e4m3 private pools, the recorded answers compared within the documented
// tolerance (tools/kv_replay/compare.h, README "Quantized KV"). Errors,
// lengths, shapes and dtypes must still match exactly.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_join.h"
#include "cache/storage/kv_layout.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/kv_replay/compare.h"
#include "tools/kv_replay/scenario_runner.h"

namespace pagedkv::kv_replay {
namespace {

// The tolerances README "Quantized KV" documents.
constexpr double kInt8Tolerance = 0.004;
constexpr double kFp8Tolerance = 0.0625;

std::string GoldenDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return "tests/conformance/golden";
  return std::string(srcdir) + "/" +
         (workspace == nullptr ? "pagedkv" : workspace) +
         "/tests/conformance/golden";
}

std::vector<std::string> GoldenFiles() {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(GoldenDir(), error)) {
    if (entry.path().extension() == ".json") {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

nlohmann::json Load(const std::string& name) {
  std::ifstream in(GoldenDir() + "/" + name, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
}

using Param = std::tuple<std::string, KVStorage>;

class QuantizedGoldenReplayTest : public ::testing::TestWithParam<Param> {};

TEST_P(QuantizedGoldenReplayTest, ReplayMatchesWithinTheTolerance) {
  const auto& [file, storage] = GetParam();
  const nlohmann::json expected = Load(file);
  ASSERT_FALSE(expected.is_discarded()) << file;
  absl::StatusOr<nlohmann::json> actual =
      RunTrace(expected, {.storage = storage});
  ASSERT_TRUE(actual.ok()) << actual.status();
  EXPECT_EQ((*actual)["meta"]["storage"], std::string(KVStorageName(storage)));
  const double tolerance =
      storage == KVStorage::kInt8 ? kInt8Tolerance : kFp8Tolerance;
  const TraceComparison cmp =
      CompareTraces(expected, *actual, {.tolerance = tolerance});
  EXPECT_GT(cmp.num_passed + cmp.num_failed, 0);
  EXPECT_EQ(cmp.num_failed, 0)
      << cmp.num_passed << " passed, " << cmp.num_failed << " failed:\n"
      << absl::StrJoin(cmp.mismatch_lines, "\n");
}

// The tolerance is not vacuous: quantization really changes the bytes, so
// an exact comparison fails somewhere in the traces.
TEST(QuantizedGoldenReplayTest, QuantizedReplaysAreNotExact) {
  const nlohmann::json expected = Load("dyn_append_basic.json");
  ASSERT_FALSE(expected.is_discarded());
  absl::StatusOr<nlohmann::json> actual =
      RunTrace(expected, {.storage = KVStorage::kFp8E4M3});
  ASSERT_TRUE(actual.ok()) << actual.status();
  EXPECT_GT(CompareTraces(expected, *actual).num_failed, 0);
}

std::string TestName(const ::testing::TestParamInfo<Param>& info) {
  std::string name = std::get<0>(info.param);
  name = name.substr(0, name.rfind('.'));
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name + "_" + std::string(KVStorageName(std::get<1>(info.param)));
}

// Every trace on int8 (the requirement); fp8 on the traces that
// exercise copy-on-write, positional writes and both halves of an
// encoder-decoder cache (CI time: each trace costs about 0.6 s unoptimised).
INSTANTIATE_TEST_SUITE_P(
    Int8, QuantizedGoldenReplayTest,
    ::testing::Combine(::testing::ValuesIn(GoldenFiles()),
                       ::testing::Values(KVStorage::kInt8)),
    TestName);
INSTANTIATE_TEST_SUITE_P(
    Fp8, QuantizedGoldenReplayTest,
    ::testing::Combine(::testing::Values("dyn_beam_flow.json",
                                         "static_positions.json",
                                         "edc_default.json"),
                       ::testing::Values(KVStorage::kFp8E4M3)),
    TestName);

}  // namespace
}  // namespace pagedkv::kv_replay
