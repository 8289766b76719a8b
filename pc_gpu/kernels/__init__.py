"""Per-pixel and per-star kernels: one algorithm, compiled for the CPU and for CUDA.

- `_core`: the logic, written once as plain Python functions (`_core.build(jit)`).
- `cpu`: numba.njit(parallel=True) launchers (numpy arrays).
- `cuda`: numba.cuda.jit launchers (`CudaKernels(xp)`; cupy arrays, or numpy under the
  simulator).
- `common`: host-side precomputation shared by both (bad-pixel gather, sky regions).

Both kernel sets offer the same functions: detrend, bad_pixel_gather,
apply_bad_pixel_gather, prepare_sky_regions, sky_order_statistics, sky_statistics_regions,
recentroid, aperture_photometry, psf_moments, recentroid_frames, aperture_photometry_frames,
psf_moments_frames (the stars of several frames in one call). Get one through `pc_gpu.backend.get_backend`.

Kernels are compiled with an on-disk cache (numba ``cache=True``) in a directory named after
a digest of the kernel sources (`_cache.kernel_cache_dir`), so any edit compiles afresh;
`warm_up` compiles them all on a tiny image so that the first real frame does not pay for it.
"""

import logging
import time

import numpy as np

__all__ = ["warm_up"]

log = logging.getLogger(__name__)


def warm_up(backend, *, radii=(2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0), annulus=(12.0, 20.0)):
    """Compile (or load from the disk cache) every kernel of `backend` on a tiny frame.

    Returns the seconds it took.
    """
    t0 = time.perf_counter()
    k = backend.kernels
    ny, nx = 48, 64
    rng = np.random.default_rng(0)
    raw = rng.integers(100, 1000, (ny, nx)).astype(np.uint16)
    ones = np.ones((ny, nx), np.float32)
    out = backend.xp.empty((ny, nx), np.float32)
    bias, dark, flat = (backend.asarray(ones * v) for v in (90.0, 0.1, 1.0))
    k.detrend(backend.asarray(raw), bias, dark, flat, 20.0, out)
    k.detrend(backend.asarray(raw), bias, dark, None, 20.0, out)
    mask = np.zeros((ny, nx), np.uint8)
    mask[5, 7] = 1
    gather = backend.gather_to_device(k.bad_pixel_gather(mask))
    k.apply_bad_pixel_gather(out, gather)
    regions = k.prepare_sky_regions((ny, nx), [None, backend.asarray(np.arange(100, 900)), (0, ny // 2, 0, nx // 2),
                                               (0, ny // 2, nx // 2, nx), (ny // 2, ny, 0, nx // 2),
                                               (ny // 2, ny, nx // 2, nx)])
    k.sky_statistics_regions(out, regions)
    k.sky_order_statistics(out, None)
    xs = backend.asarray(np.array([20.3, 40.6]))
    ys = backend.asarray(np.array([20.2, 30.9]))
    k.recentroid(out, xs, ys, 8, 11, nx / 2 + 0.5, ny / 2 + 0.5, float(np.hypot(nx / 2 + 0.5, ny / 2 + 0.5)))
    for sigclip in (False, True):
        k.aperture_photometry(out, xs, ys, backend.asarray(np.asarray(radii, np.float64)), annulus[0], annulus[1], sigclip)
    k.psf_moments(out, xs, ys, backend.asarray(np.array([500.0, 500.0])))
    dt = time.perf_counter() - t0
    log.info("kernels ready on %s in %.1f s", backend.name, dt)
    return dt
