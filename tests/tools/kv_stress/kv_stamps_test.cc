// KV stamps: row histories through appends and truncation, stamps written
// through a table and read back, and a corrupted or misplaced block caught.
#include "tools/kv_stress/kv_stamps.h"

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "allocator/block_id.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"

namespace pagedkv::kv_stress {
namespace {

// A few token ids, as the tests' rows hold them.
std::vector<int32_t> Ids(std::initializer_list<int32_t> ids) { return ids; }

TEST(RowHistoryTest, KeysDependOnTheTokensUpToEachPosition) {
  RowHistory a;
  a.Append(Ids({5, 6, 7}));
  RowHistory b = a;  // A fork: the same tokens so far.
  a.Append(8);
  b.Append(9);  // The fork diverges.
  ASSERT_EQ(a.length(), 4);
  for (int64_t p = 0; p < 3; ++p) EXPECT_EQ(a.KeyAt(p), b.KeyAt(p)) << p;
  EXPECT_NE(a.KeyAt(3), b.KeyAt(3));
  // The same token after a different prefix is a different key.
  RowHistory c;
  c.Append(Ids({6, 7}));
  EXPECT_NE(c.KeyAt(1), a.KeyAt(2));
  // Truncation and a rewrite of the same tokens give the same keys again.
  const uint64_t last = a.KeyAt(3);
  a.Truncate(2);
  EXPECT_EQ(a.length(), 2);
  a.Append(Ids({7, 8}));
  EXPECT_EQ(a.KeyAt(3), last);
  a.Truncate(0);
  EXPECT_EQ(a.length(), 0);
}

TEST(RowHistoryDeathTest, PositionPastTheEndAborts) {
  RowHistory h;
  h.Append(Ids({1, 2, 3}));
  EXPECT_DEATH(h.KeyAt(3), "position 3 of 3");
  EXPECT_DEATH(h.Truncate(4), "truncate to 4 of 3");
}

class KVStamperTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<KVPool>> made =
        KVPool::Create({.layout = {.num_layers = 2,
                                   .num_kv_heads = 2,
                                   .head_dim = 4,
                                   .dtype = GetParam(),
                                   .block_tokens = 4},
                        .num_blocks = 8});
    ASSERT_TRUE(made.ok());
    pool_ = std::move(*made);
  }
  std::unique_ptr<KVPool> pool_;
};

TEST_P(KVStamperTest, StampsReadBackThroughTheTable) {
  KVStamper stamper(pool_.get());
  RowHistory h;
  h.Append(Ids({30, 31, 32, 33, 34, 35}));
  // Positions 0..5 in blocks 5 (slots 0-3) and 2 (slots 0-1).
  const std::vector<int64_t> slots = {20, 21, 22, 23, 8, 9};
  stamper.Write(slots, 0, h);
  const std::vector<BlockId> table = {BlockId(5), BlockId(2)};
  for (int64_t pos = 0; pos < 6; ++pos) {
    EXPECT_TRUE(stamper.Verify(table, pos, h)) << pos;
  }
  // Every layer's K and V of 6 tokens.
  EXPECT_EQ(stamper.bytes_written(),
            6 * 2 * 2 * 2 * 4 * int64_t(SizeOf(GetParam())));
  // A table pointing at other bytes is caught.
  const std::vector<BlockId> wrong = {BlockId(2), BlockId(5)};
  int mismatches = 0;
  for (int64_t pos = 0; pos < 6; ++pos) {
    mismatches += stamper.Verify(wrong, pos, h) ? 0 : 1;
  }
  EXPECT_GE(mismatches, 4);
  // So is a row of other tokens.
  RowHistory other;
  other.Append(Ids({40, 41, 42, 43, 44, 45}));
  mismatches = 0;
  for (int64_t pos = 0; pos < 6; ++pos) {
    mismatches += stamper.Verify(table, pos, other) ? 0 : 1;
  }
  EXPECT_GE(mismatches, 4);
}

TEST_P(KVStamperTest, ACorruptedByteIsCaught) {
  KVStamper stamper(pool_.get());
  RowHistory h;
  h.Append(Ids({1, 2, 3, 4}));
  stamper.Write(std::vector<int64_t>{4, 5, 6, 7}, 0, h);
  const std::vector<BlockId> table = {BlockId(1)};
  ASSERT_TRUE(stamper.Verify(table, 2, h));
  // Slot 2's stamp: layer 0, K, head 0, dim 0.
  const KVLayout& l = pool_->layout();
  std::byte* at = pool_->BlockData(BlockId(1)) +
                  l.ElementOffset(0, KV::kKey, 0, 2) * SizeOf(l.dtype);
  StoreFromFloat(l.dtype, stamper.StampOf(h.KeyAt(2)) + 1, at);
  EXPECT_FALSE(stamper.Verify(table, 2, h));
  EXPECT_TRUE(stamper.Verify(table, 1, h));
}

TEST_P(KVStamperTest, StampsAreExactIntegersOfTheDtype) {
  KVStamper stamper(pool_.get());
  for (int32_t w = 0; w < 50; ++w) {
    RowHistory h;
    for (int32_t p = 0; p < 50; ++p) h.Append(w * 100 + p);
    for (int64_t p = 0; p < 50; ++p) {
      const float s = stamper.StampOf(h.KeyAt(p));
      EXPECT_GE(s, 0);
      EXPECT_LT(s, stamper.modulus());
      std::byte buf[4];
      StoreFromFloat(GetParam(), s, buf);
      EXPECT_EQ(LoadAsFloat(GetParam(), buf), s);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, KVStamperTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat16,
                                           DType::kBFloat16));

}  // namespace
}  // namespace pagedkv::kv_stress
