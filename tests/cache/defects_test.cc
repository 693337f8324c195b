// Regression tests for the defects found by outside testing (issue #14,
// "Defects found by outside testing"). Each test names the defect it pins;
// each failed (aborted, or asserted the wrong outcome) before its fix.
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "cache/cache.h"
#include "cache/cache_limits.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/tensor.h"
#include "tests/cache/cache_snapshot.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CacheSnapshot;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TakeSnapshot;
using ::testing::HasSubstr;

Tensor Pattern(DType dtype, Shape shape, int64_t base = 1) {
  return *FillPattern(dtype, shape, base);
}

// The bytes of one block of a (layers, heads 1, head_dim 4, float32,
// block_tokens 16) layout: layers * 2 * 1 * 16 * 4 * 4.
int64_t BlockBytes(int64_t layers) { return layers * 2 * 16 * 4 * 4; }

// Defect: an Update with a DType value outside the three supported ones
// aborted (a CHECK in SizeOf during the private-pool byte-cap check, or in
// DTypeName building the "dtype differs" message).
TEST(DefectsTest, UpdateWithAnInvalidDTypeIsInvalidArgument) {
  const Tensor good = Pattern(DType::kFloat32, {1, 1, 2, 4});
  const DType bad = static_cast<DType>(7);
  const ConstTensorView bad_view(good.view().data(), bad, good.shape());
  DynamicKVCache standalone;
  EXPECT_THAT(standalone.Update(bad_view, bad_view, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("7")));
  EXPECT_THAT(standalone.Update(good.view(), bad_view, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(standalone.pool(), nullptr);  // Nothing allocated.
  // After the dtype is fixed, the "differs" path must not abort either.
  ASSERT_THAT(standalone.Update(good.view(), good.view(), 0), IsOk());
  const CacheSnapshot before = TakeSnapshot(standalone);
  EXPECT_THAT(standalone.Update(bad_view, bad_view, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(TakeSnapshot(standalone), before);
}

// Defect: a standalone StaticKVCache became unusable after a successful
// batch operation. BatchRepeatInterleave grew the reservation (and the
// private pool) without the byte cap Update applies, so the next update
// failed with "needs a private pool of up to ... bytes". Now the batch
// operation checks the cap up front, and what succeeds stays usable.
TEST(DefectsTest, StandaloneStaticBatchOpsRespectTheByteCap) {
  // 32 tokens = 2 blocks per row; a cap of 10 blocks allows 5 rows.
  std::unique_ptr<StaticKVCache> cache =
      *StaticKVCache::Create({.max_cache_len = 32,
                              .num_layers = 1,
                              .max_private_pool_bytes = 10 * BlockBytes(1)});
  ASSERT_THAT(
      cache->Update(Pattern(DType::kFloat32, {1, 1, 16, 4}).view(),
                    Pattern(DType::kFloat32, {1, 1, 16, 4}, 2).view(), 0),
      IsOk());
  const CacheSnapshot before = TakeSnapshot(*cache);
  EXPECT_THAT(cache->BatchRepeatInterleave(6),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_private_pool_bytes")));
  EXPECT_EQ(TakeSnapshot(*cache), before);
  ASSERT_THAT(cache->BatchRepeatInterleave(5), IsOk());
  // Afterwards no update can fail for memory.
  const Tensor token = Pattern(DType::kFloat32, {5, 1, 1, 4}, 3);
  for (int64_t p = 16; p < 32; ++p) {
    ASSERT_THAT(
        cache->Update(token.view(), token.view(), 0, CachePosition::Scalar(p)),
        IsOk())
        << p;
  }
  EXPECT_LE(cache->pool()->capacity_bytes(), 10 * BlockBytes(1));
  cache->CheckInvariants();
}

// Defect: private pools grew past their byte cap (growth doubled: a cap of
// 50 blocks ended with 64 after enough one-token appends; new layers doubled
// the layout: layers 0-4 gave 8 layers of storage). The cap now holds for the
// bytes actually allocated.
TEST(DefectsTest, PrivatePoolNeverAllocatesPastItsCap) {
  const int64_t cap = 50 * BlockBytes(1);
  std::unique_ptr<DynamicKVCache> cache =
      *DynamicKVCache::Create({.max_private_pool_bytes = cap});
  const Tensor token = Pattern(DType::kFloat32, {1, 1, 1, 4});
  int64_t appended = 0;
  for (; appended < 60 * 16; ++appended) {
    if (!cache->Update(token.view(), token.view(), 0).ok()) break;
    ASSERT_LE(cache->pool()->capacity_bytes(), cap) << appended;
  }
  // 48 blocks (whole 16-block chunks under 50) were usable.
  EXPECT_EQ(appended, 48 * 16);
  EXPECT_LE(cache->pool()->capacity_bytes(), cap);
  cache->CheckInvariants();
}

TEST(DefectsTest, NewLayersOfAPrivatePoolStayUnderTheCap) {
  // 16 blocks of 5 layers fit under the cap, 16 of 8 layers would not.
  const int64_t cap = 16 * BlockBytes(6);
  std::unique_ptr<DynamicKVCache> cache =
      *DynamicKVCache::Create({.max_private_pool_bytes = cap});
  const Tensor token = Pattern(DType::kFloat32, {1, 1, 1, 4});
  for (int64_t layer = 0; layer < 5; ++layer) {
    ASSERT_THAT(cache->Update(token.view(), token.view(), layer), IsOk());
    EXPECT_LE(cache->pool()->capacity_bytes(), cap) << layer;
  }
  EXPECT_LE(cache->pool()->layout().num_layers, 6);
  // Layer 6 would need 7 layers: over the cap, refused, nothing changed.
  const CacheSnapshot before = TakeSnapshot(*cache);
  EXPECT_THAT(cache->Update(token.view(), token.view(), 6),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(TakeSnapshot(*cache), before);
  cache->CheckInvariants();
}

// Defect: a failed EncoderDecoderCache batch operation left one half's
// private pool enlarged: the cross half (on a small shared pool) returned
// RESOURCE_EXHAUSTED for BatchRepeatInterleave(64) after the self half's
// private pool had grown 16 -> 128 blocks. Errors change nothing, including
// allocations.
TEST(DefectsTest, FailedEncoderDecoderBatchOpUndoesTheOtherHalfsGrowth) {
  std::unique_ptr<KVPool> shared = *KVPool::Create(
      {.layout = KVLayout{1, 1, 4, DType::kFloat32, 16}, .num_blocks = 4});
  EncoderDecoderCache cache(
      *StaticKVCache::Create({.max_cache_len = 32, .num_layers = 1}),
      *StaticKVCache::Create(
          {.max_cache_len = 16, .num_layers = 1, .pool = shared.get()}));
  const Tensor kv = Pattern(DType::kFloat32, {1, 1, 4, 4});
  ASSERT_THAT(cache.Update(kv.view(), kv.view(), 0, CachePosition()), IsOk());
  ASSERT_THAT(
      cache.Update(kv.view(), kv.view(), 0, CachePosition(), Attention::kCross),
      IsOk());
  const CacheSnapshot self_before = TakeSnapshot(cache.self_attention_cache());
  const CacheSnapshot cross_before =
      TakeSnapshot(cache.cross_attention_cache());
  const size_t self_bytes =
      cache.self_attention_cache().pool()->capacity_bytes();
  EXPECT_THAT(cache.BatchRepeatInterleave(64),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(cache.self_attention_cache().pool()->capacity_bytes(), self_bytes);
  EXPECT_EQ(TakeSnapshot(cache.self_attention_cache()), self_before);
  EXPECT_EQ(TakeSnapshot(cache.cross_attention_cache()), cross_before);
  cache.CheckInvariants();
}

// Defect: CachePosition::Matrix(rows, cols, values)'s documented abort on a
// size mismatch computed rows * cols in int64 unchecked: Matrix(2^32, 2^32,
// {}) returned an object (UBSan: overflow) and ToString() read out of bounds.
TEST(DefectsDeathTest, MatrixWithAnOverflowingSizeAbortsAsDocumented) {
  EXPECT_DEATH(CachePosition::Matrix(int64_t{1} << 32, int64_t{1} << 32, {}),
               "given 0 values");
  EXPECT_DEATH(CachePosition::Matrix(int64_t{1} << 62, 4, {1, 2, 3, 4}),
               "given 4 values");
}

TEST(DefectsTest, MatrixWithNoColumnsPrintsWithoutWalkingItsRows) {
  EXPECT_EQ(CachePosition::Matrix(int64_t{1} << 40, 0, {}).ToString(),
            "(1099511627776 x 0)");
}

// Defect: a moved-from EncoderDecoderCache held null halves, and any call
// dereferenced null. Its move operations are gone.
static_assert(!std::is_move_constructible_v<EncoderDecoderCache>);
static_assert(!std::is_move_assignable_v<EncoderDecoderCache>);

// Defect: a negative index before the batch was fixed said "outside batch
// [0, 0)".
TEST(DefectsTest, NegativeIndexSaysItIsNegative) {
  DynamicKVCache cache;
  const std::vector<int64_t> indices = {0, -3};
  EXPECT_THAT(cache.BatchSelectIndices(indices),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("index -3 (position 1) is negative")));
}

// Defect: README and the design notes said "batch below 2^20" and "lengths
// below 2^24" while the code took exactly 2^20 and 2^24. They now say "at
// most", and these are the edges.
TEST(DefectsTest, BatchAndLengthLimitsAreInclusive) {
  DynamicKVCache at_limit;
  const Tensor empty = Pattern(DType::kFloat32, {kMaxCacheBatch, 1, 0, 1});
  EXPECT_THAT(at_limit.Update(empty.view(), empty.view(), 0), IsOk());
  DynamicKVCache past_limit;
  const Tensor too_big =
      Pattern(DType::kFloat32, {kMaxCacheBatch + 1, 1, 0, 1});
  EXPECT_THAT(past_limit.Update(too_big.view(), too_big.view(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  DynamicKVCache positions;
  const Tensor one = Pattern(DType::kFloat16, {1, 1, 1, 1});
  EXPECT_THAT(positions.Update(one.view(), one.view(), 0,
                               CachePosition::Scalar(kMaxCacheTokens - 1)),
              IsOk());
  EXPECT_EQ(*positions.GetSeqLength(0), kMaxCacheTokens);
  EXPECT_THAT(positions.Update(one.view(), one.view(), 0,
                               CachePosition::Scalar(kMaxCacheTokens)),
              StatusIs(absl::StatusCode::kOutOfRange));
}

// Defect: a static cache with max_cache_len a multiple of block_tokens
// reserved one extra block per row for a crop that might never come (for
// max_cache_len 16 that doubled its memory). It reserves it at the crop.
TEST(DefectsTest, StaticCacheReservesExtraBlockOnlyWhenACropNeedsIt) {
  std::unique_ptr<KVPool> pool = *KVPool::Create(
      {.layout = KVLayout{1, 1, 4, DType::kFloat32, 16}, .num_blocks = 8});
  std::unique_ptr<StaticKVCache> cache = *StaticKVCache::Create(
      {.max_cache_len = 16, .num_layers = 1, .pool = pool.get()});
  const Tensor kv = Pattern(DType::kFloat32, {2, 1, 10, 4});
  ASSERT_THAT(cache->Update(kv.view(), kv.view(), 0), IsOk());
  EXPECT_EQ(cache->stats().reservation_capacity, 2);  // One block per row.
  ASSERT_THAT(cache->Crop(4), IsOk());  // Window now starts at slot 6.
  EXPECT_EQ(cache->stats().reservation_capacity, 4);  // Two per row.
  EXPECT_EQ(cache->stats().reservation_shortfalls, 0);
  const Tensor rest = Pattern(DType::kFloat32, {2, 1, 12, 4}, 5);
  EXPECT_THAT(cache->Update(rest.view(), rest.view(), 0), IsOk());
  EXPECT_EQ(*cache->GetSeqLength(0), 16);
  cache->CheckInvariants();
}

}  // namespace
}  // namespace pagedkv
