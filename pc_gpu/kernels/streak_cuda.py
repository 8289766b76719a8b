"""The streak kernels compiled for CUDA: the one-source leaves of `streak_core` as device
functions, launched one thread per element. Module-level kernels with the on-disk cache, so a
new process loads them instead of compiling; every launch has at least `MIN_BLOCKS` blocks
(padding blocks find no element and return). Arrays are device arrays (cupy) or, in numba's
simulator, numpy arrays."""

from numba import cuda

from ._cache import cached_jit
from .cuda import MIN_BLOCKS, SIMULATOR
from .streak_core import band_one, block_sum_one, cell_stats_one, dyadic_one, line_sum_one, star_mask_one

__all__ = ["KERNELS"]

_dev = (lambda f: f) if SIMULATOR else cuda.jit(device=True)  # plain Python in the simulator (see cuda.py)
_block_sum_d = _dev(block_sum_one)
_star_mask_d = _dev(star_mask_one)
_cell_stats_d = _dev(cell_stats_one)
_dyadic_d = _dev(dyadic_one)
_line_sum_d = _dev(line_sum_one)
_band_d = _dev(band_one)


@cached_jit(cuda.jit)
def _k_block_sums(img, bad, b, bsum, bcnt):
    bx, by = cuda.grid(2)
    if by < bsum.shape[0] and bx < bsum.shape[1]:
        _block_sum_d(img, bad, by, bx, b, bsum, bcnt)


@cached_jit(cuda.jit)
def _k_star_mask(sx, sy, sr, b, mask):
    k = cuda.grid(1)
    if k < sx.shape[0]:
        _star_mask_d(k, sx, sy, sr, b, mask)


@cached_jit(cuda.jit)
def _k_cell_stats(m, use, c, scratch, med, mad):
    cx, cy = cuda.grid(2)
    if cy < med.shape[0] and cx < med.shape[1]:
        _cell_stats_d(cy, cx, m, use, c, scratch, med, mad)


@cached_jit(cuda.jit)
def _k_dyadic(prev, nxt, half, h, w):
    x, y, s = cuda.grid(3)
    if s < nxt.shape[0] and y < nxt.shape[1] and x < nxt.shape[2]:
        _dyadic_d(prev, nxt, s, y, x, half, h, w)


@cached_jit(cuda.jit)
def _k_best_line(prev, half, best):
    x, y = cuda.grid(2)
    if y < best.shape[0] and x < best.shape[1]:
        v = _line_sum_d(prev, 0, y, x, half)
        for s in range(1, 2 * half):
            u = _line_sum_d(prev, s, y, x, half)
            if u > v:  # not max(): on a device it lowers to fmax, which ignores NaN
                v = u
        best[y, x] = v


@cached_jit(cuda.jit)
def _k_band(img, bad, valid, bkg, sig, b, a0, slope, icpt, cosphi, horizontal, kk, out_v, out_d):
    a, k = cuda.grid(2)
    if k < out_v.shape[0] and a < out_v.shape[1]:
        _band_d(img, bad, valid, bkg, sig, b, a, k, a0, slope, icpt, cosphi, horizontal, kk, out_v, out_d)


def _grid(extent, threads, min_blocks):
    """Blocks per grid axis covering `extent` (x first) at `threads` per block, the x axis
    widened until the grid has at least `min_blocks` blocks."""
    blocks = [max(1, -(-n // t)) for n, t in zip(extent, threads)]
    others = 1
    for g in blocks[1:]:
        others *= g
    blocks[0] = max(blocks[0], -(-min_blocks // others))
    return tuple(blocks)


def _launch(kernel, extent, threads, *args):
    # the simulator runs every thread in Python: no padding there
    kernel[_grid(extent, threads, 1 if SIMULATOR else MIN_BLOCKS), threads](*args)


class _CudaStreakKernels:
    """Launchers of the CUDA-compiled streak kernels (arrays filled in place)."""

    target = "cuda"

    @staticmethod
    def block_sums(img, bad, b, bsum, bcnt):
        _launch(_k_block_sums, bsum.shape[::-1], (16, 16), img, bad, b, bsum, bcnt)

    @staticmethod
    def star_mask(sx, sy, sr, b, mask):
        if sx.shape[0]:
            _launch(_k_star_mask, (sx.shape[0],), (128,), sx, sy, sr, b, mask)

    @staticmethod
    def cell_stats(m, use, c, scratch, med, mad):
        _launch(_k_cell_stats, med.shape[::-1], (8, 8), m, use, c, scratch, med, mad)

    @staticmethod
    def dyadic(prev, nxt, half, h, w):
        _launch(_k_dyadic, nxt.shape[::-1], (32, 4, 1), prev, nxt, half, h, w)

    @staticmethod
    def best_line(prev, half, best):
        _launch(_k_best_line, best.shape[::-1], (32, 4), prev, half, best)

    @staticmethod
    def band(img, bad, valid, bkg, sig, b, a0, slope, icpt, cosphi, horizontal, kk, out_v, out_d):
        _launch(_k_band, out_v.shape[::-1], (64, 2), img, bad, valid, bkg, sig, b, a0, slope, icpt, cosphi,
                horizontal, kk, out_v, out_d)


KERNELS = _CudaStreakKernels()
