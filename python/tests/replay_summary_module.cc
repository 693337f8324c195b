// python/tests/replay_summary_module.cc
//
// _replay_summary: tools/kv_replay's tensor summary (conformance/FORMAT.md
// section 9) for numpy arrays, so the Python golden replay
// (golden_replay_test.py) summarises what the binding returned with the
// very code kv_replay uses. Test-only.
//
//   _replay_summary.summarize(k_all)   # -> JSON text of the SUMMARY object
//
// Thread safety: pure (called with the GIL held).
#include <cstdint>
#include <string>
#include <vector>

#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
#include "tools/kv_replay/summary.h"

namespace py = pybind11;

namespace {

std::string Summarize(py::array array, const std::string& dtype_name) {
  const std::optional<pagedkv::DType> dtype = pagedkv::ParseDType(dtype_name);
  if (!dtype.has_value()) throw py::value_error("unknown dtype " + dtype_name);
  if (static_cast<size_t>(array.itemsize()) != pagedkv::SizeOf(*dtype)) {
    throw py::value_error("itemsize does not match " + dtype_name);
  }
  py::array contiguous =
      py::module_::import("numpy").attr("ascontiguousarray")(array);
  std::vector<int64_t> dims(contiguous.shape(),
                            contiguous.shape() + contiguous.ndim());
  absl::StatusOr<pagedkv::Shape> shape = pagedkv::Shape::Create(dims);
  if (!shape.ok()) throw py::value_error(std::string(shape.status().message()));
  pagedkv::ConstTensorView view(contiguous.data(), *dtype, *shape);
  return pagedkv::kv_replay::SummaryToJson(pagedkv::kv_replay::Summarize(view))
      .dump();
}

}  // namespace

PYBIND11_MODULE(_replay_summary, m) {
  m.def("summarize", &Summarize, py::arg("array"), py::arg("dtype"));
}
