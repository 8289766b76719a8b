"""The TAN (gnomonic) projection with SIP distortion: the one copy of its geometry.

Pixel coordinates are 0-indexed (x = column); u, v are offsets from the reference pixel. The
model is the FITS TAN-SIP one::

    (xi, eta) = CD . (u + A(u, v), v + B(u, v))

where (xi, eta) are the standard coordinates of the star about the tangent point CRVAL, deg,
and A, B the SIP polynomials (terms of order 2 up to the SIP order). Fitted per axis as one
polynomial of u and v (constant, linear, then the SIP terms), its coefficients split into the
tangent-point shift (constant), CD (linear) and A, B (`split_coefficients`).

Two least-squares fits are built on these primitives and kept apart because they serve
different ends:

- `refine.refine_wcs` refines a frame's WCS on a few hundred to thousands of matched Gaia
  stars that may include wrong matches: it clips on the radial residual, picks the SIP order
  from the star count, solves by SVD with a cut on small singular values (stars in a thin strip
  leave terms unconstrained) and iterates the tangent point to convergence; it returns an
  astropy WCS.
- `tansip.fit_tan_sip` is the plate solver's inner fit, called for every candidate quad on
  clean matches at a given order: it solves the normal equations (about 100 times cheaper than
  SVD under load) and moves the tangent point a fixed number of times.

Both give their SIP solutions the inverse polynomials AP, BP, fitted on a grid over the image
(`inverse_sip`), so that sky-to-pixel needs no iteration (`TanSip.sky_to_pixel`, and any reader
of the headers).
"""

import numpy as np

__all__ = ["tangent_plane", "from_tangent_plane", "cos_distance", "poly_terms", "design",
           "split_coefficients", "inverse_sip", "tan_sip_wcs"]


def cos_distance(ra, dec, ra0, dec0):
    """Cosine of the angle between sky positions (ra, dec) and (ra0, dec0), all deg.

    Positive on the hemisphere about (ra0, dec0), where the gnomonic projection is defined.
    """
    ra, dec, ra0, dec0 = (np.radians(a) for a in (ra, dec, ra0, dec0))
    return np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)


def tangent_plane(ra, dec, ra0, dec0):
    """Gnomonic projection of (ra, dec) about (ra0, dec0): standard coordinates (xi, eta), deg.

    xi points east (RA increasing), eta north, as the FITS TAN intermediate world coordinates.
    All inputs in deg; arrays broadcast.
    """
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cos_d, sin_d = np.cos(d), np.sin(d)
    cos_da = np.cos(a - a0)
    denom = sin_d * np.sin(d0) + cos_d * np.cos(d0) * cos_da
    xi = cos_d * np.sin(a - a0) / denom
    eta = (sin_d * np.cos(d0) - cos_d * np.sin(d0) * cos_da) / denom
    return np.degrees(xi), np.degrees(eta)


def from_tangent_plane(xi, eta, ra0, dec0):
    """Inverse of `tangent_plane`: (ra, dec), deg (RA in [0, 360)), of standard coordinates
    (xi, eta), deg, about (ra0, dec0), deg."""
    x, y = np.radians(xi), np.radians(eta)
    d0 = np.radians(dec0)
    den = np.cos(d0) - y * np.sin(d0)
    ra = np.degrees(np.arctan2(x, den)) + ra0
    dec = np.degrees(np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den)))
    return np.mod(ra, 360.0), dec


def poly_terms(order, first=0):
    """(p, q) exponents of the monomials u^p v^q with first <= p + q <= order, by total order,
    then p decreasing: ``poly_terms(3)`` starts with the constant, u, v; ``poly_terms(3, 2)``
    lists the SIP terms."""
    return [(p, n - p) for n in range(first, order + 1) for p in range(n, -1, -1)]


def design(u, v, terms, scale):
    """Design matrix (n, len(terms)) of the monomials (u / scale)^p (v / scale)^q.

    Parameters
    ----------
    u, v : array_like
        Offsets from the reference pixel, pixels.
    terms : list of (int, int)
        Exponents, from `poly_terms`.
    scale : float
        Pixels the offsets are divided by (keeps the columns of similar size), pixels.
    """
    un, vn = np.asarray(u) / scale, np.asarray(v) / scale
    return np.column_stack([un ** p * vn ** q for p, q in terms])


def split_coefficients(coef, scale):
    """CD and SIP coefficients of a fit over ``poly_terms(order)``.

    Parameters
    ----------
    coef : numpy.ndarray
        (n_terms, 2): rows the terms of ``poly_terms(order)`` in u / scale, v / scale (constant
        first, then u, v, then the SIP terms); columns xi, eta, deg.
    scale : float
        The `design` scale of the fit, pixels.

    Returns
    -------
    cd : numpy.ndarray
        (2, 2), deg per pixel: rows xi, eta; columns u, v.
    ab : numpy.ndarray
        (2, n_terms - 3): the A (row 0) and B (row 1) coefficients of the SIP terms, pixels per
        (u / scale)^p (v / scale)^q (the constant term is not used).
    """
    cd = coef[1:3].T / scale
    return cd, np.linalg.solve(cd, coef[3:].T)


def inverse_sip(a, b, order, scale, crpix, shape, *, n_grid=24):
    """Inverse SIP coefficients (AP, BP) of forward ones: least squares on an n_grid x n_grid
    grid over the image, so that u = U + AP(U, V), v = V + BP(U, V) where U = u + A(u, v),
    V = v + B(u, v).

    Parameters
    ----------
    a, b : array_like
        Forward coefficients over ``poly_terms(order, 2)``, pixels per (u / scale)^p (v / scale)^q.
    crpix : (float, float)
        Reference pixel, 0-indexed.
    shape : (int, int)
        Image (ny, nx).

    Returns (ap, bp), in the units of `a`, `b` (monomials of U / scale, V / scale).
    """
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n_grid), np.linspace(0, ny - 1, n_grid))
    gu, gv = gx.ravel() - crpix[0], gy.ravel() - crpix[1]
    terms = poly_terms(order, 2)
    forward = design(gu, gv, terms, scale)
    uu, vv = gu + forward @ np.asarray(a, np.float64), gv + forward @ np.asarray(b, np.float64)
    inverse = design(uu, vv, terms, scale)
    rhs = np.column_stack([gu - uu, gv - vv])
    ap, bp = np.linalg.solve(inverse.T @ inverse, inverse.T @ rhs).T
    return ap, bp


def _sip_matrix(coeffs, order, scale):
    """(order + 1) x (order + 1) matrix M[p, q] of the SIP coefficients per pixel^(p + q) from
    coefficients over ``poly_terms(order, 2)`` in units of (u / scale)^p (v / scale)^q."""
    m = np.zeros((order + 1, order + 1))
    for (p, q), c in zip(poly_terms(order, 2), coeffs):
        m[p, q] = c / scale ** (p + q)
    return m


def tan_sip_wcs(crpix, crval, cd, *, order=1, scale=1.0, a=(), b=(), ap=None, bp=None, equinox=None):
    """The astropy WCS of a TAN (order 1) or TAN-SIP solution.

    Parameters
    ----------
    crpix : (float, float)
        Reference pixel, 0-indexed.
    crval : (float, float)
        Tangent point (ra, dec), deg.
    cd : numpy.ndarray
        (2, 2) linear part, deg per pixel.
    order : int
        SIP order; 1 gives a plain TAN.
    scale : float
        Pixels the offsets of the SIP coefficients are divided by, pixels.
    a, b : array_like
        Forward SIP coefficients over ``poly_terms(order, 2)``, pixels per (u / scale)^p (v / scale)^q.
    ap, bp : array_like, optional
        Inverse SIP coefficients, as `a`, `b`; without them astropy inverts by iteration.
    equinox : float, optional
        EQUINOX of the solution (2000.0 for astrometry.net's ``.wcs`` layout: FK5), else none (ICRS).
    """
    from astropy.wcs import WCS, Sip

    wcs = WCS(naxis=2)
    sip = "-SIP" if order > 1 else ""
    wcs.wcs.ctype = ["RA---TAN" + sip, "DEC--TAN" + sip]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [float(crval[0]), float(crval[1])]
    wcs.wcs.crpix = [crpix[0] + 1.0, crpix[1] + 1.0]
    wcs.wcs.cd = cd
    if equinox is not None:
        wcs.wcs.equinox = equinox
    if order > 1:
        inverse = [None, None] if ap is None else [_sip_matrix(c, order, scale) for c in (ap, bp)]
        wcs.sip = Sip(_sip_matrix(a, order, scale), _sip_matrix(b, order, scale), *inverse, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs
