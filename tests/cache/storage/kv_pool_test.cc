#include "cache/storage/kv_pool.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/copy_on_write.h"
#include "cache/storage/kv_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/memory_resource.h"
#include "tests/testing/failing_memory_resource.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::FailingMemoryResource;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kHugePage = size_t{2} << 20;

// 2 layers * 2 (K|V) * 2 heads * 4 tokens * 3 dims * 4 bytes = 384 bytes, a
// multiple of 64 that is not a power of two.
KVLayout SmallLayout() {
  return KVLayout{.num_layers = 2,
                  .num_kv_heads = 2,
                  .head_dim = 3,
                  .dtype = DType::kFloat32,
                  .block_tokens = 4};
}

std::unique_ptr<KVPool> MakePool(const KVLayout& layout, int32_t num_blocks,
                                 MemoryResource* memory = nullptr) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool = KVPool::Create(
      {.layout = layout, .num_blocks = num_blocks, .memory = memory});
  return std::move(*pool);  // operator* on an error shows the status.
}

bool IsAligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

// Byte i of block b in fill `seed`: differs between blocks and seeds.
std::byte PatternByte(int32_t block, size_t i, int seed) {
  return static_cast<std::byte>((block * 37 + static_cast<int>(i) * 7 + seed) &
                                0xFF);
}

void FillBlock(KVPool& pool, BlockId id, int seed) {
  std::byte* data = pool.BlockData(id);
  for (size_t i = 0; i < pool.block_bytes(); ++i) {
    data[i] = PatternByte(id.value(), i, seed);
  }
}

// Returns true when block `id` holds the bytes FillBlock(pool, as_block,
// seed) wrote (as_block: the block the bytes were first written to).
bool BlockHolds(const KVPool& pool, BlockId id, int32_t as_block, int seed) {
  const std::byte* data = pool.BlockData(id);
  for (size_t i = 0; i < pool.block_bytes(); ++i) {
    if (data[i] != PatternByte(as_block, i, seed)) return false;
  }
  return true;
}

// Records the requests it passes to NewDeleteResource().
class RecordingResource final : public MemoryResource {
 public:
  struct Request {
    size_t bytes;
    size_t alignment;
  };
  void* Allocate(size_t bytes, size_t alignment) override {
    requests_.push_back({bytes, alignment});
    return NewDeleteResource()->Allocate(bytes, alignment);
  }
  void Deallocate(void* p, size_t bytes, size_t alignment) override {
    NewDeleteResource()->Deallocate(p, bytes, alignment);
  }
  const std::vector<Request>& requests() const { return requests_; }

 private:
  std::vector<Request> requests_;
};

TEST(KVPoolTest, CreateMakesFreeBlocksOfTheLayout) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 5);
  EXPECT_EQ(pool->layout(), SmallLayout());
  EXPECT_EQ(pool->num_blocks(), 5);
  EXPECT_EQ(pool->books().num_blocks(), 5);
  EXPECT_EQ(pool->books().num_free_blocks(), 5);
  EXPECT_EQ(pool->block_bytes(), size_t{384});
  EXPECT_EQ(pool->capacity_bytes(), size_t{5 * 384});
  EXPECT_EQ(pool->bytes_copied(), 0);
  pool->books().CheckInvariants();
}

TEST(KVPoolTest, CreateHonoursSharedConcurrency) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = SmallLayout(),
                      .num_blocks = 2,
                      .concurrency = PoolConcurrency::kShared});
  ASSERT_THAT(pool, IsOk());
  EXPECT_EQ((*pool)->books().concurrency(), PoolConcurrency::kShared);
}

TEST(KVPoolTest, CreateRejectsAnInvalidLayout) {
  KVLayout layout = SmallLayout();
  layout.head_dim = 0;
  EXPECT_THAT(
      KVPool::Create({.layout = layout, .num_blocks = 4}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("positive counts"), HasSubstr("head_dim=0"))));
}

TEST(KVPoolTest, CreateRejectsNonPositiveNumBlocksWithTheNumber) {
  EXPECT_THAT(KVPool::Create({.layout = SmallLayout(), .num_blocks = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("num_blocks > 0, got 0")));
  EXPECT_THAT(KVPool::Create({.layout = SmallLayout(), .num_blocks = -3}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("num_blocks > 0, got -3")));
}

// A DType byte outside the enumerators (from a binding or a file) is an
// InvalidArgument layout, not an abort in SizeOf.
TEST(KVPoolTest, CreateRejectsALayoutWithAnInvalidDType) {
  KVLayout layout = SmallLayout();
  layout.dtype = static_cast<DType>(7);
  EXPECT_THAT(layout.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(KVPool::Create({.layout = layout, .num_blocks = 4}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KVPoolTest, CreateReportsResourceExhaustedWhenMemoryFails) {
  FailingMemoryResource memory(/*fail_from=*/1);
  EXPECT_THAT(
      KVPool::Create(
          {.layout = SmallLayout(), .num_blocks = 8, .memory = &memory}),
      StatusIs(absl::StatusCode::kResourceExhausted,
               AllOf(HasSubstr("3072 bytes"), HasSubstr("8 KV blocks"))));
  EXPECT_EQ(memory.num_allocations(), 1);
  EXPECT_EQ(memory.num_live_allocations(), 0);
}

TEST(KVPoolTest, ReturnsItsBytesToTheMemoryResource) {
  FailingMemoryResource memory;
  {
    std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 8, &memory);
    EXPECT_EQ(memory.num_live_allocations(), 1);  // One chunk.
    EXPECT_EQ(memory.live_bytes(), pool->capacity_bytes());
  }
  EXPECT_EQ(memory.num_live_allocations(), 0);
  EXPECT_EQ(memory.live_bytes(), size_t{0});
}

TEST(KVPoolTest, BlocksAreDistinctNonOverlappingAndBlockBytesApart) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 6);
  std::vector<const std::byte*> starts;
  for (int32_t b = 0; b < pool->num_blocks(); ++b) {
    starts.push_back(pool->BlockData(BlockId(b)));
    // One chunk: block b is b blocks after block 0.
    EXPECT_EQ(pool->BlockData(BlockId(b)) - pool->BlockData(BlockId(0)),
              static_cast<ptrdiff_t>(b * pool->block_bytes()));
  }
  std::vector<const std::byte*> sorted = starts;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    EXPECT_GE(sorted[i] - sorted[i - 1],
              static_cast<ptrdiff_t>(pool->block_bytes()));
  }
  // Writing every block whole and reading each back: an overlap would
  // clobber a neighbour, and ASan flags a block that runs past its chunk.
  for (int32_t b = 0; b < pool->num_blocks(); ++b) {
    FillBlock(*pool, BlockId(b), /*seed=*/1);
  }
  for (int32_t b = 0; b < pool->num_blocks(); ++b) {
    EXPECT_TRUE(BlockHolds(*pool, BlockId(b), b, /*seed=*/1)) << b;
  }
}

TEST(KVPoolTest, ConstBlockDataIsTheSameAddress) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 3);
  const KVPool& view = *pool;
  for (int32_t b = 0; b < 3; ++b) {
    EXPECT_EQ(view.BlockData(BlockId(b)), pool->BlockData(BlockId(b)));
  }
}

TEST(KVPoolTest, SmallChunksAreCacheLineAligned) {
  RecordingResource memory;
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 4, &memory);
  ASSERT_EQ(memory.requests().size(), size_t{1});
  EXPECT_EQ(memory.requests()[0].bytes, size_t{4 * 384});
  EXPECT_EQ(memory.requests()[0].alignment, size_t{64});
  EXPECT_TRUE(IsAligned(pool->BlockData(BlockId(0)), 64));
}

TEST(KVPoolTest, ChunkJustBelowTwoMiBIsCacheLineAligned) {
  // 64 KiB blocks; 31 of them are 64 KiB short of 2 MiB.
  const KVLayout layout{.num_layers = 1,
                        .num_kv_heads = 8,
                        .head_dim = 64,
                        .dtype = DType::kFloat32,
                        .block_tokens = 16};
  ASSERT_EQ(layout.block_bytes(), size_t{64} << 10);
  RecordingResource memory;
  std::unique_ptr<KVPool> pool = MakePool(layout, 31, &memory);
  ASSERT_EQ(memory.requests().size(), size_t{1});
  EXPECT_EQ(memory.requests()[0].bytes, kHugePage - (size_t{64} << 10));
  EXPECT_EQ(memory.requests()[0].alignment, size_t{64});
}

TEST(KVPoolTest, ChunksOfTwoMiBOrMoreAreHugePageAligned) {
  const KVLayout layout{.num_layers = 1,
                        .num_kv_heads = 8,
                        .head_dim = 64,
                        .dtype = DType::kFloat32,
                        .block_tokens = 16};  // 64 KiB blocks.
  for (int32_t num_blocks : {32, 33, 64}) {
    RecordingResource memory;
    std::unique_ptr<KVPool> pool = MakePool(layout, num_blocks, &memory);
    ASSERT_EQ(memory.requests().size(), size_t{1});
    EXPECT_EQ(memory.requests()[0].alignment, kHugePage) << num_blocks;
    EXPECT_TRUE(IsAligned(pool->BlockData(BlockId(0)), kHugePage));
  }
  // The default resource (mimalloc) honours the 2 MiB alignment too.
  std::unique_ptr<KVPool> pool = MakePool(layout, 32);
  EXPECT_TRUE(IsAligned(pool->BlockData(BlockId(0)), kHugePage));
  FillBlock(*pool, BlockId(31), /*seed=*/3);
  EXPECT_TRUE(BlockHolds(*pool, BlockId(31), 31, /*seed=*/3));
}

TEST(KVPoolTest, CopyBlockCopiesEveryByteAndCountsThem) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 4);
  for (int32_t b = 0; b < 4; ++b) FillBlock(*pool, BlockId(b), /*seed=*/5);

  pool->CopyBlock(BlockId(1), BlockId(3));
  EXPECT_TRUE(BlockHolds(*pool, BlockId(3), 1, 5));
  EXPECT_TRUE(BlockHolds(*pool, BlockId(1), 1, 5));  // Source unchanged.
  EXPECT_TRUE(BlockHolds(*pool, BlockId(0), 0, 5));  // Others unchanged.
  EXPECT_TRUE(BlockHolds(*pool, BlockId(2), 2, 5));
  EXPECT_EQ(pool->bytes_copied(), static_cast<int64_t>(pool->block_bytes()));
}

TEST(KVPoolTest, RunCopiesRunsEachOpInOrder) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 4);
  for (int32_t b = 0; b < 4; ++b) FillBlock(*pool, BlockId(b), /*seed=*/9);

  // In order: 0 -> 1 first, then the new 1 (= old 0) -> 2.
  const std::vector<CopyOp> ops = {{BlockId(0), BlockId(1)},
                                   {BlockId(1), BlockId(2)},
                                   {BlockId(3), BlockId(0)}};
  pool->RunCopies(ops);
  EXPECT_TRUE(BlockHolds(*pool, BlockId(1), 0, 9));
  EXPECT_TRUE(BlockHolds(*pool, BlockId(2), 0, 9));
  EXPECT_TRUE(BlockHolds(*pool, BlockId(0), 3, 9));
  EXPECT_TRUE(BlockHolds(*pool, BlockId(3), 3, 9));
  EXPECT_EQ(pool->bytes_copied(),
            static_cast<int64_t>(3 * pool->block_bytes()));
}

TEST(KVPoolTest, RunCopiesOfNothingCopiesNothing) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 2);
  pool->RunCopies({});
  EXPECT_EQ(pool->bytes_copied(), 0);
}

TEST(KVPoolTest, CopyBlocksBetweenPoolsCopiesAndCountsOnBoth) {
  std::unique_ptr<KVPool> device = MakePool(SmallLayout(), 4);
  std::unique_ptr<KVPool> host = MakePool(SmallLayout(), 6);
  for (int32_t b = 0; b < 4; ++b) FillBlock(*device, BlockId(b), 11);
  for (int32_t b = 0; b < 6; ++b) FillBlock(*host, BlockId(b), 12);

  const std::vector<BlockId> src = {BlockId(2), BlockId(0)};
  const std::vector<BlockId> dst = {BlockId(5), BlockId(1)};
  ASSERT_THAT(CopyBlocksBetween(*device, src, *host, dst), IsOk());

  EXPECT_TRUE(BlockHolds(*host, BlockId(5), 2, 11));
  EXPECT_TRUE(BlockHolds(*host, BlockId(1), 0, 11));
  for (int32_t b : {0, 2, 3, 4}) {
    EXPECT_TRUE(BlockHolds(*host, BlockId(b), b, 12)) << b;
  }
  for (int32_t b = 0; b < 4; ++b) {
    EXPECT_TRUE(BlockHolds(*device, BlockId(b), b, 11)) << b;
  }
  const int64_t two_blocks = static_cast<int64_t>(2 * device->block_bytes());
  EXPECT_EQ(device->bytes_copied(), two_blocks);
  EXPECT_EQ(host->bytes_copied(), two_blocks);

  // And back (the swap-in direction).
  const std::vector<BlockId> back = {BlockId(3)};
  const std::vector<BlockId> from = {BlockId(4)};
  ASSERT_THAT(CopyBlocksBetween(*host, from, *device, back), IsOk());
  EXPECT_TRUE(BlockHolds(*device, BlockId(3), 4, 12));
  const int64_t three_blocks = static_cast<int64_t>(3 * device->block_bytes());
  EXPECT_EQ(device->bytes_copied(), three_blocks);
  EXPECT_EQ(host->bytes_copied(), three_blocks);
}

TEST(KVPoolTest, CopyBlocksBetweenOnePoolCountsOnce) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 3);
  for (int32_t b = 0; b < 3; ++b) FillBlock(*pool, BlockId(b), 13);
  const std::vector<BlockId> src = {BlockId(0)};
  const std::vector<BlockId> dst = {BlockId(2)};
  ASSERT_THAT(CopyBlocksBetween(*pool, src, *pool, dst), IsOk());
  EXPECT_TRUE(BlockHolds(*pool, BlockId(2), 0, 13));
  EXPECT_EQ(pool->bytes_copied(), static_cast<int64_t>(pool->block_bytes()));
}

TEST(KVPoolTest, CopyBlocksBetweenDifferentLayoutsCopiesNothing) {
  KVLayout other = SmallLayout();
  other.dtype = DType::kFloat16;  // Same counts, half the bytes.
  std::unique_ptr<KVPool> a = MakePool(SmallLayout(), 2);
  std::unique_ptr<KVPool> b = MakePool(other, 4);
  for (int32_t i = 0; i < 2; ++i) FillBlock(*a, BlockId(i), 14);
  for (int32_t i = 0; i < 4; ++i) FillBlock(*b, BlockId(i), 15);

  const std::vector<BlockId> ids = {BlockId(0)};
  EXPECT_THAT(
      CopyBlocksBetween(*a, ids, *b, ids),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("dtype=float32"), HasSubstr("dtype=float16"))));
  EXPECT_THAT(CopyBlocksBetween(*b, ids, *a, ids),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(BlockHolds(*b, BlockId(0), 0, 15));
  EXPECT_TRUE(BlockHolds(*a, BlockId(0), 0, 14));
  EXPECT_EQ(a->bytes_copied(), 0);
  EXPECT_EQ(b->bytes_copied(), 0);
}

TEST(KVPoolTest, CopyBlocksBetweenUnequalListsCopiesNothing) {
  std::unique_ptr<KVPool> a = MakePool(SmallLayout(), 3);
  std::unique_ptr<KVPool> b = MakePool(SmallLayout(), 3);
  for (int32_t i = 0; i < 3; ++i) {
    FillBlock(*a, BlockId(i), 16);
    FillBlock(*b, BlockId(i), 17);
  }
  const std::vector<BlockId> two = {BlockId(0), BlockId(1)};
  const std::vector<BlockId> one = {BlockId(2)};
  EXPECT_THAT(CopyBlocksBetween(*a, two, *b, one),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("2 source blocks into 1 destinations")));
  for (int32_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(BlockHolds(*b, BlockId(i), i, 17)) << i;
  }
  EXPECT_EQ(a->bytes_copied(), 0);
  EXPECT_EQ(b->bytes_copied(), 0);
}

TEST(KVPoolTest, CopyBlocksBetweenEmptyListsIsOk) {
  std::unique_ptr<KVPool> a = MakePool(SmallLayout(), 1);
  std::unique_ptr<KVPool> b = MakePool(SmallLayout(), 1);
  EXPECT_THAT(CopyBlocksBetween(*a, {}, *b, {}), IsOk());
  EXPECT_EQ(a->bytes_copied(), 0);
  EXPECT_EQ(b->bytes_copied(), 0);
}

using KVPoolDeathTest = ::testing::Test;

TEST_F(KVPoolDeathTest, CopyOfABlockOntoItselfAborts) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 2);
  EXPECT_DEATH(pool->CopyBlock(BlockId(1), BlockId(1)),
               "copy of block 1 onto itself");
  const std::vector<BlockId> ids = {BlockId(0)};
  EXPECT_DEATH(CopyBlocksBetween(*pool, ids, *pool, ids).IgnoreError(),
               "copy of block 0 onto itself");
}

TEST_F(KVPoolDeathTest, CopyOutsideThePoolAborts) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 2);
  EXPECT_DEATH(pool->CopyBlock(BlockId(2), BlockId(0)),
               "copy 2 -> 0 outside a pool of 2 blocks");
  EXPECT_DEATH(pool->CopyBlock(BlockId(0), BlockId(5)),
               "copy 0 -> 5 outside a pool of 2 blocks");
  EXPECT_DEATH(pool->CopyBlock(BlockId(-1), BlockId(0)),
               "outside a pool of 2 blocks");
  const std::vector<CopyOp> ops = {{BlockId(0), BlockId(1)},
                                   {BlockId(1), BlockId(7)}};
  EXPECT_DEATH(pool->RunCopies(ops), "copy 1 -> 7 outside");
}

TEST_F(KVPoolDeathTest, CopyBetweenPoolsOutsideEitherPoolAborts) {
  std::unique_ptr<KVPool> small = MakePool(SmallLayout(), 2);
  std::unique_ptr<KVPool> big = MakePool(SmallLayout(), 8);
  const std::vector<BlockId> in_small = {BlockId(1)};
  const std::vector<BlockId> past_small = {BlockId(5)};
  EXPECT_DEATH(
      CopyBlocksBetween(*small, past_small, *big, in_small).IgnoreError(),
      "source block 5 outside a pool of 2");
  EXPECT_DEATH(
      CopyBlocksBetween(*big, in_small, *small, past_small).IgnoreError(),
      "destination block 5 outside a pool of 2");
  const std::vector<BlockId> negative = {BlockId(-1)};
  EXPECT_DEATH(
      CopyBlocksBetween(*big, negative, *small, in_small).IgnoreError(),
      "source block -1 outside");
}

#ifndef NDEBUG
// BlockData checks its id with PKV_DCHECK only (it is per access).
TEST_F(KVPoolDeathTest, BlockDataOutsideThePoolAbortsInDebugBuilds) {
  std::unique_ptr<KVPool> pool = MakePool(SmallLayout(), 2);
  EXPECT_DEATH(pool->BlockData(BlockId(2)), "block 2 outside a pool of 2");
  EXPECT_DEATH(pool->BlockData(BlockId(-1)), "block -1 outside a pool of 2");
}
#endif

}  // namespace
}  // namespace pagedkv
