"""Streak measurements (issue 13): the profile fit across a streak (width and brightness per
pixel of length, with calibrated errors) and ends on the frame edge at the boundary crossing.
(The whole detector on CPU and CUDA-simulator kernels: benchmarks/check_streaks_cudasim.py.)"""

import math

import numpy as np
import pytest

from pc_gpu.sim import make_calibrations, simulate_frame
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA
from pc_gpu.sim.streaks import render_streaks, streak_truth
from pc_gpu.streaks import detect_streaks, match_streaks
from pc_gpu.streaks.ends import line_extent, snap_to_edges
from pc_gpu.streaks.measure import FWHM_PER_SIGMA, fit_profile

T = 20.0


def _band(image, cx, cy, angle_deg, half_length, half_width):
    """Band of pixels around the line through (cx, cy) (x-major), as the detector gathers it:
    values (ncol, 2k+1) and signed distances from the line."""
    slope = math.tan(math.radians(angle_deg))
    cols = np.arange(int(cx - half_length), int(cx + half_length) + 1)
    centre = cy + slope * (cols - cx)
    rows = np.rint(centre)[:, None].astype(np.int64) + np.arange(-half_width, half_width + 1)[None, :]
    d = (rows - centre[:, None]) / math.sqrt(1.0 + slope * slope)
    return image[rows, np.broadcast_to(cols[:, None], rows.shape)], d, slope


@pytest.mark.parametrize("fwhm, angle", [(1.5, 8.0), (2.5, 31.0), (4.0, 44.0)])
def test_profile_fit_is_unbiased_with_calibrated_errors(fwhm, angle):
    # a streak rendered by the simulator (pixel-integrated Gaussian across), 40 noise draws of
    # a 140-pix piece at SNR100 ~ 40: flux and width must be unbiased and their error bars
    # must describe the scatter
    sigma, flux, noise = fwhm / FWHM_PER_SIGMA, 30.0, 4.0
    img = np.zeros((200, 400))
    a = math.radians(angle)
    render_streaks(img, streak_truth([(200 - 300 * math.cos(a), 100 - 300 * math.sin(a),
                                       200 + 300 * math.cos(a), 100 + 300 * math.sin(a), sigma, flux)],
                                     img.shape))
    values, d, slope = _band(img, 200, 100, angle, 70, 14)
    rng = np.random.default_rng(int(fwhm * 10))
    fits = [fit_profile(values + rng.normal(0.5, noise, values.shape), d, slope=slope, sigma0=1.2)
            for _ in range(40)]
    f = np.array([(q.flux, q.flux_err, q.fwhm, q.fwhm_err) for q in fits])
    pull_f, pull_w = (f[:, 0] - flux) / f[:, 1], (f[:, 2] - fwhm) / f[:, 3]
    # means within 4 standard errors of the truth (and within 2%)
    for vals, truth in ((f[:, 0], flux), (f[:, 2], fwhm)):
        sem = np.std(vals) / math.sqrt(len(vals))
        assert abs(np.mean(vals) - truth) < min(4 * sem + 1e-3 * truth, 0.02 * truth), (vals, truth)
    # error bars: pulls with unit scatter (40 draws: the sd itself is uncertain by ~11%)
    for pull in (pull_f, pull_w):
        assert 0.65 < np.std(pull) < 1.4, pull


def test_profile_fit_gives_up_on_too_few_pixels():
    assert fit_profile(np.ones((3, 5)), np.zeros((3, 5)), slope=0.0, sigma0=1.0) is None


def test_snap_to_edges():
    # line minor = 20 + 0.1 * major on a 300 (major) x 100 (minor) frame: it crosses the minor
    # edge -0.5 at major -205 (outside), so it enters through the major edge -0.5, and leaves
    # through the minor edge 99.5 at major 795 (outside) -> the major edge 299.5
    m_lo, m_hi, lo, hi = line_extent(20.0, 0.1, (300, 100))
    assert (m_lo, m_hi, lo, hi) == (-0.5, 299.5, (0, -0.5), (0, 299.5))
    # steeper: leaves through the minor edge 99.5 at major 795 / 4 = 198.75
    m_lo, m_hi, lo, hi = line_extent(20.0, 0.4, (300, 100))
    assert m_hi == pytest.approx(198.75) and hi == (1, 99.5)
    # an end 2 pix (in the minor coordinate) inside that edge is on it; one 6 pix inside is not
    assert snap_to_edges(1.0, 193.75, 20.0, 0.4, (300, 100), 3.5) == (-0.5, 198.75, 2)
    assert snap_to_edges(10.0, 183.75, 20.0, 0.4, (300, 100), 3.5) == (10.0, 183.75, 0)
    # nothing but masked pixels between an end and the edge: on the edge too
    assert snap_to_edges(50.0, 150.0, 20.0, 0.4, (300, 100), 3.5, (True, False)) == (-0.5, 150.0, 1)


@pytest.fixture(scope="module")
def edge_frames(sim_gaia_dir, small_camera):
    """Two small frames (600 x 450) with bright streaks of FWHM 1.5-4 pix leaving the frame
    through row and column edges, and detections on them."""
    from pc_gpu.backend import get_backend

    cal = make_calibrations(small_camera, seed=0)
    var = (small_camera.dark_sky_adu_per_s + small_camera.dark_adu_per_s) * T / small_camera.gain_e_per_adu \
        + float(np.mean(small_camera.read_noise_adu)) ** 2

    def streak(x0, y0, x1, y1, fwhm, snr100):
        s = fwhm / FWHM_PER_SIGMA
        return (x0, y0, x1, y1, s, snr100 * math.sqrt(var * 2 * math.sqrt(math.pi) * s) / (10.0 * T))

    layouts = [
        # edge to edge through both column edges; out through the top row edge at a shallow
        # angle; out through the bottom row edge, steep
        [streak(-100, 300, 700, 380, 2.5, 60), streak(150, 400, 900, 520, 1.5, 40),
         streak(480, 250, 560, -300, 4.0, 40)],
        # out through the left column edge; edge to edge through the top and bottom rows;
        # out through the right column edge, shallow
        [streak(200, 80, -300, 200, 4.0, 40), streak(250, -50, 330, 600, 2.0, 50),
         streak(420, 330, 900, 420, 3.0, 40)],
    ]
    runs = []
    for k, streaks in enumerate(layouts):
        fr = simulate_frame(sim_gaia_dir, DEMO_RA, DEMO_DEC, camera=small_camera, calibrations=cal,
                            seed=700 + k, streaks=streaks)
        img = ((fr.raw.astype(np.float32) - cal.bias - cal.dark * np.float32(T)) / cal.flat).astype(np.float32)
        tr = fr.truth
        tr = tr[(tr["PHOT_G_MEAN_MAG"] <= 15.16) & tr["IN_FRAME"]]
        res = detect_streaks(img, cal.mask, tr["X"], tr["Y"], tr["FLUX_ADU"], exptime_s=T,
                             backend=get_backend("cpu"))
        runs.append((fr, res, match_streaks(res.table, [s[:4] for s in streaks], img.shape)))
    return runs


def test_ends_on_the_frame_edge_at_the_boundary_crossing(edge_frames):
    n_edge = 0
    for fr, res, match in edge_frames:
        assert min(match) >= 0 and len(res.table) == len(match), (match, res.table)
        for t, k in zip(fr.streaks, match):
            d = res.table[k]
            assert d["n_ends_at_edge"] == int(t["EDGE0"]) + int(t["EDGE1"])
            for x, y, on_edge in ((t["CLIP_X0"], t["CLIP_Y0"], t["EDGE0"]),
                                  (t["CLIP_X1"], t["CLIP_Y1"], t["EDGE1"])):
                err = min(math.hypot(d["x0"] - x, d["y0"] - y), math.hypot(d["x1"] - x, d["y1"] - y))
                # the crossing of the fitted line with the boundary; an in-frame end at SNR100
                # >= 40 is within 3 pix (benchmarks/bench_streaks.py)
                assert err <= (0.5 if on_edge else 3.0), (t, d, err)
                n_edge += bool(on_edge)
    assert n_edge == 8


def test_measured_width_and_brightness(edge_frames):
    pulls = []
    for fr, res, match in edge_frames:
        for t, k in zip(fr.streaks, match):
            d = res.table[k]
            # SNR100 >= 40 over >= 180 pix: width to a few percent, flux to ~2%
            assert d["width_fwhm_pix"] == pytest.approx(t["FWHM_PIX"], rel=0.1)
            assert 0 < d["width_fwhm_err_pix"] < 0.1 * t["FWHM_PIX"]
            assert d["flux_adu_per_s_per_pix"] == pytest.approx(t["FLUX_ADU_PER_S_PER_PIX"], rel=0.08)
            assert d["sb_adu_per_s_per_pix2"] == pytest.approx(d["flux_adu_per_s_per_pix"] / d["width_fwhm_pix"])
            pulls.append((d["flux_adu_per_s_per_pix"] - t["FLUX_ADU_PER_S_PER_PIX"]) / d["flux_err_adu_per_s_per_pix"])
    # six streaks: error bars neither far too small nor far too large
    assert 0.2 < np.sqrt(np.mean(np.square(pulls))) < 2.5, pulls
