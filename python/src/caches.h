// python/src/caches.h
//
// The lucid nn.cache API on numpy: pagedkv.DynamicKVCache, StaticKVCache and
// EncoderDecoderCache, snake_case (cache/cache.h has the contract).
//
//   cache = pagedkv.DynamicKVCache()
//   k_all, v_all = cache.update(key, value, layer_idx=0)   # gathered copies
//   cache.batch_repeat_interleave(4); cache.reorder_cache([3, 1, 0, 2])
//   swa = pagedkv.DynamicKVCache(sliding_window=[0, 1024])  # full, W=1024
//
// Ownership: a Python cache object owns its C++ cache and holds a reference
// to its KVPool (so the pool outlives it). EncoderDecoderCache(self, cross)
// adopts the two Python caches: it takes their C++ caches into one C++
// EncoderDecoderCache that both half objects (and the pair) then share, so
// the halves stay usable as `edc.self_attention_cache` and keep the pair
// alive; a cache can be adopted once.
//
// Thread safety: one call at a time per cache (a second thread gets
// RuntimeError, busy.h); the GIL is released while C++ copies K/V.
#ifndef PAGEDKV_PYTHON_SRC_CACHES_H_
#define PAGEDKV_PYTHON_SRC_CACHES_H_

#include <memory>

#include "cache/cache.h"
#include "cache/encoder_decoder_cache.h"
#include "pybind11/pybind11.h"
#include "python/src/busy.h"

namespace pagedkv::python {

// A DynamicKVCache or StaticKVCache as Python sees it. Members are
// destroyed in reverse order: the C++ cache before the pool reference.
struct PyKVCache {
  pybind11::object pool;  // The KVPool object, or None (private pool).
  std::shared_ptr<BusyFlag> busy = std::make_shared<BusyFlag>();
  const char* kind = "KVCache";      // The Python class name, for messages.
  std::unique_ptr<KVCache> owned;    // Standalone; null once adopted.
  std::shared_ptr<KVCache> adopted;  // Aliases the pair that adopted it.

  KVCache* get() const {
    return owned != nullptr ? owned.get() : adopted.get();
  }
};

// The two Python classes, subclasses of pagedkv.KVCache (PyKVCache).
struct PyDynamicKVCache : PyKVCache {};
struct PyStaticKVCache : PyKVCache {};

// The C++ pair and what keeps its pools alive (pools destroyed last).
struct EncoderDecoderPair {
  pybind11::object pools[2];
  std::shared_ptr<BusyFlag> busy;
  std::unique_ptr<EncoderDecoderCache> cache;
};

struct PyEncoderDecoderCache {
  std::shared_ptr<EncoderDecoderPair> pair;
  pybind11::object self_half;  // The PyKVCache objects it adopted.
  pybind11::object cross_half;
};

void RegisterCaches(pybind11::module_& m);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_CACHES_H_
