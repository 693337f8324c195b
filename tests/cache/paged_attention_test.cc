#include "cache/paged_attention.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TensorsAllClose;
using ::pagedkv::testing::TensorsEqual;
using ::testing::HasSubstr;

// Small random values, exact in every storage dtype's rounding of them.
Tensor Random(DType dtype, Shape shape, std::mt19937& rng) {
  std::vector<float> values(static_cast<size_t>(shape.num_elements()));
  for (float& v : values) v = static_cast<float>(rng() % 17) / 8.0f - 1.0f;
  return *FromVector(dtype, shape, values);
}

float At(ConstTensorView t, absl::Span<const int64_t> index) {
  return LoadAsFloat(t.dtype(), t.ElementPtr(index));
}

// Attention over the gathered (contiguous) tensors, written the obvious way.
Tensor DenseAttention(ConstTensorView query, const KVTensors& kv, float scale) {
  const int64_t batch = query.dim(0);
  const int64_t query_heads = query.dim(1);
  const int64_t head_dim = query.dim(2);
  const int64_t kv_heads = kv.key.dim(1);
  const int64_t length = kv.key.dim(2);
  Tensor out = *Zeros(DType::kFloat32, {batch, query_heads, head_dim});
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < query_heads; ++h) {
      const int64_t g = h / (query_heads / kv_heads);
      std::vector<double> w(static_cast<size_t>(length));
      double max_w = -1e30;
      for (int64_t t = 0; t < length; ++t) {
        double dot = 0;
        for (int64_t d = 0; d < head_dim; ++d) {
          dot += At(query, {b, h, d}) * At(kv.key.view(), {b, g, t, d});
        }
        w[t] = dot * scale;
        max_w = std::max(max_w, w[t]);
      }
      double total = 0;
      for (double& x : w) total += (x = std::exp(x - max_w));
      for (int64_t d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int64_t t = 0; t < length; ++t) {
          acc += w[t] * At(kv.value.view(), {b, g, t, d});
        }
        StoreFromFloat(DType::kFloat32, static_cast<float>(acc / total),
                       out.view().ElementPtr({b, h, d}));
      }
    }
  }
  return out;
}

class PagedAttentionTest : public ::testing::TestWithParam<DType> {};

// Beams share blocks, one beam's tail was copied on write, and a crop left
// the window starting mid-block: the kernel must follow the tables and the
// start exactly as Gather does.
TEST_P(PagedAttentionTest, MatchesAttentionOverGatheredTensors) {
  const DType dtype = GetParam();
  std::mt19937 rng(7);
  DynamicKVCache cache;
  const Tensor prefill = Random(dtype, {2, 2, 37, 8}, rng);
  const Tensor prefill_v = Random(dtype, {2, 2, 37, 8}, rng);
  ASSERT_THAT(cache.Update(prefill.view(), prefill_v.view(), 0), IsOk());
  ASSERT_THAT(cache.BatchRepeatInterleave(2), IsOk());
  ASSERT_THAT(cache.ReorderCache(std::vector<int64_t>{3, 0, 1, 1}), IsOk());
  const Tensor step = Random(dtype, {4, 2, 1, 8}, rng);
  const Tensor step_v = Random(dtype, {4, 2, 1, 8}, rng);
  ASSERT_THAT(cache.Update(step.view(), step_v.view(), 0), IsOk());
  EXPECT_GT(cache.stats().cow_copies, 0);
  ASSERT_THAT(cache.Crop(21), IsOk());  // start 17: mid-block.

  absl::StatusOr<std::optional<KVView>> kv = cache.Get(0);
  ASSERT_THAT(kv, IsOk());
  ASSERT_TRUE(kv->has_value());
  EXPECT_NE((*kv)->start() % (*kv)->block_tokens(), 0);

  const Tensor query = Random(DType::kFloat32, {4, 4, 8}, rng);  // GQA: 4/2
  Tensor paged_out = *Zeros(DType::kFloat32, {4, 4, 8});
  const float scale = 1.0f / std::sqrt(8.0f);
  ASSERT_THAT(PagedDecodeAttention(query.view(), **kv, scale, paged_out.view()),
              IsOk());

  absl::StatusOr<KVTensors> dense = (*kv)->Gather();
  ASSERT_THAT(dense, IsOk());
  EXPECT_EQ(dense->key.dtype(), dtype);
  const Tensor expected = DenseAttention(query.view(), *dense, scale);
  EXPECT_TRUE(TensorsAllClose(paged_out.view(), expected.view(),
                              /*rtol=*/1e-5, /*atol=*/1e-5));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, PagedAttentionTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat16,
                                           DType::kBFloat16));

TEST(PagedAttentionErrorsTest, RejectsMismatchedShapesAndLeavesOutAlone) {
  std::mt19937 rng(1);
  DynamicKVCache cache;
  const Tensor k = Random(DType::kFloat32, {2, 2, 5, 8}, rng);
  absl::StatusOr<KVView> kv = cache.Update(k.view(), k.view(), 0);
  ASSERT_THAT(kv, IsOk());
  Tensor out = *Full(DType::kFloat32, {2, 3, 8}, 9.0);
  const Tensor odd_heads = Random(DType::kFloat32, {2, 3, 8}, rng);
  EXPECT_THAT(PagedDecodeAttention(odd_heads.view(), *kv, 1.0f, out.view()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3")));
  const Tensor wrong_batch = Random(DType::kFloat32, {3, 2, 8}, rng);
  Tensor out2 = *Zeros(DType::kFloat32, {3, 2, 8});
  EXPECT_THAT(PagedDecodeAttention(wrong_batch.view(), *kv, 1.0f, out2.view()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2")));
  const Tensor nine = *Full(DType::kFloat32, {2, 3, 8}, 9.0);
  EXPECT_TRUE(TensorsEqual(out.view(), nine.view()));
}

}  // namespace
}  // namespace pagedkv
