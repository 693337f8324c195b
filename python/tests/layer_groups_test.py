"""KVCacheManager(layer_groups=...) from Python: group-major slots, group
tables against a model of what a window releases, the per-group dense
export (group_table_export.h's worked example) and the errors."""

import unittest

import numpy as np

import pagedkv

HOLE = -1


def make_manager(groups, **kwargs):
    options = dict(num_layers=sum(n for n, _ in groups), num_kv_heads=1,
                   head_dim=4, dtype="float16", num_blocks=64, block_tokens=4,
                   storage="books_only", watermark=0.0, layer_groups=groups)
    options.update(kwargs)
    return pagedkv.KVCacheManager(**options)


def first_needed_block(computed, window, bt):
    """allocator/window_table.h's WindowFirstNeededBlock: the next token
    (position `computed`) reads [computed - window + 1, computed]."""
    first_token = computed - window + 1
    return first_token // bt if first_token > 0 else 0


class Model:
    """A sequence's length and the tokens computed before its last step."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.computed = 0


class LayerGroupsTest(unittest.TestCase):
    def check_slots(self, m, slots, steps):
        """steps: (seq, first token, count) per request, in order."""
        bt = m.block_tokens
        total = sum(n for _, _, n in steps)
        self.assertEqual(m.group_stride, total)
        runs = slots.reshape(m.num_layer_groups, m.group_stride)
        offsets = m.request_offsets
        for g in range(m.num_layer_groups):
            for i, (seq, first, n) in enumerate(steps):
                table = m.group_table(seq, g)
                for j in range(n):
                    slot = runs[g, offsets[i] + j]
                    self.assertEqual(slot // bt, table[(first + j) // bt])
                    self.assertEqual(slot % bt, (first + j) % bt)

    def check_tables(self, m, groups, model):
        bt = m.block_tokens
        live = []
        holes = 0
        for seq, md in model.items():
            self.assertEqual(m.num_tokens(seq), md.tokens)
            for g, (_, window) in enumerate(groups):
                table = m.group_table(seq, g)
                self.assertEqual(table.dtype, np.int32)
                self.assertEqual(len(table), -(-md.tokens // bt))
                first = (first_needed_block(md.computed, window, bt)
                         if window > 0 else 0)
                for i, block in enumerate(table):
                    if i < first:
                        self.assertEqual(block, HOLE, (seq, g, i))
                        holes += 1
                    else:
                        self.assertGreaterEqual(block, 0, (seq, g, i))
                        live.append(int(block))
        self.assertEqual(len(live), len(set(live)), "a block held twice")
        self.assertEqual(m.stats()["used_blocks"], len(live))
        # No forks or frees: every hole is a block a window gave back.
        self.assertEqual(m.window_released_blocks, holes)
        m.check_invariants()

    def test_decode_loop_matches_a_model_of_the_window(self):
        groups = [(2, 0), (2, 5)]  # One full group, one window of 5.
        for seed in range(4):
            rng = np.random.default_rng(seed)
            m = make_manager(groups)
            self.assertEqual(m.num_layer_groups, 2)
            model = {}
            for seq in (1, 2):
                prompt = int(rng.integers(1, 13))
                slots = m.add_sequence(seq, prompt, 64)
                self.assertEqual(len(slots), 2 * prompt)
                model[seq] = Model(prompt)
                self.check_slots(m, slots, [(seq, 0, prompt)])
                self.check_tables(m, groups, model)
            for _ in range(25):
                counts = [int(rng.integers(1, 4)) if rng.integers(4) == 0
                          else 1 for _ in model]
                steps = [(seq, md.tokens, n)
                         for (seq, md), n in zip(model.items(), counts)]
                slots = m.append_slots(list(model), counts)
                self.assertEqual(len(slots), 2 * sum(counts))
                for (seq, md), n in zip(model.items(), counts):
                    md.computed = md.tokens
                    md.tokens += n
                self.check_slots(m, slots, steps)
                self.check_tables(m, groups, model)
            self.assertGreater(m.window_released_blocks, 0)
            for seq in model:
                m.free(seq)
            self.assertEqual(m.stats()["used_blocks"], 0)

    def test_dense_group_export_header_example(self):
        # group_table_export.h: block_tokens 4, group 0 full, group 1 a
        # window of 4; sequence 1 has 10 tokens after a one-token step.
        m = make_manager([(2, 0), (2, 4)], num_blocks=32)
        m.add_sequence(1, 9, 10)
        m.append_slots([1])
        w = m.group_table(1, 1)
        tables = np.full((1, 4), 7, np.int32)
        lens = np.zeros(1, np.int32)
        m.export_dense_group(1, [1], tables, lens)
        self.assertEqual(tables.tolist(), [[-1, w[1], w[2], 0]])
        self.assertEqual(lens.tolist(), [10])
        f = m.group_table(1, 0)
        m.export_dense_group(0, np.array([1], np.int64), tables, lens)
        self.assertEqual(tables[0, :3].tolist(), f.tolist())  # No hole.
        self.assertNotIn(-1, f.tolist())
        m.export_dense_group(1, [1], tables, lens, pad_id=-2, hole_id=-9)
        self.assertEqual(tables.tolist(), [[-9, w[1], w[2], -2]])
        # Bad input writes nothing.
        untouched = np.full((1, 2), 7, np.int32)
        with self.assertRaises(ValueError) as ctx:  # A row of 3 in 2.
            m.export_dense_group(1, [1], untouched, lens)
        self.assertEqual(ctx.exception.status_code, "INVALID_ARGUMENT")
        untouched = np.full((1, 4), 7, np.int32)
        with self.assertRaises(IndexError) as ctx:
            m.export_dense_group(2, [1], untouched, lens)
        self.assertEqual(ctx.exception.status_code, "OUT_OF_RANGE")
        with self.assertRaises(KeyError) as ctx:
            m.export_dense_group(1, [9], untouched, lens)
        self.assertEqual(ctx.exception.status_code, "NOT_FOUND")
        with self.assertRaises(TypeError):
            m.export_dense_group(1, [1], untouched.ravel(), lens)
        self.assertEqual(untouched.tolist(), [[7] * 4])


def books(m, seqs):
    """What a caller can read of a grouped manager's books."""
    tables = [(seq, g, m.group_table(seq, g).tolist(), m.num_tokens(seq))
              for seq in seqs for g in range(m.num_layer_groups)]
    return tables, m.stats()["used_blocks"], m.window_released_blocks


class LayerGroupsErrorsTest(unittest.TestCase):
    def assert_status(self, exc, code, fn, *args, **kwargs):
        with self.assertRaises(exc) as ctx:
            fn(*args, **kwargs)
        self.assertEqual(getattr(ctx.exception, "status_code", None), code)
        return ctx.exception

    def test_bad_calls_are_the_mapped_status_and_change_nothing(self):
        m = make_manager([(2, 0), (2, 8)])
        m.add_sequence(1, 6, 10)
        m.append_slots([1])
        before = books(m, [1])
        e = self.assert_status(IndexError, "OUT_OF_RANGE", m.group_table, 1, 2)
        self.assertIn("layer group 2 of a manager with 2", str(e))
        self.assert_status(IndexError, "OUT_OF_RANGE", m.group_table, 1, -1)
        self.assert_status(KeyError, "NOT_FOUND", m.group_table, 9, 0)
        # Calls not implemented with groups yet.
        self.assert_status(NotImplementedError, "UNIMPLEMENTED",
                           m.block_table, 1)
        e = self.assert_status(RuntimeError, "FAILED_PRECONDITION",
                               m.swap_out, 1)
        self.assertIn("no host tier", str(e))
        # A caller's slot buffer must hold every group's run.
        out = np.zeros(1, np.int64)  # One token, two groups: 2 slots.
        with self.assertRaises(ValueError) as ctx:
            m.append_slots([1], out=out)
        self.assertIn("need 2", str(ctx.exception))
        self.assertEqual(books(m, [1]), before)
        out = np.zeros(2, np.int64)
        slots = m.append_slots([1], out=out)
        self.assertEqual(len(slots), 2)
        self.assertEqual(m.num_tokens(1), 8)
        m.preempt(1)
        self.assert_status(RuntimeError, "FAILED_PRECONDITION",
                           m.group_table, 1, 0)
        m.check_invariants()

    def test_bad_groups_at_construction(self):
        e = self.assert_status(ValueError, "INVALID_ARGUMENT", make_manager,
                               [(3, 0), (1, 8)])
        self.assertIn("group 1 has 1 layers, group 0 has 3", str(e))
        e = self.assert_status(ValueError, "INVALID_ARGUMENT", make_manager,
                               [(2, 0), (2, -5)])
        self.assertIn("sliding_window is -5", str(e))
        self.assert_status(ValueError, "INVALID_ARGUMENT", make_manager,
                           [(2, 0), (2, 8)], max_step_tokens=-1)
        for malformed in ([(2, 0), 8], [(2, 0, 1), (2, 8, 1)],
                          [(2, 0), (2, 8.0)], {(2, 0): 1}):
            with self.assertRaises(TypeError) as ctx:
                make_manager([], num_layers=4, layer_groups=malformed)
            self.assertIn("layer_groups", str(ctx.exception))

    def test_prefix_hit_covers_each_window(self):
        # Blocks of 4, a full group and a window of 8: 32 committed tokens
        # and 5 more hit 8 blocks; the window group pins only blocks 6 and
        # 7 (the next token, 32, reads 25..32) and has holes below.
        m = make_manager([(2, 0), (2, 8)], prefix_caching=True)
        prompt = np.arange(100, 132, dtype=np.int32)
        m.add_sequence(1, prompt, 8)
        m.commit_tokens([1], [32])
        self.assertEqual(m.stats()["prefix"]["cached_blocks"], 16)
        full1 = m.group_table(1, 0)
        m.free(1)
        slots = m.add_sequence(2, np.concatenate([prompt, [7] * 5]), 8)
        self.assertEqual(m.num_cached_tokens, 32)
        self.assertEqual(len(slots), 2 * 5)  # Group-major, the new tokens.
        np.testing.assert_array_equal(m.group_table(2, 0)[:8], full1)
        window = m.group_table(2, 1)
        self.assertTrue(all(b == HOLE for b in window[:6]))
        self.assertTrue(all(b != HOLE for b in window[6:]))
        self.assertEqual(m.stats()["prefix"]["hit_blocks"], 8)
        m.check_invariants()

    def test_prefix_hit_without_a_full_group(self):
        # Mistral-style: one window group anchors the cache itself.
        m = make_manager([(4, 8)], prefix_caching=True)
        prompt = np.arange(100, 132, dtype=np.int32)
        m.add_sequence(1, prompt, 8)
        m.commit_tokens([1], [32])
        m.free(1)
        m.add_sequence(2, np.concatenate([prompt, [7] * 5]), 8)
        self.assertEqual(m.num_cached_tokens, 32)
        window = m.group_table(2, 0)
        self.assertTrue(all(b == HOLE for b in window[:6]))
        self.assertTrue(all(b != HOLE for b in window[6:]))
        m.check_invariants()

    def test_host_storage_runs_the_forked_tail_copy(self):
        # Host mode: kv_storage holds blocks of one group's 2 layers; a
        # fork's shared tail is copied by the manager in each group, bytes
        # included.
        m = make_manager([(2, 0), (2, 8)], storage="host", num_blocks=32)
        kv = m.kv_storage
        self.assertEqual(kv.shape[1], 2)  # Layers per block.
        slots = m.add_sequence(1, 5, 8).reshape(2, m.group_stride)
        for g in range(2):
            block, offset = divmod(int(slots[g, 4]), 4)
            kv[block, 1, 0, 0, offset, :] = 10 + g  # Token 4, layer 1, K.
        m.fork(1, 2)
        m.append_slots([1, 2])
        self.assertEqual(m.stats()["cow_copies"], 2)
        for g in range(2):
            a = m.group_table(1, g)[1]
            b = m.group_table(2, g)[1]
            self.assertNotEqual(a, b)
            for block in (a, b):
                np.testing.assert_array_equal(kv[block, 1, 0, 0, 0, :],
                                              10 + g)
        m.check_invariants()

    def test_books_only_swap_is_split_per_group(self):
        # Sequence 1: 9 tokens then one more, block_tokens 4; the window of
        # 4 released block 0 of group 1: group 0 swaps 3 blocks, group 1 2.
        m = make_manager([(2, 0), (2, 4)], num_blocks=32, num_host_blocks=8)
        m.add_sequence(1, 9, 10)
        m.append_slots([1])
        full, window = m.group_table(1, 0), m.group_table(1, 1)
        src, dst = m.swap_out(1)
        np.testing.assert_array_equal(m.swap_group_offsets, [0, 3, 5])
        np.testing.assert_array_equal(src, list(full) + list(window[1:]))
        self.assertEqual(len(set(dst.tolist())), 5)
        m.complete_swap(1)
        src_in, dst_in = m.swap_in(1)
        np.testing.assert_array_equal(src_in, dst)
        np.testing.assert_array_equal(m.swap_group_offsets, [0, 3, 5])
        m.complete_swap(1)
        self.assertEqual(m.group_table(1, 1)[0], -1)  # Still a hole.
        m.check_invariants()

    def test_a_manager_without_groups_says_so(self):
        m = make_manager([], num_layers=4, layer_groups=None)
        self.assertEqual(m.num_layer_groups, 0)
        m.add_sequence(1, 5, 4)
        self.assertEqual(m.group_stride, 0)
        self.assertEqual(m.window_released_blocks, 0)
        self.assert_status(RuntimeError, "FAILED_PRECONDITION",
                           m.group_table, 1, 0)
        tables = np.zeros((1, 4), np.int32)
        lens = np.zeros(1, np.int32)
        self.assert_status(RuntimeError, "FAILED_PRECONDITION",
                           m.export_dense_group, 0, [1], tables, lens)


if __name__ == "__main__":
    unittest.main()
