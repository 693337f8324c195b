// python/src/views.h
//
// Zero-copy access to paged K/V from Python, for kernels that read blocks in
// place (next to the gathered copies `update` returns).
//
// PoolStorageArray is a numpy view of all of a fixed pool's bytes,
// shape (num_blocks, num_layers, 2, num_kv_heads, block_tokens, head_dim)
// (the block-major layout of cache/storage/kv_layout.h; index 0 of axis 2
// is K, 1 is V), whose base is `owner`: the Python object that keeps the pool
// alive (a KVPool or a KVCacheManager).
//
// PagedView is what `cache.paged_view(layer_idx)` returns: a snapshot of the
// layer's books as int32 arrays and live views of the pool's bytes:
//
//   view = cache.paged_view(0)
//   view.block_tables   # int32 (batch, width): table entries 0 .. width-1
//   view.starts         # int32 (batch,): table token of visible token 0
//   view.lengths        # int32 (batch,): visible tokens per row
//   view.key_blocks     # (num_blocks, heads, block_tokens, dim), zero-copy
//   # token t of row b: block = block_tables[b, (starts[b] + t) // bt],
//   #                   slot = (starts[b] + t) % bt
//   k = view.key_blocks[block, :, slot, :]        # (heads, dim)
//
// Only caches on an explicit KVPool have paged views: a standalone cache's
// private pool may move its bytes (growth by relayout, a new pool after a
// shape change), so a numpy view of it could outlive its memory; there,
// paged_view raises RuntimeError. The tables are a snapshot; the bytes are
// live (a later copy-on-write writes other blocks, a crop may free blocks
// for reuse), so read a view before the cache's next mutating call.
//
// Thread safety: call with the GIL held.
#ifndef PAGEDKV_PYTHON_SRC_VIEWS_H_
#define PAGEDKV_PYTHON_SRC_VIEWS_H_

#include "cache/kv_view.h"
#include "cache/storage/kv_pool.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"

namespace pagedkv::python {

// REQUIRES: `pool` is a fixed KVPool (one chunk) that `owner` keeps alive.
// Raises RuntimeError if its blocks are not one contiguous run.
pybind11::array PoolStorageArray(const KVPool& pool, pybind11::handle owner,
                                 bool writable);

struct PagedView {
  pybind11::array block_tables;
  pybind11::array starts;
  pybind11::array lengths;
  pybind11::array storage;
  int32_t layer = 0;
  int32_t block_tokens = 0;
  int64_t length = 0;
};

// Builds a PagedView of `view` over the storage of `pool_owner`'s pool
// (a PyKVPool object), read-only.
PagedView MakePagedView(const KVView& view, pybind11::handle pool_owner);

void RegisterViews(pybind11::module_& m);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_VIEWS_H_
