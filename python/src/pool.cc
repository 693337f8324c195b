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
#include "python/src/typed_args.h"
#include "python/src/views.h"
#include "tensor/dtype.h"

namespace pagedkv::python {

namespace py = pybind11;

namespace {

std::unique_ptr<PyKVPool> MakePool(IntArg num_layers, IntArg num_kv_heads,
                                   IntArg head_dim, RequiredDTypeArg dtype,
                                   IntArg num_blocks, IntArg block_tokens) {
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
           py::arg("num_blocks"), py::arg("block_tokens") = 16,
           "Allocates num_blocks blocks of block_tokens tokens of every "
           "layer's K and V. dtype: \"float32\", \"float16\" or "
           "\"bfloat16\". ValueError for a bad layout or num_blocks <= 0; "
           "MemoryError when the bytes exceed physical memory.")
      .def_property_readonly(
          "num_blocks", [](const PyKVPool& p) { return p.pool->num_blocks(); },
          "Blocks in the pool (int, fixed).")
      .def_property_readonly(
          "num_free_blocks",
          [](const PyKVPool& p) { return p.pool->books().num_free_blocks(); },
          "Blocks no cache holds now (int).")
      .def_property_readonly(
          "num_used_blocks",
          [](const PyKVPool& p) { return p.pool->books().num_used_blocks(); },
          "Blocks some cache holds now (int).")
      .def_property_readonly(
          "block_bytes",
          [](const PyKVPool& p) { return p.pool->block_bytes(); },
          "Bytes of one block, every layer's K and V (int).")
      .def_property_readonly(
          "num_layers",
          [](const PyKVPool& p) { return p.pool->layout().num_layers; },
          "Layers per block (int).")
      .def_property_readonly(
          "num_kv_heads",
          [](const PyKVPool& p) { return p.pool->layout().num_kv_heads; },
          "KV heads per layer (int).")
      .def_property_readonly(
          "head_dim",
          [](const PyKVPool& p) { return p.pool->layout().head_dim; },
          "Elements per head (int).")
      .def_property_readonly(
          "block_tokens",
          [](const PyKVPool& p) { return p.pool->layout().block_tokens; },
          "Tokens per block (int).")
      .def_property_readonly(
          "dtype",
          [](const PyKVPool& p) {
            return std::string(DTypeName(p.pool->layout().dtype));
          },
          "Element type (str: \"float32\", \"float16\" or \"bfloat16\").")
      .def_property_readonly(
          "bytes_copied",
          [](const PyKVPool& p) { return p.pool->bytes_copied(); },
          "Bytes copied between blocks so far (copy-on-write; int).")
      .def_property_readonly(
          "storage",
          [](py::object self) {
            return PoolStorageArray(*self.cast<PyKVPool&>().pool, self,
                                    /*writable=*/true);
          },
          "Zero-copy numpy view (num_blocks, num_layers, 2, num_kv_heads, "
          "block_tokens, head_dim) of every block; keeps the pool alive.")
      .def(
          "check_invariants",
          [](const PyKVPool& p) { p.pool->books().CheckInvariants(); },
          "Aborts the process if the pool's books are inconsistent (a bug; "
          "for tests).")
      .def(
          "__repr__",
          [](const PyKVPool& p) {
            return absl::StrCat("KVPool(", p.pool->layout().ToString(),
                                " num_blocks=", p.pool->num_blocks(), ")");
          },
          "KVPool(layers=... kv_heads=... head_dim=... dtype=... "
          "block_tokens=... num_blocks=...)");
}

}  // namespace pagedkv::python
