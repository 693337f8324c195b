"""No reference or memory leak over 10^5 binding calls.

Counts references of the arguments (sys.getrefcount), live gc objects and
the process's resident memory before and after, on the success and error
paths of the calls a decode loop makes.
"""

import gc
import sys
import unittest

import numpy as np

import pagedkv

CALLS = 100_000


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class LeakTest(unittest.TestCase):
    def test_no_leak_over_many_calls(self):
        cache = pagedkv.StaticKVCache(max_cache_len=4, num_layers=1)
        key = np.ones((1, 1, 1, 4), np.float32)
        value = -key
        pos = np.array([1], np.int64)
        beams = [0]
        manager = pagedkv.KVCacheManager(num_layers=1, num_kv_heads=1,
                                         head_dim=4, dtype="float32",
                                         num_blocks=8, block_tokens=4,
                                         watermark=0.0)
        manager.add_sequence(1, 2)
        seqs = np.array([1], np.int64)
        grouped = pagedkv.KVCacheManager(num_layers=2, num_kv_heads=1,
                                         head_dim=4, dtype="float32",
                                         num_blocks=8, block_tokens=4,
                                         storage="books_only", watermark=0.0,
                                         layer_groups=[(1, 0), (1, 8)])
        grouped.add_sequence(1, 2)
        tables = np.zeros((1, 2), np.int32)
        lens = np.zeros(1, np.int32)

        def one_round(i):
            k_all, _ = cache.update(key, value, 0, cache_position=pos)
            cache.reorder_cache(beams)
            cache.get_seq_length(0)
            manager.append_slots(seqs)
            manager.truncate(1, 2)
            grouped.append_slots(seqs)
            grouped.group_table(1, 1)
            grouped.export_dense_group(1, seqs, tables, lens)
            grouped.truncate(1, 2)
            if i % 10 == 0:  # The error path: exception objects are freed.
                try:
                    cache.update(key, value, -1)
                except ValueError:
                    pass
                try:
                    manager.free(99)
                except KeyError:
                    pass
                try:
                    grouped.group_table(1, 5)
                except IndexError:
                    pass
            return k_all

        for i in range(2000):  # Warm-up: caches, interned names, arenas.
            one_round(i)
        gc.collect()
        args = (key, value, pos, beams, seqs, tables, lens)
        refs = [sys.getrefcount(x) for x in args]
        objects = len(gc.get_objects())
        rss = resident_bytes()

        for i in range(CALLS // 11):  # ~11 binding calls per round.
            one_round(i)

        gc.collect()
        self.assertEqual([sys.getrefcount(x) for x in args], refs)
        self.assertLess(len(gc.get_objects()) - objects, 100)
        self.assertLess(resident_bytes() - rss, 4 << 20)
        cache.check_invariants()
        manager.check_invariants()
        grouped.check_invariants()


if __name__ == "__main__":
    unittest.main()
