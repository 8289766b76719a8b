"""Reading what the pipeline is given: raw frames, their headers, WCS files, calibrations.

Every problem is raised as `InputError` naming the file and what is wrong.
"""

import functools
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
    """A raw frame: its pixels as stored (ny, nx), primary header, exposure time (s), path.

    `stored` holds the file's pixels as read, big-endian int16 ('>i2') to which `bzero` adds
    (the camera's unsigned 16 bits: BZERO 32768), or physical uint16 (bzero 0) when the header
    scales them otherwise; `image` is the physical uint16 frame, decoded on first use (the
    detrend kernel decodes `stored` itself).
    """

    path: str
    stored: np.ndarray
    header: object
    exptime_s: float
    bzero: float = 0.0

    @functools.cached_property
    def image(self):
        """Physical pixel values, uint16 (ny, nx)."""
        return self.values(...)

    def values(self, index):
        """Physical uint16 values of `stored[index]` (e.g. (rows, columns) arrays of pixels)."""
        v = self.stored[index]
        if self.bzero == 0.0:
            return v
        return (v.astype(np.int32) + int(self.bzero)).astype(np.uint16)


_WARNINGS_LOCK = threading.Lock()
"""Held while the WCS and calibration readers change the process-wide warning filters
(catch_warnings is not thread-safe, and pc-archive's GPU engine reads on several threads). The
raw frame reader does not touch them: it checks the file's structure itself."""


def _read_primary(path, camera):
    """(header, uint16 image) of a raw frame's primary HDU, checked before the pixels are read:
    a FITS primary header, a 2-d BITPIX 16 image of the camera's size, and the whole image
    present in the file. Any failure is an InputError naming the file."""
    from astropy.io import fits

    if not os.path.exists(path):
        raise InputError(path, "file not found")
    try:
        with open(path, "rb") as handle:
            header = fits.Header.fromfile(handle)
            offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
            if header.get("SIMPLE") is not True:
                raise ValueError("no SIMPLE = T card: not a FITS primary header")
            _check_image_header(path, header, camera)
            n_bytes = 2 * camera.nx * camera.ny
            if size - offset < n_bytes:
                raise InputError(path, f"truncated: the header announces {n_bytes} bytes of image data, "
                                       f"the file holds {max(size - offset, 0)} after its header")
            stored = np.empty(camera.shape, dtype=np.uint16)  # the file's big-endian bytes as read
            if handle.readinto(memoryview(stored).cast("B")) != n_bytes:
                raise InputError(path, "truncated: the image data ended early")
    except InputError:
        raise
    except Exception as exc:  # astropy raises many kinds for a file that is not FITS
        raise InputError(path, f"not a readable FITS file ({type(exc).__name__}: {exc})") from None
    return header, *_physical(stored, header, path)


def _check_image_header(path, header, camera):
    if header.get("NAXIS", 0) != 2:
        raise InputError(path, f"primary HDU has NAXIS = {header.get('NAXIS')}, expected a 2-d image")
    if header.get("BITPIX") != 16:
        raise InputError(path, f"BITPIX = {header.get('BITPIX')}, expected 16 (unsigned via BZERO 32768)")
    shape = (header.get("NAXIS1"), header.get("NAXIS2"))
    if shape != (camera.nx, camera.ny):
        raise InputError(path, f"image is {shape} pixels (x, y), expected {camera.nx} x {camera.ny} "
                               f"for camera {camera.name}")


def _physical(stored, header, path):
    """(pixels, bzero) for `RawFrame` from the big-endian int16 pixels read into `stored`: the
    camera's unsigned 16 bits (BSCALE 1, BZERO 32768) as they are, any other scaling applied
    (physical values clipped to uint16, bzero 0)."""
    try:
        bscale, bzero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
    except (TypeError, ValueError):
        raise InputError(path, "header BSCALE or BZERO is not a number") from None
    if bscale == 1.0 and bzero == 32768.0:
        return stored.view(">i2"), bzero
    physical = stored.view(">i2").astype(np.float64) * bscale + bzero
    return np.clip(physical, 0, 65535).astype(np.uint16), 0.0


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
    header, stored, bzero = _read_primary(path, camera)
    exptime_s = exptime_seconds(header, path)
    return RawFrame(path=path, stored=stored, header=header, exptime_s=exptime_s, bzero=bzero)


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
