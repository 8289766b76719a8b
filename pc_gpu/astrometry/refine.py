"""WCS refinement: fit a TAN-SIP WCS to Gaia stars matched with their measured centroids.

The model is `tan`'s FITS TAN-SIP one with the reference pixel at the image centre. Per axis
it is linear least squares in the polynomial coefficients; the constant terms move the tangent
point, which is reprojected until they vanish. Wrong matches are removed by iterative clipping
on the radial residual (a robust sigma from its median), first with the linear model, then
with the full one. The SIP order follows the number of stars so that the fit never has fewer
than about ten stars per coefficient; terms that the stars' layout leaves unconstrained are
dropped by the least-squares solver's cut on small singular values.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .tan import (design, from_tangent_plane, inverse_sip, poly_terms, split_coefficients, tan_sip_wcs,
                  tangent_plane)

__all__ = ["WcsFit", "refine_wcs", "sip_order_for", "fit_star_mask", "affine_correction", "near_field",
           "carried_centroids", "MIN_STARS"]

log = logging.getLogger(__name__)

MIN_STARS = 10            # fewer usable stars: no refinement
_ORDER_STARS = ((100, 3), (30, 2), (0, 1))  # (at least this many stars, SIP order); 1 = plain TAN
_CLIP = 4.0               # clip at this many robust sigmas of the radial residual
_SIGMA_FLOOR_PIX = 0.01   # never clip tighter than this sigma, pixels
_RAYLEIGH_MEDIAN = 1.1774  # median of a 2-d Gaussian's radius, in units of its per-axis sigma
_MAX_CLIP_PASSES = 10
_MAX_TANGENT_PASSES = 6
_TANGENT_TOL_PIX = 1e-7   # reference point converged when the constant term is below this
_RCOND = 1e-4             # singular values below this (relative) are dropped: terms that the
                          # stars' layout cannot constrain (a thin strip of stars) get no weight


@dataclass(frozen=True)
class WcsFit:
    """A refined WCS and how well it fits.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
        TAN (order 1) or TAN-SIP WCS, CRPIX at the image centre.
    order : int
        Polynomial order fitted (1: linear, no SIP; 2 or 3: SIP).
    used : numpy.ndarray
        Boolean per input star: kept by the clipping.
    rms_ra_arcsec, rms_dec_arcsec : float
        RMS residual of the kept stars along RA * cos(Dec) and Dec (tangent-plane axes), arcsec.
    """

    wcs: object
    order: int
    used: np.ndarray
    rms_ra_arcsec: float
    rms_dec_arcsec: float

    @property
    def n_used(self):
        """Stars the final fit used."""
        return int(self.used.sum())


def sip_order_for(n_stars, max_order=3):
    """Polynomial order for `n_stars` stars: 3 from 100 stars, 2 from 30, else 1 (no SIP)."""
    return min(next(order for least, order in _ORDER_STARS if n_stars >= least), max_order)


def _clipped_fit(u, v, xi, eta, valid, keep, order, scale, pix_deg):
    """Least-squares coefficients (rows: terms of `tan.poly_terms(order)` in u / scale, v / scale;
    columns: xi, eta) with iterative clipping on the radial residual (pixels); returns
    (coef or None, keep)."""
    matrix = design(u, v, poly_terms(order), scale)
    target = np.column_stack([xi, eta])
    coef = None
    for _ in range(_MAX_CLIP_PASSES):
        if keep.sum() < max(MIN_STARS, matrix.shape[1] + 1):
            return None, keep
        coef = np.linalg.lstsq(matrix[keep], target[keep], rcond=_RCOND)[0]
        resid = np.hypot(*(target - matrix @ coef).T) / pix_deg
        sigma = max(float(np.median(resid[keep])) / _RAYLEIGH_MEDIAN, _SIGMA_FLOOR_PIX)
        new_keep = valid & (resid < _CLIP * sigma)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return coef, keep


def refine_wcs(ra, dec, x, y, wcs, crpix, *, max_order=3, shape=None):
    """Fit a TAN-SIP WCS to stars at sky positions (ra, dec) measured at pixels (x, y).

    Parameters
    ----------
    ra, dec : array_like
        Catalogue positions, deg.
    x, y : array_like
        Measured positions, 0-indexed pixels.
    wcs : astropy.wcs.WCS
        The starting WCS: gives the first tangent point (its sky position of `crpix`).
    crpix : (float, float)
        Reference pixel of the refined WCS, 0-indexed (the image centre).
    max_order : int
        Highest polynomial order (3: SIP to third order); fewer stars lower it
        (`sip_order_for`).
    shape : (int, int), optional
        Image (ny, nx): a SIP solution then carries its inverse polynomials AP, BP, fitted over it.

    Returns
    -------
    WcsFit or None
        None when fewer than `MIN_STARS` usable stars remain.
    """
    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    u = np.asarray(x, np.float64) - crpix[0]
    v = np.asarray(y, np.float64) - crpix[1]
    valid = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(u) & np.isfinite(v)
    keep = valid
    if keep.sum() < MIN_STARS:
        return None
    order = sip_order_for(int(keep.sum()), max_order)
    scale = max(float(np.max(np.hypot(u[keep], v[keep]))), 1.0)
    ra0, dec0 = (float(c[0]) for c in wcs.all_pix2world([crpix[0]], [crpix[1]], 0))
    pix_deg = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))))
    for attempt in range(_MAX_TANGENT_PASSES):
        xi, eta = tangent_plane(ra, dec, ra0, dec0)
        coef = None
        if attempt == 0 or order == 1:  # wrong matches go with the linear model first
            coef, keep = _clipped_fit(u, v, xi, eta, valid, keep, 1, scale, pix_deg)
        if order > 1 and (coef is not None or attempt > 0):
            coef, keep = _clipped_fit(u, v, xi, eta, valid, keep, order, scale, pix_deg)
        if coef is None:
            log.warning("WCS refinement: only %d stars left after clipping", int(keep.sum()))
            return None
        ra0, dec0 = (float(c) for c in from_tangent_plane(coef[0, 0], coef[0, 1], ra0, dec0))
        pix_deg = float(np.sqrt(abs(np.linalg.det(coef[1:3] / scale))))
        if np.hypot(*coef[0]) < _TANGENT_TOL_PIX * pix_deg:
            break
    xi, eta = tangent_plane(ra, dec, ra0, dec0)
    resid = (np.column_stack([xi, eta]) - design(u, v, poly_terms(order), scale) @ coef)[keep] * 3600.0
    rms = np.sqrt(np.mean(resid ** 2, axis=0))
    cd, (a, b) = split_coefficients(coef, scale)  # the constant term is ~0 by now
    ap, bp = inverse_sip(a, b, order, scale, crpix, shape) if order > 1 and shape is not None else (None, None)
    wcs = tan_sip_wcs(crpix, (ra0, dec0), cd, order=order, scale=scale, a=a, b=b, ap=ap, bp=bp)
    return WcsFit(wcs, order, keep, float(rms[0]), float(rms[1]))


def affine_correction(x_guess, y_guess, xcentroid, ycentroid, use, centre):
    """The affine map from guesses to centroids, fitted with clipping on the stars `use`.

    Corrects a given WCS that is off by a shift, rotation and scale error large enough that
    only the stars near the centre were recentroided onto themselves (the others keep their
    guess, flagged, or find a neighbour and are clipped).

    Returns
    -------
    callable or None
        ``f(x, y) -> (x', y')`` (pixels), or None with fewer than `MIN_STARS` stars.
    """
    u = np.asarray(x_guess, np.float64) - centre[0]
    v = np.asarray(y_guess, np.float64) - centre[1]
    scale = max(float(np.max(np.hypot(u, v))) if len(u) else 1.0, 1.0)
    valid = np.asarray(use, bool) & np.isfinite(u) & np.isfinite(v)
    coef, _ = _clipped_fit(u, v, np.asarray(xcentroid) - centre[0], np.asarray(ycentroid) - centre[1],
                           valid, valid, 1, scale, 1.0)
    if coef is None:
        return None

    def apply(x, y):
        moved = design(np.asarray(x, np.float64) - centre[0], np.asarray(y, np.float64) - centre[1],
                       poly_terms(1), scale) @ coef
        return moved[:, 0] + centre[0], moved[:, 1] + centre[1]

    return apply


def fit_star_mask(xcentroid, ycentroid, qmaxshift, g_prime,
                  *, exptime_s, sky_adu, camera, min_stars=30):
    """Stars whose centroids can anchor the WCS fit.

    A flux-weighted centroid without background subtraction converges toward the star only
    geometrically (each pass keeps a fraction 1 - w of the offset, w the star's share of the
    box signal), so faint stars stay biased toward their guess: the fit uses the stars whose
    predicted share w (Gaia G' at the nominal zeropoint against `sky_adu` per pixel over the
    box) leaves less than 1% of the offset after the camera's passes, or the `min_stars` with
    the largest share when fewer pass. Stars with a centroid flag or a box that touches the
    image edge are left out (wrong matches are left to the fit's clipping).

    Returns a boolean mask.
    """
    half = 0.5 * camera.centroid_box_pix + 1.0
    good = ((np.asarray(qmaxshift) == 0) & (xcentroid > half) & (ycentroid > half)
            & (xcentroid < camera.nx - 1 - half) & (ycentroid < camera.ny - 1 - half)
            & np.isfinite(g_prime))
    star = 10.0 ** (-0.4 * (np.where(np.isfinite(g_prime), g_prime, 99.0) - camera.nominal_zp)) * exptime_s
    share = star / (star + max(float(sky_adu), 1.0) * camera.centroid_box_pix ** 2)
    residual = (1.0 - share) ** camera.centroid_iterations
    chosen = good & (residual < 0.01)
    if chosen.sum() < min_stars:
        idx = np.flatnonzero(good)
        chosen = np.zeros(len(good), bool)
        chosen[idx[np.argsort(-share[idx], kind="stable")[:min_stars]]] = True
    return chosen


def near_field(gaia, wcs, camera, margin_pix):
    """Rows of `gaia` whose linear (TAN, no distortion) position through `wcs` lies within
    `margin_pix` of the image: the stars a fitted distortion may be inverted at (a polynomial
    fitted inside the image is not meant to be inverted far outside it)."""
    with np.errstate(invalid="ignore"):
        x, y = wcs.wcs_world2pix(gaia["RA"].astype(np.float64), gaia["DEC"].astype(np.float64), 0)
        return gaia[(x > -margin_pix) & (x < camera.nx - 1 + margin_pix) & (y > -margin_pix)
                    & (y < camera.ny - 1 + margin_pix)]


def carried_centroids(old, new, centroids, *, tolerance_pix):
    """Which stars of the star list `new` must be recentroided after the guesses moved from
    the list `old` (same columns: SOURCE_ID, x_gaia_guess, y_gaia_guess), and the centroids
    the others keep.

    Parameters
    ----------
    old, new : numpy structured arrays
        Star lists before and after the WCS changed.
    centroids : (xcentroid, ycentroid, qmaxshift)
        Measured from the guesses of `old`.
    tolerance_pix : float
        A star whose guess moved by more than this, or that is new, is recentroided.

    Returns
    -------
    (numpy.ndarray, tuple)
        Boolean mask over `new`; (xcentroid, ycentroid, qmaxshift) over `new` (the old values
        where kept, anything where masked).
    """
    xc, yc, qmax = centroids
    if len(old) == 0:
        n = len(new)
        return np.ones(n, bool), (np.zeros(n), np.zeros(n), np.zeros(n, np.int64))
    order = np.argsort(old["SOURCE_ID"], kind="stable")
    at = order[np.clip(np.searchsorted(old["SOURCE_ID"], new["SOURCE_ID"], sorter=order), 0, len(old) - 1)]
    moved = ((old["SOURCE_ID"][at] != new["SOURCE_ID"])
             | (np.hypot(new["x_gaia_guess"] - old["x_gaia_guess"][at],
                         new["y_gaia_guess"] - old["y_gaia_guess"][at]) > tolerance_pix))
    return moved, (xc[at], yc[at], qmax[at])
