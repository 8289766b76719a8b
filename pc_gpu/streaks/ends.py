"""Streak ends: the posterior median of the cut between streak and sky at each end."""

import numpy as np

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
