#include "tools/kv_replay/scenario_runner.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cache/cache.h"
#include "cache/cache_position.h"
#include "cache/dynamic_kv_cache.h"
#include "cache/encoder_decoder_cache.h"
#include "cache/kv_view.h"
#include "cache/static_kv_cache.h"
#include "nlohmann/json.hpp"
#include "tensor/dtype.h"
#include "tensor/factories.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tools/kv_replay/json_fields.h"
#include "tools/kv_replay/summary.h"

namespace pagedkv::kv_replay {
namespace {

using ::nlohmann::json;

constexpr char kDynamic[] = "DynamicKVCache";
constexpr char kStatic[] = "StaticKVCache";
constexpr char kEncoderDecoder[] = "EncoderDecoderCache";

// The recorded outcome fields; everything else on an op is an argument.
bool IsOutcomeField(const std::string& key) {
  return key == "result" || key == "error" || key == "state";
}

// An input the C++ API cannot express (FORMAT.md 10.5): recorded as the op's
// INVALID_ARGUMENT without calling the cache.
absl::Status Inexpressible(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("kv_replay: ", what));
}

// Returns the required integer field `key` of `op` (a malformed trace
// otherwise).
absl::StatusOr<int64_t> RequiredInt(const json& op, const std::string& key) {
  const json* value = FindField(op, key);
  if (value == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing field '", key, "'"));
  }
  return ToInt64(*value, key);
}

// Returns the optional integer field `key`, or `fallback` when absent.
absl::StatusOr<int64_t> OptionalInt(const json& op, const std::string& key,
                                    int64_t fallback) {
  const json* value = FindField(op, key);
  if (value == nullptr) return fallback;
  return ToInt64(*value, key);
}

// Returns the optional `cross` flag (false when absent).
absl::StatusOr<bool> CrossFlag(const json& op) {
  const json* value = FindField(op, "cross");
  if (value == nullptr || value->is_null()) return false;
  if (!value->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cross: expected a bool, got ", Render(*value)));
  }
  return value->get<bool>();
}

// Returns the dims of a `shape`/`v_shape` list (a malformed trace unless it
// is a list of integers).
absl::StatusOr<std::vector<int64_t>> ParseDims(const json& value,
                                               const std::string& what) {
  if (!value.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a list, got ", Render(value)));
  }
  std::vector<int64_t> dims;
  for (const json& dim : value) {
    PKV_ASSIGN_OR_RETURN(const int64_t d, ToInt64(dim, what));
    dims.push_back(d);
  }
  return dims;
}

// Returns the CachePosition of FORMAT.md 7.3, or an Inexpressible status for
// float-typed, 3-D, ragged or otherwise unrepresentable positions. `pos` is
// nullptr when the field is absent (append mode).
absl::StatusOr<CachePosition> ParsePosition(const json* pos,
                                            const json* pos_dtype) {
  if (pos_dtype != nullptr) {
    if (!pos_dtype->is_string()) {
      return Inexpressible(absl::StrCat("pos_dtype ", Render(*pos_dtype)));
    }
    const std::string name = pos_dtype->get<std::string>();
    if (name != "int32" && name != "int64") {
      return Inexpressible(
          absl::StrCat("cache_position of dtype ", name, " (integers only)"));
    }
  }
  if (pos == nullptr || pos->is_null()) return CachePosition::None();
  auto element = [](const json& x) -> absl::StatusOr<int64_t> {
    if (!x.is_number_integer()) {
      return Inexpressible(
          absl::StrCat("non-integer cache_position element ", Render(x)));
    }
    absl::StatusOr<int64_t> v = ToInt64(x, "pos");
    if (!v.ok()) return Inexpressible(std::string(v.status().message()));
    return v;
  };
  if (!pos->is_array()) {
    PKV_ASSIGN_OR_RETURN(const int64_t p, element(*pos));
    return CachePosition::Scalar(p);
  }
  bool any_array = false;
  bool any_scalar = false;
  for (const json& x : *pos) (x.is_array() ? any_array : any_scalar) = true;
  if (any_array && any_scalar) {
    return Inexpressible("cache_position mixes lists and numbers");
  }
  if (!any_array) {
    std::vector<int64_t> values;
    for (const json& x : *pos) {
      PKV_ASSIGN_OR_RETURN(const int64_t p, element(x));
      values.push_back(p);
    }
    return CachePosition::Vector(std::move(values));
  }
  const int64_t rows = static_cast<int64_t>(pos->size());
  const int64_t cols = static_cast<int64_t>((*pos)[0].size());
  std::vector<int64_t> values;
  for (const json& row : *pos) {
    if (static_cast<int64_t>(row.size()) != cols) {
      return Inexpressible(
          absl::StrCat("ragged 2-D cache_position ", Render(*pos)));
    }
    for (const json& x : row) {
      if (x.is_array()) {
        return Inexpressible(
            absl::StrCat("cache_position of rank > 2 ", Render(*pos)));
      }
      PKV_ASSIGN_OR_RETURN(const int64_t p, element(x));
      values.push_back(p);
    }
  }
  return CachePosition::Matrix(rows, cols, std::move(values));
}

// Returns the 1-D integer index list of reorder_cache/batch_select_indices,
// or an Inexpressible status for float or boolean indices and 2-D lists.
absl::StatusOr<std::vector<int64_t>> ParseIndices(const json& op) {
  const json* idx = FindField(op, "idx");
  if (idx == nullptr) return absl::InvalidArgumentError("missing field 'idx'");
  const json* idx_dtype = FindField(op, "idx_dtype");
  if (idx_dtype != nullptr) {
    if (!idx_dtype->is_string()) {
      return Inexpressible(absl::StrCat("idx_dtype ", Render(*idx_dtype)));
    }
    const std::string name = idx_dtype->get<std::string>();
    if (name != "int32" && name != "int64") {
      return Inexpressible(
          absl::StrCat("index tensor of dtype ", name, " (1-D integers only)"));
    }
  }
  if (!idx->is_array()) {
    return Inexpressible(absl::StrCat("0-D index ", Render(*idx)));
  }
  std::vector<int64_t> indices;
  for (const json& x : *idx) {
    if (x.is_array()) {
      return Inexpressible(absl::StrCat("2-D index ", Render(*idx)));
    }
    if (!x.is_number_integer()) {
      return Inexpressible(absl::StrCat("non-integer index ", Render(x)));
    }
    absl::StatusOr<int64_t> v = ToInt64(x, "idx");
    if (!v.ok()) return Inexpressible(std::string(v.status().message()));
    indices.push_back(*v);
  }
  return indices;
}

// Returns the JSON summary pair {"k", "v"} of a view's contents.
absl::StatusOr<json> KVToJson(const KVView& view) {
  PKV_ASSIGN_OR_RETURN(KVTensors tensors, view.Gather());
  json j = json::object();
  j["k"] = SummaryToJson(Summarize(tensors.key.view()));
  j["v"] = SummaryToJson(Summarize(tensors.value.view()));
  return j;
}

json OptionalToJson(std::optional<int64_t> value) {
  return value.has_value() ? json(*value) : json(nullptr);
}

// Returns a {"type", "message"} error object.
json ErrorToJson(const absl::Status& status) {
  json j = json::object();
  j["type"] = absl::StatusCodeToString(status.code());
  j["message"] = std::string(status.message());
  return j;
}

// Returns the FORMAT.md section 8 state of one KV cache, read through its
// public API: one entry per layer slot.
json KVStateToJson(const KVCache& cache) {
  json layers = json::array();
  for (int64_t l = 0; l < cache.num_layer_slots(); ++l) {
    json layer = json::object();
    // A layer is present (allocated) when Get serves a view of it.
    absl::StatusOr<std::optional<KVView>> view = cache.Get(l);
    const bool present = view.ok() && view->has_value();
    layer["allocated"] = present;
    absl::StatusOr<int64_t> seq_len = cache.GetSeqLength(l);
    layer["seq_len"] = seq_len.ok() ? json(*seq_len) : json(nullptr);
    layer["storage_shape"] = nullptr;
    if (present) {
      json visible = nullptr;
      absl::StatusOr<json> kv = KVToJson(**view);
      if (kv.ok()) visible = *std::move(kv);
      layer["visible"] = std::move(visible);
    }
    layers.push_back(std::move(layer));
  }
  json state = json::object();
  state["cls"] = cache.GetMaxCacheShape().has_value() ? kStatic : kDynamic;
  state["num_slots"] = cache.num_layer_slots();
  state["layers"] = std::move(layers);
  state["max_cache_shape"] = OptionalToJson(cache.GetMaxCacheShape());
  return state;
}

// Builds a standalone Dynamic or Static cache from a ctor object.
absl::StatusOr<std::unique_ptr<KVCache>> MakeKVCache(
    const json& ctor, const ReplayOptions& replay) {
  const json* cls_field = FindField(ctor, "cls");
  if (cls_field == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ctor without cls: ", Render(ctor)));
  }
  PKV_ASSIGN_OR_RETURN(const std::string cls, ToString(*cls_field, "cls"));
  if (cls == kDynamic) {
    PKV_ASSIGN_OR_RETURN(std::unique_ptr<DynamicKVCache> cache,
                         DynamicKVCache::Create({.storage = replay.storage}));
    return std::unique_ptr<KVCache>(std::move(cache));
  }
  if (cls == kStatic) {
    StaticKVCache::Options options;
    options.storage = replay.storage;
    PKV_ASSIGN_OR_RETURN(options.max_cache_len,
                         RequiredInt(ctor, "max_cache_len"));
    PKV_ASSIGN_OR_RETURN(options.num_layers, RequiredInt(ctor, "num_layers"));
    PKV_ASSIGN_OR_RETURN(std::unique_ptr<StaticKVCache> cache,
                         StaticKVCache::Create(options));
    return std::unique_ptr<KVCache>(std::move(cache));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("ctor: unknown or nested cls '", cls, "'"));
}

// The cache a scenario drives: one standalone KV cache or an
// EncoderDecoderCache. Exactly one of kv_ and edc_ is set.
class CacheUnderTest {
 public:
  static absl::StatusOr<CacheUnderTest> Create(const json& ctor,
                                               const ReplayOptions& replay) {
    CacheUnderTest cut;
    const json* cls_field = FindField(ctor, "cls");
    if (cls_field != nullptr && cls_field->is_string() &&
        cls_field->get<std::string>() == kEncoderDecoder) {
      std::unique_ptr<KVCache> halves[2];
      const char* names[2] = {"self", "cross"};
      for (int i = 0; i < 2; ++i) {
        const json* half = FindField(ctor, names[i]);
        if (half == nullptr || half->is_null()) {
          if (replay.storage == KVStorage::kSame) continue;  // New dynamic.
          PKV_ASSIGN_OR_RETURN(halves[i],
                               MakeKVCache(json{{"cls", kDynamic}}, replay));
          continue;
        }
        PKV_ASSIGN_OR_RETURN(halves[i], MakeKVCache(*half, replay));
      }
      cut.edc_ = std::make_unique<EncoderDecoderCache>(std::move(halves[0]),
                                                       std::move(halves[1]));
      return cut;
    }
    PKV_ASSIGN_OR_RETURN(cut.kv_, MakeKVCache(ctor, replay));
    return cut;
  }

  Cache& cache() {
    if (edc_ != nullptr) return *edc_;
    return *kv_;
  }

  absl::StatusOr<KVView> Update(ConstTensorView key, ConstTensorView value,
                                int64_t layer, const CachePosition& position,
                                bool cross) {
    if (edc_ != nullptr) {
      return edc_->Update(key, value, layer, position, ToAttention(cross));
    }
    PKV_RETURN_IF_ERROR(CheckNotCross(cross));
    return kv_->Update(key, value, layer, position);
  }

  absl::StatusOr<std::optional<KVView>> Get(int64_t layer, bool cross) const {
    if (edc_ != nullptr) return edc_->Get(layer, ToAttention(cross));
    PKV_RETURN_IF_ERROR(CheckNotCross(cross));
    return kv_->Get(layer);
  }

  absl::StatusOr<int64_t> GetSeqLength(int64_t layer, bool cross) const {
    if (edc_ != nullptr) return edc_->GetSeqLength(layer, ToAttention(cross));
    PKV_RETURN_IF_ERROR(CheckNotCross(cross));
    return kv_->GetSeqLength(layer);
  }

  json State() const {
    if (edc_ == nullptr) return KVStateToJson(*kv_);
    json is_updated = json::object();
    for (const int64_t layer : edc_->updated_layers()) {
      is_updated[absl::StrCat(layer)] = true;
    }
    json state = json::object();
    state["cls"] = kEncoderDecoder;
    state["is_updated"] = std::move(is_updated);
    state["max_cache_shape"] = OptionalToJson(edc_->GetMaxCacheShape());
    state["self"] = KVStateToJson(edc_->self_attention_cache());
    state["cross"] = KVStateToJson(edc_->cross_attention_cache());
    return state;
  }

 private:
  CacheUnderTest() = default;

  static Attention ToAttention(bool cross) {
    return cross ? Attention::kCross : Attention::kSelf;
  }
  static absl::Status CheckNotCross(bool cross) {
    if (!cross) return absl::OkStatus();
    return Inexpressible("cross=true on a cache that is not encoder-decoder");
  }

  std::unique_ptr<KVCache> kv_;
  std::unique_ptr<EncoderDecoderCache> edc_;
};

// What one op did: `status` is the op's own outcome (recorded as `error`),
// `result` its return value when it succeeded.
struct OpOutcome {
  absl::Status status;
  json result = nullptr;
};

// Runs an update op. The outer status is a malformed-trace error.
absl::StatusOr<OpOutcome> RunUpdate(CacheUnderTest& cut, const json& op) {
  PKV_ASSIGN_OR_RETURN(const int64_t layer, RequiredInt(op, "layer"));
  PKV_ASSIGN_OR_RETURN(const int64_t base, RequiredInt(op, "base"));
  PKV_ASSIGN_OR_RETURN(const bool cross, CrossFlag(op));
  const json* shape_field = FindField(op, "shape");
  if (shape_field == nullptr) {
    return absl::InvalidArgumentError("missing field 'shape'");
  }
  PKV_ASSIGN_OR_RETURN(const std::vector<int64_t> key_dims,
                       ParseDims(*shape_field, "shape"));
  std::vector<int64_t> value_dims = key_dims;
  if (const json* v_shape = FindField(op, "v_shape"); v_shape != nullptr) {
    PKV_ASSIGN_OR_RETURN(value_dims, ParseDims(*v_shape, "v_shape"));
  }

  OpOutcome outcome;
  DType dtype = DType::kFloat32;
  if (const json* kv_dtype = FindField(op, "kv_dtype"); kv_dtype != nullptr) {
    PKV_ASSIGN_OR_RETURN(const std::string name,
                         ToString(*kv_dtype, "kv_dtype"));
    const std::optional<DType> parsed = ParseDType(name);
    if (!parsed.has_value()) {
      outcome.status = Inexpressible(absl::StrCat("key/value dtype ", name));
      return outcome;
    }
    dtype = *parsed;
  }
  if (key_dims.size() != 4 || value_dims.size() != 4) {
    outcome.status = Inexpressible(
        absl::StrCat("key rank ", key_dims.size(), ", value rank ",
                     value_dims.size(), " (rank 4 only)"));
    return outcome;
  }
  absl::StatusOr<CachePosition> position =
      ParsePosition(FindField(op, "pos"), FindField(op, "pos_dtype"));
  if (!position.ok()) {
    outcome.status = position.status();
    return outcome;
  }
  absl::StatusOr<Shape> key_shape = Shape::Create(key_dims);
  absl::StatusOr<Shape> value_shape = Shape::Create(value_dims);
  if (!key_shape.ok() || !value_shape.ok()) {
    outcome.status = key_shape.ok() ? value_shape.status() : key_shape.status();
    return outcome;
  }
  absl::StatusOr<Tensor> key =
      FillPattern(dtype, *key_shape, base, PatternSign::kPositive);
  absl::StatusOr<Tensor> value =
      FillPattern(dtype, *value_shape, base, PatternSign::kNegative);
  if (!key.ok() || !value.ok()) {
    outcome.status = key.ok() ? value.status() : key.status();
    return outcome;
  }
  absl::StatusOr<KVView> view =
      cut.Update(key->view(), value->view(), layer, *position, cross);
  if (!view.ok()) {
    outcome.status = view.status();
    return outcome;
  }
  absl::StatusOr<json> kv = KVToJson(*view);
  if (!kv.ok()) {
    outcome.status = kv.status();
    return outcome;
  }
  outcome.result = *std::move(kv);
  return outcome;
}

// Runs one op of any kind. The outer status is a malformed-trace error.
absl::StatusOr<OpOutcome> RunOp(CacheUnderTest& cut, const std::string& name,
                                const json& op) {
  OpOutcome outcome;
  if (name == "update") return RunUpdate(cut, op);
  if (name == "get") {
    PKV_ASSIGN_OR_RETURN(const int64_t layer, RequiredInt(op, "layer"));
    PKV_ASSIGN_OR_RETURN(const bool cross, CrossFlag(op));
    absl::StatusOr<std::optional<KVView>> view = cut.Get(layer, cross);
    if (!view.ok()) {
      outcome.status = view.status();
    } else if (view->has_value()) {
      absl::StatusOr<json> kv = KVToJson(**view);
      if (kv.ok()) {
        outcome.result = *std::move(kv);
      } else {
        outcome.status = kv.status();
      }
    }
    return outcome;
  }
  if (name == "get_seq_length") {
    PKV_ASSIGN_OR_RETURN(const int64_t layer, OptionalInt(op, "layer", 0));
    PKV_ASSIGN_OR_RETURN(const bool cross, CrossFlag(op));
    absl::StatusOr<int64_t> length = cut.GetSeqLength(layer, cross);
    if (length.ok()) {
      outcome.result = *length;
    } else {
      outcome.status = length.status();
    }
    return outcome;
  }
  if (name == "reorder_cache" || name == "batch_select_indices") {
    absl::StatusOr<std::vector<int64_t>> indices = ParseIndices(op);
    if (!indices.ok()) {
      if (FindField(op, "idx") == nullptr) return indices.status();
      outcome.status = indices.status();
      return outcome;
    }
    outcome.status = name == "reorder_cache"
                         ? cut.cache().ReorderCache(*indices)
                         : cut.cache().BatchSelectIndices(*indices);
    return outcome;
  }
  if (name == "batch_repeat_interleave") {
    PKV_ASSIGN_OR_RETURN(const int64_t repeats, RequiredInt(op, "repeats"));
    outcome.status = cut.cache().BatchRepeatInterleave(repeats);
    return outcome;
  }
  if (name == "crop") {
    PKV_ASSIGN_OR_RETURN(const int64_t max_length,
                         RequiredInt(op, "max_length"));
    outcome.status = cut.cache().Crop(max_length);
    return outcome;
  }
  if (name == "reset") {
    cut.cache().Reset();
    return outcome;
  }
  if (name == "get_max_cache_shape") {
    outcome.result = OptionalToJson(cut.cache().GetMaxCacheShape());
    return outcome;
  }
  // A name outside FORMAT.md's ops is a malformed trace (a typo would
  // otherwise replay as a recorded error and pass a --check against
  // itself).
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown op '", name,
      "' (known: update, get, get_seq_length, get_max_cache_shape, crop, "
      "reset, reorder_cache, batch_repeat_interleave, "
      "batch_select_indices)"));
}

}  // namespace

absl::StatusOr<json> RunScenario(const json& scenario,
                                 const ReplayOptions& options) {
  if (!scenario.is_object()) {
    return absl::InvalidArgumentError("scenario is not an object");
  }
  const json* name = FindField(scenario, "name");
  const json* ctor = FindField(scenario, "ctor");
  const json* ops = FindField(scenario, "ops");
  if (name == nullptr || ctor == nullptr || ops == nullptr ||
      !ops->is_array()) {
    return absl::InvalidArgumentError(
        "scenario needs 'name', 'ctor' and an 'ops' list");
  }
  PKV_ASSIGN_OR_RETURN(CacheUnderTest cut,
                       CacheUnderTest::Create(*ctor, options));

  json out_ops = json::array();
  int64_t i = 0;
  for (const json& op : *ops) {
    const json* op_name = FindField(op, "op");
    if (op_name == nullptr || !op_name->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("op#", i, ": missing 'op' name"));
    }
    absl::StatusOr<OpOutcome> outcome =
        RunOp(cut, op_name->get<std::string>(), op);
    if (!outcome.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("op#", i, " (", op_name->get<std::string>(),
                       "): ", outcome.status().message()));
    }
    json out_op = json::object();
    for (auto it = op.begin(); it != op.end(); ++it) {
      if (!IsOutcomeField(it.key())) out_op[it.key()] = it.value();
    }
    out_op["i"] = i;
    if (outcome->status.ok()) {
      out_op["result"] = std::move(outcome->result);
      out_op["error"] = nullptr;
    } else {
      out_op["result"] = nullptr;
      out_op["error"] = ErrorToJson(outcome->status);
    }
    out_op["state"] = cut.State();
    out_ops.push_back(std::move(out_op));
    ++i;
  }

  json out = json::object();
  out["name"] = *name;
  if (const json* about = FindField(scenario, "about"); about != nullptr) {
    out["about"] = *about;
  }
  out["ctor"] = *ctor;
  out["ops"] = std::move(out_ops);
  return out;
}

absl::StatusOr<json> RunTrace(const json& trace, const ReplayOptions& options) {
  const json* scenarios = FindField(trace, "scenarios");
  if (scenarios == nullptr || !scenarios->is_array()) {
    return absl::InvalidArgumentError("trace has no 'scenarios' list");
  }
  json out_scenarios = json::array();
  for (const json& scenario : *scenarios) {
    absl::StatusOr<json> out = RunScenario(scenario, options);
    if (!out.ok()) {
      const json* name = FindField(scenario, "name");
      return absl::InvalidArgumentError(
          absl::StrCat("scenario ", name == nullptr ? "?" : Render(*name), ": ",
                       out.status().message()));
    }
    out_scenarios.push_back(*std::move(out));
  }
  json meta = json::object();
  meta["generator"] = "pagedkv tools/kv_replay";
  meta["profile"] = "pagedkv";
  if (options.storage != KVStorage::kSame) {
    meta["storage"] = std::string(KVStorageName(options.storage));
  }
  json out = json::object();
  out["meta"] = std::move(meta);
  out["scenarios"] = std::move(out_scenarios);
  return out;
}

}  // namespace pagedkv::kv_replay
