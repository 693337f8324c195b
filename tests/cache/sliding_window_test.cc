// DynamicKVCache with Options::sliding_window against a reference model of
// HuggingFace's DynamicSlidingWindowLayer (and DynamicLayer for window 0),
// with lucid's crop (keep the last max_length positions): random update,
// crop, reorder, repeat and reset sequences with fixed seeds, every result
// compared element by element; the block bound of a decode step; and the
// option checks.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocator/block_pool.h"
#include "allocator/window_table.h"
#include "cache/cache_limits.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/kv_view.h"
#include "cache/paged_kv_cache.h"
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

using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::StatusIs;
using ::pagedkv::testing::TakeSnapshot;
using ::testing::HasSubstr;

constexpr int64_t kHeads = 2;
constexpr int64_t kHeadDim = 3;
constexpr int64_t kTokenElems = kHeads * kHeadDim;

// One token of one row: key then value, each (heads, head_dim) in C order.
struct Token {
  std::vector<float> key;
  std::vector<float> value;
};
// Tokens[b][t].
using Tokens = std::vector<std::vector<Token>>;

// The reference: per layer the tokens it keeps and the tokens it has seen.
class WindowModel {
 public:
  struct Layer {
    bool present = false;
    int64_t seen = 0;
    Tokens held;
  };

  explicit WindowModel(std::vector<int32_t> windows)
      : windows_(std::move(windows)), layers_(windows_.size()) {}

  // HF: the past kept, then `input`, is returned; a window layer keeps the
  // last W - 1 of them, a full layer all.
  Tokens Update(int64_t l, const Tokens& input) {
    if (!batch_.has_value()) batch_ = static_cast<int64_t>(input.size());
    Layer& layer = layers_[l];
    if (!layer.present) layer.held.assign(input.size(), {});
    layer.present = true;
    Tokens full = layer.held;
    for (size_t b = 0; b < input.size(); ++b) {
      full[b].insert(full[b].end(), input[b].begin(), input[b].end());
    }
    layer.seen += input.empty() ? 0 : static_cast<int64_t>(input[0].size());
    layer.held = full;
    if (windows_[l] > 0) KeepLast(&layer.held, windows_[l] - 1);
    return full;
  }
  // lucid: every layer keeps its last max_length positions.
  void Crop(int64_t max_length) {
    for (Layer& layer : layers_) {
      if (!layer.present || layer.seen <= max_length) continue;
      KeepLast(&layer.held, max_length);
      layer.seen = max_length;
    }
  }
  void Select(const std::vector<int64_t>& indices) {
    if (!batch_.has_value()) return;
    for (Layer& layer : layers_) {
      if (!layer.present) continue;
      Tokens rows;
      for (int64_t i : indices) rows.push_back(layer.held[i]);
      layer.held = rows;
    }
    batch_ = static_cast<int64_t>(indices.size());
  }
  void Reset() {
    layers_.assign(windows_.size(), Layer());
    batch_.reset();
  }

  const Layer& layer(int64_t l) const { return layers_[l]; }
  std::optional<int64_t> batch() const { return batch_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  static void KeepLast(Tokens* rows, int64_t n) {
    for (std::vector<Token>& row : *rows) {
      if (static_cast<int64_t>(row.size()) > n) {
        row.erase(row.begin(), row.end() - n);
      }
    }
  }

  std::vector<int32_t> windows_;
  std::vector<Layer> layers_;
  std::optional<int64_t> batch_;
};

// Random small integers: exact in float32, distinct enough to catch a
// token read from the wrong slot.
Tokens RandomTokens(std::mt19937& rng, int64_t batch, int64_t seq) {
  std::uniform_int_distribution<int> value(-1000, 1000);
  Tokens tokens(batch, std::vector<Token>(seq));
  for (auto& row : tokens) {
    for (Token& t : row) {
      for (int64_t i = 0; i < kTokenElems; ++i) {
        t.key.push_back(static_cast<float>(value(rng)));
        t.value.push_back(static_cast<float>(value(rng)));
      }
    }
  }
  return tokens;
}

// `tokens` as (batch, heads, seq, head_dim) K and V in C order.
std::vector<float> Dense(const Tokens& tokens, bool keys) {
  std::vector<float> out;
  for (const auto& row : tokens) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (const Token& t : row) {
        const std::vector<float>& src = keys ? t.key : t.value;
        out.insert(out.end(), src.begin() + h * kHeadDim,
                   src.begin() + (h + 1) * kHeadDim);
      }
    }
  }
  return out;
}

::testing::AssertionResult ViewIs(const KVView& view, const Tokens& want) {
  const int64_t seq = want.empty() ? 0 : static_cast<int64_t>(want[0].size());
  const Shape shape({static_cast<int64_t>(want.size()), kHeads, seq, kHeadDim});
  if (view.shape() != shape) {
    return ::testing::AssertionFailure() << "shape " << view.shape().ToString()
                                         << ", model " << shape.ToString();
  }
  absl::StatusOr<KVTensors> dense = view.Gather();
  if (!dense.ok()) {
    return ::testing::AssertionFailure() << dense.status().ToString();
  }
  if (ToFloatVector(dense->key.view()) != Dense(want, true) ||
      ToFloatVector(dense->value.view()) != Dense(want, false)) {
    return ::testing::AssertionFailure() << "K/V elements differ";
  }
  return ::testing::AssertionSuccess();
}

// Everything the model says a user sees: lengths and kept tokens.
void ExpectMatches(const DynamicKVCache& cache, const WindowModel& model,
                   const std::string& trace) {
  cache.CheckInvariants();
  EXPECT_EQ(cache.batch_size(), model.batch()) << trace;
  for (int64_t l = 0; l < model.num_layers(); ++l) {
    const WindowModel::Layer& want = model.layer(l);
    EXPECT_EQ(*cache.GetSeqLength(l), want.seen) << "layer " << l << trace;
    absl::StatusOr<std::optional<KVView>> got = cache.Get(l);
    ASSERT_THAT(got.status(), IsOk());
    ASSERT_EQ(got->has_value(), want.present) << "layer " << l << trace;
    if (want.present) {
      EXPECT_TRUE(ViewIs(**got, want.held)) << "Get(" << l << ")" << trace;
    }
  }
}

absl::StatusOr<Tensor> ToTensor(const Tokens& tokens, bool keys) {
  const int64_t seq =
      tokens.empty() ? 0 : static_cast<int64_t>(tokens[0].size());
  return FromVector(
      DType::kFloat32,
      {static_cast<int64_t>(tokens.size()), kHeads, seq, kHeadDim},
      Dense(tokens, keys));
}

struct RandomCase {
  uint32_t seed;
  int32_t block_tokens;
  std::vector<int32_t> windows;
};

class SlidingWindowRandomTest : public ::testing::TestWithParam<RandomCase> {};

TEST_P(SlidingWindowRandomTest, MatchesTheReferenceModel) {
  const RandomCase& param = GetParam();
  std::mt19937 rng(param.seed);
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> made = DynamicKVCache::Create(
      {.block_tokens = param.block_tokens, .sliding_window = param.windows});
  ASSERT_THAT(made.status(), IsOk());
  DynamicKVCache& cache = **made;
  WindowModel model(param.windows);
  const int64_t layers = model.num_layers();
  const int64_t seqs[] = {0, 1, 1, 1, 1, 2, 3, 7};

  std::ostringstream trace;
  for (int step = 0; step < 600; ++step) {
    const int op = std::uniform_int_distribution<int>(0, 99)(rng);
    if (op < 70) {
      const int64_t l =
          std::uniform_int_distribution<int64_t>(0, layers - 1)(rng);
      const int64_t seq = seqs[std::uniform_int_distribution<int>(0, 7)(rng)];
      const int64_t batch = model.batch().value_or(
          std::uniform_int_distribution<int64_t>(1, 3)(rng));
      const Tokens input = RandomTokens(rng, batch, seq);
      trace << " U" << l << "x" << seq;
      const Tensor key = *ToTensor(input, true);
      const Tensor value = *ToTensor(input, false);
      absl::StatusOr<KVView> got = cache.Update(key.view(), value.view(), l);
      ASSERT_THAT(got.status(), IsOk()) << trace.str();
      const Tokens want = model.Update(l, input);
      ASSERT_TRUE(ViewIs(*got, want)) << "Update" << trace.str();
    } else if (op < 82) {
      const int64_t m = std::uniform_int_distribution<int64_t>(0, 12)(rng);
      trace << " C" << m;
      ASSERT_THAT(cache.Crop(m), IsOk());
      model.Crop(m);
    } else if (op < 92) {
      const int64_t batch = model.batch().value_or(1);
      std::vector<int64_t> indices(
          std::uniform_int_distribution<int64_t>(1, 4)(rng));
      for (int64_t& i : indices) {
        i = std::uniform_int_distribution<int64_t>(0, batch - 1)(rng);
      }
      trace << " S" << indices.size();
      ASSERT_THAT(cache.ReorderCache(indices), IsOk());
      model.Select(indices);
    } else if (op < 97) {
      const int64_t batch = model.batch().value_or(1);
      const int64_t repeats = batch <= 2 ? 2 : 1;
      trace << " R" << repeats;
      ASSERT_THAT(cache.BatchRepeatInterleave(repeats), IsOk());
      if (model.batch().has_value()) {
        std::vector<int64_t> indices;
        for (int64_t b = 0; b < batch; ++b) {
          for (int64_t k = 0; k < repeats; ++k) indices.push_back(b);
        }
        model.Select(indices);
      }
    } else {
      trace << " X";
      cache.Reset();
      model.Reset();
      if (cache.pool() != nullptr) {
        // Every block is back in the pool.
        EXPECT_EQ(cache.pool()->books().num_free_blocks(),
                  cache.pool()->books().num_blocks());
      }
    }
    ExpectMatches(cache, model, trace.str());
    if (::testing::Test::HasFailure()) return;
  }
  cache.Reset();
  EXPECT_EQ(cache.stats().blocks_in_use, 0);
  if (cache.pool() != nullptr) {
    EXPECT_EQ(cache.pool()->books().num_free_blocks(),
              cache.pool()->books().num_blocks());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Seeds, SlidingWindowRandomTest,
    ::testing::Values(RandomCase{1, 1, {3}}, RandomCase{2, 2, {1, 0, 4}},
                      RandomCase{3, 4, {5, 5, 5}}, RandomCase{4, 3, {0, 2, 8}},
                      RandomCase{5, 16, {6, 0}}, RandomCase{6, 5, {2, 3, 1}},
                      RandomCase{7, 1, {0, 0, 9}}, RandomCase{8, 4, {4, 1}},
                      RandomCase{9, 2, {3, 0, 3, 0}},
                      RandomCase{10, 3, {3, 3, 3, 3, 0, 0}}));

// After a decode step of every layer, each window group (layers of equal
// windows, sharing blocks) holds at most ceil(W / block_tokens) + 1 blocks
// per row (WindowBlockBound), each full group every block of its tokens,
// and the pool never held more: blocks out of the window return.
TEST(SlidingWindowTest, DecodeHoldsAtMostTheWindowBlockBound) {
  struct Case {
    int32_t window;
    int32_t block_tokens;
    // Layers with the window, then full-attention layers; the cache groups
    // them into gcd(windowed, full) layers per group.
    int32_t windowed = 3;
    int32_t full = 0;
  };
  for (const Case c : {Case{1, 1}, Case{2, 1}, Case{4, 4}, Case{5, 4},
                       Case{16, 16}, Case{17, 4}, Case{3, 8}, Case{33, 16},
                       Case{4, 4, 5, 1}, Case{17, 4, 4, 2}, Case{2, 1, 2, 2}}) {
    SCOPED_TRACE(::testing::Message()
                 << "window " << c.window << " block_tokens " << c.block_tokens
                 << " layers " << c.windowed << "+" << c.full);
    constexpr int64_t kBatch = 2;
    const int64_t layers = c.windowed + c.full;
    const int64_t per_group = std::gcd(c.windowed, c.full);
    std::vector<int32_t> windows(c.windowed, c.window);
    windows.resize(layers, 0);
    absl::StatusOr<std::unique_ptr<DynamicKVCache>> made =
        DynamicKVCache::Create(
            {.block_tokens = c.block_tokens, .sliding_window = windows});
    ASSERT_THAT(made.status(), IsOk());
    DynamicKVCache& cache = **made;
    WindowModel model(windows);
    std::mt19937 rng(c.window * 100 + c.block_tokens);
    const int64_t bound = WindowBlockBound(c.window, c.block_tokens);
    int32_t most_used = 0;
    for (int64_t step = 0; step < 6 * c.window + 40; ++step) {
      const int64_t full_blocks =
          (step + 1 + c.block_tokens - 1) / c.block_tokens;
      const int64_t per_row =
          c.windowed / per_group * bound + c.full / per_group * full_blocks;
      for (int64_t l = 0; l < layers; ++l) {
        const Tokens input = RandomTokens(rng, kBatch, 1);
        const Tensor key = *ToTensor(input, true);
        const Tensor value = *ToTensor(input, false);
        absl::StatusOr<KVView> got = cache.Update(key.view(), value.view(), l);
        ASSERT_THAT(got.status(), IsOk());
        ASSERT_TRUE(ViewIs(*got, model.Update(l, input)));
      }
      cache.CheckInvariants();
      const int32_t in_use = cache.stats().blocks_in_use;
      ASSERT_LE(in_use, kBatch * per_row) << "step " << step;
      // The pool never held more than the bound's blocks either (a step
      // takes a window's new block before it drops the old one, and the
      // pool grows in chunks: so compare once the windows are full).
      most_used = std::max(most_used, cache.pool()->books().num_used_blocks());
      EXPECT_LE(most_used, kBatch * (per_row + c.windowed / per_group))
          << "step " << step;
      EXPECT_EQ(*cache.GetSeqLength(layers - 1), step + 1);
    }
    // A block holds one group's layers: nothing of a block is unused.
    EXPECT_EQ(cache.pool()->layout().num_layers, per_group);
    ExpectMatches(cache, model, "");
    cache.Reset();
    EXPECT_EQ(cache.pool()->books().num_free_blocks(),
              cache.pool()->books().num_blocks());
  }
}

// A full-attention layer and a window layer have their own tables (and a
// block holds one layer here): the full one keeps every block, the window
// one only its window's.
TEST(SlidingWindowTest, FullAndWindowLayersKeepTheirOwnBlocks) {
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> made =
      DynamicKVCache::Create({.block_tokens = 2, .sliding_window = {4, 0}});
  ASSERT_THAT(made.status(), IsOk());
  DynamicKVCache& cache = **made;
  const Tensor one = *FillPattern(DType::kFloat32, {1, 1, 1, 2}, 3);
  for (int step = 0; step < 20; ++step) {
    for (int64_t l = 0; l < 2; ++l) {
      ASSERT_THAT(cache.Update(one.view(), one.view(), l).status(), IsOk());
    }
  }
  cache.CheckInvariants();
  // Full: 20 tokens in 10 blocks; window: 3 kept + 1 new, tokens [16, 20).
  EXPECT_EQ(cache.stats().blocks_in_use, 10 + 2);
  EXPECT_EQ(cache.pool()->layout().num_layers, 1);
  EXPECT_EQ((*cache.Get(0))->shape(), Shape({1, 1, 3, 2}));
  EXPECT_EQ((*cache.Get(1))->shape(), Shape({1, 1, 20, 2}));
}

// A prefill longer than the window returns it whole; the next step keeps
// only W - 1 of it and frees the blocks before them.
TEST(SlidingWindowTest, PrefillIsReturnedWholeAndTrimmedByTheNextStep) {
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> made =
      DynamicKVCache::Create({.block_tokens = 4, .sliding_window = {5}});
  ASSERT_THAT(made.status(), IsOk());
  DynamicKVCache& cache = **made;
  const Tensor prompt = *FillPattern(DType::kFloat32, {1, 1, 20, 2}, 1);
  absl::StatusOr<KVView> kv = cache.Update(prompt.view(), prompt.view(), 0);
  ASSERT_THAT(kv.status(), IsOk());
  EXPECT_EQ(kv->shape(), Shape({1, 1, 20, 2}));
  EXPECT_EQ(cache.stats().blocks_in_use, 5);
  EXPECT_EQ((*cache.Get(0))->shape(), Shape({1, 1, 4, 2}));
  EXPECT_EQ(*cache.GetSeqLength(0), 20);

  const Tensor next = *FillPattern(DType::kFloat32, {1, 1, 1, 2}, 99);
  kv = cache.Update(next.view(), next.view(), 0);
  ASSERT_THAT(kv.status(), IsOk());
  EXPECT_EQ(kv->shape(), Shape({1, 1, 5, 2}));  // 4 kept + 1 new.
  EXPECT_EQ(*cache.GetSeqLength(0), 21);
  // Tokens 16..20 are held: table blocks 4 and 5.
  EXPECT_EQ(cache.stats().blocks_in_use, 2);
  cache.CheckInvariants();
}

// On a shared pool (the core, as DynamicKVCache has no shared-pool window
// option) the window groups give their blocks back as they go, and every
// block is back in the pool after Reset and after destruction.
TEST(SlidingWindowTest, EveryBlockReturnsToASharedPool) {
  absl::StatusOr<std::unique_ptr<KVPool>> pool = KVPool::Create(
      {.layout = {/*num_layers=*/2, kHeads, kHeadDim, DType::kFloat32,
                  /*block_tokens=*/4},
       .num_blocks = 64});
  ASSERT_THAT(pool.status(), IsOk());
  const BlockPool& books = (*pool)->books();
  std::mt19937 rng(11);
  for (const bool reset_first : {true, false}) {
    {
      internal::PagedKVCache::Options options;
      options.pool = pool->get();
      // Groups of 2: window layers {0, 2}, full layers {1, 3}.
      options.sliding_window = {5, 0, 5, 0};
      internal::PagedKVCache cache(options);
      for (int step = 0; step < 30; ++step) {
        for (int64_t l = 0; l < 4; ++l) {
          const Tokens input = RandomTokens(rng, 2, 1);
          const Tensor key = *ToTensor(input, true);
          const Tensor value = *ToTensor(input, false);
          ASSERT_THAT(cache.Update(key.view(), value.view(), l).status(),
                      IsOk());
        }
        cache.CheckInvariants();
        // 2 rows: the full group's ceil((step + 1) / 4) blocks and at most
        // WindowBlockBound(5, 4) = 3 of the window group.
        EXPECT_LE(books.num_used_blocks(), 2 * ((step + 4) / 4 + 3));
      }
      EXPECT_EQ(books.num_used_blocks(), 2 * (30 / 4 + 1 + 2));
      if (reset_first) {
        cache.Reset();
        EXPECT_EQ(books.num_free_blocks(), books.num_blocks());
      }
    }
    EXPECT_EQ(books.num_free_blocks(), books.num_blocks());
  }
}

TEST(SlidingWindowTest, BadOptionsAreInvalidArgumentWithTheNumbers) {
  EXPECT_THAT(DynamicKVCache::Create({.sliding_window = {0, -3}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sliding_window[1] is -3")));
  EXPECT_THAT(
      DynamicKVCache::Create(
          {.sliding_window = {static_cast<int32_t>(kMaxCacheTokens) + 1}})
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("sliding_window[0] is 16777217")));
  EXPECT_THAT(
      DynamicKVCache::Create(
          {.sliding_window = std::vector<int32_t>(kMaxCacheLayers + 1, 4)})
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("65537 entries")));
}

TEST(SlidingWindowTest, RejectedUpdatesChangeNothing) {
  absl::StatusOr<std::unique_ptr<DynamicKVCache>> made =
      DynamicKVCache::Create({.block_tokens = 2, .sliding_window = {3, 0}});
  ASSERT_THAT(made.status(), IsOk());
  DynamicKVCache& cache = **made;
  const Tensor kv = *FillPattern(DType::kFloat32, {1, 1, 4, 2}, 1);
  ASSERT_THAT(cache.Update(kv.view(), kv.view(), 0).status(), IsOk());
  ASSERT_THAT(cache.Update(kv.view(), kv.view(), 1).status(), IsOk());
  const testing::CacheSnapshot before = TakeSnapshot(cache);

  // Past the layers the option names.
  EXPECT_THAT(cache.Update(kv.view(), kv.view(), 2).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("layer_idx 2 >= the 2 layers")));
  EXPECT_EQ(*cache.Get(2), std::nullopt);
  // A window layer only appends.
  const Tensor one = *FillPattern(DType::kFloat32, {1, 1, 1, 2}, 5);
  EXPECT_THAT(cache.Update(one.view(), one.view(), 0, CachePosition::Scalar(1))
                  .status(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("sliding window of 3 tokens")));
  EXPECT_EQ(TakeSnapshot(cache), before);
  // A full layer of the same cache still takes positions.
  EXPECT_THAT(cache.Update(one.view(), one.view(), 1, CachePosition::Scalar(1))
                  .status(),
              IsOk());
  cache.CheckInvariants();
}

}  // namespace
}  // namespace pagedkv
