// Pool sweep sizes: GiB and blocks, and bad entries named.
#include "tools/kv_stress/pool_sweep.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv::kv_stress {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(PoolSweepTest, ParsesGiBAndBlocks) {
  // 2 MiB blocks (Llama-3.1-8B, 16 tokens).
  absl::StatusOr<std::vector<int32_t>> s =
      ParsePoolSweep("16GiB, 0.5G,1g,4096", size_t{2} << 20);
  ASSERT_THAT(s, IsOk());
  EXPECT_THAT(*s, ElementsAre(8192, 256, 512, 4096));
}

TEST(PoolSweepTest, RejectsBadEntriesByName) {
  EXPECT_THAT(ParsePoolSweep("16GiB,lots", 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lots")));
  EXPECT_THAT(ParsePoolSweep("0", 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"0\" is 0 blocks")));
  EXPECT_THAT(ParsePoolSweep("1GiB", size_t{4} << 30),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1GiB")));
  EXPECT_THAT(ParsePoolSweep("", 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace pagedkv::kv_stress
