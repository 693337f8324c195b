#include "python/src/pool.h"

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "cache/storage/kv_layout.h"
#include "cache/storage/kv_pool.h"
#include "pybind11/pybind11.h"
#include "python/src/arrays.h"
#include "python/src/physical_memory.h"
#include "python/src/status.h"
#include "python/src/views.h"
#include "tensor/dtype.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

std::unique_ptr<PyKVPool> MakePool(py::handle num_layers,
                                   py::handle num_kv_heads, py::handle head_dim,
                                   py::handle dtype, py::handle num_blocks,
                                   py::handle block_tokens) {
  KVPool::Options options;
  options.layout.num_layers = ToInt32(num_layers, "num_layers");
  options.layout.num_kv_heads = ToInt32(num_kv_heads, "num_kv_heads");
  options.layout.head_dim = ToInt32(head_dim, "head_dim");
  const std::optional<DType> parsed = ParseDTypeArg(dtype);
  if (!parsed.has_value()) throw py::type_error("dtype: required");
  options.layout.dtype = *parsed;
  options.layout.block_tokens = ToInt32(block_tokens, "block_tokens");
  options.num_blocks = ToInt32(num_blocks, "num_blocks");
  options.concurrency = PoolConcurrency::kShared;
  // A valid layout's bytes are checked against RAM before the pool is
  // allocated (overcommit would let it through; physical_memory.h).
  if (options.layout.Validate().ok()) {
    CheckFitsInMemory("KVPool", options.layout.block_bytes(),
                      options.num_blocks);
  }
  auto holder = std::make_unique<PyKVPool>();
  holder->pool = ValueOrThrow(KVPool::Create(options));
  return holder;
}

}  // namespace

void RegisterPool(py::module_& m) {
  py::class_<PyKVPool>(m, "KVPool", R"doc(
A fixed pool of KV blocks shared by caches (never grows). Thread-safe books.

KVPool(*, num_layers, num_kv_heads, head_dim, dtype, num_blocks,
       block_tokens=16)
)doc")
      .def(py::init(&MakePool), py::kw_only(), py::arg("num_layers"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("dtype"),
           py::arg("num_blocks"), py::arg("block_tokens") = 16)
      .def_property_readonly(
          "num_blocks", [](const PyKVPool& p) { return p.pool->num_blocks(); })
      .def_property_readonly(
          "num_free_blocks",
          [](const PyKVPool& p) { return p.pool->books().num_free_blocks(); })
      .def_property_readonly(
          "num_used_blocks",
          [](const PyKVPool& p) { return p.pool->books().num_used_blocks(); })
      .def_property_readonly(
          "block_bytes",
          [](const PyKVPool& p) { return p.pool->block_bytes(); })
      .def_property_readonly(
          "num_layers",
          [](const PyKVPool& p) { return p.pool->layout().num_layers; })
      .def_property_readonly(
          "num_kv_heads",
          [](const PyKVPool& p) { return p.pool->layout().num_kv_heads; })
      .def_property_readonly(
          "head_dim",
          [](const PyKVPool& p) { return p.pool->layout().head_dim; })
      .def_property_readonly(
          "block_tokens",
          [](const PyKVPool& p) { return p.pool->layout().block_tokens; })
      .def_property_readonly(
          "dtype",
          [](const PyKVPool& p) {
            return std::string(DTypeName(p.pool->layout().dtype));
          })
      .def_property_readonly(
          "bytes_copied",
          [](const PyKVPool& p) { return p.pool->bytes_copied(); })
      .def_property_readonly(
          "storage",
          [](py::object self) {
            return PoolStorageArray(*self.cast<PyKVPool&>().pool, self,
                                    /*writable=*/true);
          },
          "Zero-copy numpy view (num_blocks, num_layers, 2, num_kv_heads, "
          "block_tokens, head_dim) of every block; keeps the pool alive.")
      .def("check_invariants",
           [](const PyKVPool& p) { p.pool->books().CheckInvariants(); })
      .def("__repr__", [](const PyKVPool& p) {
        return absl::StrCat("KVPool(", p.pool->layout().ToString(),
                            " num_blocks=", p.pool->num_blocks(), ")");
      });
}

}  // namespace pagedkv::python
