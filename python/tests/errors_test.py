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


def manager_snapshot(m, seqs):
    """The manager's counters and each sequence's state, length and table."""
    per_seq = {}
    for seq in seqs:
        try:
            state = m.state(seq)
        except KeyError:
            per_seq[seq] = None
            continue
        table = (m.block_table(seq).tolist() if state == "running" else None)
        per_seq[seq] = (state, m.num_tokens(seq), table)
    return m.stats(), per_seq


class BadInputTableTest(unittest.TestCase):
    """One case per row of docs/bad-input-table.md's Python section: the
    exception, the canonical code, the numbers in the message, and nothing
    changed."""

    def check(self, label, before_fn, exc, code, numbers, fn):
        before = before_fn()
        with self.assertRaises(exc, msg=label) as ctx:
            fn()
        self.assertEqual(getattr(ctx.exception, "status_code", None), code,
                         label)
        for n in numbers:
            self.assertIn(str(n), str(ctx.exception), label)
        self.assertEqual(before_fn(), before, label)

    def test_cache_rows(self):
        full = np.ones((2, 2, 5, 4), np.float32)
        dyn = pagedkv.DynamicKVCache()
        dyn.update(full, full, 0)
        static = pagedkv.StaticKVCache(max_cache_len=6, num_layers=2)
        static.update(full, full, 0)
        x = np.ones((2, 2, 1, 4), np.float32)
        two = np.ones((2, 2, 2, 4), np.float32)
        wide = np.ones((2, 3, 1, 4), np.float32)
        deep = np.ones((2, 2, 1, 8), np.float32)
        bad = "INVALID_ARGUMENT"
        rows = [
            ("static layer", static, ValueError, bad, [2],
             lambda: static.update(x, x, 2)),
            ("dynamic layer past the limit", dyn, ValueError, bad, [100000],
             lambda: dyn.update(x, x, 100000)),
            ("rank 3 key", dyn, ValueError, bad, [],
             lambda: dyn.update(x[0], x[0], 0)),
            ("key/value dtypes differ", dyn, ValueError, bad,
             ["float16", "float32"],
             lambda: dyn.update(x, x.astype(np.float16), 0)),
            ("heads differ", dyn, ValueError, bad, [3],
             lambda: dyn.update(wide, wide, 0)),
            ("head_dim differs", dyn, ValueError, bad, [8],
             lambda: dyn.update(deep, deep, 0)),
            ("static zero tokens", static, ValueError, bad, [],
             lambda: static.update(x[:, :, :0], x[:, :, :0], 0)),
            ("0-D position, seq 2", dyn, ValueError, bad, [2],
             lambda: dyn.update(two, two, 0, cache_position=5)),
            ("1-D position of 3 for seq 2", dyn, ValueError, bad, [3, 2],
             lambda: dyn.update(two, two, 0, cache_position=[5, 6, 7])),
            ("2-D position 3 x 2", dyn, ValueError, bad, ["(3, 2)", "(2, 2)"],
             lambda: dyn.update(two, two, 0,
                                cache_position=np.zeros((3, 2), np.int64))),
            ("empty position list", dyn, ValueError, bad, [0],
             lambda: dyn.update(two, two, 0, cache_position=[])),
            ("negative wins over out of range", static, ValueError, bad, [-1],
             lambda: static.update(two, two, 0, cache_position=[9, -1])),
            ("get of a negative layer", dyn, ValueError, bad, [-1],
             lambda: dyn.get(-1)),
            ("static get of num_layers", static, ValueError, bad, [2],
             lambda: static.get(2)),
            ("get_seq_length of a negative layer", dyn, ValueError, bad, [-1],
             lambda: dyn.get_seq_length(-1)),
            ("negative select index", dyn, IndexError, "OUT_OF_RANGE", [-1],
             lambda: dyn.reorder_cache([0, -1])),
        ]
        for label, cache, exc, code, numbers, fn in rows:
            self.check(label, lambda: snapshot(cache), exc, code, numbers, fn)
        empty = pagedkv.DynamicKVCache()
        huge = np.ones(((1 << 20) + 1, 1, 1, 1), np.float32)  # 4 MB.
        self.check("batch past kMaxCacheBatch", lambda: snapshot(empty),
                   ValueError, bad, [(1 << 20) + 1, 1 << 20],
                   lambda: empty.update(huge, huge, 0))
        self.check("position past kMaxCacheTokens", lambda: snapshot(empty),
                   IndexError, "OUT_OF_RANGE", [1 << 24],
                   lambda: empty.update(huge[:1], huge[:1], 0,
                                        cache_position=1 << 24))
        dyn.check_invariants()
        static.check_invariants()

    def test_encoder_decoder_checks_both_halves_first(self):
        full = np.ones((2, 2, 5, 4), np.float32)
        self_half = pagedkv.DynamicKVCache()
        self_half.update(full, full, 0)
        cross = pagedkv.DynamicKVCache()
        cross.update(full[:1], full[:1], 0)  # Batch 1: index 1 is past it.
        edc = pagedkv.EncoderDecoderCache(self_half, cross)
        halves = lambda: (snapshot(edc.self_attention_cache),
                          snapshot(edc.cross_attention_cache))
        self.check("reorder past the cross half", halves, IndexError,
                   "OUT_OF_RANGE", [1], lambda: edc.reorder_cache([0, 1]))

    def test_create_rows(self):
        pool = pagedkv.KVPool(num_layers=1, num_kv_heads=2, head_dim=4,
                              dtype="float32", num_blocks=4, block_tokens=4)
        free = lambda: pool.num_free_blocks
        bad = "INVALID_ARGUMENT"
        rows = [
            ("dynamic block_tokens 0", ValueError, bad, [0],
             lambda: pagedkv.DynamicKVCache(block_tokens=0)),
            ("dynamic block_tokens 70000", ValueError, bad, [70000],
             lambda: pagedkv.DynamicKVCache(block_tokens=70000)),
            ("dynamic max_private_pool_bytes 0", ValueError, bad, [0],
             lambda: pagedkv.DynamicKVCache(max_private_pool_bytes=0)),
            ("static max_cache_len 0", ValueError, bad, [0],
             lambda: pagedkv.StaticKVCache(max_cache_len=0, num_layers=1)),
            ("static num_layers 0", ValueError, bad, [0],
             lambda: pagedkv.StaticKVCache(max_cache_len=4, num_layers=0)),
            ("static: more layers than the pool", ValueError, bad, [2, 1],
             lambda: pagedkv.StaticKVCache(max_cache_len=4, num_layers=2,
                                           pool=pool)),
            ("pool num_blocks 0", ValueError, bad, [0],
             lambda: pagedkv.KVPool(num_layers=1, num_kv_heads=2, head_dim=4,
                                    dtype="float32", num_blocks=0)),
            ("pool num_kv_heads 0", ValueError, bad, ["kv_heads=0"],
             lambda: pagedkv.KVPool(num_layers=1, num_kv_heads=0, head_dim=4,
                                    dtype="float32", num_blocks=4)),
        ]
        for label, exc, code, numbers, fn in rows:
            self.check(label, free, exc, code, numbers, fn)
        cache = pagedkv.DynamicKVCache(pool)
        three = np.ones((1, 3, 1, 4), np.float32)
        self.check("geometry the pool was not built for",
                   lambda: (snapshot(cache), free()), ValueError, bad,
                   ["kv_heads=2", "(1, 3, 1, 4)"],
                   lambda: cache.update(three, three, 0))
        pool.check_invariants()

    def test_manager_rows(self):
        def make(**kwargs):
            options = dict(num_layers=1, num_kv_heads=1, head_dim=4,
                           dtype="float32", num_blocks=8, block_tokens=4,
                           watermark=0.0)
            options.update(kwargs)
            return pagedkv.KVCacheManager(**options)

        for kwargs, number in [({"num_blocks": 0}, 0), ({"watermark": 1.0}, 1),
                               ({"num_host_blocks": -1}, -1)]:
            with self.assertRaises(ValueError) as ctx:
                make(**kwargs)
            self.assertEqual(ctx.exception.status_code, "INVALID_ARGUMENT")
            self.assertIn(str(number), str(ctx.exception))

        m = make(num_host_blocks=4)
        m.add_sequence(1, 5, 3)
        m.add_sequence(2, 3, 1)
        m.preempt(2)
        seqs = [1, 2, 3, 9]
        before = lambda: manager_snapshot(m, seqs)
        # A malformed count is ValueError, as add_sequence's; a well-formed
        # request that can never fit is "never".
        self.assertEqual(m.can_admit(1 << 40, 0), "never")
        bad, oor = "INVALID_ARGUMENT", "OUT_OF_RANGE"
        pre = "FAILED_PRECONDITION"
        rows = [
            ("admit an empty prompt", ValueError, bad, [0],
             lambda: m.can_admit(0, 1)),
            ("admit a negative prompt", ValueError, bad, [-1],
             lambda: m.can_admit(prompt_tokens=-1)),
            ("admit negative max_new_tokens", ValueError, bad, [-1],
             lambda: m.can_admit(4, -1)),
            ("add an empty prompt", ValueError, bad, [0],
             lambda: m.add_sequence(3, 0)),
            ("add negative max_new_tokens", ValueError, bad, [-1],
             lambda: m.add_sequence(3, 3, -1)),
            ("add a prompt past the limit", ValueError, bad, [1 << 40],
             lambda: m.add_sequence(3, 1 << 40)),
            ("add a preempted id", ValueError, "ALREADY_EXISTS", [2],
             lambda: m.add_sequence(2, 3)),
            ("append zero tokens", ValueError, bad, [0],
             lambda: m.append_slots([1], 0)),
            ("append negative tokens", ValueError, bad, [-1],
             lambda: m.append_slots([1], -1)),
            ("fork an unknown parent", KeyError, "NOT_FOUND", [9],
             lambda: m.fork(9, 3)),
            ("fork onto itself", ValueError, "ALREADY_EXISTS", [1],
             lambda: m.fork(1, 1)),
            ("fork a preempted parent", RuntimeError, pre, [2],
             lambda: m.fork(2, 3)),
            ("free an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.free(9)),
            ("truncate past the length", IndexError, oor, [9, 5],
             lambda: m.truncate(1, 9)),
            ("truncate to a negative length", ValueError, bad, [-1],
             lambda: m.truncate(1, -1)),
            ("truncate an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.truncate(9, 1)),
            ("truncate a preempted sequence", RuntimeError, pre, [2],
             lambda: m.truncate(2, 1)),
            ("preempt an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.preempt(9)),
            ("preempt a preempted sequence", RuntimeError, pre, [2],
             lambda: m.preempt(2)),
            ("readmit a running sequence", RuntimeError, pre, [1],
             lambda: m.readmit(1)),
            ("swap in a running sequence", RuntimeError, pre, [1],
             lambda: m.swap_in(1)),
            ("complete a swap nothing pends", RuntimeError, pre, [1],
             lambda: m.complete_swap(1)),
            ("state of an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.state(9)),
            ("length of an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.num_tokens(9)),
            ("table of an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.block_table(9)),
            ("table of a preempted sequence", RuntimeError, pre, [2],
             lambda: m.block_table(2)),
            ("export a too-narrow dense table", ValueError, bad, [2, 1],
             lambda: m.export_dense(np.array([1]), np.zeros((1, 1), np.int32),
                                    np.zeros(1, np.int32))),
            ("export an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.export_dense(np.array([9]), np.zeros((1, 4), np.int32),
                                    np.zeros(1, np.int32))),
            ("export a preempted id", RuntimeError, pre, [2],
             lambda: m.export_dense(np.array([2]), np.zeros((1, 4), np.int32),
                                    np.zeros(1, np.int32))),
            ("export a too-small CSR", ValueError, bad, [1, 2],
             lambda: m.export_csr(np.array([1]), np.zeros(2, np.int32),
                                  np.zeros(1, np.int32),
                                  np.zeros(1, np.int32))),
            ("export a too-small kv_indptr", ValueError, bad, [1, 2],
             lambda: m.export_csr(np.array([1]), np.zeros(1, np.int32),
                                  np.zeros(4, np.int32),
                                  np.zeros(1, np.int32))),
            ("export a too-small seq_lens", ValueError, bad, [0, 1],
             lambda: m.export_dense(np.array([1]), np.zeros((1, 4), np.int32),
                                    np.zeros(0, np.int32))),
            ("export with max_blocks 0", ValueError, bad, [0],
             lambda: m.export_dense(np.array([1]), np.zeros((1, 0), np.int32),
                                    np.zeros(1, np.int32))),
            ("swap out an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.swap_out(9)),
            ("swap in an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.swap_in(9)),
            ("readmit an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.readmit(9)),
            ("complete a swap of an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.complete_swap(9)),
        ]
        for label, exc, code, numbers, fn in rows:
            self.check(label, before, exc, code, numbers, fn)
        m.check_invariants()

        no_host = make()
        no_host.add_sequence(1, 3)
        self.check("swap out without a host tier",
                   lambda: manager_snapshot(no_host, [1]), RuntimeError, pre,
                   [0], lambda: no_host.swap_out(1))
        # Books-only: a swap stays pending until complete_swap (host
        # storage copies at once).
        pending = make(storage="books_only", num_host_blocks=4)
        pending.add_sequence(4, 3)
        pending.swap_out(4)
        self.assertEqual(pending.state(4), "swapping out")
        for label, fn in [("free during a pending swap",
                           lambda: pending.free(4)),
                          ("swap out during a pending swap",
                           lambda: pending.swap_out(4)),
                          ("swap in during a pending swap",
                           lambda: pending.swap_in(4))]:
            self.check(label, lambda: manager_snapshot(pending, [4]),
                       RuntimeError, pre, [4], fn)
        pending.check_invariants()
        reserved = make(admission="reservation")
        reserved.add_sequence(1, 10, 6)
        self.check("append past the reservation",
                   lambda: manager_snapshot(reserved, [1]), IndexError, oor,
                   [10, 7, 16], lambda: reserved.append_slots([1], 7))

    def test_prefix_rows(self):
        m = pagedkv.KVCacheManager(num_layers=1, num_kv_heads=1, head_dim=4,
                                   dtype="float32", num_blocks=8,
                                   block_tokens=4, watermark=0.0,
                                   prefix_caching=True)
        m.add_sequence(1, np.arange(6), 4)
        m.commit_tokens([1], [4])
        m.add_sequence(2, 3)  # By count: no token ids.
        before = lambda: manager_snapshot(m, [1, 2, 9])
        oor = "OUT_OF_RANGE"
        rows = [
            ("one id too many", ValueError, None, [2, 1],
             lambda: m.append_slots([1], token_ids=[1, 2])),
            ("commit past the tokens", IndexError, oor, [9],
             lambda: m.append_slots([1], token_ids=[1], commit=[9])),
            ("commit below the last commit", IndexError, oor, [2, 4, 6],
             lambda: m.commit_tokens([1], [2])),
            ("commit past the tokens", IndexError, oor, [7, 4, 6],
             lambda: m.commit_tokens([1], [7])),
            ("commit an unknown id", KeyError, "NOT_FOUND", [9],
             lambda: m.commit_tokens([9], [1])),
            ("commit a sequence added by count", RuntimeError,
             "FAILED_PRECONDITION", [2], lambda: m.commit_tokens([2], [1])),
        ]
        for label, exc, code, numbers, fn in rows:
            self.check(label, before, exc, code, numbers, fn)
        m.check_invariants()


class UnusedArgumentTest(unittest.TestCase):
    """An argument the object would ignore, or a value it cannot use, is
    ValueError (INVALID_ARGUMENT) naming it, and changes nothing."""

    def assert_bad(self, name, fn, before=None):
        snap = before() if before else None
        with self.assertRaises(ValueError) as ctx:
            fn()
        self.assertEqual(getattr(ctx.exception, "status_code", None),
                         "INVALID_ARGUMENT", name)
        self.assertIn(name, str(ctx.exception))
        if before:
            self.assertEqual(before(), snap, name)

    def test_private_pool_options_with_a_kvpool(self):
        pool = pagedkv.KVPool(num_layers=2, num_kv_heads=4, head_dim=8,
                              dtype="float32", num_blocks=4)
        self.assert_bad("block_tokens", lambda: pagedkv.DynamicKVCache(
            pool, block_tokens=8))
        self.assert_bad("max_private_pool_bytes",
                        lambda: pagedkv.DynamicKVCache(
                            pool, max_private_pool_bytes=5))
        self.assert_bad("block_tokens", lambda: pagedkv.StaticKVCache(
            8, 2, pool, block_tokens=8))
        self.assertEqual(pool.num_used_blocks, 0)

    def test_prefix_arguments_without_prefix_caching(self):
        def make(**kwargs):
            return pagedkv.KVCacheManager(num_layers=2, num_kv_heads=2,
                                          head_dim=8, dtype="float16",
                                          num_blocks=8, **kwargs)

        m = make()
        m.add_sequence(1, 3)
        before = lambda: manager_snapshot(m, [1, 2])
        self.assert_bad("prompt_tokens",
                        lambda: m.add_sequence(2, prompt_tokens=np.arange(5)),
                        before)
        self.assert_bad("prompt_tokens",
                        lambda: m.can_admit(np.arange(5)), before)
        self.assert_bad("tenant_salt",
                        lambda: m.add_sequence(2, 5, tenant_salt=3), before)
        self.assert_bad("token_ids", lambda: m.append_slots(
            np.array([1]), token_ids=np.array([5])), before)
        self.assert_bad("commit", lambda: m.append_slots(
            np.array([1]), commit=np.array([1])), before)
        # A prefix-only method is the C++ FAILED_PRECONDITION, as before.
        with self.assertRaises(RuntimeError) as ctx:
            m.commit_tokens([1], [1])
        self.assertEqual(ctx.exception.status_code, "FAILED_PRECONDITION")
        for name, kwargs in [("hasher", {"hasher": "sha256"}),
                             ("max_pending_events",
                              {"max_pending_events": 4}),
                             ("max_step_tokens", {"max_step_tokens": 4})]:
            self.assert_bad(name, lambda: make(**kwargs))
        # The same arguments work where they are used.
        p = make(prefix_caching=True, hasher="sha256", max_pending_events=4)
        p.add_sequence(1, np.arange(5), tenant_salt=3)
        p.append_slots([1], token_ids=[9], commit=[5])
        self.assertEqual(p.can_admit(np.arange(5), tenant_salt=3), "admit")
        # A count never reaches the prefix cache: a salt with it is unused.
        self.assert_bad("tenant_salt", lambda: p.add_sequence(2, 5,
                                                              tenant_salt=3))
        make(layer_groups=[(1, 0), (1, 8)], max_step_tokens=4)

    def test_values_that_are_rejected(self):
        def make(**kwargs):
            return pagedkv.KVCacheManager(num_layers=2, num_kv_heads=2,
                                          head_dim=8, dtype="float16",
                                          num_blocks=8, **kwargs)

        self.assert_bad("max_pending_events", lambda: make(
            prefix_caching=True, max_pending_events=-1))
        self.assert_bad("max_step_tokens", lambda: make(
            layer_groups=[(1, 0), (1, 8)], max_step_tokens=-1))
        p = make(prefix_caching=True)
        p.add_sequence(1, np.arange(4))
        before = lambda: manager_snapshot(p, [1, 3])
        self.assert_bad("prompt_tokens[0]", lambda: p.add_sequence(
            3, prompt_tokens=np.array([-1, 2, 3])), before)
        self.assert_bad("prompt_tokens", lambda: p.can_admit([1, -2]), before)
        self.assert_bad("token_ids", lambda: p.append_slots(
            [1], token_ids=[-5]), before)
        self.assert_bad("new_length", lambda: p.truncate(1, -1), before)
        for name, call in [
                ("prefix_caching", lambda: make(prefix_caching="yes")),
                ("prefix_caching", lambda: make(prefix_caching=1)),
                ("storage", lambda: make(storage=1)),
                ("hasher", lambda: make(prefix_caching=True, hasher=3))]:
            with self.assertRaises(TypeError) as ctx:
                call()
            self.assertIn(name, str(ctx.exception))
            self.assertNotIn("incompatible", str(ctx.exception))
        make(prefix_caching=np.bool_(True))

    def test_a_pool_past_physical_memory_is_memory_error(self):
        with self.assertRaises(MemoryError) as ctx:
            pagedkv.KVPool(num_layers=2, num_kv_heads=4, head_dim=8,
                           dtype="float32", num_blocks=10**8)
        self.assertEqual(ctx.exception.status_code, "RESOURCE_EXHAUSTED")
        self.assertIn("100000000 blocks of 8192 bytes", str(ctx.exception))
        self.assertIn("physical memory", str(ctx.exception))
        with self.assertRaises(MemoryError):  # The device pool and host tier.
            pagedkv.KVCacheManager(num_layers=2, num_kv_heads=4, head_dim=8,
                                   dtype="float32", num_blocks=8,
                                   num_host_blocks=2**31 - 1)
        # Books-only allocates no bytes: the same count is fine.
        pagedkv.KVCacheManager(num_layers=2, num_kv_heads=4, head_dim=8,
                               dtype="float32", num_blocks=10**6,
                               storage="books_only")


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
