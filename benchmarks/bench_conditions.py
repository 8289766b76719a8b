"""Observing conditions: zeropoint bias of the seed's median and of the error-weighted
estimator against the simulator's truth, and the cost of the conditions stage on a warm CPU frame.

    python benchmarks/bench_conditions.py [--repeat 7] [--nx 3296 --ny 2472] [--workdir DIR]

Frames (full size by default), each with stars to G' = 19 below the catalogue limit of 15.5:
sharp seeing (FWHM 1.6 pix), the default seeing (2 pix), soft seeing (3.5 pix), and thin cloud
(0.3 mag, 2 pix). For each, the 2.5 pix aperture's whole-frame zeropoint of ZEROPOINTS (the
seed's median) and of CONDITIONS (the weighted estimator), each minus its truth: the median of
G' - m_true over the same stars, m_true from the simulator's exact aperture flux of each star.
Then `conditions.measure_conditions` on the default frame in a warm process (median of
`--repeat` runs), beside the photometry kernel of the same frame as the peer.
"""

import argparse
import os
import time

import numpy as np

from machine import environment

FRAMES = (("sharp seeing, FWHM 1.6", dict(fwhm_pix=1.6, fwhm_corner_pix=1.6)),
          ("default seeing, FWHM 2.0", dict(fwhm_pix=2.0, fwhm_corner_pix=2.0)),
          ("soft seeing, FWHM 3.5", dict(fwhm_pix=3.5, fwhm_corner_pix=3.5)),
          ("thin cloud 0.3 mag, FWHM 2.0", dict(fwhm_pix=2.0, fwhm_corner_pix=2.0, cloud_mag=0.3)))


def truth_zeropoints(result, truth, camera, aperture):
    """Truth of the whole-frame zeropoints: (seed median's, weighted's) from exact aperture fluxes."""
    from pc_gpu.zeropoints import zeropoint_stars

    cat = result.catalog
    good = zeropoint_stars(cat, camera)
    index = {sid: i for i, sid in enumerate(truth["SOURCE_ID"])}
    rows = np.array([index[s] for s in cat["SOURCE_ID"]])
    m_true = -2.5 * np.log10(truth["APER_FLUX_ADU"][rows, aperture] / result.exptime_s)
    g = cat["G_PRIME"].astype(np.float64)
    seed_truth = float(np.median((g - m_true)[good]))
    return seed_truth, g, m_true, good


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--nx", type=int, default=3296)
    p.add_argument("--ny", type=int, default=2472)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--workdir", default="bench_output/conditions")
    args = p.parse_args(argv)

    import fitsio
    from numpy.lib.recfunctions import repack_fields

    from pc_gpu.backend import get_backend
    from pc_gpu.camera import EL_NINO
    from pc_gpu.conditions import measure_conditions
    from pc_gpu.pipeline import Reducer, RunOptions
    from pc_gpu.sim import make_demo_field

    for k, v in environment("numba", "scipy").items():
        print(f"{k}: {v}")
    camera = EL_NINO.with_(nx=args.nx, ny=args.ny)
    backend = get_backend("cpu")
    print(f"frames {args.nx} x {args.ny}, faint stars to G' 19, seed {args.seed}")
    print(f"{'frame':<30} {'stars':>5} {'seed median - truth':>20} {'weighted - truth':>17} {'zp_err':>7}")
    gaia = None
    kept = None
    for i, (name, options) in enumerate(FRAMES):
        field = make_demo_field(os.path.join(args.workdir, f"frame{i}"), seed=args.seed, camera=camera,
                                gaia_dir=gaia, overwrite=True, faint_g_max=19.0, **options)
        gaia = field.gaia_dir
        reducer = Reducer(RunOptions(device="cpu"), camera=camera, meta_dir=field.meta_dir,
                          gaia_dir=field.gaia_dir, backend=backend)
        result = reducer.reduce(field.raw)
        truth = fitsio.read(field.truth, "TRUTH")
        k = reducer.standard_aperture
        seed_truth, g, m_true, good = truth_zeropoints(result, truth, camera, k)
        zps = result.zeropoints
        seed = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == k) & (zps["science_fov_only"] == 0)][0]
        full = result.conditions[0]
        # the weighted estimator's truth: the same estimator on the exact magnitudes (the same
        # stars and weights), so only the measurement's errors are left
        from pc_gpu.conditions import zeropoint_weighted

        weighted_truth = zeropoint_weighted(g[good], m_true[good], 1.0 / camera.gain_e_per_adu * np.ones(good.sum()),
                                            np.zeros(good.sum()), result.exptime_s, seed_truth)[0]
        print(f"{name:<30} {int(seed['n_sources_for_zp']):>5} {seed['zp_adu_per_s'] - seed_truth:>+20.4f} "
              f"{full['zp'] - seed_truth:>+17.4f} {full['zp_err']:>7.4f}   (weighted on exact mags - truth "
              f"{weighted_truth - seed_truth:+.4f})")
        if i == 1:
            kept = (reducer, field)

    reducer, field = kept
    frame, wcs = reducer.load(field.raw)
    result = reducer.reduce_frame(frame, wcs)
    image = backend.asarray(np.zeros(camera.shape, np.float32))
    from pc_gpu.detrend import detrend
    from pc_gpu.photometry import aperture_photometry

    detrend(frame.image, reducer.calibrations, frame.exptime_s, backend, out=image)
    # the catalogue as the pipeline hands it over: its own columns, packed
    base = repack_fields(result.catalog[list(result.catalog.dtype.names[:result.catalog.dtype.names.index(
        "flux_adu_err")])])
    x, y = base["xcentroid"], base["ycentroid"]
    phot = aperture_photometry(image, x, y, camera, backend, radii=reducer.radii)

    def conditions():
        measure_conditions(base, image, phot, camera, reducer.calibrations, backend, result.sky, result.zeropoints,
                           exptime_s=frame.exptime_s, radii=reducer.radii,
                           standard_aperture=reducer.standard_aperture, flatfield=True,
                           pixel_area_arcsec2=camera.pixel_scale_arcsec ** 2)

    def photometry():
        aperture_photometry(image, x, y, camera, backend, radii=reducer.radii)

    for fn in (conditions, photometry):
        fn()
    times = {}
    for name, fn in (("conditions", conditions), ("photometry", photometry)):
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        times[name] = float(np.median(runs))
    n_psf = int(np.isfinite(result.catalog["psf_cxx"]).sum())
    print(f"warm CPU frame, {len(base)} stars ({n_psf} measured for the PSF): conditions stage "
          f"{1e3 * times['conditions']:.2f} ms, photometry kernel {1e3 * times['photometry']:.2f} ms "
          f"(ratio {times['conditions'] / times['photometry']:.2f}); median of {args.repeat}; "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
