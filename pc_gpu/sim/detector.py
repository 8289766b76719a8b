"""Simulated detector calibration truth: bias, dark current, flat field and bad-pixel mask.

`make_calibrations` makes them deterministically from a seed;
`pc_gpu.sim.frameio.write_calibrations` writes them as the four META products.
"""

from dataclasses import dataclass

import numpy as np

from ..camera import EL_NINO

__all__ = ["SimCalibrations", "make_calibrations"]


@dataclass(frozen=True)
class SimCalibrations:
    """The calibration truth a frame is made with (all (ny, nx)).

    Attributes
    ----------
    bias : numpy.ndarray
        Noiseless bias structure, ADU (float32).
    dark : numpy.ndarray
        Dark current including hot pixels, ADU/s (float32).
    flat : numpy.ndarray
        Flat field with vignetting, median 1 (float32).
    mask : numpy.ndarray
        Static bad pixels, nonzero = bad (uint8; 1 dead/hot pixel, 2 bad column).
    seed : int
        Seed they were made from.
    """

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    mask: np.ndarray
    seed: int


def _quadrant_map(camera, values, dtype=np.float32):
    image = np.empty(camera.shape, dtype=dtype)
    for value, (rows, cols) in zip(values, camera.quadrant_slices()):
        image[rows, cols] = value
    return image


def make_calibrations(camera=EL_NINO, *, seed=0, bad_pixels=True):
    """Deterministic calibration truth: bias, dark (ADU/s), flat (median 1) and bad-pixel mask.

    The bias is each quadrant's median (`camera.bias_adu`) plus a row pattern (~1.5 ADU), a
    column pattern (~0.5 ADU) and a faint ramp; the dark is each quadrant's rate with 5%
    structure plus 0.02% hot pixels (0.5 to 20 ADU/s); the flat is a radial vignetting
    (~20% at the corners) times 0.5% pixel response, normalised to median 1. With
    `bad_pixels`, 0.01% of pixels and a few partial columns are marked bad in the mask.
    Values are quantised (bias 1/64 ADU, dark 2**-14 ADU/s, flat 2**-14) so the gzip files
    are small; the quantised values are the truth.
    """
    rng = np.random.default_rng([int(seed), 7])
    ny, nx = camera.shape
    bias = _quadrant_map(camera, camera.bias_adu)
    rows = np.cumsum(rng.normal(0, 0.08, ny)) + 1.0 * np.sin(np.arange(ny) / 37.0)
    rows -= rows.mean()
    cols = rng.normal(0, 0.5, nx) + 0.6 * np.cos(np.arange(nx) / 211.0)
    bias += (rows[:, None] + cols[None, :] + np.linspace(-0.5, 0.5, nx)[None, :]).astype(np.float32)
    bias = np.round(bias * 64) / 64

    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    xc, yc = camera.centre
    r2 = ((xx - xc) ** 2 + (yy - yc) ** 2) / (xc ** 2 + yc ** 2)
    dark = _quadrant_map(camera, camera.dark_quad_adu_per_s)
    dark *= 1 + 0.05 * (xx / nx - 0.5) + 0.03 * r2
    n_hot = int(2e-4 * nx * ny)
    hot = rng.choice(nx * ny, n_hot, replace=False)
    dark.flat[hot] += rng.uniform(0.5, 20.0, n_hot).astype(np.float32)
    dark = np.round(dark * 2 ** 14) / 2 ** 14

    flat = (1.0 - 0.2 * r2 ** 1.5) * (1 + rng.normal(0, 0.005, (ny, nx)).astype(np.float32))
    flat = flat / np.median(flat)
    flat = (np.round(flat * 2 ** 14) / 2 ** 14).astype(np.float32)

    mask = np.zeros((ny, nx), dtype=np.uint8)
    if bad_pixels:
        n_bad = max(int(1e-4 * nx * ny), 1)
        mask.flat[rng.choice(nx * ny, n_bad, replace=False)] = 1
        for _ in range(3):
            x = int(rng.integers(10, nx - 10))
            y0 = int(rng.integers(0, ny // 2))
            mask[y0:y0 + int(rng.integers(ny // 4, ny // 2)), x] = 2
    return SimCalibrations(bias.astype(np.float32), dark.astype(np.float32), flat, mask, int(seed))
