// The usage examples in the top-of-file comments of the library headers, as
// written there (STYLE.md section 7: "A usage example in a header is copied
// into a test, so it compiles").
//
// Each example sits between `// BEGIN <header>` and `// END <header>`, with
// what it needs declared before BEGIN and what its comments promise checked
// after END. :check_examples_test fails when a block here and the comment of
// its header drift apart, so a change to either must change both.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "allocator/block_table.h"
#include "allocator/copy_on_write.h"
#include "allocator/free_list.h"
#include "allocator/pool_stats.h"
#include "allocator/prefix/block_hash.h"
#include "allocator/prefix/prefix_index.h"
#include "allocator/token_blocks.h"
#include "allocator/window_blocks.h"
#include "base/check.h"
#include "base/maybe_lock.h"
#include "base/status_macros.h"
#include "cache/cache_limits.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/kv_view.h"
#include "cache/paged_attention.h"
#include "cache/private_pool_options.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/sequence_prefix.h"
#include "cache/serving/step_output.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/growable_kv_pool.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/memory_resource.h"
#include "tensor/mimalloc_resource.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tensor/tensor_copy.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---------------------------------------------------------------- allocator

// Returns what the example printed.
std::string BlockIdExample() {
  ::testing::internal::CaptureStdout();
  // clang-format off
  // BEGIN allocator/block_id.h
  BlockId id;                 // Invalid.
  id = BlockId(7);
  if (id.is_valid()) absl::flat_hash_set<BlockId>{id};
  std::cout << id;            // Prints "block#7".
  // END allocator/block_id.h
  // clang-format on
  std::cout.flush();
  return ::testing::internal::GetCapturedStdout();
}

TEST(HeaderExamplesTest, BlockId) {
  EXPECT_FALSE(BlockId().is_valid());
  EXPECT_EQ(BlockIdExample(), "block#7");
}

absl::Status BlockPoolExample() {
  // clang-format off
  // BEGIN allocator/block_pool.h
  BlockPool::Options options;
  options.num_blocks = 4096;
  absl::StatusOr<std::unique_ptr<BlockPool>> pool =
      BlockPool::Create(options);
  if (!pool.ok()) return pool.status();
  std::optional<BlockId> id = (*pool)->TryAllocate();  // ref_count 1.
  if (!id.has_value()) { /* Preempt a sequence, then retry. */ }
  (*pool)->AddRef(*id);                                 // A fork shares it.
  (*pool)->Release(*id);
  (*pool)->Release(*id);                                // Free again.

  absl::StatusOr<Reservation> r = (*pool)->Reserve(64);  // Static cache.
  if (!r.ok()) return r.status();                        // Nothing taken.
  std::optional<BlockId> mine = r->TryAllocate();        // Never nullopt
                                                         // while charged <
                                                         // capacity.
  (*pool)->Release(*mine);                               // Back to r.
  // END allocator/block_pool.h
  // clang-format on
  EXPECT_EQ((*pool)->ref_count(*id), 0);
  EXPECT_EQ((*pool)->num_free_blocks(), 4096);
  EXPECT_EQ((*pool)->num_reserved_blocks(), 64);
  EXPECT_EQ(r->num_reserved_free(), 64);
  EXPECT_EQ(r->num_charged(), 0);
  (*pool)->CheckInvariants();
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, BlockPool) { EXPECT_THAT(BlockPoolExample(), IsOk()); }

absl::Status BlockTableExample() {
  std::unique_ptr<BlockPool> owned = *BlockPool::Create({.num_blocks = 8});
  BlockPool* pool = owned.get();
  // clang-format off
  // BEGIN allocator/block_table.h
  BlockTable table(pool);                      // pool outlives the table.
  if (absl::Status s = table.Grow(3); !s.ok()) return s;
  BlockTable beam = table.Fork();              // Shares all 3 blocks.
  beam.IsShared(2);                            // true
  beam.DropBack(1);                            // table keeps its 3.
  // END allocator/block_table.h
  // clang-format on
  EXPECT_EQ(table.num_blocks(), 3);
  EXPECT_EQ(beam.num_blocks(), 2);
  EXPECT_TRUE(table.IsShared(1));
  EXPECT_FALSE(table.IsShared(2));  // Its only sharer dropped it.
  CheckRefCounts(*pool, {&table, &beam});
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, BlockTable) {
  EXPECT_THAT(BlockTableExample(), IsOk());
}

absl::Status CopyOnWriteExample() {
  std::unique_ptr<BlockPool> owned = *BlockPool::Create({.num_blocks = 16});
  BlockPool& pool = *owned;
  BlockTable row0(&pool);
  PKV_RETURN_IF_ERROR(row0.Grow(4));
  BlockTable row1 = row0.Fork();  // The fork: both rows share 4 blocks.
  std::vector<CopyOp> copied;     // What the bytes side was asked to copy.
  auto CopyBlockBytes = [&copied](BlockId src, BlockId dst) {
    copied.push_back(CopyOp{src, dst});
  };
  const BlockId shared = row0[3];
  // clang-format off
  // BEGIN allocator/copy_on_write.h
  WriteTarget targets[] = {{&row0, 3}, {&row1, 3}};
  absl::StatusOr<PendingCopies> copies =
      PrepareWrite(pool, {.targets = targets});
  if (!copies.ok()) return copies.status();   // RESOURCE_EXHAUSTED.
  for (const CopyOp& op : copies->ops()) CopyBlockBytes(op.src, op.dst);
  copies->MarkDone();                          // Sources may go now.
  // ... write into row0[3] and row1[3] ...
  // END allocator/copy_on_write.h
  // clang-format on
  // Two writers of a block nothing else holds: one copy, and the last
  // writer keeps the block.
  EXPECT_EQ(copied.size(), 1u);
  EXPECT_EQ(copied[0].src, shared);
  EXPECT_NE(row0[3], row1[3]);
  EXPECT_FALSE(row0.IsShared(3));
  EXPECT_FALSE(row1.IsShared(3));
  EXPECT_TRUE(copies->empty());
  CheckRefCounts(pool, {&row0, &row1});
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, CopyOnWrite) {
  EXPECT_THAT(CopyOnWriteExample(), IsOk());
}

// Returns what the example printed.
std::string PoolStatsExample() {
  std::unique_ptr<BlockPool> pool = *BlockPool::Create({.num_blocks = 4096});
  const std::vector<BlockId> used = *pool->Allocate(3096);
  Reservation reservation = *pool->Reserve(200);
  ::testing::internal::CaptureStdout();
  // clang-format off
  // BEGIN allocator/pool_stats.h
  PoolStats s = pool->stats();
  std::cout << s;  // "PoolStats{blocks=4096 free=1000 reserved=200 ...}"
  // END allocator/pool_stats.h
  // clang-format on
  std::cout.flush();
  pool->ReleaseAll(used);
  return ::testing::internal::GetCapturedStdout();
}

TEST(HeaderExamplesTest, PoolStats) {
  EXPECT_THAT(PoolStatsExample(),
              StartsWith("PoolStats{blocks=4096 free=1000 reserved=200 "));
}

// --------------------------------------------------------------------- base

struct CheckExample {
  void Release(int i) {
    // clang-format off
    // BEGIN base/check.h
    PKV_CHECK(ref_counts_[i] > 0, "release of free block %d", i);
    // END base/check.h
    // clang-format on
    --ref_counts_[i];
  }

  std::vector<int32_t> ref_counts_ = {1, 0};
};

TEST(HeaderExamplesTest, CheckPasses) { CheckExample().Release(0); }

TEST(HeaderExamplesDeathTest, CheckAbortsWithTheMessage) {
  EXPECT_DEATH(CheckExample().Release(1), "release of free block 1");
}

void MaybeLockExample(bool shared) {
  // clang-format off
  // BEGIN base/maybe_lock.h
  class Counter {
   public:
    explicit Counter(bool shared) : mu_(shared) {}
    void Add() {
      MaybeLock lock(&mu_);
      ++count_;
    }

   private:
    OptionalMutex mu_;
    int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  };
  // END base/maybe_lock.h
  // clang-format on
  Counter counter(shared);
  counter.Add();
  counter.Add();
}

TEST(HeaderExamplesTest, MaybeLock) {
  MaybeLockExample(/*shared=*/true);
  MaybeLockExample(/*shared=*/false);
}

// A stand-in for a parsed config file.
struct Json {
  std::optional<int> layer;
};

struct StatusMacrosExample {
  DynamicKVCache cache;

  // clang-format off
  // BEGIN base/status_macros.h
  absl::StatusOr<int> ParseLayer(const Json& j);

  absl::Status Apply(const Json& j) {
    PKV_ASSIGN_OR_RETURN(int layer, ParseLayer(j));
    PKV_RETURN_IF_ERROR(cache.Crop(layer));
    return absl::OkStatus();
  }
  // END base/status_macros.h
  // clang-format on
};

absl::StatusOr<int> StatusMacrosExample::ParseLayer(const Json& j) {
  if (!j.layer.has_value()) return absl::InvalidArgumentError("no layer");
  return *j.layer;
}

TEST(HeaderExamplesTest, StatusMacros) {
  StatusMacrosExample example;
  EXPECT_THAT(example.Apply({.layer = 4}), IsOk());
  // PKV_ASSIGN_OR_RETURN returns ParseLayer's error.
  EXPECT_THAT(example.Apply({}), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("no layer")));
  // PKV_RETURN_IF_ERROR returns Crop's (a negative max_length).
  EXPECT_THAT(example.Apply({.layer = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// -------------------------------------------------------------------- cache

absl::Status TooLong() { return absl::OutOfRangeError("prompt too long"); }

absl::Status CacheLimitsExample(int64_t prompt_tokens) {
  // clang-format off
  // BEGIN cache/cache_limits.h
  if (prompt_tokens > pagedkv::kMaxCacheTokens) return TooLong();
  // END cache/cache_limits.h
  // clang-format on
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, CacheLimits) {
  EXPECT_THAT(CacheLimitsExample(kMaxCacheTokens), IsOk());
  EXPECT_THAT(CacheLimitsExample(kMaxCacheTokens + 1),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(HeaderExamplesTest, CachePosition) {
  // clang-format off
  // BEGIN cache/cache_position.h
  CachePosition::None();
  CachePosition::Scalar(5);
  CachePosition::Vector({3, 0, 3});           // duplicates: last wins
  CachePosition::Matrix(2, 2, {0, 2, 1, 3});  // row-major (rows, cols)
  // END cache/cache_position.h
  // clang-format on
  EXPECT_EQ(CachePosition::Matrix(2, 2, {0, 2, 1, 3}).ToString(),
            "[[0, 2], [1, 3]]");
}

// Returns what the example printed.
std::string CacheStatsExample() {
  DynamicKVCache cache;
  const Tensor token = *Zeros(DType::kFloat32, Shape({1, 1, 1, 4}));
  EXPECT_THAT(cache.Update(token.view(), token.view(), 0), IsOk());
  EXPECT_THAT(cache.BatchRepeatInterleave(2), IsOk());  // Rows share a block.
  ::testing::internal::CaptureStdout();
  // clang-format off
  // BEGIN cache/cache_stats.h
  CacheStats s = cache.stats();
  absl::PrintF("%d blocks, %d shared, %d CoW copies (%d bytes)\n",
               s.blocks_in_use, s.blocks_shared, s.cow_copies, s.cow_bytes);
  // END cache/cache_stats.h
  // clang-format on
  std::cout.flush();
  return ::testing::internal::GetCapturedStdout();
}

TEST(HeaderExamplesTest, CacheStats) {
  EXPECT_EQ(CacheStatsExample(),
            "1 blocks, 1 shared, 0 CoW copies (0 bytes)\n");
}

TEST(HeaderExamplesTest, DynamicKVCache) {
  // clang-format off
  // BEGIN cache/dynamic_kv_cache.h
  DynamicKVCache cache;
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat32, Shape({2, 8, 1, 64}), /*base=*/1);
  absl::StatusOr<Tensor> value =
      FillPattern(DType::kFloat32, Shape({2, 8, 1, 64}), /*base=*/2);
  absl::StatusOr<KVView> kv = cache.Update(key->view(), value->view(), 0);
  kv->shape();                          // (2, 8, 1, 64)
  *cache.GetSeqLength(0);               // 1

  absl::StatusOr<std::unique_ptr<DynamicKVCache>> small =
      DynamicKVCache::Create({.block_tokens = 32,
                              .max_private_pool_bytes = int64_t{1} << 30});
  // END cache/dynamic_kv_cache.h
  // clang-format on
  // clang-format off
  // BEGIN cache/dynamic_kv_cache.h
  std::vector<int32_t> windows(48, 1024);           // Gemma-3 style:
  for (int l = 5; l < 48; l += 6) windows[l] = 0;   // 5 window : 1 full.
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> gemma =
      DynamicKVCache::Create({.sliding_window = windows});
  // 6 groups of 8 layers: 5 of window 1024, 1 full.
  // END cache/dynamic_kv_cache.h
  // clang-format on
  ASSERT_THAT(gemma.status(), IsOk());
  const Tensor token = *FillPattern(DType::kFloat32, Shape({1, 1, 1, 2}), 1);
  ASSERT_THAT((*gemma)->Update(token.view(), token.view(), 47), IsOk());
  // A block holds one group's 8 layers.
  EXPECT_EQ((*gemma)->pool()->layout().num_layers, 8);
  ASSERT_THAT(kv, IsOk());
  EXPECT_EQ(kv->shape(), Shape({2, 8, 1, 64}));
  EXPECT_EQ(*cache.GetSeqLength(0), 1);
  ASSERT_THAT(small, IsOk());
  EXPECT_EQ((*small)->pool(), nullptr);  // Made at the first update.
}

TEST(HeaderExamplesTest, EncoderDecoderCache) {
  const Tensor key = *Zeros(DType::kFloat32, Shape({1, 2, 3, 4}));
  const ConstTensorView k = key.view();
  const ConstTensorView v = key.view();
  // clang-format off
  // BEGIN cache/encoder_decoder_cache.h
  EncoderDecoderCache cache;  // Two standalone dynamic caches.
  absl::StatusOr<KVView> kv =
      cache.Update(k, v, 0, CachePosition::None(), Attention::kCross);
  cache.is_updated(0);        // true

  EncoderDecoderCache whisper(
      *StaticKVCache::Create({.max_cache_len = 448, .num_layers = 4}),
      std::make_unique<DynamicKVCache>());
  // END cache/encoder_decoder_cache.h
  // clang-format on
  ASSERT_THAT(kv, IsOk());
  EXPECT_TRUE(cache.is_updated(0));
  EXPECT_EQ(*cache.GetSeqLength(0, Attention::kCross), 3);
  EXPECT_EQ(whisper.GetMaxCacheShape(), 448);
}

absl::Status KVViewExample() {
  DynamicKVCache cache;
  const Tensor key = *FillPattern(DType::kFloat32, Shape({1, 2, 20, 4}), 0);
  const Tensor value = *FillPattern(DType::kFloat32, Shape({1, 2, 20, 4}), 0,
                                    PatternSign::kNegative);
  // clang-format off
  // BEGIN cache/kv_view.h
  absl::StatusOr<KVView> kv =
      cache.Update(key.view(), value.view(), /*layer_idx=*/0);
  if (!kv.ok()) return kv.status();
  absl::StatusOr<KVTensors> dense = kv->Gather();   // (B, H, len, D) each
  ConstTensorView slab = kv->Slab(KV::kKey, /*row=*/0, /*head=*/0,
                                  /*block_index=*/0);  // (16, D)
  // END cache/kv_view.h
  // clang-format on
  if (!dense.ok()) return dense.status();
  EXPECT_EQ(dense->key.shape(), Shape({1, 2, 20, 4}));
  EXPECT_EQ(ToFloatVector(dense->value.view()), ToFloatVector(value.view()));
  EXPECT_EQ(slab.shape(), Shape({16, 4}));
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, slab.ElementPtr({15, 3})), 1503.0f);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, KVView) { EXPECT_THAT(KVViewExample(), IsOk()); }

absl::Status PagedAttentionExample() {
  DynamicKVCache cache;
  const Tensor key = *Zeros(DType::kFloat32, Shape({1, 2, 5, 8}));
  const Tensor value = *Full(DType::kFloat32, Shape({1, 2, 5, 8}), 0.5);
  const Tensor query = *Full(DType::kFloat32, Shape({1, 4, 8}), 1.0);
  Tensor out = *Zeros(DType::kFloat32, Shape({1, 4, 8}));
  // clang-format off
  // BEGIN cache/paged_attention.h
  absl::StatusOr<KVView> kv = cache.Update(key.view(), value.view(), 0);
  if (!kv.ok()) return kv.status();
  const float scale = 1.0f / std::sqrt(static_cast<float>(kv->head_dim()));
  absl::Status status =
      PagedDecodeAttention(query.view(), *kv, scale, out.view());
  // END cache/paged_attention.h
  // clang-format on
  PKV_RETURN_IF_ERROR(status);
  // Every value is 0.5, so is every weighted average of them.
  EXPECT_EQ(ToFloatVector(out.view()), std::vector<float>(4 * 8, 0.5f));
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, PagedAttention) {
  EXPECT_THAT(PagedAttentionExample(), IsOk());
}

absl::Status StaticKVCacheExample() {
  const Tensor token = *Zeros(DType::kFloat32, Shape({1, 2, 1, 4}));
  const ConstTensorView key = token.view();
  const ConstTensorView value = token.view();
  // clang-format off
  // BEGIN cache/static_kv_cache.h
  absl::StatusOr<std::unique_ptr<StaticKVCache>> cache =
      StaticKVCache::Create({.max_cache_len = 1024, .num_layers = 32});
  if (!cache.ok()) return cache.status();
  absl::StatusOr<KVView> kv =
      (*cache)->Update(key, value, 0, CachePosition::Scalar(7));
  // END cache/static_kv_cache.h
  // clang-format on
  if (!kv.ok()) return kv.status();
  EXPECT_EQ(kv->length(), 8);  // A high-water mark: position 7 + 1.
  EXPECT_EQ((*cache)->GetMaxCacheShape(), 1024);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, StaticKVCache) {
  EXPECT_THAT(StaticKVCacheExample(), IsOk());
}

// ------------------------------------------------------------ cache/storage

// A small layout for the pool examples: 4096 bytes per block.
KVLayout SmallLayout() {
  return {.num_layers = 4,
          .num_kv_heads = 2,
          .head_dim = 4,
          .dtype = DType::kFloat32,
          .block_tokens = 16};
}

absl::Status GrowableKVPoolExample() {
  const KVLayout layout = SmallLayout();
  // clang-format off
  // BEGIN cache/storage/growable_kv_pool.h
  absl::StatusOr<std::unique_ptr<GrowableKVPool>> pool =
      GrowableKVPool::Create({.layout = layout, .num_blocks = 16});
  if (!pool.ok()) return pool.status();
  absl::StatusOr<int32_t> grown = (*pool)->Grow(16);  // 32 blocks now.
  absl::Status wider = (*pool)->Relayout(8);  // 8 layers per block.
  absl::Status undone = (*pool)->ShrinkTo(16);  // Back to 16 blocks.
  // END cache/storage/growable_kv_pool.h
  // clang-format on
  EXPECT_THAT(grown, IsOk());
  EXPECT_EQ(*grown, 16);
  EXPECT_THAT(wider, IsOk());
  EXPECT_EQ((*pool)->layout().num_layers, 8);
  EXPECT_THAT(undone, IsOk());
  EXPECT_EQ((*pool)->num_blocks(), 16);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, GrowableKVPool) {
  EXPECT_THAT(GrowableKVPoolExample(), IsOk());
}

absl::Status KVLayoutExample() {
  // clang-format off
  // BEGIN cache/storage/kv_layout.h
  KVLayout layout{.num_layers = 32, .num_kv_heads = 8, .head_dim = 128,
                  .dtype = DType::kFloat16, .block_tokens = 16};
  PKV_RETURN_IF_ERROR(layout.Validate());
  size_t bytes = layout.block_bytes();   // 32*2*8*16*128*2 = 2 MiB
  // END cache/storage/kv_layout.h
  // clang-format on
  EXPECT_EQ(bytes, size_t{2} << 20);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, KVLayout) { EXPECT_THAT(KVLayoutExample(), IsOk()); }

absl::Status KVPoolExample() {
  const KVLayout layout = SmallLayout();
  // clang-format off
  // BEGIN cache/storage/kv_pool.h
  absl::StatusOr<std::unique_ptr<KVPool>> pool = KVPool::Create(
      {.layout = layout, .num_blocks = 4096,
       .concurrency = PoolConcurrency::kShared});
  if (!pool.ok()) return pool.status();
  DynamicKVCache a(pool->get()), b(pool->get());   // one budget
  // END cache/storage/kv_pool.h
  // clang-format on
  const Tensor token = *Zeros(DType::kFloat32, Shape({1, 2, 1, 4}));
  PKV_RETURN_IF_ERROR(a.Update(token.view(), token.view(), 0).status());
  PKV_RETURN_IF_ERROR(b.Update(token.view(), token.view(), 0).status());
  EXPECT_EQ(a.pool(), pool->get());
  EXPECT_EQ(b.pool(), pool->get());
  EXPECT_EQ((*pool)->books().num_used_blocks(), 2);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, KVPool) { EXPECT_THAT(KVPoolExample(), IsOk()); }

float LoadFromBlock(const KVPool& pool, BlockId block, KV kv, int32_t head,
                    int32_t slot, int32_t dim) {
  const std::byte* element =
      pool.BlockData(block) +
      (pool.layout().ElementOffset(/*layer=*/0, kv, head, slot) + dim) *
          SizeOf(pool.layout().dtype);
  return LoadAsFloat(pool.layout().dtype, element);
}

TEST(HeaderExamplesTest, TokenIo) {
  std::unique_ptr<KVPool> owned =
      *KVPool::Create({.layout = SmallLayout(), .num_blocks = 1});
  KVPool& pool = *owned;
  const BlockId block = *pool.books().TryAllocate();
  std::memset(pool.BlockData(block), 0xff, pool.block_bytes());
  const int64_t head_dim = pool.layout().head_dim;
  // One token of each of the 2 heads: (heads, 1, head_dim).
  const std::vector<float> keys(2 * head_dim, 1.0f);
  const std::vector<float> values(2 * head_dim, 2.0f);
  const auto* key_row = reinterpret_cast<const std::byte*>(keys.data());
  const auto* value_row = reinterpret_cast<const std::byte*>(values.data());
  // clang-format off
  // BEGIN cache/storage/token_io.h
  // Row b's new token (heads, 1, head_dim) into slot 5 of `block`:
  TokenSource k{.data = key_row, .head_stride = head_dim,
                .token_stride = head_dim, .dim_stride = 1};
  TokenSource v = k;
  v.data = value_row;
  WriteTokenRun(pool, block, /*layer=*/0, /*slot=*/5, /*num_tokens=*/1, k,
                v);
  ZeroTokenRun(pool, block, /*layer=*/0, /*slot=*/6, /*num_slots=*/10);
  // END cache/storage/token_io.h
  // clang-format on
  for (int32_t head = 0; head < 2; ++head) {
    EXPECT_EQ(LoadFromBlock(pool, block, KV::kKey, head, 5, 3), 1.0f);
    EXPECT_EQ(LoadFromBlock(pool, block, KV::kValue, head, 5, 0), 2.0f);
    EXPECT_EQ(LoadFromBlock(pool, block, KV::kKey, head, 6, 0), 0.0f);
    EXPECT_EQ(LoadFromBlock(pool, block, KV::kValue, head, 15, 3), 0.0f);
  }
  pool.books().Release(block);
}

// ------------------------------------------------------------------- tensor

TEST(HeaderExamplesTest, DType) {
  // clang-format off
  // BEGIN tensor/dtype.h
  std::optional<DType> dtype = ParseDType("fp16");  // DType::kFloat16
  uint16_t bits = FloatToHalf(10701.0f);             // rounds to 10704
  float widened = HalfToFloat(bits);                 // 10704.0f
  std::byte element[4];
  StoreFromFloat(DType::kBFloat16, 1.5f, element);   // writes 2 bytes
  float back = LoadAsFloat(DType::kBFloat16, element);  // 1.5f
  // END tensor/dtype.h
  // clang-format on
  EXPECT_EQ(dtype, DType::kFloat16);
  EXPECT_EQ(HalfToFloat(bits), 10704.0f);
  EXPECT_EQ(widened, 10704.0f);
  EXPECT_EQ(back, 1.5f);
}

TEST(HeaderExamplesTest, Factories) {
  // clang-format off
  // BEGIN tensor/factories.h
  absl::StatusOr<Tensor> key =
      FillPattern(DType::kFloat16, Shape({1, 2, 2, 3}), /*base=*/7);
  // C order: 700 701 702 800 801 802 10704 10704 10704 10800 10800 10800
  absl::StatusOr<Tensor> value = FillPattern(
      DType::kFloat16, Shape({1, 2, 2, 3}), 7, PatternSign::kNegative);
  // END tensor/factories.h
  // clang-format on
  ASSERT_THAT(key, IsOk());
  EXPECT_THAT(ToFloatVector(key->view()),
              ElementsAre(700, 701, 702, 800, 801, 802, 10704, 10704, 10704,
                          10800, 10800, 10800));
  ASSERT_THAT(value, IsOk());
  EXPECT_THAT(ToFloatVector(value->view()),
              ElementsAre(-700, -701, -702, -800, -801, -802, -10704, -10704,
                          -10704, -10800, -10800, -10800));
}

absl::Status MemoryResourceExample() {
  // clang-format off
  // BEGIN tensor/memory_resource.h
  MemoryResource* resource = NewDeleteResource();
  void* p = resource->Allocate(/*bytes=*/4096, /*alignment=*/64);
  if (p == nullptr) return absl::ResourceExhaustedError("...");
  resource->Deallocate(p, 4096, 64);
  // END tensor/memory_resource.h
  // clang-format on
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, MemoryResource) {
  EXPECT_THAT(MemoryResourceExample(), IsOk());
}

TEST(HeaderExamplesTest, MimallocResource) {
  // clang-format off
  // BEGIN tensor/mimalloc_resource.h
  absl::StatusOr<Tensor> keys = Tensor::Create(
      DType::kFloat16, Shape({2, 8, 1024, 64}), MimallocResource());
  MemoryResource* resource = DefaultMemoryResource();  // Same resource.
  // END tensor/mimalloc_resource.h
  // clang-format on
  ASSERT_THAT(keys, IsOk());
  EXPECT_EQ(keys->resource(), MimallocResource());
  EXPECT_EQ(resource, MimallocResource());
}

absl::Status ShapeExample(const std::vector<int64_t>& dims_from_user) {
  // clang-format off
  // BEGIN tensor/shape.h
  Shape kv({2, 8, 16, 64});                  // batch, heads, tokens, dim
  kv.num_elements();                          // 16384
  kv.ContiguousStrides();                     // {8192, 1024, 64, 1}
  kv.ToString();                              // "(2, 8, 16, 64)"
  absl::StatusOr<Shape> s = Shape::Create(dims_from_user);
  if (!s.ok()) return s.status();
  // END tensor/shape.h
  // clang-format on
  EXPECT_EQ(kv.num_elements(), 16384);
  EXPECT_EQ(kv.ContiguousStrides(), Strides({8192, 1024, 64, 1}));
  EXPECT_EQ(kv.ToString(), "(2, 8, 16, 64)");
  EXPECT_EQ(s->rank(), static_cast<int>(dims_from_user.size()));
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, Shape) {
  EXPECT_THAT(ShapeExample({4, 5}), IsOk());
  EXPECT_THAT(ShapeExample({4, -1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

absl::Status TensorExample() {
  // clang-format off
  // BEGIN tensor/tensor.h
  absl::StatusOr<Tensor> t = Tensor::Create(DType::kFloat32, Shape({2, 3}));
  if (!t.ok()) return t.status();
  t->data_as<float>()[4] = 7.0f;                      // element (1, 1)
  // The transpose, as a (3, 2) view of the same bytes:
  ConstTensorView transposed(t->data(), DType::kFloat32, Shape({3, 2}),
                             Strides{1, 3});
  float x = LoadAsFloat(DType::kFloat32, transposed.ElementPtr({1, 1}));
  std::vector<float> values = ToFloatVector(transposed);  // C order
  // END tensor/tensor.h
  // clang-format on
  EXPECT_EQ(x, 7.0f);
  EXPECT_EQ(values.size(), 6u);
  EXPECT_EQ(values[1 * 2 + 1], 7.0f);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, Tensor) { EXPECT_THAT(TensorExample(), IsOk()); }

absl::Status TensorCopyExample() {
  // One block of a (heads 2, block_tokens 4, head_dim 3) arena, gathered
  // into tokens 4..7 of a 10-token output.
  const Tensor arena = *FillPattern(DType::kFloat32, Shape({2, 4, 3}), 0);
  const ConstTensorView block = arena.view();
  Tensor out = *Zeros(DType::kFloat32, Shape({2, 10, 3}));
  const int64_t first_token = 4;
  // clang-format off
  // BEGIN tensor/tensor_copy.h
  // block: a (heads, block_tokens, head_dim) view into the paged arena.
  // out:   a contiguous (heads, seq, head_dim) Tensor.
  TensorView out_view = out.view();
  TensorView window(out_view.ElementPtr({0, first_token, 0}), out.dtype(),
                    block.shape(), out_view.strides());
  PKV_RETURN_IF_ERROR(Copy(block, window));
  // END tensor/tensor_copy.h
  // clang-format on
  const ConstTensorView result = out.view();
  // Pattern value of (head 1, token 1, dim 2), now at token 4 + 1.
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, result.ElementPtr({1, 5, 2})),
            10102.0f);
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, result.ElementPtr({0, 3, 0})), 0.0f);
  EXPECT_EQ(LoadAsFloat(DType::kFloat32, result.ElementPtr({1, 8, 0})), 0.0f);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, TensorCopy) {
  EXPECT_THAT(TensorCopyExample(), IsOk());
}

absl::Status KVCacheManagerExample() {
  const KVLayout layout{.num_layers = 2,
                        .num_kv_heads = 1,
                        .head_dim = 4,
                        .dtype = DType::kFloat32,
                        .block_tokens = 16};
  // clang-format off
  // BEGIN cache/serving/kv_cache_manager.h
  absl::StatusOr<std::unique_ptr<KVCacheManager>> made =
      KVCacheManager::Create({.layout = layout, .num_blocks = 4096});
  if (!made.ok()) return made.status();
  KVCacheManager& m = **made;
  StepOutput out;
  if (m.CanAdmit(1024, 256) == Admission::kAdmit) {
    PKV_RETURN_IF_ERROR(m.AddSequence(/*seq=*/7, 1024, 256, &out));
  }
  // ... prefill writes K/V into out.slot_mapping ...
  const SlotRequest step[] = {{.seq = 7, .num_tokens = 1}};
  PKV_RETURN_IF_ERROR(m.AppendSlots(step, &out));   // decode
  PKV_RETURN_IF_ERROR(m.Free(7));
  // END cache/serving/kv_cache_manager.h
  // clang-format on
  EXPECT_EQ(out.slot_mapping.size(), 1u);
  EXPECT_FALSE(m.contains(7));
  EXPECT_EQ(m.stats().used_blocks, 0);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, KVCacheManager) {
  EXPECT_THAT(KVCacheManagerExample(), IsOk());
}

absl::Status StepOutputExample() {
  const KVLayout layout{.num_layers = 1,
                        .num_kv_heads = 1,
                        .head_dim = 4,
                        .dtype = DType::kFloat32,
                        .block_tokens = 16};
  std::unique_ptr<KVCacheManager> owned = *KVCacheManager::Create(
      {.layout = layout, .num_blocks = 8, .storage = StorageMode::kBooksOnly});
  KVCacheManager& manager = *owned;
  StepOutput first;
  PKV_RETURN_IF_ERROR(manager.AddSequence(0, 3, 8, &first));
  PKV_RETURN_IF_ERROR(manager.Fork(0, 1));
  const std::vector<SlotRequest> requests = {{.seq = 0, .num_tokens = 1},
                                             {.seq = 1, .num_tokens = 1}};
  std::vector<CopyOp> ran;
  auto RunOnDevice = [&](BlockId src, BlockId dst) {
    ran.push_back(CopyOp{src, dst});
  };
  // clang-format off
  // BEGIN cache/serving/step_output.h
  StepOutput out;
  PKV_RETURN_IF_ERROR(manager.AppendSlots(requests, &out));
  for (const CopyOp& op : out.copies.ops()) RunOnDevice(op.src, op.dst);
  out.copies.MarkDone();  // Books-only; host mode: already empty.
  int64_t slot = out.slot_mapping[out.request_offsets[0]];
  BlockId block = StepOutput::BlockOf(slot, manager.block_tokens());
  // END cache/serving/step_output.h
  // clang-format on
  // The parent wrote first into the shared block: it got the one copy.
  EXPECT_EQ(ran.size(), 1u);
  EXPECT_EQ(block, ran[0].dst);
  EXPECT_EQ(StepOutput::OffsetOf(slot, manager.block_tokens()), 3);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, StepOutput) {
  EXPECT_THAT(StepOutputExample(), IsOk());
}

void FreeListExample() {
  // clang-format off
  // BEGIN allocator/free_list.h
  FreeList list(/*capacity=*/4);      // Empty; ids 0..3 may be pushed.
  list.PushBack(BlockId(0));
  list.PushFront(BlockId(2));         // Order: 2, 0.
  list.Remove(BlockId(0));            // O(1), from anywhere in the list.
  BlockId id = list.PopFront();       // block#2; list is empty again.
  // END allocator/free_list.h
  // clang-format on
  EXPECT_EQ(id, BlockId(2));
  EXPECT_TRUE(list.empty());
}

TEST(HeaderExamplesTest, FreeList) { FreeListExample(); }

absl::Status PrivatePoolOptionsExample() {
  // clang-format off
  // BEGIN cache/private_pool_options.h
  PKV_RETURN_IF_ERROR(internal::ValidatePrivatePoolOptions(16, 1 << 30));
  // END cache/private_pool_options.h
  // clang-format on
  EXPECT_THAT(internal::ValidatePrivatePoolOptions(0, 1 << 30),
              StatusIs(absl::StatusCode::kInvalidArgument));
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, PrivatePoolOptions) {
  EXPECT_THAT(PrivatePoolOptionsExample(), IsOk());
}

void BlockHashExample() {
  // clang-format off
  // BEGIN allocator/prefix/block_hash.h
  const BlockHasher& hasher = Xxh3BlockHasher();
  const int32_t tokens[4] = {1, 2, 3, 4};
  BlockExtraKeys keys;
  keys.tenant_salt = 42;  // Tenants with different salts share nothing.
  BlockHash first = hasher.Hash(kRootBlockHash, tokens, keys);
  BlockHash second = hasher.Hash(first, tokens, keys);  // Chained.
  // END allocator/prefix/block_hash.h
  // clang-format on
  EXPECT_NE(first, second);
  EXPECT_NE(first, hasher.Hash(kRootBlockHash, tokens, {}));
}

TEST(HeaderExamplesTest, BlockHash) { BlockHashExample(); }

void PrefixIndexExample() {
  // clang-format off
  // BEGIN allocator/prefix/prefix_index.h
  PrefixIndex index(/*num_blocks=*/8, /*block_tokens=*/2);
  const int32_t tokens[2] = {5, 6};
  BlockHash h = Xxh3BlockHasher().Hash(kRootBlockHash, tokens, {});
  index.TryInsert(/*block=*/3, h, /*parent=*/-1, tokens, {});  // -1: in.
  int32_t hit = index.Find(h, /*parent=*/-1, tokens, {});  // 3
  index.RemoveSubtree(3, /*evicted=*/true, [](int32_t) {});
  // END allocator/prefix/prefix_index.h
  // clang-format on
  EXPECT_EQ(hit, 3);
  EXPECT_FALSE(index.is_published(3));
  EXPECT_EQ(index.Find(h, -1, tokens, {}), -1);
}

TEST(HeaderExamplesTest, PrefixIndex) { PrefixIndexExample(); }

absl::Status PrefixCachingManagerExample() {
  const KVLayout layout{.num_layers = 2,
                        .num_kv_heads = 1,
                        .head_dim = 4,
                        .dtype = DType::kFloat32,
                        .block_tokens = 4};
  // clang-format off
  // BEGIN cache/serving/kv_cache_manager.h
  KVCacheManager::Options options{.layout = layout, .num_blocks = 4096};
  options.prefix_caching.enabled = true;
  std::unique_ptr<KVCacheManager> cm = *KVCacheManager::Create(options);
  const int32_t prompt[] = {101, 7592, 2088, 102};
  PrefixKeys keys{.tenant_salt = 42};            // One salt per tenant.
  StepOutput step;
  PKV_RETURN_IF_ERROR(cm->AddSequence(/*seq=*/1, prompt, 16, &step, keys));
  // ... prefill tokens [step.num_cached_tokens, 4) into step's slots ...
  const int32_t sampled[] = {2023};
  const SlotRequest decode[] = {
      {.seq = 1, .num_tokens = 1, .token_ids = sampled, .commit = 4}};
  PKV_RETURN_IF_ERROR(cm->AppendSlots(decode, &step));  // Commits 4.
  // END cache/serving/kv_cache_manager.h
  // clang-format on
  EXPECT_EQ(cm->stats().prefix.cached_blocks, 1);
  return absl::OkStatus();
}

TEST(HeaderExamplesTest, PrefixCachingManager) {
  EXPECT_THAT(PrefixCachingManagerExample(), IsOk());
}

TEST(HeaderExamplesTest, WindowBlocks) {
  // clang-format off
  // BEGIN allocator/window_blocks.h
  // 100 tokens computed, a window of 32, blocks of 16 tokens: the next
  // token (position 100) reads positions [69, 100], so blocks 0..3 are
  // no longer read.
  int64_t first = WindowFirstNeededBlock(100, 32, 16);  // 4
  int64_t most = WindowBlockBound(32, 16);              // 3
  // END allocator/window_blocks.h
  // clang-format on
  EXPECT_EQ(first, 4);
  EXPECT_EQ(most, 3);
}

TEST(HeaderExamplesTest, SequencePrefix) {
  // clang-format off
  // BEGIN cache/serving/sequence_prefix.h
  SequencePrefix p;
  p.tokens = {1, 2, 3, 4, 5};
  ExtendBlockKeys(Xxh3BlockHasher(), /*block_tokens=*/2, p, /*n=*/2);
  // p.hashes[1] == Xxh3BlockHasher().Hash(p.hashes[0], {3, 4},
  //                                      p.keys[1]).
  // END cache/serving/sequence_prefix.h
  // clang-format on
  ASSERT_EQ(p.hashes.size(), 2u);
  const int32_t second[] = {3, 4};
  EXPECT_EQ(p.hashes[1], Xxh3BlockHasher().Hash(p.hashes[0], second, p.keys[1]));
  // More blocks extend the chain; the ones there are kept.
  p.tokens.push_back(6);
  ExtendBlockKeys(Xxh3BlockHasher(), 2, p, 3);
  const int32_t third[] = {5, 6};
  EXPECT_EQ(p.hashes[2], Xxh3BlockHasher().Hash(p.hashes[1], third, p.keys[2]));
}

TEST(HeaderExamplesTest, TokenBlocks) {
  // clang-format off
  // BEGIN allocator/token_blocks.h
  const TokenBlocks tb(16);
  tb.BlockOf(37);    // 2
  tb.OffsetOf(37);   // 5
  tb.BlocksFor(37);  // 3
  tb.BlocksFor(0);   // 0
  // END allocator/token_blocks.h
  // clang-format on
  EXPECT_EQ(tb.BlockOf(37), 2);
  EXPECT_EQ(tb.OffsetOf(37), 5);
  EXPECT_EQ(tb.BlocksFor(37), 3);
  EXPECT_EQ(tb.BlocksFor(0), 0);
  // A size that is not a power of two divides, with the same answers as
  // the shift for every size and token below 1,000.
  for (int32_t bt = 1; bt <= 40; ++bt) {
    const TokenBlocks t(bt);
    for (int64_t token = 0; token < 1000; ++token) {
      ASSERT_EQ(t.BlockOf(token), token / bt);
      ASSERT_EQ(t.OffsetOf(token), token % bt);
      ASSERT_EQ(t.BlocksFor(token), (token + bt - 1) / bt);
    }
  }
}

}  // namespace
}  // namespace pagedkv
