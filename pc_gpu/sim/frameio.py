"""Writing simulated frames: camera-style file names and times, the raw FITS, ``.wcs`` and truth
files (`write_frame`) and the four META calibration products (`write_calibrations`).

Every file is written to a temporary name and renamed; the gzip calibration files are
byte-deterministic.
"""

import datetime as dt
import gzip
import io
import logging
import os
from dataclasses import dataclass

from ..camera import EL_NINO
from ..errors import InputError, OutputExistsError
from ..rawio import CALIB_FILES

__all__ = ["FramePaths", "raw_filename", "write_frame", "write_calibrations"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- names and times

def _utc(obs_time):
    if isinstance(obs_time, dt.datetime):
        value = obs_time
    else:
        try:
            value = dt.datetime.fromisoformat(str(obs_time).replace("Z", ""))
        except ValueError:
            raise InputError(None, f"observation time {obs_time!r} is not ISO 'YYYY-MM-DDTHH:MM:SS' "
                                   "(UTC)") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0)


def raw_filename(obs_time_utc, frame_number, exptime_s, camera=EL_NINO):
    """Camera-style raw file name: local 'YYYYMMDD.HHMMSS.FFFFF_EEEEE.fits' (F frame, E ms)."""
    local = _utc(obs_time_utc) + dt.timedelta(hours=camera.timezone_offset_hours)
    return f"{local:%Y%m%d.%H%M%S}.{int(frame_number):05d}_{int(round(exptime_s * 1000)):05d}.fits"


# --------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class FramePaths:
    """Where `write_frame` put a frame's files."""

    raw: str
    wcs: str
    truth: str


def _atomic_write_bytes(path, data, overwrite):
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise InputError(path, f"cannot write ({exc.strerror or exc})") from None


def _ensure_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InputError(path, f"cannot create output directory ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(path, "output directory is not writable")


def _hdu_bytes(hdu):
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


def _truth_bytes(frame, directory):
    import fitsio

    tmp = os.path.join(directory, f".truth.tmp{os.getpid()}.fits")
    try:
        with fitsio.FITS(tmp, "rw", clobber=True) as out:
            out.write(frame.truth, extname="TRUTH", header=frame.truth_header)
            out.write(frame.streaks, extname="STREAKS",
                      header=[{"name": "COMMENT", "value": "streak endpoints in pixels (0-indexed),"},
                              {"name": "COMMENT", "value": "may lie outside the frame"}])
        with open(tmp, "rb") as handle:
            return handle.read()
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_frame(frame, raw_dir, *, truth_dir=None, overwrite=False):
    """Write a `SimFrame`: raw FITS and ``.wcs`` in `raw_dir`, truth table in `truth_dir`.

    The raw file is BITPIX 16 unsigned (BZERO 32768) with the camera header; the ``.wcs`` file
    (RAW.fits -> RAW.wcs) is a header-only FITS file, written last so a watcher that triggers on
    ``.wcs`` files always finds the raw frame. The truth file (``RAW-truth.fits``; default
    directory ``raw_dir/truth``) has HDU ``TRUTH`` (one row per rendered star: SOURCE_ID, RA,
    DEC, X, Y, PHOT_*_MEAN_MAG, G_PRIME, SYNTHETIC, SYNTHETIC_COLOR, ZP_STAR, DOME_FACTOR,
    FWHM_PIX, FLUX_ADU_PER_S, FLUX_ADU, APER_FRAC[7], APER_FLUX_ADU[7], PEAK_RAW_MODEL,
    SATURATED, IN_FRAME, EDGE_DIST_PIX; frame truth in its header) and HDU ``STREAKS``.
    Every file is written to a temporary name and renamed; existing files raise
    `OutputExistsError` unless `overwrite`.
    """
    from astropy.io import fits

    raw_dir = os.fspath(raw_dir)
    truth_dir = os.path.join(raw_dir, "truth") if truth_dir is None else os.fspath(truth_dir)
    _ensure_dir(raw_dir)
    _ensure_dir(truth_dir)
    raw_path = os.path.join(raw_dir, frame.filename)
    wcs_path = raw_path[:-len(".fits")] + ".wcs"
    truth_path = os.path.join(truth_dir, frame.filename[:-len(".fits")] + "-truth.fits")
    for path in (raw_path, wcs_path, truth_path):
        if os.path.exists(path) and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    _atomic_write_bytes(truth_path, _truth_bytes(frame, truth_dir), overwrite)
    hdu = fits.PrimaryHDU(data=frame.raw, header=frame.header.copy())
    _atomic_write_bytes(raw_path, _hdu_bytes(hdu), overwrite)
    _atomic_write_bytes(wcs_path, _hdu_bytes(fits.PrimaryHDU(header=frame.wcs_header.copy())),
                        overwrite)
    log.info("wrote %s (+ .wcs, truth %s)", raw_path, truth_path)
    return FramePaths(raw_path, wcs_path, truth_path)


def write_calibrations(calibrations, meta_dir, *, overwrite=False):
    """Write the four META products (gzip FITS, byte-deterministic) and return their paths.

    ``pc_badpix_mask.fits.gz`` (uint8, nonzero = bad), ``pc_master_bias.fits.gz`` (ADU),
    ``pc_master_dark.fits.gz`` (ADU/s), ``pc_master_flat.fits.gz`` (median 1).
    """
    from astropy.io import fits

    meta_dir = os.fspath(meta_dir)
    _ensure_dir(meta_dir)
    products = {
        "mask": (calibrations.mask, "", "static bad pixels: nonzero = bad (1 pixel, 2 column)"),
        "bias": (calibrations.bias, "adu", "master bias (noiseless simulated structure)"),
        "dark": (calibrations.dark, "adu/s", "master dark current (simulated truth)"),
        "flat": (calibrations.flat, "", "master flat, median 1 (simulated truth)"),
    }
    paths = {}
    for key, (data, unit, text) in products.items():
        header = fits.Header()
        if unit:
            header["BUNIT"] = unit
        header["SIMULATD"] = (True, "simulated by pc_gpu.sim")
        header["CALSEED"] = (int(calibrations.seed), "calibration seed")
        header.add_comment(text)
        payload = _hdu_bytes(fits.PrimaryHDU(data=data, header=header))
        path = os.path.join(meta_dir, CALIB_FILES[key])
        _atomic_write_bytes(path, gzip.compress(payload, compresslevel=1, mtime=0), overwrite)
        paths[key] = path
    log.info("wrote calibrations to %s", meta_dir)
    return paths
