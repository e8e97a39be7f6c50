"""The kernel tier: compiled CPU loops for what numpy cannot do in one pass over memory.

numpy runs every operation as its own pass over memory and has no fast ``erf``; the hot paths
that suffer from that — unfolding and folding for convolution, pooling, fused epilogues,
transcendental activations, row-wise softmax and norms, dynamic quantization — are written here as loops that numba
compiles (:mod:`._jit`: lazily, cached on disk).  Matrix products stay in BLAS.  Each kernel
keeps a numpy reference beside it, and ``tests/test_kernels*.py`` compare the two over grids of
shapes and attributes.

Ops reach kernels through their context's backend (``ctx.backend.kernels.<name>``), never by
importing this package, so another backend can supply its own (:mod:`flowgrad.backend`).
Kernels take contiguous arrays and write into outputs the caller allocated.
"""
from ._jit import MODE, REGISTRY, cache_dir, jit, kernel
from .activations import *  # noqa: E402,F401,F403
from .conv import *  # noqa: E402,F401,F403
from .pool import *  # noqa: E402,F401,F403
from .rows import *  # noqa: E402,F401,F403
from .norm import *  # noqa: E402,F401,F403
from .recurrent import *  # noqa: E402,F401,F403
from .pointwise import *  # noqa: E402,F401,F403
from .quant import *  # noqa: E402,F401,F403

__all__ = ["MODE", "REGISTRY", "cache_dir", "jit", "kernel"]
