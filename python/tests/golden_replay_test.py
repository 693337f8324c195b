"""Every golden trace (tests/conformance/golden) replayed through the
binding, compared op by op with what the kv_replay binary gets on the same
file: the same failures, results and states (conformance/FORMAT.md).

The replay builds the inputs of FORMAT.md section 7 as numpy arrays of the
trace's dtypes, so inputs the C++ API cannot express (float64 keys, float
or boolean indices, 3-D positions) reach the binding, which must reject
them as kv_replay does. Summaries come from kv_replay's own code
(_replay_summary).
"""

import json
import os
import subprocess
import sys
import unittest

import numpy as np

import pagedkv

RUNFILES = os.path.join(os.environ.get("TEST_SRCDIR", "."),
                        os.environ.get("TEST_WORKSPACE", "pagedkv"))
sys.path.insert(0, os.path.join(RUNFILES, "python", "tests"))
import _replay_summary  # noqa: E402

GOLDEN_DIR = os.path.join(RUNFILES, "tests", "conformance", "golden")
KV_REPLAY = os.path.join(RUNFILES, "tools", "kv_replay", "kv_replay")

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16,
                "float64": np.float64, "int32": np.int32, "int64": np.int64,
                "bool": np.bool_}


def pattern(shape, base, sign):
    """FORMAT.md 7.1: x[..., b, h, t, d] = b*1e6 + h*1e4 + (base+t)*100 + d."""
    shape = list(shape)
    x = np.zeros(shape, np.float64)
    weights = [1, 100, 10000, 1000000]  # d, t, h, b from the end
    for axis_from_end, weight in enumerate(weights):
        axis = len(shape) - 1 - axis_from_end
        if axis < 0:
            break
        idx = np.arange(shape[axis], dtype=np.float64)
        if axis_from_end == 1:
            idx = idx + base
        view = [1] * len(shape)
        view[axis] = shape[axis]
        x = x + weight * idx.reshape(view)
    if len(shape) < 2:  # No t axis: the tag (base + 0) still counts.
        x = x + base * 100
    return sign * x


def summarize(pair):
    k, v = pair
    dtype = "bfloat16" if k.dtype == np.uint16 else str(k.dtype)
    return {"k": json.loads(_replay_summary.summarize(k, dtype)),
            "v": json.loads(_replay_summary.summarize(v, dtype))}


def kv_state(cache):
    layers = []
    for layer in range(len(cache)):
        pair = cache.get(layer)
        entry = {"allocated": pair is not None,
                 "seq_len": cache.get_seq_length(layer),
                 "storage_shape": None}
        if pair is not None:
            entry["visible"] = summarize(pair)
        layers.append(entry)
    static = cache.get_max_cache_shape() is not None
    return {"cls": "StaticKVCache" if static else "DynamicKVCache",
            "num_slots": len(cache), "layers": layers,
            "max_cache_shape": cache.get_max_cache_shape()}


def make_kv_cache(ctor):
    if ctor["cls"] == "DynamicKVCache":
        return pagedkv.DynamicKVCache()
    if ctor["cls"] == "StaticKVCache":
        return pagedkv.StaticKVCache(max_cache_len=ctor["max_cache_len"],
                                     num_layers=ctor["num_layers"])
    raise AssertionError(f"unknown ctor {ctor}")


def make_cache(ctor):
    if ctor.get("cls") == "EncoderDecoderCache":
        halves = [None if ctor.get(h) is None else make_kv_cache(ctor[h])
                  for h in ("self", "cross")]
        return pagedkv.EncoderDecoderCache(*halves)
    return make_kv_cache(ctor)


def state(cache):
    if isinstance(cache, pagedkv.EncoderDecoderCache):
        return {"cls": "EncoderDecoderCache",
                "is_updated": {str(k): True for k in cache.is_updated},
                "max_cache_shape": cache.get_max_cache_shape(),
                "self": kv_state(cache.self_attention_cache),
                "cross": kv_state(cache.cross_attention_cache)}
    return kv_state(cache)


def to_array(value, dtype_name, default):
    """A JSON number or list as numpy would make it (ragged: the list)."""
    dtype = NUMPY_DTYPES[dtype_name or default]
    try:
        return np.array(value, dtype=dtype)
    except (ValueError, TypeError):
        return value  # Ragged or mixed: the binding must reject the list.


def run_op(cache, op):
    """Returns the op's result (raises on the op's own error)."""
    edc = isinstance(cache, pagedkv.EncoderDecoderCache)
    cross = bool(op.get("cross", False))
    if cross and not edc:
        raise ValueError("cross=true on a cache that is not encoder-decoder")
    kw = {"is_cross_attention": True} if cross else {}
    name = op["op"]
    if name == "update":
        dtype = NUMPY_DTYPES[op.get("kv_dtype", "float32")]
        key = pattern(op["shape"], op["base"], 1).astype(dtype)
        value = pattern(op.get("v_shape", op["shape"]), op["base"],
                        -1).astype(dtype)
        pos = op.get("pos")
        if pos is not None:
            pos = to_array(pos, op.get("pos_dtype"), "int32")
        return summarize(cache.update(key, value, op["layer"], pos, **kw))
    if name == "get":
        pair = cache.get(op["layer"], **kw)
        return None if pair is None else summarize(pair)
    if name == "get_seq_length":
        return cache.get_seq_length(op.get("layer", 0), **kw)
    if name in ("reorder_cache", "batch_select_indices"):
        idx = to_array(op["idx"], op.get("idx_dtype"), "int64")
        getattr(cache, name)(idx)
        return None
    if name == "batch_repeat_interleave":
        cache.batch_repeat_interleave(op["repeats"])
        return None
    if name == "crop":
        cache.crop(op["max_length"])
        return None
    if name == "reset":
        cache.reset()
        return None
    if name == "get_max_cache_shape":
        return cache.get_max_cache_shape()
    raise NotImplementedError(name)


def replay(scenario):
    cache = make_cache(scenario["ctor"])
    out = []
    for op in scenario["ops"]:
        try:
            result, failed = run_op(cache, op), False
        except (ValueError, IndexError, MemoryError, TypeError, KeyError,
                RuntimeError, NotImplementedError):
            result, failed = None, True
        out.append({"result": result, "failed": failed, "state": state(cache)})
    return out


def comparable(value):
    """Drops what FORMAT.md section 11 never compares (and messages)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()
                if k not in ("probe", "storage_shape", "num_slots")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


class GoldenReplayTest(unittest.TestCase):
    def test_every_golden_trace_matches_kv_replay(self):
        files = sorted(f for f in os.listdir(GOLDEN_DIR) if f.endswith(".json"))
        self.assertGreaterEqual(len(files), 13)
        total_ops = 0
        for name in files:
            path = os.path.join(GOLDEN_DIR, name)
            with open(path) as f:
                trace = json.load(f)
            cpp = json.loads(subprocess.run(
                [KV_REPLAY, path], check=True, capture_output=True,
                text=True).stdout)
            cpp_scenarios = {s["name"]: s for s in cpp["scenarios"]}
            for scenario in trace["scenarios"]:
                ours = replay(scenario)
                theirs = cpp_scenarios[scenario["name"]]["ops"]
                self.assertEqual(len(ours), len(theirs))
                for i, (a, b) in enumerate(zip(ours, theirs)):
                    where = f"{name} {scenario['name']} op#{i} ({b['op']})"
                    self.assertEqual(a["failed"], b["error"] is not None, where)
                    self.assertEqual(comparable(a["result"]),
                                     comparable(b["result"]), where)
                    self.assertEqual(comparable(a["state"]),
                                     comparable(b["state"]), where)
                    total_ops += 1
        self.assertGreater(total_ops, 2000)


if __name__ == "__main__":
    unittest.main()
