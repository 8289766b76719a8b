"""CUDA kernel set: the shared logic of `_core` compiled with numba.cuda.jit(device=True),
launched one thread per pixel (grid-stride), per image row or per star.

Arrays are device arrays of the backend's array module (cupy on a GPU; numpy under numba's
CUDA simulator, NUMBA_ENABLE_CUDASIM=1, which runs these very kernels in Python for tests).
`CudaKernels(xp)` is the module-like kernel set the backend carries; this module never
imports cupy itself.
"""

import math

import numpy as np
from numba import config, cuda

from . import _core
from ._cache import cached_jit
from .common import (KEY_BINS, SkyRegions, bad_pixel_gather, key_to_float, locate_ranks,
                     prepare_one_region, prepare_sky_regions, sky_summary)
from .cpu import raw_layout, scratch_sizes

__all__ = ["CudaKernels", "SIMULATOR"]

SIMULATOR = bool(config.ENABLE_CUDASIM)

_k = _core.build(cuda.jit(device=True))
_raw_value = _k.raw_value
_gather_value = _k.gather_value
_sort_key = _k.sort_key
_centroid_star = _k.centroid_star
_photometry_star = _k.photometry_star


@cached_jit(cuda.jit)
def _detrend_k(raw, bias, dark, flat, has_flat, t, swap, signed, bzero, out):
    ny, nx = raw.shape
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for p in range(start, ny * nx, step):
        r = p // nx
        c = p - r * nx
        v = np.float32(_raw_value(raw[r, c], swap, signed, bzero))
        d = v - bias[r, c] - dark[r, c] * t
        if has_flat:
            d = d / flat[r, c]
        out[r, c] = d


@cached_jit(cuda.jit)
def _gather_k(flat_img, index, nbr, weight):
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for p in range(start, index.shape[0], step):
        flat_img[index[p]] = np.float32(_gather_value(flat_img, nbr, weight, p))


@cached_jit(cuda.jit)
def _sky_level1_k(u, run_ptr, run_c0, run_c1, h):
    """Blocks walk rows; threads walk each run's columns; atomic level-1 histogram."""
    ny = u.shape[0]
    nb = run_ptr.shape[0]
    for r in range(cuda.blockIdx.x, ny, cuda.gridDim.x):
        for b in range(nb):
            for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                for c in range(run_c0[q] + cuda.threadIdx.x, run_c1[q], cuda.blockDim.x):
                    cuda.atomic.add(h, (b, _sort_key(u[r, c]) >> 16), 1)


@cached_jit(cuda.jit)
def _sky_level2_k(u, run_ptr, run_c0, run_c1, slot_of, h2):
    ny = u.shape[0]
    nb = run_ptr.shape[0]
    for r in range(cuda.blockIdx.x, ny, cuda.gridDim.x):
        for b in range(nb):
            for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                for c in range(run_c0[q] + cuda.threadIdx.x, run_c1[q], cuda.blockDim.x):
                    key = _sort_key(u[r, c])
                    s = slot_of[b, key >> 16]
                    if s >= 0:
                        cuda.atomic.add(h2, (b, s, key & 0xFFFF), 1)


@cached_jit(cuda.jit)
def _sky_sums_k(img, run_ptr, run_c0, run_c1, consumers, lo, hi, sums, counts):
    ny = img.shape[0]
    nb = run_ptr.shape[0]
    nk = consumers.shape[1]
    for r in range(cuda.blockIdx.x, ny, cuda.gridDim.x):
        for b in range(nb):
            for kk in range(nk):
                g = consumers[b, kk]
                if g >= 0:
                    s = 0.0
                    n = 0
                    for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                        for c in range(run_c0[q] + cuda.threadIdx.x, run_c1[q], cuda.blockDim.x):
                            v = img[r, c]
                            if (v >= lo[g]) and (v <= hi[g]):
                                s += float(v)
                                n += 1
                    if n > 0:
                        cuda.atomic.add(sums, g, s)
                        cuda.atomic.add(counts, g, n)


@cached_jit(cuda.jit)
def _recentroid_k(img, x0, y0, box, n_iter, cx, cy, r_max, xo, yo, qo):
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for s in range(start, x0.shape[0], step):
        x, y, q = _centroid_star(img, x0[s], y0[s], box, n_iter, cx, cy, r_max)
        xo[s] = x
        yo[s] = y
        qo[s] = q


@cached_jit(cuda.jit)
def _photometry_k(img, x, y, radii, r_in, r_out, sigclip, sums, bkg, nann, flags, tab, ann, w1, w2):
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for s in range(start, x.shape[0], step):
        med, m, f = _photometry_star(img, x[s], y[s], radii, r_in, r_out, sigclip, sums[s],
                                     tab[s], ann[s], w1[s], w2[s])
        bkg[s] = med
        nann[s] = m
        flags[s] = f


class CudaKernels:
    """The CUDA kernel set with host-side launchers; same functions and signatures as
    `pc_gpu.kernels.cpu`, on arrays of `xp` (cupy, or numpy under the simulator)."""

    NAME = "gpu-sim" if SIMULATOR else "gpu"

    def __init__(self, xp, to_host=np.asarray):
        self.xp = xp
        self.to_host = to_host
        self.threads = 32 if SIMULATOR else 128
        self.max_blocks = 4 if SIMULATOR else 4096
        self.bad_pixel_gather = bad_pixel_gather
        self.prepare_sky_regions = prepare_sky_regions

    def _blocks(self, n):
        return max(1, min(self.max_blocks, -(-int(n) // self.threads)))

    # ------------------------------------------------------------------ detrend
    def detrend(self, raw, bias, dark, flat, exptime_s, out, *, bzero=0.0):
        """See `pc_gpu.kernels.cpu.detrend`."""
        u, swap, signed, bz = raw_layout(raw, bzero)
        has_flat = flat is not None
        _detrend_k[self._blocks(u.size), self.threads](
            u, bias, dark, flat if has_flat else bias, has_flat, np.float32(exptime_s), swap, signed, bz, out)
        return out

    def apply_bad_pixel_gather(self, image, gather):
        """See `pc_gpu.kernels.cpu.apply_bad_pixel_gather` (gather arrays on the device)."""
        if tuple(image.shape) != tuple(gather.shape):
            raise ValueError(f"bad-pixel gather built for {gather.shape}, image is {image.shape}")
        if len(gather):
            _gather_k[self._blocks(len(gather)), self.threads](image.reshape(-1), gather.index,
                                                               gather.nbr, gather.weight)
        return image

    # ------------------------------------------------------------------ sky
    def _device_regions(self, reg):
        cache = getattr(self, "_reg_cache", None)
        if cache is None or cache[0] is not reg:
            xp = self.xp
            cache = (reg, xp.asarray(reg.run_ptr), xp.asarray(reg.run_c0), xp.asarray(reg.run_c1),
                     xp.asarray(reg.consumers))
            self._reg_cache = cache
        return cache[1:]

    def sky_statistics_regions(self, image, regions):
        """See `pc_gpu.kernels.cpu.sky_statistics_regions`."""
        xp = self.xp
        if not isinstance(regions, SkyRegions):
            regions = prepare_sky_regions(tuple(image.shape), regions, self.to_host)
        reg = regions
        run_ptr, run_c0, run_c1, consumers = self._device_regions(reg)
        u = image.view(np.uint32)
        nb = reg.run_ptr.shape[0]
        ny = image.shape[0]
        grid = (min(ny, self.max_blocks), self.threads)
        h1 = xp.zeros((nb, KEY_BINS), np.int32)
        _sky_level1_k[grid](u, run_ptr, run_c0, run_c1, h1)
        h1 = self.to_host(h1).astype(np.int64)
        located, need = [], [set() for _ in range(nb)]
        for bases in reg.region_bases:
            loc = locate_ranks(h1[list(bases)].sum(axis=0))
            located.append(loc)
            for b in bases:
                need[b].update(loc[2])
        ns = max(1, max(len(s) for s in need))
        slot_of = np.full((nb, KEY_BINS), -1, np.int8)
        slot_index = {}
        for b, s in enumerate(need):
            for i, bin_ in enumerate(sorted(s)):
                slot_of[b, bin_] = i
                slot_index[b, bin_] = i
        h2 = xp.zeros((nb, ns, KEY_BINS), np.int32)
        _sky_level2_k[grid](u, run_ptr, run_c0, run_c1, xp.asarray(slot_of), h2)
        h2 = self.to_host(h2)
        ng = reg.n_regions
        lo = np.ones(ng, np.float32)
        hi = np.zeros(ng, np.float32)
        stats = []
        for g, bases in enumerate(reg.region_bases):
            n, idx, bins, within = located[g]
            if n == 0:
                stats.append(None)
                continue
            vals = []
            for bin_, w in zip(bins, within):
                hist = sum(h2[b, slot_index[b, bin_]].astype(np.int64) for b in bases)
                low = int(np.searchsorted(np.cumsum(hist), w, side="right"))
                vals.append(key_to_float((bin_ << 16) | low))
            med, sig, lo[g], hi[g] = sky_summary(*vals)
            stats.append((med, sig))
        sums = xp.zeros(ng, np.float64)
        counts = xp.zeros(ng, np.int64)
        _sky_sums_k[grid](image, run_ptr, run_c0, run_c1, consumers, xp.asarray(lo), xp.asarray(hi), sums, counts)
        sums = self.to_host(sums)
        counts = self.to_host(counts)
        out = []
        for g in range(ng):
            if stats[g] is None:
                out.append((np.float32(np.nan), np.float32(np.nan), math.nan, 0))
                continue
            c = int(counts[g])
            out.append((stats[g][0], stats[g][1], float(sums[g] / c) if c else math.nan, c))
        return out

    def sky_order_statistics(self, image, region=None):
        """See `pc_gpu.kernels.cpu.sky_order_statistics`."""
        reg = region if isinstance(region, SkyRegions) else prepare_one_region(tuple(image.shape), region, self.to_host)
        return self.sky_statistics_regions(image, reg)[0]

    # ------------------------------------------------------------------ stars
    def recentroid(self, image, x0, y0, box, n_iter, centre_x, centre_y, r_max):
        """See `pc_gpu.kernels.cpu.recentroid`; returns device arrays."""
        xp = self.xp
        x0 = xp.ascontiguousarray(xp.asarray(x0, dtype=np.float64))
        y0 = xp.ascontiguousarray(xp.asarray(y0, dtype=np.float64))
        n = x0.shape[0]
        xo = xp.empty(n, np.float64)
        yo = xp.empty(n, np.float64)
        qo = xp.empty(n, np.int8)
        if n:
            _recentroid_k[self._blocks(n), self.threads](image, x0, y0, float(box), int(n_iter), float(centre_x),
                                                         float(centre_y), float(r_max), xo, yo, qo)
        return xo, yo, qo

    def aperture_photometry(self, image, x, y, radii, r_in, r_out, bg_sigclip=False):
        """See `pc_gpu.kernels.cpu.aperture_photometry`; returns device arrays. Per-star
        scratch lives in device memory (about 3 x 1.8k values per star for r_out = 20)."""
        xp = self.xp
        x = xp.ascontiguousarray(xp.asarray(x, dtype=np.float64))
        y = xp.ascontiguousarray(xp.asarray(y, dtype=np.float64))
        radii = xp.ascontiguousarray(xp.asarray(radii, dtype=np.float64))
        n = x.shape[0]
        nr = radii.shape[0]
        sums = xp.zeros((n, nr), np.float64)
        bkg = xp.empty(n, np.float64)
        nann = xp.zeros(n, np.int32)
        flags = xp.zeros(n, np.int32)
        if n:
            ntab, nbuf = scratch_sizes(self.to_host(radii), r_out)
            tab = xp.empty((n, ntab), np.float64)
            ann = xp.empty((n, nbuf), image.dtype)
            w1 = xp.empty((n, nbuf), image.dtype)
            w2 = xp.empty((n, nbuf), image.dtype)
            _photometry_k[self._blocks(n), self.threads](image, x, y, radii, float(r_in), float(r_out),
                                                         bool(bg_sigclip), sums, bkg, nann, flags, tab, ann, w1, w2)
        return sums, bkg, nann, flags
