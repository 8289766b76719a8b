"""Streak-detection kernels: the per-element logic written once, compiled for CPU and CUDA.

Each ``*_one`` function below is plain Python that numba compiles twice: with ``numba.njit``
for the CPU (the launchers in this module loop over elements with ``prange``) and with
``numba.cuda.jit(device=True)`` for CUDA (the launchers in `streak_cuda` run one thread
per element). The leaves never call each other, so one source serves both targets.

Conventions: pixel centres at integers, x = column (axis 1). "Blocks" are B x B pixel boxes of
the downsampled image; "cells" are C x C blocks for background statistics.

Elements:

- `block_sum_one`: sum and count of the good pixels of one block.
- `star_mask_one`: marks the blocks a star's mask circle touches.
- `cell_stats_one`: median and median absolute deviation of one cell's usable block means.
- `dyadic_one`: one step of the sliding fast digital line (Radon) transform: the sum over a
  digital line 2**k columns long from its halves at level k - 1.
- `line_sum_one`: one line sum of the last level (16 columns), computed on the fly; the
  launchers reduce it over slopes.
- `band_one`: one pixel of the band around a line, normalised to sky noise, with its signed
  distance from the line.
"""

import math

import numba
import numpy as np

from ._cache import cached_jit

__all__ = ["block_sum_one", "star_mask_one", "cell_stats_one", "dyadic_one", "line_sum_one",
           "band_one", "CPU", "cuda_kernels", "SEED_LEVEL", "MAX_CELL"]

SEED_LEVEL = 4  # seed segments are 2**4 = 16 blocks long
MAX_CELL = 64  # at most 8 x 8 blocks per background cell


# --------------------------------------------------------------------------- one-source leaves

def block_sum_one(img, bad, by, bx, b, bsum, bcnt):
    """Sum and count of the finite, unmasked pixels of block (by, bx) of side `b`."""
    s = 0.0
    n = 0
    y0 = by * b
    x0 = bx * b
    for j in range(b):
        for i in range(b):
            if bad[y0 + j, x0 + i] == 0:
                v = img[y0 + j, x0 + i]
                if v - v == 0.0:
                    s += v
                    n += 1
    bsum[by, bx] = s
    bcnt[by, bx] = n


def star_mask_one(k, sx, sy, sr, b, mask):
    """Set mask[by, bx] = 1 for every block whose pixel footprint comes within sr[k] of star k."""
    x = sx[k]
    y = sy[k]
    r = sr[k]
    nby = mask.shape[0]
    nbx = mask.shape[1]
    if not (x - x == 0.0 and y - y == 0.0 and r > 0.0):
        return
    bx0 = int(math.floor((x - r + 0.5) / b))
    bx1 = int(math.floor((x + r + 0.5) / b))
    by0 = int(math.floor((y - r + 0.5) / b))
    by1 = int(math.floor((y + r + 0.5) / b))
    if bx0 < 0:
        bx0 = 0
    if by0 < 0:
        by0 = 0
    if bx1 > nbx - 1:
        bx1 = nbx - 1
    if by1 > nby - 1:
        by1 = nby - 1
    for by in range(by0, by1 + 1):
        lo = by * b - 0.5
        dy = 0.0
        if y < lo:
            dy = lo - y
        elif y > lo + b:
            dy = y - lo - b
        for bx in range(bx0, bx1 + 1):
            lx = bx * b - 0.5
            dx = 0.0
            if x < lx:
                dx = lx - x
            elif x > lx + b:
                dx = x - lx - b
            if dx * dx + dy * dy < r * r:
                mask[by, bx] = 1


def cell_stats_one(cy, cx, m, use, c, scratch, med, mad):
    """Median and median absolute deviation of the block means m[...] of cell (cy, cx) (c x c
    blocks) where `use` is nonzero; NaN when fewer than a quarter of its blocks in the frame
    (or fewer than 4) are usable. `scratch` is
    a (ncells, >= 2 c c) float array whose row cy * ncx + cx is workspace."""
    nby = m.shape[0]
    nbx = m.shape[1]
    ncx = med.shape[1]
    row = cy * ncx + cx
    n = 0
    for j in range(c):
        by = cy * c + j
        if by < nby:
            for i in range(c):
                bx = cx * c + i
                if bx < nbx and use[by, bx] != 0:
                    v = m[by, bx]
                    p = n
                    while p > 0 and scratch[row, p - 1] > v:
                        scratch[row, p] = scratch[row, p - 1]
                        p -= 1
                    scratch[row, p] = v
                    n += 1
    # a cell cut by the frame edge has fewer blocks: a quarter of those it has must be usable
    ncell = min(c, nby - cy * c) * min(c, nbx - cx * c)
    if n < 4 or n * 4 < ncell:
        med[cy, cx] = math.nan
        mad[cy, cx] = math.nan
        return
    h = n // 2
    centre = scratch[row, h] if n % 2 == 1 else 0.5 * (scratch[row, h - 1] + scratch[row, h])
    med[cy, cx] = centre
    off = c * c
    for q in range(n):
        v = abs(scratch[row, q] - centre)
        p = q
        while p > 0 and scratch[row, off + p - 1] > v:
            scratch[row, off + p] = scratch[row, off + p - 1]
            p -= 1
        scratch[row, off + p] = v
    if n % 2 == 1:
        mad[cy, cx] = scratch[row, off + h]
    else:
        mad[cy, cx] = 0.5 * (scratch[row, off + h - 1] + scratch[row, off + h])


def dyadic_one(prev, nxt, s, y, x, half, h, w):
    """nxt[s, y, x]: sum over the digital line from (y, x) rising s rows over 2*half columns,
    from the two half lines of rise s >> 1 in `prev`. Arrays are zero-padded by at least
    2*half rows and columns beyond the logical size (h, w); the padding stays zero."""
    sh = s >> 1
    if y < h and x < w:
        nxt[s, y, x] = prev[sh, y, x] + prev[sh, y + s - sh, x + half]
    else:
        nxt[s, y, x] = 0.0


def line_sum_one(prev, s, y, x, half):
    """Sum over the last level's digital line of rise s from (y, x) (2*half columns long),
    from the padded level `prev` (lines leaving the image count only their inside part)."""
    sh = s >> 1
    return prev[sh, y, x] + prev[sh, y + s - sh, x + half]


def band_one(img, bad, valid, bkg, sig, b, a, k, a0, slope, icpt, cosphi, horizontal, kk,
             out_v, out_d):
    """Pixel k (of 2 kk + 1 across) at major coordinate a0 + a of the band around the line
    minor = icpt + slope * major (x-major when `horizontal`). Writes out_v[k, a], the pixel's
    value minus the block background over the pixel noise (NaN when masked or outside), and
    out_d[k, a], its signed distance from the line (pixels)."""
    ny = img.shape[0]
    nx = img.shape[1]
    nby = valid.shape[0]
    nbx = valid.shape[1]
    major = a0 + a
    centre = icpt + slope * major
    minor = int(math.floor(centre + 0.5)) + k - kk
    out_d[k, a] = (minor - centre) * cosphi
    if horizontal:
        row = minor
        col = major
    else:
        row = major
        col = minor
    v = math.nan
    if row >= 0 and row < ny and col >= 0 and col < nx:
        by = row // b
        bx = col // b
        if by > nby - 1:
            by = nby - 1
        if bx > nbx - 1:
            bx = nbx - 1
        if bad[row, col] == 0 and valid[by, bx] != 0:
            p = img[row, col]
            if p - p == 0.0:
                v = (p - bkg[by, bx]) / (sig[by, bx] * b)
    out_v[k, a] = v


# --------------------------------------------------------------------------- CPU target

_JIT = dict(error_model="numpy")

_block_sum_c = cached_jit(numba.njit, **_JIT)(block_sum_one)
_star_mask_c = cached_jit(numba.njit, **_JIT)(star_mask_one)
_cell_stats_c = cached_jit(numba.njit, **_JIT)(cell_stats_one)
_dyadic_c = cached_jit(numba.njit, **_JIT)(dyadic_one)
_line_sum_c = cached_jit(numba.njit, **_JIT)(line_sum_one)
_band_c = cached_jit(numba.njit, **_JIT)(band_one)


@cached_jit(numba.njit, parallel=True, **_JIT)
def _cpu_block_sums(img, bad, b, bsum, bcnt):
    nby, nbx = bsum.shape
    for by in numba.prange(nby):
        for bx in range(nbx):
            _block_sum_c(img, bad, by, bx, b, bsum, bcnt)


@cached_jit(numba.njit, **_JIT)
def _cpu_star_mask(sx, sy, sr, b, mask):
    for k in range(sx.shape[0]):
        _star_mask_c(k, sx, sy, sr, b, mask)


@cached_jit(numba.njit, parallel=True, **_JIT)
def _cpu_cell_stats(m, use, c, scratch, med, mad):
    ncy, ncx = med.shape
    for cy in numba.prange(ncy):
        for cx in range(ncx):
            _cell_stats_c(cy, cx, m, use, c, scratch, med, mad)


@cached_jit(numba.njit, parallel=True, **_JIT)
def _cpu_dyadic(prev, nxt, half, h, w):
    nsl, hp, wp = nxt.shape
    for y in numba.prange(hp):
        for s in range(nsl):
            for x in range(wp):
                _dyadic_c(prev, nxt, s, y, x, half, h, w)


@cached_jit(numba.njit, parallel=True, **_JIT)
def _cpu_best_line(prev, half, best):
    h, w = best.shape
    for y in numba.prange(h):
        for x in range(w):
            best[y, x] = _line_sum_c(prev, 0, y, x, half)
        for s in range(1, 2 * half):
            for x in range(w):
                v = _line_sum_c(prev, s, y, x, half)
                if v > best[y, x]:  # max() on a device ignores NaN: compare and select on both
                    best[y, x] = v


@cached_jit(numba.njit, **_JIT)
def _cpu_band(img, bad, valid, bkg, sig, b, a0, slope, icpt, cosphi, horizontal, kk, out_v, out_d):
    nk, na = out_v.shape
    for k in range(nk):  # small: threads would cost more than they save
        for a in range(na):
            _band_c(img, bad, valid, bkg, sig, b, a, k, a0, slope, icpt, cosphi, horizontal, kk,
                    out_v, out_d)


class _CpuStreakKernels:
    """Launchers of the CPU-compiled streak kernels (numpy arrays in, filled in place)."""

    target = "cpu"

    @staticmethod
    def block_sums(img, bad, b, bsum, bcnt):
        _cpu_block_sums(img, bad, b, bsum, bcnt)

    @staticmethod
    def star_mask(sx, sy, sr, b, mask):
        _cpu_star_mask(sx, sy, sr, b, mask)

    @staticmethod
    def cell_stats(m, use, c, scratch, med, mad):
        _cpu_cell_stats(m, use, c, scratch, med, mad)

    @staticmethod
    def dyadic(prev, nxt, half, h, w):
        _cpu_dyadic(prev, nxt, half, h, w)

    @staticmethod
    def best_line(prev, half, best):
        _cpu_best_line(prev, half, best)

    @staticmethod
    def band(img, bad, valid, bkg, sig, b, a0, slope, icpt, cosphi, horizontal, kk, out_v, out_d):
        _cpu_band(img, bad, valid, bkg, sig, b, a0, slope, icpt, cosphi, horizontal, kk, out_v, out_d)


CPU = _CpuStreakKernels()


# --------------------------------------------------------------------------- CUDA target

def cuda_kernels():
    """Launchers of the CUDA-compiled streak kernels (`streak_cuda`, imported on first use so
    that the CPU path never imports numba.cuda)."""
    from .streak_cuda import KERNELS

    return KERNELS


def streak_kernels(target):
    """The launcher set for 'cpu' or 'cuda'."""
    if target == "cpu":
        return CPU
    if target == "cuda":
        return cuda_kernels()
    raise ValueError(f"unknown kernel target {target!r}: 'cpu' or 'cuda'")


def _reference_mad(values):
    """numpy median absolute deviation (tests)."""
    v = np.asarray(values, np.float64)
    return float(np.median(np.abs(v - np.median(v))))
