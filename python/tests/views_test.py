"""Zero-copy paged views: equal to the gathered copies after every kind of
remap, and safe to hold after their cache and pool are gone."""

import gc
import unittest

import numpy as np

import pagedkv


def gather(view):
    """Rebuilds (k, v) of shape (batch, heads, length, dim) from a view."""
    bt = view.block_tokens
    length = int(view.lengths[0]) if len(view.lengths) else 0
    t = view.starts[:, None].astype(np.int64) + np.arange(length)[None, :]
    blocks = np.take_along_axis(view.block_tables, t // bt, axis=1)
    slots = t % bt
    k = view.key_blocks[blocks, :, slots, :].transpose(0, 2, 1, 3)
    v = view.value_blocks[blocks, :, slots, :].transpose(0, 2, 1, 3)
    return k, v


def data_pointer(array):
    return array.__array_interface__["data"][0]


class PagedViewTest(unittest.TestCase):
    def setUp(self):
        self.pool = pagedkv.KVPool(num_layers=2, num_kv_heads=2, head_dim=8,
                                   dtype="float16", num_blocks=64,
                                   block_tokens=4)
        self.cache = pagedkv.DynamicKVCache(self.pool)
        rng = np.random.default_rng(7)
        self.rng = rng
        x = rng.standard_normal((2, 2, 10, 8)).astype(np.float16)
        self.cache.update(x, -x, 0)
        self.cache.update(x * 2, -x * 2, 1)

    def assert_view_matches(self):
        for layer in range(len(self.cache)):
            view = self.cache.paged_view(layer)
            k, v = self.cache.get(layer)
            gk, gv = gather(view)
            np.testing.assert_array_equal(gk, k)
            np.testing.assert_array_equal(gv, v)
            self.assertEqual(view.block_tables.dtype, np.int32)
            self.assertEqual(view.starts.dtype, np.int32)
            self.assertEqual(view.lengths.dtype, np.int32)
            self.assertFalse(view.storage.flags.writeable)

    def step(self):
        b = self.cache.batch_size
        x = self.rng.standard_normal((b, 2, 1, 8)).astype(np.float16)
        for layer in range(2):
            self.cache.update(x + layer, -x, layer)

    def test_views_equal_gathered_after_remaps_and_copy_on_write(self):
        self.assert_view_matches()
        self.cache.batch_repeat_interleave(3)         # rows share blocks
        self.assert_view_matches()
        self.cache.reorder_cache([5, 0, 3, 3, 1, 2])
        self.assert_view_matches()
        self.step()                                    # copy-on-write tails
        self.assertGreater(self.cache.stats()["cow_copies"], 0)
        self.assert_view_matches()
        self.cache.crop(6)                             # window mid-block
        self.assert_view_matches()
        # 11 tokens cropped to the last 6: the first whole block went back
        # to the pool, and the window starts at token 1 of the next.
        self.assertEqual(int(self.cache.paged_view(0).starts[0]), 1)
        self.step()
        self.cache.batch_select_indices([1, 4])
        self.assert_view_matches()

    def test_update_without_copies_then_read_in_place(self):
        x = np.ones((2, 2, 1, 8), np.float16)
        self.assertIsNone(self.cache.update(x, x, 0, return_kv=False))
        self.assertEqual(self.cache.get_seq_length(0), 11)
        self.assert_view_matches()

    def test_views_are_zero_copy(self):
        view = self.cache.paged_view(0)
        self.assertEqual(data_pointer(view.storage),
                         data_pointer(self.pool.storage))
        self.assertEqual(view.storage.shape, (64, 2, 2, 2, 4, 8))
        self.assertEqual(view.key_blocks.shape, (64, 2, 4, 8))

    def test_view_keeps_the_pool_alive_after_cache_and_pool_are_gone(self):
        view = self.cache.paged_view(1)
        k, _ = self.cache.get(1)
        storage = self.pool.storage
        del self.cache, self.pool
        gc.collect()
        gk, _ = gather(view)
        np.testing.assert_array_equal(gk, k)
        self.assertIsInstance(storage.base, pagedkv.KVPool)
        storage[0, 0, 0, 0, 0, 0] = 1.0  # The pool's storage is writable.

    def test_private_pool_has_no_paged_view(self):
        cache = pagedkv.DynamicKVCache()
        x = np.ones((1, 1, 1, 4), np.float32)
        cache.update(x, x, 0)
        with self.assertRaises(RuntimeError):
            cache.paged_view(0)

    def test_view_of_an_empty_layer_is_none(self):
        static = pagedkv.StaticKVCache(max_cache_len=8, num_layers=2,
                                       pool=self.pool)
        self.assertIsNone(static.paged_view(1))


if __name__ == "__main__":
    unittest.main()
