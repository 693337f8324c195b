"""Every public callable and property of pagedkv says what it does.

pybind11 writes a signature line for every function; a member documented by
nothing else shows only that in help(). This test asks for prose after the
signature, for every property's docstring, and for signatures that name
types (no `handle` / `object` placeholders for the arguments).
"""

import inspect
import unittest

import pagedkv

# Dunder methods a user calls through syntax, and so reads in help().
_DUNDERS = ("__init__", "__len__", "__getitem__", "__contains__", "__iter__",
            "__repr__")


def _prose(doc):
    """The docstring without pybind11's signature lines."""
    if not doc:
        return ""
    lines = doc.strip().splitlines()
    body = [l for l in lines
            if not (l.split("(")[0].strip().isidentifier() and "->" in l)]
    return "\n".join(body).strip()


def _members():
    for name in pagedkv.__all__:
        obj = getattr(pagedkv, name)
        if inspect.isclass(obj):
            yield name, obj
            for member, value in vars(obj).items():
                if member.startswith("_") and member not in _DUNDERS:
                    continue
                if member == "__repr__" and value is object.__repr__:
                    continue
                yield f"{name}.{member}", value
        elif callable(obj):
            yield name, obj


class DocstringsTest(unittest.TestCase):
    maxDiff = None

    def test_every_public_member_has_a_docstring(self):
        missing = []
        for label, value in _members():
            if isinstance(value, property):
                doc = value.__doc__
            else:
                doc = getattr(value, "__doc__", None)
            if not _prose(doc):
                missing.append(label)
        self.assertEqual(missing, [], "members without a docstring")

    def test_signatures_name_types(self):
        untyped = []
        for label, value in _members():
            doc = getattr(value, "__doc__", None) or ""
            if isinstance(value, property) or not callable(value):
                continue
            for line in doc.splitlines():
                if "->" not in line or "(" not in line:
                    continue
                args = line[line.index("(") + 1:line.rindex(")")]
                # `self: object` is a method taking its Python object.
                args = args.replace("self: object", "self")
                if ": handle" in args or ": object" in args:
                    untyped.append(f"{label}: {line}")
        self.assertEqual(untyped, [], "arguments shown as handle / object")

    def test_reprs(self):
        self.assertIn("DynamicKVCache(", repr(pagedkv.DynamicKVCache()))
        self.assertIn("StaticKVCache(max_cache_len=8",
                      repr(pagedkv.StaticKVCache(8, 2)))
        self.assertIn("EncoderDecoderCache(",
                      repr(pagedkv.EncoderDecoderCache()))
        m = pagedkv.KVCacheManager(num_layers=1, num_kv_heads=1, head_dim=4,
                                   dtype="float32", num_blocks=4)
        self.assertIn("KVCacheManager(", repr(m))
        for r in (repr(pagedkv.DynamicKVCache()), repr(m)):
            self.assertNotIn(" object at 0x", r)


if __name__ == "__main__":
    unittest.main()
