"""Simulated cases for the plate solver: frames at random pointings under awkward conditions,
frames with no star, a catalogue with the wrong sky, and the detrended image the pipeline
would solve.

- `random_solve_frame`: a frame at a random pointing and rotation, with a pixel scale off by up
  to 3%, thin cloud, a moonlit sky, sometimes dome vignetting, a few satellite streaks and SIP
  distortion; returns the frame and its header pointing (off the truth by up to `hint_error_deg`).
- `starless_frame`: only sky and noise (no star brighter than G = -30), or a fully clouded one.
- `scrambled_catalogue`: a chunk tree with the stars, magnitudes and density of another one but
  every star moved at random within a few degrees: plausible, and wrong.
- `detrended_image`: a simulated frame through the pipeline's own detrend stage (bias, dark,
  flat, bad pixels interpolated).
"""

import os
from dataclasses import dataclass

import numpy as np

from ..camera import EL_NINO
from .chunks import Region, build_chunk_tree, read_chunk_tree, region_pixels
from .simulate import simulate_frame

__all__ = ["SolveCase", "random_solve_frame", "starless_frame", "scrambled_catalogue", "detrended_image",
           "offset_pointing"]


@dataclass(frozen=True)
class SolveCase:
    """A simulated frame for the solver: the SimFrame, the header pointing given to the solver
    (ra, dec deg), the true pixel scale (arcsec) and the conditions drawn."""

    frame: object
    hint: tuple
    pixscale_arcsec: float
    conditions: dict


def offset_pointing(ra, dec, distance_deg, angle_deg):
    """The point `distance_deg` from (ra, dec) in direction `angle_deg` (east of north), deg
    (scalars or arrays)."""
    ra0, dec0, d, a = (np.radians(v) for v in (ra, dec, distance_deg, angle_deg))
    dec1 = np.arcsin(np.sin(dec0) * np.cos(d) + np.cos(dec0) * np.sin(d) * np.cos(a))
    ra1 = ra0 + np.arctan2(np.sin(a) * np.sin(d) * np.cos(dec0), np.cos(d) - np.sin(dec0) * np.sin(dec1))
    return np.degrees(ra1) % 360.0, np.degrees(dec1)


def random_solve_frame(gaia_dir, seed, *, centre=(150.0, 30.0), radius_deg=2.0, camera=EL_NINO,
                       calibrations=None, hint_error_deg=0.5, max_scale_error=0.03):
    """A frame at a random pointing within `radius_deg` of `centre` (deg) under random
    conditions (module docstring); the chunk tree must cover it. Returns a SolveCase."""
    rng = np.random.default_rng([int(seed), 1401])
    ra, dec = (float(v) for v in offset_pointing(*centre, radius_deg * np.sqrt(rng.uniform()), rng.uniform(0, 360)))
    scale = camera.pixel_scale_arcsec * (1 + rng.uniform(-max_scale_error, max_scale_error))
    conditions = dict(rotation_deg=float(rng.uniform(0, 360)), cloud_mag=float(rng.uniform(0.0, 0.5)),
                      cloud_gradient_mag=float(rng.uniform(-0.2, 0.2)),
                      sky_adu_per_s=float(camera.dark_sky_adu_per_s * rng.uniform(1.0, 10.0)),
                      sky_gradient=float(rng.uniform(-0.3, 0.3)), dome=bool(rng.uniform() < 0.3),
                      n_streaks=int(rng.integers(0, 4)), sip=True)
    frame = simulate_frame(gaia_dir, ra, dec, camera=camera.with_(pixel_scale_arcsec=scale),
                           calibrations=calibrations, seed=int(seed), **conditions)
    hint = tuple(float(v) for v in offset_pointing(ra, dec, hint_error_deg * np.sqrt(rng.uniform()),
                                                   rng.uniform(0, 360)))
    return SolveCase(frame, hint, scale, conditions)


def starless_frame(gaia_dir, seed, *, centre=(150.0, 30.0), camera=EL_NINO, calibrations=None, clouded=False):
    """A frame with no star: sky and noise only (moonlit, sometimes a streak), or, with
    `clouded`, the field behind 12 magnitudes of cloud. Returns the SimFrame."""
    rng = np.random.default_rng([int(seed), 1402])
    if clouded:
        return simulate_frame(gaia_dir, *centre, camera=camera, calibrations=calibrations, seed=int(seed),
                              cloud_mag=12.0, sky_adu_per_s=0.5)
    return simulate_frame(gaia_dir, *centre, camera=camera, calibrations=calibrations, seed=int(seed),
                          max_g=-30.0, sky_adu_per_s=float(camera.dark_sky_adu_per_s * rng.uniform(0.5, 20.0)),
                          n_streaks=int(rng.integers(0, 2)))


def scrambled_catalogue(src_dir, dst_dir, region, *, seed=0, shift_deg=3.0):
    """Write to `dst_dir` the stars of `src_dir` within `region` (a chunks.Region), each moved by
    up to `shift_deg` in a random direction. Returns `dst_dir`."""
    region = region if isinstance(region, Region) else Region(*region)
    stars = read_chunk_tree(src_dir, region_pixels([region])).copy()
    rng = np.random.default_rng([int(seed), 1403])
    d = shift_deg * np.sqrt(rng.uniform(size=len(stars)))
    stars["RA"], stars["DEC"] = offset_pointing(stars["RA"], stars["DEC"], d, rng.uniform(0, 360, size=len(stars)))
    build_chunk_tree(os.fspath(dst_dir), source=stars, regions=[region], overwrite=True)
    return dst_dir


def detrended_image(frame, backend=None):
    """The detrended float32 image of a SimFrame, by the pipeline's detrend stage with the
    frame's own calibrations (bad pixels interpolated)."""
    from ..backend import get_backend
    from ..detrend import detrend, prepare_calibrations
    from ..kernels.common import bad_pixel_gather
    from ..rawio import Calibrations, exptime_seconds

    be = get_backend("cpu") if backend is None else backend
    cal = frame.calibrations
    calib = Calibrations(bias=cal.bias, dark=cal.dark, flat=cal.flat, mask=cal.mask != 0, source="simulated",
                         fallback=False)
    prepared = prepare_calibrations(calib, bad_pixel_gather(calib.mask), be)
    out = be.xp.empty(frame.raw.shape, np.float32)
    detrend(frame.raw, prepared, exptime_seconds(frame.header), be, out=out)
    return out
