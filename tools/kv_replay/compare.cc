#include "tools/kv_replay/compare.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "tools/kv_replay/json_fields.h"

namespace pagedkv::kv_replay {
namespace {

using ::nlohmann::json;

// A null json to stand in for missing fields.
const json& Null() {
  static const json* const kNull = new json(nullptr);
  return *kNull;
}

const json& Field(const json& object, const std::string& key) {
  const json* value = FindField(object, key);
  return value == nullptr ? Null() : *value;
}

std::string Lower(const std::string& text) {
  std::string lower;
  for (const char c : text) {
    lower.push_back(
        static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return lower;
}

// Collects "path: expected X, got Y" differences of one op.
class Differences {
 public:
  void Add(const std::string& path, const json& expected, const json& actual) {
    items_.push_back(absl::StrCat(path, ": expected ", Render(expected),
                                  ", got ", Render(actual)));
  }
  void AddText(std::string text) { items_.push_back(std::move(text)); }
  bool empty() const { return items_.empty(); }
  std::string Join() const { return absl::StrJoin(items_, "; "); }

 private:
  std::vector<std::string> items_;
};

// Compares two values as JSON (numbers compare by value across signedness).
void CompareValue(const std::string& path, const json& expected,
                  const json& actual, Differences* diffs) {
  if (expected != actual) diffs->Add(path, expected, actual);
}

// The number of elements of a summary's shape (0 if it is not a list of
// non-negative integers).
double NumElements(const json& shape) {
  if (!shape.is_array()) return 0;
  double n = 1;
  for (const json& d : shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) return 0;
    n *= static_cast<double>(d.get<int64_t>());
  }
  return n;
}

// The sum of the wsum weights ((i mod 1009) + 1) over n elements.
double WeightSum(double n) {
  const double cycles = std::floor(n / 1009);
  const double rest = n - cycles * 1009;
  return cycles * (1009.0 * 1010 / 2) + rest * (rest + 1) / 2;
}

// Compares `key` ("sum" or "wsum") within the tolerance (compare.h).
void CompareWithin(const std::string& path, const json& expected,
                   const json& actual, double tolerance, double slack,
                   Differences* diffs) {
  if (!expected.is_number() || !actual.is_number()) {
    CompareValue(path, expected, actual, diffs);
    return;
  }
  const double e = expected.get<double>();
  const double a = actual.get<double>();
  if (std::fabs(a - e) > tolerance * std::fabs(e) + slack) {
    diffs->AddText(absl::StrCat(path, ": expected ", Render(expected),
                                " within ", tolerance, " (+", slack, "), got ",
                                Render(actual)));
  }
}

// Compares the five compared fields of two SUMMARY objects.
void CompareSummary(const std::string& path, const json& expected,
                    const json& actual, const CompareOptions& options,
                    Differences* diffs) {
  if (!actual.is_object()) {
    diffs->Add(path, "a summary", actual);
    return;
  }
  if (options.tolerance > 0) {
    CompareValue(path + ".shape", Field(expected, "shape"),
                 Field(actual, "shape"), diffs);
    const double n = NumElements(Field(expected, "shape"));
    CompareWithin(path + ".sum", Field(expected, "sum"), Field(actual, "sum"),
                  options.tolerance, n, diffs);
    CompareWithin(path + ".wsum", Field(expected, "wsum"),
                  Field(actual, "wsum"), options.tolerance, WeightSum(n),
                  diffs);
  } else {
    for (const char* key : {"shape", "sum", "wsum"}) {
      CompareValue(absl::StrCat(path, ".", key), Field(expected, key),
                   Field(actual, key), diffs);
    }
  }
  const json& e_fnv = Field(expected, "fnv1a64");
  const json& a_fnv = Field(actual, "fnv1a64");
  if (options.tolerance > 0) {
    // Not bit-exact within a tolerance: the hash is not compared.
  } else if (e_fnv.is_string() && a_fnv.is_string()) {
    if (Lower(e_fnv.get<std::string>()) != Lower(a_fnv.get<std::string>())) {
      diffs->Add(path + ".fnv1a64", e_fnv, a_fnv);
    }
  } else {
    CompareValue(path + ".fnv1a64", e_fnv, a_fnv, diffs);
  }
  const json& e_dtype = Field(expected, "dtype");
  const json& a_dtype = Field(actual, "dtype");
  if (e_dtype.is_string() && a_dtype.is_string()) {
    if (NormalizeDTypeName(e_dtype.get<std::string>()) !=
        NormalizeDTypeName(a_dtype.get<std::string>())) {
      diffs->Add(path + ".dtype", e_dtype, a_dtype);
    }
  } else {
    CompareValue(path + ".dtype", e_dtype, a_dtype, diffs);
  }
}

// Compares a {"k", "v"} pair or null.
void CompareKV(const std::string& path, const json& expected,
               const json& actual, const CompareOptions& options,
               Differences* diffs) {
  if (expected.is_null() || actual.is_null()) {
    if (!(expected.is_null() && actual.is_null())) {
      diffs->Add(path,
                 expected.is_null() ? json(nullptr) : json("a (K, V) pair"),
                 actual.is_null() ? json(nullptr) : json("a (K, V) pair"));
    }
    return;
  }
  CompareSummary(path + ".k", Field(expected, "k"), Field(actual, "k"), options,
                 diffs);
  CompareSummary(path + ".v", Field(expected, "v"), Field(actual, "v"), options,
                 diffs);
}

// Returns true when a layer entry is present (allocated).
bool Allocated(const json& layer) {
  const json& allocated = Field(layer, "allocated");
  return allocated.is_boolean() && allocated.get<bool>();
}

// Returns a layer's seq_len, 0 for a missing entry.
json SeqLen(const json* layer) {
  if (layer == nullptr) return json(0);
  return Field(*layer, "seq_len");
}

// Compares the state of one Dynamic/Static cache.
void CompareKVState(const std::string& path, const json& expected,
                    const json& actual, const CompareOptions& options,
                    Differences* diffs) {
  const json& e_layers = Field(expected, "layers");
  const json& a_layers = Field(actual, "layers");
  if (!a_layers.is_array()) {
    diffs->Add(path + ".layers", "a list", a_layers);
    return;
  }
  const size_t e_size = e_layers.is_array() ? e_layers.size() : 0;
  const size_t n = std::max(e_size, a_layers.size());
  for (size_t l = 0; l < n; ++l) {
    const json* e = l < e_size ? &e_layers[l] : nullptr;
    const json* a = l < a_layers.size() ? &a_layers[l] : nullptr;
    const std::string lpath = absl::StrCat(path, ".layers[", l, "]");
    const bool e_alloc = e != nullptr && Allocated(*e);
    const bool a_alloc = a != nullptr && Allocated(*a);
    if (e_alloc != a_alloc) diffs->Add(lpath + ".allocated", e_alloc, a_alloc);
    CompareValue(lpath + ".seq_len", SeqLen(e), SeqLen(a), diffs);
    if (e_alloc && a_alloc) {
      CompareKV(lpath + ".visible", Field(*e, "visible"), Field(*a, "visible"),
                options, diffs);
    }
  }
}

// Returns the layer keys whose is_updated value is true.
std::set<std::string> UpdatedLayers(const json& state) {
  std::set<std::string> layers;
  const json& is_updated = Field(state, "is_updated");
  if (!is_updated.is_object()) return layers;
  for (auto it = is_updated.begin(); it != is_updated.end(); ++it) {
    if (it.value().is_boolean() && it.value().get<bool>()) {
      layers.insert(it.key());
    }
  }
  return layers;
}

void CompareState(const json& expected, const json& actual,
                  const CompareOptions& options, Differences* diffs) {
  if (!actual.is_object()) {
    diffs->Add("state", "an object", actual);
    return;
  }
  if (FindField(expected, "self") == nullptr) {
    CompareKVState("state", expected, actual, options, diffs);
    return;
  }
  CompareKVState("state.self", Field(expected, "self"), Field(actual, "self"),
                 options, diffs);
  CompareKVState("state.cross", Field(expected, "cross"),
                 Field(actual, "cross"), options, diffs);
  const std::set<std::string> e_updated = UpdatedLayers(expected);
  const std::set<std::string> a_updated = UpdatedLayers(actual);
  if (e_updated != a_updated) {
    diffs->AddText(absl::StrCat("state.is_updated: expected {",
                                absl::StrJoin(e_updated, ","), "}, got {",
                                absl::StrJoin(a_updated, ","), "}"));
  }
}

// Returns a short description of an op's error field.
json ErrorSummary(const json& error) {
  if (error.is_null()) return json("no error");
  const json& type = Field(error, "type");
  const json& message = Field(error, "message");
  return json(absl::StrCat(
      type.is_string() ? type.get<std::string>() : "error",
      message.is_string() ? absl::StrCat(" (", message.get<std::string>(), ")")
                          : ""));
}

void CompareOp(const json& expected, const json& actual,
               const CompareOptions& options, Differences* diffs) {
  const json& e_error = Field(expected, "error");
  const json& a_error = Field(actual, "error");
  const bool both_ok = e_error.is_null() && a_error.is_null();
  if (e_error.is_null() != a_error.is_null()) {
    diffs->Add("error", ErrorSummary(e_error), ErrorSummary(a_error));
  }
  if (both_ok) {
    const json& op = Field(expected, "op");
    const bool is_kv = op.is_string() && (op.get<std::string>() == "update" ||
                                          op.get<std::string>() == "get");
    if (is_kv) {
      CompareKV("result", Field(expected, "result"), Field(actual, "result"),
                options, diffs);
    } else {
      CompareValue("result", Field(expected, "result"), Field(actual, "result"),
                   diffs);
    }
  }
  CompareState(Field(expected, "state"), Field(actual, "state"), options,
               diffs);
}

std::string NameOf(const json& scenario) {
  const json& name = Field(scenario, "name");
  return name.is_string() ? name.get<std::string>() : Render(name);
}

}  // namespace

std::string NormalizeDTypeName(const std::string& name) {
  const std::string lower = Lower(name);
  if (lower == "f32" || lower == "fp32" || lower == "kfloat32" ||
      lower == "float" || lower == "torch.float32") {
    return "float32";
  }
  if (lower == "f16" || lower == "fp16" || lower == "kfloat16" ||
      lower == "half" || lower == "torch.float16") {
    return "float16";
  }
  if (lower == "bf16" || lower == "kbfloat16" || lower == "torch.bfloat16") {
    return "bfloat16";
  }
  return lower;
}

ScenarioComparison CompareScenario(const json& expected, const json* actual,
                                   const CompareOptions& options) {
  ScenarioComparison cmp;
  cmp.name = NameOf(expected);
  if (actual == nullptr) {
    cmp.passed = false;
    cmp.mismatch_lines.push_back(
        absl::StrCat(cmp.name, ": missing from the output"));
    return cmp;
  }
  const json& e_ops = Field(expected, "ops");
  const json& a_ops = Field(*actual, "ops");
  const size_t e_size = e_ops.is_array() ? e_ops.size() : 0;
  const size_t a_size = a_ops.is_array() ? a_ops.size() : 0;
  for (size_t i = 0; i < e_size; ++i) {
    const json& e_op = e_ops[i];
    const json& op_name = Field(e_op, "op");
    const std::string prefix = absl::StrCat(
        cmp.name, " op#", i, " (",
        op_name.is_string() ? op_name.get<std::string>() : "?", "): ");
    if (i >= a_size) {
      cmp.passed = false;
      cmp.mismatch_lines.push_back(absl::StrCat(
          prefix, "missing: the output stops after ", a_size, " ops"));
      break;
    }
    Differences diffs;
    CompareOp(e_op, a_ops[i], options, &diffs);
    if (!diffs.empty()) {
      cmp.passed = false;
      cmp.mismatch_lines.push_back(absl::StrCat(prefix, diffs.Join()));
    }
  }
  return cmp;
}

TraceComparison CompareTraces(const json& expected, const json& actual,
                              const CompareOptions& options) {
  TraceComparison result;
  const json& e_scenarios = Field(expected, "scenarios");
  const json& a_scenarios = Field(actual, "scenarios");
  if (!e_scenarios.is_array()) return result;
  for (const json& e : e_scenarios) {
    const std::string name = NameOf(e);
    const json* match = nullptr;
    if (a_scenarios.is_array()) {
      for (const json& a : a_scenarios) {
        if (NameOf(a) == name) {
          match = &a;
          break;
        }
      }
    }
    ScenarioComparison cmp = CompareScenario(e, match, options);
    (cmp.passed ? result.num_passed : result.num_failed) += 1;
    result.mismatch_lines.insert(result.mismatch_lines.end(),
                                 cmp.mismatch_lines.begin(),
                                 cmp.mismatch_lines.end());
    result.scenarios.push_back(std::move(cmp));
  }
  return result;
}

}  // namespace pagedkv::kv_replay
