"""`pc-proc`: reduce one pointing-camera frame (the original pc_proc.py command line)."""

import argparse
import logging
import sys

from .plotworker import PlotWorker

__all__ = ["main", "build_parser", "add_reduction_arguments", "add_test_camera_arguments", "camera_from_args",
           "options_from_args", "configure_logging"]

log = logging.getLogger("pc_gpu")

EXIT_OK, EXIT_INPUT, EXIT_TELEMETRY = 0, 1, 3


def build_parser():
    """The argument parser; flags keep the original pipeline's names and meanings."""
    p = argparse.ArgumentParser(
        prog="pc-proc",
        description="Run the pointing camera reduction pipeline on an exposure: detrend, sky, "
                    "Gaia centroids, aperture photometry and zeropoints. Calibrations come from "
                    "$POINTING_CAMERA_META, Gaia chunks from $PC_GAIA_DIR, the astrometry from "
                    "RAW.wcs beside the raw file (checked, or solved when it is missing: --solve).")
    p.add_argument("fname_in", help="pointing camera raw image file name")
    p.add_argument("--outdir", help="directory to write outputs in (without it nothing is written)")
    add_reduction_arguments(p)
    return p


def add_reduction_arguments(p):
    """Add every reduction flag of `pc-proc` (all but FNAME_IN and --outdir) to the parser or
    argument group `p`; `pc-realtime` and `pc-archive` share them through this."""
    p.add_argument("--dont_write_detrended", action="store_true", help="don't write detrended image")
    p.add_argument("--skip_checkplot", action="store_true", help="don't create a checkplot")
    p.add_argument("--nightly_subdir", action="store_true",
                   help="create output subdirectories per observing night (OUTDIR/YYYYMMDD)")
    p.add_argument("--send_redis", action="store_true",
                   help="send results to redis (REDISHOST, REDISPORT, REDISDBNUM, REDISKEY, REDISPASSWORD, or REDISURL)")
    p.add_argument("--one_aper", action="store_true", help="only do aperture photometry for one aperture size (2.5 pix)")
    p.add_argument("--bg_sigclip", action="store_true", help="sigma clipping for background annulus median")
    p.add_argument("--multiproc", type=int, metavar="MULTIPROC", help="number of threads for multiprocessing (CPU backend)")
    p.add_argument("--max_n_stars", type=int, default=3000, help="limit analysis to brightest max_n_stars Gaia stars (default 3000)")
    p.add_argument("--pm_corr", action="store_true", help="make Gaia proper motion corrections based on MJD")
    p.add_argument("--skip_flatfield", action="store_true", help="skip flatfielding during pixel-level detrending")
    p.add_argument("--sci_inst_name", default="desi", help="name of science instrument (telemetry field suffix; default desi)")
    p.add_argument("--sci_fov_checkplot", action="store_true", help="restrict checkplot to science instrument FOV")
    p.add_argument("--check_tcs_motion", action="store_true", help="abort reductions based on telescope motion flag (ZPFLAG)")
    p.add_argument("--plot_detrended", action="store_true", help="make and save plot of detrended image")
    p.add_argument("--plot_quiver", action="store_true", help="make and save quiver plot of centroid shifts")
    p.add_argument("--max_zp_radius", type=float, help="do not use stars farther than this from the image centre (pixels) for zeropoints")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="compute backend: a usable GPU, else the CPU (auto); or force one")
    p.add_argument("--calib_fallback", action="store_true",
                   help="use the camera's per-quadrant bias/dark scalars when master bias/dark are missing")
    p.add_argument("--detect_streaks", action="store_true",
                   help="detect satellite streaks (STREAKS table in the summary; stars on them flagged and left out of zeropoints)")
    p.add_argument("--plot_streaks", action="store_true",
                   help="draw detected streaks on the -detrended.png plot (with --plot_detrended and --detect_streaks)")
    p.add_argument("--streak_time_limit", type=float, metavar="SECONDS",
                   help="give up streak detection after this many seconds (empty STREAKS, STRKTOUT = T)")
    p.add_argument("--thumbnail", action="store_true",
                   help="write RAW-thumb.jpg, a small preview of the detrended image (for pc-report)")
    p.add_argument("--no_wcs_refine", action="store_true",
                   help="use the .wcs as it is: no fit of the WCS to the Gaia stars, no second recentroid, "
                        "no pointing keywords or telemetry")
    p.add_argument("--solve", choices=("auto", "always", "never"), default="auto",
                   help="plate-solve the frame from its stars and the Gaia chunks: when the .wcs is missing "
                        "or fails verification (auto, the default), always, or never (the .wcs is required)")
    p.add_argument("--meta_dir", help="calibration directory (default $POINTING_CAMERA_META)")
    p.add_argument("--gaia_dir", help="Gaia chunk directory (default $PC_GAIA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="log stage timings and details")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")


def add_test_camera_arguments(p):
    """Hidden flags for a smaller detector (the simulator's fast test frames)."""
    p.add_argument("--camera_nx", type=int, help=argparse.SUPPRESS)
    p.add_argument("--camera_ny", type=int, help=argparse.SUPPRESS)


def camera_from_args(args):
    """El Nino, or a smaller detector when the hidden test flags ask for one."""
    from .camera import EL_NINO

    if args.camera_nx or args.camera_ny:
        return EL_NINO.with_(nx=args.camera_nx or EL_NINO.nx, ny=args.camera_ny or EL_NINO.ny)
    return EL_NINO


def options_from_args(args):
    """RunOptions from parsed arguments."""
    from .pipeline import RunOptions

    return RunOptions(
        outdir=args.outdir, write_detrended=not args.dont_write_detrended, checkplot=not args.skip_checkplot,
        nightly_subdir=args.nightly_subdir, send_redis=args.send_redis, one_aper=args.one_aper,
        bg_sigclip=args.bg_sigclip, threads=args.multiproc, max_n_stars=args.max_n_stars,
        pm_corr=args.pm_corr, flatfield=not args.skip_flatfield, sci_inst_name=args.sci_inst_name,
        sci_fov_checkplot=args.sci_fov_checkplot, check_tcs_motion=args.check_tcs_motion,
        plot_detrended=args.plot_detrended, plot_quiver=args.plot_quiver,
        max_zp_radius=args.max_zp_radius, overwrite=args.overwrite, device=args.device,
        calib_fallback=args.calib_fallback, detect_streaks=args.detect_streaks,
        plot_streaks=args.plot_streaks, streak_time_limit=args.streak_time_limit,
        thumbnail=args.thumbnail, wcs_refine=not args.no_wcs_refine, solve=args.solve)


def configure_logging(verbose=False, quiet=False):
    """Log to stderr with times; -v adds stage timings, -q keeps warnings and errors."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("numba", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv=None):
    """Entry point of `pc-proc`; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    # forked before the heavy imports: it imports matplotlib while this process reduces
    plot_worker = None if args.skip_checkplot or args.outdir is None else PlotWorker.start()
    try:
        return _run(args, plot_worker)
    finally:
        if plot_worker is not None:
            plot_worker.close()


def _run(args, plot_worker):
    """Reduce the frame `args` name; returns the exit status."""
    from .errors import PCError, TelescopeMotion
    from .frameout import process_frame
    from .pipeline import Reducer
    from .telemetry import redis_settings as settings_from_environment

    try:
        options = options_from_args(args)
        redis_settings = settings_from_environment() if options.send_redis else None
        if options.outdir is None:
            log.warning("no --outdir given: the frame is reduced but no file is written")
        reducer = Reducer(options, meta_dir=args.meta_dir, gaia_dir=args.gaia_dir)
        _, _, telemetry_ok = process_frame(args.fname_in, reducer, redis_settings=redis_settings,
                                           plot_worker=plot_worker)
    except TelescopeMotion as exc:
        log.warning("%s", exc)
        return EXIT_OK
    except PCError as exc:
        log.error("%s", exc)
        return EXIT_INPUT
    return EXIT_OK if telemetry_ok else EXIT_TELEMETRY


if __name__ == "__main__":
    sys.exit(main())
