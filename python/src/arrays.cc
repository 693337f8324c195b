#include "python/src/arrays.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "cache/cache_position.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "python/src/status.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

std::string TypeName(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__"));
}

std::string DTypeString(const py::dtype& dtype) {
  return py::str(static_cast<py::handle>(dtype));
}

bool IsNumpyBool(py::handle obj) {
  static py::handle bool_type =
      py::object(py::module_::import("numpy").attr("bool_")).release();
  return py::isinstance(obj, bool_type);
}

bool IsNumpyInteger(py::handle obj) {
  static py::handle integer_type =
      py::object(py::module_::import("numpy").attr("integer")).release();
  return py::isinstance(obj, integer_type);
}

// Returns obj as a numpy array: itself, or np.asarray of a list, tuple or
// range (an empty one becomes int64). TypeError for other types, ValueError
// when numpy cannot make a regular array (ragged lists).
py::array AsIntegerArray(py::handle obj, const char* name) {
  if (py::isinstance<py::array>(obj)) {
    return py::reinterpret_borrow<py::array>(obj);
  }
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj) &&
      !py::isinstance(obj, py::module_::import("builtins").attr("range"))) {
    throw py::type_error(
        absl::StrCat(name, ": expected a list or an integer numpy array, got ",
                     TypeName(obj)));
  }
  py::array array;
  try {
    array = py::module_::import("numpy").attr("asarray")(obj);
  } catch (py::error_already_set& e) {
    throw py::value_error(
        absl::StrCat(name, ": not a regular array (", e.what(), ")"));
  }
  if (array.size() == 0) {
    array = py::array(
        py::dtype::of<int64_t>(),
        std::vector<py::ssize_t>(array.shape(), array.shape() + array.ndim()));
  }
  return array;
}

// Returns the elements of an integer array as int64, C order. TypeError for
// a non-integer dtype (bool included), ValueError for uint64 values past
// int64.
std::vector<int64_t> IntegerValues(const py::array& array, const char* name) {
  const py::dtype dtype = array.dtype();
  const char kind = dtype.kind();
  if (kind != 'i' && kind != 'u') {
    throw py::type_error(absl::StrCat(name, ": expected integers, got dtype ",
                                      DTypeString(dtype)));
  }
  py::module_ np = py::module_::import("numpy");
  if (kind == 'u' && dtype.itemsize() == 8 && array.size() > 0 &&
      py::int_(np.attr("max")(array)).cast<uint64_t>() >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw py::value_error(absl::StrCat(name, ": a value is past int64"));
  }
  auto values = py::array_t<int64_t, py::array::c_style | py::array::forcecast>(
      np.attr("ascontiguousarray")(array, "int64"));
  return std::vector<int64_t>(values.data(), values.data() + values.size());
}

}  // namespace

std::optional<DType> ParseDTypeArg(py::handle dtype) {
  if (dtype.is_none()) return std::nullopt;
  if (py::isinstance<py::str>(dtype)) {
    const std::string name = dtype.cast<std::string>();
    std::optional<DType> parsed = ParseDType(name);
    if (!parsed.has_value()) {
      throw py::value_error(absl::StrCat(
          "dtype: unknown name '", name,
          "' (float32, float16 or bfloat16; aliases fp32, fp16, half, bf16)"));
    }
    return parsed;
  }
  py::dtype numpy_dtype;
  try {
    numpy_dtype = py::module_::import("numpy").attr("dtype")(dtype);
  } catch (py::error_already_set&) {
    throw py::type_error(absl::StrCat(
        "dtype: expected a name or a numpy dtype, got ", TypeName(dtype)));
  }
  if (numpy_dtype.kind() == 'f' && numpy_dtype.itemsize() == 4) {
    return DType::kFloat32;
  }
  if (numpy_dtype.kind() == 'f' && numpy_dtype.itemsize() == 2) {
    return DType::kFloat16;
  }
  throw py::type_error(absl::StrCat(
      "dtype: ", DTypeString(numpy_dtype),
      " is not a KV dtype (float32, float16, or \"bfloat16\" for uint16 bit "
      "patterns)"));
}

DType ArrayDType(const py::array& array, std::optional<DType> declared,
                 const char* name) {
  const py::dtype dtype = array.dtype();
  std::optional<DType> found;
  if (!dtype.attr("isnative").cast<bool>()) {
    found = std::nullopt;
  } else if (dtype.kind() == 'f' && dtype.itemsize() == 4) {
    found = DType::kFloat32;
  } else if (dtype.kind() == 'f' && dtype.itemsize() == 2) {
    found = DType::kFloat16;
  } else if (dtype.kind() == 'u' && dtype.itemsize() == 2 &&
             declared == DType::kBFloat16) {
    found = DType::kBFloat16;
  }
  if (!found.has_value()) {
    throw py::type_error(absl::StrCat(
        name, ": dtype ", DTypeString(dtype),
        " is not supported (float32, float16, or uint16 bit patterns with "
        "dtype=\"bfloat16\")"));
  }
  if (declared.has_value() && *declared != *found) {
    throw py::type_error(absl::StrCat(name, ": array of dtype ",
                                      DTypeString(dtype), " with dtype=\"",
                                      std::string(DTypeName(*declared)), "\""));
  }
  return *found;
}

KVInput ToKVInput(py::handle obj, const char* name,
                  std::optional<DType> declared) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(
        absl::StrCat(name, ": expected a numpy.ndarray, got ", TypeName(obj)));
  }
  KVInput input;
  input.array = py::reinterpret_borrow<py::array>(obj);
  const DType dtype = ArrayDType(input.array, declared, name);
  const py::ssize_t rank = input.array.ndim();
  std::vector<int64_t> dims(static_cast<size_t>(rank));
  Strides strides;
  const py::ssize_t itemsize = input.array.itemsize();
  for (py::ssize_t i = 0; i < rank; ++i) {
    dims[i] = input.array.shape(i);
    const py::ssize_t stride = input.array.strides(i);
    if (stride % itemsize != 0) {
      throw py::value_error(absl::StrCat(name, ": stride ", stride,
                                         " bytes is not a whole element"));
    }
    strides.push_back(stride / itemsize);
  }
  // Rank above kMaxRank and overflowing sizes: INVALID_ARGUMENT.
  Shape shape = ValueOrThrow(Shape::Create(dims));
  input.view = ConstTensorView(input.array.data(), dtype, std::move(shape),
                               std::move(strides));
  return input;
}

int64_t ToInt64(py::handle obj, const char* name) {
  if (PyBool_Check(obj.ptr()) || IsNumpyBool(obj) ||
      !(PyLong_Check(obj.ptr()) || IsNumpyInteger(obj))) {
    throw py::type_error(
        absl::StrCat(name, ": expected an int, got ", TypeName(obj)));
  }
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0) {
    throw py::value_error(absl::StrCat(name, ": ", std::string(py::str(value)),
                                       " is past int64"));
  }
  return static_cast<int64_t>(v);
}

int32_t ToInt32(py::handle obj, const char* name) {
  const int64_t v = ToInt64(obj, name);
  if (v < std::numeric_limits<int32_t>::min() ||
      v > std::numeric_limits<int32_t>::max()) {
    throw py::value_error(absl::StrCat(name, ": ", v, " is past int32"));
  }
  return static_cast<int32_t>(v);
}

bool ToBool(py::handle obj, const char* name) {
  if (py::isinstance<py::bool_>(obj) || IsNumpyBool(obj)) {
    return py::cast<bool>(py::bool_(py::reinterpret_borrow<py::object>(obj)));
  }
  throw py::type_error(
      absl::StrCat(name, ": expected a bool, got ", TypeName(obj)));
}

std::string ToString(py::handle obj, const char* name) {
  if (!py::isinstance<py::str>(obj)) {
    throw py::type_error(
        absl::StrCat(name, ": expected a str, got ", TypeName(obj)));
  }
  return obj.cast<std::string>();
}

CachePosition ToCachePosition(py::handle obj) {
  constexpr char kName[] = "cache_position";
  if (obj.is_none()) return CachePosition::None();
  if (!py::isinstance<py::array>(obj) &&
      (PyLong_Check(obj.ptr()) || IsNumpyInteger(obj) || IsNumpyBool(obj) ||
       PyBool_Check(obj.ptr()))) {
    return CachePosition::Scalar(ToInt64(obj, kName));
  }
  if (PyFloat_Check(obj.ptr())) {
    throw py::type_error("cache_position: expected integers, got float");
  }
  const py::array array = AsIntegerArray(obj, kName);
  std::vector<int64_t> values = IntegerValues(array, kName);
  switch (array.ndim()) {
    case 0:
      return CachePosition::Scalar(values[0]);
    case 1:
      return CachePosition::Vector(std::move(values));
    case 2:
      return CachePosition::Matrix(array.shape(0), array.shape(1),
                                   std::move(values));
    default:
      throw py::value_error(absl::StrCat("cache_position: rank ", array.ndim(),
                                         " (0-D, 1-D or 2-D only)"));
  }
}

std::vector<int64_t> ToIndexList(py::handle obj, const char* name) {
  const py::array array = AsIntegerArray(obj, name);
  if (array.ndim() != 1) {
    // The dtype is checked first, so a 2-D bool mask is a TypeError.
    IntegerValues(array, name);
    throw py::value_error(absl::StrCat(name, ": rank ", array.ndim(),
                                       " (a 1-D list of indices only)"));
  }
  return IntegerValues(array, name);
}

py::array_t<int64_t> ToInt64Array(py::handle obj, const char* name) {
  const py::array array = AsIntegerArray(obj, name);
  if (array.ndim() != 1) {
    IntegerValues(array, name);
    throw py::value_error(
        absl::StrCat(name, ": rank ", array.ndim(), " (1-D only)"));
  }
  const py::dtype dtype = array.dtype();
  if (dtype.kind() == 'i' && dtype.itemsize() == 8 &&
      (array.flags() & py::array::c_style) != 0 &&
      dtype.attr("isnative").cast<bool>()) {
    return py::reinterpret_borrow<py::array_t<int64_t>>(array);  // No copy.
  }
  std::vector<int64_t> values = IntegerValues(array, name);
  py::array_t<int64_t> out(static_cast<py::ssize_t>(values.size()));
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

py::dtype NumpyDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return py::dtype::of<float>();
    case DType::kFloat16:
      return py::dtype("float16");
    case DType::kBFloat16:
      return py::dtype::of<uint16_t>();
  }
  throw std::logic_error("invalid DType");
}

py::array NewArray(DType dtype, const Shape& shape) {
  std::vector<py::ssize_t> dims(shape.dims().begin(), shape.dims().end());
  return py::array(NumpyDType(dtype), dims);
}

TensorView WritableView(py::array& array, DType dtype, const Shape& shape) {
  return TensorView(array.mutable_data(), dtype, shape);
}

absl::Span<int32_t> CallerInt32Buffer(py::handle obj, const char* name,
                                      int64_t min_entries) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(
        absl::StrCat(name, ": expected a numpy.ndarray, got ", TypeName(obj)));
  }
  py::array array = py::reinterpret_borrow<py::array>(obj);
  const py::dtype dtype = array.dtype();
  if (dtype.kind() != 'i' || dtype.itemsize() != 4 ||
      !dtype.attr("isnative").cast<bool>()) {
    throw py::type_error(
        absl::StrCat(name, ": expected dtype int32, got ", DTypeString(dtype)));
  }
  if (!array.writeable() || (array.flags() & py::array::c_style) == 0) {
    throw py::value_error(
        absl::StrCat(name, ": must be writable and C-contiguous"));
  }
  if (array.size() < min_entries) {
    throw py::value_error(
        absl::StrCat(name, ": ", array.size(), " entries, need ", min_entries));
  }
  return absl::MakeSpan(static_cast<int32_t*>(array.mutable_data()),
                        static_cast<size_t>(array.size()));
}

int64_t CallerInt32RowWidth(py::handle obj, const char* name,
                            const char* width_name) {
  if (!py::isinstance<py::array>(obj) ||
      py::reinterpret_borrow<py::array>(obj).ndim() != 2) {
    throw py::type_error(absl::StrCat(name,
                                      ": expected a 2-D int32 numpy array "
                                      "(rows, ",
                                      width_name, ")"));
  }
  return py::reinterpret_borrow<py::array>(obj).shape(1);
}

}  // namespace pagedkv::python
