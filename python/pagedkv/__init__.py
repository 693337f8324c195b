"""pagedkv: paged KV caches with the lucid nn.cache API, on numpy.

    import numpy as np
    import pagedkv

    cache = pagedkv.DynamicKVCache()
    key = np.random.randn(2, 8, 1, 64).astype(np.float32)
    k_all, v_all = cache.update(key, key, layer_idx=0)   # (2, 8, 1, 64) each

See README.md ("Python") for the API, dtypes (bfloat16 as uint16 bit
patterns), the error mapping, lifetimes and the serving manager.
"""

import pkgutil

# After `bazel build //python:pagedkv` the extension is in
# bazel-bin/python/pagedkv/, next to no __init__.py: with both python/ and
# bazel-bin/python/ on PYTHONPATH (README "Python"), this finds it there.
# Under bazel run / test both files share one runfiles directory anyway.
__path__ = pkgutil.extend_path(__path__, __name__)

from pagedkv._pagedkv import (  # noqa: E402,F401  (re-exported API)
    STATUS_EXCEPTIONS,
    DynamicKVCache,
    EncoderDecoderCache,
    KVCache,
    KVCacheManager,
    KVPool,
    PagedView,
    StaticKVCache,
    bfloat16_to_float,
    float_to_bfloat16,
)

__all__ = [
    "STATUS_EXCEPTIONS",
    "DynamicKVCache",
    "EncoderDecoderCache",
    "KVCache",
    "KVCacheManager",
    "KVPool",
    "PagedView",
    "StaticKVCache",
    "bfloat16_to_float",
    "float_to_bfloat16",
]
