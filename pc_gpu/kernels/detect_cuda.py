"""The star-detection kernels compiled for CUDA: the one-source leaves of `detect_core` as
device functions, launched one thread per background block or run of pixels through the streak kernels' launcher
(at least `MIN_BLOCKS` blocks on a device). Arrays are device arrays (cupy) or, in numba's
simulator, numpy arrays."""

from numba import cuda

from ._cache import cached_jit
from .cuda import SIMULATOR
from .detect_core import block_background_one, peaks_one
from .streak_cuda import _launch

__all__ = ["KERNELS"]

_dev = (lambda f: f) if SIMULATOR else cuda.jit(device=True)  # plain Python in the simulator (see cuda.py)
_block_background_d = _dev(block_background_one)
_peaks_d = _dev(peaks_one)


@cached_jit(cuda.jit)
def _k_block_background(img, b, step, scratch, bkg, sig):
    bx, by = cuda.grid(2)
    if by < bkg.shape[0] and bx < bkg.shape[1]:
        _block_background_d(img, by, bx, b, step, scratch, bkg, sig)


@cached_jit(cuda.jit)
def _k_peaks(img, bkg, sig, b, k_sigma, out, where):
    r, y = cuda.grid(2)
    if y < out.shape[0] and r < out.shape[1]:
        _peaks_d(img, bkg, sig, b, y, r, r + 1, k_sigma, out, where)


class _CudaDetectKernels:
    """Launchers of the CUDA-compiled detection kernels (arrays filled in place)."""

    target = "cuda"

    @staticmethod
    def block_background(img, b, step, scratch, bkg, sig):
        _launch(_k_block_background, bkg.shape[::-1], (8, 8), img, b, step, scratch, bkg, sig)

    @staticmethod
    def peaks(img, bkg, sig, b, k_sigma, out, where):
        _launch(_k_peaks, out.shape[::-1], (32, 4), img, bkg, sig, b, k_sigma, out, where)


KERNELS = _CudaDetectKernels()
