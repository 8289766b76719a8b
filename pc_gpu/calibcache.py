"""A disk cache of the decompressed calibrations and the bad-pixel gather, so that a new process
reads four .npy files instead of decompressing four .fits.gz frames and re-deriving the gather.

The cache key is the calibration files' real paths, sizes and modification times: replacing a
calibration file invalidates it. Location: $PC_GPU_CACHE_DIR, else $XDG_CACHE_HOME/pc_gpu, else
~/.cache/pc_gpu. A cache that cannot be written is skipped (logged), never an error.
"""

import hashlib
import logging
import os
import shutil
import tempfile

import numpy as np

from .kernels.common import BadPixelGather, bad_pixel_gather
from .rawio import CALIB_FILES, Calibrations, read_calibrations

__all__ = ["cache_root", "load_calibrations"]

log = logging.getLogger(__name__)

_ARRAYS = ("bias", "dark", "flat", "mask", "gather_index", "gather_nbr", "gather_weight")


def cache_root():
    """Directory holding pc_gpu's caches."""
    explicit = os.environ.get("PC_GPU_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pc_gpu")


def _cache_key(meta_dir, camera):
    digest = hashlib.sha256(f"{camera.nx}x{camera.ny}".encode())
    for name in sorted(CALIB_FILES.values()):
        path = os.path.realpath(os.path.join(meta_dir, name))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _read_cache(directory, meta_dir):
    arrays = {name: np.load(os.path.join(directory, name + ".npy"), allow_pickle=False)
              for name in _ARRAYS}
    calib = Calibrations(bias=arrays["bias"], dark=arrays["dark"], flat=arrays["flat"],
                         mask=arrays["mask"], source=meta_dir, fallback=False)
    gather = BadPixelGather(index=arrays["gather_index"], nbr=arrays["gather_nbr"],
                            weight=arrays["gather_weight"], shape=arrays["mask"].shape)
    return calib, gather


def _write_cache(directory, calib, gather):
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        arrays = {"bias": calib.bias, "dark": calib.dark, "flat": calib.flat, "mask": calib.mask,
                  "gather_index": gather.index, "gather_nbr": gather.nbr, "gather_weight": gather.weight}
        for name, array in arrays.items():
            np.save(os.path.join(tmp, name + ".npy"), np.asarray(array), allow_pickle=False)
        os.rename(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_calibrations(meta_dir, camera, *, allow_fallback=False, use_cache=True):
    """(Calibrations, BadPixelGather) for `meta_dir`, from the disk cache when it is current.

    Missing or unreadable calibrations raise `InputError` exactly as `rawio.read_calibrations`;
    calibrations with per-quadrant fallbacks are never cached.
    """
    key = _cache_key(meta_dir, camera) if (use_cache and meta_dir and os.path.isdir(meta_dir)) else None
    directory = os.path.join(cache_root(), "calibrations", key) if key else None
    if directory and os.path.isdir(directory):
        try:
            calib, gather = _read_cache(directory, os.fspath(meta_dir))
            log.debug("calibrations from cache %s", directory)
            return calib, gather
        except (OSError, ValueError) as exc:
            log.warning("calibration cache %s unreadable (%s): reading %s", directory, exc, meta_dir)
    calib = read_calibrations(meta_dir, camera, allow_fallback=allow_fallback)
    gather = bad_pixel_gather(calib.mask)
    if directory and not calib.fallback:
        try:
            _write_cache(directory, calib, gather)
            log.debug("cached calibrations in %s", directory)
        except OSError as exc:
            log.info("calibration cache not written (%s); continuing without it", exc)
    return calib, gather
