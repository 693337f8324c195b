// The C++ snippets of README.md, as written there, so they keep compiling
// and doing what the README says.
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/storage/kv_pool.h"
#include "cache/static_kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/factories.h"
#include "tests/testing/status_matchers.h"

namespace {

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;

absl::Status QuickStart() {
  pagedkv::DynamicKVCache cache;  // standalone: makes its own pool

  // key/value shape: (batch, heads, seq_len, head_dim)
  pagedkv::Tensor key =
      *pagedkv::Zeros(pagedkv::DType::kFloat32, {2, 8, 1, 64});
  pagedkv::Tensor value =
      *pagedkv::Zeros(pagedkv::DType::kFloat32, {2, 8, 1, 64});

  // append into layer 0
  absl::StatusOr<pagedkv::KVView> kv =
      cache.Update(key.view(), value.view(), /*layer_idx=*/0);
  if (!kv.ok()) return kv.status();
  EXPECT_EQ(kv->shape(), pagedkv::Shape({2, 8, 1, 64}));

  // next token append
  kv = cache.Update(key.view(), value.view(), 0);
  EXPECT_EQ(*cache.GetSeqLength(0), 2);

  absl::StatusOr<pagedkv::KVTensors> dense = kv->Gather();
  if (!dense.ok()) return dense.status();
  EXPECT_EQ(dense->key.shape(), pagedkv::Shape({2, 8, 2, 64}));

  // Beam search.
  const int64_t num_beams = 4;
  EXPECT_THAT(cache.BatchRepeatInterleave(num_beams), IsOk());
  std::vector<int64_t> beam_idx = {3, 1, 0, 2, 4, 5, 6, 7};
  EXPECT_THAT(cache.ReorderCache(beam_idx), IsOk());

  // Memory control.
  EXPECT_THAT(cache.Crop(1024), IsOk());
  cache.Reset();
  return absl::OkStatus();
}

TEST(ReadmeExamplesTest, QuickStartBeamSearchAndMemoryControlWork) {
  EXPECT_THAT(QuickStart(), IsOk());
}

TEST(ReadmeExamplesTest, SharedPoolAndStaticCacheWorkAsDescribed) {
  auto pool = *pagedkv::KVPool::Create(
      {.layout = {/*num_layers=*/32, /*num_kv_heads=*/8, /*head_dim=*/128,
                  pagedkv::DType::kFloat16, /*block_tokens=*/16},
       .num_blocks = 4096,
       .concurrency = pagedkv::PoolConcurrency::kShared});
  pagedkv::DynamicKVCache a(pool.get()), b(pool.get());
  auto s = *pagedkv::StaticKVCache::Create(
      {.max_cache_len = 1024, .num_layers = 32, .pool = pool.get()});

  pagedkv::Tensor token =
      *pagedkv::Zeros(pagedkv::DType::kFloat16, {1, 8, 1, 128});
  ASSERT_THAT(s->Update(token.view(), token.view(), 0), IsOk());
  // ceil(1024 / 16) = 64 blocks set aside for the one row.
  EXPECT_EQ(pool->books().num_reserved_blocks() + 1, 64);
  ASSERT_THAT(a.Update(token.view(), token.view(), 0), IsOk());
  ASSERT_THAT(b.Update(token.view(), token.view(), 0), IsOk());

  // A full shared pool: RESOURCE_EXHAUSTED, nothing changed.
  pagedkv::Tensor huge =
      *pagedkv::Zeros(pagedkv::DType::kFloat16, {1, 8, 4096 * 16, 128});
  EXPECT_THAT(a.Update(huge.view(), huge.view(), 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(*a.GetSeqLength(1), 0);

  pagedkv::EncoderDecoderCache ed;
  ASSERT_THAT(ed.Update(token.view(), token.view(), 0, pagedkv::CachePosition(),
                        pagedkv::Attention::kCross),
              IsOk());
  EXPECT_TRUE(ed.is_updated(0));

  auto small = *pagedkv::DynamicKVCache::Create(
      {.block_tokens = 32, .max_private_pool_bytes = int64_t{1} << 30});
  ASSERT_THAT(small->Update(token.view(), token.view(), 0), IsOk());
  EXPECT_EQ(small->pool()->layout().block_tokens, 32);
  EXPECT_LE(small->pool()->capacity_bytes(), size_t{1} << 30);

  pagedkv::EncoderDecoderCache whisper(
      *pagedkv::StaticKVCache::Create({.max_cache_len = 448, .num_layers = 4}),
      std::make_unique<pagedkv::DynamicKVCache>());
  EXPECT_EQ(whisper.GetMaxCacheShape(), 448);
}

}  // namespace
