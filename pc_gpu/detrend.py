"""Detrending: bias, dark x exposure time, flat field, static bad-pixel interpolation; dome flag."""

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["DeviceCalibrations", "prepare_calibrations", "detrend", "dome_flag"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceCalibrations:
    """Calibrations resident on the backend's device, ready for every frame.

    bias (ADU), dark (ADU/s) and flat (median 1) are float32 (ny, nx) device arrays; `gather`
    is the precomputed bad-pixel interpolation; `fallback` says the bias/dark are the camera's
    per-quadrant scalars; `source` is the calibration directory.
    """

    bias: object
    dark: object
    flat: object
    gather: object
    n_bad_pixels: int
    fallback: bool
    source: str


def prepare_calibrations(calibrations, gather, backend):
    """Move `rawio.Calibrations` and the bad-pixel gather (`kernels.common.bad_pixel_gather`)
    to the backend's device."""
    return DeviceCalibrations(
        bias=backend.asarray(calibrations.bias),
        dark=backend.asarray(calibrations.dark),
        flat=backend.asarray(calibrations.flat),
        gather=backend.gather_to_device(gather),
        n_bad_pixels=int(np.count_nonzero(calibrations.mask)),
        fallback=calibrations.fallback,
        source=calibrations.source,
    )


def detrend(raw, calibrations, exptime_s, backend, *, flatfield=True, out=None, bzero=0.0):
    """Detrended float32 image (ADU) on the backend's device.

    (raw + bzero - bias - dark * exptime_s) / flat, then every static bad pixel replaced by the
    mean of its row-wise and column-wise linear interpolations over good pixels (constant past
    the last good pixel). `raw` is the uint16 frame (host or device), or the file's big-endian
    int16 payload as read (`rawio.RawFrame.stored`, with its `bzero`: decoded in the kernel);
    `out`, a float32 device array of its shape to write into (e.g. one plane of a stack of
    frames), default a new one.
    """
    swapped = not raw.dtype.isnative
    if swapped:  # the same bytes in a native dtype (a device holds no other); the kernel swaps
        raw = raw.view(raw.dtype.newbyteorder("="))
    raw = backend.upload(raw)
    if out is None:
        out = backend.xp.empty(raw.shape, dtype=np.float32)
    flat = calibrations.flat if flatfield else None
    backend.kernels.detrend(raw, calibrations.bias, calibrations.dark, flat, float(exptime_s), out,
                            bzero=float(bzero), swapped=swapped)
    backend.kernels.apply_bad_pixel_gather(out, calibrations.gather)
    return out


def dome_flag(image, exptime_s, camera, backend):
    """True when at least `camera.dome_fraction` of pixels are below
    `camera.dome_threshold_adu_per_s` (detrended ADU/s): the dome vignettes the frame."""
    n_low = int(backend.xp.count_nonzero(image < np.float32(camera.dome_threshold_adu_per_s * exptime_s)))
    return n_low >= camera.dome_fraction * image.size
