"""Satellite streaks of the camera simulator: rendering and truth.

A streak is a straight segment from (X0, Y0) to (X1, Y1) (pixels, 0-indexed, ends may lie
outside the frame) of uniform brightness FLUX_ADU_PER_S_PER_PIX per pixel of length, seen
through a circular Gaussian PSF of SIGMA_PIX: across the segment its profile is that
Gaussian (FWHM = 2.3548 SIGMA_PIX) and at each end it fades as an error function centred on
the end. Each pixel gets the profile integrated over its area (sampled on a sub-pixel grid).

The truth table adds, for what the camera sees, the part of the segment inside the frame
[-0.5, nx - 0.5] x [-0.5, ny - 0.5]: its ends CLIP_X0, CLIP_Y0, CLIP_X1, CLIP_Y1 (the true ends,
or where the segment crosses the frame boundary) and EDGE0, EDGE1 (that end is a boundary
crossing).
"""

import math

import numpy as np
from scipy.special import ndtr

__all__ = ["STREAK_TRUTH_DTYPE", "streak_truth", "render_streaks", "random_streaks"]

STREAK_TRUTH_DTYPE = np.dtype([
    ("X0", "f8"), ("Y0", "f8"), ("X1", "f8"), ("Y1", "f8"), ("SIGMA_PIX", "f8"),
    ("FLUX_ADU_PER_S_PER_PIX", "f8"), ("FWHM_PIX", "f8"), ("CLIP_X0", "f8"), ("CLIP_Y0", "f8"),
    ("CLIP_X1", "f8"), ("CLIP_Y1", "f8"), ("EDGE0", "?"), ("EDGE1", "?"), ("IN_FRAME", "?"),
])

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SUB = 5  # sub-pixel samples per pixel side
_REACH = 5.0  # the profile is rendered out to this many sigma from the segment


def streak_truth(rows, shape):
    """Truth table (`STREAK_TRUTH_DTYPE`) of streaks given as rows (X0, Y0, X1, Y1, SIGMA_PIX,
    FLUX_ADU_PER_S_PER_PIX) on a frame of `shape` = (ny, nx)."""
    from ..streaks.table import clip_segment

    ny, nx = shape
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64).reshape(-1, 6))
    out = np.zeros(len(rows), dtype=STREAK_TRUTH_DTYPE)
    for name, col in zip(STREAK_TRUTH_DTYPE.names[:6], rows.T):
        out[name] = col
    out["FWHM_PIX"] = _FWHM_PER_SIGMA * out["SIGMA_PIX"]
    for r in out:
        c = clip_segment(r["X0"], r["Y0"], r["X1"], r["Y1"], nx, ny)
        r["IN_FRAME"] = c is not None
        if c is None:
            r["CLIP_X0"] = r["CLIP_Y0"] = r["CLIP_X1"] = r["CLIP_Y1"] = np.nan
            continue
        r["CLIP_X0"], r["CLIP_Y0"], r["CLIP_X1"], r["CLIP_Y1"] = c
        r["EDGE0"] = math.hypot(c[0] - r["X0"], c[1] - r["Y0"]) > 1e-9
        r["EDGE1"] = math.hypot(c[2] - r["X1"], c[3] - r["Y1"]) > 1e-9
    return out


def render_streaks(image, truth):
    """Add the streaks of a truth table to `image` (ny, nx), in ADU/s per pixel, in place."""
    ny, nx = image.shape
    sub = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    su, sv = (a.ravel() for a in np.meshgrid(sub, sub))
    for r in truth:
        x0, y0, x1, y1, sigma, flux = (float(r[k]) for k in STREAK_TRUTH_DTYPE.names[:6])
        length = math.hypot(x1 - x0, y1 - y0)
        if not (length > 0 and sigma > 0 and r["IN_FRAME"]):
            continue
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        reach = _REACH * sigma + 1.0
        horizontal = abs(ux) >= abs(uy)
        # pixels within `reach` of the segment, column by column along the major axis
        a0, a1, amax = (x0, x1, nx) if horizontal else (y0, y1, ny)
        lo_a = max(int(math.floor(min(a0, a1) - reach)), 0)
        hi_a = min(int(math.ceil(max(a0, a1) + reach)), amax - 1)
        if hi_a < lo_a:
            continue
        major = np.arange(lo_a, hi_a + 1, dtype=np.float64)
        slope = (uy / ux) if horizontal else (ux / uy)
        centre = ((y0 + slope * (major - x0)) if horizontal else (x0 + slope * (major - y0)))
        half = int(math.ceil(reach * math.sqrt(1.0 + slope * slope))) + 1
        k = np.arange(-half, half + 1)
        minor = np.rint(centre)[:, None].astype(np.int64) + k[None, :]
        maj = np.broadcast_to(major[:, None], minor.shape)
        px, py = (maj, minor) if horizontal else (minor, maj)
        inside = (minor >= 0) & (minor < (ny if horizontal else nx))
        px, py = px[inside].astype(np.float64), py[inside].astype(np.float64)
        value = np.zeros(px.size)
        for du, dv in zip(su, sv):
            dx, dy = px + du - x0, py + dv - y0
            t = dx * ux + dy * uy
            d = -dx * uy + dy * ux
            along = ndtr(t / sigma) - ndtr((t - length) / sigma)
            value += np.exp(-0.5 * (d / sigma) ** 2) * along
        value *= flux / (math.sqrt(2.0 * math.pi) * sigma * su.size)
        np.add.at(image, (py.astype(np.int64), px.astype(np.int64)), value.astype(image.dtype))


def random_streaks(rng, n, shape):
    """`n` random streak rows (X0, Y0, X1, Y1, SIGMA_PIX, FLUX_ADU_PER_S_PER_PIX): the first
    crosses the whole frame (both ends outside), the others are partial."""
    ny, nx = shape
    rows = np.zeros((n, 6))
    for i in range(n):
        cx, cy = rng.uniform(0.2, 0.8) * nx, rng.uniform(0.2, 0.8) * ny
        angle = rng.uniform(0, np.pi)
        half = 1.5 * np.hypot(nx, ny) if i == 0 else rng.uniform(0.1, 0.6) * np.hypot(nx, ny)
        rows[i] = (cx - half * np.cos(angle), cy - half * np.sin(angle),
                   cx + half * np.cos(angle), cy + half * np.sin(angle),
                   rng.uniform(0.9, 1.4), rng.uniform(20.0, 150.0))
    return rows
