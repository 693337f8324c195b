"""The serving manager from Python: steps, exports, copies, storage."""

import threading
import unittest

import numpy as np

import pagedkv


def make_manager(**kwargs):
    options = dict(num_layers=2, num_kv_heads=2, head_dim=4, dtype="float32",
                   num_blocks=16, block_tokens=4, watermark=0.0)
    options.update(kwargs)
    return pagedkv.KVCacheManager(**options)


class ManagerTest(unittest.TestCase):
    def test_token_ids_kept_by_the_server_publish_at_the_end(self):
        m = make_manager(prefix_caching=True, num_blocks=32)
        prompt = np.arange(100, 108)
        m.add_sequence(1, prompt, 16)
        m.commit_tokens([1], [8])
        for _ in range(5):  # Decode steps without ids.
            m.append_slots([1])
        self.assertEqual(m.stats()["prefix"]["cached_blocks"], 2)
        generated = np.arange(500, 505)
        with self.assertRaises(ValueError):  # Ids after a gap.
            m.append_slots([1], token_ids=[7])
        with self.assertRaises(ValueError):  # One list per sequence.
            m.commit_tokens([1], [12], token_ids=[generated, generated])
        m.commit_tokens([1], [12], token_ids=[generated])
        self.assertEqual(m.stats()["prefix"]["cached_blocks"], 3)
        m.add_sequence(2, np.concatenate([prompt, generated]), 4)
        self.assertEqual(m.num_cached_tokens, 12)

    def test_prefix_caching_serves_committed_prefixes(self):
        m = make_manager(prefix_caching=True, num_blocks=32,
                         max_pending_events=16)
        prompt = np.arange(100, 110)
        slots = m.add_sequence(1, prompt, 8)
        self.assertEqual(m.num_cached_tokens, 0)
        self.assertEqual(len(slots), 10)
        # Not committed: nothing to hit.
        m.add_sequence(2, prompt, 8)
        self.assertEqual(m.num_cached_tokens, 0)
        m.commit_tokens([1], [10])
        slots = m.add_sequence(3, prompt, 8)
        self.assertEqual(m.num_cached_tokens, 8)  # Two 4-token blocks.
        self.assertEqual(len(slots), 2)
        self.assertEqual(m.can_admit(prompt, 8), "admit")
        # Another tenant shares nothing.
        m.add_sequence(4, prompt, 8, tenant_salt=7)
        self.assertEqual(m.num_cached_tokens, 0)
        # A decode step: one id per new token, and the commit points.
        m.append_slots([1, 3], token_ids=[5, 6], commit=[10, 10])
        stats = m.stats()["prefix"]
        self.assertEqual(stats["hit_tokens"], 8)
        self.assertEqual(stats["queries"], 4)
        m.commit_tokens([4], [10])  # The salted prompt's two blocks.
        events = m.take_events()
        self.assertEqual(events[0]["kind"], "BlockStored")
        self.assertEqual(events[0]["token_ids"], list(range(100, 108)))
        # Unsalted blocks carry no extra keys; the salted ones carry salt 7,
        # one entry per block, and hash apart from the unsalted ones.
        self.assertEqual(events[0]["extra_keys"], [None, None])
        salted = [e for e in events if e["kind"] == "BlockStored"
                  and e["parent_hash"] == events[0]["parent_hash"]
                  and e is not events[0]]
        self.assertEqual(len(salted), 1)
        self.assertEqual(salted[0]["token_ids"], list(range(100, 108)))
        self.assertEqual(salted[0]["extra_keys"],
                         [{"tenant_salt": 7, "adapter_id": 0,
                           "multimodal_digest": 0}] * 2)
        self.assertTrue(set(salted[0]["block_hashes"]).isdisjoint(
            events[0]["block_hashes"]))
        for e in events:
            self.assertEqual(len(e["extra_keys"]),
                             len(e["block_hashes"]) if e["kind"] ==
                             "BlockStored" else 0)
        m.check_invariants()

    def test_prefix_caching_bad_input_changes_nothing(self):
        m = make_manager(prefix_caching=True)
        m.add_sequence(1, np.arange(6), 4)
        before = m.stats()
        with self.assertRaises(ValueError):  # Two ids for one token.
            m.append_slots([1], token_ids=[1, 2])
        with self.assertRaises(IndexError):  # Past its 6 tokens.
            m.append_slots([1], token_ids=[1], commit=[9])
        with self.assertRaises(ValueError):
            m.add_sequence(2, [1, 2**40], 4)
        with self.assertRaises(KeyError):
            m.commit_tokens([5], [1])
        self.assertEqual(m.stats(), before)
        with self.assertRaises(RuntimeError):  # No prefix caching.
            make_manager().commit_tokens([1], [1])
        with self.assertRaises(ValueError):
            make_manager(hasher="md5")

    def test_block_table_export_worked_example(self):
        # block_table_export.h's worked example, number by number.
        m = make_manager()
        m.add_sequence(7, 10)
        m.add_sequence(2, 4)
        m.fork(7, 8)
        m.append_slots([8])
        batch = np.array([7, 2, 8], np.int64)
        tables = np.zeros((3, 4), np.int32)
        lens = np.zeros(3, np.int32)
        m.export_dense(batch, tables, lens, pad_id=-1)
        np.testing.assert_array_equal(
            tables, [[0, 1, 2, -1], [3, -1, -1, -1], [0, 1, 4, -1]])
        np.testing.assert_array_equal(lens, [10, 4, 11])
        indptr = np.zeros(4, np.int32)
        indices = np.zeros(7, np.int32)
        last = np.zeros(3, np.int32)
        m.export_csr(batch, indptr, indices, last)
        np.testing.assert_array_equal(indptr, [0, 3, 4, 7])
        np.testing.assert_array_equal(indices, [0, 1, 2, 3, 0, 1, 4])
        np.testing.assert_array_equal(last, [2, 4, 3])
        self.assertEqual(m.export_sizes(batch)["total_blocks"], 7)
        m.check_invariants()

    def test_one_call_per_step_gives_each_token_its_slot(self):
        m = make_manager()
        seqs = np.arange(3, dtype=np.int64)
        for s in seqs:
            slots = m.add_sequence(int(s), 3, max_new_tokens=4)
            self.assertEqual(slots.dtype, np.int64)
        out = np.zeros(8, np.int64)
        for _ in range(4):
            slots = m.append_slots(seqs, 1, out=out)
            self.assertEqual(len(slots), 3)
            for s, slot in zip(seqs, slots):
                table = m.block_table(int(s))
                t = m.num_tokens(int(s)) - 1
                self.assertEqual(slot, table[t // 4] * 4 + t % 4)
        np.testing.assert_array_equal(m.request_offsets, [0, 1, 2, 3])
        slots = m.append_slots(seqs, np.array([2, 1, 3], np.int32))
        self.assertEqual(len(slots), 6)
        np.testing.assert_array_equal(m.request_offsets, [0, 2, 3, 6])
        with self.assertRaises(ValueError):  # out too small: nothing changes
            m.append_slots(seqs, 1, out=np.zeros(2, np.int64))
        self.assertEqual(m.num_tokens(0), 9)

    def test_books_only_copies_and_swaps_are_arrays(self):
        m = make_manager(storage="books_only", num_host_blocks=8)
        self.assertIsNone(m.kv_storage)
        m.add_sequence(1, 6)
        m.fork(1, 2)
        m.append_slots([2])
        copies = m.copies
        self.assertEqual(copies.shape, (1, 2))
        self.assertEqual(copies.dtype, np.int32)
        self.assertEqual(copies[0, 0], m.block_table(1)[1])
        self.assertEqual(copies[0, 1], m.block_table(2)[1])
        m.mark_copies_done()
        self.assertEqual(m.copies.shape, (0, 2))
        src, dst = m.swap_out(1)
        self.assertEqual(len(src), 2)
        self.assertEqual(m.state(1), "swapping out")
        m.complete_swap(1)
        self.assertEqual(m.state(1), "swapped out")
        m.check_invariants()

    def test_host_storage_is_a_zero_copy_view(self):
        m = make_manager()
        slots = m.add_sequence(5, 3)
        storage = m.kv_storage
        self.assertEqual(storage.shape, (16, 2, 2, 2, 4, 4))
        block, offset = divmod(int(slots[2]), m.block_tokens)
        storage[block, 1, 0, :, offset, :] = 7.0
        self.assertEqual(float(m.kv_storage[block, 1, 0, 1, offset, 3]), 7.0)
        del m
        storage[0, 0, 0, 0, 0, 0] = 1.0  # The view keeps the manager alive.

    def test_a_second_thread_gets_runtime_error_not_a_race(self):
        m = make_manager(num_blocks=4096, block_tokens=1)
        seqs = np.arange(64, dtype=np.int64)
        for s in seqs:
            m.add_sequence(int(s), 1)
        errors = []

        def work():
            for _ in range(200):
                try:
                    m.append_slots(seqs)
                    m.truncate(int(seqs[0]), 1)
                except RuntimeError as e:
                    errors.append(str(e))
                except MemoryError:
                    return

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in errors:
            self.assertIn("in use by another thread", e)
        m.check_invariants()


if __name__ == "__main__":
    unittest.main()
