"""The seed's lucid snippets (shared/seed/neural-caches.txt) on pagedkv.

Each snippet is the seed's code with only the tensor constructors changed
(numpy instead of lucid), plus assertions on what the seed prints.
"""

import unittest

import numpy as np

import pagedkv


class SeedSnippetsTest(unittest.TestCase):
    def test_quick_start(self):
        rng = np.random.default_rng(0)
        cache = pagedkv.DynamicKVCache()
        # key/value shape example: (batch, heads, seq_len, head_dim)
        key = rng.standard_normal((2, 8, 1, 64), dtype=np.float32)
        value = rng.standard_normal((2, 8, 1, 64), dtype=np.float32)
        # append into layer 0
        k_all, v_all = cache.update(key, value, layer_idx=0)
        self.assertEqual((k_all.shape, v_all.shape),
                         ((2, 8, 1, 64), (2, 8, 1, 64)))
        # next token append
        key2 = rng.standard_normal((2, 8, 1, 64), dtype=np.float32)
        value2 = rng.standard_normal((2, 8, 1, 64), dtype=np.float32)
        k_all, v_all = cache.update(key2, value2, layer_idx=0)
        self.assertEqual(cache.get_seq_length(0), 2)
        np.testing.assert_array_equal(k_all, np.concatenate([key, key2], 2))
        np.testing.assert_array_equal(v_all, np.concatenate([value, value2], 2))

    def test_beam_search_and_memory_control(self):
        rng = np.random.default_rng(1)
        cache = pagedkv.DynamicKVCache()
        # ... prefill/update cache first ...
        prefill = rng.standard_normal((1, 2, 40, 8), dtype=np.float32)
        cache.update(prefill, -prefill, layer_idx=0)
        num_beams = 4
        cache.batch_repeat_interleave(num_beams)  # B -> B*num_beams
        # after beam pruning
        beam_idx = np.array([3, 1, 0, 2], dtype=np.int32)
        cache.reorder_cache(beam_idx)
        k, v = cache.get(0)
        self.assertEqual(k.shape, (4, 2, 40, 8))
        np.testing.assert_array_equal(k, np.repeat(prefill, 4, axis=0))
        # keep only most recent 1024 tokens
        cache.crop(1024)
        self.assertEqual(cache.get_seq_length(0), 40)
        cache.crop(16)
        k, _ = cache.get(0)
        np.testing.assert_array_equal(k[0], prefill[0, :, -16:])
        # clear everything between requests
        cache.reset()
        self.assertEqual(cache.get_seq_length(0), 0)
        self.assertIsNone(cache.get(0))

    def test_cache_position_modes(self):
        cache = pagedkv.StaticKVCache(max_cache_len=8, num_layers=1)
        x = np.ones((2, 1, 1, 4), np.float32)
        cache.update(x, x, 0, cache_position=np.array(3))   # 0-D tensor
        cache.update(2 * x, 2 * x, 0, cache_position=5)     # a Python int
        pos1 = np.array([0, 1], np.int64)                   # 1-D tensor
        x2 = np.full((2, 1, 2, 4), 3, np.float32)
        cache.update(x2, x2, 0, cache_position=pos1)
        pos2 = np.array([[6], [7]], np.int32)               # 2-D (batch, seq)
        k, _ = cache.update(x, x, 0, cache_position=pos2)
        self.assertEqual(k.shape, (2, 1, 8, 4))
        np.testing.assert_array_equal(k[0, 0, :, 0], [3, 3, 0, 1, 0, 2, 1, 0])
        np.testing.assert_array_equal(k[1, 0, :, 0], [3, 3, 0, 1, 0, 2, 0, 1])

    def test_sequence_protocol_as_hf(self):
        cache = pagedkv.DynamicKVCache()
        x = np.zeros((1, 2, 3, 4), np.float16)
        for layer in range(3):
            cache.update(x + layer, x - layer, layer)
        self.assertEqual(len(cache), 3)
        k, v = cache[2]
        self.assertEqual(k.dtype, np.float16)
        self.assertEqual(float(k[0, 0, 0, 0]), 2.0)
        self.assertEqual(float(cache[-1][1][0, 0, 0, 0]), -2.0)
        pairs = [(float(k[0, 0, 0, 0]), float(v[0, 0, 0, 0])) for k, v in cache]
        self.assertEqual(pairs, [(0, 0), (1, -1), (2, -2)])
        with self.assertRaises(IndexError):
            cache[3]

    def test_encoder_decoder(self):
        cache = pagedkv.EncoderDecoderCache(
            pagedkv.StaticKVCache(max_cache_len=16, num_layers=2),
            pagedkv.DynamicKVCache())
        enc = np.ones((2, 2, 5, 4), np.float32)
        cache.update(enc, enc, 0, is_cross_attention=True)
        self.assertTrue(cache.is_updated[0])
        dec = np.ones((2, 2, 1, 4), np.float32)
        cache.update(dec, dec, 0)
        self.assertEqual(cache.get_seq_length(0), 1)
        self.assertEqual(cache.get_seq_length(0, is_cross_attention=True), 5)
        cache.batch_repeat_interleave(2)
        self.assertEqual(cache.self_attention_cache.batch_size, 4)
        self.assertEqual(cache.cross_attention_cache.batch_size, 4)
        self.assertEqual(len(cache[0]), 4)
        self.assertEqual(cache.get_max_cache_shape(), 16)

    def test_bfloat16_as_uint16_bit_patterns(self):
        x = np.array([1.0, 1.5, -2.0, 3.140625], np.float32).reshape(1, 1, 1, 4)
        bits = pagedkv.float_to_bfloat16(x)
        self.assertEqual(bits.dtype, np.uint16)
        cache = pagedkv.DynamicKVCache()
        k, _ = cache.update(bits, bits, 0, dtype="bfloat16")
        self.assertEqual(cache.dtype, "bfloat16")
        self.assertEqual(k.dtype, np.uint16)
        np.testing.assert_array_equal(pagedkv.bfloat16_to_float(k), x)
        with self.assertRaises(TypeError):  # uint16 without dtype=
            cache.update(bits, bits, 0)


if __name__ == "__main__":
    unittest.main()
