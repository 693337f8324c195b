#include "cache/storage/growable_kv_pool.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
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

constexpr int32_t kChunk = 4;

// 2 layers * 2 (K|V) * 3 heads * 4 tokens * 2 dims * 2 bytes = 192 bytes.
KVLayout SmallLayout(int32_t num_layers = 2) {
  return KVLayout{.num_layers = num_layers,
                  .num_kv_heads = 3,
                  .head_dim = 2,
                  .dtype = DType::kFloat16,
                  .block_tokens = 4};
}

std::unique_ptr<GrowableKVPool> MakePool(MemoryResource* memory = nullptr,
                                         const KVLayout& layout = SmallLayout(),
                                         int32_t chunk_blocks = kChunk) {
  absl::StatusOr<std::unique_ptr<GrowableKVPool>> pool = GrowableKVPool::Create(
      {.layout = layout, .num_blocks = chunk_blocks, .memory = memory});
  return std::move(*pool);
}

// The value stored for (block, layer, kv, head, slot, dim): unique for
// blocks < 32, layers < 8, heads < 4, slots < 8 and dims < 4 (2048 values per
// block), which covers every pool here.
uint16_t Tag(int32_t block, int32_t layer, KV kv, int32_t head, int32_t slot,
             int32_t dim) {
  return static_cast<uint16_t>(
      (((((block * 8 + layer) * 2 + static_cast<int32_t>(kv)) * 4 + head) * 8 +
        slot) *
           4 +
       dim) &
      0xFFFF);
}

uint16_t* Element(KVPool& pool, BlockId block, int32_t layer, KV kv,
                  int32_t head, int32_t slot, int32_t dim) {
  const KVLayout& layout = pool.layout();
  return reinterpret_cast<uint16_t*>(pool.BlockData(block)) +
         layout.ElementOffset(layer, kv, head, slot) + dim;
}

// Writes Tag(...) into layers [0, num_layers) of every block.
void TagLayers(KVPool& pool, int32_t num_layers) {
  const KVLayout& layout = pool.layout();
  for (int32_t b = 0; b < pool.num_blocks(); ++b) {
    for (int32_t l = 0; l < num_layers; ++l) {
      for (KV kv : {KV::kKey, KV::kValue}) {
        for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
          for (int32_t s = 0; s < layout.block_tokens; ++s) {
            for (int32_t d = 0; d < layout.head_dim; ++d) {
              *Element(pool, BlockId(b), l, kv, h, s, d) =
                  Tag(b, l, kv, h, s, d);
            }
          }
        }
      }
    }
  }
}

// Counts elements of layers [0, num_layers) of blocks [0, num_blocks) that
// do not hold their Tag.
int CountMismatchedTags(KVPool& pool, int32_t num_blocks, int32_t num_layers) {
  const KVLayout& layout = pool.layout();
  int mismatches = 0;
  for (int32_t b = 0; b < num_blocks; ++b) {
    for (int32_t l = 0; l < num_layers; ++l) {
      for (KV kv : {KV::kKey, KV::kValue}) {
        for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
          for (int32_t s = 0; s < layout.block_tokens; ++s) {
            for (int32_t d = 0; d < layout.head_dim; ++d) {
              if (*Element(pool, BlockId(b), l, kv, h, s, d) !=
                  Tag(b, l, kv, h, s, d)) {
                ++mismatches;
              }
            }
          }
        }
      }
    }
  }
  return mismatches;
}

// Everything a failed Grow or Relayout must leave as it was.
struct PoolSnapshot {
  KVLayout layout;
  int32_t num_blocks;
  size_t capacity_bytes;
  int32_t chunk_blocks;
  int32_t num_free_blocks;
  int32_t num_reserved_blocks;
  std::vector<int32_t> ref_counts;
  std::vector<const std::byte*> addresses;
  std::vector<std::vector<std::byte>> bytes;
  int64_t bytes_copied;

  static PoolSnapshot Of(const GrowableKVPool& pool) {
    PoolSnapshot s{pool.layout(),
                   pool.num_blocks(),
                   pool.capacity_bytes(),
                   pool.chunk_blocks(),
                   pool.books().num_free_blocks(),
                   pool.books().num_reserved_blocks(),
                   {},
                   {},
                   {},
                   pool.bytes_copied()};
    for (int32_t b = 0; b < pool.num_blocks(); ++b) {
      const std::byte* data = pool.BlockData(BlockId(b));
      s.ref_counts.push_back(pool.books().ref_count(BlockId(b)));
      s.addresses.push_back(data);
      s.bytes.emplace_back(data, data + pool.block_bytes());
    }
    return s;
  }

  friend bool operator==(const PoolSnapshot& a, const PoolSnapshot& b) {
    return a.layout == b.layout && a.num_blocks == b.num_blocks &&
           a.capacity_bytes == b.capacity_bytes &&
           a.chunk_blocks == b.chunk_blocks &&
           a.num_free_blocks == b.num_free_blocks &&
           a.num_reserved_blocks == b.num_reserved_blocks &&
           a.ref_counts == b.ref_counts && a.addresses == b.addresses &&
           a.bytes == b.bytes && a.bytes_copied == b.bytes_copied;
  }
};

// Holds blocks 0..n-1 of `pool` (one reference each, taken in any order the
// free list hands them out) and returns them.
std::vector<BlockId> AllocateAll(KVPool& pool) {
  absl::StatusOr<std::vector<BlockId>> ids =
      pool.books().Allocate(pool.books().num_unreserved_free_blocks());
  return std::move(*ids);
}

TEST(GrowableKVPoolTest, CreateMakesOneChunk) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);
  EXPECT_EQ(pool->num_blocks(), kChunk);
  EXPECT_EQ(pool->chunk_blocks(), kChunk);
  EXPECT_EQ(pool->layout(), SmallLayout());
  EXPECT_EQ(pool->capacity_bytes(), kChunk * SmallLayout().block_bytes());
  EXPECT_EQ(memory.num_live_allocations(), 1);
}

TEST(GrowableKVPoolTest, CreateRejectsSharedConcurrency) {
  EXPECT_THAT(
      GrowableKVPool::Create({.layout = SmallLayout(),
                              .num_blocks = 4,
                              .concurrency = PoolConcurrency::kShared}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kSingleThread")));
}

TEST(GrowableKVPoolTest, CreateRejectsWhatKVPoolRejects) {
  KVLayout bad = SmallLayout();
  bad.num_kv_heads = 0;
  EXPECT_THAT(
      GrowableKVPool::Create({.layout = bad, .num_blocks = 4}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kv_heads=0")));
  EXPECT_THAT(
      GrowableKVPool::Create({.layout = SmallLayout(), .num_blocks = 0}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got 0")));
  FailingMemoryResource memory(/*fail_from=*/1);
  EXPECT_THAT(
      GrowableKVPool::Create(
          {.layout = SmallLayout(), .num_blocks = 4, .memory = &memory}),
      StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(memory.num_live_allocations(), 0);
}

TEST(GrowableKVPoolTest, GrowRoundsUpToWholeChunksAndReturnsBlocksAdded) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);

  absl::StatusOr<int32_t> added = pool->Grow(1);
  ASSERT_THAT(added, IsOk());
  EXPECT_EQ(*added, 4);
  EXPECT_EQ(pool->num_blocks(), 8);
  EXPECT_EQ(memory.num_live_allocations(), 2);

  added = pool->Grow(5);  // Two chunks.
  ASSERT_THAT(added, IsOk());
  EXPECT_EQ(*added, 8);
  EXPECT_EQ(pool->num_blocks(), 16);

  added = pool->Grow(4);  // Exactly one chunk.
  ASSERT_THAT(added, IsOk());
  EXPECT_EQ(*added, 4);
  EXPECT_EQ(pool->num_blocks(), 20);
  EXPECT_EQ(memory.num_live_allocations(), 5);
  EXPECT_EQ(pool->capacity_bytes(), 20 * pool->block_bytes());
  EXPECT_EQ(pool->books().num_free_blocks(), 20);
  pool->books().CheckInvariants();
}

TEST(GrowableKVPoolTest, GrowRejectsNonPositiveCounts) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  EXPECT_THAT(pool->Grow(0), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("extra_blocks > 0, got 0")));
  EXPECT_THAT(pool->Grow(-4), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("got -4")));
  EXPECT_EQ(pool->num_blocks(), kChunk);
}

TEST(GrowableKVPoolTest, GrowKeepsExistingBytesAddressesAndReferences) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  TagLayers(*pool, 2);
  std::vector<BlockId> held = AllocateAll(*pool);
  pool->books().AddRef(held[0]);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);

  ASSERT_THAT(pool->Grow(7), IsOk());
  ASSERT_EQ(pool->num_blocks(), 12);
  for (int32_t b = 0; b < kChunk; ++b) {
    EXPECT_EQ(pool->BlockData(BlockId(b)), before.addresses[b]) << b;
    EXPECT_EQ(pool->books().ref_count(BlockId(b)), before.ref_counts[b]) << b;
  }
  EXPECT_EQ(CountMismatchedTags(*pool, kChunk, 2), 0);
  // The new blocks are free, and they are the ones handed out next.
  EXPECT_EQ(pool->books().num_free_blocks(), 8);
  for (int i = 0; i < 8; ++i) {
    std::optional<BlockId> id = pool->books().TryAllocate();
    ASSERT_TRUE(id.has_value());
    EXPECT_GE(id->value(), kChunk);
    held.push_back(*id);
  }
  // Every block, old and new, is writable in full and distinct.
  TagLayers(*pool, 2);
  EXPECT_EQ(CountMismatchedTags(*pool, pool->num_blocks(), 2), 0);
  pool->books().ReleaseAll(held);
  pool->books().Release(held[0]);
  pool->books().CheckInvariants();
}

TEST(GrowableKVPoolTest, BlocksOfLaterChunksAddressTheirOwnChunk) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  ASSERT_THAT(pool->Grow(8), IsOk());
  for (int32_t b = 0; b < pool->num_blocks(); ++b) {
    const int32_t first = b / kChunk * kChunk;
    EXPECT_EQ(pool->BlockData(BlockId(b)) - pool->BlockData(BlockId(first)),
              static_cast<ptrdiff_t>((b - first) * pool->block_bytes()))
        << b;
  }
}

TEST(GrowableKVPoolTest, RelayoutWiderKeepsEveryBlocksOldLayers) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  ASSERT_THAT(pool->Grow(kChunk), IsOk());  // Two chunks.
  TagLayers(*pool, 2);
  std::vector<BlockId> held = AllocateAll(*pool);
  pool->books().Release(held[3]);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);

  ASSERT_THAT(pool->Relayout(5), IsOk());
  EXPECT_EQ(pool->layout(), SmallLayout(5));
  EXPECT_EQ(pool->block_bytes(), SmallLayout(5).block_bytes());
  EXPECT_EQ(pool->num_blocks(), 8);
  EXPECT_EQ(pool->capacity_bytes(), 8 * SmallLayout(5).block_bytes());
  EXPECT_EQ(pool->chunk_blocks(), kChunk);
  // Read through the new layout's ElementOffset: layers 0 and 1 kept.
  EXPECT_EQ(CountMismatchedTags(*pool, 8, 2), 0);
  // The books did not move: same ids, same references.
  for (int32_t b = 0; b < 8; ++b) {
    EXPECT_EQ(pool->books().ref_count(BlockId(b)), before.ref_counts[b]) << b;
  }
  EXPECT_EQ(pool->books().num_free_blocks(), before.num_free_blocks);
  // The new layers are usable in every block.
  TagLayers(*pool, 5);
  EXPECT_EQ(CountMismatchedTags(*pool, 8, 5), 0);
  held.erase(held.begin() + 3);
  pool->books().ReleaseAll(held);
}

TEST(GrowableKVPoolTest, RelayoutNarrowerUndoesAWidening) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  ASSERT_THAT(pool->Grow(1), IsOk());
  TagLayers(*pool, 2);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);

  ASSERT_THAT(pool->Relayout(6), IsOk());
  ASSERT_THAT(pool->Relayout(2), IsOk());
  PoolSnapshot after = PoolSnapshot::Of(*pool);
  // Same bytes and books; only the addresses changed (new chunks).
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.layout, before.layout);
  EXPECT_EQ(after.capacity_bytes, before.capacity_bytes);
  after.addresses = before.addresses;
  EXPECT_TRUE(after == before);
}

TEST(GrowableKVPoolTest, RelayoutNarrowerKeepsTheKeptLayers) {
  std::unique_ptr<GrowableKVPool> pool = MakePool(nullptr, SmallLayout(4));
  TagLayers(*pool, 4);
  ASSERT_THAT(pool->Relayout(3), IsOk());
  EXPECT_EQ(pool->layout().num_layers, 3);
  EXPECT_EQ(CountMismatchedTags(*pool, kChunk, 3), 0);
  ASSERT_THAT(pool->Relayout(1), IsOk());
  EXPECT_EQ(CountMismatchedTags(*pool, kChunk, 1), 0);
}

TEST(GrowableKVPoolTest, RelayoutToTheSameLayersChangesNothing) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);
  TagLayers(*pool, 2);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);
  const int64_t allocations = memory.num_allocations();
  ASSERT_THAT(pool->Relayout(2), IsOk());
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
  EXPECT_EQ(memory.num_allocations(), allocations);
}

TEST(GrowableKVPoolTest, RelayoutRejectsAnInvalidLayerCount) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  TagLayers(*pool, 2);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);
  EXPECT_THAT(pool->Relayout(0), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("layers=0")));
  EXPECT_THAT(pool->Relayout(-2), StatusIs(absl::StatusCode::kInvalidArgument));
  // 2^31 / (2 * 3 * 2 * 4) layers would pass 2^31 elements per block.
  EXPECT_THAT(pool->Relayout(1 << 30),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("over 2^31 elements")));
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
}

TEST(GrowableKVPoolTest, ShrinkToUndoesGrow) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);
  TagLayers(*pool, 2);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);

  ASSERT_THAT(pool->Grow(9), IsOk());  // 3 chunks more.
  ASSERT_EQ(pool->num_blocks(), 16);
  ASSERT_THAT(pool->ShrinkTo(8), IsOk());
  EXPECT_EQ(pool->num_blocks(), 8);
  EXPECT_EQ(memory.num_live_allocations(), 2);
  ASSERT_THAT(pool->ShrinkTo(4), IsOk());
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
  EXPECT_EQ(memory.num_live_allocations(), 1);
  EXPECT_EQ(memory.live_bytes(), pool->capacity_bytes());
  pool->books().CheckInvariants();

  // Growing again works and the new blocks are usable.
  ASSERT_THAT(pool->Grow(1), IsOk());
  TagLayers(*pool, 2);
  EXPECT_EQ(CountMismatchedTags(*pool, 8, 2), 0);
}

TEST(GrowableKVPoolTest, ShrinkToTheCurrentSizeIsANoOp) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  ASSERT_THAT(pool->Grow(4), IsOk());
  ASSERT_THAT(pool->ShrinkTo(8), IsOk());
  EXPECT_EQ(pool->num_blocks(), 8);
}

TEST(GrowableKVPoolTest, ShrinkToFailsWhileADroppedBlockIsInUse) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);
  ASSERT_THAT(pool->Grow(4), IsOk());
  TagLayers(*pool, 2);
  // Hold only block 6 (take all, give back the rest).
  std::vector<BlockId> held = AllocateAll(*pool);
  for (BlockId id : held) {
    if (id != BlockId(6)) pool->books().Release(id);
  }
  const PoolSnapshot before = PoolSnapshot::Of(*pool);

  EXPECT_THAT(pool->ShrinkTo(4), StatusIs(absl::StatusCode::kFailedPrecondition,
                                          HasSubstr("block 6 is in use")));
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
  EXPECT_EQ(memory.num_live_allocations(), 2);

  pool->books().Release(BlockId(6));
  EXPECT_THAT(pool->ShrinkTo(4), IsOk());
  EXPECT_EQ(memory.num_live_allocations(), 1);
}

TEST(GrowableKVPoolTest, ShrinkToFailsWhenReservationsNeedTheDroppedBlocks) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  ASSERT_THAT(pool->Grow(4), IsOk());
  const PoolSnapshot before_reserve = PoolSnapshot::Of(*pool);
  {
    absl::StatusOr<Reservation> reservation = pool->books().Reserve(5);
    ASSERT_THAT(reservation, IsOk());
    const PoolSnapshot before = PoolSnapshot::Of(*pool);
    EXPECT_THAT(pool->ShrinkTo(4),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("4 free for 5 reserved")));
    EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
  }
  // With the reservation gone the shrink goes through.
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before_reserve);
  EXPECT_THAT(pool->ShrinkTo(4), IsOk());
}

TEST(GrowableKVPoolTest, ShrinkToRejectsSizesThatAreNotChunkMultiples) {
  std::unique_ptr<GrowableKVPool> pool = MakePool();
  ASSERT_THAT(pool->Grow(8), IsOk());
  const PoolSnapshot before = PoolSnapshot::Of(*pool);
  for (int32_t n : {0, -4, 3, 5, 11, 16}) {
    EXPECT_THAT(pool->ShrinkTo(n),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("of a pool of 12 blocks in chunks of 4")))
        << n;
  }
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
}

bool IsAligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

TEST(GrowableKVPoolTest, ChunksFollowTheHugePageRuleAcrossGrowAndRelayout) {
  // 64 KiB per layer and block; 16-block chunks are 1 MiB per layer.
  const KVLayout one_layer{.num_layers = 1,
                           .num_kv_heads = 8,
                           .head_dim = 64,
                           .dtype = DType::kFloat32,
                           .block_tokens = 16};
  ASSERT_EQ(one_layer.block_bytes(), size_t{64} << 10);
  constexpr size_t kHugePage = size_t{2} << 20;
  // Through NewDeleteResource, so ASan checks every free against its
  // allocation (size and alignment).
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool =
      MakePool(&memory, one_layer, /*chunk_blocks=*/16);
  ASSERT_THAT(pool->Grow(16), IsOk());
  for (int32_t b : {0, 16}) {
    EXPECT_TRUE(IsAligned(pool->BlockData(BlockId(b)), 64)) << b;
  }
  // Two layers: 2 MiB chunks, huge-page aligned.
  ASSERT_THAT(pool->Relayout(2), IsOk());
  for (int32_t b : {0, 16}) {
    EXPECT_TRUE(IsAligned(pool->BlockData(BlockId(b)), kHugePage)) << b;
  }
  ASSERT_THAT(pool->Grow(1), IsOk());
  EXPECT_TRUE(IsAligned(pool->BlockData(BlockId(32)), kHugePage));
  // Back to 1 MiB chunks, and down to one chunk: every chunk is freed with
  // the alignment it was allocated with.
  ASSERT_THAT(pool->Relayout(1), IsOk());
  ASSERT_THAT(pool->ShrinkTo(16), IsOk());
  EXPECT_EQ(memory.num_live_allocations(), 1);
  EXPECT_EQ(memory.live_bytes(), size_t{1} << 20);
  pool.reset();
  EXPECT_EQ(memory.num_live_allocations(), 0);
}

// Rollback. Grow by three chunks, failing the k-th chunk allocation.
class GrowableKVPoolRollbackTest : public ::testing::TestWithParam<int> {};

TEST_P(GrowableKVPoolRollbackTest, FailedGrowLeavesThePoolUnchanged) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);
  ASSERT_THAT(pool->Grow(4), IsOk());
  TagLayers(*pool, 2);
  std::vector<BlockId> held = {*pool->books().TryAllocate(),
                               *pool->books().TryAllocate()};
  const PoolSnapshot before = PoolSnapshot::Of(*pool);
  const int64_t live = memory.num_live_allocations();
  const size_t live_bytes = memory.live_bytes();

  memory.FailFromAllocation(memory.num_allocations() + GetParam());
  EXPECT_THAT(
      pool->Grow(3 * kChunk),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4 KV blocks")));
  EXPECT_TRUE(PoolSnapshot::Of(*pool) == before);
  EXPECT_EQ(memory.num_live_allocations(), live);  // Fresh chunks freed.
  EXPECT_EQ(memory.live_bytes(), live_bytes);
  pool->books().CheckInvariants();

  // Once memory is back, the same pool grows normally.
  memory.FailFromAllocation(FailingMemoryResource::kNever);
  absl::StatusOr<int32_t> added = pool->Grow(3 * kChunk);
  ASSERT_THAT(added, IsOk());
  EXPECT_EQ(*added, 12);
  EXPECT_EQ(CountMismatchedTags(*pool, 8, 2), 0);
  pool->books().ReleaseAll(held);
}

TEST_P(GrowableKVPoolRollbackTest, FailedRelayoutLeavesThePoolUnchanged) {
  FailingMemoryResource memory;
  std::unique_ptr<GrowableKVPool> pool = MakePool(&memory);
  ASSERT_THAT(pool->Grow(2 * kChunk), IsOk());  // Three chunks.
  TagLayers(*pool, 2);
  std::vector<BlockId> held = {*pool->books().TryAllocate()};
  pool->books().AddRef(held[0]);
  const PoolSnapshot before = PoolSnapshot::Of(*pool);
  const int64_t live = memory.num_live_allocations();

  for (int32_t layers : {5, 1}) {  // Wider and narrower.
    memory.FailFromAllocation(memory.num_allocations() + GetParam());
    EXPECT_THAT(pool->Relayout(layers),
                StatusIs(absl::StatusCode::kResourceExhausted))
        << layers;
    EXPECT_TRUE(PoolSnapshot::Of(*pool) == before) << layers;
    EXPECT_EQ(memory.num_live_allocations(), live) << layers;
  }

  memory.FailFromAllocation(FailingMemoryResource::kNever);
  ASSERT_THAT(pool->Relayout(5), IsOk());
  EXPECT_EQ(CountMismatchedTags(*pool, 12, 2), 0);
  EXPECT_EQ(memory.num_live_allocations(), live);
  pool->books().Release(held[0]);
  pool->books().Release(held[0]);
}

// The first, a middle and the last of three chunk allocations fail.
INSTANTIATE_TEST_SUITE_P(FailingAllocation, GrowableKVPoolRollbackTest,
                         ::testing::Values(1, 2, 3));

}  // namespace
}  // namespace pagedkv
