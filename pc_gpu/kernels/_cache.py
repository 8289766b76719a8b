"""Where numba keeps the compiled kernels: a directory named after a hash of the kernel sources.

numba drops a cached function only when the file that defines it changes. The launchers in
cpu.py and cuda.py have the `_core` functions compiled into them, so an edit to _core.py alone
would leave their cached machine code stale. Caching under a digest of every kernels/*.py file
makes any edit (or a `git pull`) compile afresh. numba-cuda keeps its own copy of numba's
configuration, so the directory is set in both for a CUDA kernel.
"""

import contextlib
import functools
import glob
import hashlib
import os

from numba import config

__all__ = ["kernel_cache_dir", "cached_jit", "cuda_config"]

_HERE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def kernel_cache_dir():
    """$NUMBA_CACHE_DIR when set, else this package's __pycache__ when writable, else
    $XDG_CACHE_HOME/pc_gpu/kernels (~/.cache/...); then a subdirectory per source digest."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(_HERE, "*.py"))):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    if config.CACHE_DIR:
        base = config.CACHE_DIR
    elif os.access(_HERE, os.W_OK):
        base = os.path.join(_HERE, "__pycache__", "numba")
    else:
        user = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(user, "pc_gpu", "kernels")
    return os.path.join(base, digest.hexdigest()[:16])


def cuda_config():
    """The configuration module numba's CUDA target reads: numba-cuda's own copy where it
    has one, else numba.config."""
    try:
        from numba.cuda.core import config as cuda_cfg
    except ImportError:
        return config
    return cuda_cfg


@contextlib.contextmanager
def _cache_dir(path, configs):
    previous = [c.CACHE_DIR for c in configs]
    for c in configs:
        c.CACHE_DIR = path
    try:
        yield
    finally:
        for c, p in zip(configs, previous):
            c.CACHE_DIR = p


def cached_jit(jit, **options):
    """Decorator: `jit(cache=True, **options)` (numba.njit or numba.cuda.jit) caching in
    `kernel_cache_dir()` (numba fixes a function's cache directory when it is decorated)."""
    configs = [config]
    if "cuda" in getattr(jit, "__module__", ""):
        configs.append(cuda_config())

    def decorate(func):
        with _cache_dir(kernel_cache_dir(), configs):
            return jit(cache=True, **options)(func)

    return decorate
