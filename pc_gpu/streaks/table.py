"""The STREAKS table: columns, building it from refined streaks, merging pieces of one
streak, the catalogue's star flags, and matching detections to reference segments."""

import math

import numpy as np

__all__ = ["STREAK_DTYPE", "empty_streak_table", "stars_on_streaks", "clip_segment", "match_streaks"]

STREAK_DTYPE = np.dtype([
    ("x0", "f8"), ("y0", "f8"), ("x1", "f8"), ("y1", "f8"),
    ("ra0", "f8"), ("dec0", "f8"), ("ra1", "f8"), ("dec1", "f8"),
    ("length_pix", "f8"), ("width_fwhm_pix", "f8"), ("width_fwhm_err_pix", "f8"),
    ("angle_pix_deg", "f8"), ("pa_deg", "f8"),
    ("flux_adu_per_s_per_pix", "f8"), ("flux_err_adu_per_s_per_pix", "f8"),
    ("sb_adu_per_s_per_pix2", "f8"), ("snr", "f8"), ("n_ends_at_edge", "i2"),
])
"""STREAKS table columns: endpoints (pixels, 0-indexed; an end within the streak's width of
the frame edge, or one the data allow to run on to that edge, is reported where the fitted
line crosses the frame boundary, at -0.5 or n - 0.5), endpoints' RA/Dec (deg), length (pix), width (FWHM across, measured from the
streak's own profile, and its error, pix), angle of x0,y0 -> x1,y1 from the +x axis
counter-clockwise in [0, 180) (deg, pixel frame), position angle east of north in [0, 180)
(deg), flux per pixel of length integrated across the streak (ADU/s/pix; the profile fit,
above the band's own background) and its error, mean surface brightness = that flux / FWHM
(ADU/s/pix^2), matched-filter SNR of the whole detected segment, and how many ends lie on the
frame edge (0-2). The measured columns are NaN where the profile fit failed."""

MEASURED = ("width_fwhm_pix", "width_fwhm_err_pix", "flux_adu_per_s_per_pix",
            "flux_err_adu_per_s_per_pix", "sb_adu_per_s_per_pix2")

_FALLBACK_FWHM = 2.5  # pix: the reach of a streak whose width could not be measured


def reach_fwhm(width):
    """A streak's FWHM for geometry (flags, overlaps): the measured one, or 2.5 pix."""
    return width if np.isfinite(width) else _FALLBACK_FWHM


def empty_streak_table():
    """A STREAKS table with no rows."""
    return np.zeros(0, dtype=STREAK_DTYPE)


def _point_segment_distance(px, py, x0, y0, x1, y1):
    """Distance of points to a segment and their projection parameter (pix along it)."""
    dx, dy = x1 - x0, y1 - y0
    L = math.hypot(dx, dy)
    ux, uy = dx / L, dy / L
    t = (px - x0) * ux + (py - y0) * uy
    perp = np.abs(-(px - x0) * uy + (py - y0) * ux)
    tc = np.clip(t, 0.0, L)
    dist = np.hypot(px - (x0 + tc * ux), py - (y0 + tc * uy))
    return dist, perp, t, L


def _same_streak(s, q):
    """Two detections of one streak: nearly parallel and one's midpoint on the other."""
    a1 = math.atan2(s["y1"] - s["y0"], s["x1"] - s["x0"])
    a2 = math.atan2(q["y1"] - q["y0"], q["x1"] - q["x0"])
    da = abs((a1 - a2 + math.pi / 2) % math.pi - math.pi / 2)
    shorter = min(s["length_pix"], q["length_pix"])
    if da > max(math.radians(3.0), math.atan2(8.0, shorter)):
        return False
    for u, w in ((s, q), (q, s)):
        mx, my = 0.5 * (u["x0"] + u["x1"]), 0.5 * (u["y0"] + u["y1"])
        dist = _point_segment_distance(np.array([mx]), np.array([my]),
                                       w["x0"], w["y0"], w["x1"], w["y1"])[0]
        if dist[0] < 12.0:
            return True
    return False


def _rides_on(s, q):
    """A short, weaker detection whose middle lies on the stronger streak `q`."""
    if s["length_pix"] >= 0.5 * q["length_pix"] or s["snr"] >= q["snr"]:
        return False
    mx, my = 0.5 * (s["x0"] + s["x1"]), 0.5 * (s["y0"] + s["y1"])
    dist = _point_segment_distance(np.array([mx]), np.array([my]), q["x0"], q["y0"], q["x1"], q["y1"])[0]
    return dist[0] < 4.0 + reach_fwhm(q["width_fwhm_pix"])


def _merge_measurements(new, pieces, weights):
    """Length-weighted means of the pieces' measured columns (and their errors), over the
    pieces where they are finite."""
    for key, err in (("width_fwhm_pix", "width_fwhm_err_pix"),
                     ("flux_adu_per_s_per_pix", "flux_err_adu_per_s_per_pix"), ("sb_adu_per_s_per_pix2", None)):
        vals = np.array([p[key] for p in pieces])
        w = np.where(np.isfinite(vals), weights, 0.0)
        if w.sum() == 0:
            continue
        new[key] = float(np.sum(w * np.nan_to_num(vals)) / w.sum())
        if err is not None:
            errs = np.nan_to_num(np.array([p[err] for p in pieces]))
            new[err] = float(math.sqrt(np.sum((w * errs) ** 2)) / w.sum())


def _merge_collinear(streaks, max_gap_pix=200.0):
    """Join pieces of one streak split by a masked gap (a bright star): nearly parallel, each
    one's ends within 3 pix of the other's line, ends less than `max_gap_pix` apart."""
    streaks = list(streaks)
    merged = True
    while merged:
        merged = False
        for i in range(len(streaks)):
            for j in range(i + 1, len(streaks)):
                s, q = streaks[i], streaks[j]
                ends_s = np.array([s["x0"], s["x1"]]), np.array([s["y0"], s["y1"]])
                ends_q = np.array([q["x0"], q["x1"]]), np.array([q["y0"], q["y1"]])
                _, perp_s, t_s, Lq = _point_segment_distance(*ends_s, q["x0"], q["y0"], q["x1"], q["y1"])
                _, perp_q, _, _ = _point_segment_distance(*ends_q, s["x0"], s["y0"], s["x1"], s["y1"])
                if perp_s.max() > 3.0 or perp_q.max() > 3.0:
                    continue
                gap = max(t_s.min() - Lq, -t_s.max(), 0.0)
                if gap > max_gap_pix:
                    continue
                # the union along q's direction
                ux, uy = (q["x1"] - q["x0"]) / Lq, (q["y1"] - q["y0"]) / Lq
                lo, hi = min(0.0, t_s.min()), max(Lq, t_s.max())
                w_s, w_q = s["length_pix"], q["length_pix"]
                new = dict(q)
                new.update(x0=q["x0"] + lo * ux, y0=q["y0"] + lo * uy, x1=q["x0"] + hi * ux,
                           y1=q["y0"] + hi * uy, length_pix=hi - lo,
                           snr=math.hypot(s["snr"], q["snr"]),
                           n_ends_at_edge=min(2, s["n_ends_at_edge"] + q["n_ends_at_edge"]))
                _merge_measurements(new, (s, q), (w_s, w_q))
                streaks[i] = new
                del streaks[j]
                merged = True
                break
            if merged:
                break
    return streaks


def _table(streaks, wcs):
    t = np.zeros(len(streaks), dtype=STREAK_DTYPE)
    for k, s in enumerate(streaks):
        for name in STREAK_DTYPE.names:
            if name in s:
                t[k][name] = s[name]
    if len(t):
        ang = np.degrees(np.arctan2(t["y1"] - t["y0"], t["x1"] - t["x0"])) % 180.0
        t["angle_pix_deg"] = ang
        if wcs is not None:
            ra0, dec0 = wcs.all_pix2world(t["x0"], t["y0"], 0)
            ra1, dec1 = wcs.all_pix2world(t["x1"], t["y1"], 0)
            t["ra0"], t["dec0"], t["ra1"], t["dec1"] = ra0, dec0, ra1, dec1
            dra = ((ra1 - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(0.5 * (dec0 + dec1)))
            t["pa_deg"] = np.degrees(np.arctan2(dra, dec1 - dec0)) % 180.0
        else:
            for name in ("ra0", "dec0", "ra1", "dec1", "pa_deg"):
                t[name] = np.nan
    return t


def stars_on_streaks(x, y, table, *, radius_pix=8.0):
    """Boolean mask of stars within `radius_pix` plus the streak's FWHM of any streak."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    flag = np.zeros(x.shape, bool)
    for r in table:
        if not (r["length_pix"] > 0):
            continue
        dist, _, _, _ = _point_segment_distance(x, y, r["x0"], r["y0"], r["x1"], r["y1"])
        flag |= dist < radius_pix + reach_fwhm(r["width_fwhm_pix"])
    return flag


def clip_segment(x0, y0, x1, y1, nx, ny):
    """The part of segment (x0, y0)-(x1, y1) inside the frame [-0.5, nx - 0.5] x [-0.5, ny - 0.5]
    (Liang-Barsky), or None when it misses the frame."""
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0 + 0.5), (dx, nx - 0.5 - x0), (-dy, y0 + 0.5), (dy, ny - 0.5 - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
    if t0 >= t1:
        return None
    return x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy


def match_streaks(table, segments, shape, *, max_offset_pix=5.0, max_angle_deg=2.0,
                  min_overlap=0.5):
    """Match detected streaks to reference segments (e.g. simulator truth or another tool).

    A detection matches a reference when their angles agree (within `max_angle_deg`, or the
    angle 5 pix subtends over the reference's length if larger), the detection's midpoint lies
    within `max_offset_pix` of the reference line, and the detection covers at least
    `min_overlap` of the reference's in-frame part.

    Parameters
    ----------
    table : STREAKS table (x0, y0, x1, y1 columns)
    segments : sequence of (x0, y0, x1, y1)
        Reference segments, pixels (ends may lie outside the frame).
    shape : (ny, nx)

    Returns
    -------
    list
        For each reference: the index of the matching detection, or -1 (-2 when the reference
        misses the frame).
    """
    ny, nx = shape
    out = []
    used = set()
    for (x0, y0, x1, y1) in segments:
        c = clip_segment(x0, y0, x1, y1, nx, ny)
        if c is None:
            out.append(-2)
            continue
        cx0, cy0, cx1, cy1 = c
        L = math.hypot(cx1 - cx0, cy1 - cy0)
        ang = math.atan2(cy1 - cy0, cx1 - cx0)
        tol = max(math.radians(max_angle_deg), math.atan2(5.0, max(L, 1.0)))
        best, best_cov = -1, 0.0
        for k, r in enumerate(table):
            if k in used:
                continue
            a = math.atan2(r["y1"] - r["y0"], r["x1"] - r["x0"])
            da = abs((a - ang + math.pi / 2) % math.pi - math.pi / 2)
            if da > tol or L <= 0:
                continue
            mx, my = 0.5 * (r["x0"] + r["x1"]), 0.5 * (r["y0"] + r["y1"])
            ux, uy = (cx1 - cx0) / L, (cy1 - cy0) / L
            perp = abs(-(mx - cx0) * uy + (my - cy0) * ux)
            if perp > max_offset_pix:
                continue
            ta = (r["x0"] - cx0) * ux + (r["y0"] - cy0) * uy
            tb = (r["x1"] - cx0) * ux + (r["y1"] - cy0) * uy
            cov = (min(max(ta, tb), L) - max(min(ta, tb), 0.0)) / L
            if cov >= min_overlap and cov > best_cov:
                best, best_cov = k, cov
        if best >= 0:
            used.add(best)
        out.append(best)
    return out
