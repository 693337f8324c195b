#include "python/src/views.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "allocator/block_table.h"
#include "cache/kv_view.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "python/src/arrays.h"
#include "python/src/pool.h"

namespace pagedkv::python {

namespace py = pybind11;

py::array PoolStorageArray(const KVPool& pool, py::handle owner,
                           bool writable) {
  const KVLayout& layout = pool.layout();
  const int32_t n = pool.num_blocks();
  const std::byte* first = pool.BlockData(BlockId(0));
  const std::byte* last = pool.BlockData(BlockId(n - 1));
  if (last != first + static_cast<size_t>(n - 1) * pool.block_bytes()) {
    throw std::runtime_error(
        "pool storage is not one contiguous run of blocks");
  }
  const py::ssize_t item = static_cast<py::ssize_t>(SizeOf(layout.dtype));
  const std::vector<py::ssize_t> shape = {n,
                                          layout.num_layers,
                                          2,
                                          layout.num_kv_heads,
                                          layout.block_tokens,
                                          layout.head_dim};
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = item;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  py::array array(NumpyDType(layout.dtype), shape, strides,
                  const_cast<std::byte*>(first), owner);
  if (!writable) array.attr("setflags")(py::arg("write") = false);
  return array;
}

PagedView MakePagedView(const KVView& view, py::handle pool_owner) {
  PagedView out;
  const int64_t batch = view.batch();
  const int32_t bt = view.block_tokens();
  out.layer = view.layer();
  out.block_tokens = bt;
  out.length = view.length();
  // Entries up to the last visible token: ceil((start + length) / bt).
  const int64_t width = (view.start() + view.length() + bt - 1) / bt;
  py::array_t<int32_t> tables(
      {static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(width)});
  py::array_t<int32_t> starts(static_cast<py::ssize_t>(batch));
  py::array_t<int32_t> lengths(static_cast<py::ssize_t>(batch));
  int32_t* t = tables.mutable_data();
  for (int64_t b = 0; b < batch; ++b) {
    absl::Span<const BlockId> blocks = view.tables()[b].blocks();
    for (int64_t i = 0; i < width; ++i) {
      t[b * width + i] =
          i < static_cast<int64_t>(blocks.size()) ? blocks[i].value() : -1;
    }
    starts.mutable_data()[b] = static_cast<int32_t>(view.start());
    lengths.mutable_data()[b] = static_cast<int32_t>(view.length());
  }
  out.block_tables = tables;
  out.starts = starts;
  out.lengths = lengths;
  out.storage = PoolStorageArray(*view.pool(), pool_owner, /*writable=*/false);
  return out;
}

void RegisterViews(py::module_& m) {
  py::class_<PagedView>(m, "PagedView", R"doc(
One layer's paged K/V: block tables, starts and lengths (int32 snapshots)
and zero-copy, read-only views of the pool's bytes. Token t of row b lives in
block block_tables[b, (starts[b] + t) // block_tokens] at slot
(starts[b] + t) % block_tokens. The arrays keep the pool alive.
)doc")
      .def_readonly("block_tables", &PagedView::block_tables,
                    "int32 (batch, width) block ids per row; -1 past a "
                    "row's blocks (a snapshot).")
      .def_readonly("starts", &PagedView::starts,
                    "int32 (batch,): the first visible position of each "
                    "row inside its blocks.")
      .def_readonly("lengths", &PagedView::lengths,
                    "int32 (batch,): visible tokens of each row.")
      .def_readonly("storage", &PagedView::storage,
                    "Read-only numpy view (num_blocks, num_layers, 2, "
                    "num_kv_heads, block_tokens, head_dim) of the pool's "
                    "bytes (live, not a snapshot); keeps the pool alive.")
      .def_readonly("layer", &PagedView::layer, "The layer viewed (int).")
      .def_readonly("block_tokens", &PagedView::block_tokens,
                    "Tokens per block (int).")
      .def_property_readonly(
          "key_blocks",
          [](const PagedView& v) {
            return v.storage[py::make_tuple(py::slice(0, PY_SSIZE_T_MAX, 1),
                                            v.layer, 0)];
          },
          "(num_blocks, kv_heads, block_tokens, head_dim) view of the keys")
      .def_property_readonly(
          "value_blocks",
          [](const PagedView& v) {
            return v.storage[py::make_tuple(py::slice(0, PY_SSIZE_T_MAX, 1),
                                            v.layer, 1)];
          },
          "(num_blocks, kv_heads, block_tokens, head_dim) view of the values")
      .def(
          "__repr__",
          [](const PagedView& v) {
            return absl::StrCat("PagedView(layer=", v.layer,
                                ", batch=", v.block_tables.shape(0),
                                ", length=", v.length,
                                ", block_tokens=", v.block_tokens, ")");
          },
          "PagedView(layer=..., batch=..., length=..., block_tokens=...)");
}

}  // namespace pagedkv::python
