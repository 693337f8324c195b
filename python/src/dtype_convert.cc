#include "python/src/dtype_convert.h"

#include <cstdint>

#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "tensor/dtype.h"

namespace pagedkv::python {

namespace py = pybind11;

void RegisterDTypeConversions(py::module_& m) {
  m.def(
      "float_to_bfloat16",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        py::array_t<uint16_t> out(
            std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        const float* in = x.data();
        uint16_t* bits = out.mutable_data();
        for (py::ssize_t i = 0; i < x.size(); ++i) {
          bits[i] = FloatToBFloat16(in[i]);
        }
        return out;
      },
      py::arg("x"),
      "uint16 bfloat16 bit patterns of x (as float32), nearest, ties to "
      "even.");
  m.def(
      "bfloat16_to_float",
      [](py::array_t<uint16_t, py::array::c_style> bits) {
        py::array_t<float> out(
            std::vector<py::ssize_t>(bits.shape(), bits.shape() + bits.ndim()));
        const uint16_t* in = bits.data();
        float* x = out.mutable_data();
        for (py::ssize_t i = 0; i < bits.size(); ++i) {
          x[i] = BFloat16ToFloat(in[i]);
        }
        return out;
      },
      py::arg("bits"), "float32 values of uint16 bfloat16 bit patterns.");
}

}  // namespace pagedkv::python
