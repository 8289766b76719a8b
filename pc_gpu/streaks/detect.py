"""The streak detector's driver: parameters, result, time limit, and the stages in order."""

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels.streak_core import SEED_LEVEL, streak_kernels
from .candidates import (_clean_cells, _line_sums, _seed_geometry, _seed_slopes, _star_pixel_radii, _star_radii,
                         _upsample)
from .refine import _Ctx, _refine
from .table import (_merge_collinear, _point_segment_distance, _rides_on, _same_streak, _table,
                    empty_streak_table, reach_fwhm)

__all__ = ["StreakParams", "StreakResult", "detect_streaks", "warm_up", "kernel_target"]

log = logging.getLogger(__name__)


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
    half the pixel noise) for the blocks; the pixel mask for the ends and measurements also
    counts a core (the rest of the flux, half the wing's scale) and is at least 2 pix.
    band_half_width_pix : half-width of the refinement band.
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


def kernel_target(backend):
    """'cuda' for a GPU backend (real, or numba's simulator), else 'cpu'."""
    is_gpu = getattr(backend, "is_gpu", None)
    if is_gpu is None:
        is_gpu = getattr(backend.xp, "__name__", "numpy") != "numpy"
    return "cuda" if is_gpu else "cpu"


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


def _seeds_near(X0, Y0, X1, Y1, s, reach, margin):
    """Seed segments that come within `reach` pix of streak `s`'s line (crossing it included)
    where it lies within `margin` pix of the streak's extent: a bright streak's blocks make
    seeds of every line through or beside it."""
    L = max(s["length_pix"], 1e-9)
    ux, uy = (s["x1"] - s["x0"]) / L, (s["y1"] - s["y0"]) / L
    sd0 = -(X0 - s["x0"]) * uy + (Y0 - s["y0"]) * ux
    sd1 = -(X1 - s["x0"]) * uy + (Y1 - s["y0"]) * ux
    t0 = (X0 - s["x0"]) * ux + (Y0 - s["y0"]) * uy
    t1 = (X1 - s["x0"]) * ux + (Y1 - s["y0"]) * uy
    cross = sd0 * sd1 <= 0
    den = np.where(cross & (sd0 != sd1), sd0 - sd1, 1.0)
    t_near = np.where(cross, t0 + (t1 - t0) * sd0 / den, np.where(np.abs(sd0) < np.abs(sd1), t0, t1))
    d_near = np.where(cross, 0.0, np.minimum(np.abs(sd0), np.abs(sd1)))
    return (d_near < reach) & (t_near > -margin) & (t_near < L + margin)


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
    filled = bcnt * 2 >= b * b
    usable = filled & ~cellmask
    zs = (mean - bkg_b) * xp.sqrt(bcnt.astype(xp.float32)) / (sig_b * b)
    valid = usable & (smask == 0)
    z = xp.where(valid, xp.clip(zs, p.z_clip[0], p.z_clip[1]), 0).astype(xp.float32)
    valid_u8 = valid.astype(xp.uint8)
    # for the streaks' ends and measurements, stars are masked by their pixels (circles, smaller
    # than the blocks' for faint stars): they go into this frame's copy of the bad pixels (the
    # blocks are done with it)
    sr_pix = _star_pixel_radii(star_flux_adu, sigma_pix, p)
    kern.star_mask(be.asarray(sx), be.asarray(sy), be.asarray(sr_pix), 1, bad)
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

    ctx = _Ctx(img=img, bad=bad, valid=valid_u8, usable=usable.astype(xp.uint8),
               filled=filled.astype(xp.uint8), bkg=bkg_b,
               sig=sig_b, b=b, ny=ny, nx=nx, kern=kern, to_host=be.to_host, xp=xp,
               exptime_s=float(exptime_s), params=p)
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
            alive &= ~_seeds_near(X0, Y0, X1, Y1, s, 12.0 + reach_fwhm(s["width_fwhm_pix"]), seed_len)
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
