"""Synthetic nights of reduced outputs: -summary.fits files written with the pipeline's own
table and FITS writers from made-up zeropoints and skies (no image is simulated or reduced).

For report benchmarks and tests that need many frames or many nights quickly.
"""

import datetime as dt
import os

import numpy as np
from astropy.io import fits

from ..camera import EL_NINO
from ..fitsout import header_records, write_summary
from ..obstime import mjd_obs
from ..outputs import atomic_output
from ..tables import FrameInfo, sky_table, zeropoints_table

__all__ = ["write_synthetic_night"]


def write_synthetic_night(outdir, night, n_frames, *, cadence_s=20.0, exptime_s=20.0, seed=0,
                          camera=EL_NINO, start_local="19:00:00", n_apertures=1):
    """Write `n_frames` summaries of night `night` ('YYYYMMDD') under ``outdir/night/``.

    Zeropoints scatter by 0.02 mag about 17.5 (each quadrant offset a little), a cloud dims a
    tenth of the night by up to 0.5 mag, skies scatter about 3.2 ADU/s/pix. Frame names follow
    the camera's ``YYYYMMDD.HHMMSS.NNNNN_EEEEE`` pattern (local time).

    Returns
    -------
    list of str
        The summary paths, in time order.
    """
    rng = np.random.default_rng(seed)
    directory = os.path.join(outdir, night)
    os.makedirs(directory, exist_ok=True)
    start = dt.datetime.strptime(f"{night} {start_local}", "%Y%m%d %H:%M:%S")
    empty_catalog = np.zeros(0, dtype=[("G_PRIME", "f4")])
    paths = []
    for i in range(n_frames):
        local = start + dt.timedelta(seconds=i * cadence_s)
        name = f"{local:%Y%m%d.%H%M%S}.{i + 1:05d}_{int(exptime_s * 1000):05d}"
        header = fits.Header({"DATE": f"{local:%Y/%m/%d}", "TIME": f"{local:%H:%M:%S}",
                              "EXPOSURE": int(exptime_s * 1000), "DEV_FNUM": i + 1})
        mjd = mjd_obs(header, local, camera.timezone_offset_hours)
        info = FrameInfo(fname_raw=name + ".fits", exptime_s=exptime_s, mjd_obs=mjd, obs_night=night,
                         has_dome=bool(rng.random() < 0.01), header=header)
        cloud = 0.5 * np.exp(-0.5 * ((i - 0.3 * n_frames) / (0.05 * n_frames + 1)) ** 2)
        rows = []
        for aper in range(n_apertures):
            for quadrant, offset in enumerate((0.0, 0.01, -0.01, 0.02, -0.02)):
                for sci in ((0, 1) if quadrant == 0 else (0,)):
                    rows.append({"quadrant": quadrant, "aper_ind": aper, "science_fov_only": sci,
                                 "zp_adu_per_s": 17.5 + offset - cloud + rng.normal(0, 0.02),
                                 "n_sources_for_zp": int(rng.integers(50, 400)),
                                 "bp_rp_median": 0.9, "gaia_g_median": 13.5,
                                 "robust_sigma_mag": abs(rng.normal(0.05, 0.01))})
        sky = 3.2 * exptime_s * (1 + rng.normal(0, 0.02))
        stats = {region: (sky * (1 + 0.01 * k), 0.0, sky * (1 + 0.01 * k))
                 for k, region in enumerate(("full", "sci", "quad1", "quad2", "quad3", "quad4"))}
        path = os.path.join(directory, name + "-summary.fits")
        with atomic_output(path) as tmp:
            write_summary(tmp, header_records(header), empty_catalog, zeropoints_table(rows, info),
                          sky_table(stats, 0.5, info))
        paths.append(path)
    return paths
