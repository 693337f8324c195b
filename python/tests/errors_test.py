"""Every Status code the binding maps, and TypeError for wrong Python types.

Each failing call must leave the object exactly as it was (C++'s contract,
kept by the binding's checks running before any C++ call that mutates).
"""

import threading
import unittest

import numpy as np

import pagedkv


def snapshot(cache):
    """Everything a user can read about a lucid cache."""
    layers = []
    for i in range(len(cache)):
        pair = cache.get(i)
        layers.append((cache.get_seq_length(i),
                       None if pair is None else (pair[0].tobytes(),
                                                  pair[1].tobytes(),
                                                  pair[0].shape)))
    stats = cache.stats()
    return (len(cache), cache.batch_size, layers, stats["blocks_in_use"],
            stats["blocks_reserved"])


def filled_dynamic(pool=None):
    cache = pagedkv.DynamicKVCache(pool)
    x = np.arange(2 * 2 * 5 * 4, dtype=np.float32).reshape(2, 2, 5, 4)
    cache.update(x, -x, 0)
    return cache


class StatusMappingTest(unittest.TestCase):
    def assert_raises_unchanged(self, cache, exc, code, fn, *args, **kwargs):
        before = snapshot(cache)
        with self.assertRaises(exc) as ctx:
            fn(*args, **kwargs)
        self.assertEqual(snapshot(cache), before)
        cache.check_invariants()
        if code is not None:
            self.assertEqual(getattr(ctx.exception, "status_code", None), code)
        return ctx.exception

    def test_invalid_argument_is_value_error(self):
        cache = filled_dynamic()
        x = np.ones((2, 2, 1, 4), np.float32)
        e = self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                         cache.update, x, x, -1)
        self.assertIn("layer", str(e))
        self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                     cache.batch_repeat_interleave, 0)
        self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                     cache.crop, -1)
        y = np.ones((3, 2, 1, 4), np.float32)  # batch differs
        self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                     cache.update, y, y, 0)
        z = np.ones((2, 2, 1, 4), np.float16)  # dtype changes
        self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                     cache.update, z, z, 0)
        self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                     cache.update, x, x, 0, cache_position=-3)
        self.assert_raises_unchanged(cache, ValueError, "INVALID_ARGUMENT",
                                     cache.update, x, x[:, :1], 0)
        self.assert_raises_unchanged(cache, ValueError, None,
                                     cache.update, x, x, 0,
                                     cache_position=np.zeros((1, 1, 1), int))
        self.assert_raises_unchanged(cache, ValueError, None,
                                     cache.reorder_cache, [[0, 1]])

    def test_out_of_range_is_index_error(self):
        cache = pagedkv.StaticKVCache(max_cache_len=6, num_layers=2)
        x = np.ones((2, 2, 5, 4), np.float32)
        cache.update(x, x, 0)
        two = np.ones((2, 2, 2, 4), np.float32)
        e = self.assert_raises_unchanged(cache, IndexError, "OUT_OF_RANGE",
                                         cache.update, two, two, 0)
        self.assertIn("6", str(e))
        self.assert_raises_unchanged(cache, IndexError, "OUT_OF_RANGE",
                                     cache.update, two[:, :, :1], two[:, :, :1],
                                     0, cache_position=6)
        self.assert_raises_unchanged(cache, IndexError, "OUT_OF_RANGE",
                                     cache.reorder_cache, [0, 2])
        self.assert_raises_unchanged(cache, IndexError, "OUT_OF_RANGE",
                                     cache.batch_select_indices,
                                     np.array([5], np.int64))

    def test_resource_exhausted_is_memory_error(self):
        pool = pagedkv.KVPool(num_layers=1, num_kv_heads=2, head_dim=4,
                              dtype="float32", num_blocks=2, block_tokens=4)
        cache = pagedkv.DynamicKVCache(pool)
        x = np.ones((2, 2, 4, 4), np.float32)
        cache.update(x, x, 0)  # Two rows of one full block each: pool full.
        self.assertEqual(pool.num_free_blocks, 0)
        one = np.ones((2, 2, 1, 4), np.float32)
        e = self.assert_raises_unchanged(cache, MemoryError,
                                         "RESOURCE_EXHAUSTED",
                                         cache.update, one, one, 0)
        self.assertIn("block", str(e))
        self.assertEqual(pool.num_free_blocks, 0)
        static = pagedkv.StaticKVCache(max_cache_len=8, num_layers=1, pool=pool)
        self.assert_raises_unchanged(static, MemoryError, "RESOURCE_EXHAUSTED",
                                     static.update, one, one, 0)

    def test_failed_precondition_is_runtime_error(self):
        m = pagedkv.KVCacheManager(num_layers=1, num_kv_heads=1, head_dim=4,
                                   dtype="float32", num_blocks=8,
                                   block_tokens=4, watermark=0.0)
        m.add_sequence(1, 4)
        m.preempt(1)
        before = m.stats()
        with self.assertRaises(RuntimeError) as ctx:
            m.append_slots([1])
        self.assertEqual(ctx.exception.status_code, "FAILED_PRECONDITION")
        self.assertEqual(m.stats(), before)
        m.check_invariants()

    def test_not_found_is_key_error_and_already_exists_value_error(self):
        m = pagedkv.KVCacheManager(num_layers=1, num_kv_heads=1, head_dim=4,
                                   dtype="float32", num_blocks=8,
                                   block_tokens=4, watermark=0.0)
        m.add_sequence(1, 3)
        before = m.stats()
        with self.assertRaises(KeyError) as ctx:
            m.append_slots(np.array([1, 99]))
        self.assertEqual(ctx.exception.status_code, "NOT_FOUND")
        self.assertIn("99", str(ctx.exception))
        self.assertEqual(m.num_tokens(1), 3)
        with self.assertRaises(ValueError) as ctx:
            m.add_sequence(1, 3)
        self.assertEqual(ctx.exception.status_code, "ALREADY_EXISTS")
        with self.assertRaises(ValueError) as ctx:
            m.append_slots([1, 1])  # an id twice: INVALID_ARGUMENT
        self.assertEqual(m.stats(), before)
        m.check_invariants()

    def test_status_exceptions_table(self):
        self.assertEqual(pagedkv.STATUS_EXCEPTIONS["INVALID_ARGUMENT"],
                         ValueError)
        self.assertEqual(pagedkv.STATUS_EXCEPTIONS["OUT_OF_RANGE"], IndexError)
        self.assertEqual(pagedkv.STATUS_EXCEPTIONS["RESOURCE_EXHAUSTED"],
                         MemoryError)
        self.assertEqual(pagedkv.STATUS_EXCEPTIONS["FAILED_PRECONDITION"],
                         RuntimeError)
        self.assertEqual(pagedkv.STATUS_EXCEPTIONS["NOT_FOUND"], KeyError)
        self.assertEqual(pagedkv.STATUS_EXCEPTIONS["ALREADY_EXISTS"],
                         ValueError)


class TypeErrorTest(unittest.TestCase):
    def test_wrong_python_types(self):
        cache = filled_dynamic()
        before = snapshot(cache)
        x = np.ones((2, 2, 1, 4), np.float32)
        bad_calls = [
            lambda: cache.update(x.tolist(), x, 0),          # not an ndarray
            lambda: cache.update(x.astype(np.float64), x.astype(np.float64), 0),
            lambda: cache.update(x.astype(np.int32), x.astype(np.int32), 0),
            lambda: cache.update(x, x, 0.0),                 # float layer
            lambda: cache.update(x, x, True),                # bool layer
            lambda: cache.update(x, x, 0, cache_position=1.0),
            lambda: cache.update(x, x, 0, cache_position=np.array([1.0])),
            lambda: cache.update(x, x, 0, cache_position=np.array(True)),
            lambda: cache.update(x, x, 0, cache_position="0"),
            lambda: cache.reorder_cache(np.array([True, False])),
            lambda: cache.reorder_cache([0.0, 1.0]),
            lambda: cache.reorder_cache("01"),
            lambda: cache.batch_repeat_interleave(2.0),
            lambda: cache.crop(None),
            lambda: cache.update(x, x, 0, dtype="bfloat16"),  # f32 array
            lambda: pagedkv.DynamicKVCache(pool="pool"),
            lambda: pagedkv.EncoderDecoderCache(cache, 3),
        ]
        for i, call in enumerate(bad_calls):
            with self.assertRaises(TypeError, msg=f"call #{i}"):
                call()
            self.assertEqual(snapshot(cache), before, f"call #{i}")

    def test_a_cache_is_adopted_once(self):
        a, b = pagedkv.DynamicKVCache(), pagedkv.DynamicKVCache()
        pagedkv.EncoderDecoderCache(a, b)
        with self.assertRaises(ValueError):
            pagedkv.EncoderDecoderCache(a, pagedkv.DynamicKVCache())
        with self.assertRaises(ValueError):
            c = pagedkv.DynamicKVCache()
            pagedkv.EncoderDecoderCache(c, c)


class ThreadTest(unittest.TestCase):
    def test_two_threads_on_one_cache_get_runtime_error_not_a_race(self):
        cache = pagedkv.DynamicKVCache()
        x = np.ones((4, 8, 256, 64), np.float32)  # Gathers long enough to
        cache.update(x, x, 0)                     # overlap without the GIL.
        token = np.ones((4, 8, 1, 64), np.float32)
        done, refused = [], []

        def work():
            for _ in range(20):
                try:
                    cache.update(token, token, 0)
                    done.append(1)
                    cache.get_seq_length(0)
                    len(cache)
                except RuntimeError as e:
                    refused.append(str(e))

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in refused:
            self.assertIn("in use by another thread", e)
        cache.check_invariants()
        self.assertEqual(cache.get_seq_length(0), 256 + len(done))


if __name__ == "__main__":
    unittest.main()
