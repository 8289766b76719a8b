"""CPU kernel set: the shared logic of `_core` compiled with numba.njit, parallel over rows or
stars (numba threads; `numba.set_num_threads` sets how many)."""

import math

import numba
import numpy as np
from numba import njit, prange

from . import _core
from ._cache import cached_jit
from .common import (KEY_BINS, BadPixelGather, SkyRegions, bad_pixel_gather, key_to_float,
                     locate_ranks, prepare_one_region, prepare_sky_regions, sky_summary)

__all__ = ["NAME", "detrend", "bad_pixel_gather", "apply_bad_pixel_gather", "prepare_sky_regions",
           "sky_order_statistics", "sky_statistics_regions", "recentroid", "aperture_photometry",
           "recentroid_frames", "aperture_photometry_frames", "psf_moments", "psf_moments_frames"]

NAME = "cpu"

JIT_OPTIONS = dict(error_model="numpy", nogil=True)
"""Options of every CPU kernel (besides the on-disk cache of `_cache.cached_jit`): no
ZeroDivision checks (loops vectorise). fastmath stays off: results must not depend on
reassociation (exact parity with numpy)."""


def _jit(**extra):
    return cached_jit(njit, **JIT_OPTIONS, **extra)


_k = _core.build(_jit())
_raw_value = _k.raw_value
_detrend_pixel = _k.detrend_pixel
_gather_value = _k.gather_value
_sort_key = _k.sort_key
_centroid_star = _k.centroid_star
_photometry_star = _k.photometry_star
_moments_star = _k.moments_star


# --------------------------------------------------------------------------- detrend
@_jit(parallel=True)
def _detrend_kernel(raw, bias, dark, flat, has_flat, t, swap, signed, bzero, out):
    ny, nx = raw.shape
    for r in prange(ny):
        for c in range(nx):
            v = np.float32(_raw_value(raw[r, c], swap, signed, bzero))
            out[r, c] = _detrend_pixel(v, bias[r, c], dark[r, c], t, flat[r, c], has_flat)


def raw_layout(raw, bzero=0.0, swapped=False):
    """(uint16 native view, swap, signed, bzero) for the accepted raw layouts: native uint16,
    native int16, or the big-endian 16-bit FITS payload ('>i2' with BZERO, or '>u2'; or, with
    `swapped`, those bytes seen through a native 16-bit dtype, as a device holds them)."""
    dt = raw.dtype
    if dt.itemsize != 2 or dt.kind not in "iu":
        raise ValueError(f"raw frame must be 16-bit integers, not {dt}")
    swap = swapped or not dt.isnative
    signed = dt.kind == "i"
    return raw.view(np.uint16), swap, signed, float(bzero)


def _check_2d(name, a, shape, dtype):
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype)}, not {a.dtype}")


def detrend(raw, bias, dark, flat, exptime_s, out, *, bzero=0.0, swapped=False):
    """out[:] = (raw - bias - dark * exptime_s) / flat in float32 (bit-identical to the numpy
    expression evaluated left to right in float32); flat None skips the division.

    Parameters
    ----------
    raw : ndarray (ny, nx)
        uint16 (native), or the FITS payload ('>i2' plus `bzero`, or '>u2'), ADU.
    bias, dark, flat : float32 ndarray (ny, nx) or flat None
        Bias (ADU), dark current (ADU/s), flat field (median 1).
    exptime_s : float
        Exposure time, seconds (dark * exptime_s is evaluated in float32).
    out : float32 ndarray (ny, nx)
        Output, ADU.
    bzero : float
        Added to every raw value (32768 for a FITS int16 payload of unsigned data).
    swapped : bool
        `raw` (native dtype) holds byte-swapped values: the FITS payload's bytes as read.
    """
    u, swap, signed, bz = raw_layout(raw, bzero, swapped)
    shape = raw.shape
    for name, a in (("bias", bias), ("dark", dark), ("out", out)) + ((("flat", flat),) if flat is not None else ()):
        _check_2d(name, a, shape, np.float32)
    has_flat = flat is not None
    _detrend_kernel(u, bias, dark, flat if has_flat else bias, has_flat, np.float32(exptime_s),
                    swap, signed, bz, out)
    return out


# --------------------------------------------------------------------------- bad pixels
@_jit(parallel=True)
def _gather_kernel(flat_img, index, nbr, weight):
    n = index.shape[0]
    for p in prange(n):
        flat_img[index[p]] = np.float32(_gather_value(flat_img, nbr, weight, p))


def apply_bad_pixel_gather(image, gather):
    """Replace the bad pixels of `image` (float32, C-contiguous) in place by their
    interpolation (see `bad_pixel_gather`)."""
    if tuple(image.shape) != tuple(gather.shape):
        raise ValueError(f"bad-pixel gather built for {gather.shape}, image is {image.shape}")
    if len(gather):
        _gather_kernel(image.reshape(-1), gather.index, gather.nbr, gather.weight)
    return image


# --------------------------------------------------------------------------- sky statistics
# Inner loops over one run of a row (a contiguous slice: keeps the loops vectorisable).
@_jit()
def _hist_run(seg, hist):
    for c in range(seg.shape[0]):
        hist[_sort_key(seg[c]) >> 16] += 1


@_jit()
def _compact_run(seg, lut, pos, buf):
    for c in range(seg.shape[0]):
        key = _sort_key(seg[c])
        s = lut[key >> 16]
        if s >= 0:
            buf[pos[s]] = key & 0xFFFF
            pos[s] += 1


@_jit(fastmath=True)
def _clipped_run(seg, lo, hi):
    s = 0.0
    n = 0
    for c in range(seg.shape[0]):
        v = seg[c]
        ok = (v >= lo) & (v <= hi)
        s += np.float64(v) * ok
        n += ok
    return s, n


@_jit(parallel=True)
def _sky_level1(u, run_ptr, run_c0, run_c1, nchunks):
    ny = u.shape[0]
    nb = run_ptr.shape[0]
    h = np.zeros((nchunks, nb, 65536), np.int32)
    for ch in prange(nchunks):
        for r in range(ch * ny // nchunks, (ch + 1) * ny // nchunks):
            for b in range(nb):
                hb = h[ch, b]
                for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                    _hist_run(u[r, run_c0[q]:run_c1[q]], hb)
    return h


@_jit(parallel=True)
def _sky_compact(u, run_ptr, run_c0, run_c1, nchunks, slot_of, offsets, buf):
    """Low 16 key bits of every pixel whose high 16 bits are one of its base region's slot
    bins (slot_of[b, high bits] >= 0), written to buf from offsets[ch, b, s] on (the exact
    sizes come from the level-1 counts)."""
    ny = u.shape[0]
    nb = run_ptr.shape[0]
    for ch in prange(nchunks):
        pos = offsets[ch].copy()
        for r in range(ch * ny // nchunks, (ch + 1) * ny // nchunks):
            for b in range(nb):
                lut = slot_of[b]
                pb = pos[b]
                for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                    _compact_run(u[r, run_c0[q]:run_c1[q]], lut, pb, buf)


@_jit(parallel=True)
def _select_low_bits(buf, task_starts, task_ends, task_ptr, task_rank):
    """For each task t: the low-16-bit value at rank task_rank[t] among the union of the buf
    ranges task_starts/ends[task_ptr[t]:task_ptr[t + 1]]."""
    nt = task_rank.shape[0]
    out = np.empty(nt, np.int64)
    for t in prange(nt):
        hist = np.zeros(65536, np.int32)
        for q in range(task_ptr[t], task_ptr[t + 1]):
            for i in range(task_starts[q], task_ends[q]):
                hist[buf[i]] += 1
        acc = 0
        k = task_rank[t]
        res = 65535
        for v in range(65536):
            acc += hist[v]
            if acc > k:
                res = v
                break
        out[t] = res
    return out


@_jit(parallel=True, fastmath=True)
def _sky_clipped_sums(img, run_ptr, run_c0, run_c1, nchunks, consumers, lo, hi, n_regions):
    ny = img.shape[0]
    nb = run_ptr.shape[0]
    nk = consumers.shape[1]
    sums = np.zeros((nchunks, n_regions), np.float64)
    counts = np.zeros((nchunks, n_regions), np.int64)
    for ch in prange(nchunks):
        for r in range(ch * ny // nchunks, (ch + 1) * ny // nchunks):
            for b in range(nb):
                for kk in range(nk):
                    g = consumers[b, kk]
                    if g < 0:
                        continue
                    lo_g = lo[g]
                    hi_g = hi[g]
                    for q in range(run_ptr[b, r], run_ptr[b, r + 1]):
                        s, n = _clipped_run(img[r, run_c0[q]:run_c1[q]], lo_g, hi_g)
                        sums[ch, g] += s
                        counts[ch, g] += n
    return sums, counts


def _check_image(image):
    if image.ndim != 2 or image.dtype != np.float32 or not image.flags.c_contiguous:
        raise ValueError("sky statistics need a C-contiguous float32 2-D image")


def sky_statistics_regions(image, regions):
    """Exact order statistics of several regions of a float32 image in a few passes.

    Parameters
    ----------
    image : float32 ndarray (ny, nx)
        Detrended image, ADU; must hold no NaN (NaN keys sort above +inf and would be counted).
    regions : SkyRegions or sequence of region specs
        See `prepare_sky_regions` (None, (row0, row1, col0, col1), or flat indices).

    Returns
    -------
    list of (median, sigma, clipped_mean, n) per region: with v the n sorted values,
    median = v[round(0.5 n)], sigma = (v[round(0.84 n)] - v[round(0.16 n)]) / 2 (float32,
    exactly as the original's sort-based sky_metrics), clipped_mean = mean (float64
    accumulation) of the values within median -+ 5 sigma (inclusive), n = how many they are.
    """
    _check_image(image)
    if not isinstance(regions, SkyRegions):
        regions = prepare_sky_regions(image.shape, regions)
    return _sky_core(image, regions, numba.get_num_threads())


def _sky_core(image, reg, nchunks):
    u = image.view(np.uint32)
    h1 = _sky_level1(u, reg.run_ptr, reg.run_c0, reg.run_c1, nchunks)
    h1_base = h1.sum(axis=0, dtype=np.int64)  # (nb, 65536)
    located = []
    need = [set() for _ in range(reg.run_ptr.shape[0])]
    for bases in reg.region_bases:
        hist = h1_base[list(bases)].sum(axis=0) if len(bases) > 1 else h1_base[bases[0]]
        loc = locate_ranks(hist)
        located.append(loc)
        for b in bases:
            need[b].update(loc[2])
    ns = max(1, max(len(s) for s in need))
    nb = len(need)
    slot_bins = np.full((nb, ns), -1, np.int64)
    for b, s in enumerate(need):
        slot_bins[b, : len(s)] = sorted(s)
    # exact offsets: buffer ordered (b, s, chunk)
    counts = np.zeros((nchunks, nb, ns), np.int64)
    for b in range(nb):
        for s in range(ns):
            if slot_bins[b, s] >= 0:
                counts[:, b, s] = h1[:, b, slot_bins[b, s]]
    flat_counts = counts.transpose(1, 2, 0).ravel()
    starts = np.concatenate([[0], np.cumsum(flat_counts)[:-1]]).reshape(nb, ns, nchunks)
    offsets = np.ascontiguousarray(starts.transpose(2, 0, 1))
    buf = np.empty(int(flat_counts.sum()), np.uint16)
    slot_of = np.full((nb, KEY_BINS), -1, np.int8)
    for b in range(nb):
        for s in range(ns):
            if slot_bins[b, s] >= 0:
                slot_of[b, slot_bins[b, s]] = s
    _sky_compact(u, reg.run_ptr, reg.run_c0, reg.run_c1, nchunks, slot_of, offsets, buf)
    slot_start = starts[:, :, 0]
    slot_end = starts[:, :, -1] + counts[-1]
    # selection tasks: (region, rank)
    t_starts, t_ends, t_ptr, t_rank = [], [], [0], []
    for g, bases in enumerate(reg.region_bases):
        n, idx, bins, within = located[g]
        for bin_, w in zip(bins, within):
            for b in bases:
                s = int(np.flatnonzero(slot_bins[b] == bin_)[0])
                t_starts.append(slot_start[b, s])
                t_ends.append(slot_end[b, s])
            t_ptr.append(len(t_starts))
            t_rank.append(w)
    low = _select_low_bits(buf, np.array(t_starts, np.int64), np.array(t_ends, np.int64),
                           np.array(t_ptr, np.int64), np.array(t_rank, np.int64))
    ng = reg.n_regions
    lo = np.zeros(ng, np.float32)
    hi = np.zeros(ng, np.float32)
    stats = []
    t = 0
    for g in range(ng):
        n, idx, bins, within = located[g]
        if n == 0:
            stats.append((np.float32(np.nan), np.float32(np.nan), np.nan, 0))
            lo[g], hi[g] = 1.0, 0.0
            continue
        vals = [key_to_float((bins[i] << 16) | int(low[t + i])) for i in range(3)]
        t += 3
        med, sig, lo[g], hi[g] = sky_summary(*vals)
        stats.append((med, sig))
    sums, cnts = _sky_clipped_sums(image, reg.run_ptr, reg.run_c0, reg.run_c1, nchunks,
                                   reg.consumers, lo, hi, ng)
    sums = sums.sum(axis=0)
    cnts = cnts.sum(axis=0)
    out = []
    for g in range(ng):
        if located[g][0] == 0:
            out.append(stats[g])
            continue
        c = int(cnts[g])
        out.append((stats[g][0], stats[g][1], float(sums[g] / c) if c else math.nan, c))
    return out


def sky_order_statistics(image, region=None):
    """(median, sigma, clipped_mean, n) of one region; see `sky_statistics_regions`.

    `region`: None (whole image), (row0, row1, col0, col1), a flat index array (its
    preparation is cached per array object), or a prepared one-region `SkyRegions`.
    """
    _check_image(image)
    reg = region if isinstance(region, SkyRegions) else prepare_one_region(image.shape, region)
    return _sky_core(image, reg, numba.get_num_threads())[0]


# --------------------------------------------------------------------------- recentroid
def row_order(y):
    """Star indices sorted by row (y, pixels): each thread then visits neighbouring stars,
    whose image rows are still in cache (photometry about 1.5x faster than in catalogue order)."""
    return np.argsort(y, kind="stable")


@_jit()
def _touch_box(img, x, y, half):
    """Sum of one pixel per 64-byte line of the box of half-width `half` (pixels) about (x, y):
    loading the next star's pixels while this star is measured keeps many memory reads in flight
    (the stars' boxes are short pieces of rows far apart: one at a time, each read waits for
    memory; photometry about 1.8x faster)."""
    ny, nx = img.shape
    step = max(1, 64 // img.itemsize)
    i0 = max(int(math.floor(x - half)), 0)
    i1 = min(int(math.ceil(x + half)), nx - 1)
    acc = 0.0
    for j in range(max(int(math.floor(y - half)), 0), min(int(math.ceil(y + half)), ny - 1) + 1):
        for i in range(i0, i1 + 1, step):
            acc += img[j, i]
        acc += img[j, i1]
    return acc


@_jit(parallel=True)
def _recentroid_kernel(img, x0, y0, order, box, n_iter, cx, cy, r_max, xo, yo, qo):
    for k in prange(x0.shape[0]):
        s = order[k]
        x, y, q = _centroid_star(img, x0[s], y0[s], box, n_iter, cx, cy, r_max)
        xo[s] = x
        yo[s] = y
        qo[s] = q


def recentroid(image, x0, y0, box, n_iter, centre_x, centre_y, r_max):
    """Flux-weighted recentroiding of every star (the original's djs_photcen with cbox=box,
    cmaxiter=n_iter - 1 and cmaxshift = clip(2.5 + 2 r / r_max, 2.5, 4.5), r the distance of
    the guess from (centre_x, centre_y)).

    Returns (x float64 (n,), y float64 (n,), qmaxshift int8 (n,)), pixels.
    """
    x0 = np.ascontiguousarray(x0, dtype=np.float64)
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    n = x0.shape[0]
    xo = np.empty(n, np.float64)
    yo = np.empty(n, np.float64)
    qo = np.empty(n, np.int8)
    if n:
        _recentroid_kernel(image, x0, y0, row_order(y0), float(box), int(n_iter), float(centre_x),
                           float(centre_y), float(r_max), xo, yo, qo)
    return xo, yo, qo


# --------------------------------------------------------------------------- photometry
def scratch_sizes(radii, r_out):
    """(table length, annulus buffer length) a star needs."""
    rmax = float(np.max(radii)) if len(radii) else 0.0
    ne = int(2 * math.ceil(rmax) + 4)
    nbox = int(2 * math.ceil(r_out) + 2)
    return 3 * len(radii) * ne, nbox * nbox


@_jit(parallel=True)
def _photometry_kernel(img, x, y, order, radii, r_in, r_out, sigclip, ntab, nann, nchunks, sums, bkg, nann_out,
                       flags, sink):
    n = x.shape[0]
    for ch in prange(nchunks):
        tab = np.empty(ntab, np.float64)
        ann = np.empty(nann, img.dtype)
        w1 = np.empty(nann, img.dtype)
        w2 = np.empty(nann, img.dtype)
        end = (ch + 1) * n // nchunks
        touched = 0.0
        for k in range(ch * n // nchunks, end):
            if k + 1 < end:
                touched += _touch_box(img, x[order[k + 1]], y[order[k + 1]], r_out)
            s = order[k]
            med, m, f = _photometry_star(img, x[s], y[s], radii, r_in, r_out, sigclip, sums[s],
                                         tab, ann, w1, w2)
            bkg[s] = med
            nann_out[s] = m
            flags[s] = f
        sink[ch] = touched


def aperture_photometry(image, x, y, radii, r_in, r_out, bg_sigclip=False):
    """Exact multi-aperture sums and annulus medians for every star, one visit per star.

    Parameters
    ----------
    image : float32 or float64 ndarray (ny, nx)
        Image, ADU.
    x, y : float64 (n,)
        Aperture centres, pixels.
    radii : float64 (n_radii,)
        Aperture radii, pixels.
    r_in, r_out : float
        Annulus radii, pixels: pixels with r_in <= d < r_out (centre distance) are sky.
    bg_sigclip : bool
        Median after sigma clipping (astropy SigmaClip defaults: 3 sigma, 5 iterations).

    Returns
    -------
    sums : float64 (n, n_radii)
        Exact circle/pixel overlap sums (as photutils method='exact'; the part of an aperture
        outside the image contributes nothing), ADU.
    bkg_median : float64 (n,)
        Annulus median, ADU/pixel (NaN when the annulus holds no pixel).
    n_annulus : int32 (n,)
        Pixels used for the median.
    flags : int32 (n,)
        Bit 1: the largest aperture leaves the image; 2: the annulus does; 4: empty annulus.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    radii = np.ascontiguousarray(radii, dtype=np.float64)
    n = x.shape[0]
    sums = np.zeros((n, radii.shape[0]), np.float64)
    bkg = np.empty(n, np.float64)
    nann = np.zeros(n, np.int32)
    flags = np.zeros(n, np.int32)
    if n:
        ntab, nbuf = scratch_sizes(radii, r_out)
        nchunks = min(n, 8 * numba.get_num_threads())
        _photometry_kernel(image, x, y, row_order(y), radii, float(r_in), float(r_out), bool(bg_sigclip),
                           ntab, nbuf, nchunks, sums, bkg, nann, flags, np.empty(nchunks))
    return sums, bkg, nann, flags


# --------------------------------------------------------------------------- several frames
def _per_frame(images, frame, run):
    """Call run(image, index array) for each frame that has stars (frame None: one 2-D image)."""
    if frame is None:
        run(images if images.ndim == 2 else images[0], slice(None))
        return
    frame = np.asarray(frame)
    for f in np.unique(frame):
        run(images[f], np.flatnonzero(frame == f))


def recentroid_frames(images, frame, x0, y0, box, n_iter, centre_x, centre_y, r_max):
    """`recentroid` of the stars of several frames: star s lies on images[frame[s]]
    (images (n_frames, ny, nx); frame None: all on one 2-D image). Same results as one call
    per frame."""
    x0 = np.ascontiguousarray(x0, dtype=np.float64)
    y0 = np.ascontiguousarray(y0, dtype=np.float64)
    n = x0.shape[0]
    xo, yo, qo = np.empty(n, np.float64), np.empty(n, np.float64), np.empty(n, np.int8)

    def run(image, idx):
        xo[idx], yo[idx], qo[idx] = recentroid(image, x0[idx], y0[idx], box, n_iter, centre_x, centre_y, r_max)

    _per_frame(images, frame, run)
    return xo, yo, qo


def aperture_photometry_frames(images, frame, x, y, radii, r_in, r_out, bg_sigclip=False):
    """`aperture_photometry` of the stars of several frames (see `recentroid_frames`)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    n = x.shape[0]
    sums = np.zeros((n, len(radii)), np.float64)
    bkg, nann, flags = np.empty(n, np.float64), np.zeros(n, np.int32), np.zeros(n, np.int32)

    def run(image, idx):
        sums[idx], bkg[idx], nann[idx], flags[idx] = aperture_photometry(image, x[idx], y[idx], radii, r_in, r_out,
                                                                         bg_sigclip)

    _per_frame(images, frame, run)
    return sums, bkg, nann, flags


# --------------------------------------------------------------------------- PSF moments
@_jit(parallel=True)
def _moments_kernel(img, x, y, bkg, max_hw, n_iter, out, status):
    for s in prange(x.shape[0]):
        xc, yc, mxx, myy, mxy, st = _moments_star(img, x[s], y[s], bkg[s], max_hw, n_iter)
        out[s, 0] = xc
        out[s, 1] = yc
        out[s, 2] = mxx
        out[s, 3] = myy
        out[s, 4] = mxy
        status[s] = st


def psf_moments(image, x, y, bkg, max_hw=10, n_iter=30):
    """Adaptive second moments of every star (`_core.moments_star`).

    Parameters
    ----------
    image : float32 ndarray (ny, nx)
        Detrended image, ADU.
    x, y : float64 (n,)
        Starting centres, pixels.
    bkg : float64 (n,)
        Background under each star, ADU/pixel.
    max_hw : int
        Largest half-width of the pixel box, pixels.
    n_iter : int
        Most passes.

    Returns
    -------
    moments : float64 (n, 5)
        x, y (pixels), mxx, myy, mxy (pixels^2, of the pixelated image; NaN where it failed).
    status : int32 (n,)
        0 converged, 1 failed, 2 reached max_hw or the edge, 3 not converged.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    bkg = np.ascontiguousarray(bkg, dtype=np.float64)
    out = np.empty((x.shape[0], 5), np.float64)
    status = np.zeros(x.shape[0], np.int32)
    if x.shape[0]:
        _moments_kernel(image, x, y, bkg, int(max_hw), int(n_iter), out, status)
    return out, status


def psf_moments_frames(images, frame, x, y, bkg, max_hw=10, n_iter=30):
    """`psf_moments` of the stars of several frames (see `recentroid_frames`)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], 5), np.float64)
    status = np.zeros(x.shape[0], np.int32)

    def run(image, idx):
        out[idx], status[idx] = psf_moments(image, x[idx], np.asarray(y)[idx], np.asarray(bkg)[idx], max_hw, n_iter)

    _per_frame(images, frame, run)
    return out, status
