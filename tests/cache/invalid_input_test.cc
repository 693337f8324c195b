// Every invalid input of spec/cache-semantics.md returns the canonical code
// with the offending numbers in the message, and leaves the cache exactly as
// it was (visible state and memory books: CacheSnapshot).
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/cache.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/kv_view.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
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

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kOutOfRange = absl::StatusCode::kOutOfRange;
constexpr absl::StatusCode kExhausted = absl::StatusCode::kResourceExhausted;

Tensor Pattern(Shape shape, DType dtype = DType::kFloat32) {
  return *FillPattern(dtype, shape, 1);
}

// Updates with key == value.
absl::Status UpdateWith(KVCache& cache, const Tensor& kv, int64_t layer,
                        const CachePosition& position = CachePosition()) {
  return cache.Update(kv.view(), kv.view(), layer, position).status();
}

// A dynamic cache (batch 2, heads 2, head_dim 4, float32) with layers 0 and
// 1 of lengths 5 and 3, and a static one (max_cache_len 8, 2 layers) with
// layer 0 of length 7.
class InvalidInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(UpdateWith(dynamic_, Pattern({2, 2, 5, 4}), 0), IsOk());
    ASSERT_THAT(UpdateWith(dynamic_, Pattern({2, 2, 3, 4}), 1), IsOk());
    static_ = *StaticKVCache::Create({.max_cache_len = 8, .num_layers = 2});
    ASSERT_THAT(UpdateWith(*static_, Pattern({2, 2, 7, 4}), 0), IsOk());
    dynamic_before_ = TakeSnapshot(dynamic_);
    static_before_ = TakeSnapshot(*static_);
  }
  void TearDown() override {
    EXPECT_EQ(TakeSnapshot(dynamic_), dynamic_before_);
    EXPECT_EQ(TakeSnapshot(*static_), static_before_);
    dynamic_.CheckInvariants();
    static_->CheckInvariants();
  }
  // Expects the same error from both caches.
  template <typename Matcher>
  void ExpectBoth(const Tensor& key, const Tensor& value, int64_t layer,
                  const CachePosition& position, const Matcher& matcher) {
    EXPECT_THAT(dynamic_.Update(key.view(), value.view(), layer, position),
                matcher);
    EXPECT_THAT(static_->Update(key.view(), value.view(), layer, position),
                matcher);
  }

  DynamicKVCache dynamic_;
  std::unique_ptr<StaticKVCache> static_;
  CacheSnapshot dynamic_before_;
  CacheSnapshot static_before_;
};

TEST_F(InvalidInputTest, NegativeLayerIsInvalid) {
  const Tensor kv = Pattern({2, 2, 1, 4});
  ExpectBoth(kv, kv, -1, CachePosition(), StatusIs(kInvalid, HasSubstr("-1")));
}

TEST_F(InvalidInputTest, StaticLayerPastNumLayersIsInvalid) {
  EXPECT_THAT(UpdateWith(*static_, Pattern({2, 2, 1, 4}), 2),
              StatusIs(kInvalid, HasSubstr("2")));
}

TEST_F(InvalidInputTest, RankThreeKeyIsInvalid) {
  const Tensor kv = Pattern({2, 2, 4});
  ExpectBoth(kv, kv, 0, CachePosition(),
             StatusIs(kInvalid, HasSubstr("(2, 2, 4)")));
}

TEST_F(InvalidInputTest, KeyValueShapeMismatchIsInvalid) {
  const Tensor key = Pattern({2, 2, 1, 4});
  const Tensor value = Pattern({2, 2, 2, 4});
  ExpectBoth(key, value, 0, CachePosition(),
             StatusIs(kInvalid, HasSubstr("(2, 2, 2, 4)")));
}

TEST_F(InvalidInputTest, KeyValueDtypeMismatchIsInvalid) {
  const Tensor key = Pattern({2, 2, 1, 4});
  const Tensor value = Pattern({2, 2, 1, 4}, DType::kFloat16);
  ExpectBoth(key, value, 0, CachePosition(),
             StatusIs(kInvalid, HasSubstr("float16")));
}

TEST_F(InvalidInputTest, DtypeDifferentFromTheFirstUpdateIsInvalid) {
  const Tensor kv = Pattern({2, 2, 1, 4}, DType::kBFloat16);
  ExpectBoth(kv, kv, 0, CachePosition(),
             StatusIs(kInvalid, HasSubstr("bfloat16")));
  // Also for a layer that was never updated.
  EXPECT_THAT(UpdateWith(dynamic_, kv, 2),
              StatusIs(kInvalid, HasSubstr("bfloat16")));
}

TEST_F(InvalidInputTest, BatchDifferentFromTheCachesIsInvalid) {
  const Tensor kv = Pattern({3, 2, 1, 4});
  ExpectBoth(kv, kv, 0, CachePosition(),
             StatusIs(kInvalid, HasSubstr("batch 2")));
  // Also positional writes and a new layer.
  ExpectBoth(kv, kv, 1, CachePosition::Scalar(0),
             StatusIs(kInvalid, HasSubstr("batch 2")));
}

TEST_F(InvalidInputTest, HeadsDifferentFromTheCachesIsInvalid) {
  const Tensor kv = Pattern({2, 3, 1, 4});
  ExpectBoth(kv, kv, 0, CachePosition(),
             StatusIs(kInvalid, HasSubstr("heads 2")));
}

TEST_F(InvalidInputTest, HeadDimDifferentFromTheCachesIsInvalid) {
  const Tensor kv = Pattern({2, 2, 1, 8});
  ExpectBoth(kv, kv, 1, CachePosition::Vector({0}),
             StatusIs(kInvalid, HasSubstr("head_dim 4")));
}

TEST_F(InvalidInputTest, StaticZeroLengthUpdateIsInvalid) {
  EXPECT_THAT(UpdateWith(*static_, Pattern({2, 2, 0, 4}), 0),
              StatusIs(kInvalid, HasSubstr("zero-length")));
  EXPECT_THAT(UpdateWith(*static_, Pattern({2, 2, 0, 4}), 1),
              StatusIs(kInvalid, HasSubstr("zero-length")));
}

TEST_F(InvalidInputTest, StaticAppendPastMaxCacheLenIsOutOfRange) {
  EXPECT_THAT(UpdateWith(*static_, Pattern({2, 2, 2, 4}), 0),
              StatusIs(kOutOfRange, HasSubstr("8")));
  EXPECT_THAT(UpdateWith(*static_, Pattern({2, 2, 9, 4}), 1),
              StatusIs(kOutOfRange, HasSubstr("8")));
}

TEST_F(InvalidInputTest, ScalarPositionWithSeqOtherThanOneIsInvalid) {
  const Tensor kv = Pattern({2, 2, 2, 4});
  ExpectBoth(kv, kv, 0, CachePosition::Scalar(1),
             StatusIs(kInvalid, HasSubstr("2")));
}

TEST_F(InvalidInputTest, VectorPositionLengthOtherThanSeqIsInvalid) {
  const Tensor kv = Pattern({2, 2, 2, 4});
  ExpectBoth(kv, kv, 0, CachePosition::Vector({0, 1, 2}),
             StatusIs(kInvalid, HasSubstr("3")));
  ExpectBoth(kv, kv, 0, CachePosition::Vector({0}),
             StatusIs(kInvalid, HasSubstr("1")));
}

TEST_F(InvalidInputTest, MatrixPositionShapeOtherThanBatchBySeqIsInvalid) {
  const Tensor kv = Pattern({2, 2, 2, 4});
  ExpectBoth(kv, kv, 0, CachePosition::Matrix(1, 2, {0, 1}),
             StatusIs(kInvalid, HasSubstr("(1, 2)")));
  ExpectBoth(kv, kv, 0, CachePosition::Matrix(2, 1, {0, 1}),
             StatusIs(kInvalid, HasSubstr("(2, 1)")));
  ExpectBoth(kv, kv, 0, CachePosition::Matrix(1, 4, {0, 1, 2, 3}),
             StatusIs(kInvalid, HasSubstr("(1, 4)")));
}

TEST_F(InvalidInputTest, EmptyPositionListIsInvalid) {
  const Tensor empty = Pattern({2, 2, 0, 4});
  EXPECT_THAT(UpdateWith(dynamic_, empty, 0, CachePosition::Vector({})),
              StatusIs(kInvalid, HasSubstr("empty")));
  EXPECT_THAT(UpdateWith(dynamic_, empty, 2, CachePosition::Matrix(2, 0, {})),
              StatusIs(kInvalid, HasSubstr("empty")));
}

TEST_F(InvalidInputTest, NegativePositionIsInvalid) {
  const Tensor kv = Pattern({2, 2, 2, 4});
  ExpectBoth(kv, kv, 0, CachePosition::Vector({1, -1}),
             StatusIs(kInvalid, HasSubstr("-1")));
  ExpectBoth(kv, kv, 1, CachePosition::Matrix(2, 2, {0, 1, -3, 2}),
             StatusIs(kInvalid, HasSubstr("-3")));
  const Tensor one = Pattern({2, 2, 1, 4});
  ExpectBoth(one, one, 0, CachePosition::Scalar(-2),
             StatusIs(kInvalid, HasSubstr("-2")));
}

TEST_F(InvalidInputTest, NegativePositionWinsOverOutOfRangeOne) {
  const Tensor kv = Pattern({2, 2, 2, 4});
  EXPECT_THAT(UpdateWith(*static_, kv, 0, CachePosition::Vector({100, -1})),
              StatusIs(kInvalid, HasSubstr("-1")));
}

TEST_F(InvalidInputTest, StaticPositionAtOrPastMaxCacheLenIsOutOfRange) {
  const Tensor one = Pattern({2, 2, 1, 4});
  EXPECT_THAT(UpdateWith(*static_, one, 0, CachePosition::Scalar(8)),
              StatusIs(kOutOfRange, HasSubstr("8")));
  const Tensor two = Pattern({2, 2, 2, 4});
  EXPECT_THAT(UpdateWith(*static_, two, 1, CachePosition::Vector({0, 9})),
              StatusIs(kOutOfRange, HasSubstr("9")));
  EXPECT_THAT(
      UpdateWith(*static_, two, 1, CachePosition::Matrix(2, 2, {0, 1, 2, 8})),
      StatusIs(kOutOfRange, HasSubstr("8")));
}

TEST_F(InvalidInputTest, GetOfNegativeLayerIsInvalid) {
  EXPECT_THAT(dynamic_.Get(-1), StatusIs(kInvalid, HasSubstr("-1")));
  EXPECT_THAT(static_->Get(-1), StatusIs(kInvalid, HasSubstr("-1")));
}

TEST_F(InvalidInputTest, StaticGetOfNumLayersIsInvalid) {
  EXPECT_THAT(static_->Get(2), StatusIs(kInvalid, HasSubstr("2")));
  // A dynamic cache answers "nothing there" past its slots.
  absl::StatusOr<std::optional<KVView>> past = dynamic_.Get(2);
  ASSERT_THAT(past, IsOk());
  EXPECT_FALSE(past->has_value());
}

TEST_F(InvalidInputTest, GetSeqLengthOfNegativeLayerIsInvalid) {
  EXPECT_THAT(dynamic_.GetSeqLength(-1), StatusIs(kInvalid, HasSubstr("-1")));
  EXPECT_THAT(static_->GetSeqLength(-1), StatusIs(kInvalid, HasSubstr("-1")));
  // Past the slots: 0, not an error.
  EXPECT_EQ(*dynamic_.GetSeqLength(7), 0);
  EXPECT_EQ(*static_->GetSeqLength(7), 0);
}

TEST_F(InvalidInputTest, SelectIndexPastTheBatchIsOutOfRange) {
  const std::vector<int64_t> indices = {0, 2};
  EXPECT_THAT(dynamic_.ReorderCache(indices),
              StatusIs(kOutOfRange, HasSubstr("2")));
  EXPECT_THAT(dynamic_.BatchSelectIndices(indices),
              StatusIs(kOutOfRange, HasSubstr("2")));
  EXPECT_THAT(static_->ReorderCache(indices),
              StatusIs(kOutOfRange, HasSubstr("2")));
  EXPECT_THAT(static_->BatchSelectIndices(indices),
              StatusIs(kOutOfRange, HasSubstr("2")));
}

TEST_F(InvalidInputTest, NegativeSelectIndexIsOutOfRange) {
  const std::vector<int64_t> indices = {1, -1};
  EXPECT_THAT(dynamic_.ReorderCache(indices),
              StatusIs(kOutOfRange, HasSubstr("-1")));
  EXPECT_THAT(dynamic_.BatchSelectIndices(indices),
              StatusIs(kOutOfRange, HasSubstr("-1")));
  EXPECT_THAT(static_->ReorderCache(indices),
              StatusIs(kOutOfRange, HasSubstr("-1")));
  EXPECT_THAT(static_->BatchSelectIndices(indices),
              StatusIs(kOutOfRange, HasSubstr("-1")));
}

TEST_F(InvalidInputTest, RepeatBelowOneIsInvalid) {
  for (int64_t repeats : {0, -1}) {
    EXPECT_THAT(dynamic_.BatchRepeatInterleave(repeats),
                StatusIs(kInvalid, HasSubstr(std::to_string(repeats))));
    EXPECT_THAT(static_->BatchRepeatInterleave(repeats),
                StatusIs(kInvalid, HasSubstr(std::to_string(repeats))));
  }
}

TEST_F(InvalidInputTest, NegativeCropIsInvalid) {
  EXPECT_THAT(dynamic_.Crop(-1), StatusIs(kInvalid, HasSubstr("-1")));
  EXPECT_THAT(static_->Crop(-1), StatusIs(kInvalid, HasSubstr("-1")));
}

TEST_F(InvalidInputTest, NoOpsChangeNothing) {
  // repeats == 1 and crop past every length are valid no-ops.
  EXPECT_THAT(dynamic_.BatchRepeatInterleave(1), IsOk());
  EXPECT_THAT(static_->BatchRepeatInterleave(1), IsOk());
  EXPECT_THAT(dynamic_.Crop(5), IsOk());
  EXPECT_THAT(static_->Crop(7), IsOk());
}

// A cache with nothing in it yet: a failed first update fixes no batch,
// opens no layer slot and allocates nothing.
TEST(FreshCacheInvalidInputTest, FailedFirstUpdateLeavesNoTrace) {
  DynamicKVCache dynamic;
  const CacheSnapshot before = TakeSnapshot(dynamic);
  EXPECT_THAT(UpdateWith(dynamic, Pattern({1, 2, 2, 4}), 3,
                         CachePosition::Vector({0, -4})),
              StatusIs(kInvalid, HasSubstr("-4")));
  EXPECT_THAT(UpdateWith(dynamic, Pattern({1, 2, 4}), 3),
              StatusIs(kInvalid, HasSubstr("(1, 2, 4)")));
  EXPECT_EQ(TakeSnapshot(dynamic), before);
  EXPECT_EQ(dynamic.num_layer_slots(), 0);
  EXPECT_EQ(dynamic.batch_size(), std::nullopt);
  EXPECT_EQ(dynamic.pool(), nullptr);

  std::unique_ptr<StaticKVCache> fixed =
      *StaticKVCache::Create({.max_cache_len = 4, .num_layers = 1});
  const CacheSnapshot static_before = TakeSnapshot(*fixed);
  EXPECT_THAT(UpdateWith(*fixed, Pattern({1, 2, 5, 4}), 0),
              StatusIs(kOutOfRange, HasSubstr("4")));
  EXPECT_EQ(TakeSnapshot(*fixed), static_before);
  EXPECT_EQ(fixed->batch_size(), std::nullopt);
}

TEST(ResetInvalidInputTest, AfterResetAStandaloneCacheTakesANewGeometry) {
  DynamicKVCache dynamic;
  ASSERT_THAT(UpdateWith(dynamic, Pattern({2, 2, 3, 4}), 0), IsOk());
  dynamic.Reset();
  ASSERT_THAT(UpdateWith(dynamic, Pattern({3, 1, 2, 8}), 1), IsOk());
  EXPECT_EQ(dynamic.batch_size(), 3);
  EXPECT_EQ(*dynamic.GetSeqLength(1), 2);
  EXPECT_EQ(*dynamic.GetSeqLength(0), 0);
  dynamic.CheckInvariants();
  // The dtype stays fixed across Reset.
  dynamic.Reset();
  EXPECT_THAT(UpdateWith(dynamic, Pattern({1, 1, 1, 8}, DType::kFloat16), 0),
              StatusIs(kInvalid, HasSubstr("float16")));

  std::unique_ptr<StaticKVCache> fixed =
      *StaticKVCache::Create({.max_cache_len = 8, .num_layers = 2});
  ASSERT_THAT(UpdateWith(*fixed, Pattern({2, 2, 3, 4}), 0), IsOk());
  fixed->Reset();
  ASSERT_THAT(UpdateWith(*fixed, Pattern({1, 4, 8, 2}), 1), IsOk());
  EXPECT_EQ(fixed->batch_size(), 1);
  EXPECT_EQ(fixed->num_layer_slots(), 2);
  fixed->CheckInvariants();
}

// Shared pools: 4-token blocks, 2 layers, 2 heads, head_dim 4, float32.
std::unique_ptr<KVPool> SmallPool(int32_t num_blocks) {
  return *KVPool::Create({.layout = KVLayout{2, 2, 4, DType::kFloat32, 4},
                          .num_blocks = num_blocks});
}

TEST(SharedPoolInvalidInputTest, PoolRejectsGeometryItWasNotBuiltFor) {
  std::unique_ptr<KVPool> pool = SmallPool(8);
  DynamicKVCache cache(pool.get());
  const CacheSnapshot before = TakeSnapshot(cache);
  EXPECT_THAT(UpdateWith(cache, Pattern({1, 3, 1, 4}), 0),
              StatusIs(kInvalid, HasSubstr("(1, 3, 1, 4)")));
  EXPECT_THAT(UpdateWith(cache, Pattern({1, 2, 1, 8}), 0),
              StatusIs(kInvalid, HasSubstr("(1, 2, 1, 8)")));
  EXPECT_THAT(UpdateWith(cache, Pattern({1, 2, 1, 4}), 2),
              StatusIs(kInvalid, HasSubstr("2")));
  EXPECT_THAT(UpdateWith(cache, Pattern({1, 2, 1, 4}, DType::kFloat16), 0),
              StatusIs(kInvalid, HasSubstr("float16")));
  EXPECT_EQ(TakeSnapshot(cache), before);

  // After a Reset the pool still decides heads and head_dim.
  ASSERT_THAT(UpdateWith(cache, Pattern({1, 2, 1, 4}), 0), IsOk());
  cache.Reset();
  EXPECT_THAT(UpdateWith(cache, Pattern({1, 1, 1, 4}), 0),
              StatusIs(kInvalid, HasSubstr("(1, 1, 1, 4)")));
  EXPECT_THAT(UpdateWith(cache, Pattern({5, 2, 1, 4}), 0), IsOk());

  // StaticKVCache on the pool: likewise, and Create checks the layers.
  EXPECT_THAT(StaticKVCache::Create(
                  {.max_cache_len = 4, .num_layers = 3, .pool = pool.get()}),
              StatusIs(kInvalid, HasSubstr("3")));
  std::unique_ptr<StaticKVCache> fixed = *StaticKVCache::Create(
      {.max_cache_len = 4, .num_layers = 2, .pool = pool.get()});
  EXPECT_THAT(UpdateWith(*fixed, Pattern({1, 2, 1, 2}), 0),
              StatusIs(kInvalid, HasSubstr("(1, 2, 1, 2)")));
}

TEST(SharedPoolInvalidInputTest, FullPoolIsResourceExhaustedAndChangesNothing) {
  std::unique_ptr<KVPool> pool = SmallPool(3);
  DynamicKVCache a(pool.get());
  DynamicKVCache b(pool.get());
  ASSERT_THAT(UpdateWith(a, Pattern({1, 2, 8, 4}), 0), IsOk());  // 2 blocks.
  ASSERT_THAT(UpdateWith(b, Pattern({1, 2, 3, 4}), 0), IsOk());  // 1 block.
  ASSERT_EQ(pool->books().num_free_blocks(), 0);
  const CacheSnapshot a_before = TakeSnapshot(a);
  const CacheSnapshot b_before = TakeSnapshot(b);

  // Append past the last block.
  EXPECT_THAT(UpdateWith(a, Pattern({1, 2, 1, 4}), 0),
              StatusIs(kExhausted, HasSubstr("1")));
  // A positional write that opens a new block, on a new layer.
  EXPECT_THAT(UpdateWith(a, Pattern({1, 2, 1, 4}), 1, CachePosition::Scalar(9)),
              StatusIs(kExhausted, HasSubstr("1")));
  // B's append into its own block fits; two more tokens do not.
  EXPECT_THAT(UpdateWith(b, Pattern({1, 2, 2, 4}), 0),
              StatusIs(kExhausted, HasSubstr("1")));
  EXPECT_EQ(TakeSnapshot(a), a_before);
  EXPECT_EQ(TakeSnapshot(b), b_before);

  // A fresh cache's first update fixes no batch when the pool is full.
  DynamicKVCache c(pool.get());
  const CacheSnapshot c_before = TakeSnapshot(c);
  EXPECT_THAT(UpdateWith(c, Pattern({1, 2, 1, 4}), 0),
              StatusIs(kExhausted, HasSubstr("1")));
  EXPECT_EQ(TakeSnapshot(c), c_before);
  EXPECT_EQ(c.batch_size(), std::nullopt);
  EXPECT_EQ(c.num_layer_slots(), 0);

  // Copy-on-write also needs blocks: a repeated row cannot write its shared
  // block when the pool is full.
  ASSERT_THAT(b.BatchRepeatInterleave(2), IsOk());
  const CacheSnapshot b_repeated = TakeSnapshot(b);
  EXPECT_THAT(UpdateWith(b, Pattern({2, 2, 1, 4}), 0),
              StatusIs(kExhausted, HasSubstr("1")));
  EXPECT_EQ(TakeSnapshot(b), b_repeated);
  a.CheckInvariants();
  b.CheckInvariants();
  c.CheckInvariants();
  pool->books().CheckInvariants();
}

TEST(SharedPoolInvalidInputTest,
     StaticReservationThatCannotGrowChangesNothing) {
  // max_cache_len 8 with 4-token blocks reserves 2 blocks per row.
  std::unique_ptr<KVPool> pool = SmallPool(5);
  std::unique_ptr<StaticKVCache> cache = *StaticKVCache::Create(
      {.max_cache_len = 8, .num_layers = 2, .pool = pool.get()});
  ASSERT_THAT(UpdateWith(*cache, Pattern({2, 2, 3, 4}), 0), IsOk());
  EXPECT_EQ(cache->stats().blocks_reserved + cache->stats().blocks_in_use, 4);
  const CacheSnapshot before = TakeSnapshot(*cache);

  // Repeat 2 needs a reservation of 8 blocks: the pool has 5.
  EXPECT_THAT(cache->BatchRepeatInterleave(2),
              StatusIs(kExhausted, HasSubstr("4")));
  EXPECT_EQ(TakeSnapshot(*cache), before);
  // So does a select that grows the batch to 3 (6 blocks).
  const std::vector<int64_t> grow = {0, 1, 1};
  EXPECT_THAT(cache->BatchSelectIndices(grow),
              StatusIs(kExhausted, HasSubstr("2")));
  EXPECT_EQ(TakeSnapshot(*cache), before);
  // A first update whose reservation does not fit fixes nothing either.
  std::unique_ptr<StaticKVCache> other = *StaticKVCache::Create(
      {.max_cache_len = 8, .num_layers = 2, .pool = pool.get()});
  const CacheSnapshot other_before = TakeSnapshot(*other);
  EXPECT_THAT(UpdateWith(*other, Pattern({1, 2, 1, 4}), 0),
              StatusIs(kExhausted, HasSubstr("2")));
  EXPECT_EQ(TakeSnapshot(*other), other_before);
  EXPECT_EQ(other->batch_size(), std::nullopt);

  // Shrinking always works, and then the repeat fits.
  const std::vector<int64_t> one = {1};
  ASSERT_THAT(cache->BatchSelectIndices(one), IsOk());
  EXPECT_THAT(cache->BatchRepeatInterleave(2), IsOk());
  cache->CheckInvariants();
  pool->books().CheckInvariants();
}

// EncoderDecoderCache checks both halves before changing either.
TEST(EncoderDecoderInvalidInputTest, BatchOpsCheckBothHalvesFirst) {
  EncoderDecoderCache cache;
  const Tensor self_kv = Pattern({2, 2, 3, 4});
  const Tensor cross_kv = Pattern({3, 2, 5, 4});
  ASSERT_THAT(cache.Update(self_kv.view(), self_kv.view(), 0, CachePosition()),
              IsOk());
  ASSERT_THAT(cache.Update(cross_kv.view(), cross_kv.view(), 0, CachePosition(),
                           Attention::kCross),
              IsOk());
  const CacheSnapshot self_before = TakeSnapshot(cache.self_attention_cache());
  const CacheSnapshot cross_before =
      TakeSnapshot(cache.cross_attention_cache());

  // Index 2 is inside the cross batch (3) but outside the self batch (2).
  const std::vector<int64_t> indices = {0, 2};
  EXPECT_THAT(cache.ReorderCache(indices),
              StatusIs(kOutOfRange, HasSubstr("2")));
  EXPECT_THAT(cache.BatchSelectIndices(indices),
              StatusIs(kOutOfRange, HasSubstr("2")));
  EXPECT_THAT(cache.BatchRepeatInterleave(0),
              StatusIs(kInvalid, HasSubstr("0")));
  EXPECT_THAT(cache.Crop(-1), StatusIs(kInvalid, HasSubstr("-1")));
  EXPECT_THAT(cache.Get(-1, Attention::kCross),
              StatusIs(kInvalid, HasSubstr("-1")));
  EXPECT_THAT(cache.GetSeqLength(-1, Attention::kCross),
              StatusIs(kInvalid, HasSubstr("-1")));
  // A failed cross update marks nothing.
  EXPECT_THAT(cache.Update(self_kv.view(), self_kv.view(), 1, CachePosition(),
                           Attention::kCross),
              StatusIs(kInvalid, HasSubstr("batch 3")));
  EXPECT_FALSE(cache.is_updated(1));
  EXPECT_EQ(TakeSnapshot(cache.self_attention_cache()), self_before);
  EXPECT_EQ(TakeSnapshot(cache.cross_attention_cache()), cross_before);
  cache.CheckInvariants();
}

TEST(EncoderDecoderInvalidInputTest,
     ExhaustedCrossHalfLeavesSelfHalfUnchanged) {
  std::unique_ptr<KVPool> pool = SmallPool(6);
  // Static self half (2 blocks per row reserved) and static cross half.
  EncoderDecoderCache cache(
      *StaticKVCache::Create(
          {.max_cache_len = 8, .num_layers = 2, .pool = pool.get()}),
      *StaticKVCache::Create(
          {.max_cache_len = 8, .num_layers = 2, .pool = pool.get()}));
  const Tensor kv = Pattern({1, 2, 2, 4});
  ASSERT_THAT(cache.Update(kv.view(), kv.view(), 0, CachePosition()), IsOk());
  ASSERT_THAT(
      cache.Update(kv.view(), kv.view(), 0, CachePosition(), Attention::kCross),
      IsOk());
  const CacheSnapshot self_before = TakeSnapshot(cache.self_attention_cache());
  const CacheSnapshot cross_before =
      TakeSnapshot(cache.cross_attention_cache());
  const int32_t free_before = pool->books().num_free_blocks();
  // Repeat 2 needs 4 + 4 reserved blocks; the pool has 6.
  EXPECT_THAT(cache.BatchRepeatInterleave(2),
              StatusIs(kExhausted, HasSubstr("2")));
  EXPECT_EQ(TakeSnapshot(cache.self_attention_cache()), self_before);
  EXPECT_EQ(TakeSnapshot(cache.cross_attention_cache()), cross_before);
  EXPECT_EQ(pool->books().num_free_blocks(), free_before);
  EXPECT_EQ(pool->books().num_reserved_blocks(),
            self_before.blocks_reserved + cross_before.blocks_reserved);
  cache.CheckInvariants();
}

// Every Create option outside its range is INVALID_ARGUMENT naming the
// range and the value given.
TEST(CreateInvalidInputTest, OptionsOutsideTheirRangesNameTheValue) {
  const struct {
    DynamicKVCache::Options options;
    const char* message;
  } dynamic_cases[] = {
      {{.block_tokens = 0}, "block_tokens must be in [1, 65536], got 0"},
      {{.block_tokens = 65537},
       "block_tokens must be in [1, 65536], got 65537"},
      {{.max_private_pool_bytes = 0},
       "max_private_pool_bytes must be > 0, got 0"},
      {{.max_private_pool_bytes = -5},
       "max_private_pool_bytes must be > 0, got -5"},
  };
  for (const auto& c : dynamic_cases) {
    EXPECT_THAT(DynamicKVCache::Create(c.options),
                StatusIs(kInvalid, HasSubstr(c.message)));
  }
  std::unique_ptr<KVPool> pool = *KVPool::Create(
      {.layout = KVLayout{2, 2, 4, DType::kFloat32, 4}, .num_blocks = 8});
  const struct {
    StaticKVCache::Options options;
    const char* message;
  } static_cases[] = {
      {{.max_cache_len = 0, .num_layers = 1},
       "max_cache_len must be in [1, 16777216], got 0"},
      {{.max_cache_len = (int64_t{1} << 24) + 1, .num_layers = 1},
       "got 16777217"},
      {{.max_cache_len = 8, .num_layers = 0},
       "num_layers must be in [1, 65536], got 0"},
      {{.max_cache_len = 8, .num_layers = 65537}, "got 65537"},
      {{.max_cache_len = 8, .num_layers = 3, .pool = pool.get()},
       "num_layers 3 exceeds the pool's 2 layers"},
      {{.max_cache_len = 8, .num_layers = 1, .block_tokens = 0},
       "block_tokens must be in [1, 65536], got 0"},
      {{.max_cache_len = 8, .num_layers = 1, .max_private_pool_bytes = 0},
       "max_private_pool_bytes must be > 0, got 0"},
  };
  for (const auto& c : static_cases) {
    EXPECT_THAT(StaticKVCache::Create(c.options),
                StatusIs(kInvalid, HasSubstr(c.message)));
  }
  // Nothing was taken from the pool.
  EXPECT_EQ(pool->books().num_free_blocks(), 8);
  EXPECT_EQ(pool->books().num_reserved_blocks(), 0);
}

}  // namespace
}  // namespace pagedkv
