// python/src/arrays.h
//
// The numpy side of the binding: Python arguments checked and turned into
// the C++ API's types, and numpy arrays made for results. Everything a
// Python caller could get wrong is checked here, before a C++ function with
// REQUIRES clauses sees it: wrong Python types and numpy dtypes raise
// TypeError, malformed values (a 3-D position array, an index past int64)
// raise ValueError, and the C++ call then validates the rest and returns a
// Status (status.h).
//
// dtypes: numpy float32 and float16 map to DType::kFloat32 / kFloat16.
// numpy has no bfloat16, so bfloat16 tensors travel as uint16 bit patterns,
// and a uint16 array is accepted only with an explicit dtype="bfloat16".
//
//   std::optional<DType> declared = ParseDTypeArg(dtype_arg);  // or nullopt
//   KVInput key = ToKVInput(key_obj, "key", declared);
//   CachePosition pos = ToCachePosition(cache_position_obj);
//   std::vector<int64_t> idx = ToIndexList(beam_idx_obj, "beam_idx");
//   py::array out = NewArray(DType::kFloat16, shape);   // C order
//
// Thread safety: call with the GIL held. A KVInput's view stays valid while
// its `array` reference lives.
#ifndef PAGEDKV_PYTHON_SRC_ARRAYS_H_
#define PAGEDKV_PYTHON_SRC_ARRAYS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "cache/cache_position.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace pagedkv::python {

// A checked key or value argument: the numpy array (kept referenced) and a
// view of its bytes.
struct KVInput {
  pybind11::array array;
  ConstTensorView view;
};

// Returns the DType named by a `dtype=` argument: None gives nullopt; a
// string ("float32", "float16", "bfloat16" and DTypeName's aliases) or a
// numpy dtype / type (float32, float16) gives that DType. TypeError for
// other types, ValueError for an unknown name.
std::optional<DType> ParseDTypeArg(pybind11::handle dtype);

// Returns the DType of a numpy array of keys or values: float32, float16,
// or bfloat16 for uint16 when declared is kBFloat16. A declared dtype must
// match the array's (TypeError otherwise); other dtypes are TypeError.
DType ArrayDType(const pybind11::array& array, std::optional<DType> declared,
                 const char* name);

// Checks `obj` (a numpy.ndarray, else TypeError) and views it without a
// copy (byte strides that are not whole elements: ValueError).
KVInput ToKVInput(pybind11::handle obj, const char* name,
                  std::optional<DType> declared);

// Returns the integer value of a Python int or numpy integer scalar.
// TypeError for bool, float and other types; ValueError past int64.
int64_t ToInt64(pybind11::handle obj, const char* name);

// ToInt64, then ValueError past int32 (counts and ids are int32 in C++).
int32_t ToInt32(pybind11::handle obj, const char* name);

// Returns a Python bool or numpy.bool_; TypeError for anything else (a
// string such as "yes" included), naming the argument.
bool ToBool(pybind11::handle obj, const char* name);

// Returns a Python str; TypeError for anything else, naming the argument.
std::string ToString(pybind11::handle obj, const char* name);

// cache_position: None (append), an int (0-D), or an integer array of rank
// 0, 1 or 2 (or a list of ints / list of lists of ints, converted as numpy
// would). TypeError for floats, bools and other types; ValueError for rank
// above 2 or a ragged list.
CachePosition ToCachePosition(pybind11::handle obj);

// A 1-D list of integer indices: a list, tuple, range or 1-D integer
// array. TypeError for bool, float or other element types; ValueError for
// other ranks.
std::vector<int64_t> ToIndexList(pybind11::handle obj, const char* name);

// Returns a 1-D C-contiguous integer array equal to `obj` (any integer
// dtype, converted to int64; a list works too). Same errors as ToIndexList.
pybind11::array_t<int64_t> ToInt64Array(pybind11::handle obj, const char* name);

// The numpy dtype of `dtype` (bfloat16: uint16).
pybind11::dtype NumpyDType(DType dtype);

// Returns a new C-order numpy array of `dtype` and `shape` (uninitialised).
pybind11::array NewArray(DType dtype, const Shape& shape);

// A writable view of a numpy array made by NewArray.
TensorView WritableView(pybind11::array& array, DType dtype,
                        const Shape& shape);

// Checks that `obj` is a writable, C-contiguous numpy array of int32 with
// at least `min_entries` elements (TypeError for another type or dtype,
// ValueError for a read-only, strided or too small one) and returns its
// entries.
absl::Span<int32_t> CallerInt32Buffer(pybind11::handle obj, const char* name,
                                      int64_t min_entries);

// The row width (shape[1]) of a caller's 2-D table, such as a dense export's
// (rows, max_blocks) block_tables; TypeError unless `obj` is a 2-D numpy
// array (the message names `width_name`). Check its entries with
// CallerInt32Buffer.
int64_t CallerInt32RowWidth(pybind11::handle obj, const char* name,
                            const char* width_name);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_ARRAYS_H_
