// tests/fuzz/cache_fuzzer.cc
//
// libFuzzer target for the lucid caches: DynamicKVCache (standalone, with a
// small max_private_pool_bytes via Create, or on a shared KVPool),
// StaticKVCache (private or shared pool) and EncoderDecoderCache (standalone
// halves, capped halves, static + dynamic halves on one pool, two dynamic
// halves on one pool). The input picks the subject, its dtype and geometry
// and a tiny pool (2-12 blocks of 2-4 tokens) that runs out, then decodes
// into up to kMaxOps operations: Update in every position mode (none,
// scalar, 1-D, 2-D; contiguous or strided input; good and bad shapes,
// dtypes, layers and positions), ReorderCache, BatchSelectIndices,
// BatchRepeatInterleave, Crop, Reset, Get, GetSeqLength, and updates and
// resets of a second cache (the "hog") on the same shared pool.
//
// Each operation also runs on ReferenceCache (tests/cache/reference_cache.h),
// the contiguous model used by tests/cache/differential_test.cc. After every
// operation:
//   - the status code must equal the model's. The model has no memory, so
//     the one exception is ResourceExhausted where the model succeeds, and
//     only when memory can explain it (UpdateMemoryAllowance and
//     BatchMemoryAllowance below: a shared pool without the blocks an upper
//     bound says the call may need, a private pool whose byte cap is that
//     small counting the blocks it already has, since it never shrinks; a
//     static cache only before its batch is fixed, when a batch op grows
//     it, or after a reservation shortfall); the model is rolled back;
//   - a failed call must change nothing: every cache's CacheSnapshot
//     (tests/cache/cache_snapshot.h: batch, layers, every K/V element,
//     stats, pool books) equals the one before;
//   - every visible K/V element of every layer equals the model's, as do
//     lengths, presence, batch, slots and dtype; an Update's returned view
//     too; remaps (batch ops, Crop) copy and write no byte;
//   - CheckInvariants() of every cache and of the pool's books.
// A divergence prints the last operations and aborts (PKV_FUZZ_VERBOSE=1
// prints every operation as it runs).
//
// Known bugs that PKV_FUZZ_ALLOW (fuzz_support.h) steers around: none open.
// Found and fixed (816c981), inputs in corpus/cache_fuzzer/: after Reset, a
// failing Update with a new heads/head_dim left the rebuilt private pool in
// place (failed_update_after_reset_replaces_private_pool) or aborted in
// Rollback (rollback_of_rebuilt_private_pool_aborts).
//
//   bazel run --config=fuzz //tests/fuzz:cache_fuzzer -- -max_total_time=60
//
// Thread safety: one input at a time (libFuzzer's model).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "cache/cache.h"
#include "cache/cache_limits.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/kv_view.h"
#include "cache/static_kv_cache.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "tensor/dtype.h"
#include "tensor/memory_resource.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tests/cache/cache_snapshot.h"
#include "tests/cache/reference_cache.h"
#include "tests/fuzz/fuzz_support.h"

namespace pagedkv::fuzzing {
namespace {

using ::pagedkv::testing::CacheSnapshot;
using ::pagedkv::testing::LayerSnapshot;
using ::pagedkv::testing::ReferenceCache;
using ::pagedkv::testing::TakeSnapshot;

// Operations per input: enough to fill and exhaust a tiny pool many times,
// few enough that an input runs in well under a millisecond or so.
constexpr int kMaxOps = 192;
// Dynamic layers past this length take at most one token per append, and
// positional writes stay inside them: it bounds the work per operation.
constexpr int64_t kLongLayer = 48;
// Upper bound on blocks lost to a private pool's chunk rounding (chunks are
// at most 16 blocks: EnsureAvailable rounds the total up and the cap down).
constexpr int64_t kChunkSlack = 32;

enum Op {
  kUpdate,
  kSelect,
  kReorder,
  kRepeat,
  kCrop,
  kReset,
  kGet,
  kGetSeqLength,
  kHogUpdate,
  kHogReset,
  kCreate,
  kNumOps,
};

OpStats& Stats() {
  return OpStats::Get("cache_fuzzer",
                      {"Update", "BatchSelectIndices", "ReorderCache",
                       "BatchRepeatInterleave", "Crop", "Reset", "Get",
                       "GetSeqLength", "hog Update", "hog Reset",
                       "Create (bad options)"});
}

enum class Subject {
  kDynamic,             // DynamicKVCache(): private pool, default options.
  kDynamicCapped,       // DynamicKVCache::Create: small blocks and byte cap.
  kDynamicPool,         // DynamicKVCache on the tiny shared pool.
  kStatic,              // StaticKVCache, private pool (small cap at times).
  kStaticPool,          // StaticKVCache on the tiny shared pool.
  kEncoderDecoder,      // Two default standalone dynamic halves.
  kEncoderDecoderPool,  // Static self, dynamic cross, one shared pool.
  kEncoderDecoderCapped,  // Static self and dynamic cross, capped privates.
  kEncoderDecoderDynamicPool,  // Two dynamic halves on one shared pool.
  kNumSubjects,
};

const char* SubjectName(Subject s) {
  switch (s) {
    case Subject::kDynamic:
      return "Dynamic";
    case Subject::kDynamicCapped:
      return "DynamicCapped";
    case Subject::kDynamicPool:
      return "DynamicPool";
    case Subject::kStatic:
      return "Static";
    case Subject::kStaticPool:
      return "StaticPool";
    case Subject::kEncoderDecoder:
      return "EncoderDecoder";
    case Subject::kEncoderDecoderPool:
      return "EncoderDecoderPool";
    case Subject::kEncoderDecoderCapped:
      return "EncoderDecoderCapped";
    case Subject::kEncoderDecoderDynamicPool:
      return "EncoderDecoderDynamicPool";
    case Subject::kNumSubjects:
      break;
  }
  return "?";
}

int64_t BlocksFor(int64_t tokens, int64_t block_tokens) {
  return (tokens + block_tokens - 1) / block_tokens;
}

std::string IndicesString(absl::Span<const int64_t> v) {
  return absl::StrCat("[", absl::StrJoin(v, " "), "]");
}

// One cache under test with its model, and what its memory allowance needs
// to know about it.
struct Half {
  const char* name = "";
  KVCache* cache = nullptr;
  ReferenceCache* model = nullptr;
  // On the shared pool, or standalone with these private-pool options.
  bool shared = false;
  int64_t private_block_tokens = 16;
  int64_t private_cap = kDefaultMaxPrivatePoolBytes;
  // Static caches.
  int64_t max_cache_len = 0;
  int64_t num_layers = 0;
  // The state before the current operation.
  CacheSnapshot last;
};

// What the paged layout of a cache looks like from the public API: the
// table blocks per row and every present layer's window start (KVView
// exposes both for the kernels).
struct Geometry {
  int64_t table_blocks = 0;
  std::vector<int64_t> starts;  // Per layer slot; 0 for absent layers.
  int64_t max_start = 0;        // Over layers holding tokens.
};

Geometry Observe(const KVCache& cache) {
  Geometry g;
  g.starts.assign(static_cast<size_t>(cache.num_layer_slots()), 0);
  for (int64_t l = 0; l < cache.num_layer_slots(); ++l) {
    absl::StatusOr<std::optional<KVView>> view = cache.Get(l);
    if (!view.ok() || !view->has_value()) continue;
    const KVView& v = **view;
    g.starts[static_cast<size_t>(l)] = v.start();
    if (v.batch() > 0) g.table_blocks = v.tables()[0].num_blocks();
    if (v.length() > 0) g.max_start = std::max(g.max_start, v.start());
  }
  return g;
}

class CacheFuzzer {
 public:
  explicit CacheFuzzer(FuzzInput& in) : in_(in) {}

  void Run() {
    Setup();
    SnapshotAll();
    VerifyAll(/*remap=*/false);
    while (!in_.empty() && history_.count() < kMaxOps) Step();
  }

 private:
  // --- Setup -------------------------------------------------------------

  void Setup() {
    subject_ = static_cast<Subject>(
        in_.Below(static_cast<int64_t>(Subject::kNumSubjects)));
    const DType dtypes[] = {DType::kFloat32, DType::kFloat16,
                            DType::kBFloat16};
    dtype_ = dtypes[in_.Below(3)];
    heads_ = 1 + in_.Below(2);
    head_dim_ = 1 + in_.Below(3);
    pool_layers_ = static_cast<int32_t>(1 + in_.Below(3));
    pool_block_tokens_ = static_cast<int32_t>(2 + in_.Below(3));
    pool_blocks_ = static_cast<int32_t>(2 + in_.Below(11));
    max_cache_len_ = 1 + in_.Below(13);
    private_block_tokens_ = static_cast<int32_t>(1 + in_.Below(4));
    private_cap_ = in_.Below(4) == 0 ? kDefaultMaxPrivatePoolBytes
                                     : 16 * (1 + in_.Below(512));
    const bool uses_pool = subject_ == Subject::kDynamicPool ||
                           subject_ == Subject::kStaticPool ||
                           subject_ == Subject::kEncoderDecoderPool ||
                           subject_ == Subject::kEncoderDecoderDynamicPool;
    static_layers_ = 1 + in_.Below(uses_pool ? pool_layers_ : 3);
    if (uses_pool) {
      pool_ = *KVPool::Create(
          {.layout = KVLayout{pool_layers_, static_cast<int32_t>(heads_),
                              static_cast<int32_t>(head_dim_), dtype_,
                              pool_block_tokens_},
           .num_blocks = pool_blocks_,
           // Operator new, so that AddressSanitizer sees the block bytes.
           .memory = NewDeleteResource()});
    }
    history_.Add(absl::StrFormat(
        "setup %s dtype %s heads %d head_dim %d; pool %s (%d layers, %d "
        "blocks of %d tokens); static max_cache_len %d num_layers %d; private "
        "block_tokens %d cap %d",
        SubjectName(subject_), DTypeName(dtype_), heads_, head_dim_,
        uses_pool ? "yes" : "no", pool_layers_, pool_blocks_,
        pool_block_tokens_, max_cache_len_, static_layers_,
        private_block_tokens_, private_cap_));

    switch (subject_) {
      case Subject::kDynamic:
        single_ = std::make_unique<DynamicKVCache>();
        AddHalf("cache", single_.get(), false, false, 16,
                kDefaultMaxPrivatePoolBytes);
        break;
      case Subject::kDynamicCapped:
        single_ = MakeDynamicCapped();
        AddHalf("cache", single_.get(), false, false, private_block_tokens_,
                private_cap_);
        break;
      case Subject::kDynamicPool:
        single_ = std::make_unique<DynamicKVCache>(pool_.get());
        AddHalf("cache", single_.get(), false, true, 0, 0);
        break;
      case Subject::kStatic:
        single_ = MakeStatic(nullptr);
        AddHalf("cache", single_.get(), true, false, private_block_tokens_,
                private_cap_);
        break;
      case Subject::kStaticPool:
        single_ = MakeStatic(pool_.get());
        AddHalf("cache", single_.get(), true, true, 0, 0);
        break;
      case Subject::kEncoderDecoder:
        encdec_ = std::make_unique<EncoderDecoderCache>();
        AddHalf("self", &encdec_->self_attention_cache(), false, false, 16,
                kDefaultMaxPrivatePoolBytes);
        AddHalf("cross", &encdec_->cross_attention_cache(), false, false, 16,
                kDefaultMaxPrivatePoolBytes);
        break;
      case Subject::kEncoderDecoderPool:
        encdec_ = std::make_unique<EncoderDecoderCache>(
            MakeStatic(pool_.get()),
            std::make_unique<DynamicKVCache>(pool_.get()));
        AddHalf("self", &encdec_->self_attention_cache(), true, true, 0, 0);
        AddHalf("cross", &encdec_->cross_attention_cache(), false, true, 0, 0);
        break;
      case Subject::kEncoderDecoderCapped: {
        // In this order: both read the input (argument order is unspecified).
        std::unique_ptr<KVCache> self = MakeStatic(nullptr);
        std::unique_ptr<KVCache> cross = MakeDynamicCapped();
        encdec_ = std::make_unique<EncoderDecoderCache>(std::move(self),
                                                        std::move(cross));
        AddHalf("self", &encdec_->self_attention_cache(), true, false,
                private_block_tokens_, private_cap_);
        AddHalf("cross", &encdec_->cross_attention_cache(), false, false,
                private_block_tokens_, private_cap_);
        break;
      }
      case Subject::kEncoderDecoderDynamicPool:
        encdec_ = std::make_unique<EncoderDecoderCache>(
            std::make_unique<DynamicKVCache>(pool_.get()),
            std::make_unique<DynamicKVCache>(pool_.get()));
        AddHalf("self", &encdec_->self_attention_cache(), false, true, 0, 0);
        AddHalf("cross", &encdec_->cross_attention_cache(), false, true, 0, 0);
        break;
      case Subject::kNumSubjects:
        break;
    }
    if (pool_ != nullptr) {
      hog_ = std::make_unique<DynamicKVCache>(pool_.get());
      hog_model_ = std::make_unique<ReferenceCache>(ModelOptions(false));
      hog_half_.name = "hog";
      hog_half_.cache = hog_.get();
      hog_half_.model = hog_model_.get();
      hog_half_.shared = true;
    }
  }

  ReferenceCache::Options ModelOptions(bool is_static) const {
    ReferenceCache::Options o;
    if (is_static) {
      o.max_cache_len = max_cache_len_;
      o.num_layers = static_layers_;
    }
    if (pool_ != nullptr) {
      o.pool = ReferenceCache::PoolLimits{pool_layers_, heads_, head_dim_,
                                          dtype_};
    }
    return o;
  }

  void AddHalf(const char* name, KVCache* cache, bool is_static, bool shared,
               int64_t private_block_tokens, int64_t private_cap) {
    models_.push_back(std::make_unique<ReferenceCache>(
        ModelOptions(is_static)));
    Half h;
    h.name = name;
    h.cache = cache;
    h.model = models_.back().get();
    h.shared = shared;
    h.private_block_tokens = private_block_tokens;
    h.private_cap = private_cap;
    h.max_cache_len = max_cache_len_;
    h.num_layers = static_layers_;
    halves_.push_back(std::move(h));
  }

  // Create with bad options first now and then: it must say
  // InvalidArgument.
  std::unique_ptr<DynamicKVCache> MakeDynamicCapped() {
    if (in_.OneIn(8)) {
      const bool bad_tokens = in_.Bool();
      DynamicKVCache::Options bad{
          .block_tokens = bad_tokens ? (in_.Bool() ? 0 : 65537) : 16,
          .max_private_pool_bytes = bad_tokens ? 1 : -in_.Below(2)};
      const absl::Status s = DynamicKVCache::Create(bad).status();
      Stats().CountOp(kCreate, s);
      if (s.code() != absl::StatusCode::kInvalidArgument) {
        Divergence(history_,
                   absl::StrFormat("DynamicKVCache::Create(block_tokens %d, "
                                   "max_private_pool_bytes %d): %s, want "
                                   "INVALID_ARGUMENT",
                                   bad.block_tokens,
                                   bad.max_private_pool_bytes, s.ToString()));
      }
    }
    return *DynamicKVCache::Create(
        {.block_tokens = private_block_tokens_,
         .max_private_pool_bytes = private_cap_});
  }

  std::unique_ptr<KVCache> MakeStatic(KVPool* pool) {
    if (in_.OneIn(8)) {
      StaticKVCache::Options bad{.max_cache_len = max_cache_len_,
                                 .num_layers = static_layers_,
                                 .pool = pool,
                                 .block_tokens = private_block_tokens_,
                                 .max_private_pool_bytes = private_cap_};
      switch (in_.Below(4)) {
        case 0:
          bad.max_cache_len = -in_.Below(2);
          break;
        case 1:
          bad.num_layers = pool != nullptr ? pool_layers_ + 1 : 0;
          break;
        case 2:
          bad.max_cache_len = kMaxCacheTokens + 1;
          break;
        default:
          if (pool == nullptr) {
            bad.block_tokens = 0;
          } else {
            bad.num_layers = -1;
          }
          break;
      }
      const absl::Status s = StaticKVCache::Create(bad).status();
      Stats().CountOp(kCreate, s);
      if (s.code() != absl::StatusCode::kInvalidArgument) {
        Divergence(history_,
                   absl::StrFormat("StaticKVCache::Create(max_cache_len %d, "
                                   "num_layers %d, pool %s, block_tokens %d): "
                                   "%s, want INVALID_ARGUMENT",
                                   bad.max_cache_len, bad.num_layers,
                                   pool != nullptr ? "shared" : "none",
                                   bad.block_tokens, s.ToString()));
      }
    }
    return *StaticKVCache::Create({.max_cache_len = max_cache_len_,
                                   .num_layers = static_layers_,
                                   .pool = pool,
                                   .block_tokens = private_block_tokens_,
                                   .max_private_pool_bytes = private_cap_});
  }

  Cache& cache() {
    return encdec_ != nullptr ? static_cast<Cache&>(*encdec_)
                              : static_cast<Cache&>(*single_);
  }
  Half& half(Attention a) {
    return halves_[a == Attention::kCross && encdec_ != nullptr ? 1 : 0];
  }
  // Every cache whose state a failed call must leave alone.
  std::vector<Half*> everyone() {
    std::vector<Half*> all;
    for (Half& h : halves_) all.push_back(&h);
    if (hog_ != nullptr) all.push_back(&hog_half_);
    return all;
  }

  // --- Inputs ------------------------------------------------------------

  struct Input {
    Tensor storage;
    ConstTensorView view;
  };

  // Distinct values (exact in the dtype): keys positive, values negative.
  // Strided inputs are (batch, seq, heads, dim) in memory, viewed as
  // (batch, heads, seq, dim).
  Input MakeInput(DType dtype, const std::vector<int64_t>& dims, bool negative,
                  bool strided) {
    Input input;
    const bool transpose = strided && dims.size() == 4;
    Shape storage_shape;
    if (dims.size() == 4) {
      storage_shape = transpose ? Shape({dims[0], dims[2], dims[1], dims[3]})
                                : Shape({dims[0], dims[1], dims[2], dims[3]});
    } else {
      storage_shape = Shape({dims[0], dims[1], dims[2]});
    }
    input.storage = *Tensor::Create(dtype, storage_shape, NewDeleteResource());
    const int64_t mod = dtype == DType::kBFloat16  ? 251
                        : dtype == DType::kFloat16 ? 2039
                                                   : 1000003;
    const size_t elem = SizeOf(dtype);
    for (int64_t i = 0; i < storage_shape.num_elements(); ++i) {
      const float v = static_cast<float>(1 + (counter_++ % mod));
      StoreFromFloat(dtype, negative ? -v : v,
                     input.storage.data() + static_cast<size_t>(i) * elem);
    }
    if (transpose) {
      const int64_t s = dims[2], h = dims[1], d = dims[3];
      input.view = ConstTensorView(input.storage.data(), dtype,
                                   Shape({dims[0], h, s, d}),
                                   Strides{s * h * d, d, h * d, 1});
    } else {
      input.view = input.storage.view();
    }
    return input;
  }

  int64_t DrawPosition(const ReferenceCache& m, int64_t layer) {
    if (in_.OneIn(64)) return -1 - in_.Below(2);
    if (m.is_static() && in_.OneIn(16)) return max_cache_len_ + in_.Below(2);
    // Long layers (kLongLayer) are written inside, not extended.
    const int64_t length = *m.GetSeqLength(std::max<int64_t>(layer, 0));
    return in_.Below(length >= kLongLayer ? length : length + 4);
  }

  // --- Checks ------------------------------------------------------------

  // "" when the gathered (batch, heads, length, dim) key/value match the
  // model's layer, else the first difference.
  static std::string CompareLayer(const std::vector<int64_t>& shape,
                                  const std::vector<float>& keys,
                                  const std::vector<float>& values,
                                  const ReferenceCache& model, int64_t l) {
    const ReferenceCache::Layer* layer = model.layer(l);
    if (layer == nullptr || !layer->present) {
      return absl::StrFormat("layer %d present in the cache only", l);
    }
    const std::vector<int64_t> want = {*model.batch_size(), model.heads(),
                                       layer->length, model.head_dim()};
    if (shape != want) {
      return absl::StrFormat("layer %d shape (%s), model (%s)", l,
                             absl::StrJoin(shape, ", "),
                             absl::StrJoin(want, ", "));
    }
    const int64_t dims = model.head_dim();
    size_t i = 0;
    for (int64_t b = 0; b < want[0]; ++b) {
      for (int64_t h = 0; h < want[1]; ++h) {
        for (int64_t t = 0; t < want[2]; ++t) {
          for (int64_t d = 0; d < dims; ++d, ++i) {
            const double k = layer->key[b][h][t * dims + d];
            const double v = layer->value[b][h][t * dims + d];
            if (keys[i] != k || values[i] != v) {
              return absl::StrFormat(
                  "layer %d (row %d, head %d, token %d, dim %d): cache K %g "
                  "V %g, model K %g V %g",
                  l, b, h, t, d, keys[i], values[i], k, v);
            }
          }
        }
      }
    }
    return "";
  }

  static std::string CompareView(const KVView& view,
                                 const ReferenceCache& model, int64_t l) {
    if (view.dtype() != *model.dtype()) {
      return absl::StrFormat("layer %d dtype %s, model %s", l,
                             DTypeName(view.dtype()),
                             DTypeName(*model.dtype()));
    }
    absl::StatusOr<KVTensors> dense = view.Gather();
    if (!dense.ok()) return "Gather: " + dense.status().ToString();
    const std::vector<int64_t> shape(dense->key.shape().dims().begin(),
                                     dense->key.shape().dims().end());
    return CompareLayer(shape, ToFloatVector(dense->key.view()),
                        ToFloatVector(dense->value.view()), model, l);
  }

  // "" when a snapshot shows exactly the model's state.
  static std::string CompareState(const Half& h, const CacheSnapshot& s) {
    const ReferenceCache& m = *h.model;
    const KVCache& c = *h.cache;
    if (s.batch != m.batch_size()) {
      return absl::StrFormat("batch %d, model %d", s.batch.value_or(-1),
                             m.batch_size().value_or(-1));
    }
    if (s.num_layer_slots != m.num_layer_slots()) {
      return absl::StrFormat("%d layer slots, model %d", s.num_layer_slots,
                             m.num_layer_slots());
    }
    if (c.GetMaxCacheShape() != m.GetMaxCacheShape()) {
      return "GetMaxCacheShape differs";
    }
    if (c.dtype() != m.dtype()) {
      return absl::StrFormat(
          "dtype %s, model %s", c.dtype() ? DTypeName(*c.dtype()) : "none",
          m.dtype() ? DTypeName(*m.dtype()) : "none");
    }
    for (size_t l = 0; l < s.layers.size(); ++l) {
      const LayerSnapshot& ls = s.layers[l];
      const int64_t li = static_cast<int64_t>(l);
      if (ls.length != *m.GetSeqLength(li)) {
        return absl::StrFormat("GetSeqLength(%d) = %d, model %d", li,
                               ls.length, *m.GetSeqLength(li));
      }
      const bool present = *m.IsPresent(li);
      if (ls.present != present) {
        return absl::StrFormat("Get(%d) present %d, model %d", li, ls.present,
                               present);
      }
      if (present) {
        if (c.dtype() != m.dtype()) return "dtype differs";
        std::string diff = CompareLayer(ls.shape, ls.key, ls.value, m, li);
        if (!diff.empty()) return diff;
      }
    }
    // Past the snapshot's layers: negative, and (static) num_layers.
    for (int64_t l : {int64_t{-1}, s.num_layer_slots, s.num_layer_slots + 1}) {
      const absl::StatusCode got = c.Get(l).status().code();
      const absl::StatusCode want = m.IsPresent(l).status().code();
      if (got != want) {
        return absl::StrFormat("Get(%d): %s, model %s", l, CodeName(got),
                               CodeName(want));
      }
      absl::StatusOr<int64_t> length = c.GetSeqLength(l);
      absl::StatusOr<int64_t> model_length = m.GetSeqLength(l);
      if (length.status().code() != model_length.status().code() ||
          (length.ok() && *length != *model_length)) {
        return absl::StrFormat("GetSeqLength(%d): %s, model %s", l,
                               length.ok() ? absl::StrCat(*length)
                                           : length.status().ToString(),
                               model_length.ok()
                                   ? absl::StrCat(*model_length)
                                   : model_length.status().ToString());
      }
    }
    return "";
  }

  void SnapshotAll() {
    for (Half* h : everyone()) h->last = TakeSnapshot(*h->cache);
  }

  // Invariants and the whole visible state of every cache; `remap`: the
  // operation must have moved no KV byte. Updates every `last` snapshot.
  void VerifyAll(bool remap) {
    cache().CheckInvariants();
    if (hog_ != nullptr) hog_->CheckInvariants();
    if (pool_ != nullptr) pool_->books().CheckInvariants();
    if (unchanged_) {
      unchanged_ = false;
      return;
    }
    for (Half* h : everyone()) {
      CacheSnapshot now = TakeSnapshot(*h->cache);
      const std::string diff = CompareState(*h, now);
      if (!diff.empty()) {
        Divergence(history_, absl::StrCat(h->name, ": ", diff));
      }
      const CacheStats stats = h->cache->stats();
      if (stats.remap_bytes_copied != 0) {
        Divergence(history_,
                   absl::StrFormat("%s: remaps copied %d bytes", h->name,
                                   stats.remap_bytes_copied));
      }
      if (remap && (now.cow_copies != h->last.cow_copies ||
                    now.bytes_written != h->last.bytes_written ||
                    now.bytes_zero_filled != h->last.bytes_zero_filled)) {
        Divergence(history_,
                   absl::StrFormat("%s: a remap copied or wrote bytes (cow "
                                   "%d -> %d, written %d -> %d, zero-filled "
                                   "%d -> %d)",
                                   h->name, h->last.cow_copies, now.cow_copies,
                                   h->last.bytes_written, now.bytes_written,
                                   h->last.bytes_zero_filled,
                                   now.bytes_zero_filled));
      }
      h->last = std::move(now);
    }
    if (encdec_ != nullptr) {
      if (encdec_->updated_layers() != updated_model_) {
        Divergence(history_,
                   absl::StrFormat("updated_layers {%s}, model {%s}",
                                   absl::StrJoin(encdec_->updated_layers(), " "),
                                   absl::StrJoin(updated_model_, " ")));
      }
      if (encdec_->GetMaxCacheShape() != halves_[0].model->GetMaxCacheShape()) {
        Divergence(history_, "EncoderDecoderCache::GetMaxCacheShape differs");
      }
    }
  }

  // Why ResourceExhausted from an Update the model accepts can be right, or
  // "" if it cannot. `batch_was_fixed` and the model's new length are taken
  // before the rollback; the cache is in its state before the call (a failed
  // call changed nothing, checked separately).
  std::string UpdateMemoryAllowance(const Half& h, bool batch_was_fixed,
                                    int64_t batch, int64_t layer,
                                    int64_t new_length) const {
    const CacheStats stats = h.cache->stats();
    const bool is_static = h.model->is_static();
    if (is_static && batch_was_fixed) {
      // The documented exception: a crop that could not extend the
      // reservation (static_kv_cache.h).
      return stats.reservation_shortfalls > 0 ? "a reservation shortfall"
                                              : "";
    }
    const int64_t bt =
        h.shared ? pool_->layout().block_tokens : h.private_block_tokens;
    const Geometry g = Observe(*h.cache);
    const int64_t start =
        layer < static_cast<int64_t>(g.starts.size()) ? g.starts[layer] : 0;
    int64_t table_blocks =
        std::max(g.table_blocks, BlocksFor(start + new_length, bt));
    // A static cache fixing its batch reserves max_cache_len per row.
    if (is_static) {
      table_blocks = std::max(table_blocks, BlocksFor(h.max_cache_len, bt));
    }
    // Every row may need a fresh (or copied) block for every table block.
    const int64_t need = batch * table_blocks;
    if (h.shared) {
      const int64_t available =
          pool_->books().num_unreserved_free_blocks() + stats.blocks_reserved;
      if (available < need) {
        return absl::StrFormat("%d blocks available, may need %d", available,
                               need);
      }
      return "";
    }
    int64_t layers = is_static ? h.num_layers : layer + 1;
    // A private pool never shrinks (Reset, Crop and selects keep its
    // blocks), and a relayout for more layers widens every block it has.
    int64_t pool_blocks = 0;
    if (h.cache->pool() != nullptr) {
      layers = std::max<int64_t>(layers, h.cache->pool()->layout().num_layers);
      pool_blocks = h.cache->pool()->num_blocks();
    }
    // The layout may double its layers; chunks round the block count.
    const int64_t block_bytes = 2 * layers * 2 * heads_of(h) *
                                head_dim_of(h) * bt *
                                static_cast<int64_t>(SizeOf(dtype_of(h)));
    const double bytes =
        static_cast<double>(std::max(need, pool_blocks) + kChunkSlack) *
        static_cast<double>(block_bytes);
    if (bytes > static_cast<double>(h.private_cap)) {
      return absl::StrFormat("up to %.0f bytes vs a cap of %d", bytes,
                             h.private_cap);
    }
    return "";
  }

  // The same for a batch operation that grows half h to new_batch rows:
  // only a static cache extends its reservation.
  std::string BatchMemoryAllowance(const Half& h, int64_t new_batch) const {
    if (!h.model->is_static() || !h.model->batch_size().has_value() ||
        new_batch <= *h.model->batch_size()) {
      return "";
    }
    const Geometry g = Observe(*h.cache);
    const KVPool* pool = h.cache->pool();
    const int64_t bt = pool->layout().block_tokens;
    const int64_t want = new_batch * BlocksFor(g.max_start + h.max_cache_len, bt);
    if (h.shared) {
      const int64_t available = pool_->books().num_unreserved_free_blocks();
      if (available < want) {
        return absl::StrFormat("%d unreserved blocks, reservation wants %d",
                               available, want);
      }
      return "";
    }
    const double bytes =
        static_cast<double>(std::max<int64_t>(want + h.cache->stats().blocks_in_use,
                                              pool->num_blocks()) +
                            kChunkSlack) *
        static_cast<double>(pool->block_bytes());
    if (bytes > static_cast<double>(h.private_cap)) {
      return absl::StrFormat("up to %.0f bytes vs a cap of %d", bytes,
                             h.private_cap);
    }
    return "";
  }

  int64_t heads_of(const Half& h) const {
    return h.model->batch_size().has_value() ? h.model->heads() : last_heads_;
  }
  int64_t head_dim_of(const Half& h) const {
    return h.model->batch_size().has_value() ? h.model->head_dim()
                                             : last_head_dim_;
  }
  DType dtype_of(const Half& h) const {
    return h.model->dtype().value_or(last_dtype_);
  }

  // Compares a call's outcome with the model's. `allowance` explains a
  // ResourceExhausted the model does not predict ("" means it cannot);
  // `rollback` restores the models then. A failed call must leave every
  // snapshot as it was.
  template <typename Allowance, typename Rollback>
  void CheckOutcome(const absl::Status& got, const absl::Status& want,
                    Allowance allowance, Rollback rollback) {
    if (!got.ok() && want.ok()) {
      if (got.code() != absl::StatusCode::kResourceExhausted) {
        Divergence(history_, absl::StrCat("the cache fails (", got.ToString(),
                                          ") where the model succeeds"));
      }
      const std::string why = allowance();
      if (why.empty()) {
        Divergence(history_,
                   absl::StrCat("ResourceExhausted that memory cannot explain: ",
                                got.ToString()));
      }
      rollback();
    } else if (got.code() != want.code()) {
      Divergence(history_, absl::StrFormat("cache %s, model %s",
                                           got.ToString(), want.ToString()));
    }
    if (!got.ok()) {
      for (Half* h : everyone()) {
        const CacheSnapshot now = TakeSnapshot(*h->cache);
        if (now != h->last) {
          std::ostringstream os;
          os << h->name << " changed by a failed call (" << got.ToString()
             << "): before " << h->last << ", after " << now;
          Divergence(history_, os.str());
        }
      }
      // Every cache equals its last verified state: VerifyAll need not
      // compare it with the model again.
      unchanged_ = true;
    }
  }

  // --- Operations --------------------------------------------------------

  void Step() {
    const int64_t kind = in_.Below(16);
    if (kind < 7) {
      Update();
    } else if (kind == 7 || kind == 8) {
      Select(kind == 8);
    } else if (kind == 9) {
      Repeat();
    } else if (kind == 10) {
      Crop();
    } else if (kind == 11) {
      Reset();
    } else if (kind == 12) {
      Get(/*length=*/false);
    } else if (kind == 13) {
      Get(/*length=*/true);
    } else if (hog_ != nullptr) {
      Hog();
    } else {
      Update();
    }
  }

  void Update() {
    const Attention attention =
        encdec_ != nullptr && in_.Bool() ? Attention::kCross : Attention::kSelf;
    Half& h = half(attention);
    const ReferenceCache& m = *h.model;
    const bool fixed = m.batch_size().has_value();
    int64_t batch = fixed ? *m.batch_size() : (in_.OneIn(16) ? 0 : 1 + in_.Below(3));
    int64_t heads = fixed ? m.heads() : heads_;
    int64_t head_dim = fixed ? m.head_dim() : head_dim_;
    if (!fixed && !h.shared && in_.OneIn(4)) {
      // A standalone cache takes a new geometry after Reset.
      heads = 1 + in_.Below(3);
      head_dim = 1 + in_.Below(3);
    }
    const int64_t max_layers = m.is_static() ? static_layers_
                               : pool_ != nullptr ? pool_layers_
                                                  : 4;
    // Now and then one past the last layer, or negative.
    int64_t layer = in_.OneIn(8) ? max_layers : in_.Below(max_layers);
    if (in_.OneIn(32)) layer = -1 - in_.Below(2);
    int64_t seq = in_.Below(5);
    if (m.is_static() && seq == 0 && !in_.OneIn(4)) seq = 1;
    const int64_t length = *m.GetSeqLength(std::max<int64_t>(layer, 0));
    if (!m.is_static() && length >= kLongLayer) seq = std::min<int64_t>(seq, 1);
    // The cache's dtype (fixed by its pool or first update) or the input's.
    DType key_dtype = m.dtype().value_or(dtype_);
    DType value_dtype = key_dtype;
    if (!m.dtype().has_value() && in_.OneIn(8)) {
      // A standalone cache's first update picks the dtype.
      const DType dtypes[] = {DType::kFloat32, DType::kFloat16,
                              DType::kBFloat16};
      key_dtype = value_dtype = dtypes[in_.Below(3)];
    }
    bool rank3 = false;
    bool value_longer = false;
    if (in_.OneIn(8)) {
      switch (in_.Below(7)) {
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
              key_dtype == DType::kFloat32 ? DType::kFloat16 : DType::kFloat32;
          break;
        case 4:
          value_dtype =
              key_dtype == DType::kBFloat16 ? DType::kFloat16 : DType::kBFloat16;
          break;
        case 5:
          rank3 = true;
          break;
        case 6:
          value_longer = true;
          break;
      }
    }
    CachePosition position;
    switch (in_.Below(8)) {
      case 0:
      case 1:
      case 2:
        break;  // Append.
      case 3:
        if (!in_.OneIn(8)) seq = 1;
        position = CachePosition::Scalar(DrawPosition(m, layer));
        break;
      case 4:
      case 5: {
        if (seq == 0 && !in_.OneIn(4)) seq = 1;
        std::vector<int64_t> p(static_cast<size_t>(in_.OneIn(16) ? seq + 1 : seq));
        for (int64_t& x : p) x = DrawPosition(m, layer);
        position = CachePosition::Vector(std::move(p));
        break;
      }
      default: {
        if (seq == 0 && !in_.OneIn(4)) seq = 1;
        const int64_t rows = in_.OneIn(16) ? batch + 1 : batch;
        std::vector<int64_t> p(static_cast<size_t>(rows * seq));
        for (int64_t& x : p) x = DrawPosition(m, layer);
        position = CachePosition::Matrix(rows, seq, std::move(p));
        break;
      }
    }
    const bool strided = in_.OneIn(4);
    const std::vector<int64_t> dims =
        rank3 ? std::vector<int64_t>{batch, heads, seq}
              : std::vector<int64_t>{batch, heads, seq, head_dim};
    std::vector<int64_t> value_dims = dims;
    if (value_longer) value_dims[2] += 1;
    const Input key = MakeInput(key_dtype, dims, false, strided);
    const Input value = MakeInput(value_dtype, value_dims, true, strided);
    history_.Add(absl::StrFormat(
        "Update(%s, key (%s) %s%s, value (%s) %s, layer %d, position %s)",
        attention == Attention::kCross ? "cross" : "self",
        absl::StrJoin(dims, ", "), DTypeName(key_dtype),
        strided ? " strided" : "", absl::StrJoin(value_dims, ", "),
        DTypeName(value_dtype), layer, position.ToString()));
    if (!fixed) {
      last_heads_ = heads;
      last_head_dim_ = head_dim;
      last_dtype_ = key_dtype;
    }

    const int64_t written_before = h.cache->stats().bytes_written;
    const ReferenceCache model_before = *h.model;
    const std::set<int64_t> updated_before = updated_model_;
    const absl::Status want =
        h.model->Update(key.view, value.view, layer, position);
    absl::StatusOr<KVView> kv =
        encdec_ != nullptr
            ? encdec_->Update(key.view, value.view, layer, position, attention)
            : single_->Update(key.view, value.view, layer, position);
    const absl::Status got = kv.status();
    Stats().CountOp(kUpdate, got);
    if (got.ok() && want.ok()) {
      const std::string diff = CompareView(*kv, *h.model, layer);
      if (!diff.empty()) {
        Divergence(history_, absl::StrCat("returned view: ", diff));
      }
      const int64_t written = h.cache->stats().bytes_written - written_before;
      const int64_t expected = 2 * batch * heads * seq * head_dim *
                               static_cast<int64_t>(SizeOf(key_dtype));
      if (written != expected) {
        Divergence(history_,
                   absl::StrFormat("bytes_written grew by %d, expected %d",
                                   written, expected));
      }
    }
    if (attention == Attention::kCross && want.ok()) {
      updated_model_.insert(layer);
    }
    const int64_t new_length =
        want.ok() ? *h.model->GetSeqLength(layer) : int64_t{0};
    CheckOutcome(
        got, want,
        [&] {
          return UpdateMemoryAllowance(h, fixed, batch, layer, new_length);
        },
        [&] {
          *h.model = model_before;
          updated_model_ = updated_before;
        });
    VerifyAll(/*remap=*/false);
  }

  // The largest batch of the halves (an encoder-decoder's may differ).
  int64_t batch() const {
    int64_t b = 0;
    for (const Half& h : halves_) {
      b = std::max(b, h.model->batch_size().value_or(0));
    }
    return b;
  }

  // Applies a select or repeat to every model (after checking all), keeping
  // copies for a rollback.
  std::vector<ReferenceCache> SaveModels() const {
    std::vector<ReferenceCache> saved;
    for (const Half& h : halves_) saved.push_back(*h.model);
    return saved;
  }
  void RestoreModels(const std::vector<ReferenceCache>& saved) {
    for (size_t i = 0; i < halves_.size(); ++i) *halves_[i].model = saved[i];
  }

  void Select(bool reorder) {
    const int64_t b = batch();
    std::vector<int64_t> indices(static_cast<size_t>(in_.Below(b >= 4 ? 4 : 6)));
    for (int64_t& i : indices) {
      i = in_.OneIn(12) ? (in_.Bool() ? -1 : b)
                        : in_.Below(std::max<int64_t>(b, 1));
    }
    history_.Add(absl::StrCat(reorder ? "ReorderCache" : "BatchSelectIndices",
                              IndicesString(indices)));
    const std::vector<ReferenceCache> saved = SaveModels();
    absl::Status want;
    for (const Half& h : halves_) {
      if (want.ok()) want = h.model->CheckSelect(indices);
    }
    if (want.ok()) {
      for (Half& h : halves_) h.model->BatchSelectIndices(indices).IgnoreError();
    }
    const absl::Status got = reorder ? cache().ReorderCache(indices)
                                     : cache().BatchSelectIndices(indices);
    Stats().CountOp(reorder ? kReorder : kSelect, got);
    const int64_t new_batch = static_cast<int64_t>(indices.size());
    CheckOutcome(
        got, want,
        [&] {
          RestoreModels(saved);  // The allowance looks at the old batch.
          std::string why;
          for (const Half& h : halves_) {
            if (why.empty()) why = BatchMemoryAllowance(h, new_batch);
          }
          return why;
        },
        [&] { RestoreModels(saved); });
    VerifyAll(/*remap=*/true);
  }

  void Repeat() {
    const int64_t b = batch();
    int64_t repeats = in_.Below(b <= 2 ? 6 : b <= 4 ? 4 : 3) - 2;
    if (b * repeats > 8) repeats = 1;
    history_.Add(absl::StrFormat("BatchRepeatInterleave(%d)", repeats));
    const std::vector<ReferenceCache> saved = SaveModels();
    absl::Status want = halves_[0].model->CheckRepeat(repeats);
    if (want.ok()) {
      for (Half& h : halves_) h.model->BatchRepeatInterleave(repeats).IgnoreError();
    }
    const absl::Status got = cache().BatchRepeatInterleave(repeats);
    Stats().CountOp(kRepeat, got);
    CheckOutcome(
        got, want,
        [&] {
          RestoreModels(saved);
          std::string why;
          for (const Half& h : halves_) {
            const int64_t rows = h.model->batch_size().value_or(0) * repeats;
            if (why.empty()) why = BatchMemoryAllowance(h, rows);
          }
          return why;
        },
        [&] { RestoreModels(saved); });
    VerifyAll(/*remap=*/true);
  }

  void Crop() {
    const ReferenceCache& m = *halves_[0].model;
    const int64_t max_layers = std::max<int64_t>(m.num_layer_slots(), 1);
    const int64_t length = *m.GetSeqLength(in_.Below(max_layers));
    int64_t max_length = in_.Below(length + 3);
    if (in_.OneIn(10)) max_length = -1 - in_.Below(2);
    if (in_.OneIn(10)) max_length = 0;
    history_.Add(absl::StrFormat("Crop(%d)", max_length));
    // Only the self half is cropped (encoder_decoder_cache.h).
    const absl::Status want = halves_[0].model->Crop(max_length);
    const absl::Status got = cache().Crop(max_length);
    Stats().CountOp(kCrop, got);
    CheckOutcome(got, want, [] { return std::string(); }, [] {});
    VerifyAll(/*remap=*/true);
  }

  void Reset() {
    history_.Add("Reset()");
    for (Half& h : halves_) h.model->Reset();
    updated_model_.clear();
    cache().Reset();
    Stats().CountOp(kReset, absl::OkStatus());
    VerifyAll(/*remap=*/false);
  }

  void Get(bool length) {
    const Attention a =
        encdec_ != nullptr && in_.Bool() ? Attention::kCross : Attention::kSelf;
    Half& h = half(a);
    const int64_t layer = in_.Below(static_layers_ + 4) - 1;
    absl::Status got;
    absl::Status want;
    if (!length) {
      history_.Add(absl::StrFormat("Get(%d, %s)", layer,
                                   a == Attention::kCross ? "cross" : "self"));
      absl::StatusOr<std::optional<KVView>> view =
          encdec_ != nullptr ? encdec_->Get(layer, a) : single_->Get(layer);
      absl::StatusOr<bool> present = h.model->IsPresent(layer);
      got = view.status();
      want = present.status();
      if (view.ok() && present.ok()) {
        if (view->has_value() != *present) {
          Divergence(history_, absl::StrFormat("Get(%d) present %d, model %d",
                                               layer, view->has_value(),
                                               *present));
        }
        if (*present) {
          const std::string diff = CompareView(**view, *h.model, layer);
          if (!diff.empty()) Divergence(history_, diff);
        }
      }
      Stats().CountOp(kGet, got);
    } else {
      history_.Add(absl::StrFormat("GetSeqLength(%d, %s)", layer,
                                   a == Attention::kCross ? "cross" : "self"));
      absl::StatusOr<int64_t> got_length =
          encdec_ != nullptr ? encdec_->GetSeqLength(layer, a)
                             : single_->GetSeqLength(layer);
      absl::StatusOr<int64_t> want_length = h.model->GetSeqLength(layer);
      got = got_length.status();
      want = want_length.status();
      if (got_length.ok() && want_length.ok() && *got_length != *want_length) {
        Divergence(history_, absl::StrFormat("GetSeqLength(%d) = %d, model %d",
                                             layer, *got_length, *want_length));
      }
      Stats().CountOp(kGetSeqLength, got);
    }
    CheckOutcome(got, want, [] { return std::string(); }, [] {});
    VerifyAll(/*remap=*/false);
  }

  // Another cache on the shared pool takes or gives back blocks.
  void Hog() {
    if (in_.OneIn(3)) {
      history_.Add("hog Reset()");
      hog_->Reset();
      hog_model_->Reset();
      Stats().CountOp(kHogReset, absl::OkStatus());
      VerifyAll(/*remap=*/false);
      return;
    }
    const int64_t seq = 1 + in_.Below(3);
    const int64_t layer = in_.Below(pool_layers_);
    const int64_t b = hog_model_->batch_size().value_or(1);
    const Input key = MakeInput(dtype_, {b, heads_, seq, head_dim_}, false,
                                false);
    const Input value = MakeInput(dtype_, {b, heads_, seq, head_dim_}, true,
                                  false);
    history_.Add(absl::StrFormat("hog Update(%d tokens, layer %d)", seq, layer));
    const ReferenceCache model_before = *hog_model_;
    const bool fixed = hog_model_->batch_size().has_value();
    const absl::Status want =
        hog_model_->Update(key.view, value.view, layer, CachePosition());
    const absl::Status got =
        hog_->Update(key.view, value.view, layer).status();
    Stats().CountOp(kHogUpdate, got);
    const int64_t new_length =
        want.ok() ? *hog_model_->GetSeqLength(layer) : int64_t{0};
    CheckOutcome(
        got, want,
        [&] {
          return UpdateMemoryAllowance(hog_half_, fixed, b, layer, new_length);
        },
        [&] { *hog_model_ = model_before; });
    VerifyAll(/*remap=*/false);
  }

  FuzzInput& in_;
  History history_;
  Subject subject_ = Subject::kDynamic;
  DType dtype_ = DType::kFloat32;
  int64_t heads_ = 1;
  int64_t head_dim_ = 1;
  int32_t pool_layers_ = 1;
  int32_t pool_block_tokens_ = 2;
  int32_t pool_blocks_ = 2;
  int64_t max_cache_len_ = 1;
  int64_t static_layers_ = 1;
  int32_t private_block_tokens_ = 1;
  int64_t private_cap_ = kDefaultMaxPrivatePoolBytes;
  // The geometry of the last update that could fix a batch (what a private
  // pool would be made for).
  int64_t last_heads_ = 1;
  int64_t last_head_dim_ = 1;
  DType last_dtype_ = DType::kFloat32;
  uint64_t counter_ = 0;
  // Set by CheckOutcome when a failed call was found to change nothing.
  bool unchanged_ = false;

  // Declared before the caches that use it, so it is destroyed after them.
  std::unique_ptr<KVPool> pool_;
  std::unique_ptr<KVCache> single_;
  std::unique_ptr<EncoderDecoderCache> encdec_;
  std::vector<std::unique_ptr<ReferenceCache>> models_;
  std::vector<Half> halves_;
  std::set<int64_t> updated_model_;
  std::unique_ptr<DynamicKVCache> hog_;
  std::unique_ptr<ReferenceCache> hog_model_;
  Half hog_half_;
};

}  // namespace
}  // namespace pagedkv::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ::pagedkv::fuzzing::CacheFuzzer;
  using ::pagedkv::fuzzing::FuzzInput;
  ::pagedkv::fuzzing::Stats().CountInput();
  FuzzInput in(data, size);
  CacheFuzzer fuzzer(in);
  fuzzer.Run();
  return 0;
}
