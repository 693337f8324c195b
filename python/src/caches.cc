#include "python/src/caches.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/cache.h"
#include "cache/cache_limits.h"
#include "cache/cache_position.h"
#include "cache/cache_stats.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/kv_view.h"
#include "cache/static_kv_cache.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "python/src/arrays.h"
#include "python/src/busy.h"
#include "python/src/pool.h"
#include "python/src/status.h"
#include "python/src/typed_args.h"
#include "python/src/views.h"
#include "tensor/dtype.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

constexpr char kEdc[] = "EncoderDecoderCache";

// Returns (k, v): contiguous numpy copies of the view, gathered without the
// GIL.
py::tuple GatherPair(const KVView& view) {
  const Shape shape = view.shape();
  py::array k = NewArray(view.dtype(), shape);
  py::array v = NewArray(view.dtype(), shape);
  TensorView k_out = WritableView(k, view.dtype(), shape);
  TensorView v_out = WritableView(v, view.dtype(), shape);
  absl::Status status;
  {
    py::gil_scoped_release release;
    status = view.GatherInto(k_out, v_out);
  }
  ThrowIfError(status);
  return py::make_tuple(std::move(k), std::move(v));
}

py::object OptionalPair(const std::optional<KVView>& view) {
  if (!view.has_value()) return py::none();
  return GatherPair(*view);
}

py::object OptionalInt(std::optional<int64_t> v) {
  if (!v.has_value()) return py::none();
  return py::int_(*v);
}

py::dict StatsDict(const CacheStats& s) {
  py::dict d;
  d["blocks_in_use"] = s.blocks_in_use;
  d["blocks_shared"] = s.blocks_shared;
  d["blocks_reserved"] = s.blocks_reserved;
  d["reservation_capacity"] = s.reservation_capacity;
  d["cow_copies"] = s.cow_copies;
  d["cow_bytes"] = s.cow_bytes;
  d["bytes_written"] = s.bytes_written;
  d["bytes_zero_filled"] = s.bytes_zero_filled;
  d["reservation_shortfalls"] = s.reservation_shortfalls;
  d["remap_bytes_copied"] = s.remap_bytes_copied;
  return d;
}

// Returns the KVPool* of a `pool` argument (None: nullptr). TypeError for
// anything but a pagedkv.KVPool.
KVPool* PoolArg(py::handle pool) {
  if (pool.is_none()) return nullptr;
  if (!py::isinstance<PyKVPool>(pool)) {
    throw py::type_error(absl::StrCat(
        "pool: expected a pagedkv.KVPool, got ",
        std::string(py::str(py::type::handle_of(pool).attr("__name__")))));
  }
  return pool.cast<PyKVPool&>().pool.get();
}

// A private-pool option, or its default when None. Raises ValueError when
// given together with a shared pool (whose layout fixes them).
template <typename T>
T PrivateOption(py::handle value, const char* name, T fallback, KVPool* pool) {
  if (value.is_none()) return fallback;
  if (pool != nullptr) {
    ThrowInvalidArgument(absl::StrCat(
        name, ": only for a private pool (a KVPool fixes its own layout)"));
  }
  const int64_t v = ToInt64(value, name);
  if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
    throw py::value_error(absl::StrCat(name, ": ", v, " is out of range"));
  }
  return static_cast<T>(v);
}

// The per-layer windows of a `sliding_window` argument (None: every layer
// full). The C++ cache checks the values (INVALID_ARGUMENT, mapped); here
// only what cannot reach it: the type, values past int32, and a shared
// pool (DynamicKVCache(KVPool*) takes no windows).
std::vector<int32_t> SlidingWindowArg(py::handle value, KVPool* pool) {
  if (value.is_none()) return {};
  if (pool != nullptr) {
    ThrowInvalidArgument(
        "sliding_window: only for a private pool (DynamicKVCache(pool) has "
        "full layers only)");
  }
  const std::vector<int64_t> windows = ToIndexList(value, "sliding_window");
  std::vector<int32_t> out(windows.size());
  for (size_t l = 0; l < windows.size(); ++l) {
    if (windows[l] < std::numeric_limits<int32_t>::min() ||
        windows[l] > std::numeric_limits<int32_t>::max()) {
      throw py::value_error(absl::StrCat("sliding_window[", l,
                                         "]: ", windows[l], " is past int32"));
    }
    out[l] = static_cast<int32_t>(windows[l]);
  }
  return out;
}

std::unique_ptr<PyDynamicKVCache> MakeDynamic(
    OptionalPoolArg pool, OptionalIntArg block_tokens,
    OptionalIntArg max_private_pool_bytes, OptionalIntsArg sliding_window) {
  KVPool* shared = PoolArg(pool);
  auto holder = std::make_unique<PyDynamicKVCache>();
  holder->kind = "DynamicKVCache";
  holder->pool = pool;
  DynamicKVCache::Options options;
  // Every private-pool option is checked before the shared pool's early
  // return, so none given with a KVPool is silently ignored.
  options.sliding_window = SlidingWindowArg(sliding_window, shared);
  options.block_tokens = PrivateOption<int32_t>(block_tokens, "block_tokens",
                                                options.block_tokens, shared);
  options.max_private_pool_bytes =
      PrivateOption<int64_t>(max_private_pool_bytes, "max_private_pool_bytes",
                             options.max_private_pool_bytes, shared);
  if (shared != nullptr) {
    holder->owned = std::make_unique<DynamicKVCache>(shared);
    return holder;
  }
  holder->owned = ValueOrThrow(DynamicKVCache::Create(options));
  return holder;
}

std::unique_ptr<PyStaticKVCache> MakeStatic(
    IntArg max_cache_len, IntArg num_layers, OptionalPoolArg pool,
    OptionalIntArg block_tokens, OptionalIntArg max_private_pool_bytes) {
  StaticKVCache::Options options;
  options.pool = PoolArg(pool);
  options.max_cache_len = ToInt64(max_cache_len, "max_cache_len");
  options.num_layers = ToInt64(num_layers, "num_layers");
  options.block_tokens = PrivateOption<int32_t>(
      block_tokens, "block_tokens", options.block_tokens, options.pool);
  options.max_private_pool_bytes =
      PrivateOption<int64_t>(max_private_pool_bytes, "max_private_pool_bytes",
                             options.max_private_pool_bytes, options.pool);
  auto holder = std::make_unique<PyStaticKVCache>();
  holder->kind = "StaticKVCache";
  holder->pool = pool;
  holder->owned = ValueOrThrow(StaticKVCache::Create(options));
  return holder;
}

// Takes the C++ caches of two Python caches (None: a new DynamicKVCache)
// into one EncoderDecoderCache that the halves then share.
std::unique_ptr<PyEncoderDecoderCache> MakeEncoderDecoder(
    OptionalCacheArg self_half, OptionalCacheArg cross_half) {
  if (self_half.is_none())
    self_half =
        py::cast(MakeDynamic(py::none(), py::none(), py::none(), py::none()));
  if (cross_half.is_none())
    cross_half =
        py::cast(MakeDynamic(py::none(), py::none(), py::none(), py::none()));
  const char* names[2] = {"self_attention_cache", "cross_attention_cache"};
  py::object halves[2] = {self_half, cross_half};
  for (int i = 0; i < 2; ++i) {
    if (!py::isinstance<PyKVCache>(halves[i])) {
      throw py::type_error(absl::StrCat(
          names[i], ": expected a DynamicKVCache or StaticKVCache, got ",
          std::string(
              py::str(py::type::handle_of(halves[i]).attr("__name__")))));
    }
  }
  if (self_half.is(cross_half)) {
    throw py::value_error("the two halves must be different caches");
  }
  PyKVCache& a = self_half.cast<PyKVCache&>();
  PyKVCache& b = cross_half.cast<PyKVCache&>();
  BusyGuard guard_a(a.busy, a.kind);
  BusyGuard guard_b(b.busy, b.kind);
  for (PyKVCache* half : {&a, &b}) {
    if (half->owned == nullptr) {
      throw py::value_error(absl::StrCat(
          half->kind, " is already a half of an EncoderDecoderCache"));
    }
  }
  auto pair = std::make_shared<EncoderDecoderPair>();
  pair->pools[0] = a.pool;
  pair->pools[1] = b.pool;
  pair->busy = std::make_shared<BusyFlag>();
  pair->cache = std::make_unique<EncoderDecoderCache>(std::move(a.owned),
                                                      std::move(b.owned));
  a.adopted =
      std::shared_ptr<KVCache>(pair, &pair->cache->self_attention_cache());
  b.adopted =
      std::shared_ptr<KVCache>(pair, &pair->cache->cross_attention_cache());
  a.busy = pair->busy;
  b.busy = pair->busy;
  auto holder = std::make_unique<PyEncoderDecoderCache>();
  holder->pair = std::move(pair);
  holder->self_half = self_half;
  holder->cross_half = cross_half;
  return holder;
}

Attention AttentionArg(bool cross) {
  return cross ? Attention::kCross : Attention::kSelf;
}

// Accessors shared by the batch operations of both classes.
Cache& CacheOf(PyKVCache& c) { return *c.get(); }
Cache& CacheOf(PyEncoderDecoderCache& c) { return *c.pair->cache; }
const std::shared_ptr<BusyFlag>& BusyOf(PyKVCache& c) { return c.busy; }
const std::shared_ptr<BusyFlag>& BusyOf(PyEncoderDecoderCache& c) {
  return c.pair->busy;
}
const char* KindOf(PyKVCache& c) { return c.kind; }
const char* KindOf(PyEncoderDecoderCache&) { return kEdc; }

// Adds the Cache methods (cache.h) common to every cache class.
template <typename Holder, typename Class>
void AddCacheMethods(Class& cls) {
  cls.def(
         "get_seq_length",
         [](Holder& c, IntArg layer_idx) {
           BusyGuard guard(BusyOf(c), KindOf(c));
           return ValueOrThrow(
               CacheOf(c).GetSeqLength(ToInt64(layer_idx, "layer_idx")));
         },
         py::arg("layer_idx") = 0,
         "Length of the layer (0 for a layer never updated).")
      .def(
          "reorder_cache",
          [](Holder& c, IntsArg beam_idx) {
            BusyGuard guard(BusyOf(c), KindOf(c));
            const std::vector<int64_t> idx = ToIndexList(beam_idx, "beam_idx");
            ThrowIfError(CacheOf(c).ReorderCache(idx));
          },
          py::arg("beam_idx"),
          "New row i is old row beam_idx[i]; a block-table remap.")
      .def(
          "batch_select_indices",
          [](Holder& c, IntsArg indices) {
            BusyGuard guard(BusyOf(c), KindOf(c));
            const std::vector<int64_t> idx = ToIndexList(indices, "indices");
            ThrowIfError(CacheOf(c).BatchSelectIndices(idx));
          },
          py::arg("indices"),
          "Keeps rows indices[0], indices[1], ... in that order (a "
          "block-table remap; dropped rows free their blocks).")
      .def(
          "batch_repeat_interleave",
          [](Holder& c, IntArg repeats) {
            BusyGuard guard(BusyOf(c), KindOf(c));
            ThrowIfError(
                CacheOf(c).BatchRepeatInterleave(ToInt64(repeats, "repeats")));
          },
          py::arg("repeats"),
          "Row r becomes rows r*repeats .. (shared blocks).")
      .def(
          "crop",
          [](Holder& c, IntArg max_length) {
            BusyGuard guard(BusyOf(c), KindOf(c));
            ThrowIfError(CacheOf(c).Crop(ToInt64(max_length, "max_length")));
          },
          py::arg("max_length"), "Keep the last max_length positions.")
      .def(
          "reset",
          [](Holder& c) {
            BusyGuard guard(BusyOf(c), KindOf(c));
            CacheOf(c).Reset();
          },
          "Empties every layer and returns the blocks (the next update may "
          "change batch, heads, head_dim or dtype).")
      .def(
          "get_max_cache_shape",
          [](Holder& c) -> OptionalIntArg {
            BusyGuard guard(BusyOf(c), KindOf(c));
            return OptionalInt(CacheOf(c).GetMaxCacheShape());
          },
          "max_cache_len of a static cache; None for a dynamic one.")
      .def(
          "check_invariants",
          [](Holder& c) {
            BusyGuard guard(BusyOf(c), KindOf(c));
            CacheOf(c).CheckInvariants();
          },
          "Aborts the process if the cache's books are inconsistent (a bug; "
          "for tests).");
}

OptionalKVPair Update(PyKVCache& c, ArrayArg key, ArrayArg value,
                      IntArg layer_idx, PositionArg cache_position,
                      DTypeArg dtype, bool return_kv) {
  BusyGuard guard(c.busy, c.kind);
  const std::optional<DType> declared = ParseDTypeArg(dtype);
  const KVInput k = ToKVInput(key, "key", declared);
  const KVInput v = ToKVInput(value, "value", declared);
  const int64_t layer = ToInt64(layer_idx, "layer_idx");
  const CachePosition position = ToCachePosition(cache_position);
  absl::StatusOr<KVView> view;
  {
    py::gil_scoped_release release;
    view = c.get()->Update(k.view, v.view, layer, position);
  }
  ThrowIfError(view.status());
  if (!return_kv) return py::none();
  return GatherPair(*view);
}

OptionalKVPair Get(PyKVCache& c, IntArg layer_idx) {
  BusyGuard guard(c.busy, c.kind);
  return OptionalPair(
      ValueOrThrow(c.get()->Get(ToInt64(layer_idx, "layer_idx"))));
}

// cache[i]: (k, v) of layer slot i; negative i counts from the end as in a
// Python sequence; (None, None) for an empty slot; IndexError past the end
// (which also ends `for k, v in cache`).
py::tuple GetItem(PyKVCache& c, IntArg index) {
  BusyGuard guard(c.busy, c.kind);
  const int64_t n = c.get()->num_layer_slots();
  int64_t i = ToInt64(index, "index");
  if (i < 0) i += n;
  if (i < 0 || i >= n) {
    throw py::index_error(
        absl::StrCat("layer ", ToInt64(index, "index"), " of ", n, " slots"));
  }
  py::object pair = OptionalPair(ValueOrThrow(c.get()->Get(i)));
  if (pair.is_none()) return py::make_tuple(py::none(), py::none());
  return py::reinterpret_steal<py::tuple>(pair.release());
}

OptionalPagedView PagedViewOf(py::object self, IntArg layer_idx) {
  PyKVCache& c = self.cast<PyKVCache&>();
  BusyGuard guard(c.busy, c.kind);
  if (c.pool.is_none()) {
    throw std::runtime_error(absl::StrCat(
        "paged_view needs a cache on an explicit pagedkv.KVPool: a "
        "standalone ",
        c.kind,
        "'s private pool may move its bytes, so a zero-copy view could "
        "outlive them (use update()/get() copies, or "
        "DynamicKVCache(pagedkv.KVPool(...)))"));
  }
  std::optional<KVView> view =
      ValueOrThrow(c.get()->Get(ToInt64(layer_idx, "layer_idx")));
  if (!view.has_value()) return py::none();
  return py::cast(MakePagedView(*view, c.pool));
}

// DynamicKVCache(layers=2, batch_size=4, seq_length=17, dtype=float16,
// pool=private); a StaticKVCache starts with max_cache_len.
std::string CacheRepr(PyKVCache& c) {
  BusyGuard guard(c.busy, c.kind);
  const KVCache& cache = *c.get();
  std::string out = absl::StrCat(c.kind, "(");
  if (std::optional<int64_t> max = cache.GetMaxCacheShape()) {
    absl::StrAppend(&out, "max_cache_len=", *max, ", ");
  }
  absl::StrAppend(&out, "layers=", cache.num_layer_slots());
  if (std::optional<int64_t> batch = cache.batch_size()) {
    absl::StrAppend(&out, ", batch_size=", *batch);
  }
  if (cache.num_layer_slots() > 0) {
    absl::StatusOr<int64_t> length = cache.GetSeqLength(0);
    if (length.ok()) absl::StrAppend(&out, ", seq_length=", *length);
  }
  if (std::optional<DType> dtype = cache.dtype()) {
    absl::StrAppend(&out, ", dtype=", std::string(DTypeName(*dtype)));
  }
  absl::StrAppend(&out, ", pool=", c.pool.is_none() ? "private" : "KVPool",
                  ")");
  return out;
}

template <typename Class>
void AddKVCacheMethods(Class& cls) {
  cls.def("update", &Update, py::arg("key"), py::arg("value"),
          py::arg("layer_idx"), py::arg("cache_position") = py::none(),
          py::kw_only(), py::arg("dtype") = py::none(),
          py::arg("return_kv") = true,
          R"doc(Writes key/value (batch, heads, seq, head_dim) into layer
layer_idx and returns (k_all, v_all): contiguous copies of the layer.
cache_position: None (append), an int, or a 0-D/1-D/2-D integer array.
dtype: "bfloat16" for uint16 bit-pattern arrays. return_kv=False skips the
copies and returns None (kernels then read paged_view in place).)doc")
      .def("get", &Get, py::arg("layer_idx"),
           "(k, v) copies of the layer, or None if it holds nothing.")
      .def("paged_view", &PagedViewOf, py::arg("layer_idx"),
           "Zero-copy PagedView of the layer (caches on a KVPool only).")
      .def(
          "__len__",
          [](PyKVCache& c) {
            BusyGuard guard(c.busy, c.kind);
            return c.get()->num_layer_slots();
          },
          "Number of layer slots (layers updated so far, and any below them).")
      .def("__getitem__", &GetItem, py::arg("index"),
           "(k, v) copies of layer slot index (negative counts from the "
           "end); (None, None) for an empty slot; IndexError past the end.")
      .def_property_readonly("batch_size",
                             [](PyKVCache& c) -> OptionalIntArg {
                               BusyGuard guard(c.busy, c.kind);
                               return OptionalInt(c.get()->batch_size());
                             },
                             "Rows of the batch (int), or None before the "
                             "first update.")
      .def_property_readonly("dtype",
                             [](PyKVCache& c) -> OptionalStrArg {
                               BusyGuard guard(c.busy, c.kind);
                               std::optional<DType> d = c.get()->dtype();
                               if (!d.has_value()) return py::none();
                               return py::str(std::string(DTypeName(*d)));
                             },
                             "Element type of the cached K/V (str), or None "
                             "before the first update.")
      .def_property_readonly(
          "pool", [](PyKVCache& c) -> OptionalPool { return c.pool; },
          "The KVPool the cache draws from, or None for a private pool.")
      .def(
          "stats",
          [](PyKVCache& c) {
            BusyGuard guard(c.busy, c.kind);
            return StatsDict(c.get()->stats());
          },
          "dict of counters: blocks_in_use, blocks_shared, blocks_reserved, "
          "reservation_capacity, cow_copies, cow_bytes, bytes_written, "
          "bytes_zero_filled, reservation_shortfalls, remap_bytes_copied.")
      .def("__repr__", &CacheRepr,
           "Kind(layers=..., batch_size=..., seq_length=..., dtype=..., "
           "pool=...) of the cache now.");
  AddCacheMethods<PyKVCache>(cls);
}

}  // namespace

void RegisterCaches(py::module_& m) {
  py::class_<PyKVCache> base(m, "KVCache", R"doc(
The base of DynamicKVCache and StaticKVCache (lucid nn.KVCache): update,
get, the batch operations, len(cache), cache[i] and iteration over (k, v).
)doc");
  AddKVCacheMethods(base);

  py::class_<PyDynamicKVCache, PyKVCache>(m, "DynamicKVCache", R"doc(
A KV cache that grows with the sequence (lucid nn.DynamicKVCache), on paged
memory. DynamicKVCache() makes a private pool at its first update;
DynamicKVCache(pool) draws blocks from a shared KVPool.

sliding_window (private pool only): per layer a window W of tokens, 0 for
full attention (HF DynamicSlidingWindowLayer). A window layer appends only;
update returns the kept past (at most W - 1 tokens) followed by the new
tokens, get the last W - 1 tokens, get_seq_length every token seen. Its
length is the layer count: later layers are ValueError.
)doc")
      .def(py::init(&MakeDynamic), py::arg("pool") = py::none(), py::kw_only(),
           py::arg("block_tokens") = py::none(),
           py::arg("max_private_pool_bytes") = py::none(),
           py::arg("sliding_window") = py::none(),
           "pool: a KVPool to draw blocks from, or None for a private pool "
           "made at the first update. block_tokens, max_private_pool_bytes "
           "(the private pool's cap; past it updates raise MemoryError) and "
           "sliding_window are private-pool options: with a pool they are "
           "ValueError.");

  py::class_<PyStaticKVCache, PyKVCache>(m, "StaticKVCache", R"doc(
A KV cache of fixed capacity max_cache_len per layer (lucid
nn.StaticKVCache). It reserves its blocks when its batch is fixed, so later
updates never fail for memory.
)doc")
      .def(py::init(&MakeStatic), py::arg("max_cache_len"),
           py::arg("num_layers"), py::arg("pool") = py::none(), py::kw_only(),
           py::arg("block_tokens") = py::none(),
           py::arg("max_private_pool_bytes") = py::none(),
           "max_cache_len positions per layer for num_layers layers, on a "
           "KVPool or a private pool (block_tokens and "
           "max_private_pool_bytes only for a private one).");

  py::class_<PyEncoderDecoderCache> edc(m, kEdc, R"doc(
Self-attention and cross-attention caches routed by is_cross_attention
(lucid nn.EncoderDecoderCache). Batch operations and reset apply to both
halves atomically; crop to the self-attention half only.
)doc");
  edc.def(py::init(&MakeEncoderDecoder),
          py::arg("self_attention_cache") = py::none(),
          py::arg("cross_attention_cache") = py::none(),
          "Adopts two DynamicKVCache / StaticKVCache halves (None: a new "
          "DynamicKVCache); each cache can be adopted once.")
      .def(
          "update",
          [](PyEncoderDecoderCache& c, ArrayArg key, ArrayArg value,
             IntArg layer_idx, PositionArg cache_position,
             bool is_cross_attention, DTypeArg dtype,
             bool return_kv) -> OptionalKVPair {
            BusyGuard guard(c.pair->busy, kEdc);
            const std::optional<DType> declared = ParseDTypeArg(dtype);
            const KVInput k = ToKVInput(key, "key", declared);
            const KVInput v = ToKVInput(value, "value", declared);
            const int64_t layer = ToInt64(layer_idx, "layer_idx");
            const CachePosition position = ToCachePosition(cache_position);
            absl::StatusOr<KVView> view;
            {
              py::gil_scoped_release release;
              view = c.pair->cache->Update(k.view, v.view, layer, position,
                                           AttentionArg(is_cross_attention));
            }
            ThrowIfError(view.status());
            if (!return_kv) return py::none();
            return GatherPair(*view);
          },
          py::arg("key"), py::arg("value"), py::arg("layer_idx"),
          py::arg("cache_position") = py::none(), py::kw_only(),
          py::arg("is_cross_attention") = false, py::arg("dtype") = py::none(),
          py::arg("return_kv") = true,
          "KVCache.update on the self-attention half, or the "
          "cross-attention half with is_cross_attention=True.")
      .def(
          "get",
          [](PyEncoderDecoderCache& c, IntArg layer_idx,
             bool is_cross_attention) -> OptionalKVPair {
            BusyGuard guard(c.pair->busy, kEdc);
            return OptionalPair(ValueOrThrow(
                c.pair->cache->Get(ToInt64(layer_idx, "layer_idx"),
                                   AttentionArg(is_cross_attention))));
          },
          py::arg("layer_idx"), py::kw_only(),
          py::arg("is_cross_attention") = false,
          "(k, v) copies of the layer of the chosen half, or None if it "
          "holds nothing.")
      .def(
          "get_seq_length",
          [](PyEncoderDecoderCache& c, IntArg layer_idx,
             bool is_cross_attention) {
            BusyGuard guard(c.pair->busy, kEdc);
            return ValueOrThrow(
                c.pair->cache->GetSeqLength(ToInt64(layer_idx, "layer_idx"),
                                            AttentionArg(is_cross_attention)));
          },
          py::arg("layer_idx") = 0, py::kw_only(),
          py::arg("is_cross_attention") = false,
          "Length of the layer of the chosen half (0 if never updated).")
      .def(
          "__len__",
          [](PyEncoderDecoderCache& c) {
            BusyGuard guard(c.pair->busy, kEdc);
            return c.pair->cache->self_attention_cache().num_layer_slots();
          },
          "Layer slots of the self-attention half.")
      .def("__getitem__",
           [](PyEncoderDecoderCache& c, IntArg index) {
             py::tuple self_kv = GetItem(c.self_half.cast<PyKVCache&>(), index);
             py::tuple cross_kv;
             PyKVCache& cross = c.cross_half.cast<PyKVCache&>();
             const int64_t i = ToInt64(index, "index");
             const int64_t n = cross.get()->num_layer_slots();
             const int64_t j = i < 0 ? i + c.pair->cache->self_attention_cache()
                                               .num_layer_slots()
                                     : i;
             if (j >= 0 && j < n) {
               cross_kv = GetItem(cross, py::int_(j));
             } else {
               cross_kv = py::make_tuple(py::none(), py::none());
             }
             return py::make_tuple(self_kv[0], self_kv[1], cross_kv[0],
                                   cross_kv[1]);
           },
           py::arg("index"),
           "(self_k, self_v, cross_k, cross_v) of layer slot index (None "
           "for an empty slot).")
      .def_property_readonly(
          "is_updated",
          [](PyEncoderDecoderCache& c) {
            BusyGuard guard(c.pair->busy, kEdc);
            py::dict d;
            for (int64_t layer : c.pair->cache->updated_layers()) {
              d[py::int_(layer)] = true;
            }
            return d;
          },
          "dict {layer: True} of the cross-attention layers written (HF's "
          "is_updated).")
      .def_readonly("self_attention_cache", &PyEncoderDecoderCache::self_half,
                    "The self-attention half (a KVCache, still usable).")
      .def_readonly("cross_attention_cache",
                    &PyEncoderDecoderCache::cross_half,
                    "The cross-attention half (a KVCache, still usable).")
      .def(
          "__repr__",
          [](PyEncoderDecoderCache& c) {
            return absl::StrCat(
                kEdc, "(self_attention_cache=",
                CacheRepr(c.self_half.cast<PyKVCache&>()),
                ", cross_attention_cache=",
                CacheRepr(c.cross_half.cast<PyKVCache&>()), ")");
          },
          "EncoderDecoderCache(self_attention_cache=..., "
          "cross_attention_cache=...)");
  AddCacheMethods<PyEncoderDecoderCache>(edc);
}

}  // namespace pagedkv::python
