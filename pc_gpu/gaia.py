"""The Gaia stars in a frame: which HEALPix chunk files, reading them, projecting through the WCS."""

import functools
import logging
import os

import numpy as np

from .errors import InputError

__all__ = ["field_healpix", "read_gaia_chunks", "gaia_mag_limit", "star_list", "GAIA_COLUMNS",
           "chunk_path"]

log = logging.getLogger(__name__)

GAIA_COLUMNS = ("SOURCE_ID", "RA", "DEC", "PMRA", "PMDEC", "REF_EPOCH",
                "PHOT_G_MEAN_MAG", "PHOT_BP_MEAN_MAG", "PHOT_RP_MEAN_MAG")


def chunk_path(gaia_dir, pixel):
    """Path of the chunk file of one nside-32 RING HEALPix pixel."""
    return os.path.join(gaia_dir, f"chunk-{int(pixel):05d}.fits")


def field_healpix(wcs, camera, n_grid=100):
    """Unique HEALPix (RING, nside from the camera) pixels touched by the image, sampled on a grid."""
    from astropy_healpix import HEALPix
    import astropy.units as u

    xs = np.linspace(-0.5, camera.nx - 0.5, n_grid)
    ys = np.linspace(-0.5, camera.ny - 0.5, n_grid)
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


def _apply_proper_motion(ra, dec, pmra, pmdec, ref_epoch, mjd):
    """RA, Dec (deg) moved from `ref_epoch` (Julian year) to the epoch of `mjd`; pm in mas/yr."""
    epoch = 2000.0 + (mjd - 51544.5) / 365.25
    dt_yr = epoch - ref_epoch
    pmra = np.nan_to_num(pmra)
    pmdec = np.nan_to_num(pmdec)
    cosd = np.cos(np.radians(dec))
    return ra + pmra * dt_yr / 3.6e6 / cosd, dec + pmdec * dt_yr / 3.6e6


def star_list(gaia, wcs, camera, exptime_s, *, max_n_stars=3000, pm_corr=False, mjd=None):
    """Gaia stars in the image, brightest first, with their predicted pixel positions.

    Returns a structured array of the Gaia columns plus RA_USED, DEC_USED (deg, after the
    proper-motion correction when asked) and x_gaia_guess, y_gaia_guess (pixels).
    """
    g = gaia["PHOT_G_MEAN_MAG"]
    keep = np.isfinite(g) & (g <= gaia_mag_limit(exptime_s))
    stars = gaia[keep]
    ra, dec = stars["RA"].astype(np.float64), stars["DEC"].astype(np.float64)
    if pm_corr:
        if mjd is None:
            raise ValueError("pm_corr needs the MJD of the exposure")
        ref = stars["REF_EPOCH"] if "REF_EPOCH" in stars.dtype.names else np.full(len(stars), 2016.0)
        ra, dec = _apply_proper_motion(ra, dec, stars["PMRA"], stars["PMDEC"], ref, mjd)
    x, y = wcs.all_world2pix(ra, dec, 0)
    inside = (x > -0.5) & (x < camera.nx - 0.5) & (y > -0.5) & (y < camera.ny - 0.5)
    order = np.argsort(stars["PHOT_G_MEAN_MAG"][inside], kind="stable")[:max_n_stars]
    idx = np.flatnonzero(inside)[order]
    out_dtype = stars.dtype.descr + [("ra_used", "f8"), ("dec_used", "f8"),
                                     ("x_gaia_guess", "f8"), ("y_gaia_guess", "f8")]
    out = np.zeros(len(idx), dtype=out_dtype)
    for name in stars.dtype.names:
        out[name] = stars[name][idx]
    out["ra_used"], out["dec_used"] = ra[idx], dec[idx]
    out["x_gaia_guess"], out["y_gaia_guess"] = x[idx], y[idx]
    return out
