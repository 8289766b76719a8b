"""Refinement of one seed at full resolution: the band of pixels around its line, the line
re-fitted from chunk matched-filter offsets, the extent as the box segment of highest
matched-filter SNR, the ends and the measurements."""

import math
from dataclasses import dataclass

import numpy as np

from .ends import _END_WINDOW, EDGE_LOGLIK, _ends, edge_loglik, hidden_run, line_extent, snap_to_edges
from .measure import FWHM_PER_SIGMA, fit_line, fit_profile
from .table import MEASURED


@dataclass
class _Ctx:
    img: object
    bad: object
    valid: object
    usable: object
    filled: object  # blocks with at least half their pixels good (no cell mask)
    bkg: object
    sig: object
    b: int
    ny: int
    nx: int
    kern: object
    to_host: object
    xp: object
    exptime_s: float
    params: object  # StreakParams


def _gather_band(ctx, horizontal, slope, icpt, a0=0, a1=None, valid=None, raw_adu=False,
                 half_width=None):
    """Band values (na, 2k+1) and distances over major coordinates a0..a1 (default: the whole
    major axis of the frame); `valid`: the usable blocks (default `ctx.valid`, stars' blocks
    masked). Values are above the background map in pixel-noise units, or the image's own
    values (ADU) with `raw_adu` (the cell background under a streak is raised by the streak
    itself); `half_width`: k (default `band_half_width_pix`)."""
    xp = ctx.xp
    if a1 is None:
        a1 = (ctx.nx if horizontal else ctx.ny) - 1
    na = a1 - a0 + 1
    kk = ctx.params.band_half_width_pix if half_width is None else int(half_width)
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    v = xp.empty((2 * kk + 1, na), dtype=xp.float32)
    d = xp.empty((2 * kk + 1, na), dtype=xp.float32)
    bkg, sig = (xp.zeros_like(ctx.bkg), xp.full(ctx.sig.shape, 1.0 / ctx.b, dtype=xp.float32)) if raw_adu \
        else (ctx.bkg, ctx.sig)
    ctx.kern.band(ctx.img, ctx.bad, ctx.valid if valid is None else valid, bkg, sig, ctx.b, int(a0),
                  float(slope), float(icpt), float(cosphi), bool(horizontal), kk, v, d)
    return ctx.to_host(v).T.astype(np.float64), ctx.to_host(d).T.astype(np.float64)


def _local_band(ctx, horizontal, slope, icpt, a0, a1, sigma):
    """Band over major coordinates a0..a1 in units of its own pixel noise above its own sky
    (median and MAD of its pixels beyond 3 sigma + 2 pix of the line), not the cells' maps (a
    bright streak raises the background and scatter of the cells it crosses); blocks masked
    only where they lack pixels (not the cells masked as steep gradients: one raised by the
    streak would hide its end)."""
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    kk = max(ctx.params.band_half_width_pix, int(math.ceil((3.0 * sigma + 10.0) / cosphi)))
    v, d = _gather_band(ctx, horizontal, slope, icpt, a0, a1, valid=ctx.filled, raw_adu=True,
                        half_width=kk)
    outer = v[(np.abs(d) >= 3.0 * sigma + 2.0) & np.isfinite(v)]
    if outer.size < 20:
        return np.full(v.shape, np.nan), d
    sky = float(np.median(outer))
    noise = 1.4826 * float(np.median(np.abs(outer - sky)))
    return (v - sky) / noise if noise > 0 else np.full(v.shape, np.nan), d


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


def _cut_sums(v, d, sigma, slope):
    """Matched-filter sums (swv, sw2) per column for the ends, each pixel counted in the column
    where its perpendicular meets the line: an end is a cut across the streak, and a column
    is slanted to it (at 45 deg the pixels of one column within 3 sigma of the line lie up to
    3 sigma before and beyond an end along it). Pixels whose foot falls outside the band's
    columns are left out."""
    na = v.shape[0]
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    ok = np.isfinite(v) & (np.abs(d) <= 3 * sigma + 0.5)
    col = np.arange(na)[:, None] + np.rint(d * (slope * cosphi)).astype(np.int64)
    ok &= (col >= 0) & (col < na)
    w = np.where(ok, np.exp(-0.5 * (d / sigma) ** 2), 0.0)
    col = np.where(ok, col, 0).ravel()
    swv = np.bincount(col, weights=(w * np.where(ok, v, 0.0)).ravel(), minlength=na)
    sw2 = np.bincount(col, weights=(w * w).ravel(), minlength=na)
    return swv, sw2


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
    # (on the segment's columns only: beside a very bright star it can be off the cells' map by
    # half the pixel noise, which along the rest of the line read as a faint streak running on
    # to the frame edge)
    outer = (np.abs(d[a:bb + 1]) >= 3 * sigma + 2.0) & np.isfinite(v[a:bb + 1])
    if outer.sum() >= 20:
        v = v.copy()
        v[a:bb + 1] -= float(np.median(v[a:bb + 1][outer]))
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
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    if (bb - a) / cosphi < p.min_length_pix or snr_clip < p.min_snr or sign_snr < p.min_sign_snr:
        return None
    na = ctx.nx if horizontal else ctx.ny
    minor_lim = ctx.ny if horizontal else ctx.nx
    m_lo, m_hi = line_extent(icpt, slope, (na, minor_lim))[:2]
    span = (max(int(math.ceil(m_lo)), 0), min(int(math.floor(m_hi)), na - 1))
    # the ends from the same line with stars masked by their pixels only (their blocks would
    # hide up to a block more of a streak ending near one), gathered again around each end
    # above its own sky (`_local_band`), out to _END_WINDOW columns past what the detection
    # band could not see
    reach = (_END_WINDOW + hidden_run(good, a, -1), _END_WINDOW + hidden_run(good, bb, 1))
    swv_f, sw2_f = swv.copy(), sw2.copy()
    for w0, w1 in ((a - reach[0] - 1, a + _END_WINDOW + 1), (bb - _END_WINDOW - 1, bb + reach[1] + 1)):
        w0, w1 = max(w0, 0), min(w1, na - 1)
        vf, df = _local_band(ctx, horizontal, slope, icpt, w0, w1, sigma)
        swv_f[w0:w1 + 1], sw2_f[w0:w1 + 1] = _cut_sums(vf, df, sigma, slope)
    e0, e1 = _ends(swv_f, sw2_f, (a, bb), span, max(4.0, 4.0 * mu), reach, blur=sigma * cosphi)
    e0, e1 = max(e0, m_lo), min(e1, m_hi)
    # an end within the streak's width of the frame edge it runs into is on that edge, and so is
    # one where the data allow the streak to run on to that edge (masked pixels included): it is
    # measured (and the line fitted) out to the edge, whose pixels place the crossing best, and
    # put where the refined line crosses it
    lr = edge_loglik(swv_f, sw2_f, (a, bb), span, max(4.0, 4.0 * mu))
    runs_on = (lr[0] < EDGE_LOGLIK, lr[1] < EDGE_LOGLIK)
    s0, s1, _ = snap_to_edges(e0, e1, icpt, slope, (na, minor_lim), FWHM_PER_SIGMA * sigma + 1.0, runs_on)
    fit, icpt, slope = _measure(ctx, horizontal, slope, icpt, s0, s1, sigma, (m_lo, m_hi))
    tol = (fit.fwhm if fit is not None else FWHM_PER_SIGMA * sigma) + 1.0
    e0, e1, edge = snap_to_edges(e0, e1, icpt, slope, (na, minor_lim), tol, runs_on)
    if horizontal:
        ex0, ex1 = e0, e1
        ey0, ey1 = icpt + slope * ex0, icpt + slope * ex1
    else:
        ey0, ey1 = e0, e1
        ex0, ex1 = icpt + slope * ey0, icpt + slope * ey1
    out = {"x0": ex0, "y0": ey0, "x1": ex1, "y1": ey1, "length_pix": math.hypot(ex1 - ex0, ey1 - ey0),
           "snr": snr, "n_ends_at_edge": edge}
    if fit is not None:
        t = ctx.exptime_s
        out.update(width_fwhm_pix=fit.fwhm, width_fwhm_err_pix=fit.fwhm_err,
                   flux_adu_per_s_per_pix=fit.flux / t, flux_err_adu_per_s_per_pix=fit.flux_err / t,
                   sb_adu_per_s_per_pix2=fit.flux / t / fit.fwhm)
    else:
        for k in MEASURED:
            out[k] = math.nan
    return out


def _measure(ctx, horizontal, slope, icpt, e0, e1, sigma, extent):
    """Profile fit (`measure.fit_profile`, ADU) across the streak between its ends (major
    coordinates e0, e1), leaving out where it fades at an end inside the frame (`extent`: the
    major coordinates where the line leaves the frame); the line is refined on the same band
    (`measure.fit_line`) and the profile fitted again about it.

    Returns (fit or None when it fails, icpt, slope)."""
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    margin = int(math.ceil((3.0 * sigma + 1.0) * cosphi))
    a0, a1 = int(math.ceil(e0)), int(math.floor(e1))
    if a1 - a0 > 2 * margin + 10:
        a0 += margin if e0 > extent[0] else 0
        a1 -= margin if e1 < extent[1] else 0
    if a1 - a0 < 3:
        return None, icpt, slope
    kk = max(ctx.params.band_half_width_pix, int(math.ceil((4.0 * sigma + 6.0) / cosphi)))
    v, d = _gather_band(ctx, horizontal, slope, icpt, a0, a1, valid=ctx.usable, raw_adu=True,
                        half_width=kk)
    fit = fit_profile(v, d, slope=slope, sigma0=sigma)
    if fit is None:
        return None, icpt, slope
    major = np.arange(a0, a1 + 1, dtype=np.float64)
    line = fit_line(v, d, major, fit, slope=slope)
    if line is None:
        return fit, icpt, slope
    # the profile again, about the new line (the same pixels, their distances from it), unless
    # that moved by less than 0.05 pix
    shift = line[0] + line[1] * major
    if np.max(np.abs(shift)) >= 0.05:
        refit = fit_profile(v, d - shift[:, None], slope=slope, sigma0=fit.sigma)
        fit = refit if refit is not None else fit
    return fit, icpt + line[0] / cosphi, slope + line[1] / cosphi
