// python/src/typed_args.h
//
// Python values the binding checks itself (arrays.h) but whose signatures
// should say what they take. A py::handle parameter shows as `handle` in
// pybind11's generated signature; Typed<Tag> is a py::object that any
// Python value converts to unchanged (the function still does its own
// checks, with its own messages), shown as Tag::name:
//
//   .def("crop", [](PyKVCache& c, IntArg max_length) { ... },
//        py::arg("max_length"))
//   // help(): crop(self, max_length: int) -> None
//
// As a return type it shows the same way, so a function returning one of
// several types can say which (OptionalKVPair: Optional[Tuple[...]]).
//
// Thread safety: as py::object (hold the GIL).
#ifndef PAGEDKV_PYTHON_SRC_TYPED_ARGS_H_
#define PAGEDKV_PYTHON_SRC_TYPED_ARGS_H_

#include <utility>

#include "pybind11/pybind11.h"

namespace pagedkv::python {

template <typename Tag>
class Typed : public pybind11::object {
 public:
  Typed() = default;
  // NOLINTNEXTLINE(google-explicit-constructor): results convert implicitly.
  Typed(pybind11::object o) : pybind11::object(std::move(o)) {}
  // What reinterpret_borrow / reinterpret_steal use.
  Typed(pybind11::handle h, borrowed_t b) : pybind11::object(h, b) {}
  Typed(pybind11::handle h, stolen_t s) : pybind11::object(h, s) {}
  // pybind11's object caster accepts a value when check_ says so: any.
  static bool check_(pybind11::handle h) { return h.ptr() != nullptr; }
};

#define PKV_TYPED_ARG(alias, text)                                 \
  struct alias##Tag {                                              \
    static constexpr auto name = pybind11::detail::const_name(text); \
  };                                                               \
  using alias = Typed<alias##Tag>

PKV_TYPED_ARG(IntArg, "int");
PKV_TYPED_ARG(OptionalIntArg, "Optional[int]");
PKV_TYPED_ARG(BoolArg, "bool");
PKV_TYPED_ARG(StrArg, "str");
PKV_TYPED_ARG(OptionalStrArg, "Optional[str]");
PKV_TYPED_ARG(ArrayArg, "numpy.ndarray");
PKV_TYPED_ARG(OptionalArrayArg, "Optional[numpy.ndarray]");
// 1-D integers: a list, tuple, range or integer array.
PKV_TYPED_ARG(IntsArg, "Union[numpy.ndarray, List[int]]");
PKV_TYPED_ARG(OptionalIntsArg, "Optional[Union[numpy.ndarray, List[int]]]");
PKV_TYPED_ARG(IntOrIntsArg, "Union[int, numpy.ndarray, List[int]]");
PKV_TYPED_ARG(PositionArg, "Optional[Union[int, numpy.ndarray, List[int]]]");
PKV_TYPED_ARG(DTypeArg, "Optional[Union[str, numpy.dtype]]");
PKV_TYPED_ARG(RequiredDTypeArg, "Union[str, numpy.dtype]");
PKV_TYPED_ARG(OptionalPoolArg, "Optional[KVPool]");
PKV_TYPED_ARG(OptionalCacheArg, "Optional[KVCache]");
PKV_TYPED_ARG(LayerGroupsArg, "Optional[List[Tuple[int, int]]]");
PKV_TYPED_ARG(LateTokenIdsArg, "Optional[List[Optional[numpy.ndarray]]]");
// Results.
PKV_TYPED_ARG(OptionalKVPair,
              "Optional[Tuple[numpy.ndarray, numpy.ndarray]]");
PKV_TYPED_ARG(OptionalPagedView, "Optional[PagedView]");
PKV_TYPED_ARG(OptionalPool, "Optional[KVPool]");

#undef PKV_TYPED_ARG

}  // namespace pagedkv::python

namespace pybind11::detail {

// The name pybind11's object caster gives the value in signatures.
template <typename Tag>
struct handle_type_name<pagedkv::python::Typed<Tag>> {
  static constexpr auto name = Tag::name;
};

}  // namespace pybind11::detail

#endif  // PAGEDKV_PYTHON_SRC_TYPED_ARGS_H_
