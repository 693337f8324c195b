// The lucid user docs' snippets (seed/neural-caches.txt), in C++, with the
// shapes and lengths the docs print.
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensor_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;

Tensor Randn(Shape shape, int64_t base) {
  // Deterministic stand-in for lucid.randn: the conformance input pattern.
  return *FillPattern(DType::kFloat32, shape, base);
}

TEST(SeedSnippetsTest, QuickStartAppendsTwoTokens) {
  DynamicKVCache cache;
  const Tensor key = Randn({2, 8, 1, 64}, 1);
  const Tensor value = Randn({2, 8, 1, 64}, 2);
  absl::StatusOr<KVView> kv = cache.Update(key.view(), value.view(), 0);
  ASSERT_THAT(kv, IsOk());
  EXPECT_EQ(kv->shape(), Shape({2, 8, 1, 64}));

  const Tensor key2 = Randn({2, 8, 1, 64}, 3);
  const Tensor value2 = Randn({2, 8, 1, 64}, 4);
  kv = cache.Update(key2.view(), value2.view(), 0);
  ASSERT_THAT(kv, IsOk());
  EXPECT_EQ(kv->shape(), Shape({2, 8, 2, 64}));
  EXPECT_EQ(*cache.GetSeqLength(0), 2);

  // The visible keys are the two updates, in order.
  absl::StatusOr<KVTensors> dense = kv->Gather();
  ASSERT_THAT(dense, IsOk());
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 8; ++h) {
      for (int64_t d = 0; d < 64; d += 21) {
        const float first = LoadAsFloat(
            DType::kFloat32, dense->key.view().ElementPtr({b, h, 0, d}));
        const float second = LoadAsFloat(
            DType::kFloat32, dense->key.view().ElementPtr({b, h, 1, d}));
        EXPECT_EQ(first, LoadAsFloat(DType::kFloat32,
                                     key.view().ElementPtr({b, h, 0, d})));
        EXPECT_EQ(second, LoadAsFloat(DType::kFloat32,
                                      key2.view().ElementPtr({b, h, 0, d})));
      }
    }
  }
}

TEST(SeedSnippetsTest, BeamSearchExpandsThenReordersWithoutCopying) {
  DynamicKVCache cache;
  const Tensor prefill = Randn({1, 8, 20, 64}, 1);
  ASSERT_THAT(cache.Update(prefill.view(), prefill.view(), 0), IsOk());
  const CacheStats before = cache.stats();

  const int64_t num_beams = 4;
  ASSERT_THAT(cache.BatchRepeatInterleave(num_beams), IsOk());  // B -> B*4
  EXPECT_EQ(cache.batch_size(), 4);
  const std::vector<int64_t> beam_idx = {3, 1, 0, 2};
  ASSERT_THAT(cache.ReorderCache(beam_idx), IsOk());
  EXPECT_EQ(*cache.GetSeqLength(0), 20);

  // Remaps share blocks: nothing was copied and no block was added.
  const CacheStats after = cache.stats();
  EXPECT_EQ(after.cow_copies, 0);
  EXPECT_EQ(after.blocks_in_use, before.blocks_in_use);
  EXPECT_EQ(after.blocks_shared, after.blocks_in_use);

  // Every beam sees the prefill.
  absl::StatusOr<std::optional<KVView>> kv = cache.Get(0);
  ASSERT_THAT(kv, IsOk());
  ASSERT_TRUE(kv->has_value());
  absl::StatusOr<KVTensors> dense = (*kv)->Gather();
  ASSERT_THAT(dense, IsOk());
  for (int64_t beam = 0; beam < num_beams; ++beam) {
    for (int64_t t = 0; t < 20; t += 7) {
      EXPECT_EQ(LoadAsFloat(DType::kFloat32,
                            dense->key.view().ElementPtr({beam, 5, t, 3})),
                LoadAsFloat(DType::kFloat32,
                            prefill.view().ElementPtr({0, 5, t, 3})));
    }
  }

  // The next decode step writes each beam's token: the shared tail block
  // (20 tokens = 1 full block + 4) is copied once per beam but the last.
  const Tensor step = Randn({4, 8, 1, 64}, 50);
  ASSERT_THAT(cache.Update(step.view(), step.view(), 0), IsOk());
  EXPECT_EQ(cache.stats().cow_copies, num_beams - 1);
  cache.CheckInvariants();
}

TEST(SeedSnippetsTest, MemoryControlCropsThenResets) {
  DynamicKVCache cache;
  const Tensor key = Randn({1, 2, 2048, 16}, 1);
  ASSERT_THAT(cache.Update(key.view(), key.view(), 0), IsOk());
  const int32_t blocks_before = cache.stats().blocks_in_use;
  EXPECT_EQ(blocks_before, 2048 / 16);

  ASSERT_THAT(cache.Crop(1024), IsOk());  // keep the most recent 1024
  EXPECT_EQ(*cache.GetSeqLength(0), 1024);
  EXPECT_EQ(cache.stats().blocks_in_use, 1024 / 16);
  absl::StatusOr<std::optional<KVView>> kv = cache.Get(0);
  ASSERT_THAT(kv, IsOk());
  absl::StatusOr<KVTensors> dense = (**kv).Gather();
  ASSERT_THAT(dense, IsOk());
  // Position 0 now holds what was token 1024.
  EXPECT_EQ(
      LoadAsFloat(DType::kFloat32, dense->key.view().ElementPtr({0, 1, 0, 5})),
      LoadAsFloat(DType::kFloat32, key.view().ElementPtr({0, 1, 1024, 5})));

  cache.Reset();  // clear everything between requests
  EXPECT_EQ(*cache.GetSeqLength(0), 0);
  EXPECT_EQ(cache.stats().blocks_in_use, 0);
  EXPECT_EQ(cache.num_layer_slots(), 0);
  cache.CheckInvariants();
}

}  // namespace
}  // namespace pagedkv
