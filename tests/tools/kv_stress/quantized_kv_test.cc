// kv_stress on quantized KV blocks (--kv_dtype=int8|fp8): the tiny preset
// with head_dim 128 on a fixed byte budget, in host mode (every token's
// stamp written into the 8-bit codes and read back through the tables,
// invariants checked every step), next to its unquantized run of the same
// bytes. The block ratio is what the layout's sizes say; the quantized pool
// runs more requests at its peak; the text and JSON reports show both runs
// and the ratios.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "base/check.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/kv_stress/experiment.h"
#include "tools/kv_stress/report.h"
#include "tools/kv_stress/simulator.h"

namespace pagedkv::kv_stress {
namespace {

using ::testing::HasSubstr;

constexpr size_t kBudget = size_t{6} << 20;  // 6 MiB of KV.

SimConfig QuantizedConfig(KVStorage storage) {
  absl::StatusOr<SimConfig> c = PresetConfig("tiny");
  PKV_CHECK(c.ok(), "tiny preset");
  c->layout.head_dim = 128;
  c->layout.storage = storage;
  c->pool_blocks = static_cast<int32_t>(kBudget / c->layout.block_bytes());
  c->check_every = 1;
  return *c;
}

class QuantizedKVStressTest : public ::testing::TestWithParam<KVStorage> {};

TEST_P(QuantizedKVStressTest, SameBytesHoldMoreBlocksAndRunMoreRequests) {
  const SimConfig config = QuantizedConfig(GetParam());
  absl::StatusOr<SimResult> r = RunExperiment(config);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->invariant_failures, 0);
  for (const std::string& m : r->failure_messages) ADD_FAILURE() << m;
  EXPECT_GE(r->invariant_checks, 2 * config.steps);  // Both runs.
  EXPECT_GT(r->paged.stamp_checks, 0);

  KVLayout fp16 = config.layout;
  fp16.storage = KVStorage::kSame;
  ASSERT_TRUE(r->unquantized.has_value());
  EXPECT_EQ(r->unquantized_block_bytes, fp16.block_bytes());
  EXPECT_EQ(r->unquantized_pool_blocks,
            static_cast<int32_t>(config.pool_bytes() / fp16.block_bytes()));
  // 2 * 2 * 2 * 16 * (128 + 4) = 16,896 bytes against 32,768.
  EXPECT_EQ(config.layout.block_bytes(), 16896u);
  const double blocks_ratio = double(config.pool_blocks) /
                              double(r->unquantized_pool_blocks);
  EXPECT_GE(blocks_ratio, 1.9);
  EXPECT_LE(blocks_ratio, 2.0);
  // The workload overfills the float16 pool; twice the blocks run more.
  const ModelReport& u = *r->unquantized;
  EXPECT_GT(u.preemptions, r->paged.preemptions);
  EXPECT_GT(r->paged.peak_running, u.peak_running);
  EXPECT_GT(r->paged.mean_running, u.mean_running);

  const nlohmann::json j = ToJson(*r);
  EXPECT_EQ(j["config"]["kv_dtype"], std::string(KVStorageName(GetParam())));
  const nlohmann::json& k = j["kv_storage"];
  EXPECT_EQ(k["block_bytes"], config.layout.block_bytes());
  EXPECT_EQ(k["blocks_per_gib"],
            std::floor(1073741824.0 / double(config.layout.block_bytes())));
  EXPECT_EQ(k["unquantized"]["pool_blocks"], r->unquantized_pool_blocks);
  EXPECT_EQ(k["unquantized"]["peak_running"], u.peak_running);
  EXPECT_DOUBLE_EQ(k["blocks_ratio"].get<double>(), blocks_ratio);
  EXPECT_DOUBLE_EQ(k["peak_running_ratio"].get<double>(),
                   double(r->paged.peak_running) / double(u.peak_running));
  EXPECT_GT(k["peak_running_ratio"].get<double>(), 1.0);

  const std::string table = FormatTable(*r);
  EXPECT_THAT(table, HasSubstr("blocks per GiB"));
  EXPECT_THAT(table, HasSubstr(std::string("capacity ") +
                               std::string(KVStorageName(GetParam())) +
                               " / float16: blocks "));
}

INSTANTIATE_TEST_SUITE_P(Storages, QuantizedKVStressTest,
                         ::testing::Values(KVStorage::kInt8,
                                           KVStorage::kFp8E4M3),
                         [](const auto& info) {
                           return std::string(KVStorageName(info.param));
                         });

TEST(QuantizedKVStressTest, UnquantizedRunsHaveNoComparison) {
  absl::StatusOr<SimResult> r = RunExperiment(QuantizedConfig(KVStorage::kSame));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->unquantized.has_value());
  EXPECT_EQ(FormatKVStorageTable(*r), "");
  const nlohmann::json j = ToJson(*r);
  EXPECT_EQ(j["kv_storage"]["storage"], "same");
  EXPECT_FALSE(j["kv_storage"].contains("unquantized"));
}

}  // namespace
}  // namespace pagedkv::kv_stress
