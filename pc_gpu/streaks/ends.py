"""Streak ends: the posterior median of the cut between streak and sky at each end, and
whether an end is on the frame edge (then reported where the line crosses the boundary)."""

import numpy as np


def _cut_median(logl):
    """Index of the posterior median of a cut position with log-likelihoods `logl` (flat
    prior)."""
    w = np.exp(logl - logl.max())
    c = np.cumsum(w)
    return int(np.searchsorted(c, 0.5 * c[-1]))


_END_WINDOW = 40  # columns either side of a segment's end searched for the cut


def _cut_loglik(swv, sw2, seg, f_max):
    """Cumulative log-likelihood c[k] of "the streak covers the columns < k" from the columns'
    matched-filter sums (see `_ends`); c has one more element than the columns."""
    i, j = seg
    rt = np.sqrt(sw2)
    f = np.clip(swv / np.where(rt > 0, rt, 1.0), -4.0, f_max)
    amp = float(np.sum(rt[i:j + 1] * f[i:j + 1]) / max(np.sum(sw2[i:j + 1]), 1e-9))
    m = max(amp, 1e-3) * rt
    return np.concatenate([[0.0], np.cumsum(m * (f - 0.5 * m))])


def _ends(swv, sw2, seg, span, f_max, reach=(_END_WINDOW, _END_WINDOW)):
    """Streak ends (major coordinates of the boundaries, pix) from segment `seg` = (i, j).

    Column k (the pixels whose perpendicular meets the line there, so that a cut is across the
    streak) has the matched-filter statistic f = swv / sqrt(sw2) (unit variance), of mean
    A sqrt(sw2) inside the streak and 0 outside (A: peak amplitude in pixel-noise units,
    fitted on the segment; masked pixels have no weight in swv and sw2, so they are missing
    data, not zeros). Each end is the posterior median of the cut, over the cuts from
    `_END_WINDOW` columns inside the segment's end to `reach` = (before i, after j) columns
    beyond it, from that likelihood: an end hidden under a mask lands in its middle. f is
    clipped to [-4, `f_max`] (single bright outliers). Cuts stay within `span` = (first, last)
    column whose line point lies in the frame.
    """
    i, j = seg
    c = _cut_loglik(swv, sw2, seg, f_max)
    k0, k1 = max(j + 1 - _END_WINDOW, i + 1), min(j + 1 + reach[1], max(span[1], j) + 1)
    end = k0 + _cut_median(c[k0:k1 + 1])
    k0, k1 = max(i - reach[0], min(span[0], i)), min(i + _END_WINDOW, end - 1)
    start = k0 + _cut_median(-c[k0:k1 + 1])
    return start - 0.5, end - 0.5


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
