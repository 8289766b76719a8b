"""Streak ends: the posterior median of the cut between streak and sky at each end, and
whether an end is on the frame edge (then reported where the line crosses the boundary)."""

import math

import numpy as np
from scipy.special import ndtr

_END_WINDOW = 40  # columns either side of a segment's end searched for the cut
_CUT_STEPS = 10  # grid of end positions per column (exact tenths: the range ends are whole or half columns)


def _statistics(swv, sw2, seg, f_max):
    """Columns' matched-filter statistics f (clipped to [-4, `f_max`]), sqrt(sw2), and the
    amplitude fitted on the segment `seg` (see `_ends`)."""
    i, j = seg
    rt = np.sqrt(sw2)
    f = np.clip(swv / np.where(rt > 0, rt, 1.0), -4.0, f_max)
    amp = float(np.sum(rt[i:j + 1] * f[i:j + 1]) / max(np.sum(sw2[i:j + 1]), 1e-9))
    return f, rt, max(amp, 1e-3)


def _cut_loglik(swv, sw2, seg, f_max):
    """Cumulative log-likelihood c[k] of "the streak covers the columns < k" from the columns'
    matched-filter sums (see `_ends`); c has one more element than the columns."""
    f, rt, amp = _statistics(swv, sw2, seg, f_max)
    m = amp * rt
    return np.concatenate([[0.0], np.cumsum(m * (f - 0.5 * m))])


def _blurred_cut_median(f, rt, amp, lo, hi, blur, upper):
    """Posterior median (flat prior) of an end at c in [lo, hi] (major coordinate: column k is
    centred on k), the streak covering the columns below c (`upper`) or above it, its edge
    blurred by a Gaussian of `blur` columns: column k's statistic has mean
    amp sqrt(sw2_k) Phi(+-(c - k) / blur). Columns more than 4 blur + 1 from c are wholly in or
    out (their sums by one cumulative sum)."""
    c = np.arange(round(lo * _CUT_STEPS), round(hi * _CUT_STEPS) + 1) / _CUT_STEPS
    if c.size < 2:
        return float(lo)
    n = f.size
    m_full = amp * rt
    cum = np.concatenate([[0.0], np.cumsum(m_full * (f - 0.5 * m_full))])
    half = int(math.ceil(4.0 * blur)) + 1
    k = np.floor(c).astype(np.int64)[:, None] + np.arange(-half, half + 1)[None, :]
    kc = np.clip(k, 0, n - 1)
    z = (c[:, None] - k) / blur
    m = np.where((k >= 0) & (k < n), m_full[kc] * ndtr(z if upper else -z), 0.0)
    logl = np.sum(m * (f[kc] - 0.5 * m), axis=1)
    # the wholly covered columns: below the window for an upper end, above it for a lower one
    logl += cum[np.clip(k[:, 0], 0, n)] if upper else -cum[np.clip(k[:, -1] + 1, 0, n)]
    w = np.cumsum(np.exp(logl - logl.max()))
    return float(c[np.searchsorted(w, 0.5 * w[-1])])


def _ends(swv, sw2, seg, span, f_max, reach=(_END_WINDOW, _END_WINDOW), blur=0.0):
    """Streak ends (major coordinates, pix) from segment `seg` = (i, j).

    Column k (the pixels whose perpendicular meets the line there, so that a cut is across the
    streak) has the matched-filter statistic f = swv / sqrt(sw2) (unit variance), of mean
    A sqrt(sw2) inside the streak and 0 outside (A: peak amplitude in pixel-noise units,
    fitted on the segment; masked pixels have no weight in swv and sw2, so they are missing
    data, not zeros). The streak's end is not a sharp cut: the point spread function blurs it
    by `blur` columns along the line (its sigma, pix, times the cosine of the line's angle to
    the major axis), and the columns' rounding by 1/sqrt(12) more, so column k's mean is that
    amplitude times the fraction of the blurred streak over it. Each end is the posterior
    median of its position (in steps of 0.1 column), from `_END_WINDOW` columns inside the
    segment's end to `reach` = (before i, after j) columns beyond it: an end hidden under a
    mask lands in its middle. f is clipped to [-4, `f_max`] (single bright outliers). Ends stay
    within `span` = (first, last) column whose line point lies in the frame.
    """
    i, j = seg
    f, rt, amp = _statistics(swv, sw2, seg, f_max)
    b = math.sqrt(blur * blur + 1.0 / 12.0)
    end = _blurred_cut_median(f, rt, amp, max(j - _END_WINDOW, i) + 0.5,
                              min(j + reach[1], max(span[1], j)) + 0.5, b, True)
    start = _blurred_cut_median(f, rt, amp, max(i - reach[0], min(span[0], i)) - 0.5,
                                min(i + _END_WINDOW - 0.5, end - 1.0), b, False)
    return start, end


_MAX_HIDDEN = 160  # columns: the longest masked run past a segment's end that its cut looks across


def hidden_run(good, k, step):
    """How many columns from k + step on (stepping by `step`, +1 or -1) are not `good` (masked
    in the detection band), at most `_MAX_HIDDEN`."""
    n = 0
    k += step
    while 0 <= k < good.size and not good[k] and n < _MAX_HIDDEN:
        n += 1
        k += step
    return n


EDGE_LOGLIK = 6.0
"""An end is on the frame edge when the best cut near it is less than this much more likely
(log) than the streak running on to the edge: a streak that does reach the edge is reported
short of it with probability exp(-6) = 0.25% (the maximum of a random walk with drift
-m^2/2 and variance m^2 per column exceeds x with probability exp(-x))."""


def edge_loglik(swv, sw2, seg, span, f_max):
    """Log-likelihood ratios (start, end) of the best cut against the streak running on to
    the frame edge (the first and last columns of `span`) on that side; >= 0."""
    i, j = seg
    c = _cut_loglik(swv, sw2, seg, f_max)
    lo, hi = min(span[0], i), max(span[1], j) + 1
    return float(c[lo] - c[lo:j + 1].min()), float(c[i + 1:hi + 1].max() - c[hi])


def line_extent(icpt, slope, lims):
    """Where the line minor = icpt + slope * major lies in the frame [-0.5, n - 0.5] on both
    axes (`lims` = (n_major, n_minor)): (m_lo, m_hi, edge_lo, edge_hi), the major coordinates
    of its boundary crossings and, for each, the edge crossed there as (axis, value), axis 0
    for a major-coordinate edge and 1 for a minor one."""
    n_major, n_minor = lims
    lo, hi = (-0.5, (0, -0.5)), (n_major - 0.5, (0, n_major - 0.5))
    if slope != 0.0:
        crossings = sorted([((-0.5 - icpt) / slope, -0.5), ((n_minor - 0.5 - icpt) / slope, n_minor - 0.5)])
        (q0, v0), (q1, v1) = crossings
        if q0 > lo[0]:
            lo = (q0, (1, v0))
        if q1 < hi[0]:
            hi = (q1, (1, v1))
    return lo[0], hi[0], lo[1], hi[1]


def snap_to_edges(e0, e1, icpt, slope, lims, tol, hidden=(False, False)):
    """Move each end (major coordinates e0 <= e1 of the line minor = icpt + slope * major) that
    lies within `tol` pix of the frame edge the line crosses on its side, or that is `hidden`
    (only masked pixels between it and that edge), to that crossing.

    Returns (e0, e1, number of ends on the edge)."""
    m_lo, m_hi, edge_lo, edge_hi = line_extent(icpt, slope, lims)
    out, n = [], 0
    for e, m, (axis, value), hide in ((e0, m_lo, edge_lo, hidden[0]), (e1, m_hi, edge_hi, hidden[1])):
        coord = e if axis == 0 else icpt + slope * e
        if hide or abs(coord - value) <= tol:
            e, n = m, n + 1
        out.append(e)
    return out[0], out[1], n
