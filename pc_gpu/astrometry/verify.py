"""Is a plate solution right? Count the detected stars that land on their Gaia counterparts.

A solution (or a given `.wcs`) predicts where the field's brightest Gaia stars fall; each of the
n brightest detections is matched to the nearest prediction within r pixels (one to one). A
wrong solution puts the catalogue at random with respect to the stars, so a detection lands
within r of one of m predictions with probability p = m pi r^2 / area, and k or more chance
matches have the binomial tail probability P(X >= k; n, p). The solution is accepted when k is
at least `MIN_MATCHES` and that probability is below 10^`MAX_LOG10_FALSE_ALARM` (astrometry.net
accepts at odds of 10^9 in the same spirit): the chance of accepting a wrong one is then
negligible however many candidates are tried.
"""

import logging
from dataclasses import dataclass

import numpy as np

from ..camera import EL_NINO
from ..errors import InputError

__all__ = ["Verification", "MIN_MATCHES", "MAX_LOG10_FALSE_ALARM", "match_nearest",
           "log10_false_alarm", "catalog_in_frame", "verify_positions", "verify_wcs"]

log = logging.getLogger(__name__)

MIN_MATCHES = 12
MAX_LOG10_FALSE_ALARM = -9.0
MAX_DETECTIONS = 300  # the brightest detections used
CATALOG_PER_DETECTION = 2  # the brightest m = this x n Gaia stars in the frame are predicted


@dataclass(frozen=True)
class Verification:
    """The outcome of a check: ok, matched count, detections and catalogue stars used, the
    log10 chance probability, the rms distance of the matches (pixels), and a reason."""

    ok: bool
    n_matched: int
    n_detections: int
    n_catalog: int
    log10_false_alarm: float
    rms_pix: float
    reason: str


def match_nearest(x1, y1, x2, y2, radius):
    """One-to-one nearest matches within `radius`: (i1, i2, distance) arrays, each point of
    either list used at most once (closest pairs first)."""
    from scipy.spatial import cKDTree

    if len(x1) == 0 or len(x2) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    dist, i2 = cKDTree(np.column_stack([x2, y2])).query(np.column_stack([x1, y1]),
                                                        distance_upper_bound=radius)
    i1 = np.flatnonzero(np.isfinite(dist))
    i2, dist = i2[i1], dist[i1]
    order = np.argsort(dist, kind="stable")
    i1, i2, dist = i1[order], i2[order], dist[order]
    _, first = np.unique(i2, return_index=True)
    first = np.sort(first)
    return i1[first], i2[first], dist[first]


def log10_false_alarm(n_detections, n_catalog, n_matched, radius_pix, area_pix2):
    """log10 of the probability of `n_matched` or more chance matches (module docstring)."""
    from scipy.stats import binom

    if n_matched <= 0:
        return 0.0
    p = min(1.0, n_catalog * np.pi * radius_pix ** 2 / area_pix2)
    return float(binom.logsf(n_matched - 1, n_detections, p) / np.log(10))


def catalog_in_frame(gaia_dir, to_pixel, pixel_to_sky, shape, max_stars):
    """The brightest `max_stars` Gaia stars predicted inside an image of `shape`.

    `to_pixel(ra, dec) -> (x, y)` and `pixel_to_sky(x, y) -> (ra, dec)` are the solution's
    mappings. Returns (x, y, ra, dec) arrays, brightest first; raises InputError when no chunk
    file covers the field.
    """
    from astropy_healpix import HEALPix
    import astropy.units as u

    from ..gaia import read_gaia_chunks

    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx, 16), np.linspace(0, ny, 16))
    ra, dec = pixel_to_sky(gx.ravel(), gy.ravel())
    ok = np.isfinite(ra) & np.isfinite(dec)
    pixels = np.unique(HEALPix(nside=EL_NINO.gaia_nside, order="ring").lonlat_to_healpix(
        ra[ok] * u.deg, dec[ok] * u.deg))
    gaia = read_gaia_chunks(gaia_dir, pixels)
    g = gaia["PHOT_G_MEAN_MAG"]
    gaia = gaia[np.isfinite(g)]
    ra, dec = gaia["RA"].astype(np.float64), gaia["DEC"].astype(np.float64)
    x, y = to_pixel(ra, dec)
    inside = np.flatnonzero((x > -0.5) & (y > -0.5) & (x < nx - 0.5) & (y < ny - 0.5))
    inside = inside[np.argsort(gaia["PHOT_G_MEAN_MAG"][inside], kind="stable")[:max_stars]]
    return x[inside], y[inside], ra[inside], dec[inside]


def verify_positions(det_x, det_y, cat_x, cat_y, shape, *, radius_pix):
    """Verification of predicted catalogue positions against detections (both brightest
    first, already cut to the numbers to use)."""
    n, m = len(det_x), len(cat_x)
    i1, _, dist = match_nearest(det_x, det_y, cat_x, cat_y, radius_pix)
    k = len(i1)
    lfa = log10_false_alarm(n, m, k, radius_pix, float(shape[0] * shape[1]))
    rms = float(np.sqrt(np.mean(dist ** 2))) if k else float("nan")
    if k < MIN_MATCHES:
        reason = (f"{k} of {n} detected stars within {radius_pix:g} pix of {m} Gaia stars "
                  f"(at least {MIN_MATCHES} needed)")
        return Verification(False, k, n, m, lfa, rms, reason)
    if lfa > MAX_LOG10_FALSE_ALARM:
        reason = (f"{k} of {n} detected stars within {radius_pix:g} pix of {m} Gaia stars could be chance "
                  f"(probability 10^{lfa:.1f})")
        return Verification(False, k, n, m, lfa, rms, reason)
    return Verification(True, k, n, m, lfa, rms,
                        f"{k} of {n} detected stars within {radius_pix:g} pix of {m} Gaia stars (chance 10^{lfa:.0f})")


def verify_wcs(detections, wcs, gaia_dir, shape, *, radius_pix=2.5):
    """Check an astropy WCS (e.g. a given `.wcs`) against detected stars (`detect.Detections`).

    Returns a Verification (ok False, with the reason, when the catalogue does not cover the
    field either)."""
    n = min(len(detections), MAX_DETECTIONS)

    def to_pixel(ra, dec):
        return wcs.all_world2pix(ra, dec, 0, quiet=True)

    def to_sky(x, y):
        return wcs.all_pix2world(x, y, 0)

    try:
        cx, cy, _, _ = catalog_in_frame(gaia_dir, to_pixel, to_sky, shape, CATALOG_PER_DETECTION * max(n, 1))
    except InputError as exc:
        return Verification(False, 0, n, 0, 0.0, float("nan"), f"no Gaia stars to check against ({exc})")
    result = verify_positions(detections.x[:n], detections.y[:n], cx, cy, shape, radius_pix=radius_pix)
    log.debug("WCS check: %s", result.reason)
    return result
