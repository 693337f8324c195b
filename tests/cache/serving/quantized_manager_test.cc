// The serving manager in host storage on quantized pools (int8, fp8 e4m3),
// issue #15: the scales live inside the block, so a prefix hit, a fork's
// copy-on-write of its shared tail, a swap out and back in, and a load from
// the remote tier (in memory, shared by two replicas) must hand back every
// token's codes and scales exactly: each token reads back bit-identical to
// what it read right after it was written.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/remote/in_memory_block_store.h"
#include "cache/remote/remote_tier.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/step_output.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "cache/storage/token_io.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"
#include "tensor/quantize.h"
#include "tests/cache/serving/manager_testing.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CheckedManager;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::SlotOf;
using ::pagedkv::testing::TableOf;

constexpr int32_t kBt = 4;

KVLayout Layout(KVStorage storage) {
  return KVLayout{.num_layers = 2,
                  .num_kv_heads = 2,
                  .head_dim = 8,
                  .dtype = DType::kFloat32,
                  .block_tokens = kBt,
                  .storage = storage};
}

// Token `tag`'s K (kv 0) or V (kv 1) element d of `layer` and head h:
// values whose magnitude varies per vector (so every vector has its own
// scale).
float TagValue(uint32_t tag, int32_t layer, int kv, int32_t h, int32_t d) {
  const float amp = 0.5f + static_cast<float>((tag * 7 + layer * 3 + h) % 11);
  return kv == 0 ? amp * std::sin(0.37f * tag + 1.1f * d + h)
                 : -amp * std::cos(0.21f * tag + 0.7f * d + layer);
}

void WriteTag(KVPool& pool, int64_t slot, uint32_t tag) {
  const KVLayout& l = pool.layout();
  std::vector<float> k(l.num_kv_heads * l.head_dim);
  std::vector<float> v(k.size());
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t h = 0; h < l.num_kv_heads; ++h) {
      for (int32_t d = 0; d < l.head_dim; ++d) {
        k[h * l.head_dim + d] = TagValue(tag, layer, 0, h, d);
        v[h * l.head_dim + d] = TagValue(tag, layer, 1, h, d);
      }
    }
    const TokenSource key{.data = reinterpret_cast<const std::byte*>(k.data()),
                          .head_stride = l.head_dim,
                          .token_stride = l.head_dim};
    const TokenSource value{
        .data = reinterpret_cast<const std::byte*>(v.data()),
        .head_stride = l.head_dim,
        .token_stride = l.head_dim};
    WriteTokenRun(pool, StepOutput::BlockOf(slot, kBt), layer,
                  StepOutput::OffsetOf(slot, kBt), 1, key, value);
  }
}

// The dequantized K and V of a slot, every layer and head.
std::vector<float> ReadSlot(const KVPool& pool, int64_t slot) {
  const KVLayout& l = pool.layout();
  const std::byte* block = pool.BlockData(StepOutput::BlockOf(slot, kBt));
  const int32_t offset = StepOutput::OffsetOf(slot, kBt);
  std::vector<float> out;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (KV kv : {KV::kKey, KV::kValue}) {
      for (int32_t h = 0; h < l.num_kv_heads; ++h) {
        float scale;
        std::memcpy(&scale, block + l.ScaleOffset(layer, kv, h, offset),
                    sizeof(scale));
        std::vector<float> vec(l.head_dim);
        DequantizeVector(l.quant_type(),
                         block + l.DataOffset(layer, kv, h, offset), scale,
                         l.head_dim, DType::kFloat32, vec.data());
        out.insert(out.end(), vec.begin(), vec.end());
      }
    }
  }
  return out;
}

// What tag's token reads back as, from a pool of its own: the reference
// the manager's copies, hits, swaps and loads must match bit for bit.
std::vector<float> Quantized(KVStorage storage, uint32_t tag) {
  std::unique_ptr<KVPool> pool =
      *KVPool::Create({.layout = Layout(storage), .num_blocks = 1});
  WriteTag(*pool, /*slot=*/1, tag);
  return ReadSlot(*pool, 1);
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class QuantizedManagerTest : public ::testing::TestWithParam<KVStorage> {
 protected:
  CheckedManager Make(RemoteTier* tier) {
    KVCacheManager::Options o;
    o.layout = Layout(GetParam());
    o.num_blocks = 64;
    o.watermark = 0.0;
    o.num_host_blocks = 16;
    o.prefix_caching.enabled = true;
    o.prefix_caching.remote = tier;
    return CheckedManager(*KVCacheManager::Create(o));
  }
  std::unique_ptr<RemoteTier> Tier() {
    RemoteTier::Options o;
    o.layout = Layout(GetParam());
    return *RemoteTier::Create(o, &store_, &store_);
  }
  // Every token of seq reads back bit-identical to expected_[token].
  void ExpectTokens(CheckedManager& m, SequenceId seq, int64_t n) {
    const std::vector<BlockId> table = TableOf(*m, seq);
    for (int64_t t = 0; t < n; ++t) {
      EXPECT_TRUE(SameBits(ReadSlot(*m->kv_pool(), SlotOf(table, kBt, t)),
                           expected_[t]))
          << "sequence " << seq << " token " << t;
    }
  }

  InMemoryBlockStore store_;
  std::vector<std::vector<float>> expected_;
};

TEST_P(QuantizedManagerTest, HitsCopiesSwapsAndRemoteLoadsKeepTheScales) {
  std::unique_ptr<RemoteTier> ta = Tier();
  CheckedManager a = Make(ta.get());
  std::vector<int32_t> prompt(18);
  std::iota(prompt.begin(), prompt.end(), 100);
  StepOutput out;
  ASSERT_THAT(a->AddSequence(1, prompt, 8, &out), IsOk());
  for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
    WriteTag(*a->kv_pool(), out.slot_mapping[i], prompt[i]);
    expected_.push_back(Quantized(GetParam(), prompt[i]));
  }
  ExpectTokens(a, 1, 18);  // Written in place, read back as quantized alone.
  // The quantization is lossy but close: every element within 7% of its
  // vector's largest magnitude (int8: 1/254; fp8 e4m3: 3 mantissa bits),
  // and not a copy of the floats.
  const KVLayout l = Layout(GetParam());
  bool any_rounded = false;
  for (int32_t t = 0; t < 18; ++t) {
    size_t at = 0;
    for (int32_t layer = 0; layer < l.num_layers; ++layer) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int32_t h = 0; h < l.num_kv_heads; ++h) {
          float max_abs = 0;
          for (int32_t d = 0; d < l.head_dim; ++d) {
            max_abs = std::max(max_abs,
                               std::abs(TagValue(prompt[t], layer, kv, h, d)));
          }
          for (int32_t d = 0; d < l.head_dim; ++d, ++at) {
            const float want = TagValue(prompt[t], layer, kv, h, d);
            EXPECT_NEAR(expected_[t][at], want, 0.07f * max_abs)
                << "token " << t << " layer " << layer << " kv " << kv
                << " head " << h << " d " << d;
            any_rounded = any_rounded || expected_[t][at] != want;
          }
        }
      }
    }
  }
  EXPECT_TRUE(any_rounded);
  const TokenCommit commit{.seq = 1, .num_tokens = 18};
  ASSERT_THAT(a->CommitTokens(absl::MakeConstSpan(&commit, 1)), IsOk());

  // A local hit: 16 tokens from the cache, the last 2 written again.
  ASSERT_THAT(a->AddSequence(2, prompt, 8, &out), IsOk());
  ASSERT_EQ(out.num_cached_tokens, 16);
  for (size_t i = 0; i < out.slot_mapping.size(); ++i) {
    WriteTag(*a->kv_pool(), out.slot_mapping[i], prompt[16 + i]);
  }
  ExpectTokens(a, 2, 18);

  // A fork's shared tail (tokens 16, 17) is copied, scales included, at
  // the child's first write.
  ASSERT_THAT(a->Fork(2, 3), IsOk());
  const SlotRequest step{.seq = 3, .num_tokens = 1};
  ASSERT_THAT(a->AppendSlots(absl::MakeConstSpan(&step, 1), &out), IsOk());
  EXPECT_EQ(a->stats().cow_copies, 1);
  WriteTag(*a->kv_pool(), out.slot_mapping[0], 999);
  ExpectTokens(a, 3, 18);
  ExpectTokens(a, 2, 18);

  // Out to the host tier and back (host mode copies and completes at once).
  ASSERT_THAT(a->SwapOut(2).status(), IsOk());
  ASSERT_THAT(a->SwapIn(2).status(), IsOk());
  EXPECT_EQ(*a->state(2), SequenceState::kRunning);
  ExpectTokens(a, 2, 18);

  // Another replica loads the first 4 blocks from the shared store.
  ta->Flush();
  std::unique_ptr<RemoteTier> tb = Tier();
  CheckedManager b = Make(tb.get());
  ASSERT_THAT(b->AddSequence(1, prompt, 8, &out), IsOk());
  ASSERT_EQ(out.num_cached_tokens, 16);
  EXPECT_EQ(tb->stats().loaded_blocks, 4);
  ExpectTokens(b, 1, 16);
}

INSTANTIATE_TEST_SUITE_P(Storages, QuantizedManagerTest,
                         ::testing::Values(KVStorage::kInt8,
                                           KVStorage::kFp8E4M3),
                         [](const auto& info) {
                           return info.param == KVStorage::kInt8
                                      ? std::string("Int8")
                                      : std::string("Fp8");
                         });

}  // namespace
}  // namespace pagedkv
