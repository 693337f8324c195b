// python/src/manager_groups.h
//
// KVCacheManager's layer groups from Python (cache/serving/layer_groups.h):
// the `layer_groups=` constructor option and the per-group reads.
//
//   m = pagedkv.KVCacheManager(num_layers=4, num_kv_heads=1, head_dim=4,
//                              dtype="float16", num_blocks=32, block_tokens=4,
//                              storage="books_only",
//                              layer_groups=[(2, 0), (2, 4)])  # full, W=4
//   slots = m.add_sequence(1, 9, 10)       # 2 groups x 9 slots, group-major
//   slots.reshape(m.num_layer_groups, m.group_stride)[g]   # group g's run
//   m.group_table(1, 1)                    # int32 entries, holes are -1
//   m.export_dense_group(1, seqs, tables, lens)   # caller's int32 arrays
//
// Each group is a (num_layers, sliding_window) pair (0: full attention).
// Errors are the manager's Status codes (status.h; a bad group is
// OUT_OF_RANGE -> IndexError) and change nothing.
//
// Thread safety: as the manager class (manager.h).
#ifndef PAGEDKV_PYTHON_SRC_MANAGER_GROUPS_H_
#define PAGEDKV_PYTHON_SRC_MANAGER_GROUPS_H_

#include <vector>

#include "cache/serving/layer_groups.h"
#include "pybind11/pybind11.h"
#include "python/src/manager_holder.h"

namespace pagedkv::python {

// The groups of a `layer_groups` argument: None gives none; else a list or
// tuple of (num_layers, sliding_window) pairs of ints (TypeError for other
// shapes, ValueError past int32). KVCacheManager::Create checks the values.
std::vector<LayerGroup> ToLayerGroups(pybind11::handle obj);

// Adds group_stride, num_layer_groups, window_released_blocks, group_table
// and export_dense_group to the manager class.
void AddLayerGroupMethods(pybind11::class_<PyKVCacheManager>& cls);

}  // namespace pagedkv::python

#endif  // PAGEDKV_PYTHON_SRC_MANAGER_GROUPS_H_
