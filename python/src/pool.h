// python/src/pool.h
//
// pagedkv.KVPool: an explicit, fixed pool of KV blocks that several caches
// share (cache/storage/kv_pool.h). Made from Python it is always
// PoolConcurrency::kShared, so caches on it may run on different Python
// threads while the GIL is released. It never grows and its bytes never
// move, so `pool.storage` is a zero-copy numpy view of every block,
//
//   storage[block, layer, 0 (K) | 1 (V), kv_head, slot, dim]
//
// whose base is the pool object: the array keeps the pool (and its bytes)
// alive after the last Python name of the pool is gone.
//
//   pool = pagedkv.KVPool(num_layers=32, num_kv_heads=8, head_dim=128,
//                         dtype="float16", num_blocks=4096)
//   a, b = pagedkv.DynamicKVCache(pool), pagedkv.DynamicKVCache(pool)
//
// Thread safety: the books lock per call (kShared); bytes belong to whoever
// holds the blocks.
#ifndef PAGEDKV_PYTHON_SRC_POOL_H_
#define PAGEDKV_PYTHON_SRC_POOL_H_

#include <memory>

#include "cache/storage/kv_pool.h"
#include "pybind11/pybind11.h"

namespace pagedkv::python {

struct PyKVPool {
  std::unique_ptr<KVPool> pool;  // Never null.
};

void RegisterPool(pybind11::module_& m);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_POOL_H_
