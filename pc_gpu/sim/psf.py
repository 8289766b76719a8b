"""Simulator PSFs that vary over the field, elliptical PSFs, and the faint unresolved stars.

- `PSFField`: the PSF core FWHM, ellipticity (1 - b/a) and position angle of each quadrant
  (the simulator's double Gaussian, both components with the same shape).
- `psf_boxes`: the pixel-integrated PSF of elliptical stars (midpoint rule on a sub-pixel
  grid; the exact separable integral where a star is round).
- `aperture_fractions_boxes`: the fraction of each star's flux that an exact circle/pixel
  overlap sum of the rendered image holds, for every aperture radius.
- `faint_population`: stars fainter than the catalogue limit, rendered but in no catalogue
  (their light is what biases the faint catalogue stars' fluxes).
- `halfmax_fwhm`: the full width at half maximum of the simulator's PSF, given its core FWHM.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["PSFField", "psf_boxes", "aperture_fractions_boxes", "faint_population", "halfmax_fwhm"]

GAUSS_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
OVERSAMPLE = 7
"""Sub-pixels per pixel side for elliptical stars."""
_CHUNK = 400


@dataclass(frozen=True)
class PSFField:
    """PSF shape per quadrant (q1 upper right, q2 upper left, q3 lower left, q4 lower right).

    fwhm_pix : core FWHM (geometric mean of the major and minor axes), pixels; ellipticity :
    1 - b/a, in [0, 0.9]; pa_deg : major axis, degrees from +x towards +y.
    """

    fwhm_pix: tuple = (2.0, 2.0, 2.0, 2.0)
    ellipticity: tuple = (0.0, 0.0, 0.0, 0.0)
    pa_deg: tuple = (0.0, 0.0, 0.0, 0.0)

    def __post_init__(self):
        for name in ("fwhm_pix", "ellipticity", "pa_deg"):
            if len(getattr(self, name)) != 4:
                raise InputError(None, f"PSFField.{name} needs 4 values (quadrants 1-4)")
        if min(self.fwhm_pix) <= 0:
            raise InputError(None, "PSF FWHM must be positive")
        if not all(0 <= e <= 0.9 for e in self.ellipticity):
            raise InputError(None, "PSF ellipticity must lie in [0, 0.9]")

    def star_shapes(self, x, y, camera):
        """(core fwhm, ellipticity, pa_deg) of stars at pixel positions x, y (arrays)."""
        xc, yc = camera.centre
        left, bottom = np.asarray(x) <= xc, np.asarray(y) <= yc
        q = np.where(bottom, np.where(left, 2, 3), np.where(left, 1, 0))
        return tuple(np.asarray(v, np.float64)[q] for v in (self.fwhm_pix, self.ellipticity, self.pa_deg))


def halfmax_fwhm(core_fwhm, wing_weight=0.1, wing_scale=2.0):
    """Full width at half maximum of (1 - w) G(s) + w G(k s), s the core's sigma (pixels)."""
    from scipy.optimize import brentq

    def profile(r):
        return (1 - wing_weight) * math.exp(-0.5 * r * r) + wing_weight / wing_scale ** 2 * math.exp(
            -0.5 * r * r / wing_scale ** 2)

    half = brentq(lambda r: profile(r) - 0.5 * profile(0.0), 0.1, 5.0)
    return np.asarray(core_fwhm, np.float64) * half / math.sqrt(2.0 * math.log(2.0))


def _sigmas(fwhm, ell, pa_deg):
    s = np.asarray(fwhm, np.float64) / GAUSS_FWHM
    q = 1.0 - np.asarray(ell, np.float64)
    a, b = s / np.sqrt(q), s * np.sqrt(q)
    th = np.radians(pa_deg)
    c, sn = np.cos(th), np.sin(th)
    return a * a * c * c + b * b * sn * sn, a * a * sn * sn + b * b * c * c, (a * a - b * b) * c * sn


def psf_boxes(x, y, fwhm, ell, pa_deg, hw, *, wing_weight, wing_scale, round_boxes):
    """Pixel-integrated double-Gaussian PSF (fractions of the flux) in a (2 hw + 1)^2 box.

    Round stars (ellipticity 0) take `round_boxes(x, y, sigma, hw)` (the simulator's exact
    separable integral); elliptical ones the midpoint rule on `OVERSAMPLE`^2 sub-pixels.
    Returns (boxes (n, 2hw+1, 2hw+1), ix0, iy0) as `render._psf_box`.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    fwhm, ell, pa_deg = (np.broadcast_to(np.asarray(v, np.float64), x.shape) for v in (fwhm, ell, pa_deg))
    box, ix0, iy0 = round_boxes(x, y, fwhm / GAUSS_FWHM, hw)
    todo = np.flatnonzero(ell > 0)
    n = 2 * hw + 1
    sub = (np.arange(n * OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5  # sub-pixel centres from the box's first pixel
    for start in range(0, len(todo), _CHUNK):
        idx = todo[start:start + _CHUNK]
        dx = (ix0[idx, None] + sub[None, :] - x[idx, None])[:, None, :]
        dy = (iy0[idx, None] + sub[None, :] - y[idx, None])[:, :, None]
        acc = np.zeros((len(idx), n * OVERSAMPLE, n * OVERSAMPLE))
        for weight, scale in ((1.0 - wing_weight, 1.0), (wing_weight, wing_scale)):
            cxx, cyy, cxy = (v[idx] * scale ** 2 for v in _sigmas(fwhm, ell, pa_deg))
            det = cxx * cyy - cxy ** 2
            q = (cyy[:, None, None] * dx ** 2 - 2 * cxy[:, None, None] * dx * dy
                 + cxx[:, None, None] * dy ** 2) / det[:, None, None]
            acc += weight * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))[:, None, None]
        box[idx] = acc.reshape(len(idx), n, OVERSAMPLE, n, OVERSAMPLE).sum(axis=(2, 4)) / OVERSAMPLE ** 2
    return box, ix0, iy0


def aperture_fractions_boxes(x, y, box, ix0, iy0, radii, circle_area):
    """(n, n_radii) fraction of each star's flux in circles of `radii` about (x, y), from its
    rendered box: each pixel's PSF fraction weighted by the exact area of the pixel inside the
    circle (`circle_area(u, v, r)`: area of the disc with X <= u and Y <= v)."""
    n = box.shape[1]
    ue = (ix0[:, None] + np.arange(n + 1)[None, :] - 0.5 - x[:, None])[:, None, :]
    ve = (iy0[:, None] + np.arange(n + 1)[None, :] - 0.5 - y[:, None])[:, :, None]
    out = np.empty((len(x), len(radii)))
    for k, r in enumerate(radii):
        g = circle_area(ue, ve, float(r))
        area = g[:, 1:, 1:] - g[:, :-1, 1:] - g[:, 1:, :-1] + g[:, :-1, :-1]
        out[:, k] = np.einsum("sij,sij->s", area, box)
    return out


def faint_population(rng, camera, centre_b_deg, *, g_range=(15.5, 19.0), margin=7):
    """Positions and G' of stars fainter than the catalogue, uniform over the frame.

    Counts continue the synthetic catalogue stars' law (`chunks._synthetic_density` at
    galactic latitude `centre_b_deg`, dN/dG ~ 10^(0.35 G)) over `g_range`.

    Returns (x, y, g_prime) arrays (pixels, mag).
    """
    from .chunks import _COUNT_SLOPE, _synthetic_density

    g0, g1 = g_range
    if not g1 > g0:
        raise InputError(None, f"faint population magnitude range {g_range} is empty")
    k = _COUNT_SLOPE * math.log(10.0)
    scale_deg = camera.pixel_scale_arcsec / 3600.0
    area = (camera.nx + 2 * margin) * (camera.ny + 2 * margin) * scale_deg ** 2
    frac = (math.exp(k * (g1 - 10)) - math.exp(k * (g0 - 10))) / (math.exp(k * 5.5) - 1)
    n = int(rng.poisson(_synthetic_density(centre_b_deg) * frac * area))
    x = rng.uniform(-margin, camera.nx - 1 + margin, n)
    y = rng.uniform(-margin, camera.ny - 1 + margin, n)
    u = rng.random(n)
    g = np.log(math.exp(k * (g0 - 10)) + u * (math.exp(k * (g1 - 10)) - math.exp(k * (g0 - 10)))) / k + 10
    return x, y, g
