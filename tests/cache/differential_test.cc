// Differential tests: random operation sequences run against the paged
// caches and against ReferenceCache (a contiguous model of
// spec/cache-semantics.md), comparing after every step the outcome (the
// error kind), the whole visible state and the memory books; plus targeted
// copy-on-write counts.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "allocator/block_pool.h"
#include "cache/cache.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
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
#include "tests/cache/reference_cache.h"
#include "tests/testing/status_matchers.h"

namespace pagedkv {
namespace {

using ::pagedkv::testing::CacheSnapshot;
using ::pagedkv::testing::IsOk;
using ::pagedkv::testing::ReferenceCache;
using ::pagedkv::testing::TakeSnapshot;

constexpr int64_t kHeads = 2;
constexpr int64_t kHeadDim = 2;
constexpr int32_t kPoolLayers = 3;
constexpr int32_t kPoolBlockTokens = 4;
constexpr int64_t kStaticLayers = 3;
constexpr int64_t kMaxCacheLen = 13;
constexpr int kStepsPerSeed = 300;

// What is under test.
enum class Subject {
  kDynamic,             // DynamicKVCache, private pool.
  kDynamicSharedPool,   // DynamicKVCache on a small shared KVPool.
  kStatic,              // StaticKVCache, private pool.
  kStaticSharedPool,    // StaticKVCache on a small shared KVPool.
  kEncoderDecoder,      // Two standalone dynamic halves.
  kEncoderDecoderPool,  // Static self half and dynamic cross half, one pool.
};

std::string SubjectName(Subject s) {
  switch (s) {
    case Subject::kDynamic:
      return "Dynamic";
    case Subject::kDynamicSharedPool:
      return "DynamicSharedPool";
    case Subject::kStatic:
      return "Static";
    case Subject::kStaticSharedPool:
      return "StaticSharedPool";
    case Subject::kEncoderDecoder:
      return "EncoderDecoder";
    case Subject::kEncoderDecoderPool:
      return "EncoderDecoderPool";
  }
  return "?";
}

std::unique_ptr<KVPool> MakePool(DType dtype, int32_t num_blocks) {
  return *KVPool::Create(
      {.layout =
           KVLayout{kPoolLayers, static_cast<int32_t>(kHeads),
                    static_cast<int32_t>(kHeadDim), dtype, kPoolBlockTokens},
       .num_blocks = num_blocks});
}

std::unique_ptr<KVCache> MakeStatic(KVPool* pool) {
  return *StaticKVCache::Create({.max_cache_len = kMaxCacheLen,
                                 .num_layers = kStaticLayers,
                                 .pool = pool});
}

ReferenceCache::Options ModelOptions(bool is_static, const KVPool* pool) {
  ReferenceCache::Options o;
  if (is_static) {
    o.max_cache_len = kMaxCacheLen;
    o.num_layers = kStaticLayers;
  }
  if (pool != nullptr) {
    o.pool = ReferenceCache::PoolLimits{kPoolLayers, kHeads, kHeadDim,
                                        pool->layout().dtype};
  }
  return o;
}

// Checks that `view` shows exactly the model's layer `layer_idx`.
::testing::AssertionResult ViewMatches(const KVView& view,
                                       const ReferenceCache& model,
                                       int64_t layer_idx) {
  const ReferenceCache::Layer* layer = model.layer(layer_idx);
  if (layer == nullptr || !layer->present) {
    return ::testing::AssertionFailure()
           << "layer " << layer_idx << " present in the cache only";
  }
  const Shape want(
      {*model.batch_size(), model.heads(), layer->length, model.head_dim()});
  if (view.shape() != want) {
    return ::testing::AssertionFailure()
           << "layer " << layer_idx << " shape " << view.shape().ToString()
           << ", model " << want.ToString();
  }
  if (view.dtype() != *model.dtype()) {
    return ::testing::AssertionFailure()
           << "layer " << layer_idx << " dtype " << view.dtype();
  }
  absl::StatusOr<KVTensors> dense = view.Gather();
  if (!dense.ok()) {
    return ::testing::AssertionFailure() << dense.status().ToString();
  }
  const std::vector<float> keys = ToFloatVector(dense->key.view());
  const std::vector<float> values = ToFloatVector(dense->value.view());
  const int64_t d_max = model.head_dim();
  size_t i = 0;
  for (int64_t b = 0; b < want[0]; ++b) {
    for (int64_t h = 0; h < want[1]; ++h) {
      for (int64_t t = 0; t < want[2]; ++t) {
        for (int64_t d = 0; d < d_max; ++d, ++i) {
          const double k = layer->key[b][h][t * d_max + d];
          const double v = layer->value[b][h][t * d_max + d];
          if (keys[i] != k || values[i] != v) {
            return ::testing::AssertionFailure()
                   << "layer " << layer_idx << " (b " << b << ", h " << h
                   << ", t " << t << ", d " << d << "): cache K " << keys[i]
                   << " V " << values[i] << ", model K " << k << " V " << v;
          }
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Compares everything visible: batch, slots, capacity, and every layer
// (one past the last slot too) through GetSeqLength and Get.
::testing::AssertionResult StateMatches(const KVCache& cache,
                                        const ReferenceCache& model) {
  if (cache.batch_size() != model.batch_size()) {
    return ::testing::AssertionFailure()
           << "batch " << cache.batch_size().value_or(-1) << ", model "
           << model.batch_size().value_or(-1);
  }
  if (cache.num_layer_slots() != model.num_layer_slots()) {
    return ::testing::AssertionFailure()
           << "slots " << cache.num_layer_slots() << ", model "
           << model.num_layer_slots();
  }
  if (cache.GetMaxCacheShape() != model.GetMaxCacheShape()) {
    return ::testing::AssertionFailure() << "max cache shape differs";
  }
  for (int64_t l = 0; l <= model.num_layer_slots(); ++l) {
    absl::StatusOr<int64_t> length = cache.GetSeqLength(l);
    if (!length.ok() || *length != *model.GetSeqLength(l)) {
      return ::testing::AssertionFailure()
             << "GetSeqLength(" << l << ") = "
             << (length.ok() ? std::to_string(*length)
                             : length.status().ToString())
             << ", model " << *model.GetSeqLength(l);
    }
    absl::StatusOr<std::optional<KVView>> view = cache.Get(l);
    absl::StatusOr<bool> present = model.IsPresent(l);
    if (view.status().code() != present.status().code()) {
      return ::testing::AssertionFailure()
             << "Get(" << l << "): " << view.status().ToString() << ", model "
             << present.status().ToString();
    }
    if (!present.ok()) continue;
    if (view->has_value() != *present) {
      return ::testing::AssertionFailure()
             << "Get(" << l << ") present " << view->has_value();
    }
    if (*present) {
      ::testing::AssertionResult same = ViewMatches(**view, model, l);
      if (!same) return same;
    }
  }
  return ::testing::AssertionSuccess();
}

// One half (or the whole) of a subject: a cache and its model.
struct Half {
  KVCache* cache;
  ReferenceCache* model;
};

class DifferentialTest
    : public ::testing::TestWithParam<std::tuple<Subject, DType, uint32_t>> {
 protected:
  void SetUp() override {
    subject_ = std::get<0>(GetParam());
    dtype_ = std::get<1>(GetParam());
    rng_.seed(std::get<2>(GetParam()));
    switch (subject_) {
      case Subject::kDynamic:
        single_ = std::make_unique<DynamicKVCache>();
        break;
      case Subject::kDynamicSharedPool:
        pool_ = MakePool(dtype_, 30);
        single_ = std::make_unique<DynamicKVCache>(pool_.get());
        break;
      case Subject::kStatic:
        single_ = MakeStatic(nullptr);
        break;
      case Subject::kStaticSharedPool:
        pool_ = MakePool(dtype_, 32);
        single_ = MakeStatic(pool_.get());
        break;
      case Subject::kEncoderDecoder:
        encdec_ = std::make_unique<EncoderDecoderCache>();
        break;
      case Subject::kEncoderDecoderPool:
        pool_ = MakePool(dtype_, 48);
        encdec_ = std::make_unique<EncoderDecoderCache>(
            MakeStatic(pool_.get()),
            std::make_unique<DynamicKVCache>(pool_.get()));
        break;
    }
    if (pool_ != nullptr) hog_ = std::make_unique<DynamicKVCache>(pool_.get());
    const bool static_self = subject_ == Subject::kStatic ||
                             subject_ == Subject::kStaticSharedPool ||
                             subject_ == Subject::kEncoderDecoderPool;
    self_model_ = ReferenceCache(ModelOptions(static_self, pool_.get()));
    cross_model_ = ReferenceCache(ModelOptions(false, pool_.get()));
  }

  std::vector<Half> halves() {
    if (encdec_ == nullptr) return {{single_.get(), &self_model_}};
    return {{&encdec_->self_attention_cache(), &self_model_},
            {&encdec_->cross_attention_cache(), &cross_model_}};
  }
  Half half(Attention a) {
    return halves()[a == Attention::kCross && encdec_ != nullptr ? 1 : 0];
  }

  int64_t Draw(int64_t n) { return static_cast<int64_t>(rng_() % n); }
  bool OneIn(int64_t n) { return Draw(n) == 0; }

  // A tensor of exact values: keys 1..2047, values their negatives.
  Tensor MakeInput(DType dtype, Shape shape, bool negative) {
    std::vector<float> data(shape.num_elements());
    for (float& x : data) {
      const float v = static_cast<float>(1 + (counter_++ % 2047));
      x = negative ? -v : v;
    }
    return *FromVector(dtype, shape, data);
  }

  int64_t DrawPosition(const ReferenceCache& m, int64_t layer) {
    if (OneIn(25)) return -1 - Draw(2);
    if (m.is_static() && OneIn(15)) return kMaxCacheLen + Draw(2);
    const int64_t length = *m.GetSeqLength(std::max<int64_t>(layer, 0));
    return Draw(length + 4);
  }

  // Runs one random Update against the cache and the model.
  void RandomUpdate(std::ostringstream& op, absl::Status* got,
                    absl::Status* want, bool* is_update_of_fixed_static) {
    const Attention attention =
        encdec_ != nullptr && OneIn(2) ? Attention::kCross : Attention::kSelf;
    Half h = half(attention);
    const ReferenceCache& m = *h.model;
    int64_t batch = m.batch_size().has_value() ? *m.batch_size()
                                               : (OneIn(20) ? 0 : 1 + Draw(3));
    int64_t heads = m.batch_size().has_value() ? m.heads() : kHeads;
    int64_t head_dim = m.batch_size().has_value() ? m.head_dim() : kHeadDim;
    int64_t layer = Draw(m.is_static() ? kStaticLayers + 1 : kPoolLayers + 1);
    int64_t seq = Draw(5);
    if (m.is_static() && seq == 0 && !OneIn(4)) seq = 1;
    if (OneIn(20)) layer = -1;
    DType key_dtype = dtype_;
    DType value_dtype = dtype_;
    bool rank3 = false;
    bool value_mismatch = false;
    if (OneIn(8)) {
      switch (Draw(7)) {
        case 0:
          batch += 1;
          break;
        case 1:
          heads += 1;
          break;
        case 2:
          head_dim += 1;
          break;
        case 3:
          key_dtype = value_dtype =
              dtype_ == DType::kFloat32 ? DType::kFloat16 : DType::kBFloat16;
          break;
        case 4:
          value_dtype = DType::kBFloat16;
          break;
        case 5:
          rank3 = true;
          break;
        case 6:
          value_mismatch = true;
          break;
      }
    }
    CachePosition position;
    switch (Draw(10)) {
      case 0:
      case 1:
      case 2:
      case 3:
        break;  // Append.
      case 4:
      case 5:
        if (!OneIn(8)) seq = 1;
        position = CachePosition::Scalar(DrawPosition(m, layer));
        break;
      case 6:
      case 7: {
        std::vector<int64_t> p(OneIn(15) ? seq + 1 : seq);
        for (int64_t& x : p) x = DrawPosition(m, layer);
        position = CachePosition::Vector(std::move(p));
        break;
      }
      default: {
        const int64_t rows = OneIn(15) ? batch + 1 : batch;
        std::vector<int64_t> p(rows * seq);
        for (int64_t& x : p) x = DrawPosition(m, layer);
        position = CachePosition::Matrix(rows, seq, std::move(p));
        break;
      }
    }
    const Shape shape = rank3 ? Shape({batch, heads, seq})
                              : Shape({batch, heads, seq, head_dim});
    const Tensor key = MakeInput(key_dtype, shape, false);
    const Tensor value = MakeInput(
        value_dtype,
        value_mismatch ? Shape({batch, heads, seq + 1, head_dim}) : shape,
        true);
    op << "Update(" << (attention == Attention::kCross ? "cross" : "self")
       << ", key " << shape.ToString() << " " << key_dtype << ", value "
       << value.shape().ToString() << " " << value_dtype << ", layer " << layer
       << ", position " << position.ToString() << ")";

    *is_update_of_fixed_static =
        h.cache->GetMaxCacheShape().has_value() && m.batch_size().has_value();
    const int64_t written_before = h.cache->stats().bytes_written;
    *want = h.model->Update(key.view(), value.view(), layer, position);
    absl::StatusOr<KVView> kv =
        encdec_ != nullptr
            ? encdec_->Update(key.view(), value.view(), layer, position,
                              attention)
            : single_->Update(key.view(), value.view(), layer, position);
    *got = kv.status();
    if (kv.ok() && want->ok()) {
      EXPECT_TRUE(ViewMatches(*kv, *h.model, layer)) << "returned view";
      EXPECT_EQ(h.cache->stats().bytes_written - written_before,
                2 * batch * heads * seq * head_dim *
                    static_cast<int64_t>(SizeOf(*h.model->dtype())))
          << op.str();
    }
    if (attention == Attention::kCross && want->ok()) {
      updated_model_.insert(layer);
    }
  }

  std::vector<int64_t> RandomIndices() {
    const int64_t batch = self_model_.batch_size().value_or(0);
    std::vector<int64_t> indices(Draw(batch >= 4 ? 4 : 6));
    for (int64_t& i : indices) {
      i = OneIn(12) ? (OneIn(2) ? -1 : batch)
                    : Draw(std::max<int64_t>(batch, 1));
    }
    return indices;
  }

  Subject subject_;
  DType dtype_;
  std::mt19937 rng_;
  uint32_t counter_ = 0;
  std::unique_ptr<KVPool> pool_;
  std::unique_ptr<KVCache> single_;
  std::unique_ptr<EncoderDecoderCache> encdec_;
  std::unique_ptr<DynamicKVCache> hog_;  // Another user of the shared pool.
  ReferenceCache self_model_{ReferenceCache::Options()};
  ReferenceCache cross_model_{ReferenceCache::Options()};
  std::set<int64_t> updated_model_;
};

std::string IndicesToString(absl::Span<const int64_t> v) {
  std::string s = "[";
  for (int64_t x : v) s += std::to_string(x) + " ";
  return s + "]";
}

TEST_P(DifferentialTest, MatchesReferenceModelAfterEveryStep) {
  Cache& cache = encdec_ != nullptr ? static_cast<Cache&>(*encdec_)
                                    : static_cast<Cache&>(*single_);
  std::vector<std::string> history;  // The last steps, for failure messages.
  for (int step = 0; step < kStepsPerSeed; ++step) {
    std::ostringstream op;
    // The model before the step, to roll back an allowed ResourceExhausted.
    const ReferenceCache self_before = self_model_;
    const ReferenceCache cross_before = cross_model_;
    const std::set<int64_t> updated_before = updated_model_;
    std::vector<CacheSnapshot> before;
    for (const Half& h : halves()) before.push_back(TakeSnapshot(*h.cache));

    absl::Status got;
    absl::Status want;
    bool remap = false;  // Must move no KV byte.
    bool is_update_of_fixed_static = false;
    const int64_t kind = Draw(100);
    if (kind < 55) {
      RandomUpdate(op, &got, &want, &is_update_of_fixed_static);
    } else if (kind < 67) {
      const std::vector<int64_t> indices = RandomIndices();
      const bool reorder = OneIn(2);
      op << (reorder ? "ReorderCache" : "BatchSelectIndices")
         << IndicesToString(indices);
      remap = true;
      want = self_model_.CheckSelect(indices);
      if (want.ok() && encdec_ != nullptr) {
        want = cross_model_.CheckSelect(indices);
      }
      if (want.ok()) {
        for (const Half& h : halves()) {
          ASSERT_THAT(h.model->BatchSelectIndices(indices), IsOk());
        }
      }
      got = reorder ? cache.ReorderCache(indices)
                    : cache.BatchSelectIndices(indices);
    } else if (kind < 74) {
      const int64_t batch = self_model_.batch_size().value_or(0);
      int64_t repeats = Draw(batch <= 2 ? 6 : batch <= 4 ? 4 : 3) - 2;
      if (batch * repeats > 8) repeats = 1;
      op << "BatchRepeatInterleave(" << repeats << ")";
      remap = true;
      want = self_model_.CheckRepeat(repeats);
      if (want.ok()) {
        for (const Half& h : halves()) {
          ASSERT_THAT(h.model->BatchRepeatInterleave(repeats), IsOk());
        }
      }
      got = cache.BatchRepeatInterleave(repeats);
    } else if (kind < 83) {
      const int64_t length = *self_model_.GetSeqLength(Draw(kPoolLayers));
      int64_t max_length = Draw(length + 3);
      if (OneIn(10)) max_length = -1;
      if (OneIn(10)) max_length = 0;
      op << "Crop(" << max_length << ")";
      remap = true;
      want = self_model_.Crop(max_length);
      got = cache.Crop(max_length);
    } else if (kind < 87) {
      op << "Reset()";
      for (const Half& h : halves()) h.model->Reset();
      updated_model_.clear();
      cache.Reset();
    } else if (kind < 95) {
      const Attention a =
          encdec_ != nullptr && OneIn(2) ? Attention::kCross : Attention::kSelf;
      const int64_t layer = Draw(kStaticLayers + 3) - 1;
      Half h = half(a);
      if (OneIn(2)) {
        op << "Get(" << layer << ")";
        absl::StatusOr<std::optional<KVView>> view =
            encdec_ != nullptr ? encdec_->Get(layer, a) : single_->Get(layer);
        absl::StatusOr<bool> present = h.model->IsPresent(layer);
        got = view.status();
        want = present.status();
        if (view.ok() && present.ok()) {
          ASSERT_EQ(view->has_value(), *present) << op.str();
        }
      } else {
        op << "GetSeqLength(" << layer << ")";
        absl::StatusOr<int64_t> length = encdec_ != nullptr
                                             ? encdec_->GetSeqLength(layer, a)
                                             : single_->GetSeqLength(layer);
        absl::StatusOr<int64_t> model_length = h.model->GetSeqLength(layer);
        got = length.status();
        want = model_length.status();
        if (length.ok() && model_length.ok()) {
          ASSERT_EQ(*length, *model_length) << op.str();
        }
      }
    } else if (hog_ != nullptr) {
      // Another cache on the pool takes or gives back blocks.
      op << "hog";
      if (OneIn(3)) {
        hog_->Reset();
      } else {
        const Tensor t =
            MakeInput(dtype_, Shape({1, kHeads, 3, kHeadDim}), false);
        hog_->Update(t.view(), t.view(), Draw(kPoolLayers)).IgnoreError();
      }
      hog_->CheckInvariants();
    }
    history.push_back("step " + std::to_string(step) + ": " + op.str() +
                      " -> " + want.ToString());
    std::string what;
    for (size_t i = history.size() > 12 ? history.size() - 12 : 0;
         i < history.size(); ++i) {
      what += "\n  " + history[i];
    }
    what += "\n ";

    // The outcome.
    if (!got.ok() && want.ok()) {
      ASSERT_EQ(got.code(), absl::StatusCode::kResourceExhausted)
          << what << " failed where the model succeeds: " << got;
      ASSERT_NE(pool_, nullptr)
          << what << ": ResourceExhausted without a shared pool";
      ASSERT_FALSE(is_update_of_fixed_static)
          << what
          << ": a static cache's update failed for memory after its "
             "batch (and reservation) was fixed: "
          << got;
      self_model_ = self_before;
      cross_model_ = cross_before;
      updated_model_ = updated_before;
    } else {
      ASSERT_EQ(got.code(), want.code())
          << what << ": cache " << got << ", model " << want;
    }
    if (!got.ok()) {
      std::vector<Half> hs = halves();
      for (size_t i = 0; i < hs.size(); ++i) {
        ASSERT_EQ(TakeSnapshot(*hs[i].cache), before[i])
            << what << " failed (" << got << ") but changed half " << i;
      }
    }

    // The state, the books and the invariants.
    cache.CheckInvariants();
    std::vector<Half> hs = halves();
    for (size_t i = 0; i < hs.size(); ++i) {
      ASSERT_TRUE(StateMatches(*hs[i].cache, *hs[i].model))
          << what << " (half " << i << ")";
      const CacheStats stats = hs[i].cache->stats();
      EXPECT_EQ(stats.remap_bytes_copied, 0) << what;
      if (remap) {
        ASSERT_EQ(stats.cow_copies, before[i].cow_copies) << what;
        ASSERT_EQ(stats.bytes_written, before[i].bytes_written) << what;
        ASSERT_EQ(stats.bytes_zero_filled, before[i].bytes_zero_filled) << what;
      }
    }
    if (encdec_ != nullptr) {
      ASSERT_EQ(encdec_->updated_layers(), updated_model_) << what;
      ASSERT_EQ(encdec_->GetMaxCacheShape(), self_model_.GetMaxCacheShape());
    }
    if (pool_ != nullptr) pool_->books().CheckInvariants();
  }
}

// Targeted copy-on-write counts on a standalone cache (16-token blocks): a
// write copies exactly one block per shared block it writes, and nothing
// else; every row keeps seeing its own data.
class CopyOnWriteTest : public ::testing::Test {
 protected:
  // Prefills `length` tokens in batch 1, then repeats the row 4 times.
  void PrefillAndRepeat(int64_t length) {
    const Tensor key = *FillPattern(DType::kFloat32, {1, 2, length, 4}, 1);
    ASSERT_THAT(cache_.Update(key.view(), key.view(), 0), IsOk());
    ASSERT_THAT(model_.Update(key.view(), key.view(), 0, CachePosition()),
                IsOk());
    ASSERT_THAT(cache_.BatchRepeatInterleave(4), IsOk());
    ASSERT_THAT(model_.BatchRepeatInterleave(4), IsOk());
    ASSERT_EQ(cache_.stats().cow_copies, 0);
  }
  // Writes one distinct token per row at `position` and checks the state.
  void WriteOneToken(const CachePosition& position) {
    const Tensor key = *FillPattern(DType::kFloat32, {4, 2, 1, 4}, 77);
    ASSERT_THAT(cache_.Update(key.view(), key.view(), 0, position), IsOk());
    ASSERT_THAT(model_.Update(key.view(), key.view(), 0, position), IsOk());
    EXPECT_TRUE(StateMatches(cache_, model_));
    cache_.CheckInvariants();
  }
  int64_t block_bytes() const { return cache_.pool()->block_bytes(); }

  DynamicKVCache cache_;
  ReferenceCache model_{ReferenceCache::Options()};
};

TEST_F(CopyOnWriteTest, AppendCopiesTheSharedTailBlockOncePerExtraRow) {
  PrefillAndRepeat(20);  // Block 0 full, block 1 holds 4 tokens: shared.
  WriteOneToken(CachePosition::None());
  EXPECT_EQ(cache_.stats().cow_copies, 3);
  EXPECT_EQ(cache_.stats().cow_bytes, 3 * block_bytes());
}

TEST_F(CopyOnWriteTest, AppendAfterPrefixEndingAtBlockBoundaryCopiesNothing) {
  PrefillAndRepeat(16);  // The append opens a new block per row.
  WriteOneToken(CachePosition::None());
  EXPECT_EQ(cache_.stats().cow_copies, 0);
  EXPECT_EQ(cache_.stats().cow_bytes, 0);
}

TEST_F(CopyOnWriteTest,
       PositionalWriteIntoTheTailBlockCopiesItOncePerExtraRow) {
  PrefillAndRepeat(20);
  WriteOneToken(CachePosition::Scalar(18));
  EXPECT_EQ(cache_.stats().cow_copies, 3);
}

// Fails at HEAD (cache bug): Update also copies the shared block holding the
// layer's old end, which this write does not touch (6 copies).
TEST_F(CopyOnWriteTest, PositionalWriteIntoTheFirstBlockCopiesOnlyThatBlock) {
  PrefillAndRepeat(20);
  WriteOneToken(CachePosition::Vector({3}));
  // Block 0 is written by every row (3 copies); block 1 is not written.
  EXPECT_EQ(cache_.stats().cow_copies, 3);
  EXPECT_EQ(cache_.stats().cow_bytes, 3 * block_bytes());
}

TEST_F(CopyOnWriteTest, SecondWriteToPrivateBlocksCopiesNothingMore) {
  PrefillAndRepeat(20);
  WriteOneToken(CachePosition::None());
  WriteOneToken(CachePosition::None());
  EXPECT_EQ(cache_.stats().cow_copies, 3);
}

// Fails at HEAD (cache bug): the same over-copy (3 copies for no write).
TEST_F(CopyOnWriteTest, ZeroLengthUpdateCopiesNothing) {
  PrefillAndRepeat(20);
  const Tensor empty = *Zeros(DType::kFloat32, {4, 2, 0, 4});
  ASSERT_THAT(cache_.Update(empty.view(), empty.view(), 0), IsOk());
  EXPECT_EQ(cache_.stats().cow_copies, 0);
  EXPECT_EQ(cache_.stats().bytes_written, 2 * 1 * 2 * 20 * 4 * 4);  // Prefill.
}

TEST_F(CopyOnWriteTest, ReorderWithDuplicatesThenWriteCopiesPerSharedRow) {
  PrefillAndRepeat(20);
  WriteOneToken(CachePosition::None());  // 3 copies: rows now private.
  ASSERT_THAT(cache_.ReorderCache({2, 2, 0, 1}), IsOk());
  ASSERT_THAT(model_.ReorderCache({2, 2, 0, 1}), IsOk());
  EXPECT_EQ(cache_.stats().cow_copies, 3);
  // Block 1 of rows 0 and 1 is shared now (block 0 of all four rows, too,
  // but the append does not write it): one more copy.
  WriteOneToken(CachePosition::None());
  EXPECT_EQ(cache_.stats().cow_copies, 4);
}

// StaticKVCache promises that once its batch is fixed no update fails for
// memory. A crop that moves one layer's window while another layer keeps the
// leading block widens the span a row must cover; the crop extends the
// reservation, so a greedy neighbour taking every other block cannot make a
// later in-capacity append fail.
TEST(StaticReservationTest, AppendAfterUnevenCropNeverFailsForMemory) {
  // 4-token blocks, max_cache_len 8: 3 blocks per row at first, 4 after the
  // uneven crop below.
  std::unique_ptr<KVPool> pool = *KVPool::Create(
      {.layout = KVLayout{2, 1, 2, DType::kFloat32, 4}, .num_blocks = 6});
  std::unique_ptr<StaticKVCache> cache = *StaticKVCache::Create(
      {.max_cache_len = 8, .num_layers = 2, .pool = pool.get()});
  ReferenceCache model(
      {.max_cache_len = 8,
       .num_layers = 2,
       .pool = ReferenceCache::PoolLimits{2, 1, 2, DType::kFloat32}});
  auto update = [&](int64_t layer, int64_t seq) {
    const Tensor key = *FillPattern(DType::kFloat32, {1, 1, seq, 2}, layer);
    EXPECT_THAT(model.Update(key.view(), key.view(), layer, CachePosition()),
                IsOk());
    return cache->Update(key.view(), key.view(), layer).status();
  };
  ASSERT_THAT(update(0, 8), IsOk());
  ASSERT_THAT(update(1, 1), IsOk());
  ASSERT_THAT(cache->Crop(2), IsOk());  // Layer 0 keeps [6, 8); layer 1 stays.
  ASSERT_THAT(model.Crop(2), IsOk());
  EXPECT_EQ(cache->stats().reservation_shortfalls, 0);
  // A neighbour takes every block not set aside.
  absl::StatusOr<std::vector<BlockId>> greedy =
      pool->books().Allocate(pool->books().num_unreserved_free_blocks());
  ASSERT_THAT(greedy, IsOk());
  // Length 2 + 6 = 8 <= max_cache_len.
  EXPECT_THAT(update(0, 6), IsOk());
  EXPECT_TRUE(StateMatches(*cache, model));
  cache->CheckInvariants();
  pool->books().ReleaseAll(*greedy);
}

// The documented exception: when a full shared pool cannot extend the
// reservation at the uneven crop, the crop still succeeds (it never fails for
// memory), the shortfall is counted, and the append that needs the missing
// block fails with ResourceExhausted and changes nothing.
TEST(StaticReservationTest, UnevenCropOnAFullPoolCountsAShortfall) {
  std::unique_ptr<KVPool> pool = *KVPool::Create(
      {.layout = KVLayout{2, 1, 2, DType::kFloat32, 4}, .num_blocks = 3});
  std::unique_ptr<StaticKVCache> cache = *StaticKVCache::Create(
      {.max_cache_len = 8, .num_layers = 2, .pool = pool.get()});
  auto update = [&](int64_t layer, int64_t seq) {
    const Tensor key = *FillPattern(DType::kFloat32, {1, 1, seq, 2}, layer);
    return cache->Update(key.view(), key.view(), layer).status();
  };
  ASSERT_THAT(update(0, 8), IsOk());
  ASSERT_THAT(update(1, 1), IsOk());
  ASSERT_THAT(cache->Crop(2), IsOk());
  EXPECT_EQ(cache->stats().reservation_shortfalls, 1);
  const CacheSnapshot before = TakeSnapshot(*cache);
  EXPECT_THAT(update(0, 6), ::pagedkv::testing::StatusIs(
                                absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(TakeSnapshot(*cache), before);
  cache->CheckInvariants();
}

INSTANTIATE_TEST_SUITE_P(
    Seeds, DifferentialTest,
    ::testing::Combine(::testing::Values(Subject::kDynamic,
                                         Subject::kDynamicSharedPool,
                                         Subject::kStatic,
                                         Subject::kStaticSharedPool,
                                         Subject::kEncoderDecoder,
                                         Subject::kEncoderDecoderPool),
                       ::testing::Values(DType::kFloat32, DType::kFloat16),
                       ::testing::Range<uint32_t>(0, 24)),
    [](const ::testing::TestParamInfo<DifferentialTest::ParamType>& info) {
      return SubjectName(std::get<0>(info.param)) +
             std::string(DTypeName(std::get<1>(info.param))) + "Seed" +
             std::to_string(std::get<2>(info.param));
    });

}  // namespace
}  // namespace pagedkv
