"""The plate solver's TAN(-SIP) solution: least-squares fit to matched pixel and sky positions,
mapping both ways, and the astropy WCS it stands for (the geometry is `tan`'s).

The reference pixel is fixed (the image centre) and the fit moves the tangent point. The
inverse polynomials AP, BP are fitted on a grid over the image, so the solution maps sky to
pixels without iterating. Why this fit is not `refine.refine_wcs`: see `tan`.
"""

from dataclasses import dataclass, field

import numpy as np

from .tan import (cos_distance, design, from_tangent_plane, inverse_sip, poly_terms, split_coefficients,
                  tan_sip_wcs, tangent_plane)

__all__ = ["TanSip", "fit_tan_sip"]

_NORM = 1000.0  # pixel offsets are divided by this in the design matrices (conditioning)


def _lstsq(matrix, rhs):
    """Least-squares coefficients by the normal equations (the designs here are a few columns of
    well-scaled monomials; numpy's SVD-based lstsq costs ~100 times more under load)."""
    return np.linalg.solve(matrix.T @ matrix, matrix.T @ rhs)


def _poly(coeffs, u, v, terms):
    """Sum of coeffs[k] u^p v^q over `terms` (coefficients in normalised units)."""
    if not terms:
        return np.zeros(np.shape(u))
    return design(u, v, terms, _NORM) @ coeffs


@dataclass(frozen=True)
class TanSip:
    """A TAN(-SIP) solution. crpix : reference pixel (0-indexed x, y); crval : tangent point
    (ra, dec) deg; cd : 2 x 2, deg per pixel; order : SIP order (1: none); a, b, ap, bp :
    coefficients of the SIP terms of order 2..order (normalised units, see `_NORM`)."""

    crpix: tuple
    crval: tuple
    cd: np.ndarray
    order: int = 1
    a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bp: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def sip_terms(self):
        return poly_terms(self.order, 2)

    def pixel_to_sky(self, x, y):
        """(ra, dec) deg of 0-indexed pixels."""
        u, v = np.asarray(x) - self.crpix[0], np.asarray(y) - self.crpix[1]
        terms = self.sip_terms
        uu, vv = u + _poly(self.a, u, v, terms), v + _poly(self.b, u, v, terms)
        xi = self.cd[0, 0] * uu + self.cd[0, 1] * vv
        eta = self.cd[1, 0] * uu + self.cd[1, 1] * vv
        return from_tangent_plane(xi, eta, *self.crval)

    def sky_to_pixel(self, ra, dec):
        """0-indexed (x, y) of sky positions (deg); NaN for the far hemisphere."""
        with np.errstate(all="ignore"):  # points a quarter of the sky away and more: NaN below
            xi, eta = tangent_plane(ra, dec, *self.crval)
            inv = np.linalg.inv(self.cd)
            uu, vv = inv[0, 0] * xi + inv[0, 1] * eta, inv[1, 0] * xi + inv[1, 1] * eta
            terms = self.sip_terms
            u, v = uu + _poly(self.ap, uu, vv, terms), vv + _poly(self.bp, uu, vv, terms)
        cosc = cos_distance(ra, dec, *self.crval)
        bad = ~(cosc > 0)
        return np.where(bad, np.nan, u + self.crpix[0]), np.where(bad, np.nan, v + self.crpix[1])

    @property
    def pixscale_arcsec(self):
        """Mean pixel scale at the reference pixel, arcsec."""
        return 3600.0 * float(np.sqrt(abs(np.linalg.det(self.cd))))

    def to_wcs(self):
        """The astropy WCS of this solution (EQUINOX 2000, as astrometry.net's ``.wcs`` files)."""
        return tan_sip_wcs(self.crpix, self.crval, self.cd, order=self.order, scale=_NORM,
                           a=self.a, b=self.b, ap=self.ap, bp=self.bp, equinox=2000.0)


def fit_tan_sip(x, y, ra, dec, *, crpix, crval, order=1, shape=None, iterations=3):
    """Least-squares TAN(-SIP) fit of pixels (x, y) to sky (ra, dec), deg.

    Parameters
    ----------
    crpix : (float, float)
        Reference pixel (0-indexed), kept fixed.
    crval : (float, float)
        Starting tangent point, deg (moved to the fit's reference-pixel position).
    order : int
        SIP order (1: a plain TAN, linear CD).
    shape : (ny, nx), optional
        Image shape: the inverse polynomials are fitted on a grid over it (needed for order >= 2).

    Returns
    -------
    TanSip
    """
    u, v = np.asarray(x, np.float64) - crpix[0], np.asarray(y, np.float64) - crpix[1]
    fit_design = design(u, v, poly_terms(order), _NORM)
    crval = (float(crval[0]), float(crval[1]))
    for _ in range(iterations):
        cx, ce = _lstsq(fit_design, np.column_stack(tangent_plane(ra, dec, *crval))).T
        crval = tuple(float(c) for c in from_tangent_plane(cx[0], ce[0], *crval))
    coef = _lstsq(fit_design, np.column_stack(tangent_plane(ra, dec, *crval)))
    cd, (a, b) = split_coefficients(coef, _NORM)
    if order < 2:
        return TanSip(crpix=tuple(crpix), crval=crval, cd=cd)
    ap, bp = inverse_sip(a, b, order, _NORM, crpix, shape)
    return TanSip(crpix=tuple(crpix), crval=crval, cd=cd, order=order, a=a, b=b, ap=ap, bp=bp)
