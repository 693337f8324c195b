// python/src/module.cc
//
// The pagedkv._pagedkv extension module: the lucid cache API, the pool, the
// paged views and the serving manager on numpy. The Python package
// (python/pagedkv/__init__.py) re-exports it. Each part registers itself
// from its own file; the order matters only where one class's methods
// return another's objects (views before caches and the manager).
#include "pybind11/pybind11.h"
#include "python/src/caches.h"
#include "python/src/dtype_convert.h"
#include "python/src/manager.h"
#include "python/src/pool.h"
#include "python/src/status.h"
#include "python/src/views.h"

PYBIND11_MODULE(_pagedkv, m) {
  m.doc() = "pagedkv: paged KV caches (lucid nn.cache API) on numpy";
  pagedkv::python::RegisterStatus(m);
  pagedkv::python::RegisterDTypeConversions(m);
  pagedkv::python::RegisterViews(m);
  pagedkv::python::RegisterPool(m);
  pagedkv::python::RegisterCaches(m);
  pagedkv::python::RegisterManager(m);
}
