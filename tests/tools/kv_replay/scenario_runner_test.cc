#include "tools/kv_replay/scenario_runner.h"

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace pagedkv::kv_replay {
namespace {

using ::nlohmann::json;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;

// Runs a one-scenario dynamic-cache trace made of `ops` and returns its ops.
json RunDynamicOps(const std::string& ops) {
  const json scenario = json::parse(
      R"({"name": "t", "ctor": {"cls": "DynamicKVCache"}, "ops": )" + ops +
      "}");
  absl::StatusOr<json> out = RunScenario(scenario);
  EXPECT_THAT(out, IsOk());
  return out.ok() ? (*out)["ops"] : json::array();
}

bool Failed(const json& op) { return !op["error"].is_null(); }

TEST(ScenarioRunnerTest, UpdateRecordsResultAndState) {
  const json ops = RunDynamicOps(
      R"([{"op": "update", "layer": 1, "shape": [1, 1, 2, 2], "base": 1,
           "i": 0, "result": "ignored", "state": "ignored"}])");
  ASSERT_EQ(ops.size(), 1u);
  const json& op = ops[0];
  EXPECT_EQ(op["i"], 0);
  EXPECT_EQ(op["layer"], 1);  // Argument fields are copied.
  EXPECT_TRUE(op["error"].is_null());
  EXPECT_EQ(op["result"]["k"]["sum"], 602);
  EXPECT_EQ(op["result"]["k"]["fnv1a64"], "629e0aed02c309d6");
  EXPECT_EQ(op["result"]["v"]["sum"], -602);
  const json& layers = op["state"]["layers"];
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0]["allocated"], false);
  EXPECT_EQ(layers[0]["seq_len"], 0);
  EXPECT_FALSE(layers[0].contains("visible"));
  EXPECT_EQ(layers[1]["allocated"], true);
  EXPECT_EQ(layers[1]["seq_len"], 2);
  EXPECT_EQ(layers[1]["visible"]["k"]["wsum"], 1706);
}

TEST(ScenarioRunnerTest, InexpressibleInputsAreRejectedAsInvalidArgument) {
  const json ops = RunDynamicOps(R"([
      {"op": "update", "layer": 0, "shape": [1, 2, 2], "base": 1},
      {"op": "update", "layer": 0, "shape": [1, 1, 1, 2], "base": 1,
       "kv_dtype": "float64"},
      {"op": "update", "layer": 0, "shape": [1, 1, 1, 2], "base": 1,
       "pos": [0.0], "pos_dtype": "float32"},
      {"op": "update", "layer": 0, "shape": [1, 1, 1, 2], "base": 1,
       "pos": [[[0]]]},
      {"op": "update", "layer": 0, "shape": [2, 1, 2, 2], "base": 1,
       "pos": [[0, 1], [0]]},
      {"op": "reorder_cache", "idx": [true], "idx_dtype": "bool"},
      {"op": "reorder_cache", "idx": [0.0], "idx_dtype": "float32"},
      {"op": "batch_select_indices", "idx": [[0]], "idx_dtype": "int64"}])");
  ASSERT_EQ(ops.size(), 8u);
  for (const json& op : ops) {
    ASSERT_TRUE(Failed(op)) << op.dump();
    EXPECT_EQ(op["error"]["type"], "INVALID_ARGUMENT") << op.dump();
    EXPECT_EQ(op["state"]["layers"], json::array()) << op.dump();
  }
}

TEST(ScenarioRunnerTest, PositionsAndIndicesReachTheCache) {
  const json ops = RunDynamicOps(R"([
      {"op": "update", "layer": 0, "shape": [2, 1, 2, 2], "base": 1,
       "pos": [[0, 3], [1, 2]], "pos_dtype": "int64"},
      {"op": "update", "layer": 0, "shape": [2, 1, 1, 2], "base": 9,
       "pos": 5},
      {"op": "update", "layer": 0, "shape": [2, 1, 1, 2], "base": 9,
       "pos": []},
      {"op": "reorder_cache", "idx": [1, 1, 0], "idx_dtype": "int32"},
      {"op": "get_seq_length"},
      {"op": "get", "layer": 3},
      {"op": "get_max_cache_shape"}])");
  ASSERT_EQ(ops.size(), 7u);
  EXPECT_FALSE(Failed(ops[0])) << ops[0].dump();
  EXPECT_EQ(ops[0]["state"]["layers"][0]["seq_len"], 4);
  EXPECT_FALSE(Failed(ops[1])) << ops[1].dump();
  EXPECT_EQ(ops[1]["state"]["layers"][0]["seq_len"], 6);
  EXPECT_TRUE(Failed(ops[2]));  // The API rejects an empty position list.
  EXPECT_FALSE(Failed(ops[3])) << ops[3].dump();
  EXPECT_EQ(ops[3]["state"]["layers"][0]["visible"]["k"]["shape"],
            json::parse("[3, 1, 6, 2]"));
  EXPECT_EQ(ops[4]["result"], 6);
  EXPECT_FALSE(Failed(ops[5]));
  EXPECT_TRUE(ops[5]["result"].is_null());
  EXPECT_TRUE(ops[6]["result"].is_null());
}

TEST(ScenarioRunnerTest, EncoderDecoderStateHasBothHalves) {
  const json scenario = json::parse(R"({"name": "e",
      "ctor": {"cls": "EncoderDecoderCache",
               "self": {"cls": "StaticKVCache", "max_cache_len": 4,
                        "num_layers": 2},
               "cross": null},
      "ops": [{"op": "update", "layer": 1, "shape": [1, 1, 3, 2], "base": 1,
               "cross": true},
              {"op": "get_max_cache_shape"}]})");
  absl::StatusOr<json> out = RunScenario(scenario);
  ASSERT_THAT(out, IsOk());
  const json& state = (*out)["ops"][0]["state"];
  EXPECT_EQ(state["is_updated"], json::parse(R"({"1": true})"));
  EXPECT_EQ(state["self"]["layers"].size(), 2u);
  EXPECT_EQ(state["cross"]["layers"][1]["seq_len"], 3);
  EXPECT_EQ((*out)["ops"][1]["result"], 4);
}

// An op name outside the format is a malformed trace, not a recorded
// error (it replayed with exit 0 before, so a typo passed --check).
TEST(ScenarioRunnerTest, UnknownOpIsAMalformedTrace) {
  EXPECT_THAT(RunScenario(json::parse(
                  R"({"name": "t", "ctor": {"cls": "DynamicKVCache"},
              "ops": [{"op": "frobnicate"}]})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("op#0 (frobnicate): unknown op 'frobnicate' "
                                 "(known: update, ")));
}

TEST(ScenarioRunnerTest, MalformedScenarioIsAnError) {
  EXPECT_THAT(RunScenario(json::parse(R"({"name": "x"})")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RunScenario(json::parse(
                  R"({"name": "x", "ctor": {"cls": "Nope"}, "ops": []})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Nope")));
  EXPECT_THAT(
      RunScenario(json::parse(
          R"({"name": "x", "ctor": {"cls": "DynamicKVCache"},
                      "ops": [{"op": "crop"}]})")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_length")));
  EXPECT_THAT(RunTrace(json::parse(R"({"meta": {}})")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace pagedkv::kv_replay
