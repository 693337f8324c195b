// python/src/busy.h
//
// BusyFlag makes "one thread at a time per cache or manager" (cache.h,
// kv_cache_manager.h) safe to break from Python. The binding releases the
// GIL during long C++ work, so a second Python thread could otherwise enter
// the same object mid-call; every method takes the object's flag with a
// BusyGuard, which raises RuntimeError instead of racing.
//
//   BusyGuard guard(cache.busy, "DynamicKVCache");  // raises if in use
//   py::gil_scoped_release release;
//   status = cache.get()->Update(...);
//
// An EncoderDecoderCache and its two halves share one flag, since a call on
// either half touches the pair's state.
//
// Thread safety: the flag is atomic; a guard belongs to one call.
#ifndef PAGEDKV_PYTHON_SRC_BUSY_H_
#define PAGEDKV_PYTHON_SRC_BUSY_H_

#include <atomic>
#include <memory>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pybind11/pybind11.h"

namespace pagedkv::python {

struct BusyFlag {
  std::atomic<bool> busy{false};
};

class BusyGuard {
 public:
  // Raises RuntimeError (nothing changed) if another call holds the flag.
  // The guard shares the flag, so an object may switch to another flag
  // (a cache adopted by an EncoderDecoderCache) while a guard is held.
  BusyGuard(std::shared_ptr<BusyFlag> flag, const char* what)
      : flag_(std::move(flag)) {
    if (flag_->busy.exchange(true, std::memory_order_acquire)) {
      throw std::runtime_error(absl::StrCat(
          what, " is in use by another thread (one thread at a time)"));
    }
  }
  ~BusyGuard() { flag_->busy.store(false, std::memory_order_release); }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

 private:
  std::shared_ptr<BusyFlag> flag_;
};

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_BUSY_H_
