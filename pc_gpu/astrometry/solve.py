"""Plate solving: the WCS of a detrended frame from its stars and the Gaia chunk tree.

1. Detect stars (`detect.detect_stars`, brightest first).
2. Quads of the brightest 25, then 45, then 70 stars (a backbone pair a fraction of the short
   side apart, and two of the five brightest stars inside its circle), coded as the pattern
   data are (`patterns`), in both parities; codes within `CODE_TOLERANCE` of a Gaia quad's and
   a backbone length within `SCALE_TOLERANCE` of the expected pixel scale are candidates.
3. Candidates whose field lies within `HINT_RADIUS_DEG` of the header pointing are tried first,
   then the rest of the sky. Each gives a similarity transform (checked to be one, at the right
   scale), is checked against the pattern stars in its field, then fitted and verified against
   the field's Gaia stars (`verify`): matched, TAN fitted, matched again tighter, TAN-SIP
   (order 3 with enough stars) fitted with outliers clipped, fitted again to all the frame's
   stars, and verified.
4. The first verified candidate is the solution; none is `NoSolution`.
"""

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..camera import EL_NINO
from ..errors import InputError, PCError
from .detect import detect_stars
from .patterns import load_patterns, pattern_params, quad_codes, unit_vectors
from .tan import from_tangent_plane, tangent_plane
from .tansip import fit_tan_sip
from .verify import (CATALOG_PER_DETECTION, MAX_DETECTIONS, MIN_MATCHES, catalog_in_frame,
                     match_nearest, verify_positions)

__all__ = ["NoSolution", "SolveResult", "solve_frame", "solve_detections"]

log = logging.getLogger(__name__)

LEVELS = (25, 45, 70)  # brightest detections making quads, in turn
INNER_STARS = 5  # brightest stars inside a backbone's circle that make its quads
CODE_TOLERANCE = 0.01
SCALE_TOLERANCE = 0.05  # the pixel scale is known to a few percent
SIMILARITY_TOLERANCE = 0.02  # the two axes' scales of a quad's transform may differ this much
HINT_RADIUS_DEG = 10.0
MAX_CANDIDATES = 400  # per level
PATTERN_CHECK_MIN = 6  # pattern stars a candidate must hit before the full check
FIT_DETECTIONS = 1500  # detections the final fit uses (verification uses the brightest MAX_DETECTIONS)


class NoSolution(PCError):
    """No verified plate solution; the message says why."""


@dataclass(frozen=True)
class SolveResult:
    """A verified plate solution: wcs (astropy), n_matched (detections on Gaia stars), rms_pix
    (their rms distance from the fit, pixels), seconds (wall time), centre (ra, dec) of the
    image centre (deg), pixscale_arcsec, log10_false_alarm, near_hint (found within the hint
    radius), n_candidates (candidates tried)."""

    wcs: object
    n_matched: int
    rms_pix: float
    seconds: float
    centre: tuple
    pixscale_arcsec: float
    log10_false_alarm: float
    near_hint: bool
    n_candidates: int


def solve_frame(image, *, gaia_dir, ra_hint=None, dec_hint=None, pixscale_arcsec=None, backend=None):
    """Plate-solve a detrended frame.

    Parameters
    ----------
    image : 2-d float32 array
        Detrended image (ADU), any size; numpy, or the backend's device array.
    gaia_dir : str
        Gaia chunk tree (pattern data are built from it once and cached on disk).
    ra_hint, dec_hint : float, optional
        Header pointing, deg; None: search the whole sky.
    pixscale_arcsec : float, optional
        Expected pixel scale (default the camera's, 8.66"); the true one may differ by 5%.
    backend : pc_gpu.backend.Backend, optional
        Runs the detection kernels (default: the CPU).

    Returns
    -------
    SolveResult

    Raises
    ------
    NoSolution
        When no candidate passes verification (the message says what was found).
    """
    t0 = time.perf_counter()
    detections = detect_stars(image, backend)
    return solve_detections(detections, tuple(image.shape), gaia_dir=gaia_dir, ra_hint=ra_hint,
                            dec_hint=dec_hint, pixscale_arcsec=pixscale_arcsec, started=t0)


def solve_detections(detections, shape, *, gaia_dir, ra_hint=None, dec_hint=None, pixscale_arcsec=None,
                     started=None):
    """`solve_frame` from stars already detected (`detect.Detections`) on an image of `shape`."""
    t0 = time.perf_counter() if started is None else started
    scale = EL_NINO.pixel_scale_arcsec if pixscale_arcsec is None else float(pixscale_arcsec)
    hint = None
    if ra_hint is not None and dec_hint is not None and np.isfinite(ra_hint) and np.isfinite(dec_hint) \
            and -90 <= dec_hint <= 90:
        hint = (float(ra_hint), float(dec_hint))
    if len(detections) < MIN_MATCHES:
        raise NoSolution(f"no solution: {len(detections)} stars detected (at least {MIN_MATCHES} needed)")
    params = pattern_params(shape, scale)
    index = load_patterns(gaia_dir, params)
    if len(index.quads) == 0:
        raise NoSolution(f"no solution: the Gaia chunk tree {gaia_dir} gives no pattern quads")
    x, y = detections.x, detections.y
    tried = 0
    for level, previous in zip(LEVELS, (0,) + LEVELS):
        if previous >= len(x):
            break
        candidates = _candidates(x[:level], y[:level], previous, index, params, scale)
        near, far = _split_by_hint(candidates, index, hint, shape, scale)
        for group, is_near in ((near, True), (far, False)):
            for img_quad, cat_quad in group[:MAX_CANDIDATES]:
                tried += 1
                found = _try_candidate(detections, img_quad, cat_quad, index, shape, scale, gaia_dir)
                if found is not None:
                    sol, ver = found
                    centre = sol.pixel_to_sky(np.array([(shape[1] - 1) / 2]), np.array([(shape[0] - 1) / 2]))
                    seconds = time.perf_counter() - t0
                    log.info("solved: centre RA %.4f Dec %.4f, %.3f\"/pix, %d stars, rms %.2f pix, "
                             "%d candidates, %.2f s%s", centre[0][0], centre[1][0], sol.pixscale_arcsec,
                             ver.n_matched, ver.rms_pix, tried, seconds, "" if is_near or hint is None
                             else " (away from the header pointing)")
                    return SolveResult(wcs=sol.to_wcs(), n_matched=ver.n_matched, rms_pix=ver.rms_pix,
                                       seconds=seconds, centre=(float(centre[0][0]), float(centre[1][0])),
                                       pixscale_arcsec=sol.pixscale_arcsec,
                                       log10_false_alarm=ver.log10_false_alarm,
                                       near_hint=bool(is_near and hint is not None), n_candidates=tried)
    raise NoSolution(f"no solution: {len(detections)} stars detected, {tried} pattern candidates, "
                     "none verified against Gaia")


def _image_quads(x, y, previous, params, scale):
    """(n, 4) indices of the image's quads that use at least one star at or after `previous`."""
    n = len(x)
    i, j = np.triu_indices(n, 1)
    d = np.hypot(x[i] - x[j], y[i] - y[j])
    lo = params.min_side_deg * 3600 / scale / (1 + SCALE_TOLERANCE)
    hi = params.max_side_deg * 3600 / scale * (1 + SCALE_TOLERANCE)
    keep = (d >= lo) & (d <= hi)
    i, j, d = i[keep], j[keep], d[keep]
    mx, my = 0.5 * (x[i] + x[j]), 0.5 * (y[i] + y[j])
    inside = np.hypot(x[None, :] - mx[:, None], y[None, :] - my[:, None]) < 0.5 * d[:, None]
    quads = []
    for k in range(len(i)):
        members = np.flatnonzero(inside[k])
        members = members[(members != i[k]) & (members != j[k])][:INNER_STARS]
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                q = (i[k], j[k], members[a], members[b])
                if max(q) >= previous:
                    quads.append(q)
    return np.asarray(quads, np.int64).reshape(-1, 4)


def _candidates(x, y, previous, index, params, scale):
    """[(image quad indices in code order, pattern quad row)] with matching codes and scale,
    closest codes first."""
    quads = _image_quads(x, y, previous, params, scale)
    if len(quads) == 0:
        return []
    found = []
    for parity in (1.0, -1.0):
        codes, order = quad_codes(parity * x[quads], y[quads])
        ordered = np.take_along_axis(quads, order, axis=1)
        hits = index.code_tree.query_ball_point(codes, CODE_TOLERANCE)
        for q, rows in enumerate(hits):
            if not rows:
                continue
            rows = np.asarray(rows)
            a, b = ordered[q, 0], ordered[q, 1]
            side_pix = np.hypot(x[a] - x[b], y[a] - y[b])
            ratio = side_pix * scale / 3600.0 / index.side_deg[rows]
            rows = rows[np.abs(np.log(ratio)) < np.log1p(SCALE_TOLERANCE)]
            dist = np.linalg.norm(index.codes[rows] - codes[q], axis=1)
            found += [(dist[k], ordered[q], rows[k]) for k in range(len(rows))]
    found.sort(key=lambda item: item[0])
    return [(q, r) for _, q, r in found]


def _split_by_hint(candidates, index, hint, shape, scale):
    """(near, far): candidates whose quad lies within the hint radius plus the half diagonal."""
    if hint is None:
        return [], candidates
    limit = HINT_RADIUS_DEG + 0.5 * np.hypot(*shape) * scale / 3600.0
    hint_xyz = unit_vectors(np.array([hint[0]]), np.array([hint[1]]))[0]
    near, far = [], []
    for cand in candidates:
        a = index.quads[cand[1], 0]
        cos = float(index.xyz[a] @ hint_xyz)
        (near if np.degrees(np.arccos(np.clip(cos, -1, 1))) <= limit else far).append(cand)
    return near, far


def _similarity(img_quad, cat_quad, detections, index, shape, scale):
    """A linear TAN solution from one quad's four pairs, or None when the transform is not a
    similarity at the expected scale."""
    stars = index.quads[cat_quad]
    ra, dec = index.ra[stars], index.dec[stars]
    xyz = unit_vectors(ra, dec).mean(axis=0)
    ra0 = float(np.degrees(np.arctan2(xyz[1], xyz[0])))
    dec0 = float(np.degrees(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1]))))
    xi, eta = tangent_plane(ra, dec, ra0, dec0)
    px, py = detections.x[img_quad], detections.y[img_quad]
    design = np.column_stack([px, py, np.ones(4)])
    cx, ce = np.linalg.lstsq(design, np.column_stack([xi, eta]), rcond=None)[0].T
    m = np.array([cx[:2], ce[:2]])
    s = np.linalg.svd(m, compute_uv=False)
    if s[1] <= 0 or s[0] / s[1] > 1 + SIMILARITY_TOLERANCE:
        return None
    if abs(np.log(np.sqrt(s[0] * s[1]) * 3600 / scale)) > np.log1p(SCALE_TOLERANCE):
        return None
    # sky of the image centre, then the same linear solution about it
    c = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    xc, ec = m @ c + np.array([cx[2], ce[2]])
    centre = from_tangent_plane(xc, ec, ra0, dec0)
    return fit_tan_sip(px, py, ra, dec, crpix=tuple(c), crval=(float(centre[0]), float(centre[1])))


def _try_candidate(detections, img_quad, cat_quad, index, shape, scale, gaia_dir):
    """(TanSip, Verification) when the candidate verifies, else None."""
    sol = _similarity(img_quad, cat_quad, detections, index, shape, scale)
    if sol is None:
        return None
    n = min(len(detections), MAX_DETECTIONS)
    dx, dy = detections.x[:n], detections.y[:n]
    # quick check: pattern stars in the field
    centre = np.array(sol.crval)
    half_diag = 0.5 * np.hypot(*shape) * scale / 3600.0 * (1 + SCALE_TOLERANCE)
    near = index.star_tree.query_ball_point(unit_vectors(centre[:1], centre[1:])[0],
                                            2 * np.sin(np.radians(half_diag) / 2))
    px, py = sol.sky_to_pixel(index.ra[near], index.dec[near])
    inside = (px > -0.5) & (py > -0.5) & (px < shape[1] - 0.5) & (py < shape[0] - 0.5)
    i1, _, _ = match_nearest(dx, dy, px[inside], py[inside], 5.0)
    if len(i1) < PATTERN_CHECK_MIN:
        return None
    # the field's Gaia stars: match, fit, match tighter, fit with distortion (the last time
    # with every star detected, so that the distortion reaches into the corners), verify
    for radius, order, n_fit in ((5.0, 1, n), (3.0, 1, n), (2.0, 3, n), (1.5, 3, FIT_DETECTIONS)):
        fx, fy = detections.x[:n_fit], detections.y[:n_fit]
        try:
            cx, cy, cra, cdec = catalog_in_frame(gaia_dir, sol.sky_to_pixel, sol.pixel_to_sky, shape,
                                                 CATALOG_PER_DETECTION * len(fx))
        except InputError:
            return None
        i1, i2, _ = match_nearest(fx, fy, cx, cy, radius)
        if len(i1) < MIN_MATCHES:
            return None
        order = order if len(i1) >= 60 else 1
        sol = _robust_fit(fx[i1], fy[i1], cra[i2], cdec[i2], sol, order, shape)
    cx, cy, _, _ = catalog_in_frame(gaia_dir, sol.sky_to_pixel, sol.pixel_to_sky, shape,
                                    CATALOG_PER_DETECTION * n)
    ver = verify_positions(dx, dy, cx, cy, shape, radius_pix=2.0)
    return (sol, ver) if ver.ok else None


def _robust_fit(x, y, ra, dec, start, order, shape):
    """TAN(-SIP) fit with matches farther than 3 rms (at least 1 pixel) from it dropped, twice."""
    keep = np.ones(len(x), bool)
    sol = start
    for _ in range(3):
        sol = fit_tan_sip(x[keep], y[keep], ra[keep], dec[keep], crpix=start.crpix, crval=sol.crval,
                          order=order, shape=shape)
        px, py = sol.sky_to_pixel(ra, dec)
        resid = np.hypot(px - x, py - y)
        rms = np.sqrt(np.mean(resid[keep] ** 2))
        new = resid < max(3 * rms, 1.0)
        if new.sum() < max(MIN_MATCHES, 3 * len(sol.sip_terms) + 3) or np.array_equal(new, keep):
            break
        keep = new
    return sol
