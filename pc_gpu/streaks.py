"""Satellite streak detection on the detrended image (issue 6).

Stages (the image-sized ones run as one-source kernels, `pc_gpu.kernels.streak_core`, on the
backend's device; the per-candidate refinement works on small host arrays):

1. **Blocks**: 4 x 4 pixel sums and counts of the unmasked pixels (static bad pixels out).
2. **Background**: median and MAD of the block means in cells of 8 x 8 blocks (32 pix); cells
   on a steep background gradient (dome edges) are masked with their neighbours.
3. **Stars**: every catalogue star masks the blocks within a radius growing with its flux
   (for the streaks' ends, only the pixels within that radius).
4. **Line transform**: a sliding fast digital Radon transform (dyadic, four orientations) of
   the block signal-to-noise image gives, at every block, the best 16-block (64 pix) line
   sum over all slopes; those above `seed_snr` are seeds.
5. **Refinement** (strongest seed first, at full resolution): the band of pixels around the
   seed's line across the whole frame is gathered; the line is re-fitted from chunk
   matched-filter offsets, the width from the stacked profile, and the extent is the box
   segment of the per-column matched-filter signal with the highest likelihood; each end is
   then the posterior median of the cut between streak and sky there (masked pixels count as
   missing data, so an end hidden by a star lands mid-mask). A candidate is kept when its
   segment is long enough, significant (`min_snr`) and consistently positive (a sign test,
   robust to single bright outliers).

The step is cooperative about time: with a limit it checks the clock between stages and
between candidates and gives up cleanly (`StreakResult.timed_out`, empty table).
"""

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .kernels.streak_core import SEED_LEVEL, streak_kernels

__all__ = ["StreakParams", "StreakResult", "STREAK_DTYPE", "empty_streak_table", "detect_streaks", "warm_up",
           "stars_on_streaks", "kernel_target", "clip_segment", "match_streaks"]

log = logging.getLogger(__name__)

STREAK_DTYPE = np.dtype([
    ("x0", "f8"), ("y0", "f8"), ("x1", "f8"), ("y1", "f8"),
    ("ra0", "f8"), ("dec0", "f8"), ("ra1", "f8"), ("dec1", "f8"),
    ("length_pix", "f8"), ("width_fwhm_pix", "f8"), ("angle_pix_deg", "f8"), ("pa_deg", "f8"),
    ("flux_adu_per_s_per_pix", "f8"), ("sb_adu_per_s_per_pix2", "f8"), ("snr", "f8"),
    ("n_ends_at_edge", "i2"),
])
"""STREAKS table columns: endpoints (pixels, 0-indexed; where a streak leaves the frame, the
point where it does), endpoints' RA/Dec (deg), length (pix), width (FWHM across, pix), angle
of x0,y0 -> x1,y1 from the +x axis counter-clockwise in [0, 180) (deg, pixel frame), position
angle east of north in [0, 180) (deg), flux per pixel of length integrated across the streak
(ADU/s/pix; box sums across it), mean surface brightness = that flux / FWHM (ADU/s/pix^2), matched-filter SNR of
the whole detected segment, and how many ends lie on the frame edge (0-2)."""


@dataclass(frozen=True)
class StreakParams:
    """Tuning of the streak detector (defaults set on simulated El Nino frames).

    block_pix : downsampling block side, pix. cell_blocks : background cell side, blocks.
    seed_snr : threshold on a 64-pix line sum (sigma). local_snr : a seed's refined 64-pix
    segment needs this matched-filter SNR to be followed across the frame. min_snr : matched-filter SNR a streak
    segment needs. min_sign_snr : sign-test significance of the segment's columns being
    positive. min_length_pix : shortest streak reported. z_clip : clip of block SNRs before the
    line transform. star_mask_min_pix, star_wing_pix, star_wing_fraction : star mask radius =
    max(min, radius where a Gaussian wing of that scale holding that flux fraction falls to
    half the pixel noise). band_half_width_pix : half-width of the refinement band.
    gradient_sigma : a cell differing from a neighbour by more than this many block-mean
    sigmas is masked with its neighbours. max_candidates : seeds refined at most.
    flag_radius_pix : stars closer than this to a streak (plus its FWHM) are flagged.
    """

    block_pix: int = 4
    cell_blocks: int = 8
    seed_snr: float = 5.0
    local_snr: float = 4.0
    min_snr: float = 7.0
    min_sign_snr: float = 3.0
    min_length_pix: float = 40.0
    z_clip: tuple = (-4.0, 6.0)
    star_mask_min_pix: float = 4.0
    star_wing_pix: float = 3.0
    star_wing_fraction: float = 0.1
    band_half_width_pix: int = 8
    gradient_sigma: float = 1.5
    max_candidates: int = 200
    flag_radius_pix: float = 8.0

    def __post_init__(self):
        if self.block_pix < 1 or self.cell_blocks < 2 or self.cell_blocks > 8:
            raise ValueError("block_pix must be >= 1 and cell_blocks in 2..8")


@dataclass
class StreakResult:
    """What `detect_streaks` found: `table` (STREAK_DTYPE rows), `timed_out` (gave up at the
    time limit; the table is then empty), `n_candidates` refined, stage `timings` (ms)."""

    table: np.ndarray
    timed_out: bool = False
    n_candidates: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def segments(self):
        """(x0, y0, x1, y1) tuples for plotting."""
        return [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in self.table]


class _Timeout(Exception):
    pass


class _Clock:
    def __init__(self, limit_s):
        self.t0 = time.perf_counter()
        self.limit = limit_s
        self.marks = {}
        self.last = self.t0

    def check(self, stage=None):
        now = time.perf_counter()
        if stage is not None:
            self.marks[stage] = round(1e3 * (now - self.last), 2)
            self.last = now
        if self.limit is not None and now - self.t0 > self.limit:
            raise _Timeout()


def empty_streak_table():
    """A STREAKS table with no rows."""
    return np.zeros(0, dtype=STREAK_DTYPE)


def kernel_target(backend):
    """'cuda' for a GPU backend (real, or numba's simulator), else 'cpu'."""
    is_gpu = getattr(backend, "is_gpu", None)
    if is_gpu is None:
        is_gpu = getattr(backend.xp, "__name__", "numpy") != "numpy"
    return "cuda" if is_gpu else "cpu"


# --------------------------------------------------------------------------- image stages

def _clean_cells(med, mad, params):
    """Fill cells without statistics, mask cells on steep gradients (host, tiny arrays).

    Returns (bkg, sigma_block_mean, masked) per cell."""
    from scipy import ndimage

    sig = 1.4826 * mad
    good = np.isfinite(med) & np.isfinite(sig) & (sig > 0)
    if not good.any():
        return None
    fill_med = float(np.median(med[good]))
    fill_sig = float(np.median(sig[good]))
    bkg = np.where(good, med, fill_med)
    sig = np.where(good, sig, fill_sig)
    # a cell's sigma is a noisy estimate: smooth it with its neighbours (robustly)
    sig = ndimage.median_filter(sig, size=3, mode="nearest")
    pad = np.pad(bkg, 1, mode="edge")
    diff = np.zeros_like(bkg)
    ny, nx = bkg.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                diff = np.maximum(diff, np.abs(pad[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx] - bkg))
    steep = diff > params.gradient_sigma * sig
    masked = ndimage.binary_dilation(steep | ~good, structure=np.ones((3, 3), bool))
    return bkg, sig, masked


def _upsample(xp, cells, c, nby, nbx):
    """Bilinear interpolation of a cell map (cell centres) onto the block grid."""
    ncy, ncx = cells.shape
    cells = xp.asarray(cells, dtype=xp.float32)

    def axis(n, nc):
        u = (xp.arange(n, dtype=xp.float32) + 0.5) / c - 0.5
        i0 = xp.clip(xp.floor(u), 0, nc - 1).astype(xp.int64)
        i1 = xp.minimum(i0 + 1, nc - 1)
        f = xp.clip(u - i0, 0.0, 1.0).astype(xp.float32)
        return i0, i1, f

    y0, y1, fy = axis(nby, ncy)
    x0, x1, fx = axis(nbx, ncx)
    top = cells[y0][:, x0] * (1 - fx) + cells[y0][:, x1] * fx
    bot = cells[y1][:, x0] * (1 - fx) + cells[y1][:, x1] * fx
    return (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(xp.float32)


def _star_radii(flux_adu, sigma_pix, params):
    """Mask radius (pix) of each star from its total flux (ADU)."""
    f = np.asarray(flux_adu, np.float64)
    w = params.star_wing_pix
    amp = params.star_wing_fraction * np.where(np.isfinite(f) & (f > 0), f, 0.0) / (2 * np.pi * w * w)
    ratio = amp / (0.5 * max(sigma_pix, 1e-6))
    r = w * np.sqrt(2 * np.log(np.maximum(ratio, 1.0)))
    return np.maximum(r, params.star_mask_min_pix)


_WORKSPACE = {}


def _workspace(xp, key, size, dtype):
    """A reused flat buffer (fresh large allocations cost page faults on every frame)."""
    k = (xp.__name__, key, np.dtype(dtype).str)
    buf = _WORKSPACE.get(k)
    if buf is None or buf.size < size:
        buf = xp.empty(size, dtype=dtype)
        _WORKSPACE[k] = buf
    return buf[:size]


def _line_sums(z, kern, xp):
    """Yield, for each of the four orientations, the best 16-block line sum at every block and
    the last stored level (to recover the seeds' slopes; valid until the next orientation)."""
    n = 1 << SEED_LEVEL
    for o in range(4):
        a = z if o == 0 else z[::-1] if o == 1 else z.T if o == 2 else z.T[::-1]
        h, w = a.shape
        size = (h + n) * (w + n)
        prev = _workspace(xp, "lvl0", size, np.float32).reshape(1, h + n, w + n)
        prev[...] = 0
        prev[0, :h, :w] = a
        for k in range(1, SEED_LEVEL):
            nxt = _workspace(xp, ("lvl", k), size << k, np.float32).reshape(1 << k, h + n, w + n)
            kern.dyadic(prev, nxt, 1 << (k - 1), h, w)
            prev = nxt
        best = _workspace(xp, "best", h * w, np.float32).reshape(h, w)
        kern.best_line(prev, 1 << (SEED_LEVEL - 1), best)
        yield best, prev


def _seed_slopes(prev, ys, xs, xp, to_host):
    """Slope (rise, 0..15) of the best last-level line at each seed start (ys, xs)."""
    half = 1 << (SEED_LEVEL - 1)
    s = xp.arange(2 * half)
    sh = s >> 1
    yy, xx = xp.asarray(ys)[:, None], xp.asarray(xs)[:, None]
    sums = prev[sh[None, :], yy, xx] + prev[sh[None, :], yy + s[None, :] - sh[None, :], xx + half]
    return to_host(xp.argmax(sums, axis=1))


def _seed_geometry(o, ys, xs, s, nby, nbx, b):
    """Seed segments (x0, y0, x1, y1) in full-resolution pixels from oriented block indices."""
    n = (1 << SEED_LEVEL) - 1
    if o == 0:
        X0, Y0, X1, Y1 = xs, ys, xs + n, ys + s
    elif o == 1:
        X0, Y0, X1, Y1 = xs, nby - 1 - ys, xs + n, nby - 1 - (ys + s)
    elif o == 2:
        X0, Y0, X1, Y1 = ys, xs, ys + s, xs + n
    else:
        X0, Y0, X1, Y1 = nbx - 1 - ys, xs, nbx - 1 - (ys + s), xs + n
    f = lambda v: (np.asarray(v, np.float64) + 0.5) * b - 0.5  # noqa: E731
    return f(X0), f(Y0), f(X1), f(Y1)


# --------------------------------------------------------------------------- refinement

@dataclass
class _Ctx:
    img: object
    bad: object
    valid: object
    usable: object
    bkg: object
    sig: object
    b: int
    ny: int
    nx: int
    kern: object
    to_host: object
    xp: object
    sigma_pix: float
    exptime_s: float
    params: StreakParams


def _gather_band(ctx, horizontal, slope, icpt, a0=0, a1=None, valid=None):
    """Band values (na, 2k+1) and distances over major coordinates a0..a1 (default: the whole
    major axis of the frame); `valid`: the usable blocks (default `ctx.valid`, stars' blocks
    masked)."""
    xp = ctx.xp
    if a1 is None:
        a1 = (ctx.nx if horizontal else ctx.ny) - 1
    na = a1 - a0 + 1
    kk = ctx.params.band_half_width_pix
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    v = xp.empty((2 * kk + 1, na), dtype=xp.float32)
    d = xp.empty((2 * kk + 1, na), dtype=xp.float32)
    ctx.kern.band(ctx.img, ctx.bad, ctx.valid if valid is None else valid, ctx.bkg, ctx.sig,
                  ctx.b, int(a0), float(slope), float(icpt), float(cosphi), bool(horizontal), kk,
                  v, d)
    return ctx.to_host(v).T.astype(np.float64), ctx.to_host(d).T.astype(np.float64)


def _column_signal(v, d, sigma, offset=0.0):
    """Per-column matched-filter statistic (unit variance), amplitude and weights."""
    w = np.exp(-0.5 * ((d - offset) / sigma) ** 2)
    w = np.where(np.abs(d - offset) <= 3 * sigma + 0.5, w, 0.0)
    ok = np.isfinite(v)
    w = np.where(ok, w, 0.0)
    vv = np.where(ok, v, 0.0)
    sw2 = np.sum(w * w, axis=1)
    full = np.sqrt(2 * np.pi) * sigma * 0.5  # about sum of w^2 over a complete column
    good = sw2 > 0.6 * full
    swv = np.sum(w * vv, axis=1)
    f = np.where(good, swv / np.sqrt(np.where(good, sw2, 1.0)), 0.0)
    return f, good, swv, sw2


def _best_segment(f, good, mu):
    """Segment [i, j] maximising sum(f - mu/2) over good columns (box MLE of amplitude mu)."""
    g = np.where(good, f - 0.5 * mu, 0.0)
    c = np.concatenate([[0.0], np.cumsum(g)])
    runmin = np.minimum.accumulate(c)
    gain = c[1:] - runmin[:-1]
    j = int(np.argmax(gain))
    if gain[j] <= 0:
        return None
    i = int(np.flatnonzero(c[:j + 1] == runmin[j])[-1])
    idx = np.flatnonzero(good[i:j + 1])
    if idx.size == 0:
        return None
    return i + int(idx[0]), i + int(idx[-1])


def _max_snr_segment(f, good, mu0):
    """The box segment of highest sum(f)/sqrt(n): box MLEs for a ladder of amplitudes, each
    iterated to self-consistency, the best kept."""
    best, best_seg = -np.inf, None
    for mu in (mu0, 0.5 * mu0, 0.25 * mu0, 2.0 * mu0):
        seg = None
        for _ in range(4):
            new = _best_segment(f, good, mu)
            if new is None or new == seg:
                break
            seg = new
            sel = good[seg[0]:seg[1] + 1]
            mu = float(np.mean(f[seg[0]:seg[1] + 1][sel]))
            if mu <= 0:
                seg = None
                break
        if seg is None:
            continue
        sel = good[seg[0]:seg[1] + 1]
        score = float(f[seg[0]:seg[1] + 1][sel].sum() / math.sqrt(max(sel.sum(), 1)))
        if score > best:
            best, best_seg = score, seg
    return best_seg


def _cut_median(logl):
    """Index of the posterior median of a cut position with log-likelihoods `logl` (flat
    prior)."""
    w = np.exp(logl - logl.max())
    c = np.cumsum(w)
    return int(np.searchsorted(c, 0.5 * c[-1]))


_END_WINDOW = 40  # columns either side of a segment's end searched for the cut


def _ends(swv, sw2, seg, span, f_max, window=_END_WINDOW):
    """Streak ends (major coordinates of the boundaries, pix) from segment `seg` = (i, j).

    Column k's matched-filter statistic f = swv / sqrt(sw2) (unit variance) has mean
    A sqrt(sw2) inside the streak and 0 outside (A: peak amplitude in pixel-noise units,
    fitted on the segment; masked pixels have no weight in swv and sw2, so they are missing
    data, not zeros). Each end is the posterior median of the cut, over the cuts within
    `window` columns of the segment's end, from that likelihood: an end hidden under a mask
    lands in its middle. f is clipped to [-4, `f_max`] (single bright outliers). Cuts stay
    within `span` = (first, last) column whose line point lies in the frame.
    """
    i, j = seg
    rt = np.sqrt(sw2)
    f = np.clip(swv / np.where(rt > 0, rt, 1.0), -4.0, f_max)
    amp = float(np.sum(rt[i:j + 1] * f[i:j + 1]) / max(np.sum(sw2[i:j + 1]), 1e-9))
    m = max(amp, 1e-3) * rt
    c = np.concatenate([[0.0], np.cumsum(m * (f - 0.5 * m))])  # log-lik of signal in columns < k
    k0, k1 = max(j + 1 - window, i + 1), min(j + 1 + window, max(span[1], j) + 1)
    end = k0 + _cut_median(c[k0:k1 + 1])
    k0, k1 = max(i - window, min(span[0], i)), min(i + window, end - 1)
    start = k0 + _cut_median(-c[k0:k1 + 1])
    return start - 0.5, end - 0.5


_BIN = 0.25


def _profiles(v, d, lo, hi, nch):
    """Perpendicular profiles (sums of values and counts in 0.25-pix bins of distance) of `nch`
    chunks of columns lo..hi; returns (sums, counts, bin centres, chunk centres)."""
    vv, dd = v[lo:hi + 1], d[lo:hi + 1]
    kk = int(np.ceil(np.max(np.abs(dd)) / _BIN)) + 1
    nb = 2 * kk + 1
    edges = np.linspace(lo, hi + 1, nch + 1)
    ch = np.clip(np.searchsorted(edges, np.arange(lo, hi + 1), side="right") - 1, 0, nch - 1)
    bins = np.clip(np.rint(dd / _BIN).astype(np.int64) + kk, 0, nb - 1)
    ok = np.isfinite(vv)
    idx = (ch[:, None] * nb + bins)[ok]
    sums = np.bincount(idx, weights=vv[ok], minlength=nch * nb).reshape(nch, nb)
    counts = np.bincount(idx, minlength=nch * nb).reshape(nch, nb).astype(np.float64)
    centres = (np.arange(nb) - kk) * _BIN
    return sums, counts, centres, 0.5 * (edges[:-1] + edges[1:]) - 0.5


def _fit_line_correction(v, d, lo, hi, sigma):
    """Perpendicular offset (at major 0) and slope change (per major pixel) of the streak from
    chunk matched-filter peaks, and the best Gaussian sigma (pix) of the stacked profile."""
    n = hi - lo + 1
    nch = int(np.clip(n // 24, 2, 32)) if n >= 40 else 1
    sums, counts, centres, cc = _profiles(v, d, lo, hi, nch)
    grid = np.arange(-4.0, 4.001, _BIN)
    sep = centres[:, None] - grid[None, :]
    tmpl = np.where(np.abs(sep) <= 3 * sigma + 0.5, np.exp(-0.5 * (sep / sigma) ** 2), 0.0)
    resp = sums @ tmpl / np.sqrt(np.maximum(counts @ (tmpl ** 2), 1e-9))
    rows = np.arange(nch)
    k = np.argmax(resp, axis=1)
    peak = resp[rows, k]
    off = grid[k].astype(np.float64)
    km, kp = np.clip(k - 1, 0, grid.size - 1), np.clip(k + 1, 0, grid.size - 1)
    rm, rp = resp[rows, km], resp[rows, kp]
    den = rm - 2 * peak + rp
    ok = (k > 0) & (k < grid.size - 1) & (den < 0)
    off[ok] += _BIN * 0.5 * (rm[ok] - rp[ok]) / den[ok]
    use = peak > 0
    if not use.any():
        return 0.0, 0.0, sigma
    cc, off, w = cc[use], off[use], peak[use] ** 2
    if off.size == 1:
        a, b = float(off[0]), 0.0
    elif off.size == 2:
        b = float((off[1] - off[0]) / (cc[1] - cc[0]))
        a = float(off[0] - b * cc[0])
    else:
        for _ in range(2):
            A = np.vstack([np.ones_like(cc), cc - cc.mean()]).T
            sw = np.sqrt(w)
            coef = np.linalg.lstsq(A * sw[:, None], off * sw, rcond=None)[0]
            resid = off - A @ coef
            keep = np.abs(resid) < max(0.75, 3.0 * 1.4826 * np.median(np.abs(resid)))
            if keep.all() or keep.sum() < 3:
                break
            cc, off, w = cc[keep], off[keep], w[keep]
        a, b = float(coef[0] - coef[1] * cc.mean()), float(coef[1])
    # width from the stacked profile about the fitted line (mean offset over the segment)
    stack_s, stack_n = sums.sum(axis=0), counts.sum(axis=0)
    mean_off = a + b * (0.5 * (lo + hi))
    best, best_sig = -np.inf, sigma
    for sg in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.7, 2.0, 2.4, 3.0):
        dc = centres - mean_off
        t = np.where(np.abs(dc) <= 3 * sg + 0.5, np.exp(-0.5 * (dc / sg) ** 2), 0.0)
        snr = float(stack_s @ t / math.sqrt(max(stack_n @ t ** 2, 1e-9)))
        if snr > best:
            best, best_sig = snr, sg
    return a, b, best_sig


def _refine(ctx, x0, y0, x1, y1):
    """Refine one seed segment; returns a dict describing the streak or None."""
    p = ctx.params
    dx, dy = x1 - x0, y1 - y0
    horizontal = abs(dx) >= abs(dy)
    if horizontal:
        if dx < 0:
            x0, y0, x1, y1 = x1, y1, x0, y0
        slope = (y1 - y0) / (x1 - x0)
        icpt = y0 - slope * x0
        lo, hi = int(round(x0)), int(round(x1))
    else:
        if dy < 0:
            x0, y0, x1, y1 = x1, y1, x0, y0
        slope = (x1 - x0) / (y1 - y0)
        icpt = x0 - slope * y0
        lo, hi = int(round(y0)), int(round(y1))
    sigma = 1.2
    # quick local test around the seed: most seeds are noise and end here
    nmaj = ctx.nx if horizontal else ctx.ny
    lo, hi = max(lo, 0), min(hi, nmaj - 1)
    if hi - lo < 8:
        return None
    w0, w1 = max(lo - 32, 0), min(hi + 32, nmaj - 1)
    v, d = _gather_band(ctx, horizontal, slope, icpt, w0, w1)
    off, dslope, sigma = _fit_line_correction(v, d, lo - w0, hi - w0, sigma)
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    icpt += (off - dslope * w0) / cosphi
    slope += dslope / cosphi
    v, d = _gather_band(ctx, horizontal, slope, icpt, w0, w1)
    f, good, _, _ = _column_signal(v, d, sigma)
    sel = good[lo - w0:hi - w0 + 1]
    if sel.sum() < 4:
        return None
    local = float(np.clip(f[lo - w0:hi - w0 + 1][sel], -4.0, 4.0).sum() / math.sqrt(sel.sum()))
    if local < p.local_snr:
        return None
    seg = (lo, hi)
    v, d = _gather_band(ctx, horizontal, slope, icpt)
    for it in range(3):
        na = v.shape[0]
        lo, hi = max(seg[0], 0), min(seg[1], na - 1)
        if hi - lo < 4:
            return None
        off, dslope, sigma = _fit_line_correction(v, d, lo, hi, sigma)
        if abs(off) > 0.02 or abs(dslope) * (hi - lo) > 0.02:
            cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
            # perpendicular offset of the line at major coordinate m: off + dslope * m
            icpt += off / cosphi
            slope += dslope / cosphi
            v, d = _gather_band(ctx, horizontal, slope, icpt)
        f, good, swv, sw2 = _column_signal(v, d, sigma)
        sel = good[lo:hi + 1]
        mu = float(np.mean(f[lo:hi + 1][sel])) if sel.any() else 0.0
        if mu <= 0:
            return None
        new = _max_snr_segment(np.clip(f, -4.0, max(4.0, 4.0 * mu)), good, mu)
        if new is None:
            return None
        done = it > 0 and abs(new[0] - seg[0]) <= 1 and abs(new[1] - seg[1]) <= 1
        seg = new
        if done:
            break
    a, bb = seg
    # the cell background under a streak is biased high by the streak itself: take the
    # residual sky from the band's outer pixels and measure against it
    # (for the measurements and the ends; acceptance uses the signal the segment was found in)
    sky = 0.0
    outer = (np.abs(d[a:bb + 1]) >= 3 * sigma + 2.0) & np.isfinite(v[a:bb + 1])
    if outer.sum() >= 20:
        sky = float(np.median(v[a:bb + 1][outer]))
        v = v - sky
        _, _, swv, sw2 = _column_signal(v, d, sigma)
    sel = good[a:bb + 1]
    n = int(sel.sum())
    if n < 3:
        return None
    fseg = f[a:bb + 1][sel]
    fclip = np.clip(fseg, -4.0, max(4.0, 4.0 * float(np.median(fseg))))
    snr_clip = float(fclip.sum() / math.sqrt(n))
    npos = int(np.sum(fseg > 0))
    sign_snr = (npos - 0.5 * n) / math.sqrt(0.25 * n)
    snr = float(swv[a:bb + 1][sel].sum() / math.sqrt(sw2[a:bb + 1][sel].sum()))
    amp = float(swv[a:bb + 1][sel].sum() / sw2[a:bb + 1][sel].sum())
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    if (bb - a) / cosphi < p.min_length_pix or snr_clip < p.min_snr or sign_snr < p.min_sign_snr:
        return None
    na = ctx.nx if horizontal else ctx.ny
    minor_lim = ctx.ny if horizontal else ctx.nx
    # the part of the line inside the frame, [-0.5, n - 0.5] on both axes
    m_lo, m_hi = -0.5, na - 0.5
    if slope != 0.0:
        q0, q1 = sorted(((-0.5 - icpt) / slope, (minor_lim - 0.5 - icpt) / slope))
        m_lo, m_hi = max(m_lo, q0), min(m_hi, q1)
    span = (max(int(math.ceil(m_lo)), 0), min(int(math.floor(m_hi)), na - 1))
    # the ends from the same line with stars masked by their pixels only (their blocks would
    # hide up to a block more of a streak ending near one), gathered again around each end
    swv_f, sw2_f = swv.copy(), sw2.copy()
    for c in (a, bb):
        w0, w1 = max(c - _END_WINDOW - 1, 0), min(c + _END_WINDOW + 1, na - 1)
        vf, df = _gather_band(ctx, horizontal, slope, icpt, w0, w1, valid=ctx.usable)
        _, _, swv_f[w0:w1 + 1], sw2_f[w0:w1 + 1] = _column_signal(vf - sky, df, sigma)
    e0, e1 = _ends(swv_f, sw2_f, (a, bb), span, max(4.0, 4.0 * mu))
    e0, e1 = max(e0, m_lo), min(e1, m_hi)
    if horizontal:
        ex0, ex1 = e0, e1
        ey0, ey1 = icpt + slope * ex0, icpt + slope * ex1
    else:
        ey0, ey1 = e0, e1
        ex0, ex1 = icpt + slope * ey0, icpt + slope * ey1
    length = math.hypot(ex1 - ex0, ey1 - ey0)
    edge = 0
    for m_, mn in ((e0, icpt + slope * e0), (e1, icpt + slope * e1)):
        if m_ <= 1 or m_ >= na - 2 or mn <= 1.5 or mn >= minor_lim - 2.5:
            edge += 1
    # flux per pixel of length: box sums across the streak (|d| <= 3 sigma + 1.5) of the
    # columns whose box is complete, times cos(phi) (a column crosses 1/cos(phi) of length)
    inbox = np.abs(d[a:bb + 1]) <= 3 * sigma + 1.5
    vals = v[a:bb + 1]
    complete = ~np.any(inbox & ~np.isfinite(vals), axis=1)
    if complete.sum() >= 3:
        colsum = np.sum(np.where(inbox, np.nan_to_num(vals), 0.0), axis=1)[complete]
        flux = float(np.mean(colsum)) * cosphi * ctx.sigma_pix / ctx.exptime_s
    else:
        flux = amp * math.sqrt(2 * math.pi) * sigma * ctx.sigma_pix / ctx.exptime_s
    fwhm = 2.3548 * sigma
    return {"x0": ex0, "y0": ey0, "x1": ex1, "y1": ey1, "length_pix": length,
            "width_fwhm_pix": fwhm, "flux_adu_per_s_per_pix": flux,
            "sb_adu_per_s_per_pix2": flux / fwhm, "snr": snr, "n_ends_at_edge": edge}


def _point_segment_distance(px, py, x0, y0, x1, y1):
    """Distance of points to a segment and their projection parameter (pix along it)."""
    dx, dy = x1 - x0, y1 - y0
    L = math.hypot(dx, dy)
    ux, uy = dx / L, dy / L
    t = (px - x0) * ux + (py - y0) * uy
    perp = np.abs(-(px - x0) * uy + (py - y0) * ux)
    tc = np.clip(t, 0.0, L)
    dist = np.hypot(px - (x0 + tc * ux), py - (y0 + tc * uy))
    return dist, perp, t, L


def _same_streak(s, q):
    """Two detections of one streak: nearly parallel and one's midpoint on the other."""
    a1 = math.atan2(s["y1"] - s["y0"], s["x1"] - s["x0"])
    a2 = math.atan2(q["y1"] - q["y0"], q["x1"] - q["x0"])
    da = abs((a1 - a2 + math.pi / 2) % math.pi - math.pi / 2)
    shorter = min(s["length_pix"], q["length_pix"])
    if da > max(math.radians(3.0), math.atan2(8.0, shorter)):
        return False
    for u, w in ((s, q), (q, s)):
        mx, my = 0.5 * (u["x0"] + u["x1"]), 0.5 * (u["y0"] + u["y1"])
        dist = _point_segment_distance(np.array([mx]), np.array([my]),
                                       w["x0"], w["y0"], w["x1"], w["y1"])[0]
        if dist[0] < 12.0:
            return True
    return False


def _rides_on(s, q):
    """A short, weaker detection whose middle lies on the stronger streak `q`."""
    if s["length_pix"] >= 0.5 * q["length_pix"] or s["snr"] >= q["snr"]:
        return False
    mx, my = 0.5 * (s["x0"] + s["x1"]), 0.5 * (s["y0"] + s["y1"])
    dist = _point_segment_distance(np.array([mx]), np.array([my]), q["x0"], q["y0"], q["x1"], q["y1"])[0]
    return dist[0] < 4.0 + q["width_fwhm_pix"]


def _merge_collinear(streaks, max_gap_pix=200.0):
    """Join pieces of one streak split by a masked gap (a bright star): nearly parallel, each
    one's ends within 3 pix of the other's line, ends less than `max_gap_pix` apart."""
    streaks = list(streaks)
    merged = True
    while merged:
        merged = False
        for i in range(len(streaks)):
            for j in range(i + 1, len(streaks)):
                s, q = streaks[i], streaks[j]
                ends_s = np.array([s["x0"], s["x1"]]), np.array([s["y0"], s["y1"]])
                ends_q = np.array([q["x0"], q["x1"]]), np.array([q["y0"], q["y1"]])
                _, perp_s, t_s, Lq = _point_segment_distance(*ends_s, q["x0"], q["y0"], q["x1"], q["y1"])
                _, perp_q, _, _ = _point_segment_distance(*ends_q, s["x0"], s["y0"], s["x1"], s["y1"])
                if perp_s.max() > 3.0 or perp_q.max() > 3.0:
                    continue
                gap = max(t_s.min() - Lq, -t_s.max(), 0.0)
                if gap > max_gap_pix:
                    continue
                # the union along q's direction
                ux, uy = (q["x1"] - q["x0"]) / Lq, (q["y1"] - q["y0"]) / Lq
                lo, hi = min(0.0, t_s.min()), max(Lq, t_s.max())
                w_s, w_q = s["length_pix"], q["length_pix"]
                new = dict(q)
                new.update(x0=q["x0"] + lo * ux, y0=q["y0"] + lo * uy, x1=q["x0"] + hi * ux,
                           y1=q["y0"] + hi * uy, length_pix=hi - lo,
                           snr=math.hypot(s["snr"], q["snr"]),
                           n_ends_at_edge=min(2, s["n_ends_at_edge"] + q["n_ends_at_edge"]))
                for key in ("width_fwhm_pix", "flux_adu_per_s_per_pix", "sb_adu_per_s_per_pix2"):
                    new[key] = (w_s * s[key] + w_q * q[key]) / (w_s + w_q)
                streaks[i] = new
                del streaks[j]
                merged = True
                break
            if merged:
                break
    return streaks


# --------------------------------------------------------------------------- driver

def detect_streaks(image, bad_mask, star_x, star_y, star_flux_adu, *, exptime_s, backend,
                   wcs=None, params=None, time_limit_s=None):
    """Find linear streaks on a detrended image.

    Parameters
    ----------
    image : array (ny, nx)
        Detrended image (ADU), host or on the backend's device.
    bad_mask : array (ny, nx) or None
        Static bad pixels (nonzero = bad).
    star_x, star_y, star_flux_adu : array (n,)
        Catalogue stars to mask: positions (pix) and total fluxes (ADU).
    exptime_s : float
        Exposure time, s (fluxes are reported per second).
    backend : Backend
        Array module and device (`backend.xp`, `asarray`, `to_host`).
    wcs : astropy.wcs.WCS, optional
        For the endpoints' RA/Dec and the position angle (NaN without).
    params : StreakParams, optional
    time_limit_s : float, optional
        Give up past this many seconds (checked between stages and candidates).

    Returns
    -------
    StreakResult
    """
    p = params or StreakParams()
    clock = _Clock(time_limit_s)
    try:
        table, n_cand = _detect(image, bad_mask, star_x, star_y, star_flux_adu, exptime_s,
                                backend, wcs, p, clock)
    except _Timeout:
        log.warning("streak detection gave up after %.2f s (limit %.2f s); no streaks reported",
                    time.perf_counter() - clock.t0, time_limit_s)
        return StreakResult(empty_streak_table(), timed_out=True, timings=clock.marks)
    return StreakResult(table, n_candidates=n_cand, timings=clock.marks)


def warm_up(backend):
    """Compile (or load from the disk cache) the streak kernels of `backend` on a small image
    with one streak (about 5 s the first time, 0.4 s from the cache)."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (192, 256)).astype(np.float32)
    image[96, :] += 200.0
    detect_streaks(image, np.zeros(image.shape, np.uint8), np.array([50.0]), np.array([60.0]),
                   np.array([1e4]), exptime_s=20.0, backend=backend)


def _detect(image, bad_mask, star_x, star_y, star_flux_adu, exptime_s, be, wcs, p, clock):
    xp = be.xp
    kern = streak_kernels(kernel_target(be))
    img = xp.ascontiguousarray(be.asarray(image), dtype=xp.float32)
    ny, nx = img.shape
    if bad_mask is None:
        bad = xp.zeros((ny, nx), dtype=xp.uint8)
    else:
        bad = xp.ascontiguousarray(be.asarray(bad_mask) != 0).view(xp.uint8)
    b, c = p.block_pix, p.cell_blocks
    nby, nbx = ny // b, nx // b
    bsum = xp.empty((nby, nbx), dtype=xp.float32)
    bcnt = xp.empty((nby, nbx), dtype=xp.int32)
    kern.block_sums(img, bad, b, bsum, bcnt)
    mean = bsum / xp.maximum(bcnt, 1).astype(xp.float32)
    full = (bcnt == b * b).astype(xp.uint8)
    ncy, ncx = -(-nby // c), -(-nbx // c)
    scratch = xp.empty((ncy * ncx, 2 * c * c), dtype=xp.float64)
    med = xp.empty((ncy, ncx), dtype=xp.float64)
    mad = xp.empty((ncy, ncx), dtype=xp.float64)
    kern.cell_stats(mean, full, c, scratch, med, mad)
    cells = _clean_cells(be.to_host(med), be.to_host(mad), p)
    clock.check("blocks_background")
    if cells is None:
        log.warning("streak detection: no usable background cell; skipped")
        return empty_streak_table(), 0
    bkg_c, sig_c, masked_c = cells
    sigma_pix = float(np.median(sig_c)) * b

    sx = np.ascontiguousarray(star_x, dtype=np.float64)
    sy = np.ascontiguousarray(star_y, dtype=np.float64)
    sr = _star_radii(star_flux_adu, sigma_pix, p)
    smask = xp.zeros((nby, nbx), dtype=xp.uint8)
    kern.star_mask(be.asarray(sx), be.asarray(sy), be.asarray(sr), b, smask)
    if sx.size:
        # again without the stars: a bright star's halo would raise its cells' background,
        # darken the neighbours' and mask them all as a steep gradient
        kern.cell_stats(mean, full & (smask == 0), c, scratch, med, mad)
        cells = _clean_cells(be.to_host(med), be.to_host(mad), p)
        if cells is None:
            return empty_streak_table(), 0
        bkg_c, sig_c, masked_c = cells
    bkg_b = _upsample(xp, bkg_c, c, nby, nbx)
    sig_b = _upsample(xp, sig_c, c, nby, nbx)
    cellmask = be.asarray(np.repeat(np.repeat(masked_c, c, 0), c, 1)[:nby, :nbx])
    usable = (bcnt * 2 >= b * b) & ~cellmask
    zs = (mean - bkg_b) * xp.sqrt(bcnt.astype(xp.float32)) / (sig_b * b)
    valid = usable & (smask == 0)
    z = xp.where(valid, xp.clip(zs, p.z_clip[0], p.z_clip[1]), 0).astype(xp.float32)
    valid_u8 = valid.astype(xp.uint8)
    # for the streaks' ends, stars are masked by their pixels: their circles go into this
    # frame's copy of the bad pixels (the blocks are done with it)
    kern.star_mask(be.asarray(sx), be.asarray(sy), be.asarray(sr), 1, bad)
    clock.check("mask_normalise")

    sums = _line_sums(z, kern, xp)
    norm = math.sqrt(1 << SEED_LEVEL)
    seeds = []
    for o, (best, level) in enumerate(sums):
        bh = be.to_host(best)
        ys, xs = np.nonzero(bh > p.seed_snr * norm)
        if ys.size:
            s = _seed_slopes(level, ys, xs, xp, be.to_host)
            seeds.append((bh[ys, xs] / norm,) + _seed_geometry(o, ys, xs, s, nby, nbx, b))
    clock.check("line_transform")
    if seeds:
        snr = np.concatenate([q[0] for q in seeds])
        X0, Y0, X1, Y1 = (np.concatenate([q[i] for q in seeds]) for i in range(1, 5))
    else:
        snr = X0 = Y0 = X1 = Y1 = np.zeros(0)
    order = np.argsort(-snr, kind="stable")
    snr, X0, Y0, X1, Y1 = snr[order], X0[order], Y0[order], X1[order], Y1[order]
    MX, MY = 0.5 * (X0 + X1), 0.5 * (Y0 + Y1)
    alive = np.ones(snr.size, bool)

    ctx = _Ctx(img=img, bad=bad, valid=valid_u8, usable=usable.astype(xp.uint8), bkg=bkg_b,
               sig=sig_b, b=b, ny=ny, nx=nx, kern=kern, to_host=be.to_host, xp=xp,
               sigma_pix=sigma_pix, exptime_s=float(exptime_s), params=p)
    accepted = []
    n_cand = 0
    seed_len = ((1 << SEED_LEVEL) - 1) * b
    while n_cand < p.max_candidates:
        live = np.flatnonzero(alive)
        if live.size == 0:
            break
        i = live[0]
        n_cand += 1
        s = _refine(ctx, X0[i], Y0[i], X1[i], Y1[i])
        log.debug("candidate %d: seed snr %.1f at (%.0f, %.0f) -> %s", n_cand, snr[i], MX[i], MY[i],
                  "rejected" if s is None else f"snr {s['snr']:.1f} length {s['length_pix']:.0f}")
        if s is not None and any(_rides_on(s, q) for q in accepted):
            s = None  # a short piece along a brighter streak, at the wrong angle
        if s is not None:
            same = [q for q in accepted if _same_streak(s, q)]
            if any(q["snr"] >= s["snr"] for q in same):
                s = None
            else:
                accepted = [q for q in accepted if not any(q is r for r in same)]
        if s is not None:
            accepted.append(s)
            dist, perp, t, L = _point_segment_distance(MX, MY, s["x0"], s["y0"], s["x1"], s["y1"])
            alive &= ~((perp < 12.0 + s["width_fwhm_pix"]) & (t > -seed_len) & (t < L + seed_len))
        # the seed itself and its neighbours along its own segment are done
        dist, _, _, _ = _point_segment_distance(MX, MY, X0[i], Y0[i], X1[i], Y1[i])
        alive &= dist > 2.0 * b
        alive[i] = False
        clock.check()
    if n_cand >= p.max_candidates and alive.any():
        log.warning("streak detection: stopped after %d candidates (%d seeds left)", n_cand,
                    int(alive.sum()))
    clock.check("refine")
    accepted = _merge_collinear(accepted)
    table = _table(accepted, wcs)
    log.info("streak detection: %d streak(s) from %d seeds (%d refined)", len(table), snr.size, n_cand)
    return table, n_cand


def _table(streaks, wcs):
    t = np.zeros(len(streaks), dtype=STREAK_DTYPE)
    for k, s in enumerate(streaks):
        for name in STREAK_DTYPE.names:
            if name in s:
                t[k][name] = s[name]
    if len(t):
        ang = np.degrees(np.arctan2(t["y1"] - t["y0"], t["x1"] - t["x0"])) % 180.0
        t["angle_pix_deg"] = ang
        if wcs is not None:
            ra0, dec0 = wcs.all_pix2world(t["x0"], t["y0"], 0)
            ra1, dec1 = wcs.all_pix2world(t["x1"], t["y1"], 0)
            t["ra0"], t["dec0"], t["ra1"], t["dec1"] = ra0, dec0, ra1, dec1
            dra = ((ra1 - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(0.5 * (dec0 + dec1)))
            t["pa_deg"] = np.degrees(np.arctan2(dra, dec1 - dec0)) % 180.0
        else:
            for name in ("ra0", "dec0", "ra1", "dec1", "pa_deg"):
                t[name] = np.nan
    return t


def stars_on_streaks(x, y, table, *, radius_pix=8.0):
    """Boolean mask of stars within `radius_pix` plus the streak's FWHM of any streak."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    flag = np.zeros(x.shape, bool)
    for r in table:
        if not (r["length_pix"] > 0):
            continue
        dist, _, _, _ = _point_segment_distance(x, y, r["x0"], r["y0"], r["x1"], r["y1"])
        flag |= dist < radius_pix + r["width_fwhm_pix"]
    return flag


def clip_segment(x0, y0, x1, y1, nx, ny):
    """The part of segment (x0, y0)-(x1, y1) inside the frame [-0.5, nx - 0.5] x [-0.5, ny - 0.5]
    (Liang-Barsky), or None when it misses the frame."""
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 + 0.5), (dx, nx - 0.5 - x0), (-dy, y0 + 0.5), (dy, ny - 0.5 - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
    if t0 >= t1:
        return None
    return x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy


def match_streaks(table, segments, shape, *, max_offset_pix=5.0, max_angle_deg=2.0,
                  min_overlap=0.5):
    """Match detected streaks to reference segments (e.g. simulator truth or another tool).

    A detection matches a reference when their angles agree (within `max_angle_deg`, or the
    angle 5 pix subtends over the reference's length if larger), the detection's midpoint lies
    within `max_offset_pix` of the reference line, and the detection covers at least
    `min_overlap` of the reference's in-frame part.

    Parameters
    ----------
    table : STREAKS table (x0, y0, x1, y1 columns)
    segments : sequence of (x0, y0, x1, y1)
        Reference segments, pixels (ends may lie outside the frame).
    shape : (ny, nx)

    Returns
    -------
    list
        For each reference: the index of the matching detection, or -1 (-2 when the reference
        misses the frame).
    """
    ny, nx = shape
    out = []
    used = set()
    for (x0, y0, x1, y1) in segments:
        c = clip_segment(x0, y0, x1, y1, nx, ny)
        if c is None:
            out.append(-2)
            continue
        cx0, cy0, cx1, cy1 = c
        L = math.hypot(cx1 - cx0, cy1 - cy0)
        ang = math.atan2(cy1 - cy0, cx1 - cx0)
        tol = max(math.radians(max_angle_deg), math.atan2(5.0, max(L, 1.0)))
        best, best_cov = -1, 0.0
        for k, r in enumerate(table):
            if k in used:
                continue
            a = math.atan2(r["y1"] - r["y0"], r["x1"] - r["x0"])
            da = abs((a - ang + math.pi / 2) % math.pi - math.pi / 2)
            if da > tol or L <= 0:
                continue
            mx, my = 0.5 * (r["x0"] + r["x1"]), 0.5 * (r["y0"] + r["y1"])
            ux, uy = (cx1 - cx0) / L, (cy1 - cy0) / L
            perp = abs(-(mx - cx0) * uy + (my - cy0) * ux)
            if perp > max_offset_pix:
                continue
            ta = (r["x0"] - cx0) * ux + (r["y0"] - cy0) * uy
            tb = (r["x1"] - cx0) * ux + (r["y1"] - cy0) * uy
            cov = (min(max(ta, tb), L) - max(min(ta, tb), 0.0)) / L
            if cov >= min_overlap and cov > best_cov:
                best, best_cov = k, cov
        if best >= 0:
            used.add(best)
        out.append(best)
    return out
