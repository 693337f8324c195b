#include "cache/storage/kv_layout.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();

// Every dimension a different size, so a swapped factor shows.
KVLayout SmallLayout() {
  return KVLayout{.num_layers = 3,
                  .num_kv_heads = 2,
                  .head_dim = 5,
                  .dtype = DType::kFloat32,
                  .block_tokens = 4};
}

TEST(KVLayoutTest, DefaultsAreFloat32WithSixteenTokenBlocks) {
  const KVLayout layout;
  EXPECT_EQ(layout.num_layers, 0);
  EXPECT_EQ(layout.num_kv_heads, 0);
  EXPECT_EQ(layout.head_dim, 0);
  EXPECT_EQ(layout.dtype, DType::kFloat32);
  EXPECT_EQ(layout.block_tokens, 16);
  // Zero counts: the default is not a usable layout.
  EXPECT_THAT(layout.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KVLayoutTest, ValidateAcceptsPositiveCounts) {
  EXPECT_THAT(SmallLayout().Validate(), IsOk());
  EXPECT_THAT((KVLayout{.num_layers = 1,
                        .num_kv_heads = 1,
                        .head_dim = 1,
                        .dtype = DType::kBFloat16,
                        .block_tokens = 1})
                  .Validate(),
              IsOk());
}

TEST(KVLayoutTest, ValidateRejectsEachNonPositiveCountNamingTheLayout) {
  KVLayout layout = SmallLayout();
  layout.num_layers = 0;
  EXPECT_THAT(layout.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("positive counts"),
                             HasSubstr("layers=0 kv_heads=2 head_dim=5"))));

  layout = SmallLayout();
  layout.num_kv_heads = -1;
  EXPECT_THAT(layout.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("kv_heads=-1")));

  layout = SmallLayout();
  layout.head_dim = 0;
  EXPECT_THAT(layout.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("head_dim=0")));

  layout = SmallLayout();
  layout.block_tokens = -16;
  EXPECT_THAT(layout.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("block_tokens=-16")));
}

TEST(KVLayoutTest, ValidateAcceptsTheLargestBlockBelowTwoToThe31Elements) {
  // 2 * 1 * 1 * 1 * (2^30 - 1) = 2^31 - 2, the largest even count below 2^31.
  const KVLayout layout{.num_layers = 1,
                        .num_kv_heads = 1,
                        .head_dim = 1,
                        .dtype = DType::kFloat16,
                        .block_tokens = (1 << 30) - 1};
  EXPECT_THAT(layout.Validate(), IsOk());
  EXPECT_EQ(layout.block_elements(), (int64_t{1} << 31) - 2);
}

TEST(KVLayoutTest, ValidateRejectsABlockOfTwoToThe31Elements) {
  const KVLayout layout{.num_layers = 1,
                        .num_kv_heads = 1,
                        .head_dim = 1 << 15,
                        .dtype = DType::kFloat32,
                        .block_tokens = 1 << 15};  // 2 * 2^30 = 2^31.
  EXPECT_THAT(layout.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("over 2^31 elements"),
                             HasSubstr("head_dim=32768"),
                             HasSubstr("block_tokens=32768"))));
}

TEST(KVLayoutTest, ValidateRejectsHugeCountsWithoutOverflowing) {
  // The full product is about 2^125; Validate must stop before it overflows
  // (UBSan would flag a signed overflow here).
  const KVLayout layout{.num_layers = kInt32Max,
                        .num_kv_heads = kInt32Max,
                        .head_dim = kInt32Max,
                        .dtype = DType::kFloat32,
                        .block_tokens = kInt32Max};
  EXPECT_THAT(layout.Validate(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("over 2^31 elements")));
}

TEST(KVLayoutTest, HeadRunIsBlockTokensTimesHeadDim) {
  EXPECT_EQ(SmallLayout().head_run_elements(), 4 * 5);
  const KVLayout big{.num_layers = 1,
                     .num_kv_heads = 1,
                     .head_dim = 1 << 20,
                     .dtype = DType::kFloat32,
                     .block_tokens = 1 << 20};
  // Computed in int64: 2^40 does not wrap.
  EXPECT_EQ(big.head_run_elements(), int64_t{1} << 40);
}

TEST(KVLayoutTest, BlockBytesCountEveryLayerKAndVAndHead) {
  EXPECT_EQ(SmallLayout().block_elements(), 3 * 2 * 2 * 4 * 5);
  EXPECT_EQ(SmallLayout().block_bytes(), size_t{3 * 2 * 2 * 4 * 5 * 4});

  // The header's example: 32*2*8*16*128*2 = 2 MiB.
  KVLayout llama{.num_layers = 32,
                 .num_kv_heads = 8,
                 .head_dim = 128,
                 .dtype = DType::kFloat16,
                 .block_tokens = 16};
  EXPECT_EQ(llama.block_bytes(), size_t{2} << 20);
  llama.dtype = DType::kBFloat16;
  EXPECT_EQ(llama.block_bytes(), size_t{2} << 20);
  llama.dtype = DType::kFloat32;
  EXPECT_EQ(llama.block_bytes(), size_t{4} << 20);
}

TEST(KVLayoutTest, ElementOffsetIsLayerThenKVThenHeadThenTokenThenDim) {
  const KVLayout layout = SmallLayout();
  const int64_t heads = layout.num_kv_heads;
  const int64_t tokens = layout.block_tokens;
  const int64_t dim = layout.head_dim;
  // Every element of the block is reached exactly once by
  // ElementOffset(...) + d, and in [layer][K|V][head][token][dim] order.
  std::vector<int> hits(static_cast<size_t>(layout.block_elements()), 0);
  int64_t expected_next = 0;
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    for (KV kv : {KV::kKey, KV::kValue}) {
      const int64_t k = kv == KV::kKey ? 0 : 1;
      for (int32_t h = 0; h < heads; ++h) {
        for (int32_t s = 0; s < tokens; ++s) {
          const int64_t offset = layout.ElementOffset(l, kv, h, s);
          EXPECT_EQ(offset, (((l * 2 + k) * heads + h) * tokens + s) * dim)
              << "layer " << l << " kv " << k << " head " << h << " slot " << s;
          EXPECT_EQ(offset, l * (2 * heads * tokens * dim) +
                                k * (heads * tokens * dim) +
                                h * (tokens * dim) + s * dim);
          // C order: the offsets come out in increasing, gapless order.
          EXPECT_EQ(offset, expected_next);
          expected_next = offset + dim;
          for (int64_t d = 0; d < dim; ++d) {
            ASSERT_GE(offset + d, 0);
            ASSERT_LT(offset + d, layout.block_elements());
            ++hits[static_cast<size_t>(offset + d)];
          }
        }
      }
    }
  }
  for (size_t i = 0; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i], 1) << "element " << i;
  }
}

TEST(KVLayoutTest, ElementOffsetKeepsEachHeadRunContiguous) {
  const KVLayout layout = SmallLayout();
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
      // Values follow keys by all the heads' runs; heads follow each other
      // by one run.
      EXPECT_EQ(layout.ElementOffset(l, KV::kValue, h, 0) -
                    layout.ElementOffset(l, KV::kKey, h, 0),
                layout.num_kv_heads * layout.head_run_elements());
      EXPECT_EQ(layout.ElementOffset(l, KV::kKey, h, layout.block_tokens - 1) +
                    layout.head_dim - layout.ElementOffset(l, KV::kKey, h, 0),
                layout.head_run_elements());
    }
  }
  // The last element of the last run is the last element of the block.
  EXPECT_EQ(
      layout.ElementOffset(layout.num_layers - 1, KV::kValue,
                           layout.num_kv_heads - 1, layout.block_tokens - 1) +
          layout.head_dim,
      layout.block_elements());
}

TEST(KVLayoutTest, ToStringNamesEveryField) {
  const KVLayout layout{.num_layers = 32,
                        .num_kv_heads = 8,
                        .head_dim = 128,
                        .dtype = DType::kFloat16,
                        .block_tokens = 16};
  EXPECT_EQ(layout.ToString(),
            "layers=32 kv_heads=8 head_dim=128 dtype=float16 block_tokens=16");
  EXPECT_EQ(SmallLayout().ToString(),
            "layers=3 kv_heads=2 head_dim=5 dtype=float32 block_tokens=4");
  KVLayout bf16 = SmallLayout();
  bf16.dtype = DType::kBFloat16;
  EXPECT_THAT(bf16.ToString(), HasSubstr("dtype=bfloat16"));
}

TEST(KVLayoutTest, EqualityComparesEveryField) {
  const KVLayout base = SmallLayout();
  EXPECT_TRUE(base == SmallLayout());
  EXPECT_FALSE(base != SmallLayout());

  std::vector<KVLayout> variants(5, base);
  variants[0].num_layers = 4;
  variants[1].num_kv_heads = 3;
  variants[2].head_dim = 6;
  variants[3].dtype = DType::kFloat16;
  variants[4].block_tokens = 8;
  for (const KVLayout& other : variants) {
    EXPECT_FALSE(base == other) << other.ToString();
    EXPECT_TRUE(base != other) << other.ToString();
  }
}

}  // namespace
}  // namespace pagedkv
