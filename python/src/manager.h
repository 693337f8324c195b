// python/src/manager.h
//
// pagedkv.KVCacheManager: the serving block manager
// (cache/serving/kv_cache_manager.h) from Python, one call per step for all
// running sequences:
//
//   m = pagedkv.KVCacheManager(num_layers=8, num_kv_heads=4, head_dim=64,
//                              dtype="float16", num_blocks=4096)
//   slots = m.add_sequence(7, prompt_tokens=20, max_new_tokens=8)
//   seqs = np.array([7, 8, 9], dtype=np.int64)
//   slots = m.append_slots(seqs)             # int64 slot_mapping, 1 token each
//   m.export_csr(seqs, indptr, indices, last_page_len)   # caller's int32
//   arrays m.kv_storage[block, layer, 0, head, slot, :] = k     # host mode,
//   zero-copy
//
// Step outputs: append_slots / add_sequence / readmit return the slot
// mapping (a new int64 array, or the caller's `out`); `request_offsets` and
// `copies` ((n, 2) int32 [src, dst] copy-on-write copies, books-only mode:
// run them, then mark_copies_done()) describe the last such call.
//
// Layer groups (books-only): KVCacheManager(..., layer_groups=[(n, W), ...])
// makes the slots group-major (group_stride) and tables per group
// (group_table, export_dense_group); see manager_groups.h.
//
// Errors are the manager's Status codes (status.h: NOT_FOUND -> KeyError,
// ALREADY_EXISTS -> ValueError, ...) and change nothing.
//
// Thread safety: one call at a time (a second thread gets RuntimeError);
// the GIL is released during append_slots and the exports.
#ifndef PAGEDKV_PYTHON_SRC_MANAGER_H_
#define PAGEDKV_PYTHON_SRC_MANAGER_H_

#include "pybind11/pybind11.h"

namespace pagedkv::python {

void RegisterManager(pybind11::module_& m);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_MANAGER_H_
