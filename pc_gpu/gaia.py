"""The Gaia stars in a frame: which HEALPix chunk files, reading them, projecting through the WCS."""

import functools
import logging
import os

import numpy as np

from .errors import InputError

__all__ = ["field_healpix", "read_gaia_chunks", "gaia_mag_limit", "star_list", "GAIA_COLUMNS",
           "chunk_path"]

log = logging.getLogger(__name__)

GAIA_COLUMNS = ("SOURCE_ID", "RA", "DEC", "PHOT_G_MEAN_MAG", "PHOT_BP_MEAN_MAG",
                "PHOT_RP_MEAN_MAG", "REF_EPOCH", "PMRA", "PMDEC")
DEFAULT_REF_EPOCH = 2016.0


def chunk_path(gaia_dir, pixel):
    """Path of the chunk file of one nside-32 RING HEALPix pixel."""
    return os.path.join(gaia_dir, f"chunk-{int(pixel):05d}.fits")


def field_healpix(wcs, camera, n_grid=104):
    """Sorted unique HEALPix (RING, camera nside) pixels under a grid of n_grid x n_grid points
    from pixel 0 to nx (ny) inclusive."""
    from astropy_healpix import HEALPix
    import astropy.units as u

    xs = np.linspace(0.0, camera.nx, n_grid)
    ys = np.linspace(0.0, camera.ny, n_grid)
    gx, gy = np.meshgrid(xs, ys)
    ra, dec = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ok = np.isfinite(ra) & np.isfinite(dec)
    hp = HEALPix(nside=camera.gaia_nside, order="ring")
    return np.unique(hp.lonlat_to_healpix(ra[ok] * u.deg, dec[ok] * u.deg))


@functools.lru_cache(maxsize=8)
def _read_chunk_set(gaia_dir, pixels, columns):
    import fitsio

    tables = []
    for pixel in pixels:
        path = chunk_path(gaia_dir, pixel)
        if not os.path.exists(path):
            log.debug("no Gaia chunk %s", path)
            continue
        try:
            have = {c.upper(): c for c in fitsio.FITS(path)[1].get_colnames()}
            missing = [c for c in columns if c not in have and c != "REF_EPOCH"]
            if missing:
                raise InputError(path, f"Gaia chunk lacks columns {missing}")
            table = fitsio.read(path, ext=1, columns=[have[c] for c in columns if c in have])
        except OSError as exc:
            raise InputError(path, f"Gaia chunk unreadable ({exc})") from None
        table.dtype.names = [n.upper() for n in table.dtype.names]
        tables.append(table)
    if not tables:
        raise InputError(gaia_dir, f"no Gaia chunk file covers the field (looked for HEALPix pixels "
                                   f"{list(pixels)} as chunk-NNNNN.fits; set PC_GAIA_DIR)")
    names = tables[0].dtype.names
    return np.concatenate([t[list(names)] for t in tables])


def read_gaia_chunks(gaia_dir, pixels, columns=GAIA_COLUMNS):
    """Concatenated Gaia rows (upper-case column names) of the chunk files for `pixels`.

    Results are cached per (directory, pixel set): a telescope tracking one field reads its
    chunks once. The returned array is shared: do not modify it.
    """
    if gaia_dir is None or not os.path.isdir(gaia_dir):
        raise InputError(gaia_dir, "Gaia chunk directory not found (set PC_GAIA_DIR)")
    return _read_chunk_set(os.fspath(gaia_dir), tuple(int(p) for p in pixels), tuple(columns))


def gaia_mag_limit(exptime_s):
    """Faintest G used for an exposure of `exptime_s` seconds: clip(15.5 + 1.21 * 2.5 log10(t/26), 10, 15.5)."""
    return float(np.clip(15.5 + 1.21 * 2.5 * np.log10(exptime_s / 26.0), 10.0, 15.5))


def apply_proper_motion(ra, dec, pmra, pmdec, ref_epoch, mjd):
    """RA, Dec (deg) moved from `ref_epoch` (Julian year) to the epoch of `mjd`.

    Proper motions are in mas/yr (PMRA includes cos Dec); stars without a finite proper
    motion keep their position.
    """
    dt_yr = 2000.0 + (mjd - 51544.5) / 365.25 - ref_epoch
    ok = np.isfinite(pmra) & np.isfinite(pmdec)
    cosd = np.cos(np.radians(dec))
    ra = np.where(ok, ra + np.where(ok, pmra, 0.0) * dt_yr / (3.6e6 * cosd), ra)
    dec = np.where(ok, dec + np.where(ok, pmdec, 0.0) * dt_yr / 3.6e6, dec)
    return ra, dec


def star_list(gaia, wcs, camera, exptime_s, *, max_n_stars=3000, pm_corr=False, mjd=None):
    """Gaia stars inside the image with their predicted pixel positions.

    Keeps G <= `gaia_mag_limit(exptime_s)` and 0 < x < nx - 1, 0 < y < ny - 1 (strict, as the
    original). When more than `max_n_stars` remain, keeps the brightest, sorted by G; otherwise
    the chunk-file order is kept. With `pm_corr`, RA/DEC are moved to the epoch of `mjd` using
    REF_EPOCH (2016.0 when absent) and the catalogue RA/DEC hold the moved positions.

    Returns a structured array: the Gaia columns plus x_gaia_guess, y_gaia_guess (pixels).
    """
    g = gaia["PHOT_G_MEAN_MAG"]
    stars = gaia[np.isfinite(g) & (g <= gaia_mag_limit(exptime_s))]
    ra, dec = stars["RA"].astype(np.float64), stars["DEC"].astype(np.float64)
    if pm_corr:
        if mjd is None or not np.isfinite(mjd):
            raise ValueError("proper-motion correction needs the MJD of the exposure")
        names = stars.dtype.names
        ref = stars["REF_EPOCH"].astype(np.float64) if "REF_EPOCH" in names else DEFAULT_REF_EPOCH
        ra, dec = apply_proper_motion(ra, dec, stars["PMRA"].astype(np.float64),
                                      stars["PMDEC"].astype(np.float64), ref, mjd)
    x, y = wcs.all_world2pix(ra, dec, 0)
    idx = np.flatnonzero((x > 0) & (y > 0) & (x < camera.nx - 1) & (y < camera.ny - 1))
    if len(idx) > max_n_stars:
        idx = idx[np.argsort(stars["PHOT_G_MEAN_MAG"][idx], kind="stable")[:max_n_stars]]
    out = np.zeros(len(idx), dtype=stars.dtype.descr + [("x_gaia_guess", "f8"), ("y_gaia_guess", "f8")])
    for name in stars.dtype.names:
        out[name] = stars[name][idx]
    out["RA"], out["DEC"] = ra[idx], dec[idx]
    out["x_gaia_guess"], out["y_gaia_guess"] = x[idx], y[idx]
    return out
