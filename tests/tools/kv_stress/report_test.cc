// Tests of the kv_stress report: the JSON keys, the table and the SVG.
#include "tools/kv_stress/report.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const SimResult& TinyResult() {
  static const SimResult* result = [] {
    absl::StatusOr<SimConfig> c = PresetConfig("tiny");
    PKV_CHECK(c.ok(), "tiny preset");
    c->steps = 200;
    absl::StatusOr<SimResult> r = RunSimulation(*c);
    PKV_CHECK(r.ok(), "tiny run");
    return new SimResult(*std::move(r));
  }();
  return *result;
}

int CountOf(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

TEST(ReportTest, JsonHasTheDocumentedKeys) {
  const nlohmann::json j = ToJson(TinyResult());
  for (const char* key : {"config", "paged", "contiguous", "invariant_checks",
                          "invariant_failures", "capacity_ratio"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  for (const char* model : {"paged", "contiguous"}) {
    for (const char* key :
         {"peak_running", "mean_utilization", "preemptions", "tokens_per_s",
          "peak_utilization", "mean_internal_fragmentation",
          "admissions_refused", "final_running", "final_waiting"}) {
      EXPECT_TRUE(j[model].contains(key)) << model << "." << key;
    }
  }
  for (const char* key :
       {"cow_copies", "cow_bytes", "peak_shared_blocks", "ops_per_s", "latency",
        "swap_preemptions", "swap_fallbacks", "swap_outs", "swap_ins",
        "swapped_blocks", "swapped_bytes", "tokens_recomputed",
        "stamp_checks"}) {
    EXPECT_TRUE(j["paged"].contains(key)) << key;
  }
  EXPECT_TRUE(j["paged"]["latency"]["append_slots"].contains("p99_us"));
  for (const char* key : {"model", "storage", "admission", "preemption",
                          "host_blocks", "trace", "trace_step_ms"}) {
    EXPECT_TRUE(j["config"].contains(key)) << key;
  }
  EXPECT_EQ(j["config"]["storage"], "host");
  EXPECT_EQ(j["config"]["admission"], "watermark");
  EXPECT_EQ(j["config"]["preemption"], "recompute");
  EXPECT_EQ(j["config"]["preset"], "tiny");
  EXPECT_EQ(j["config"]["steps"], 200);
}

TEST(ReportTest, JsonFiguresMatchTheResult) {
  const SimResult& r = TinyResult();
  const nlohmann::json j = ToJson(r);
  EXPECT_EQ(j["paged"]["peak_running"], r.paged.peak_running);
  EXPECT_EQ(j["contiguous"]["peak_running"], r.contiguous.peak_running);
  EXPECT_EQ(j["paged"]["preemptions"], r.paged.preemptions);
  EXPECT_EQ(j["invariant_failures"], r.invariant_failures);
  EXPECT_DOUBLE_EQ(j["capacity_ratio"].get<double>(), r.capacity_ratio);
  // Round-trips through text.
  const nlohmann::json back = nlohmann::json::parse(j.dump(), nullptr, false);
  ASSERT_FALSE(back.is_discarded());
  EXPECT_EQ(back, j);
}

TEST(ReportTest, TableShowsBothModelsAndTheRatio) {
  const std::string table = FormatTable(TinyResult());
  EXPECT_THAT(table, StartsWith("kv_stress  preset=tiny"));
  EXPECT_THAT(table, HasSubstr("paged"));
  EXPECT_THAT(table, HasSubstr("contiguous"));
  EXPECT_THAT(table, HasSubstr("peak running requests"));
  EXPECT_THAT(table, HasSubstr("preemptions"));
  EXPECT_THAT(table, HasSubstr("copy-on-write copies"));
  EXPECT_THAT(table, HasSubstr("capacity ratio"));
  EXPECT_THAT(table, HasSubstr("append_slots"));
  EXPECT_THAT(table, HasSubstr("manager    storage=host admission=watermark "
                               "preemption=recompute"));
  EXPECT_THAT(table, HasSubstr("rows swapped out / in"));
  EXPECT_THAT(table, HasSubstr("failures: 0"));
}

TEST(ReportTest, SvgHasTwoPanelsOfTwoLinesAndALegend) {
  const std::string svg = RenderSvg(TinyResult());
  EXPECT_THAT(svg, StartsWith("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_THAT(svg, HasSubstr("</svg>"));
  EXPECT_EQ(CountOf(svg, "<polyline"), 4);
  EXPECT_THAT(svg, HasSubstr("utilization"));
  EXPECT_THAT(svg, HasSubstr("running requests"));
  EXPECT_EQ(CountOf(svg, ">paged</text>"), 2);
  EXPECT_EQ(CountOf(svg, ">contiguous</text>"), 2);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
}

TEST(ReportTest, WriteFileReportsAnUnwritablePathWithTheOsReason) {
  EXPECT_THAT(WriteFile("/nonexistent-dir/x.json", "{}"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("cannot open /nonexistent-dir/x.json for "
                                 "writing: No such file or directory")));
}

TEST(ReportTest, OutputFileFailsAtOpenAndWritesLater) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  // A directory cannot be opened for writing: the error comes at Open,
  // before any run.
  EXPECT_THAT(OutputFile::Open(dir), StatusIs(absl::StatusCode::kInternal,
                                              HasSubstr(": Is a directory")));
  absl::StatusOr<OutputFile> f = OutputFile::Open(dir + "/out.json");
  ASSERT_THAT(f, IsOk());
  OutputFile moved = *std::move(f);
  ASSERT_THAT(moved.Write("{}"), IsOk());
  std::FILE* in = std::fopen((dir + "/out.json").c_str(), "rb");
  ASSERT_NE(in, nullptr);
  char buf[8] = {};
  EXPECT_EQ(std::fread(buf, 1, sizeof(buf), in), 2u);
  std::fclose(in);
  EXPECT_EQ(std::string(buf), "{}");
}

TEST(ReportTest, WriteFileWritesTheContents) {
  const std::string path =
      std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR")
                                             : "/tmp") +
      "/report_test.txt";
  ASSERT_THAT(WriteFile(path, "hello"), IsOk());
  std::FILE* f = std::fopen(path.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  char buf[16] = {};
  EXPECT_EQ(std::fread(buf, 1, sizeof(buf), f), 5u);
  std::fclose(f);
  EXPECT_EQ(std::string(buf), "hello");
}

}  // namespace
}  // namespace pagedkv::kv_stress
