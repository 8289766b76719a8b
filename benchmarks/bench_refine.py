"""What WCS refinement costs a warm frame, and the fit beside astropy's.

    python benchmarks/bench_refine.py [--repeat 15] [--device cpu] [--workdir DIR]

On a full-size simulated frame (about 3000 stars) whose true WCS has SIP distortion, each the
median of `--repeat` runs in one warm process, the frame already in memory:
- the reduction with and without refinement (`RunOptions.wcs_refine`), given the true .wcs,
  and the refine stage alone (the fit, the stars projected again, the second recentroid);
- the same given a .wcs off by 1 pix, 0.1 deg, 0.5% and a false distortion (an affine
  pre-correction and more recentroid passes);
- the fit alone (`astrometry.refine.refine_wcs`) on the stars the pipeline chose, beside
  astropy's `fit_wcs_from_points` (SIP degree 3) on the same stars: time and how far each WCS
  puts the truth's stars from where they were rendered (median, pixels).
"""

import argparse
import os
import shutil
import time
import warnings

import numpy as np

from machine import environment


def median_ms(fn, repeat):
    """Median and best wall time (ms) of `repeat` calls of fn()."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    p.add_argument("--workdir", default="bench_output_refine")
    args = p.parse_args(argv)

    import fitsio
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs.utils import fit_wcs_from_points

    from pc_gpu.astrometry.refine import fit_star_mask, refine_wcs
    from pc_gpu.backend import get_backend
    from pc_gpu.kernels import warm_up
    from pc_gpu.pipeline import Reducer, RunOptions
    from pc_gpu.rawio import read_raw, read_wcs
    from pc_gpu.sim import make_demo_field
    from pc_gpu.sim.perturb import perturb_wcs_header

    field = make_demo_field(args.workdir, seed=3, sip=True, rotation_deg=12.0, overwrite=True)
    perturbed = os.path.join(args.workdir, "perturbed.wcs")
    fits.PrimaryHDU(header=perturb_wcs_header(fits.getheader(field.wcs), shift_pix=(0.7, -0.7), rotation_deg=0.1,
                                              scale_error=0.005, sip_pix=0.6)).writeto(perturbed, overwrite=True)
    backend = get_backend(args.device)
    warm_up(backend)
    for k, v in environment("astropy", "numba").items():
        print(f"{k}: {v}")
    print(f"backend: {backend.name}; repeat {args.repeat}")

    frame = read_raw(field.raw, field.camera)
    truth = fitsio.read(field.truth, ext="TRUTH")
    truth = truth[truth["IN_FRAME"]]
    reducers = {refine: Reducer(RunOptions(wcs_refine=refine), meta_dir=field.meta_dir, gaia_dir=field.gaia_dir,
                                backend=backend) for refine in (False, True)}
    print("\nwarm reduction, frame in memory (median / best, ms)")
    for label, wcs_path in (("true .wcs", field.wcs), ("perturbed .wcs", perturbed)):
        wcs = read_wcs(wcs_path)
        times = {}
        for refine, reducer in reducers.items():
            reducer.reduce_frame(frame, wcs)  # warm: calibrations, Gaia chunks
            times[refine] = median_ms(lambda: reducer.reduce_frame(frame, wcs), args.repeat)
        stage = [reducers[True].reduce_frame(frame, wcs).timings["refine"] for _ in range(args.repeat)]
        print(f"  {label}: without refinement {times[False][0]:.1f} / {times[False][1]:.1f}; with "
              f"{times[True][0]:.1f} / {times[True][1]:.1f}; adds {times[True][0] - times[False][0]:+.1f} ms "
              f"(refine stage {np.median(stage):.1f} / {np.min(stage):.1f})")

    # the fit alone, on the stars the pipeline chooses, beside astropy's
    reducer = reducers[False]
    result = reducer.reduce_frame(frame, read_wcs(field.wcs))
    cat = result.catalog
    use = fit_star_mask(cat["xcentroid"], cat["ycentroid"], cat["qmaxshift"], cat["G_PRIME"],
                        exptime_s=frame.exptime_s, sky_adu=result.sky[0]["median_adu"], camera=reducer.camera)
    ra, dec, x, y = cat["RA"][use], cat["DEC"][use], cat["xcentroid"][use], cat["ycentroid"][use]
    given = read_wcs(perturbed)
    ours = refine_wcs(ra, dec, x, y, given, reducer.camera.centre)
    coords = SkyCoord(ra, dec, unit="deg")

    def astropy_fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_wcs_from_points((x, y), coords, proj_point="center", projection="TAN", sip_degree=3)

    theirs = astropy_fit()
    t_ours = median_ms(lambda: refine_wcs(ra, dec, x, y, given, reducer.camera.centre), args.repeat)
    t_theirs = median_ms(astropy_fit, args.repeat)

    def error(wcs):
        px, py = wcs.all_world2pix(truth["RA"], truth["DEC"], 0)
        return float(np.median(np.hypot(px - truth["X"], py - truth["Y"])))

    print(f"\nthe fit alone on {len(ra)} stars (median / best, ms; median error against the truth, pix)")
    print(f"  pc_gpu refine_wcs (clipped, order {ours.order}): {t_ours[0]:.2f} / {t_ours[1]:.2f} ms; "
          f"error {error(ours.wcs):.4f} pix")
    print(f"  astropy fit_wcs_from_points (SIP 3):   {t_theirs[0]:.2f} / {t_theirs[1]:.2f} ms; "
          f"error {error(theirs):.4f} pix; ratio {t_theirs[0] / t_ours[0]:.1f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
