"""CUDA kernel set: the shared logic of `_core` compiled with numba.cuda.jit(device=True).

Per-pixel kernels are grid-stride loops; the sky kernels give each block a set of image rows;
the star kernels give each thread one star at a time, spread over the blocks, and take the
stars of several frames in one launch (`recentroid_frames`, `aperture_photometry_frames`: a
batch of frames fills the device where one frame's few thousand stars cannot). Every launch
goes through a `LaunchPolicy`: on a device it has at least `MIN_BLOCKS` blocks (idle blocks
pad small launches), so numba never warns about low occupancy and a full frame reaches every
multiprocessor.

Arrays are device arrays of the backend's array module (cupy on a GPU; numpy under numba's
CUDA simulator, NUMBA_ENABLE_CUDASIM=1, which runs these very kernels in Python for tests).
`CudaKernels(xp)` is the module-like kernel set the backend carries; this module never
imports cupy itself.
"""

import collections
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numba import config, cuda, float64, int64

from . import _core
from ._cache import cached_jit
from .common import (KEY_BINS, SkyRegions, bad_pixel_gather, key_to_float, locate_ranks,
                     prepare_one_region, prepare_sky_regions, sky_summary)
from .cpu import raw_layout, scratch_sizes

__all__ = ["CudaKernels", "LaunchPolicy", "DEVICE_POLICY", "SIMULATOR_POLICY", "SIMULATOR", "MIN_BLOCKS"]

SIMULATOR = bool(config.ENABLE_CUDASIM)

MIN_BLOCKS = 128
"""numba-cuda warns (NumbaPerformanceWarning) about any launch of fewer blocks than this."""
SUM_THREADS = 128
"""Threads of a sky-sum block (the width of its shared-memory reduction; a power of 2)."""
MAX_REGIONS = 8
"""Most sky regions one `sky_statistics_regions` call measures."""
HIST_COPIES = 16
"""Private level-1 histogram copies (blocks spread their atomics over them, merged once)."""


@dataclass(frozen=True)
class LaunchPolicy:
    """Launch sizes: threads per block and the range of block counts."""

    pixel_threads: int
    star_threads: int
    min_blocks: int
    max_blocks: int

    def blocks(self, n_items, threads):
        """Blocks for `n_items` work items at `threads` per block, within the policy's range."""
        return max(self.min_blocks, min(self.max_blocks, -(-int(n_items) // threads)))


DEVICE_POLICY = LaunchPolicy(pixel_threads=128, star_threads=32, min_blocks=MIN_BLOCKS, max_blocks=4096)
SIMULATOR_POLICY = LaunchPolicy(pixel_threads=32, star_threads=8, min_blocks=1, max_blocks=4)
"""The simulator runs every thread as Python: few, small blocks keep tests quick."""


def _device_arithmetic():
    """libdevice's correctly rounded operations (never contracted into FMAs); the plain
    operators in the simulator, which has no libdevice."""
    if SIMULATOR:
        return None
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def dsub_rn(a, b):
        return libdevice.dadd_rn(a, -b)

    return SimpleNamespace(fmul=libdevice.fmul_rn, fsub=libdevice.fsub_rn, dmul=libdevice.dmul_rn,
                           dadd=libdevice.dadd_rn, dsub=dsub_rn)


# The simulator wraps each device function call in a swap of the `cuda` module (a lock and a
# walk over the function's globals); `_core` never uses `cuda`, so there it runs as plain Python.
_k = _core.build((lambda f: f) if SIMULATOR else cuda.jit(device=True), _device_arithmetic())
_raw_value = _k.raw_value
_detrend_pixel = _k.detrend_pixel
_gather_value = _k.gather_value
_sort_key = _k.sort_key
_centroid_star = _k.centroid_star
_photometry_star = _k.photometry_star
_moments_star = _k.moments_star


@cached_jit(cuda.jit)
def _detrend_k(raw, bias, dark, flat, has_flat, t, swap, signed, bzero, out):
    ny, nx = raw.shape
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for p in range(start, ny * nx, step):
        r = p // nx
        c = p - r * nx
        v = np.float32(_raw_value(raw[r, c], swap, signed, bzero))
        out[r, c] = _detrend_pixel(v, bias[r, c], dark[r, c], t, flat[r, c], has_flat)


@cached_jit(cuda.jit)
def _gather_k(flat_img, index, nbr, weight):
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for p in range(start, index.shape[0], step):
        flat_img[index[p]] = np.float32(_gather_value(flat_img, nbr, weight, p))


@cached_jit(cuda.jit)
def _sky_level1_k(u, run_ptr, run_c0, run_c1, h):
    """Blocks walk rows; threads walk each run's columns; level-1 histogram, each block adding
    into one of h.shape[0] private copies (the sky's few hot bins would serialise atomics
    on a single copy)."""
    ny = u.shape[0]
    nb = run_ptr.shape[0]
    copy = cuda.blockIdx.x % h.shape[0]
    for r in range(cuda.blockIdx.x, ny, cuda.gridDim.x):
        for b in range(nb):
            for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                for c in range(run_c0[q] + cuda.threadIdx.x, run_c1[q], cuda.blockDim.x):
                    cuda.atomic.add(h, (copy, b, _sort_key(u[r, c]) >> 16), 1)


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
def _sky_sums_k(img, run_ptr, run_c0, run_c1, consumers, lo, hi, part_s, part_n):
    """Per block (SUM_THREADS threads), the sum and count of each region's pixels within
    [lo, hi] over the block's rows, into part_s/part_n[block, region]: per-thread sums, then a
    shared-memory tree in a fixed order, so the result does not depend on scheduling."""
    ny = img.shape[0]
    nb = run_ptr.shape[0]
    nk = consumers.shape[1]
    ng = part_s.shape[1]
    t = cuda.threadIdx.x
    acc_s = cuda.local.array(MAX_REGIONS, float64)
    acc_n = cuda.local.array(MAX_REGIONS, int64)
    for g in range(ng):
        acc_s[g] = 0.0
        acc_n[g] = 0
    for r in range(cuda.blockIdx.x, ny, cuda.gridDim.x):
        for b in range(nb):
            for kk in range(nk):
                g = consumers[b, kk]
                if g >= 0:
                    for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                        for c in range(run_c0[q] + t, run_c1[q], cuda.blockDim.x):
                            v = img[r, c]
                            if (v >= lo[g]) and (v <= hi[g]):
                                acc_s[g] += float64(v)
                                acc_n[g] += 1
    red_s = cuda.shared.array(SUM_THREADS, float64)
    red_n = cuda.shared.array(SUM_THREADS, int64)
    for g in range(ng):
        red_s[t] = acc_s[g]
        red_n[t] = acc_n[g]
        cuda.syncthreads()
        step = SUM_THREADS // 2
        while step > 0:
            if t < step:
                red_s[t] += red_s[t + step]
                red_n[t] += red_n[t + step]
            cuda.syncthreads()
            step //= 2
        if t == 0:
            part_s[cuda.blockIdx.x, g] = red_s[0]
            part_n[cuda.blockIdx.x, g] = red_n[0]
        cuda.syncthreads()


@cached_jit(cuda.jit)
def _recentroid_k(imgs, frame, x0, y0, box, n_iter, cx, cy, r_max, xo, yo, qo):
    """Star s is on image imgs[frame[s]]. Thread t of block b takes stars b + G t,
    b + G (t + T), ... (G blocks of T threads): the stars spread over every block."""
    first = cuda.blockIdx.x + cuda.gridDim.x * cuda.threadIdx.x
    for s in range(first, x0.shape[0], cuda.gridsize(1)):
        x, y, q = _centroid_star(imgs[frame[s]], x0[s], y0[s], box, n_iter, cx, cy, r_max)
        xo[s] = x
        yo[s] = y
        qo[s] = q


@cached_jit(cuda.jit)
def _photometry_k(imgs, frame, x, y, radii, r_in, r_out, sigclip, sums, bkg, nann, flags, tab, ann, w1, w2):
    """Stars spread over the blocks as in `_recentroid_k`; each thread's scratch is column
    cuda.grid(1) of tab/ann/w1/w2 (adjacent threads touch adjacent addresses)."""
    slot = cuda.grid(1)
    first = cuda.blockIdx.x + cuda.gridDim.x * cuda.threadIdx.x
    for s in range(first, x.shape[0], cuda.gridsize(1)):
        med, m, f = _photometry_star(imgs[frame[s]], x[s], y[s], radii, r_in, r_out, sigclip, sums[s],
                                     tab[:, slot], ann[:, slot], w1[:, slot], w2[:, slot])
        bkg[s] = med
        nann[s] = m
        flags[s] = f


@cached_jit(cuda.jit)
def _moments_k(imgs, frame, x, y, bkg, max_hw, n_iter, out, status):
    """Stars spread over the blocks as in `_recentroid_k`."""
    first = cuda.blockIdx.x + cuda.gridDim.x * cuda.threadIdx.x
    for s in range(first, x.shape[0], cuda.gridsize(1)):
        xc, yc, mxx, myy, mxy, st = _moments_star(imgs[frame[s]], x[s], y[s], bkg[s], max_hw, n_iter)
        out[s, 0] = xc
        out[s, 1] = yc
        out[s, 2] = mxx
        out[s, 3] = myy
        out[s, 4] = mxy
        status[s] = st


class CudaKernels:
    """The CUDA kernel set with host-side launchers; same functions and signatures as
    `pc_gpu.kernels.cpu`, on arrays of `xp` (cupy, or numpy under the simulator).

    Parameters
    ----------
    xp : module
        cupy, or numpy under the simulator.
    to_host : callable
        Device array -> numpy array.
    policy : LaunchPolicy, optional
        Default: `SIMULATOR_POLICY` under the simulator, else `DEVICE_POLICY`.
    stream : callable, optional
        Returns the numba stream to launch on (the array module's current stream, so that
        kernels and array operations stay ordered without synchronising); default stream 0.

    Attributes
    ----------
    launches : deque of (kernel name, blocks, threads per block)
        The most recent launches (for tests and profiling).
    """

    NAME = "gpu-sim" if SIMULATOR else "gpu"

    def __init__(self, xp, to_host=None, *, policy=None, stream=None):
        self.xp = xp
        self.to_host = to_host if to_host is not None else np.asarray
        self.policy = policy or (SIMULATOR_POLICY if SIMULATOR else DEVICE_POLICY)
        self._stream = stream
        self.launches = collections.deque(maxlen=512)
        self.bad_pixel_gather = bad_pixel_gather

    def prepare_sky_regions(self, shape, specs, to_host=None):
        """See `pc_gpu.kernels.common.prepare_sky_regions` (device index arrays accepted)."""
        return prepare_sky_regions(shape, specs, to_host or self.to_host)

    def _launch(self, kernel, blocks, threads, *args):
        self.launches.append((kernel.__name__, int(blocks), int(threads)))
        if self._stream is None or SIMULATOR:
            kernel[blocks, threads](*args)
        else:
            kernel[blocks, threads, self._stream()](*args)

    def _pixels(self, kernel, n, *args):
        threads = self.policy.pixel_threads
        self._launch(kernel, self.policy.blocks(n, threads), threads, *args)

    def _stars(self, kernel, n, *args):
        threads = self.policy.star_threads
        self._launch(kernel, self.policy.blocks(n, threads), threads, *args)

    def _row_blocks(self, ny):
        return max(self.policy.min_blocks, min(ny, self.policy.max_blocks))

    # ------------------------------------------------------------------ detrend
    def detrend(self, raw, bias, dark, flat, exptime_s, out, *, bzero=0.0, swapped=False):
        """See `pc_gpu.kernels.cpu.detrend`."""
        u, swap, signed, bz = raw_layout(raw, bzero, swapped)
        has_flat = flat is not None
        self._pixels(_detrend_k, u.size, u, bias, dark, flat if has_flat else bias, has_flat,
                     np.float32(exptime_s), swap, signed, bz, out)
        return out

    def apply_bad_pixel_gather(self, image, gather):
        """See `pc_gpu.kernels.cpu.apply_bad_pixel_gather` (gather arrays on the device)."""
        if tuple(image.shape) != tuple(gather.shape):
            raise ValueError(f"bad-pixel gather built for {gather.shape}, image is {image.shape}")
        if len(gather):
            self._pixels(_gather_k, len(gather), image.reshape(-1), gather.index, gather.nbr, gather.weight)
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
        """See `pc_gpu.kernels.cpu.sky_statistics_regions`. The clipped mean is summed per
        block in a fixed order and the blocks' sums are added on the host in block order: the
        same image gives the same value on every run."""
        xp = self.xp
        if not isinstance(regions, SkyRegions):
            regions = prepare_sky_regions(tuple(image.shape), regions, self.to_host)
        reg = regions
        if reg.n_regions > MAX_REGIONS:
            raise ValueError(f"at most {MAX_REGIONS} sky regions per call, not {reg.n_regions}")
        run_ptr, run_c0, run_c1, consumers = self._device_regions(reg)
        u = image.view(np.uint32)
        nb = reg.run_ptr.shape[0]
        blocks = self._row_blocks(image.shape[0])
        threads = self.policy.pixel_threads
        h1 = xp.zeros((HIST_COPIES, nb, KEY_BINS), np.int32)
        self._launch(_sky_level1_k, blocks, threads, u, run_ptr, run_c0, run_c1, h1)
        h1 = self.to_host(h1.sum(axis=0, dtype=np.int64))
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
        self._launch(_sky_level2_k, blocks, threads, u, run_ptr, run_c0, run_c1, xp.asarray(slot_of), h2)
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
        part_s = xp.zeros((blocks, ng), np.float64)
        part_n = xp.zeros((blocks, ng), np.int64)
        self._launch(_sky_sums_k, blocks, SUM_THREADS, image, run_ptr, run_c0, run_c1, consumers,
                     xp.asarray(lo), xp.asarray(hi), part_s, part_n)
        sums = self.to_host(part_s)
        counts = self.to_host(part_n).sum(axis=0)
        out = []
        for g in range(ng):
            if stats[g] is None:
                out.append((np.float32(np.nan), np.float32(np.nan), math.nan, 0))
                continue
            c = int(counts[g])
            total = math.fsum(sums[:, g])
            out.append((stats[g][0], stats[g][1], total / c if c else math.nan, c))
        return out

    def sky_order_statistics(self, image, region=None):
        """See `pc_gpu.kernels.cpu.sky_order_statistics`."""
        reg = region if isinstance(region, SkyRegions) else prepare_one_region(tuple(image.shape), region, self.to_host)
        return self.sky_statistics_regions(image, reg)[0]

    # ------------------------------------------------------------------ stars
    def _star_inputs(self, images, frame, *coords):
        xp = self.xp
        coords = [xp.ascontiguousarray(xp.asarray(c, dtype=np.float64)) for c in coords]
        n = coords[0].shape[0]
        frame = xp.zeros(n, np.int32) if frame is None else xp.ascontiguousarray(xp.asarray(frame, dtype=np.int32))
        if images.ndim == 2:
            images = images[None]
        return images, frame, coords, n

    def recentroid(self, image, x0, y0, box, n_iter, centre_x, centre_y, r_max):
        """See `pc_gpu.kernels.cpu.recentroid`; returns device arrays."""
        return self.recentroid_frames(image, None, x0, y0, box, n_iter, centre_x, centre_y, r_max)

    def recentroid_frames(self, images, frame, x0, y0, box, n_iter, centre_x, centre_y, r_max):
        """`recentroid` of the stars of several frames in one launch: star s lies on
        images[frame[s]] (images (n_frames, ny, nx); frame None: all on one 2-D image)."""
        xp = self.xp
        images, frame, (x0, y0), n = self._star_inputs(images, frame, x0, y0)
        xo = xp.empty(n, np.float64)
        yo = xp.empty(n, np.float64)
        qo = xp.empty(n, np.int8)
        if n:
            self._stars(_recentroid_k, n, images, frame, x0, y0, float(box), int(n_iter), float(centre_x),
                        float(centre_y), float(r_max), xo, yo, qo)
        return xo, yo, qo

    def aperture_photometry(self, image, x, y, radii, r_in, r_out, bg_sigclip=False):
        """See `pc_gpu.kernels.cpu.aperture_photometry`; returns device arrays."""
        return self.aperture_photometry_frames(image, None, x, y, radii, r_in, r_out, bg_sigclip)

    def aperture_photometry_frames(self, images, frame, x, y, radii, r_in, r_out, bg_sigclip=False):
        """`aperture_photometry` of the stars of several frames in one launch (see
        `recentroid_frames`). Scratch lives in device memory, one column per launched thread
        (about 3 x 1.8k values for r_out = 20)."""
        xp = self.xp
        images, frame, (x, y), n = self._star_inputs(images, frame, x, y)
        radii = xp.ascontiguousarray(xp.asarray(radii, dtype=np.float64))
        nr = radii.shape[0]
        sums = xp.zeros((n, nr), np.float64)
        bkg = xp.empty(n, np.float64)
        nann = xp.zeros(n, np.int32)
        flags = xp.zeros(n, np.int32)
        if n:
            threads = self.policy.star_threads
            blocks = self.policy.blocks(n, threads)
            ntab, nbuf = scratch_sizes(self.to_host(radii), r_out)
            slots = blocks * threads
            tab = xp.empty((ntab, slots), np.float64)
            ann = xp.empty((nbuf, slots), images.dtype)
            w1 = xp.empty((nbuf, slots), images.dtype)
            w2 = xp.empty((nbuf, slots), images.dtype)
            self._launch(_photometry_k, blocks, threads, images, frame, x, y, radii, float(r_in), float(r_out),
                         bool(bg_sigclip), sums, bkg, nann, flags, tab, ann, w1, w2)
        return sums, bkg, nann, flags

    def psf_moments(self, image, x, y, bkg, max_hw=10, n_iter=30):
        """See `pc_gpu.kernels.cpu.psf_moments`; returns device arrays."""
        return self.psf_moments_frames(image, None, x, y, bkg, max_hw, n_iter)

    def psf_moments_frames(self, images, frame, x, y, bkg, max_hw=10, n_iter=30):
        """`psf_moments` of the stars of several frames in one launch (see `recentroid_frames`)."""
        xp = self.xp
        images, frame, (x, y, bkg), n = self._star_inputs(images, frame, x, y, bkg)
        out = xp.empty((n, 5), np.float64)
        status = xp.zeros(n, np.int32)
        if n:
            self._stars(_moments_k, n, images, frame, x, y, bkg, int(max_hw), int(n_iter), out, status)
        return out, status
