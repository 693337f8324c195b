// python/src/dtype_convert.h
//
// bfloat16 for numpy users. numpy has no bfloat16 dtype, so pagedkv takes
// and returns bfloat16 tensors as uint16 arrays of bit patterns (with an
// explicit dtype="bfloat16" where it takes them). These two functions
// convert, rounding to nearest, ties to even (tensor/dtype.h):
//
//   bits = pagedkv.float_to_bfloat16(np.float32 array)  # -> uint16 array
//   x = pagedkv.bfloat16_to_float(bits)                  # -> float32 array
//
// Thread safety: pure functions (called with the GIL held).
#ifndef PAGEDKV_PYTHON_SRC_DTYPE_CONVERT_H_
#define PAGEDKV_PYTHON_SRC_DTYPE_CONVERT_H_

#include "pybind11/pybind11.h"

namespace pagedkv::python {

void RegisterDTypeConversions(pybind11::module_& m);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_DTYPE_CONVERT_H_
