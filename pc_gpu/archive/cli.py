"""`pc-archive`: reduce a whole archive of pointing-camera frames, resumably, on every core, a
GPU or a Dask cluster; `pc-archive tables OUT` rebuilds the season tables."""

import argparse
import dataclasses
import logging
import sys

from ..errors import PCError
from .run import EXIT_INPUT, EXIT_OK, LEDGER_NAME

__all__ = ["build_parser", "main"]

log = logging.getLogger("pc_gpu.archive")

_CHUNK = {"local": 4, "gpu": 64, "dask": 8}


class _Parser(argparse.ArgumentParser):
    """argparse, with exit status 1 for a bad invocation (the project's convention)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


def build_parser():
    """The pc-archive parser: its own flags, then every pc-proc reduction flag."""
    from ..cli import add_reduction_arguments, add_test_camera_arguments

    p = _Parser(
        prog="pc-archive",
        description="Reduce every raw frame of an archive (FITS with a .wcs beside it) once, in "
                    "night/time order, resumably: OUT/pc-archive-ledger.jsonl records each frame's "
                    "outcome and a rerun does only what is not done. Season tables (Parquet, by "
                    "night) go to OUT/tables. `pc-archive tables OUT` rebuilds them from the summaries.",
        epilog="Defaults are the original's archive settings, with all 7 apertures: nightly "
               "subdirectories, -summary.fits and -zp.png, no detrended image, no telemetry. "
               "Exit status: 0 every frame done or skipped; 4 some failed (reasons in the ledger); "
               "1 bad invocation, or the run stopped (e.g. the output disk is full).")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="directories (searched recursively), raw files or globs")
    p.add_argument("--outdir", required=True, help="output directory (ledger, nightly subdirectories, tables)")
    g = p.add_argument_group("archive")
    g.add_argument("--file-list", dest="file_list", metavar="FILE",
                   help="file of frame paths, one a line (a .wcs path stands for its .fits)")
    g.add_argument("--nights", metavar="FIRST:LAST", help="only these observing nights (YYYYMMDD, inclusive)")
    g.add_argument("--limit", type=int, metavar="N", help="only the first N frames (in night/time order)")
    g.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                   help="reduce again frames that failed in an earlier run")
    g.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (local pool and --scheduler local; default: the cores)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on Dask: tcp://HOST:PORT of a running scheduler, or 'local' for a LocalCluster")
    g.add_argument("--chunk_size", type=int, metavar="N", help="frames per task (default 4 local, 64 GPU, 8 Dask)")
    g.add_argument("--io_threads", type=int, default=4, metavar="N",
                   help="GPU engine: host threads reading ahead and writing behind (default 4)")
    g.add_argument("--write_detrended", action="store_true", help="also write -detrended.fits")
    g.add_argument("--no_nightly_subdir", action="store_true", help="outputs directly in OUTDIR")
    g.add_argument("--no_thumbnail", action="store_true", help="do not write RAW-thumb.jpg previews (for pc-report)")
    g.add_argument("--gpu_batch", type=int, default=8, metavar="N",
                   help="GPU engine: frames reduced together, their stars in one kernel launch (default 8)")
    g.add_argument("--progress", choices=("auto", "bar", "log"), default="auto",
                   help="tqdm bar or log lines every ~10 s (auto: a bar on a terminal)")
    add_test_camera_arguments(g)
    add_reduction_arguments(p.add_argument_group("reduction (as pc-proc; some are already the default here)"))
    return p


def options_from_args(args):
    """The RunOptions of an archive run (the archive defaults applied)."""
    from ..cli import options_from_args as proc_options

    run = proc_options(args)
    return dataclasses.replace(run, write_detrended=args.write_detrended,
                               nightly_subdir=not args.no_nightly_subdir, thumbnail=not args.no_thumbnail)


def _check_args(args):
    from ..errors import InputError

    if not args.inputs and not args.file_list:
        raise InputError(None, "give INPUT directories, files or globs, or --file-list")
    for name in ("limit", "workers", "chunk_size", "io_threads", "gpu_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(None, f"--{name} must be at least 1, not {value}")


def _engine_kind(args):
    """'dask', 'gpu' or 'local' from --scheduler and --device (--device gpu without a usable
    GPU is refused here, before any work)."""
    import numba

    from ..backend import gpu_problem

    if args.scheduler:
        return "dask"
    simulated = bool(numba.config.ENABLE_CUDASIM)
    if args.device == "gpu":
        problem = None if simulated else gpu_problem()
        if problem is not None:
            raise PCError(f"--device gpu asked for, but no GPU is usable: {problem}")
        return "gpu"
    if args.device == "auto" and not simulated and gpu_problem() is None:
        return "gpu"
    return "local"


def main(argv=None):
    """Entry point of `pc-archive`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tables"]:
        return tables_main(argv[1:])
    from ..calibcache import load_calibrations
    from ..cli import camera_from_args, configure_logging
    from .discover import discover, parse_nights
    from .engines import DaskEngine, GpuEngine, LocalEngine, default_workers
    from .run import run_archive
    from .task import TaskSpec

    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        _check_args(args)
        kind = _engine_kind(args)
        workers = args.workers or default_workers()
        options = options_from_args(args)
        # numba threads per worker: workers x threads = cores (a remote cluster's workers use theirs)
        local = kind == "local" or args.scheduler == "local"
        threads = options.threads or (max(1, default_workers() // workers) if local else None)
        options = dataclasses.replace(options, threads=threads, device="gpu" if kind == "gpu" else options.device)
        camera = camera_from_args(args)
        spec = TaskSpec(options, camera=camera, meta_dir=args.meta_dir, gaia_dir=args.gaia_dir)
        reducer_dirs = _directories(spec)
        spec = dataclasses.replace(spec, meta_dir=reducer_dirs[0], gaia_dir=reducer_dirs[1])
        load_calibrations(spec.meta_dir, camera, allow_fallback=options.calib_fallback)  # refuse early
        frames = discover(args.inputs, file_list=args.file_list,
                          nights=parse_nights(args.nights) if args.nights else None, limit=args.limit)
        if not frames:
            raise PCError("no raw frames found in the inputs given")
        log.info("pc-archive: %d frame(s), %s engine%s, outputs in %s", len(frames), kind,
                 f" ({workers} workers x {threads} numba threads)" if kind == "local" else "", options.outdir)

        def make_engine():
            if kind == "dask":
                return DaskEngine(args.scheduler, workers)
            if kind == "gpu":
                return GpuEngine(args.io_threads, args.gpu_batch)
            return LocalEngine(workers)

        bar = None if args.progress == "auto" else args.progress == "bar"
        return run_archive(frames, spec, make_engine, chunk_size=args.chunk_size or _CHUNK[kind],
                           retry_failed=args.retry_failed, progress_bar=bar)
    except PCError as exc:
        log.error("%s", exc)
        return EXIT_INPUT


def _directories(spec):
    """(meta_dir, gaia_dir), from the environment when not given; the Gaia directory checked."""
    import os

    from ..errors import InputError

    meta = spec.meta_dir if spec.meta_dir is not None else os.environ.get("POINTING_CAMERA_META")
    gaia = spec.gaia_dir if spec.gaia_dir is not None else os.environ.get("PC_GAIA_DIR")
    if gaia is None:
        raise InputError(None, "Gaia chunk directory not given: set PC_GAIA_DIR or --gaia_dir")
    if not os.path.isdir(gaia):
        raise InputError(gaia, "Gaia chunk directory not found (PC_GAIA_DIR)")
    return (None if meta is None else os.path.abspath(meta)), os.path.abspath(gaia)


def tables_main(argv):
    """`pc-archive tables OUT`: rebuild OUT/tables from the ledger and the summaries."""
    import os

    from ..cli import configure_logging
    from .run import open_outdir
    from .season import rebuild

    p = _Parser(prog="pc-archive tables",
                description="Rebuild the season tables OUT/tables from the ledger's outcomes and "
                            "the -summary.fits files on disk.")
    p.add_argument("outdir", metavar="OUT", help="a pc-archive output directory")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if not os.path.exists(os.path.join(args.outdir, LEDGER_NAME)):
        log.error("%s: no %s here; not a pc-archive output directory", args.outdir, LEDGER_NAME)
        return EXIT_INPUT
    try:
        lock, ledger = open_outdir(args.outdir)
    except PCError as exc:
        log.error("%s", exc)
        return EXIT_INPUT
    try:
        n = rebuild(args.outdir, ledger)
    except (OSError, PCError) as exc:
        log.error("%s: tables not rebuilt: %s", args.outdir, exc)
        return EXIT_INPUT
    finally:
        ledger.close()
        lock.close()
    log.info("rebuilt %s for %d night(s)", os.path.join(args.outdir, "tables"), n)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
