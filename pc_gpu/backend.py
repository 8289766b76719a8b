"""Compute backends: an array module and a kernel set chosen together, once.

`get_backend('cpu')` is numpy + the numba CPU kernels; `get_backend('gpu')` is cupy + the
numba CUDA kernels (the `gpu` extra); `get_backend('auto')` takes a usable GPU, else the CPU.
Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1 set before numba is imported),
`get_backend('gpu')` gives 'gpu-sim': numpy arrays and the CUDA kernels run in the simulator,
so tests exercise the GPU code path without a GPU. cupy is imported here and nowhere else.
"""

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from .errors import PCError

__all__ = ["Backend", "get_backend", "gpu_problem"]

log = logging.getLogger(__name__)

_INSTALL_HINT = ("install the GPU extra matching your CUDA driver: "
                 "pip install 'pc_gpu[gpu]' (CUDA 13) or 'pc_gpu[gpu-cu12]' (CUDA 12)")


class _PinnedStaging:
    """Page-locked host buffers, one per (shape, dtype), allocated on first use and reused;
    `lock` serialises their use (uploads from several threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self._buffers = {}

    def buffer(self, shape, dtype):
        key = (tuple(shape), np.dtype(dtype).str)
        if key not in self._buffers:
            import cupy

            count = int(np.prod(shape))
            memory = cupy.cuda.alloc_pinned_memory(count * np.dtype(dtype).itemsize)
            self._buffers[key] = np.frombuffer(memory, dtype, count).reshape(shape)
        return self._buffers[key]


@dataclass(frozen=True)
class Backend:
    """An array module and its kernel set.

    Attributes
    ----------
    name : str
        'cpu', 'gpu' or 'gpu-sim' (CUDA kernels under numba's simulator, numpy arrays).
    xp : module
        numpy or cupy.
    kernels : module-like
        detrend, bad_pixel_gather, apply_bad_pixel_gather, sky_order_statistics,
        sky_statistics_regions, prepare_sky_regions, recentroid, aperture_photometry,
        recentroid_frames, aperture_photometry_frames.
    """

    name: str
    xp: object
    kernels: object
    _staging: _PinnedStaging = field(default_factory=_PinnedStaging, repr=False, compare=False)

    @property
    def is_gpu(self):
        """True for the CUDA kernel set (real or simulated)."""
        return self.name != "cpu"

    def asarray(self, a):
        """`a` as an array of this backend (host -> device for a GPU)."""
        return self.xp.asarray(a)

    def to_host(self, a):
        """`a` as a numpy array (device -> host for a GPU)."""
        if self.xp is np or isinstance(a, np.ndarray):
            return np.asarray(a)
        return self.xp.asnumpy(a)

    def upload(self, a):
        """Host array `a` on the device: on a real GPU copied through a page-locked (pinned)
        staging buffer kept per shape and dtype by this backend; elsewhere `asarray`."""
        if self.name != "gpu":
            return self.xp.asarray(a)
        a = np.ascontiguousarray(a)
        with self._staging.lock:
            staging = self._staging.buffer(a.shape, a.dtype)
            staging[...] = a
            device = self.xp.empty(a.shape, a.dtype)
            device.set(staging)  # synchronous: the buffer is free again when this returns
        return device

    def gather_to_device(self, gather):
        """A `BadPixelGather` with its arrays on this backend's device."""
        return gather.to(self.asarray)


def _set_threads(threads):
    if threads is None:
        return
    import numba

    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    if n != int(threads):
        log.warning("%d threads asked for, %d available; using %d", int(threads), numba.config.NUMBA_NUM_THREADS, n)
    numba.set_num_threads(n)


def gpu_problem():
    """None when a GPU is usable (cupy importable and available, numba.cuda available), else
    a sentence saying what is missing."""
    try:
        import cupy
    except ImportError as exc:
        return f"cupy is not installed ({exc}); {_INSTALL_HINT}"
    except Exception as exc:  # a broken CUDA install can fail at import in many ways
        return f"cupy failed to import ({exc}); {_INSTALL_HINT}"
    try:
        if not cupy.is_available():
            return "cupy finds no usable CUDA device (check the driver and CUDA_VISIBLE_DEVICES)"
    except Exception as exc:
        return f"cupy cannot query CUDA devices ({exc})"
    try:
        from numba import cuda

        if not cuda.is_available():
            return f"numba.cuda finds no usable CUDA device or toolkit; {_INSTALL_HINT}"
    except Exception as exc:
        return f"numba.cuda is unusable ({exc}); {_INSTALL_HINT}"
    return None


def _cpu_backend():
    from .kernels import cpu

    return Backend("cpu", np, cpu)


def _gpu_backend():
    import cupy
    from numba import cuda

    from .kernels._cache import cuda_config
    from .kernels.cuda import CudaKernels

    # Kernels launch on cupy's current stream, so they are ordered with cupy's own work: the
    # host need not synchronise each time a cupy array is handed to a kernel.
    cuda_config().CUDA_ARRAY_INTERFACE_SYNC = False

    def current_stream():
        ptr = cupy.cuda.get_current_stream().ptr
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()

    return Backend("gpu", cupy, CudaKernels(cupy, cupy.asnumpy, stream=current_stream))


def _simulated_gpu_backend():
    from .kernels.cuda import CudaKernels

    return Backend("gpu-sim", np, CudaKernels(np))


def get_backend(device="auto", threads=None):
    """The backend for `device`.

    Parameters
    ----------
    device : {'auto', 'cpu', 'gpu'}
        'auto' uses a usable GPU, else the CPU (and says which); 'gpu' raises PCError when no
        GPU is usable (under NUMBA_ENABLE_CUDASIM=1 it gives the simulated GPU backend).
    threads : int, optional
        numba threads for the CPU kernels.

    Returns
    -------
    Backend
    """
    import numba

    _set_threads(threads)
    if device not in ("auto", "cpu", "gpu"):
        raise PCError(f"unknown device {device!r}: use auto, cpu or gpu")
    if device == "cpu":
        return _cpu_backend()
    simulated = bool(numba.config.ENABLE_CUDASIM)
    if device == "gpu":
        if simulated:
            log.info("NUMBA_ENABLE_CUDASIM=1: CUDA kernels run in numba's simulator (slow; for tests)")
            return _simulated_gpu_backend()
        problem = gpu_problem()
        if problem is not None:
            raise PCError(f"--device gpu asked for, but no GPU is usable: {problem}")
        log.info("using the GPU backend (cupy + numba.cuda)")
        return _gpu_backend()
    problem = "NUMBA_ENABLE_CUDASIM=1 (simulator)" if simulated else gpu_problem()
    if problem is None:
        log.info("device auto: a usable GPU was found; using it")
        return _gpu_backend()
    log.info("device auto: no usable GPU (%s); using the CPU with %d numba threads", problem,
             numba.get_num_threads())
    return _cpu_backend()
