#include "python/src/manager_groups.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "allocator/block_id.h"
#include "cache/serving/group_table_export.h"
#include "cache/serving/kv_cache_manager.h"
#include "cache/serving/layer_groups.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "python/src/arrays.h"
#include "python/src/busy.h"
#include "python/src/manager_holder.h"
#include "python/src/status.h"
#include "python/src/typed_args.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

bool IsListOrTuple(py::handle obj) {
  return py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj);
}

py::array GroupTable(PyKVCacheManager& c, IntArg seq, IntArg group) {
  BusyGuard guard(c.busy, kManagerKind);
  const KVCacheManager::RunningTable t = ValueOrThrow(
      c.manager->group_table(ToInt64(seq, "seq"), ToInt32(group, "group")));
  py::array_t<int32_t> a(static_cast<py::ssize_t>(t.blocks.size()));
  for (size_t i = 0; i < t.blocks.size(); ++i) {
    a.mutable_data()[i] = t.blocks[i].value();  // A hole is BlockId(): -1.
  }
  return std::move(a);
}

void ExportDenseGroup(PyKVCacheManager& c, IntArg group, IntsArg seqs,
                      ArrayArg block_tables, ArrayArg seq_lens, IntArg pad_id,
                      IntArg hole_id) {
  BusyGuard guard(c.busy, kManagerKind);
  const py::array_t<int64_t> ids = ToInt64Array(seqs, "seqs");
  c.batch.assign(ids.data(), ids.data() + ids.size());
  const int32_t g = ToInt32(group, "group");
  GroupDenseExportOptions options;
  options.max_blocks = ToInt32(
      py::int_(CallerInt32RowWidth(block_tables, "block_tables", "max_blocks")),
      "max_blocks");
  options.pad_id = ToInt32(pad_id, "pad_id");
  options.hole_id = ToInt32(hole_id, "hole_id");
  absl::Span<int32_t> tables =
      CallerInt32Buffer(block_tables, "block_tables", 0);
  absl::Span<int32_t> lens = CallerInt32Buffer(seq_lens, "seq_lens", 0);
  absl::Status status;
  {
    py::gil_scoped_release release;
    status = ExportDenseGroupBlockTables(*c.manager, g, c.batch, options,
                                         tables, lens);
  }
  ThrowIfError(status);
}

}  // namespace

std::vector<LayerGroup> ToLayerGroups(py::handle obj) {
  if (obj.is_none()) return {};
  if (!IsListOrTuple(obj)) {
    throw py::type_error(
        "layer_groups: expected a list of (num_layers, sliding_window) "
        "pairs");
  }
  const py::sequence items = py::reinterpret_borrow<py::sequence>(obj);
  std::vector<LayerGroup> groups;
  groups.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const py::object item = items[i];
    if (!IsListOrTuple(item) || py::len(item) != 2) {
      throw py::type_error(absl::StrCat(
          "layer_groups[", i,
          "]: expected a (num_layers, sliding_window) pair of ints"));
    }
    const py::sequence pair = py::reinterpret_borrow<py::sequence>(item);
    const std::string name = absl::StrCat("layer_groups[", i, "]");
    groups.push_back({.num_layers = ToInt32(pair[0], name.c_str()),
                      .sliding_window = ToInt32(pair[1], name.c_str())});
  }
  return groups;
}

void AddLayerGroupMethods(py::class_<PyKVCacheManager>& cls) {
  cls.def_property_readonly(
         "num_layer_groups",
         [](PyKVCacheManager& c) { return c.manager->num_layer_groups(); },
         "Layer groups (0 without layer_groups).")
      .def_property_readonly(
          "group_stride",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            return c.out.group_stride;
          },
          "Layer groups: the last step's slots are group-major, G runs of "
          "group_stride (group g's slot of request i's token j at g * "
          "group_stride + request_offsets[i] + j); 0 without groups.")
      .def_property_readonly(
          "window_released_blocks",
          [](PyKVCacheManager& c) {
            BusyGuard guard(c.busy, kManagerKind);
            return c.manager->window_released_blocks();
          },
          "Window groups: blocks their windows released, in all.")
      .def("group_table", &GroupTable, py::arg("seq"), py::arg("group"),
           "int32 copy of group `group`'s table of a running sequence: "
           "entry i is the block of tokens [i * bt, (i + 1) * bt), -1 where "
           "the window released it.")
      .def("export_dense_group", &ExportDenseGroup, py::arg("group"),
           py::arg("seqs"), py::arg("block_tables"), py::arg("seq_lens"),
           py::kw_only(), py::arg("pad_id") = 0, py::arg("hole_id") = -1,
           "export_dense for one layer group, into the caller's int32 "
           "arrays; entries a window released are hole_id.");
}

}  // namespace pagedkv::python
