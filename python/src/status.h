// python/src/status.h
//
// How an absl::Status becomes a Python exception. C++ library code never
// throws; the binding turns a non-OK Status into a StatusError (a C++
// exception that lives only inside the binding), and the translator that
// RegisterStatus installs raises the Python exception of its code, with the
// Status message as its message and the code's name in `status_code`:
//
//   INVALID_ARGUMENT    -> ValueError
//   OUT_OF_RANGE        -> IndexError
//   RESOURCE_EXHAUSTED  -> MemoryError
//   FAILED_PRECONDITION -> RuntimeError
//   NOT_FOUND           -> KeyError     (an unknown sequence id, as a dict)
//   ALREADY_EXISTS      -> ValueError   (the id given is a bad argument)
//   UNIMPLEMENTED       -> NotImplementedError
//   anything else       -> RuntimeError
//
//   ThrowIfError(cache.Crop(n));                      // raises on error
//   int64_t len = ValueOrThrow(cache.GetSeqLength(0));
//
// Thread safety: ThrowIfError and ValueOrThrow may run without the GIL (they
// only build a C++ exception); the translator runs with it.
#ifndef PAGEDKV_PYTHON_SRC_STATUS_H_
#define PAGEDKV_PYTHON_SRC_STATUS_H_

#include <exception>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pybind11/pybind11.h"

namespace pagedkv::python {

// A non-OK Status travelling from the C++ call to the exception translator.
class StatusError : public std::exception {
 public:
  explicit StatusError(absl::Status status)
      : status_(std::move(status)), what_(status_.ToString()) {}
  const absl::Status& status() const { return status_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  absl::Status status_;
  std::string what_;
};

// Throws StatusError unless status is OK.
inline void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw StatusError(status);
}

// Throws StatusError(INVALID_ARGUMENT, message): the binding's own check of
// a bad value raises what the C++ API's would (ValueError with
// status_code "INVALID_ARGUMENT").
[[noreturn]] inline void ThrowInvalidArgument(const std::string& message) {
  throw StatusError(absl::InvalidArgumentError(message));
}

// Returns the value, or throws StatusError with the status.
template <typename T>
T ValueOrThrow(absl::StatusOr<T> value) {
  if (!value.ok()) throw StatusError(value.status());
  return *std::move(value);
}

// Returns the Python exception type that `code` maps to (table above).
pybind11::handle ExceptionTypeFor(absl::StatusCode code);

// Installs the StatusError translator and exposes the mapping as
// `pagedkv.STATUS_EXCEPTIONS` (code name -> exception type).
void RegisterStatus(pybind11::module_& m);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_STATUS_H_
