"""End-to-end benchmark of the reduction on a full-size simulated frame (about 3000 stars).

    python benchmarks/bench_pipeline.py [--repeat 5] [--batch 20] [--device cpu] [--workdir DIR]

Times, each the median of `--repeat` runs:
- `pc-proc` as a new process with all default outputs (detrended FITS, summary, zp checkplot),
  and without the checkplot;
- a warm process (calibrations, Gaia stars and kernels loaded): the reduction alone, and the
  reduction with all outputs except PNGs, with each stage's share;
- the zeropoint checkplot drawn in a warm process;
- frames per second over a batch of `--batch` reductions in one warm process, reading the
  raw file each time and with the frame already in memory; on a GPU, also with 4, 8 and 16
  frames reduced together (`Reducer.reduce_frames`: one star-kernel launch for all their stars).
Each timed run writes new files (earlier outputs are removed untimed), as frames do in real use.
Peers for each stage (numpy, photutils, SEP) are in benchmarks/bench_kernels.py.
"""

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from machine import environment


def median_time(fn, repeat, before=None):
    """Median and best wall time (s) of `repeat` calls of fn(); before() runs untimed ahead of each."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.min(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    p.add_argument("--workdir", default="bench_output")
    args = p.parse_args(argv)

    from pc_gpu import plots
    from pc_gpu.backend import get_backend
    from pc_gpu.kernels import warm_up
    from pc_gpu.pipeline import Reducer, RunOptions, write_outputs
    from pc_gpu.rawio import read_raw, read_wcs, wcs_path_for
    from pc_gpu.sim import make_demo_field

    field = make_demo_field(args.workdir, seed=0, overwrite=True)
    backend = get_backend(args.device)
    warm_up(backend)
    print("; ".join(f"{k}: {v}" for k, v in environment("numba").items()))
    print(f"Frame: {field.raw} (3296 x 2472), device {backend.name}, repeat {args.repeat}\n")
    rows = []

    env = dict(os.environ, POINTING_CAMERA_META=field.meta_dir, PC_GAIA_DIR=field.gaia_dir)
    outdir = os.path.join(args.workdir, "proc")
    for label, extra in (("pc-proc, new process, all default outputs", []),
                         ("pc-proc, new process, no checkplot", ["--skip_checkplot"])):
        cmd = [sys.executable, "-m", "pc_gpu", field.raw, "--outdir", outdir, "-q", "--device", args.device, *extra]
        clear_outdir = functools.partial(shutil.rmtree, outdir, ignore_errors=True)
        clear_outdir()
        subprocess.run(cmd, env=env, check=True)  # fills the calibration cache and the page cache
        med, best = median_time(lambda: subprocess.run(cmd, env=env, check=True), args.repeat, clear_outdir)
        rows.append((label, med, best))

    warm_outdir = os.path.join(args.workdir, "warm")
    clear_warm = functools.partial(shutil.rmtree, warm_outdir, ignore_errors=True)
    clear_warm()  # reduce() refuses to run where its outputs exist
    reducer = Reducer(RunOptions(outdir=warm_outdir, checkplot=False),
                      meta_dir=field.meta_dir, gaia_dir=field.gaia_dir, backend=backend)
    reducer.reduce(field.raw)
    stage_times = []

    def reduce_only():
        stage_times.append(reducer.reduce(field.raw).timings)

    med, best = median_time(reduce_only, args.repeat)
    rows.append(("warm: reduction in memory (read, detrend, sky, Gaia, centroids, photometry, zeropoints)", med, best))
    med, best = median_time(lambda: write_outputs(reducer.reduce(field.raw), reducer), args.repeat, clear_warm)
    clear_warm()
    rows.append(("warm: reduction + detrended FITS + summary FITS (no PNGs)", med, best))
    cat = reducer.reduce(field.raw).catalog
    g_prime, m_inst = cat["G_PRIME"], cat["m_inst"][:, reducer.standard_aperture]
    plot_path = os.path.join(args.workdir, "warm-zp.png")
    med, best = median_time(lambda: plots.zeropoint_plot(plot_path, g_prime, m_inst, 17.5, title="bench",
                                                         n_used=len(cat), aperture_radius_pix=2.5), args.repeat)
    rows.append(("warm: the zeropoint checkplot alone (matplotlib imported)", med, best))
    rates = {}
    t = time.perf_counter()
    for _ in range(args.batch):
        reducer.reduce(field.raw)
    rates["from the raw file"] = args.batch / (time.perf_counter() - t)
    frame, wcs = read_raw(field.raw, reducer.camera), read_wcs(wcs_path_for(field.raw))
    t = time.perf_counter()
    for _ in range(args.batch):
        reducer.reduce_frame(frame, wcs)
    rates["in memory (raw frame and WCS read once)"] = args.batch / (time.perf_counter() - t)
    if reducer.backend.is_gpu:
        for size in (4, 8, 16):
            reducer.reduce_frames([frame] * size, [wcs] * size)  # allocate the stack once
            t = time.perf_counter()
            for _ in range(max(1, args.batch // size)):
                reducer.reduce_frames([frame] * size, [wcs] * size)
            n = max(1, args.batch // size) * size
            rates[f"in memory, {size} frames per star-kernel launch (reduce_frames)"] = n / (time.perf_counter() - t)

    print("| measurement | median (s) | best (s) |\n|---|---|---|")
    for label, med, best in rows:
        print(f"| {label} | {med:.3f} | {best:.3f} |")
    for label, rate in rates.items():
        print(f"| warm: batch of {args.batch} reductions {label} | {rate:.1f} frames/s | |")
    print()
    print("Stage medians, warm (ms): " + ", ".join(
        f"{k} {np.median([s[k] for s in stage_times]):.1f}" for k in stage_times[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
