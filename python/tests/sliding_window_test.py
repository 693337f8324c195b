"""DynamicKVCache(sliding_window=...) from Python against a numpy model.

The model is HF's DynamicSlidingWindowLayer (cache/dynamic_kv_cache.h): a
window layer of W returns its kept past followed by the new tokens, then
keeps the last W - 1 tokens; get shows those; get_seq_length counts every
token seen. A full layer (W = 0) keeps everything.
"""

import unittest

import numpy as np

import pagedkv

BATCH, HEADS, HEAD_DIM = 2, 2, 4


class WindowModel:
    """One layer's tokens as the reference sees them."""

    def __init__(self, window):
        self.window = window
        self.k = np.zeros((BATCH, HEADS, 0, HEAD_DIM), np.float32)
        self.v = self.k.copy()
        self.seen = 0

    def update(self, k, v):
        """Returns what update returns, and keeps what the layer keeps."""
        all_k = np.concatenate([self.k, k], axis=2)
        all_v = np.concatenate([self.v, v], axis=2)
        self.seen += k.shape[2]
        if self.window > 0:
            first = max(0, all_k.shape[2] - (self.window - 1))
            self.k, self.v = all_k[:, :, first:], all_v[:, :, first:]
        else:
            self.k, self.v = all_k, all_v
        return all_k, all_v


class SlidingWindowCacheTest(unittest.TestCase):
    def test_mixed_full_and_window_layers_match_the_model(self):
        windows = [0, 3, 0, 6, 3]
        for seed in range(6):
            rng = np.random.default_rng(seed)
            cache = pagedkv.DynamicKVCache(block_tokens=int(rng.integers(1, 5)),
                                           sliding_window=windows)
            models = [WindowModel(w) for w in windows]
            for step in range(30):
                layer = int(rng.integers(len(windows)))
                seq = int(rng.integers(1, 6))
                k = rng.standard_normal(
                    (BATCH, HEADS, seq, HEAD_DIM)).astype(np.float32)
                v = rng.standard_normal(k.shape).astype(np.float32)
                want_k, want_v = models[layer].update(k, v)
                got_k, got_v = cache.update(k, v, layer)
                where = f"seed {seed} step {step} layer {layer}"
                np.testing.assert_array_equal(got_k, want_k, err_msg=where)
                np.testing.assert_array_equal(got_v, want_v, err_msg=where)
                for i, model in enumerate(models):
                    self.assertEqual(cache.get_seq_length(i), model.seen,
                                     where)
                    pair = cache.get(i)
                    if model.seen == 0:
                        self.assertIsNone(pair, where)
                        continue
                    np.testing.assert_array_equal(pair[0], model.k,
                                                  err_msg=where)
                    np.testing.assert_array_equal(pair[1], model.v,
                                                  err_msg=where)
                cache.check_invariants()

    def test_window_blocks_return_to_the_pool_as_the_layer_grows(self):
        # One window layer of 4 with 4-token blocks keeps at most
        # ceil(4 / 4) + 1 = 2 blocks per row after each one-token step.
        cache = pagedkv.DynamicKVCache(block_tokens=4, sliding_window=[4])
        x = np.ones((BATCH, HEADS, 1, HEAD_DIM), np.float32)
        for _ in range(40):
            cache.update(x, x, 0, return_kv=False)
            self.assertLessEqual(cache.stats()["blocks_in_use"], 2 * BATCH)
        self.assertEqual(cache.get_seq_length(0), 40)
        self.assertEqual(cache.get(0)[0].shape, (BATCH, HEADS, 3, HEAD_DIM))


class SlidingWindowErrorsTest(unittest.TestCase):
    def assert_status(self, exc, code, fn, *args, **kwargs):
        with self.assertRaises(exc) as ctx:
            fn(*args, **kwargs)
        self.assertEqual(getattr(ctx.exception, "status_code", None), code)
        return ctx.exception

    def test_bad_windows_are_the_mapped_invalid_argument(self):
        e = self.assert_status(ValueError, "INVALID_ARGUMENT",
                               pagedkv.DynamicKVCache, sliding_window=[0, -2])
        self.assertIn("sliding_window[1] is -2", str(e))
        e = self.assert_status(ValueError, "INVALID_ARGUMENT",
                               pagedkv.DynamicKVCache,
                               sliding_window=[1 << 30])
        self.assertIn(str(1 << 30), str(e))

    def test_binding_checks_what_cannot_reach_the_cache(self):
        with self.assertRaises(TypeError):
            pagedkv.DynamicKVCache(sliding_window=[2.5])
        with self.assertRaises(ValueError) as ctx:
            pagedkv.DynamicKVCache(sliding_window=[1 << 40])
        self.assertIn("past int32", str(ctx.exception))
        pool = pagedkv.KVPool(num_layers=1, num_kv_heads=HEADS,
                              head_dim=HEAD_DIM, dtype="float32",
                              num_blocks=8, block_tokens=4)
        with self.assertRaises(ValueError) as ctx:
            pagedkv.DynamicKVCache(pool, sliding_window=[4])
        self.assertIn("private pool", str(ctx.exception))

    def test_bad_calls_on_window_layers_change_nothing(self):
        cache = pagedkv.DynamicKVCache(sliding_window=[0, 4])
        x = np.arange(BATCH * HEADS * 5 * HEAD_DIM, dtype=np.float32).reshape(
            BATCH, HEADS, 5, HEAD_DIM)
        cache.update(x, -x, 0)
        cache.update(x, -x, 1)
        before = [(cache.get_seq_length(i), cache.get(i)[0].tobytes())
                  for i in range(2)]
        one = x[:, :, :1]
        e = self.assert_status(ValueError, "INVALID_ARGUMENT", cache.update,
                               one, one, 2)
        self.assertIn("layer_idx 2 >= the 2 layers", str(e))
        self.assert_status(NotImplementedError, "UNIMPLEMENTED", cache.update,
                           one, one, 1, 7)
        self.assertEqual([(cache.get_seq_length(i), cache.get(i)[0].tobytes())
                          for i in range(2)], before)
        cache.check_invariants()


if __name__ == "__main__":
    unittest.main()
