"""Scenes built from the simulator: one demo field, and an observing night of frames.

`make_demo_field` builds a chunk tree around a field (bundled Gaia plus synthetic stars),
simulates one frame and writes everything a reduction needs. `simulate_night` writes a
sequence of frames (tracking one field, a slew to another, a passing cloud) that share one
META directory and one chunk tree, with a per-frame truth index.
"""

import argparse
import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

from ..camera import EL_NINO
from ..errors import InputError, PCError
from .chunks import Region, build_chunk_tree, chunk_filename, region_pixels
from .detector import make_calibrations
from .frameio import _ensure_dir, _utc, write_calibrations, write_frame
from .simulate import simulate_frame

__all__ = ["DemoField", "make_demo_field", "NightPaths", "simulate_night", "main"]

log = logging.getLogger(__name__)

DEMO_RA, DEMO_DEC = 150.0, 30.0   # galactic latitude ~ +53 deg: ~4000 stars to G 15.5 in frame
_FIELD_MARGIN_DEG = 1.0


@dataclass(frozen=True)
class DemoField:
    """Paths of a simulated field: raw frame, its .wcs, META dir, Gaia chunk dir, truth table."""

    raw: str
    wcs: str
    meta_dir: str
    gaia_dir: str
    truth: str
    camera: object = EL_NINO


def _field_radius(camera):
    return 0.5 * np.hypot(camera.nx, camera.ny) * camera.pixel_scale_arcsec / 3600 + _FIELD_MARGIN_DEG


def _ensure_tree(gaia_dir, regions, seed, given):
    """Build the chunk tree for `regions` unless every needed chunk already exists.

    A tree the caller gave (`given`) is never modified: missing chunks are only reported.
    """
    missing = [p for p in region_pixels(regions) if not os.path.exists(chunk_filename(gaia_dir, p))]
    if not missing:
        log.info("reusing Gaia chunk tree %s", gaia_dir)
    elif given:
        log.warning("%s lacks %d chunk files near the field(s); stars there will be absent",
                    gaia_dir, len(missing))
    else:
        build_chunk_tree(gaia_dir, regions=regions, synthetic=True, seed=seed, overwrite=True)


def make_demo_field(workdir, seed=0, *, ra=DEMO_RA, dec=DEMO_DEC, camera=EL_NINO, gaia_dir=None,
                    overwrite=False, **sim_options):
    """Build a chunk tree around a field, simulate one frame, write it all under `workdir`.

    Parameters
    ----------
    workdir : str or path
        Gets ``gaia/`` (chunk tree, unless `gaia_dir` is given), ``meta/`` (calibrations),
        ``raw/`` (frame and .wcs) and ``raw/truth/`` (truth table).
    seed : int
        Seed of the synthetic stars, calibrations and frame.
    ra, dec : float
        Field centre, deg (default 150, +30: high galactic latitude).
    camera : pc_gpu.camera.Camera
        Camera to simulate (e.g. ``EL_NINO.with_(nx=600, ny=450)`` for fast tests).
    gaia_dir : str or None
        Existing chunk tree to use as it is (default: build ``workdir/gaia``).
    overwrite : bool
        Replace existing frame and calibration files.
    **sim_options
        Passed to `pc_gpu.sim.simulate_frame` (e.g. dome=True, n_streaks=2, cloud_mag=0.3).

    Returns
    -------
    DemoField
    """
    workdir = os.fspath(workdir)
    _ensure_dir(workdir)
    given = gaia_dir is not None
    gaia_dir = os.path.join(workdir, "gaia") if gaia_dir is None else os.fspath(gaia_dir)
    _ensure_tree(gaia_dir, [Region(ra % 360.0, dec, _field_radius(camera))], seed, given)
    meta_dir = os.path.join(workdir, "meta")
    cal = make_calibrations(camera, seed=seed, bad_pixels=sim_options.get("bad_pixels", True))
    write_calibrations(cal, meta_dir, overwrite=overwrite)
    frame = simulate_frame(gaia_dir, ra, dec, camera=camera, calibrations=cal, seed=seed,
                           **sim_options)
    paths = write_frame(frame, os.path.join(workdir, "raw"), overwrite=overwrite)
    return DemoField(paths.raw, paths.wcs, meta_dir, gaia_dir, paths.truth, camera)


@dataclass(frozen=True)
class NightPaths:
    """What `simulate_night` wrote: per-frame raw/.wcs/truth paths, META, chunk tree, index."""

    raw: tuple
    wcs: tuple
    truth: tuple
    meta_dir: str
    gaia_dir: str
    index: str


_INDEX_DTYPE = [("FNAME", "U40"), ("DEV_FNUM", "i4"), ("MJD_OBS", "f8"), ("RA", "f8"),
                ("DEC", "f8"), ("FIELD", "i2"), ("ZP", "f8"), ("CLOUDMAG", "f8"),
                ("SKY", "f8"), ("ZPFLAG", "i2")]


def simulate_night(outdir, *, n_frames=30, cadence_s=20.0, exptime_s=20.0,
                   fields=((DEMO_RA, DEMO_DEC), (165.0, 36.0)), slew_after=None,
                   cloud_peak_mag=0.6, cloud_centre_frame=None, cloud_width_frames=3.0,
                   start_time="2021-06-12T05:00:00", first_frame_number=1, jitter_arcsec=4.0,
                   camera=EL_NINO, gaia_dir=None, seed=0, overwrite=False, **sim_options):
    """Simulate an observing sequence sharing one META and one chunk tree.

    Frames start every `cadence_s` seconds. The telescope tracks ``fields[0]`` (with small
    pointing jitter) for `slew_after` frames (default two thirds), then slews to ``fields[1]``;
    the first frame after the slew has ZPFLAG = 1. A cloud passes: extinction
    ``cloud_peak_mag * exp(-0.5 ((i - centre) / width)^2)`` mag at frame i, with a gradient
    across the frame while it passes.

    Writes ``outdir/raw/`` (frames and .wcs), ``outdir/raw/truth/``, ``outdir/meta/``,
    ``outdir/gaia/`` (unless `gaia_dir` is given) and ``outdir/night_truth.fits`` (one row
    per frame: FNAME, DEV_FNUM, MJD_OBS, RA, DEC, FIELD, ZP, CLOUDMAG, SKY, ZPFLAG).

    Returns
    -------
    NightPaths
    """
    import fitsio

    if int(n_frames) < 1:
        raise InputError(None, f"n_frames = {n_frames}: need at least one frame")
    if cadence_s < exptime_s:
        raise InputError(None, f"cadence {cadence_s} s is shorter than the exposure {exptime_s} s")
    if not fields:
        raise InputError(None, "no fields given")
    outdir = os.fspath(outdir)
    _ensure_dir(outdir)
    n_frames = int(n_frames)
    slew_after = (2 * n_frames) // 3 if slew_after is None else int(slew_after)
    centre = n_frames / 3.0 if cloud_centre_frame is None else float(cloud_centre_frame)
    given = gaia_dir is not None
    gaia_dir = os.path.join(outdir, "gaia") if gaia_dir is None else os.fspath(gaia_dir)
    radius = _field_radius(camera)
    _ensure_tree(gaia_dir, [Region(ra % 360.0, dec, radius) for ra, dec in fields], seed, given)
    meta_dir = os.path.join(outdir, "meta")
    cal = make_calibrations(camera, seed=seed, bad_pixels=sim_options.get("bad_pixels", True))
    write_calibrations(cal, meta_dir, overwrite=overwrite)

    rng = np.random.default_rng([int(seed), 23])
    start = _utc(start_time)
    index = np.zeros(n_frames, dtype=_INDEX_DTYPE)
    raws, wcss, truths = [], [], []
    for i in range(n_frames):
        field = 0 if (i < slew_after or len(fields) == 1) else 1
        ra0, dec0 = fields[field]
        jitter = rng.normal(0.0, jitter_arcsec / 3600.0, 2)
        ra = (ra0 + jitter[0] / np.cos(np.radians(dec0))) % 360.0
        dec = dec0 + jitter[1]
        cloud = cloud_peak_mag * np.exp(-0.5 * ((i - centre) / cloud_width_frames) ** 2)
        gradient = 0.5 * cloud
        zpflag = field == 1 and i == slew_after
        obs = start + dt.timedelta(seconds=i * cadence_s)
        frame = simulate_frame(gaia_dir, ra, dec, exptime_s=exptime_s, obs_time=obs,
                               frame_number=first_frame_number + i, camera=camera,
                               calibrations=cal, seed=int(seed) * 100003 + i, cloud_mag=cloud,
                               cloud_gradient_mag=gradient, zpflag=zpflag,
                               pointing_ra_dec=(ra0, dec0), **sim_options)
        paths = write_frame(frame, os.path.join(outdir, "raw"), overwrite=overwrite)
        raws.append(paths.raw)
        wcss.append(paths.wcs)
        truths.append(paths.truth)
        head = {card["name"]: card["value"] for card in frame.truth_header}
        index[i] = (frame.filename, first_frame_number + i, head["MJD-OBS"], ra, dec, field,
                    head["ZP"], cloud, head["SKY"], int(zpflag))
        log.info("frame %d/%d: %s field %d cloud %.2f mag", i + 1, n_frames, frame.filename,
                 field, cloud)
    index_path = os.path.join(outdir, "night_truth.fits")
    if os.path.exists(index_path) and not overwrite:
        from ..errors import OutputExistsError

        raise OutputExistsError(f"{index_path} exists; pass overwrite=True to replace it")
    tmp = os.path.join(outdir, f".night_truth.fits.tmp{os.getpid()}")
    fitsio.write(tmp, index, extname="FRAMES", clobber=True,
                 header=[{"name": "NFRAMES", "value": n_frames, "comment": "frames in the night"},
                         {"name": "CADENCE", "value": float(cadence_s), "comment": "s"},
                         {"name": "SEED", "value": int(seed), "comment": "simulator seed"}])
    os.replace(tmp, index_path)
    return NightPaths(tuple(raws), tuple(wcss), tuple(truths), meta_dir, gaia_dir, index_path)


def main(argv=None):
    """Console entry point ``pc-sim-night``."""
    parser = argparse.ArgumentParser(prog="pc-sim-night", description="Simulate a night of "
                                     "pointing-camera frames (tracking, a slew, a passing cloud).")
    parser.add_argument("outdir", help="output directory (raw/, meta/, gaia/, night_truth.fits)")
    parser.add_argument("--n-frames", type=int, default=30)
    parser.add_argument("--cadence", type=float, default=20.0, help="seconds between frames")
    parser.add_argument("--exptime", type=float, default=20.0, help="exposure time (s)")
    parser.add_argument("--field", action="append", default=None, metavar="RA,DEC",
                        help="field centre (deg); give twice for the slew (default 150,30 and 165,36)")
    parser.add_argument("--cloud", type=float, default=0.6, help="peak cloud extinction (mag)")
    parser.add_argument("--start", default="2021-06-12T05:00:00", help="UTC start, ISO")
    parser.add_argument("--gaia-dir", default=None, help="existing chunk tree to use")
    parser.add_argument("--nx", type=int, default=None, help="smaller camera width (tests)")
    parser.add_argument("--ny", type=int, default=None, help="smaller camera height (tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fields = ((DEMO_RA, DEMO_DEC), (165.0, 36.0))
        if args.field:
            try:
                fields = tuple(tuple(float(v) for v in f.split(",")) for f in args.field)
            except ValueError:
                raise InputError(None, f"--field {args.field} is not RA,DEC in degrees") from None
            if any(len(f) != 2 for f in fields):
                raise InputError(None, f"--field {args.field} is not RA,DEC in degrees")
        camera = EL_NINO
        if args.nx or args.ny:
            camera = camera.with_(nx=args.nx or camera.nx, ny=args.ny or camera.ny)
        simulate_night(args.outdir, n_frames=args.n_frames, cadence_s=args.cadence,
                       exptime_s=args.exptime, fields=fields, cloud_peak_mag=args.cloud,
                       start_time=args.start, camera=camera, gaia_dir=args.gaia_dir,
                       seed=args.seed, overwrite=args.overwrite)
    except PCError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
