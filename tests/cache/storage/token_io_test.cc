#include "cache/storage/token_io.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "allocator/block_id.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "gtest/gtest.h"
#include "tensor/dtype.h"

namespace pagedkv {
namespace {

constexpr int32_t kLayers = 3;
constexpr int32_t kHeads = 2;
constexpr int32_t kHeadDim = 4;
constexpr int32_t kBlockTokens = 5;
constexpr std::byte kSentinel{0xA5};

KVLayout LayoutOf(DType dtype) {
  return KVLayout{.num_layers = kLayers,
                  .num_kv_heads = kHeads,
                  .head_dim = kHeadDim,
                  .dtype = dtype,
                  .block_tokens = kBlockTokens};
}

std::unique_ptr<KVPool> MakePool(DType dtype, int32_t num_blocks = 2) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool =
      KVPool::Create({.layout = LayoutOf(dtype), .num_blocks = num_blocks});
  return std::move(*pool);
}

using BlockImage = std::vector<std::byte>;

void FillWithSentinel(KVPool& pool) {
  for (int32_t b = 0; b < pool.num_blocks(); ++b) {
    std::memset(pool.BlockData(BlockId(b)), static_cast<int>(kSentinel),
                pool.block_bytes());
  }
}

BlockImage ImageOf(const KVPool& pool, BlockId id) {
  const std::byte* data = pool.BlockData(id);
  return BlockImage(data, data + pool.block_bytes());
}

// Returns the number of bytes where block `id` differs from `expected`, and
// adds the first element index that differs to the failure message.
::testing::AssertionResult BlockEquals(const KVPool& pool, BlockId id,
                                       const BlockImage& expected) {
  const BlockImage actual = ImageOf(pool, id);
  const size_t elem = SizeOf(pool.layout().dtype);
  int64_t differing = 0;
  int64_t first = -1;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] != expected[i]) {
      if (first < 0) first = static_cast<int64_t>(i / elem);
      ++differing;
    }
  }
  if (differing == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << differing << " bytes of block " << id.value()
         << " differ; first at element " << first;
}

// The value of element (kv, head, token, dim) of the test's inputs.
float SourceValue(KV kv, int64_t h, int64_t t, int64_t d) {
  const float v = 100.0f + static_cast<float>(h * 40 + t * 5 + d);
  return kv == KV::kKey ? v : -v;
}

// One source: an element buffer and the TokenSource strides into it.
struct Source {
  std::vector<std::byte> bytes;
  TokenSource view;
};

// Builds a source for `num_tokens` tokens with the given strides (in
// elements), filled with SourceValue(kv, ...). Unused gaps hold 0x5A bytes.
Source MakeSource(DType dtype, KV kv, int32_t num_tokens, int64_t head_stride,
                  int64_t token_stride, int64_t dim_stride) {
  const size_t elem = SizeOf(dtype);
  const int64_t last = (kHeads - 1) * head_stride +
                       (num_tokens - 1) * token_stride +
                       (kHeadDim - 1) * dim_stride;
  Source s;
  s.bytes.assign(static_cast<size_t>(last + 1) * elem, std::byte{0x5A});
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t d = 0; d < kHeadDim; ++d) {
        const int64_t at = h * head_stride + t * token_stride + d * dim_stride;
        StoreFromFloat(dtype, SourceValue(kv, h, t, d),
                       s.bytes.data() + static_cast<size_t>(at) * elem);
      }
    }
  }
  s.view = TokenSource{.data = s.bytes.data(),
                       .head_stride = head_stride,
                       .token_stride = token_stride,
                       .dim_stride = dim_stride};
  return s;
}

// What WriteTokenRun must do to `image`: element (h, t, d) of each source
// goes to ElementOffset(layer, kv, h, slot + t) + d. Nothing else changes.
void ApplyWrite(const KVLayout& layout, int32_t layer, int32_t slot,
                int32_t num_tokens, const Source& key, const Source& value,
                BlockImage& image) {
  const size_t elem = SizeOf(layout.dtype);
  for (KV kv : {KV::kKey, KV::kValue}) {
    const TokenSource& src = kv == KV::kKey ? key.view : value.view;
    for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
      for (int32_t t = 0; t < num_tokens; ++t) {
        for (int32_t d = 0; d < layout.head_dim; ++d) {
          const int64_t from =
              h * src.head_stride + t * src.token_stride + d * src.dim_stride;
          const int64_t to = layout.ElementOffset(layer, kv, h, slot + t) + d;
          std::memcpy(image.data() + static_cast<size_t>(to) * elem,
                      src.data + static_cast<size_t>(from) * elem, elem);
        }
      }
    }
  }
}

class TokenIoTest : public ::testing::TestWithParam<DType> {
 protected:
  DType dtype() const { return GetParam(); }

  // Writes with WriteTokenRun into block 1 and checks both blocks against
  // the spec applied to their images.
  void ExpectWriteLands(int32_t layer, int32_t slot, int32_t num_tokens,
                        const Source& key, const Source& value) {
    std::unique_ptr<KVPool> pool = MakePool(dtype());
    FillWithSentinel(*pool);
    const BlockImage untouched = ImageOf(*pool, BlockId(0));
    BlockImage expected = ImageOf(*pool, BlockId(1));
    ApplyWrite(pool->layout(), layer, slot, num_tokens, key, value, expected);

    WriteTokenRun(*pool, BlockId(1), layer, slot, num_tokens, key.view,
                  value.view);
    EXPECT_TRUE(BlockEquals(*pool, BlockId(1), expected));
    EXPECT_TRUE(BlockEquals(*pool, BlockId(0), untouched));
  }
};

TEST_P(TokenIoTest, WriteFromContiguousSourcesLandsAtElementOffsets) {
  // (heads, tokens, head_dim) contiguous: the memcpy-per-head path.
  const int32_t n = 3;
  const Source key =
      MakeSource(dtype(), KV::kKey, n, n * kHeadDim, kHeadDim, 1);
  const Source value =
      MakeSource(dtype(), KV::kValue, n, n * kHeadDim, kHeadDim, 1);
  ExpectWriteLands(/*layer=*/1, /*slot=*/2, n, key, value);
}

TEST_P(TokenIoTest, WriteOfAWholeBlockFillsEverySlotOfTheLayer) {
  const int32_t n = kBlockTokens;
  const Source key =
      MakeSource(dtype(), KV::kKey, n, n * kHeadDim, kHeadDim, 1);
  const Source value =
      MakeSource(dtype(), KV::kValue, n, n * kHeadDim, kHeadDim, 1);
  ExpectWriteLands(/*layer=*/0, /*slot=*/0, n, key, value);
  ExpectWriteLands(/*layer=*/kLayers - 1, /*slot=*/0, n, key, value);
}

TEST_P(TokenIoTest, WriteOfOneTokenIntoTheLastSlot) {
  // One token: the token stride is irrelevant (here deliberately odd).
  const Source key = MakeSource(dtype(), KV::kKey, 1, kHeadDim, 999, 1);
  const Source value = MakeSource(dtype(), KV::kValue, 1, kHeadDim, 0, 1);
  ExpectWriteLands(/*layer=*/2, /*slot=*/kBlockTokens - 1, 1, key, value);
}

TEST_P(TokenIoTest, WriteFromSourcesWithNonUnitDimStride) {
  // (tokens, head_dim, heads) with padded tokens: element (h, t, d) at
  // t * (D*H + 3) + d * H + h, so dim_stride = H and head_stride = 1.
  const int32_t n = 4;
  const int64_t token_stride = kHeadDim * kHeads + 3;
  const Source key =
      MakeSource(dtype(), KV::kKey, n, /*head_stride=*/1, token_stride, kHeads);
  const Source value =
      MakeSource(dtype(), KV::kValue, n, 1, token_stride, kHeads);
  ExpectWriteLands(/*layer=*/1, /*slot=*/1, n, key, value);
}

TEST_P(TokenIoTest, WriteFromPaddedTokenRows) {
  // dim_stride 1 but token_stride != head_dim: rows of a wider buffer.
  const int32_t n = 2;
  const int64_t token_stride = kHeadDim + 3;
  const Source key =
      MakeSource(dtype(), KV::kKey, n, n * token_stride + 1, token_stride, 1);
  const Source value =
      MakeSource(dtype(), KV::kValue, n, n * token_stride, token_stride, 1);
  ExpectWriteLands(/*layer=*/0, /*slot=*/3, n, key, value);
}

TEST_P(TokenIoTest, KeyAndValueMayHaveDifferentStrides) {
  const int32_t n = 3;
  const Source key =
      MakeSource(dtype(), KV::kKey, n, n * kHeadDim, kHeadDim, 1);
  // Values transposed within a head: (head_dim, tokens) per head.
  const Source value =
      MakeSource(dtype(), KV::kValue, n, n * kHeadDim, /*token_stride=*/1,
                 /*dim_stride=*/n);
  ExpectWriteLands(/*layer=*/2, /*slot=*/0, n, key, value);
}

TEST(TokenIoFloat32Test, WrittenValuesReadBackAtTheirPositions) {
  // The same property with literal values, independent of the byte images.
  std::unique_ptr<KVPool> pool = MakePool(DType::kFloat32);
  FillWithSentinel(*pool);
  const int32_t n = 2;
  const Source key =
      MakeSource(DType::kFloat32, KV::kKey, n, 1, kHeadDim * kHeads, kHeads);
  const Source value =
      MakeSource(DType::kFloat32, KV::kValue, n, n * kHeadDim, kHeadDim, 1);
  WriteTokenRun(*pool, BlockId(0), /*layer=*/1, /*slot=*/3, n, key.view,
                value.view);
  const float* block =
      reinterpret_cast<const float*>(pool->BlockData(BlockId(0)));
  // [layer][K|V][head][token][dim] = ((l*2 + kv)*H + h)*T*D + slot*D + d.
  for (int h = 0; h < kHeads; ++h) {
    for (int t = 0; t < n; ++t) {
      for (int d = 0; d < kHeadDim; ++d) {
        const int k_at = ((1 * 2 + 0) * kHeads + h) * kBlockTokens * kHeadDim +
                         (3 + t) * kHeadDim + d;
        const int v_at = ((1 * 2 + 1) * kHeads + h) * kBlockTokens * kHeadDim +
                         (3 + t) * kHeadDim + d;
        EXPECT_EQ(block[k_at], 100.0f + h * 40 + t * 5 + d);
        EXPECT_EQ(block[v_at], -(100.0f + h * 40 + t * 5 + d));
      }
    }
  }
}

// What ZeroTokenRun must do to `image`.
void ApplyZero(const KVLayout& layout, int32_t layer, int32_t slot,
               int32_t num_slots, BlockImage& image) {
  const size_t elem = SizeOf(layout.dtype);
  for (KV kv : {KV::kKey, KV::kValue}) {
    for (int32_t h = 0; h < layout.num_kv_heads; ++h) {
      const int64_t at = layout.ElementOffset(layer, kv, h, slot);
      std::memset(image.data() + static_cast<size_t>(at) * elem, 0,
                  static_cast<size_t>(num_slots) * layout.head_dim * elem);
    }
  }
}

TEST_P(TokenIoTest, ZeroTokenRunZeroesExactlyTheSlotsAskedAndCountsBytes) {
  struct Run {
    int32_t layer, slot, num_slots;
  };
  for (const Run& run :
       {Run{0, 0, 1}, Run{1, 1, 3}, Run{2, 4, 1}, Run{2, 0, kBlockTokens}}) {
    std::unique_ptr<KVPool> pool = MakePool(dtype());
    FillWithSentinel(*pool);
    const BlockImage untouched = ImageOf(*pool, BlockId(1));
    BlockImage expected = ImageOf(*pool, BlockId(0));
    ApplyZero(pool->layout(), run.layer, run.slot, run.num_slots, expected);

    const size_t zeroed =
        ZeroTokenRun(*pool, BlockId(0), run.layer, run.slot, run.num_slots);
    EXPECT_EQ(zeroed,
              2 * size_t{kHeads} * run.num_slots * kHeadDim * SizeOf(dtype()))
        << run.layer << " " << run.slot << " " << run.num_slots;
    EXPECT_TRUE(BlockEquals(*pool, BlockId(0), expected))
        << run.layer << " " << run.slot << " " << run.num_slots;
    EXPECT_TRUE(BlockEquals(*pool, BlockId(1), untouched));
  }
}

TEST_P(TokenIoTest, ZeroTokenRunAfterAWriteLeavesTheNeighbouringSlots) {
  std::unique_ptr<KVPool> pool = MakePool(dtype());
  FillWithSentinel(*pool);
  const int32_t n = kBlockTokens;
  const Source key =
      MakeSource(dtype(), KV::kKey, n, n * kHeadDim, kHeadDim, 1);
  const Source value =
      MakeSource(dtype(), KV::kValue, n, n * kHeadDim, kHeadDim, 1);
  WriteTokenRun(*pool, BlockId(0), 1, 0, n, key.view, value.view);
  BlockImage expected = ImageOf(*pool, BlockId(0));
  ApplyZero(pool->layout(), 1, 2, 2, expected);

  EXPECT_EQ(ZeroTokenRun(*pool, BlockId(0), 1, 2, 2),
            2 * size_t{kHeads} * 2 * kHeadDim * SizeOf(dtype()));
  EXPECT_TRUE(BlockEquals(*pool, BlockId(0), expected));
  // Slots 1 and 4 of layer 1 still hold the written tokens.
  for (int32_t slot : {1, 4}) {
    const std::byte* at =
        pool->BlockData(BlockId(0)) +
        pool->layout().ElementOffset(1, KV::kValue, 1, slot) * SizeOf(dtype());
    EXPECT_NE(LoadAsFloat(dtype(), at), 0.0f) << slot;
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, TokenIoTest,
                         ::testing::Values(DType::kFloat32, DType::kFloat16,
                                           DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

#ifndef NDEBUG
// The run checks are PKV_DCHECKs (they guard the decode hot path), so they
// abort only in debug builds.
using TokenIoDeathTest = ::testing::Test;

TEST_F(TokenIoDeathTest, WriteOutsideTheLayersOrBlockAborts) {
  std::unique_ptr<KVPool> pool = MakePool(DType::kFloat32);
  const Source key =
      MakeSource(DType::kFloat32, KV::kKey, 2, 2 * kHeadDim, kHeadDim, 1);
  EXPECT_DEATH(
      WriteTokenRun(*pool, BlockId(0), kLayers, 0, 1, key.view, key.view),
      "layer 3 of 3");
  EXPECT_DEATH(WriteTokenRun(*pool, BlockId(0), -1, 0, 1, key.view, key.view),
               "layer -1 of 3");
  EXPECT_DEATH(WriteTokenRun(*pool, BlockId(0), 0, 4, 2, key.view, key.view),
               "slots \\[4, 6\\) of a 5-token block");
  EXPECT_DEATH(WriteTokenRun(*pool, BlockId(0), 0, -1, 1, key.view, key.view),
               "slots \\[-1, 0\\)");
  EXPECT_DEATH(WriteTokenRun(*pool, BlockId(0), 0, 0, 0, key.view, key.view),
               "slots \\[0, 0\\)");
}

TEST_F(TokenIoDeathTest, ZeroOutsideTheLayersOrBlockAborts) {
  std::unique_ptr<KVPool> pool = MakePool(DType::kFloat32);
  EXPECT_DEATH(ZeroTokenRun(*pool, BlockId(0), kLayers, 0, 1), "layer 3 of 3");
  EXPECT_DEATH(ZeroTokenRun(*pool, BlockId(0), 0, 3, 3),
               "slots \\[3, 6\\) of a 5-token block");
  EXPECT_DEATH(ZeroTokenRun(*pool, BlockId(0), 0, 0, 0), "slots \\[0, 0\\)");
}
#endif  // NDEBUG

}  // namespace
}  // namespace pagedkv
