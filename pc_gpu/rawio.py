"""Reading what the pipeline is given: raw frames, their headers, WCS files, calibrations.

Every problem is raised as `InputError` naming the file and what is wrong.
"""

import logging
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = [
    "RawFrame", "read_raw", "exptime_seconds", "wcs_path_for", "read_wcs",
    "Calibrations", "read_calibrations", "CALIB_FILES",
]

log = logging.getLogger(__name__)

CALIB_FILES = {
    "mask": "pc_badpix_mask.fits.gz",
    "bias": "pc_master_bias.fits.gz",
    "dark": "pc_master_dark.fits.gz",
    "flat": "pc_master_flat.fits.gz",
}


@dataclass(frozen=True)
class RawFrame:
    """A raw frame: uint16 pixels (ny, nx), its primary header, exposure time (s), path."""

    path: str
    image: np.ndarray
    header: object
    exptime_s: float


_WARNINGS_LOCK = threading.Lock()
"""Held while a reader changes the process-wide warning filters (catch_warnings is not
thread-safe: pc-archive's GPU engine reads frames on several threads, and one thread's "error"
filter turned another's ignored WCS warning into a failed frame)."""


def _read_primary(path):
    """(header, data) of the primary HDU, with any failure as an InputError naming the file."""
    from astropy.io import fits

    if not os.path.exists(path):
        raise InputError(path, "file not found")
    try:
        with open(path, "rb") as handle, _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error")
            with fits.open(handle, memmap=False) as hdul:
                header = hdul[0].header.copy()
                data = hdul[0].data
    except Exception as exc:  # astropy raises many kinds for a bad or truncated file
        raise InputError(path, f"not a readable FITS file, truncated? ({type(exc).__name__}: {exc})") from None
    return header, data


def exptime_seconds(header, path=None):
    """Exposure time in seconds from EXPOSURE (milliseconds) or else EXPTIME (milliseconds)."""
    for key in ("EXPOSURE", "EXPTIME"):
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                raise InputError(path, f"header {key} = {header[key]!r} is not a number") from None
            if not np.isfinite(value) or value <= 0:
                raise InputError(path, f"header {key} = {value} ms: exposure time must be positive")
            return value / 1000.0
    raise InputError(path, "header has no EXPOSURE or EXPTIME keyword (exposure time in ms)")


def read_raw(path, camera):
    """Read and validate a raw frame (BITPIX 16 unsigned, camera-sized, positive exposure)."""
    path = os.fspath(path)
    header, image = _read_primary(path)
    if header.get("NAXIS", 0) != 2:
        raise InputError(path, f"primary HDU has NAXIS = {header.get('NAXIS')}, expected a 2-d image")
    if header.get("BITPIX") != 16:
        raise InputError(path, f"BITPIX = {header.get('BITPIX')}, expected 16 (unsigned via BZERO 32768)")
    if image is None or image.shape != camera.shape:
        shape = None if image is None else image.shape[::-1]
        raise InputError(path, f"image is {shape} pixels (x, y), expected {camera.nx} x {camera.ny} "
                               f"for camera {camera.name}")
    if image.dtype != np.uint16:
        image = np.clip(image, 0, 65535).astype(np.uint16)
    exptime_s = exptime_seconds(header, path)
    return RawFrame(path=path, image=np.ascontiguousarray(image), header=header, exptime_s=exptime_s)


def wcs_path_for(raw_path):
    """The astrometry.net WCS file expected beside a raw frame: RAW.fits -> RAW.wcs."""
    raw_path = os.fspath(raw_path)
    base = raw_path[:-5] if raw_path.endswith(".fits") else raw_path
    return base + ".wcs"


def read_wcs(path):
    """Read an astrometry.net `.wcs` header file into an astropy WCS (TAN or TAN-SIP)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    if not os.path.exists(path):
        raise InputError(path, "astrometric solution (.wcs file) not found; solve the frame first")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path)
            wcs = WCS(header)
    except Exception as exc:
        raise InputError(path, f"not a readable WCS header ({exc})") from None
    if not wcs.has_celestial:
        raise InputError(path, "header has no celestial WCS")
    return wcs


@dataclass(frozen=True)
class Calibrations:
    """Master calibrations (float32, (ny, nx)); `bias`/`dark` may be scalar-per-quadrant
    fallbacks, in which case `fallback` says so."""

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    mask: np.ndarray
    source: str
    fallback: bool


def _quadrant_image(camera, values):
    out = np.empty(camera.shape, dtype=np.float32)
    for value, (rows, cols) in zip(values, camera.quadrant_slices()):
        out[rows, cols] = value
    return out


def _read_calib_image(path, camera):
    from astropy.io import fits

    if not os.path.exists(path):
        raise InputError(path, "calibration file not found (set POINTING_CAMERA_META to the calibration directory)")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error")
            data = fits.getdata(path)
    except Exception as exc:
        raise InputError(path, f"calibration file unreadable ({exc})") from None
    if data is None or data.shape != camera.shape:
        shape = None if data is None else data.shape
        raise InputError(path, f"calibration image has shape {shape}, expected {camera.shape}")
    return np.ascontiguousarray(data, dtype=np.float32)


def read_calibrations(meta_dir, camera, *, allow_fallback=False):
    """Read the four calibration products from `meta_dir` ($POINTING_CAMERA_META).

    The bad-pixel mask and flat are required. With `allow_fallback`, a missing master bias or
    dark is replaced by the camera's per-quadrant scalars (logged, and recorded in `fallback`).
    """
    if meta_dir is None:
        raise InputError(None, "calibration directory not given: set POINTING_CAMERA_META")
    meta_dir = os.fspath(meta_dir)
    if not os.path.isdir(meta_dir):
        raise InputError(meta_dir, "calibration directory not found (POINTING_CAMERA_META)")
    paths = {k: os.path.join(meta_dir, v) for k, v in CALIB_FILES.items()}
    mask = _read_calib_image(paths["mask"], camera) != 0
    flat = _read_calib_image(paths["flat"], camera)
    if not np.all(np.isfinite(flat)) or np.any(flat <= 0):
        raise InputError(paths["flat"], "flat field has non-positive or non-finite pixels")
    fallback = False
    images = {}
    scalars = {"bias": camera.bias_adu, "dark": camera.dark_quad_adu_per_s}
    for key in ("bias", "dark"):
        if allow_fallback and not os.path.exists(paths[key]):
            log.warning("%s missing: using the camera's per-quadrant %s values %s",
                        paths[key], key, scalars[key])
            images[key] = _quadrant_image(camera, scalars[key])
            fallback = True
        else:
            images[key] = _read_calib_image(paths[key], camera)
    return Calibrations(bias=images["bias"], dark=images["dark"], flat=flat, mask=mask,
                        source=meta_dir, fallback=fallback)
