#include "tools/kv_replay/compare.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace pagedkv::kv_replay {
namespace {

using ::nlohmann::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A dynamic-cache trace: an update of layer 0, then a get_seq_length.
json DynamicTrace() {
  return json::parse(R"({"meta": {}, "scenarios": [{
    "name": "dyn", "ctor": {"cls": "DynamicKVCache"}, "ops": [
      {"op": "update", "i": 0, "layer": 0, "shape": [1, 1, 2, 2], "base": 1,
       "error": null,
       "result": {
         "k": {"shape": [1, 1, 2, 2], "dtype": "float32", "sum": 602,
               "wsum": 1706, "fnv1a64": "629e0aed02c309d6",
               "probe": [[100, 200]]},
         "v": {"shape": [1, 1, 2, 2], "dtype": "float32", "sum": -602,
               "wsum": -1706, "fnv1a64": "6ccb6ad5c381a2d6",
               "probe": [[-100, -200]]}},
       "state": {"cls": "DynamicKVCache", "num_slots": 1,
         "max_cache_shape": null,
         "layers": [{"allocated": true, "seq_len": 2,
           "storage_shape": [1, 1, 2, 2],
           "visible": {
             "k": {"shape": [1, 1, 2, 2], "dtype": "float32", "sum": 602,
                   "wsum": 1706, "fnv1a64": "629e0aed02c309d6",
                   "probe": [[100, 200]]},
             "v": {"shape": [1, 1, 2, 2], "dtype": "float32", "sum": -602,
                   "wsum": -1706, "fnv1a64": "6ccb6ad5c381a2d6",
                   "probe": [[-100, -200]]}}}]}},
      {"op": "get_seq_length", "i": 1, "layer": 5, "error": null,
       "result": 0,
       "state": {"cls": "DynamicKVCache", "num_slots": 1,
         "max_cache_shape": null,
         "layers": [{"allocated": true, "seq_len": 2,
           "storage_shape": [1, 1, 2, 2],
           "visible": {
             "k": {"shape": [1, 1, 2, 2], "dtype": "float32", "sum": 602,
                   "wsum": 1706, "fnv1a64": "629e0aed02c309d6",
                   "probe": [[100, 200]]},
             "v": {"shape": [1, 1, 2, 2], "dtype": "float32", "sum": -602,
                   "wsum": -1706, "fnv1a64": "6ccb6ad5c381a2d6",
                   "probe": [[-100, -200]]}}}]}}]}]})");
}

// An encoder-decoder trace: one failing crop with empty halves.
json EncoderDecoderTrace() {
  return json::parse(R"({"meta": {}, "scenarios": [{
    "name": "edc", "ctor": {"cls": "EncoderDecoderCache", "self": null,
                            "cross": null},
    "ops": [{"op": "crop", "i": 0, "max_length": -1, "result": null,
      "error": {"type": "INVALID_ARGUMENT", "message": "negative"},
      "state": {"cls": "EncoderDecoderCache", "is_updated": {"1": true},
        "max_cache_shape": null,
        "self": {"cls": "DynamicKVCache", "num_slots": 0, "layers": [],
                 "max_cache_shape": null},
        "cross": {"cls": "DynamicKVCache", "num_slots": 2,
                  "max_cache_shape": null,
                  "layers": [{"allocated": false, "seq_len": 0,
                              "storage_shape": null}]}}}]}]})");
}

json& Op(json& trace, int scenario, int op) {
  return trace["scenarios"][scenario]["ops"][op];
}

TEST(CompareTest, IdenticalTracesPass) {
  const TraceComparison cmp = CompareTraces(DynamicTrace(), DynamicTrace());
  EXPECT_EQ(cmp.num_passed, 1);
  EXPECT_EQ(cmp.num_failed, 0);
  EXPECT_THAT(cmp.mismatch_lines, IsEmpty());
}

TEST(CompareTest, TamperedResultSumIsDetected) {
  json expected = DynamicTrace();
  Op(expected, 0, 0)["result"]["k"]["sum"] = 603;
  const TraceComparison cmp = CompareTraces(expected, DynamicTrace());
  EXPECT_EQ(cmp.num_passed, 0);
  EXPECT_EQ(cmp.num_failed, 1);
  ASSERT_THAT(cmp.mismatch_lines,
              ElementsAre(HasSubstr("dyn op#0 (update): ")));
  EXPECT_THAT(cmp.mismatch_lines[0],
              HasSubstr("result.k.sum: expected 603, got 602"));
  EXPECT_FALSE(cmp.scenarios[0].passed);
}

TEST(CompareTest, TamperedVisibleHashInStateIsDetected) {
  json expected = DynamicTrace();
  Op(expected, 0, 1)["state"]["layers"][0]["visible"]["v"]["fnv1a64"] =
      "0000000000000000";
  const TraceComparison cmp = CompareTraces(expected, DynamicTrace());
  ASSERT_THAT(cmp.mismatch_lines,
              ElementsAre(HasSubstr("dyn op#1 (get_seq_length): ")));
  EXPECT_THAT(cmp.mismatch_lines[0],
              HasSubstr("state.layers[0].visible.v.fnv1a64"));
}

TEST(CompareTest, TamperedScalarResultIsDetected) {
  json expected = DynamicTrace();
  Op(expected, 0, 1)["result"] = 2;
  const TraceComparison cmp = CompareTraces(expected, DynamicTrace());
  ASSERT_THAT(cmp.mismatch_lines,
              ElementsAre(HasSubstr("result: expected 2, got 0")));
}

TEST(CompareTest, ErrorVersusSuccessIsDetected) {
  json actual = DynamicTrace();
  Op(actual, 0, 0)["error"] = {{"type", "OUT_OF_RANGE"}, {"message", "no"}};
  Op(actual, 0, 0)["result"] = nullptr;
  const TraceComparison cmp = CompareTraces(DynamicTrace(), actual);
  ASSERT_THAT(cmp.mismatch_lines,
              ElementsAre(HasSubstr("error: expected \"no error\", got "
                                    "\"OUT_OF_RANGE (no)\"")));
}

TEST(CompareTest, ErrorTypeAndMessageAreNotCompared) {
  json actual = EncoderDecoderTrace();
  Op(actual, 0, 0)["error"] = {{"type", "OUT_OF_RANGE"}, {"message", "x"}};
  EXPECT_EQ(CompareTraces(EncoderDecoderTrace(), actual).num_failed, 0);
}

TEST(CompareTest, IgnoredFieldsAndDTypeSpellingsDoNotMatter) {
  json actual = DynamicTrace();
  json& op = Op(actual, 0, 0);
  op["result"]["k"]["probe"] = json::array();
  op["result"]["k"]["dtype"] = "fp32";
  op["result"]["v"]["dtype"] = "kFloat32";
  op["result"]["v"]["fnv1a64"] = "6CCB6AD5C381A2D6";
  op["state"]["num_slots"] = nullptr;
  op["state"]["max_cache_shape"] = 99;
  op["state"]["cls"] = "PagedKVCache";
  op["state"]["layers"][0]["storage_shape"] = nullptr;
  const TraceComparison cmp = CompareTraces(DynamicTrace(), actual);
  EXPECT_THAT(cmp.mismatch_lines, IsEmpty());
  EXPECT_EQ(cmp.num_passed, 1);
}

TEST(CompareTest, WrongDTypeIsDetected) {
  json actual = DynamicTrace();
  Op(actual, 0, 0)["result"]["k"]["dtype"] = "half";
  EXPECT_THAT(CompareTraces(DynamicTrace(), actual).mismatch_lines,
              ElementsAre(HasSubstr("result.k.dtype")));
}

TEST(CompareTest, MissingAbsentLayersCountAsLengthZero) {
  json actual = EncoderDecoderTrace();
  Op(actual, 0, 0)["state"]["cross"]["layers"] = json::array();
  Op(actual, 0, 0)["state"]["self"]["layers"] = json::parse(
      R"([{"allocated": false, "seq_len": 0, "storage_shape": null}])");
  EXPECT_EQ(CompareTraces(EncoderDecoderTrace(), actual).num_failed, 0);
}

TEST(CompareTest, MissingPresentLayerIsDetected) {
  json actual = DynamicTrace();
  Op(actual, 0, 1)["state"]["layers"] = json::array();
  EXPECT_THAT(CompareTraces(DynamicTrace(), actual).mismatch_lines,
              ElementsAre(AllOf(HasSubstr("state.layers[0].allocated"),
                                HasSubstr("state.layers[0].seq_len"))));
}

TEST(CompareTest, IsUpdatedSetDifferenceIsDetected) {
  json actual = EncoderDecoderTrace();
  Op(actual, 0, 0)["state"]["is_updated"] = {{"0", true}};
  EXPECT_THAT(CompareTraces(EncoderDecoderTrace(), actual).mismatch_lines,
              ElementsAre(HasSubstr(
                  "edc op#0 (crop): state.is_updated: expected {1}, got {0}")));
}

TEST(CompareTest, CrossHalfDifferenceIsDetected) {
  json actual = EncoderDecoderTrace();
  Op(actual, 0, 0)["state"]["cross"]["layers"][0]["seq_len"] = 3;
  EXPECT_THAT(CompareTraces(EncoderDecoderTrace(), actual).mismatch_lines,
              ElementsAre(HasSubstr("state.cross.layers[0].seq_len")));
}

TEST(CompareTest, MissingScenarioFails) {
  const json actual = json::parse(R"({"meta": {}, "scenarios": []})");
  const TraceComparison cmp = CompareTraces(DynamicTrace(), actual);
  EXPECT_EQ(cmp.num_failed, 1);
  EXPECT_THAT(cmp.mismatch_lines, ElementsAre("dyn: missing from the output"));
}

TEST(CompareTest, ScenarioThatStopsEarlyFails) {
  json actual = DynamicTrace();
  actual["scenarios"][0]["ops"].erase(1);
  const TraceComparison cmp = CompareTraces(DynamicTrace(), actual);
  EXPECT_EQ(cmp.num_failed, 1);
  EXPECT_THAT(cmp.mismatch_lines,
              ElementsAre(HasSubstr("dyn op#1 (get_seq_length): missing")));
}

TEST(CompareTest, NormalizesDTypeSpellings) {
  EXPECT_EQ(NormalizeDTypeName("f32"), "float32");
  EXPECT_EQ(NormalizeDTypeName("FP16"), "float16");
  EXPECT_EQ(NormalizeDTypeName("half"), "float16");
  EXPECT_EQ(NormalizeDTypeName("kBFloat16"), "bfloat16");
  EXPECT_EQ(NormalizeDTypeName("float16"), "float16");
}

}  // namespace
}  // namespace pagedkv::kv_replay
