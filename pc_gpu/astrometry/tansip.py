"""A TAN (gnomonic) plate solution with optional SIP polynomial distortion: least-squares fit to
matched pixel and sky positions, mapping both ways, and the astropy WCS it stands for.

Pixel coordinates are 0-indexed (x = column); the reference pixel is fixed (the image centre)
and the fit moves the tangent point. Forward (pixel to sky) as FITS SIP writes it:
(xi, eta) = CD (u + A(u, v), v + B(u, v)), u, v the offsets from the reference pixel; the
inverse polynomials AP, BP are fitted on a grid over the image, so the WCS maps both ways
without iterating.
"""

from dataclasses import dataclass, field

import numpy as np

from .patterns import tangent_plane

__all__ = ["TanSip", "fit_tan_sip", "from_tangent_plane"]

_NORM = 1000.0  # pixel offsets are divided by this in the design matrices (conditioning)


def from_tangent_plane(xi_deg, eta_deg, ra0_deg, dec0_deg):
    """Inverse gnomonic projection: (ra, dec) in deg of tangent-plane (xi, eta) in deg."""
    xi, eta = np.radians(xi_deg), np.radians(eta_deg)
    ra0, dec0 = np.radians(ra0_deg), np.radians(dec0_deg)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _terms(order, first=0):
    return [(p, t - p) for t in range(first, order + 1) for p in range(t, -1, -1)]


def _design(u, v, terms):
    un, vn = np.asarray(u) / _NORM, np.asarray(v) / _NORM
    return np.column_stack([un ** p * vn ** q for p, q in terms])


def _lstsq(design, rhs):
    """Least-squares coefficients by the normal equations (the designs here are a few columns of
    well-scaled monomials; numpy's SVD-based lstsq costs ~100 times more under load)."""
    return np.linalg.solve(design.T @ design, design.T @ rhs)


def _poly(coeffs, u, v, terms):
    """Sum of coeffs[k] u^p v^q over `terms` (coefficients in normalised units)."""
    if not terms:
        return np.zeros(np.shape(u))
    return _design(u, v, terms) @ coeffs


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
        return _terms(self.order, 2)

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
        cosc = _cos_distance(ra, dec, *self.crval)
        bad = ~(cosc > 0)
        return np.where(bad, np.nan, u + self.crpix[0]), np.where(bad, np.nan, v + self.crpix[1])

    @property
    def pixscale_arcsec(self):
        """Mean pixel scale at the reference pixel, arcsec."""
        return 3600.0 * float(np.sqrt(abs(np.linalg.det(self.cd))))

    def to_header(self):
        """The solution as FITS WCS header cards (astrometry.net's .wcs layout)."""
        from astropy.io import fits

        sip = self.order >= 2
        h = fits.Header()
        h["WCSAXES"] = 2
        h["CTYPE1"] = "RA---TAN-SIP" if sip else "RA---TAN"
        h["CTYPE2"] = "DEC--TAN-SIP" if sip else "DEC--TAN"
        h["EQUINOX"] = 2000.0
        h["CRVAL1"], h["CRVAL2"] = float(self.crval[0]), float(self.crval[1])
        h["CRPIX1"], h["CRPIX2"] = float(self.crpix[0] + 1), float(self.crpix[1] + 1)
        h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
        for i in range(2):
            for j in range(2):
                h[f"CD{i + 1}_{j + 1}"] = float(self.cd[i, j])
        if sip:
            for name, coeffs in (("A", self.a), ("B", self.b), ("AP", self.ap), ("BP", self.bp)):
                h[f"{name}_ORDER"] = self.order
                for (p, q), c in zip(self.sip_terms, coeffs):
                    h[f"{name}_{p}_{q}"] = float(c / _NORM ** (p + q))
        return h

    def to_wcs(self):
        """The astropy WCS of this solution."""
        import warnings

        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(self.to_header())


def _cos_distance(ra, dec, ra0, dec0):
    ra, dec, ra0, dec0 = (np.radians(a) for a in (ra, dec, ra0, dec0))
    return np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)


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
    terms = _terms(order)
    design = _design(u, v, terms)
    crval = (float(crval[0]), float(crval[1]))
    for _ in range(iterations):
        cx, ce = _lstsq(design, np.column_stack(tangent_plane(ra, dec, *crval))).T
        crval = tuple(float(c) for c in from_tangent_plane(cx[0], ce[0], *crval))
    cx, ce = _lstsq(design, np.column_stack(tangent_plane(ra, dec, *crval))).T
    cd = np.array([[cx[1], cx[2]], [ce[1], ce[2]]]) / _NORM
    if order < 2:
        return TanSip(crpix=tuple(crpix), crval=crval, cd=cd)
    inv = np.linalg.inv(cd)
    # A, B in pixel units: CD^-1 applied to the higher-order sky terms
    high = np.array([cx[3:], ce[3:]])
    a, b = inv @ high  # pixels per (u/N)^p (v/N)^q
    sip = TanSip(crpix=tuple(crpix), crval=crval, cd=cd, order=order, a=a, b=b)
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 24), np.linspace(0, ny - 1, 24))
    gu, gv = gx.ravel() - crpix[0], gy.ravel() - crpix[1]
    sip_terms = _terms(order, 2)
    uu, vv = gu + _poly(a, gu, gv, sip_terms), gv + _poly(b, gu, gv, sip_terms)
    inv_design = _design(uu, vv, sip_terms)
    ap, bp = _lstsq(inv_design, np.column_stack([gu - uu, gv - vv])).T
    return TanSip(crpix=tuple(crpix), crval=crval, cd=cd, order=order, a=a, b=b, ap=ap, bp=bp)
