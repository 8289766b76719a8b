"""A streak's width and brightness from its own profile across it.

The pixels of the band around the fitted line (the image's values, ADU, and signed distances
from the line, pix) are binned by distance; each bin gets a clipped mean and its error from
its own scatter. The binned profile is fitted with

    m(d) = c + g d + F * mean_k N(d - delta + u_k; s),   s^2 = sigma^2 + bin^2 / 12

where N is the unit-area Gaussian, c + g d the band's own background (mean over the columns,
with its gradient across the band), F the flux per pixel of length, delta a small offset of
the line, and u_k the offsets of sub-pixel samples of a
pixel projected across the line (a pixel integrates the profile over its area: for a line at
angle phi, the footprint across it is the sum of two uniforms of widths cos(phi) and
sin(phi)). The streak's FWHM is 2.3548 sigma. Errors come from the fit's covariance, scaled
up by the reduced chi-square when the model does not describe the data to within the errors.

With that profile, `fit_line` refines the line itself: the offset across it and its change
along it (an angle), fitted to every unmasked pixel of the band (Gauss-Newton, the profile's
shape held), so that a piece cut by the frame edge or by masks weighs as its pixels do.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ProfileFit", "fit_profile", "fit_line", "FWHM_PER_SIGMA"]

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_BIN = 0.25  # pix
_CLIP = 5.0  # robust sigmas
_SUB = 8  # sub-pixel samples per pixel side for the footprint


@dataclass(frozen=True)
class ProfileFit:
    """Fitted profile across a streak: `flux` per pixel of length (the values' units times
    pix) and its error, `sigma` (pix) and its error, `offset` of the line (pix), `background`
    on it (values' units) and its `gradient` across the band (values' units per pix)."""

    flux: float
    flux_err: float
    sigma: float
    sigma_err: float
    offset: float
    background: float
    gradient: float = 0.0

    @property
    def fwhm(self):
        """FWHM across the streak, pix."""
        return FWHM_PER_SIGMA * self.sigma

    @property
    def fwhm_err(self):
        """Error of the FWHM, pix."""
        return FWHM_PER_SIGMA * self.sigma_err


def _footprint(slope):
    """Offsets across a line of `slope` (minor per major) of a pixel's sub-pixel samples."""
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    g = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    a, b = np.meshgrid(g, g)
    return (cosphi * a + abs(slope) * cosphi * b).ravel()


def _binned(v, d):
    """Clipped mean, its error, and mean distance of the values in each distance bin (bins of
    at least 5 values, 5 robust sigmas about the median), all bins at once: the values are
    sorted within their bins by one sort of a combined key (a loop over ~100 bins cost ~10 ms
    a band in numpy's per-call overheads)."""
    ok = np.isfinite(v) & np.isfinite(d)
    v, d = v[ok], d[ok]
    if v.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    idx = np.rint(d / _BIN).astype(np.int64)
    idx -= idx.min()
    order = np.argsort(idx * (2.0 * float(v.max() - v.min()) + 1.0) + (v - v.min()))
    idx, v, d = idx[order], v[order], d[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[starts, idx.size])
    lower, upper = starts + (counts - 1) // 2, starts + counts // 2  # the middle one or two
    bin_of = np.repeat(np.arange(starts.size), counts)
    dev = np.abs(v - 0.5 * (v[lower] + v[upper])[bin_of])
    offset = bin_of * (2.0 * float(dev.max()) + 1.0)
    dev_sorted = np.sort(offset + dev) - offset
    scale = (1.4826 * 0.5 * (dev_sorted[lower] + dev_sorted[upper]))[bin_of]
    keep = np.where(scale > 0, dev <= _CLIP * scale, True)
    n = np.add.reduceat(keep.astype(np.int64), starts)
    nn = np.maximum(n, 1)
    mean = np.add.reduceat(np.where(keep, v, 0.0), starts) / nn
    var = np.add.reduceat(np.where(keep, (v - mean[bin_of]) ** 2, 0.0), starts) / np.maximum(n - 1, 1)
    centre = np.add.reduceat(np.where(keep, d, 0.0), starts) / nn
    good = (counts >= 5) & (n >= 5)
    return centre[good], mean[good], np.sqrt(var / nn)[good]


def _model(params, d, u):
    c, g, flux, delta, sigma = params
    s = math.sqrt(sigma * sigma + _BIN * _BIN / 12.0)
    x = d[:, None] - delta + u[None, :]
    prof = np.exp(-0.5 * (x / s) ** 2).mean(axis=1) / (math.sqrt(2.0 * math.pi) * s)
    return c + g * d + flux * prof


def fit_profile(v, d, *, slope, sigma0):
    """Fit the profile across a streak.

    Parameters
    ----------
    v : array
        Band values (any unit, e.g. ADU; the background is fitted); NaN where masked.
    d : array
        Their signed distances from the line (pix), same shape.
    slope : float
        The line's slope (minor pixels per major pixel): sets the pixel footprint.
    sigma0 : float
        Starting Gaussian sigma (pix).

    Returns
    -------
    ProfileFit or None
        None when too few distance bins are populated or the fit fails.
    """
    from scipy.optimize import least_squares

    centres, means, errs = _binned(np.asarray(v, np.float64).ravel(), np.asarray(d, np.float64).ravel())
    good = errs > 0
    centres, means, errs = centres[good], means[good], errs[good]
    if centres.size < 12:
        return None
    u = _footprint(slope)
    wings = np.abs(centres) > 3.0 * sigma0 + 2.0
    c0 = float(np.median(means[wings])) if wings.sum() >= 3 else 0.0
    f0 = float(np.sum(means - c0) * _BIN)
    start = np.array([c0, 0.0, max(f0, 1e-6), 0.0, max(sigma0, 0.5)])
    lower = [-np.inf, -np.inf, 0.0, -3.0, 0.2]
    upper = [np.inf, np.inf, np.inf, 3.0, 10.0]

    def resid(p):
        return (_model(p, centres, u) - means) / errs

    try:
        res = least_squares(resid, np.clip(start, np.add(lower, 1e-9), np.subtract(upper, 1e-9)),
                            bounds=(lower, upper), x_scale="jac")
    except (ValueError, np.linalg.LinAlgError) as exc:
        log.debug("streak profile fit failed: %s", exc)
        return None
    if not res.success:
        return None
    dof = max(centres.size - 5, 1)
    chi2 = float(np.sum(res.fun ** 2)) / dof
    jac = res.jac
    try:
        cov = np.linalg.inv(jac.T @ jac) * max(chi2, 1.0)
    except np.linalg.LinAlgError:
        return None
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    c, g, flux, delta, sigma = (float(x) for x in res.x)
    return ProfileFit(flux=flux, flux_err=float(err[2]), sigma=sigma, sigma_err=float(err[4]),
                      offset=delta, background=c, gradient=g)


def _profile_table(sigma, u, reach):
    """The footprint-averaged unit-flux profile and its derivative on a fine grid of
    distances (pix) out to `reach`."""
    x = np.arange(-reach, reach + 1e-9, 0.02)
    t = x[:, None] + u[None, :]
    g = np.exp(-0.5 * (t / sigma) ** 2) / (math.sqrt(2.0 * math.pi) * sigma)
    return x, g.mean(axis=1), (-t / sigma ** 2 * g).mean(axis=1)


def fit_line(v, d, major, fit, *, slope, iterations=3):
    """Refine the line through the band: the offset across it and its change along it.

    Parameters
    ----------
    v, d : array (n, 2k+1)
        Band values (as for `fit_profile`; NaN where masked) and signed distances from the
        line (pix), one row per major coordinate.
    major : array (n,)
        The rows' major coordinates (pix).
    fit : ProfileFit
        The profile across the streak (from `fit_profile` on this band); its shape, flux and
        background are held.
    slope : float
        The line's slope (minor pixels per major pixel).

    Returns
    -------
    (offset, dslope) or None
        Perpendicular offset of the streak from the line at major coordinate 0 (pix) and its
        change per major pixel; None with too few pixels or when the fit would move the line
        by more than 2 pix at an end.
    """
    u = _footprint(slope)
    reach = 3.0 * fit.sigma + 1.5
    xs, prof, dprof = _profile_table(fit.sigma, u, reach + 1.0)
    m = np.broadcast_to(np.asarray(major, np.float64)[:, None], np.shape(d))
    ok = np.isfinite(v) & np.isfinite(d)
    v, d, m = np.asarray(v, np.float64)[ok], np.asarray(d, np.float64)[ok], m[ok]
    near = np.abs(d - fit.offset) <= reach
    if near.sum() < 20:
        return None
    v, d, m = v[near], d[near], m[near]
    mc = float(np.mean(m))
    t = m - mc
    half = float(np.max(np.abs(t)))
    a, b = fit.offset, 0.0
    keep = np.ones(v.size, bool)
    for _ in range(iterations):
        x = np.clip(d - a - b * t, -reach - 1.0, reach + 1.0)
        r = v - fit.background - fit.gradient * d - fit.flux * np.interp(x, xs, prof)
        scale = 1.4826 * np.median(np.abs(r - np.median(r)))
        keep = np.abs(r) <= _CLIP * scale if scale > 0 else keep
        j = -fit.flux * np.interp(x, xs, dprof)  # d(model) / d(offset)
        A = np.vstack([j, j * t])[:, keep]
        try:
            step = np.linalg.solve(A @ A.T, A @ r[keep])
        except np.linalg.LinAlgError:
            return None
        a, b = a + float(step[0]), b + float(step[1])
        if abs(a - fit.offset) + abs(b) * half > 2.0:
            return None  # the line it came with is good to a fraction of a pixel
    return a - b * mc, b
