// The C++ snippets of README.md, as written there, so they keep compiling
// and doing what the README says.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/serving/block_table_export.h"
#include "cache/serving/csr_decode_attention.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tensor/factories.h"
#include "tensor/tensor.h"
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

// README "Sliding-window layers", as written there.
TEST(ReadmeExamplesTest, SlidingWindowLayersKeepTheirWindow) {
  auto swa = *pagedkv::DynamicKVCache::Create(
      {.block_tokens = 16, .sliding_window = std::vector<int32_t>(4, 64)});
  pagedkv::Tensor prompt =
      *pagedkv::Zeros(pagedkv::DType::kFloat32, {1, 2, 100, 8});
  for (int64_t l = 0; l < 4; ++l) {
    EXPECT_EQ(swa->Update(prompt.view(), prompt.view(), l)->shape(),
              pagedkv::Shape({1, 2, 100, 8}));
  }
  EXPECT_EQ((*swa->Get(0))->shape(), pagedkv::Shape({1, 2, 63, 8}));
  EXPECT_EQ(*swa->GetSeqLength(0), 100);
  pagedkv::Tensor token =
      *pagedkv::Zeros(pagedkv::DType::kFloat32, {1, 2, 1, 8});
  for (int64_t l = 0; l < 4; ++l) {
    EXPECT_EQ(swa->Update(token.view(), token.view(), l)->shape(),
              pagedkv::Shape({1, 2, 64, 8}));
  }
  EXPECT_EQ(swa->stats().blocks_in_use, 5);
}

// README "Serving": the step loop's helpers. WriteKV writes a token's K/V
// (every layer, a value derived from its slot) at each slot of `out`;
// Attend runs the reference kernel over layer 0 for the batch.
void WriteKV(pagedkv::KVCacheManager& manager, const pagedkv::StepOutput& out) {
  pagedkv::KVPool& pool = *manager.kv_pool();
  const pagedkv::KVLayout& layout = pool.layout();
  std::vector<float> token(layout.num_kv_heads * layout.head_dim);
  for (int64_t slot : out.slot_mapping) {
    for (size_t i = 0; i < token.size(); ++i) {
      token[i] = static_cast<float>(slot % 7) + 0.01f * static_cast<float>(i);
    }
    const pagedkv::TokenSource src{
        .data = reinterpret_cast<const std::byte*>(token.data()),
        .head_stride = layout.head_dim,
        .token_stride = layout.num_kv_heads * layout.head_dim,
        .dim_stride = 1};
    for (int32_t layer = 0; layer < layout.num_layers; ++layer) {
      pagedkv::WriteTokenRun(
          pool, pagedkv::StepOutput::BlockOf(slot, layout.block_tokens), layer,
          pagedkv::StepOutput::OffsetOf(slot, layout.block_tokens), 1, src,
          src);
    }
  }
}

absl::Status Attend(const pagedkv::KVCacheManager& manager,
                    const std::vector<pagedkv::SequenceId>& running,
                    const std::vector<int32_t>& indptr,
                    const std::vector<int32_t>& indices,
                    const std::vector<int32_t>& last) {
  const pagedkv::KVLayout& layout = manager.layout();
  const int64_t batch = static_cast<int64_t>(running.size());
  PKV_ASSIGN_OR_RETURN(
      pagedkv::Tensor query,
      pagedkv::FillPattern(pagedkv::DType::kFloat32,
                           {batch, 2 * layout.num_kv_heads, layout.head_dim},
                           1));
  PKV_ASSIGN_OR_RETURN(
      pagedkv::Tensor out,
      pagedkv::Zeros(pagedkv::DType::kFloat32,
                     {batch, 2 * layout.num_kv_heads, layout.head_dim}));
  PKV_RETURN_IF_ERROR(pagedkv::CsrDecodeAttention(
      query.view(), *manager.kv_pool(), /*layer=*/0, indptr, indices, last,
      1.0f / std::sqrt(static_cast<float>(layout.head_dim)), out.view()));
  // Every value K/V can hold is in [0, 7): so is the attention output.
  for (float v : pagedkv::ToFloatVector(out.view())) {
    if (!(v >= 0 && v < 7.1f)) return absl::InternalError("attention value");
  }
  return absl::OkStatus();
}

// Returns how many sequences ran to the end (the rest were preempted).
absl::StatusOr<size_t> ServingStepLoop(const pagedkv::KVLayout& layout) {
  auto manager = *pagedkv::KVCacheManager::Create(
      {.layout = layout, .num_blocks = 64, .watermark = 0});
  pagedkv::StepOutput out;
  std::vector<pagedkv::SequenceId> running;
  for (pagedkv::SequenceId id : {1, 2, 3}) {  // Admit while it fits.
    if (manager->CanAdmit(/*prompt=*/20, /*max_new=*/8) !=
        pagedkv::Admission::kAdmit) {
      break;
    }
    PKV_RETURN_IF_ERROR(manager->AddSequence(id, 20, 8, &out));
    WriteKV(*manager, out);  // The model's prefill writes K/V at the slots.
    running.push_back(id);
  }
  for (int step = 0; step < 8; ++step) {
    std::vector<pagedkv::SlotRequest> requests;
    for (pagedkv::SequenceId id : running) requests.push_back({id, 1});
    absl::Status s = manager->AppendSlots(requests, &out);
    if (absl::IsResourceExhausted(s)) {  // Nothing changed: preempt, retry.
      PKV_RETURN_IF_ERROR(manager->Preempt(running.back()));
      running.pop_back();
      --step;
      continue;
    }
    PKV_RETURN_IF_ERROR(s);
    WriteKV(*manager, out);  // This step's K/V, then attention reads them:
    std::vector<int32_t> indptr(running.size() + 1), last(running.size());
    std::vector<int32_t> indices(
        manager->books().num_blocks());  // Sized once for the whole pool.
    PKV_RETURN_IF_ERROR(pagedkv::ExportCsrPageTable(
        *manager, running, absl::MakeSpan(indptr), absl::MakeSpan(indices),
        absl::MakeSpan(last)));
    PKV_RETURN_IF_ERROR(Attend(*manager, running, indptr, indices, last));
  }
  for (pagedkv::SequenceId id : running) PKV_RETURN_IF_ERROR(manager->Free(id));
  for (pagedkv::SequenceId id : {1, 2, 3}) {
    if (manager->contains(id)) PKV_RETURN_IF_ERROR(manager->Free(id));
  }
  EXPECT_EQ(manager->stats().used_blocks, 0);
  manager->CheckInvariants();
  return running.size();
}

TEST(ReadmeExamplesTest, ServingStepLoopRuns) {
  absl::StatusOr<size_t> finished =
      ServingStepLoop({.num_layers = 2,
                       .num_kv_heads = 2,
                       .head_dim = 8,
                       .dtype = pagedkv::DType::kFloat32,
                       .block_tokens = 16});
  ASSERT_THAT(finished, IsOk());
  EXPECT_EQ(*finished, 3u);
}

TEST(ReadmeExamplesTest, ServingStepLoopPreemptsWhenThePoolRunsOut) {
  // One-token blocks: three 20-token prompts take 60 of the 64 blocks, the
  // second decode step runs out, and the loop preempts the last sequence.
  absl::StatusOr<size_t> finished =
      ServingStepLoop({.num_layers = 1,
                       .num_kv_heads = 1,
                       .head_dim = 4,
                       .dtype = pagedkv::DType::kFloat32,
                       .block_tokens = 1});
  ASSERT_THAT(finished, IsOk());
  EXPECT_EQ(*finished, 2u);
}
}  // namespace
