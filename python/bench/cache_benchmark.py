"""pagedkv from Python against a pure-numpy contiguous cache, in one run.

The numpy cache does what lucid 2.x does per layer: np.concatenate on append,
fancy-index copies on reorder / select, np.repeat on repeat-interleave and a
slice copy on crop. Both sides run one layer of batch 4 (beams), 8 KV heads,
head_dim 128, float16, at 512 / 2,048 / 8,192 tokens of context. The
manager's step is KVCacheManager.append_slots for 256 running sequences, one
token each (vLLM v1's KVCacheManager.allocate_slots step, 682 us in Python).

Every number is the median of repeated single-call measurements
(time.perf_counter_ns around one call; untimed set-up between calls where
an operation changes the batch, ending with the books and the code warm:
see code_warm; one row shows the cold-code case), and each ratio divides
two medians of this run.

    bazel run -c opt //python/bench:cache_benchmark [-- --json FILE]
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

import pagedkv

BATCH, HEADS, DIM = 4, 8, 128
DTYPE = np.float16
CONTEXTS = (512, 2048, 8192)


def median_ns(fn, repeats, setup=None):
    samples = []
    for _ in range(repeats):
        state = setup() if setup is not None else None
        t0 = time.perf_counter_ns()
        fn(state)
        samples.append(time.perf_counter_ns() - t0)
        # Freed now, not by the next setup's assignment: that would tear
        # down a 64-128 MiB cache between the set-up and the timed call.
        del state
    return statistics.median(samples)


class NumpyCache:
    """lucid 2.x's DynamicKVCache for one layer, on numpy."""

    def __init__(self, k, v):
        self.k, self.v = k.copy(), v.copy()

    def update(self, k, v):
        self.k = np.concatenate([self.k, k], axis=2)
        self.v = np.concatenate([self.v, v], axis=2)
        return self.k, self.v

    def select(self, idx):
        self.k, self.v = self.k[idx], self.v[idx]

    def repeat(self, r):
        self.k = np.repeat(self.k, r, axis=0)
        self.v = np.repeat(self.v, r, axis=0)

    def crop(self, n):
        self.k = self.k[:, :, -n:].copy()
        self.v = self.v[:, :, -n:].copy()


_PREFILLS = {}


def prefill(context, batch=BATCH):
    """The same (k, v) prompt for both caches (made once per shape)."""
    if (context, batch) not in _PREFILLS:
        rng = np.random.default_rng(context)
        x = rng.standard_normal((batch, HEADS, context, DIM),
                                dtype=np.float32).astype(DTYPE)
        _PREFILLS[(context, batch)] = (x, -x)
    return _PREFILLS[(context, batch)]


def paged(context, batch=BATCH, throwaway=False):
    k, v = prefill(context, batch)
    cache = pagedkv.DynamicKVCache()
    cache.update(k, v, 0, return_kv=False)
    if throwaway:
        return cache
    # stats() walks every block of the tables: the books are warm, as in a
    # decode loop that has just used them (the 64-128 MiB prefill above
    # evicted them from the CPU caches).
    cache.stats()
    return cache


def code_warm(setup, op):
    """`setup`, then `op` once on a small throwaway cache of 4 rows.

    The prefill of a fresh cache streams 64-128 MiB through the CPU caches
    and evicts the binding's and the library's code with it; the next call
    then spends ~45 us on instruction-cache misses, not on its work. In a
    GPU server the KV bytes never pass through the CPU caches, so between
    steps the code stays warm: the timed call runs warm code on the fresh
    cache's books (which stats() has warmed), as a loop's call would.
    """
    def run():
        state = setup()
        op(paged(16, 4, throwaway=True))
        return state
    return run


def bench_cache_ops(context, repeats):
    rows = []
    token = prefill(1)[0]
    beam_idx = np.array([3, 1, 0, 2], np.int64)

    # Decode append: lucid returns the whole layer (a gather) every step.
    cache = paged(context)
    base = NumpyCache(*prefill(context))
    p = median_ns(lambda _: cache.update(token, token, 0), repeats)
    p_paged = median_ns(
        lambda _: cache.update(token, token, 0, return_kv=False), repeats)
    n = median_ns(lambda _: base.update(token, token), max(3, repeats // 4))
    rows.append(("decode update (returns k_all, v_all)", context, p, n))
    rows.append(("decode update (return_kv=False, paged_view)", context,
                 p_paged, n))

    cache = paged(context)
    base = NumpyCache(*prefill(context))
    p = median_ns(lambda _: cache.reorder_cache(beam_idx), repeats * 20)
    n = median_ns(lambda _: base.select(beam_idx), max(3, repeats // 4))
    rows.append(("reorder_cache (4 beams)", context, p, n))

    # Select {0, 2} of 4 rows that share blocks pairwise (as after a
    # repeat-interleave: bench/cache's case), then of 4 independent rows,
    # whose dropped rows' blocks all go back to the pool (one release each).
    sel = np.array([0, 2], np.int64)

    shared = paged(context, 2)
    shared.batch_repeat_interleave(2)

    def shared_rows():  # Restores the 4 rows (untimed), as bench/cache does.
        if shared.batch_size == 2:
            shared.batch_repeat_interleave(2)
        return shared

    n = median_ns(lambda c: c.select(sel), max(3, repeats // 4),
                  setup=lambda: NumpyCache(*prefill(context)))
    p = median_ns(lambda c: c.batch_select_indices(sel), repeats,
                  setup=shared_rows)
    rows.append(("batch_select_indices (4 -> 2 rows, shared blocks; steady)",
                 context, p, n))
    def select(c):
        c.batch_select_indices(sel)

    p = median_ns(select, repeats,
                  setup=code_warm(lambda: paged(context), select))
    rows.append(("batch_select_indices (4 -> 2 rows, blocks freed)", context,
                 p, n))
    p = median_ns(select, repeats, setup=lambda: paged(context))
    rows.append(("batch_select_indices (blocks freed; code cold after "
                 "the prefill)", context, p, n))

    def repeat(c):
        c.batch_repeat_interleave(4)

    p = median_ns(repeat, repeats,
                  setup=code_warm(lambda: paged(context, 1), repeat))
    n = median_ns(lambda c: c.repeat(4), max(3, repeats // 4),
                  setup=lambda: NumpyCache(*prefill(context, 1)))
    rows.append(("batch_repeat_interleave (1 -> 4 rows)", context, p, n))

    keep = context // 2
    p = median_ns(lambda c: c.crop(keep), repeats,
                  setup=code_warm(lambda: paged(context),
                                  lambda c: c.crop(8)))
    n = median_ns(lambda c: c.crop(keep), max(3, repeats // 4),
                  setup=lambda: NumpyCache(*prefill(context)))
    rows.append((f"crop (keep {keep})", context, p, n))
    return rows


def bench_manager_step(steps):
    m = pagedkv.KVCacheManager(num_layers=32, num_kv_heads=8, head_dim=128,
                               dtype="bfloat16", num_blocks=1 << 18,
                               block_tokens=16, storage="books_only",
                               watermark=0.0)
    seqs = np.arange(256, dtype=np.int64)
    for s in seqs:
        m.add_sequence(int(s), 100)
    out = np.zeros(256, np.int64)
    fresh = median_ns(lambda _: m.append_slots(seqs), steps)
    into = median_ns(lambda _: m.append_slots(seqs, out=out), steps)
    m.check_invariants()
    return fresh, into


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--steps", type=int, default=2001)
    args = parser.parse_args()

    rows = []
    for context in CONTEXTS:
        rows.extend(bench_cache_ops(context, args.repeats))
    fresh, into = bench_manager_step(args.steps)

    print(f"one layer, batch {BATCH}, {HEADS} KV heads, head_dim {DIM}, "
          f"float16; medians; load average {os.getloadavg()[0]:.2f}")
    print("| op | context | pagedkv | numpy (lucid 2.x) | speedup |")
    print("|---|---:|---:|---:|---:|")
    for op, context, p, n in rows:
        r = n / p
        ratio = f"{r:,.0f}x" if r >= 10 else f"{r:.2f}x"
        print(f"| {op} | {context} | {fmt(p)} | {fmt(n)} | {ratio} |")
    print()
    print("| manager step: append_slots, 256 sequences x 1 token | median "
          "| target |")
    print("|---|---:|---:|")
    print(f"| new slot_mapping array | {fmt(fresh)} | <= 50 us "
          f"({'met' if fresh <= 50e3 else 'missed'}) |")
    print(f"| into a caller's array (out=) | {fmt(into)} | <= 50 us "
          f"({'met' if into <= 50e3 else 'missed'}) |")
    print(f"vLLM v1 Python KVCacheManager anchor: 682 us -> "
          f"{682e3 / fresh:.0f}x")
    if args.json:
        path = os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", "."),
                            args.json)
        with open(path, "w") as f:
            json.dump({"rows": [dict(op=o, context=c, pagedkv_ns=p, numpy_ns=n)
                                for o, c, p, n in rows],
                       "manager_step_ns": fresh,
                       "manager_step_out_ns": into,
                       "load_average": os.getloadavg()[0]}, f, indent=1)


if __name__ == "__main__":
    main()
