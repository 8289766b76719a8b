"""A streak's width and brightness from its own profile across it.

The pixels of the band around the fitted line (the image's values, ADU, and signed distances
from the line, pix) are binned by distance; each bin gets a clipped mean and its error from
its own scatter. The binned profile is fitted with

    m(d) = c + g d + F * mean_k N(d - delta + u_k; s),   s^2 = sigma^2 + bin^2 / 12

where N is the unit-area Gaussian, c + g d the band's own background (mean over the columns,
with its gradient across the band), F the flux per pixel of length, delta a small offset of
the line (fitted per part of the streak, e.g. its two halves, so that the fit also corrects
the line's angle), and u_k the offsets of sub-pixel samples of a
pixel projected across the line (a pixel integrates the profile over its area: for a line at
angle phi, the footprint across it is the sum of two uniforms of widths cos(phi) and
sin(phi)). The streak's FWHM is 2.3548 sigma. Errors come from the fit's covariance, scaled
up by the reduced chi-square when the model does not describe the data to within the errors.
"""

import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ProfileFit", "fit_profile", "FWHM_PER_SIGMA"]

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_BIN = 0.25  # pix
_CLIP = 5.0  # robust sigmas
_SUB = 8  # sub-pixel samples per pixel side for the footprint


@dataclass(frozen=True)
class ProfileFit:
    """Fitted profile across a streak: `flux` per pixel of length (the values' units times
    pix) and its error, `sigma` (pix) and its error, `offsets` of the line from the one given
    in each part (pix, along +d), and the `background` level on the line (values' units)."""

    flux: float
    flux_err: float
    sigma: float
    sigma_err: float
    offsets: tuple
    background: float

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


def _binned(v, d, part):
    """Clipped mean, its error, mean distance and part of the values in each (part, distance
    bin)."""
    ok = np.isfinite(v) & np.isfinite(d)
    v, d, part = v[ok], d[ok], part[ok]
    key = part * 100000 + np.rint(d / _BIN).astype(np.int64)
    order = np.argsort(key, kind="stable")
    key, v, d, part = key[order], v[order], d[order], part[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    rows = []
    for vb, db, pb in zip(np.split(v, cuts), np.split(d, cuts), np.split(part, cuts)):
        if vb.size < 5:
            continue
        med = np.median(vb)
        scale = 1.4826 * np.median(np.abs(vb - med))
        keep = np.abs(vb - med) <= _CLIP * scale if scale > 0 else np.ones(vb.size, bool)
        n = int(keep.sum())
        if n < 5:
            continue
        rows.append((float(np.mean(db[keep])), float(np.mean(vb[keep])),
                     float(np.std(vb[keep], ddof=1) / math.sqrt(n)), int(pb[0])))
    out = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3].astype(np.int64)


def _model(params, d, part, u):
    c, g, flux, sigma = params[:4]
    delta = params[4:][part]
    s = math.sqrt(sigma * sigma + _BIN * _BIN / 12.0)
    x = (d - delta)[:, None] + u[None, :]
    prof = np.exp(-0.5 * (x / s) ** 2).mean(axis=1) / (math.sqrt(2.0 * math.pi) * s)
    return c + g * d + flux * prof


def fit_profile(v, d, *, slope, sigma0, part=None):
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
    part : int array, optional
        Pieces of the streak (0, 1, ...; same shape as v) that get their own offset of the
        line (the background, width and flux are shared).

    Returns
    -------
    ProfileFit or None
        None when too few distance bins are populated or the fit fails.
    """
    from scipy.optimize import least_squares

    v = np.asarray(v, np.float64).ravel()
    part = np.zeros(v.size, np.int64) if part is None else np.asarray(part, np.int64).ravel()
    nparts = int(part.max()) + 1 if part.size else 1
    centres, means, errs, bpart = _binned(v, np.asarray(d, np.float64).ravel(), part)
    good = errs > 0
    centres, means, errs, bpart = centres[good], means[good], errs[good], bpart[good]
    if centres.size < 8 + 4 * nparts or np.bincount(bpart, minlength=nparts).min() < 6:
        return None
    u = _footprint(slope)
    wings = np.abs(centres) > 3.0 * sigma0 + 2.0
    c0 = float(np.median(means[wings])) if wings.sum() >= 3 else 0.0
    f0 = float(np.sum(means - c0) * _BIN) / nparts
    start = np.array([c0, 0.0, max(f0, 1e-6), max(sigma0, 0.5)] + [0.0] * nparts)
    lower = [-np.inf, -np.inf, 0.0, 0.2] + [-3.0] * nparts
    upper = [np.inf, np.inf, np.inf, 10.0] + [3.0] * nparts

    def resid(p):
        return (_model(p, centres, bpart, u) - means) / errs

    try:
        res = least_squares(resid, np.clip(start, np.add(lower, 1e-9), np.subtract(upper, 1e-9)),
                            bounds=(lower, upper), x_scale="jac")
    except (ValueError, np.linalg.LinAlgError) as exc:
        log.debug("streak profile fit failed: %s", exc)
        return None
    if not res.success:
        return None
    dof = max(centres.size - res.x.size, 1)
    chi2 = float(np.sum(res.fun ** 2)) / dof
    jac = res.jac
    try:
        cov = np.linalg.inv(jac.T @ jac) * max(chi2, 1.0)
    except np.linalg.LinAlgError:
        return None
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    x = [float(q) for q in res.x]
    return ProfileFit(flux=x[2], flux_err=float(err[2]), sigma=x[3], sigma_err=float(err[3]),
                      offsets=tuple(x[4:]), background=x[0])
