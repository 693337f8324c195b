#include "python/src/status.h"

#include <string>

#include "absl/status/status.h"
#include "pybind11/pybind11.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

constexpr absl::StatusCode kMappedCodes[] = {
    absl::StatusCode::kInvalidArgument,   absl::StatusCode::kOutOfRange,
    absl::StatusCode::kResourceExhausted, absl::StatusCode::kFailedPrecondition,
    absl::StatusCode::kNotFound,          absl::StatusCode::kAlreadyExists,
    absl::StatusCode::kUnimplemented,
};

}  // namespace

py::handle ExceptionTypeFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kAlreadyExists:
      return PyExc_ValueError;
    case absl::StatusCode::kOutOfRange:
      return PyExc_IndexError;
    case absl::StatusCode::kResourceExhausted:
      return PyExc_MemoryError;
    case absl::StatusCode::kNotFound:
      return PyExc_KeyError;
    case absl::StatusCode::kUnimplemented:
      return PyExc_NotImplementedError;
    default:
      return PyExc_RuntimeError;
  }
}

void RegisterStatus(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      const py::handle type = ExceptionTypeFor(e.status().code());
      const std::string message(e.status().message());
      // The instance carries the code's name, so callers can tell
      // ALREADY_EXISTS from INVALID_ARGUMENT without parsing the message.
      py::object instance = type(message);
      instance.attr("status_code") =
          absl::StatusCodeToString(e.status().code());
      PyErr_SetObject(type.ptr(), instance.ptr());
    }
  });
  py::dict table;
  for (absl::StatusCode code : kMappedCodes) {
    table[py::str(absl::StatusCodeToString(code))] = ExceptionTypeFor(code);
  }
  m.attr("STATUS_EXCEPTIONS") = table;
}

}  // namespace pagedkv::python
