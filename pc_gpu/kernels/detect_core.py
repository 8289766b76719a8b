"""Star-detection kernels (plate solving): the per-element logic written once, compiled for CPU
and CUDA.

As in `streak_core`, each ``*_one`` function is plain Python that numba compiles with
``numba.njit`` for the CPU (launchers below, ``prange`` over rows) and with
``numba.cuda.jit(device=True)`` for CUDA (`detect_cuda`, one thread per element).

Elements:

- `block_background_one`: the sky level (median) and noise ((p84 - p16) / 2) of one B x B block
  from a sparse sample of its pixels (every `step`-th pixel in x and y).
- `peaks_one`: the brightest star peak in each run of 8 pixels of a row. A pixel is a peak
  when it is the brightest of its 3 x 3 neighbours, the 3 x 3 sum is above the mean of the
  9 x 9 box's border by `k_sigma` times its noise, and it is round (no pixel of the border as
  bright, relative to the border mean, as a fraction of the peak: a satellite streak or the edge
  of the dome crosses the border, a star does not). Writes the 5 x 5 sum above the border mean
  (ADU) and the offset in the run of the brightest, 0 if none (a map 8 times smaller than the
  image for the host to scan).
"""

import math

import numba
import numpy as np

from ._cache import cached_jit

__all__ = ["block_background_one", "peaks_one", "CPU", "detect_kernels", "HALF_BOX", "RUN"]

RUN = 8  # pixels of a row one element of the peak kernel covers
HALF_BOX = 4  # the border of the 9 x 9 box gives a peak's local background
ROUND_FRACTION = 0.35  # border pixel above the border mean, as a fraction of the peak, for "not round"
ROUND_SIGMA = 4.0  # ... unless it is within this many noise sigmas (faint stars)


# --------------------------------------------------------------------------- one-source leaves

def block_background_one(img, by, bx, b, step, scratch, bkg, sig):
    """bkg[by, bx], sig[by, bx]: median and (p84 - p16) / 2 of the finite pixels sampled every
    `step` pixels of block (by, bx) (side `b`, clipped at the image edge); NaN when fewer than
    8 are finite. `scratch` is a (nblocks, >= (b // step + 1)^2) float array, row by * nbx + bx."""
    ny = img.shape[0]
    nx = img.shape[1]
    nbx = bkg.shape[1]
    row = by * nbx + bx
    n = 0
    j = by * b + step // 2
    while j < min((by + 1) * b, ny):
        i = bx * b + step // 2
        while i < min((bx + 1) * b, nx):
            v = img[j, i]
            if v - v == 0.0:
                p = n
                while p > 0 and scratch[row, p - 1] > v:
                    scratch[row, p] = scratch[row, p - 1]
                    p -= 1
                scratch[row, p] = v
                n += 1
            i += step
        j += step
    if n < 8:
        bkg[by, bx] = math.nan
        sig[by, bx] = math.nan
        return
    h = n // 2
    if n % 2 == 1:
        bkg[by, bx] = scratch[row, h]
    else:
        bkg[by, bx] = 0.5 * (scratch[row, h - 1] + scratch[row, h])
    sig[by, bx] = 0.5 * (scratch[row, int(0.84 * n)] - scratch[row, int(0.16 * n)])


def peaks_one(img, bkg, sig, b, y, r0, r1, k_sigma, out, where):
    """Runs r0 <= r < r1 of row y (a run is `RUN` pixels, x from r * RUN; a run per CUDA
    thread, a row per CPU call): out[y, r] is the 5 x 5 sum above the 9 x 9 border mean (ADU)
    of the brightest star peak in the run (see the module docstring) and where[y, r] its x
    offset in the run; 0 and 0 when there is none. Pixels within 4 of the edge are never peaks.
    `b` is a multiple of RUN (a run lies in one background block)."""
    ny = img.shape[0]
    nx = img.shape[1]
    by = min(y // b, bkg.shape[0] - 1)
    for r in range(r0, r1):
        xa = r * RUN
        best = 0.0
        at = 0
        bx = min(xa // b, bkg.shape[1] - 1)
        s = np.float64(sig[by, bx])
        m = np.float64(bkg[by, bx])
        if s > 0.0 and m - m == 0.0 and y >= HALF_BOX and y < ny - HALF_BOX:
            for x in range(max(xa, HALF_BOX), min(xa + RUN, nx - HALF_BOX)):
                v = np.float64(img[y, x])
                if not (3.0 * (v - m) >= k_sigma * s):  # the 3 x 3 test below fails (or NaN)
                    continue
                # the brightest of its 3 x 3 neighbours (ties go to the first in raster order)
                if not (v > img[y, x - 1] and v >= img[y, x + 1]):
                    continue
                if not (v > img[y - 1, x - 1] and v > img[y - 1, x] and v > img[y - 1, x + 1]):
                    continue
                if not (v >= img[y + 1, x - 1] and v >= img[y + 1, x] and v >= img[y + 1, x + 1]):
                    continue
                # a first 3 x 3 test against the block level (most noise peaks stop here)
                s3 = 0.0
                for dj in range(-1, 2):
                    for di in range(-1, 2):
                        s3 += np.float64(img[y + dj, x + di]) - m
                if not (s3 >= 0.7 * 3.0 * k_sigma * s):
                    continue
                # border of the 9 x 9 box: mean and brightest
                total = 0.0
                count = 0
                top = -math.inf
                for k in range(-HALF_BOX, HALF_BOX + 1):
                    for j in (y - HALF_BOX, y + HALF_BOX):
                        u = np.float64(img[j, x + k])
                        if u - u == 0.0:
                            total += u
                            count += 1
                            if u > top:
                                top = u
                for k in range(1 - HALF_BOX, HALF_BOX):
                    for i in (x - HALF_BOX, x + HALF_BOX):
                        u = np.float64(img[y + k, i])
                        if u - u == 0.0:
                            total += u
                            count += 1
                            if u > top:
                                top = u
                if count < 16:
                    continue
                ring = total / count
                s3 = 0.0
                s5 = 0.0
                for dj in range(-2, 3):
                    for di in range(-2, 3):
                        u = np.float64(img[y + dj, x + di])
                        if u - u == 0.0:
                            s5 += u - ring
                            if dj >= -1 and dj <= 1 and di >= -1 and di <= 1:
                                s3 += u - ring
                if s3 < 3.0 * k_sigma * s:
                    continue
                excess = top - ring
                if excess > ROUND_FRACTION * (v - ring) and excess > ROUND_SIGMA * s:
                    continue
                if s5 > best:
                    best = s5
                    at = x - xa
        out[y, r] = best
        where[y, r] = at


# --------------------------------------------------------------------------- CPU target

_JIT = dict(error_model="numpy")

_block_background_c = cached_jit(numba.njit, **_JIT)(block_background_one)
_peaks_c = cached_jit(numba.njit, **_JIT)(peaks_one)


@cached_jit(numba.njit, parallel=True, **_JIT)
def _cpu_block_background(img, b, step, scratch, bkg, sig):
    nby, nbx = bkg.shape
    for by in numba.prange(nby):
        for bx in range(nbx):
            _block_background_c(img, by, bx, b, step, scratch, bkg, sig)


@cached_jit(numba.njit, parallel=True, **_JIT)
def _cpu_peaks(img, bkg, sig, b, k_sigma, out, where):
    for y in numba.prange(out.shape[0]):
        _peaks_c(img, bkg, sig, b, y, 0, out.shape[1], k_sigma, out, where)


class _CpuDetectKernels:
    """Launchers of the CPU-compiled detection kernels (numpy arrays, filled in place)."""

    target = "cpu"

    @staticmethod
    def block_background(img, b, step, scratch, bkg, sig):
        _cpu_block_background(img, b, step, scratch, bkg, sig)

    @staticmethod
    def peaks(img, bkg, sig, b, k_sigma, out, where):
        _cpu_peaks(img, bkg, sig, b, k_sigma, out, where)


CPU = _CpuDetectKernels()


def detect_kernels(target):
    """The launcher set for 'cpu' or 'cuda' (`detect_cuda`, imported on first use so that the
    CPU path never imports numba.cuda)."""
    if target == "cpu":
        return CPU
    if target == "cuda":
        from .detect_cuda import KERNELS

        return KERNELS
    raise ValueError(f"unknown kernel target {target!r}: 'cpu' or 'cuda'")
