"""The CUDA kernels agree with the CPU kernels: under numba's CUDA simulator (always, in a
subprocess with NUMBA_ENABLE_CUDASIM=1 and warnings as errors, on a small frame) and on a real
GPU (marked `gpu`, full-size frame, skipped without a usable GPU).

The inputs have a dark frame that varies pixel to pixel (a contracted multiply-add would
change some detrended pixels by an ulp) and NaN pixels in a centroid box and an annulus
(device min/max ignore NaN). Exact: detrended and bad pixels, sky order statistics and counts,
centroids, qmaxshift, annulus counts and flags, PSF-moment status. To a tolerance: the clipped
sky mean (summed in another order, rtol 1e-12) and aperture sums, annulus medians and PSF
moments (the geometry and the weights' exponentials may be contracted, rtol 1e-5).

Run as a script (``python tests/test_kernels_cudasim.py OUT.npz``) it computes every kernel
with `get_backend('gpu')` and saves the results with numpy.savez (``OUT.npz NY NX N_STARS``:
on that frame, compared with the CPU there); with ``--launches`` it
instead runs the launchers on a full-size frame with the device's launch policy and kernels
that only record their launch, and prints the smallest grid.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

RADII = np.array([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0])


def make_inputs(ny=64, nx=64, n_stars=5, seed=0):
    """A small frame: raw, calibrations, mask, star guesses."""
    rng = np.random.default_rng(seed)
    sig = 2.0 / 2.3548
    yy, xx = np.mgrid[:ny, :nx]
    sx, sy = rng.uniform(3, nx - 3, n_stars), rng.uniform(3, ny - 3, n_stars)
    sky = np.full((ny, nx), 1300.0)
    for x, y, f in zip(sx, sy, rng.uniform(2e4, 2e5, n_stars)):
        # each star drawn on a 15 x 15 stamp (8 sigma), not the whole frame
        j0, i0 = max(int(y) - 7, 0), max(int(x) - 7, 0)
        sy_, sx_ = slice(j0, min(int(y) + 8, ny)), slice(i0, min(int(x) + 8, nx))
        sky[sy_, sx_] += f * np.exp(-0.5 * ((xx[sy_, sx_] - x) ** 2 + (yy[sy_, sx_] - y) ** 2) / sig**2) / (
            2 * np.pi * sig**2)
    bias = rng.normal(100, 2, (ny, nx)).astype(np.float32)
    dark = rng.uniform(0.02, 0.2, (ny, nx)).astype(np.float32)
    flat = rng.uniform(0.9, 1.1, (ny, nx)).astype(np.float32)
    raw = np.clip(rng.poisson(sky * flat) + bias + 0.09 * 20, 0, 16383).astype(np.uint16)
    mask = (rng.random((ny, nx)) < 0.01).astype(np.uint8)
    mask[10, :] = 1
    guess_x, guess_y = sx + rng.normal(0, 0.8, n_stars), sy + rng.normal(0, 0.8, n_stars)
    circle = np.flatnonzero((((xx - nx / 2 + 0.5) ** 2 + (yy - ny / 2 + 0.5) ** 2) <= (0.3 * nx) ** 2).ravel())
    hy, hx = ny // 2, nx // 2
    regions = [None, circle, (hy, ny, hx, nx), (hy, ny, 0, hx), (0, hy, 0, hx), (0, hy, hx, nx)]
    return dict(raw=raw, bias=bias, dark=dark, flat=flat, mask=mask, x=guess_x, y=guess_y, regions=regions)


def run_all(backend, inp):
    """Every kernel on `backend`; a dict of host arrays."""
    k, h = backend.kernels, backend.to_host
    ny, nx = inp["raw"].shape
    out = backend.xp.empty((ny, nx), np.float32)
    k.detrend(backend.asarray(inp["raw"]), *(backend.asarray(inp[n]) for n in ("bias", "dark", "flat")), 20.0, out)
    res = {"detrended": h(out).copy()}
    payload = (inp["raw"].astype(np.int32) - 32768).astype(">i2").view(np.int16)  # FITS bytes as read
    k.detrend(backend.asarray(payload), *(backend.asarray(inp[n]) for n in ("bias", "dark", "flat")), 20.0, out,
              bzero=32768.0, swapped=True)
    res["detrended_payload"] = h(out).copy()
    k.apply_bad_pixel_gather(out, backend.gather_to_device(k.bad_pixel_gather(inp["mask"])))
    res["badpix"] = h(out).copy()
    regions = [r if r is None or isinstance(r, tuple) else backend.asarray(r) for r in inp["regions"]]
    sky = k.sky_statistics_regions(out, regions)
    res["sky_order"] = np.array([[s[0], s[1]] for s in sky], np.float32)
    res["sky_mean"] = np.array([s[2] for s in sky])
    res["sky_n"] = np.array([s[3] for s in sky])
    cx, cy = nx / 2 + 0.5, ny / 2 + 0.5
    # NaN pixels (after the sky, which takes finite images): in star 0's centroid box and in
    # star 1's annulus
    for star, (dy, dx) in ((0, (1, 0)), (1, (0, 14))):
        out[int(round(inp["y"][star])) + dy, int(round(inp["x"][star])) + dx] = np.nan
    xc, yc, q = k.recentroid(out, backend.asarray(inp["x"]), backend.asarray(inp["y"]), 8, 11, cx, cy, math.hypot(cx, cy))
    res.update(xc=h(xc), yc=h(yc), q=h(q))
    for sigclip in (False, True):
        s, b, n, f = k.aperture_photometry(out, xc, yc, backend.asarray(RADII), 12.0, 20.0, sigclip)
        res.update({f"sums{int(sigclip)}": h(s), f"bkg{int(sigclip)}": h(b), f"nann{int(sigclip)}": h(n),
                    f"flags{int(sigclip)}": h(f)})
    # the stars of two frames in one launch, interleaved (frame 0 is the image above)
    images = backend.xp.stack([out, out * np.float32(1.5) + np.float32(3.0)])
    frame = backend.asarray(np.tile(np.array([0, 1], np.int32), len(inp["x"])))
    bx, by = backend.asarray(np.repeat(inp["x"], 2)), backend.asarray(np.repeat(inp["y"], 2))
    bxc, byc, bq = k.recentroid_frames(images, frame, bx, by, 8, 11, cx, cy, math.hypot(cx, cy))
    s, b, n, f = k.aperture_photometry_frames(images, frame, bxc, byc, backend.asarray(RADII), 12.0, 20.0, True)
    res.update(bxc=h(bxc), byc=h(byc), bq=h(bq), bsums=h(s), bbkg=h(b), bnann=h(n), bflags=h(f))
    m, st = k.psf_moments_frames(images, frame, bxc, byc, b)
    res.update(moments=h(m), mstatus=h(st))
    return res


def compare(a, b):
    """Assert GPU results `a` agree with CPU results `b`."""
    for key in ("detrended", "detrended_payload", "badpix", "sky_order", "sky_n", "xc", "yc", "q", "nann0",
                "nann1", "flags0", "flags1", "bxc", "byc", "bq", "bnann", "bflags", "mstatus"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_allclose(a["moments"], b["moments"], rtol=1e-5, err_msg="moments")
    np.testing.assert_allclose(a["sky_mean"], b["sky_mean"], rtol=1e-12)
    for key in ("sums0", "sums1", "bkg0", "bkg1", "bsums", "bbkg"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


def test_cuda_kernels_in_simulator_match_cpu(tmp_path):
    from pc_gpu.backend import get_backend

    path = tmp_path / "sim.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-W", "error", __file__, str(path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(path) as f:
        sim = {k: f[k] for k in f.files}
    assert str(sim["backend"]) == "gpu-sim"
    cpu = run_all(get_backend("cpu"), make_inputs())
    assert np.isnan(cpu["sums0"]).any() and np.isfinite(cpu["xc"]).all()  # the NaN pixels reach the kernels
    # a batch of frames gives each frame what a call for that frame alone gives
    for a, b in (("bxc", "xc"), ("byc", "yc"), ("bq", "q"), ("bsums", "sums1"), ("bnann", "nann1")):
        np.testing.assert_array_equal(cpu[a][::2], cpu[b], err_msg=a)
    assert not np.array_equal(cpu["bsums"][1::2], cpu["bsums"][::2])
    np.testing.assert_array_equal(cpu["detrended_payload"], cpu["detrended"])
    compare(sim, cpu)


def test_full_frame_launches_fill_the_device():
    """Every launcher, on a full frame with 3000 stars and the device's launch policy, asks for
    at least MIN_BLOCKS blocks (numba warns below that; fewer leave multiprocessors idle)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-W", "error", __file__, "--launches"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launches = [line.split() for line in proc.stdout.splitlines() if line.startswith("launch ")]
    names = {name for _, name, _, _ in launches}
    assert names == {"_detrend_k", "_gather_k", "_sky_level1_k", "_sky_level2_k", "_sky_sums_k", "_recentroid_k",
                     "_photometry_k", "_moments_k"}
    assert min(int(blocks) for _, _, blocks, _ in launches) >= 128


def test_streak_grids_fill_the_device():
    from pc_gpu.kernels.streak_cuda import _grid

    for extent, threads in (((412, 309), (16, 16)), ((2,), (128,)), ((7, 5), (8, 8)), ((37, 77, 8), (32, 4, 1))):
        blocks = _grid(extent, threads, 128)
        assert np.prod(blocks) >= 128
        assert all(b * t >= n for b, t, n in zip(blocks, threads, extent))


@pytest.mark.gpu
def test_cuda_kernels_on_gpu_match_cpu_full_frame():
    from pc_gpu.backend import get_backend, gpu_problem

    problem = gpu_problem()
    if problem is not None:
        pytest.skip(f"no usable GPU: {problem}")
    inp = make_inputs(2472, 3296, n_stars=3000, seed=1)
    compare(run_all(get_backend("gpu"), inp), run_all(get_backend("cpu"), inp))


def record_full_frame_launches():
    """Run the launchers on a full frame with DEVICE_POLICY and kernels that only record."""
    from pc_gpu.backend import Backend
    from pc_gpu.kernels import cuda as kc

    class NoLaunch:
        def __init__(self, name):
            self.__name__ = name

        def __getitem__(self, config):
            return lambda *args: None

    for name in ("_detrend_k", "_gather_k", "_sky_level1_k", "_sky_level2_k", "_sky_sums_k", "_recentroid_k",
                 "_photometry_k", "_moments_k"):
        setattr(kc, name, NoLaunch(name))
    kernels = kc.CudaKernels(np, policy=kc.DEVICE_POLICY)
    inp = make_inputs(2472, 3296, n_stars=3000, seed=1)
    inp["raw"][:] = 1000  # the recorded kernels compute nothing: give the host code a flat frame
    run_all(Backend("gpu-sim", np, kernels), inp)
    return list(kernels.launches)


if __name__ == "__main__":
    from pc_gpu.backend import get_backend

    if sys.argv[1] == "--launches":
        for name, blocks, threads in record_full_frame_launches():
            sys.stdout.write(f"launch {name} {blocks} {threads}\n")
    else:
        # optional NY NX N_STARS: e.g. a full frame, 2472 3296 3000 (minutes in the simulator)
        size = [int(v) for v in sys.argv[2:5]]
        inp = make_inputs(*size[:2], n_stars=size[2], seed=1) if size else make_inputs()
        be = get_backend("gpu")
        result = run_all(be, inp)
        if be.name == "gpu-sim" and size:
            compare(result, run_all(get_backend("cpu"), inp))
            sys.stdout.write(f"{size}: simulated CUDA kernels agree with the CPU kernels\n")
        np.savez(sys.argv[1], backend=np.array(be.name), **result)
