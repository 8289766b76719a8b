"""Streak measurements (issue 13): the profile fit across a streak (width and brightness per
pixel of length, with calibrated errors), the line refined on the streak's pixels, ends on the
frame edge at the boundary crossing (corner pieces included), ends next to a faint star or
inside a cell masked as a steep gradient, and a faint streak beside a very bright star.
(The whole detector on CPU and CUDA-simulator kernels: benchmarks/check_streaks_cudasim.py.)"""

import math

import numpy as np
import pytest

from pc_gpu.sim import make_calibrations, simulate_frame
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA
from pc_gpu.sim.streaks import render_streaks, streak_truth
from pc_gpu.streaks import detect_streaks, match_streaks
from pc_gpu.streaks.ends import line_extent, snap_to_edges
from pc_gpu.streaks.measure import FWHM_PER_SIGMA, fit_line, fit_profile

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


def test_line_fit_recovers_offset_and_angle():
    # a 200-pix piece of a streak (FWHM 2.5, SNR100 ~30) whose band is gathered about a line
    # 0.4 pix off at its middle and turned by 0.2 deg, the last 60 columns cut in half as by a
    # frame edge: the fitted line must land on the truth to within its expected scatter
    sigma, flux, noise, angle = 2.5 / FWHM_PER_SIGMA, 14.0, 4.0, 21.0
    img = np.zeros((200, 400))
    a = math.radians(angle)
    render_streaks(img, streak_truth([(200 - 300 * math.cos(a), 100 - 300 * math.sin(a),
                                       200 + 300 * math.cos(a), 100 + 300 * math.sin(a), sigma, flux)],
                                     img.shape))
    cols = np.arange(100, 301)
    slope_true, slope = math.tan(a), math.tan(a + math.radians(0.2))
    icpt = 100 - slope * 200 + 0.4 * math.sqrt(1 + slope * slope)  # 0.4 pix across at x = 200
    centre = icpt + slope * cols
    rows = np.rint(centre)[:, None].astype(np.int64) + np.arange(-14, 15)[None, :]
    cosphi = 1.0 / math.sqrt(1.0 + slope * slope)
    d = (rows - centre[:, None]) * cosphi
    values = img[rows, np.broadcast_to(cols[:, None], rows.shape)]
    values = np.where((cols[:, None] > 240) & (d < 0), np.nan, values)
    rng = np.random.default_rng(3)
    errs = []
    for _ in range(30):
        v = values + rng.normal(0.5, noise, values.shape)
        fit = fit_profile(v, d, slope=slope, sigma0=1.2)
        off, dslope = fit_line(v, d, cols, fit, slope=slope)
        new_icpt, new_slope = icpt + off / cosphi, slope + dslope / cosphi
        # the fitted line's offset from the truth across it at both ends of the piece
        errs.append([(new_icpt + new_slope * x - (100 + slope_true * (x - 200))) * math.cos(a) for x in (100, 300)])
    errs = np.array(errs)
    # expected scatter at the ends: a weighted line fit with Fisher information per pixel of
    # length I = (flux / noise)^2 / (4 sqrt(pi) s^3) (a Gaussian profile of s^2 = sigma^2 + 1/12,
    # the pixel footprint, in white noise), half that where half the profile is cut
    s_eff = math.sqrt(sigma ** 2 + 1.0 / 12.0)
    t = (cols - 200) / math.cos(a)
    w = (flux / noise) ** 2 / (4 * math.sqrt(math.pi) * s_eff ** 3) / math.cos(a) * np.where(cols > 240, 0.5, 1.0)
    tm = np.sum(w * t) / np.sum(w)
    sd = np.sqrt(1 / np.sum(w) + (t[[0, -1]] - tm) ** 2 / np.sum(w * (t - tm) ** 2))  # ~0.12, 0.15 pix
    assert np.all(np.abs(errs.mean(axis=0)) < 4 * sd / math.sqrt(len(errs))), (errs.mean(axis=0), sd)
    # 30 draws: a standard deviation to ~13%
    assert np.all(errs.std(axis=0) < 1.4 * sd), (errs.std(axis=0), sd)


def test_corner_pieces_end_on_the_edge_at_the_crossing():
    # two short pieces cutting the corners of a small white-noise frame, each crossing one edge
    # at 15 deg (where the line's error across it is multiplied by 1 / sin 15 deg = 3.9 along
    # the edge) and the other steeply; SNR100 100 over ~110 pix: the best possible crossing on
    # the shallow edge is uncertain by ~0.1 pix (benchmarks/bench_streaks.py, edge_crossing_sd)
    from pc_gpu.backend import get_backend

    ny, nx, noise = 240, 320, 20.0
    rows = []
    for fwhm, (x_edge, y_edge), ang in ((3.5, (-0.5, 120.0), 75.0), (2.0, (319.5, 150.0), -105.0)):
        s = fwhm / FWHM_PER_SIGMA
        a = math.radians(ang)
        flux = 100 * math.sqrt(noise ** 2 * 2 * math.sqrt(math.pi) * s) / 10.0  # SNR100 100, t = 1 s
        # from 40 pix outside the shallow edge's crossing, through the frame and out at the next edge
        rows.append((x_edge - 40 * math.cos(a), y_edge + 40 * math.sin(a),
                     x_edge + 200 * math.cos(a), y_edge - 200 * math.sin(a), s, flux))
    truth = streak_truth(rows, (ny, nx))
    img = np.zeros((ny, nx))
    render_streaks(img, truth)
    img = (img + 500.0 + np.random.default_rng(11).normal(0.0, noise, img.shape)).astype(np.float32)
    res = detect_streaks(img, None, np.zeros(0), np.zeros(0), np.zeros(0), exptime_s=1.0,
                         backend=get_backend("cpu"))
    match = match_streaks(res.table, [r[:4] for r in rows], img.shape)
    assert min(match) >= 0 and len(res.table) == 2, res.table
    for t, k in zip(truth, match):
        d = res.table[k]
        assert t["EDGE0"] and t["EDGE1"] and d["n_ends_at_edge"] == 2
        for x, y in ((t["CLIP_X0"], t["CLIP_Y0"]), (t["CLIP_X1"], t["CLIP_Y1"])):
            err = min(math.hypot(d["x0"] - x, d["y0"] - y), math.hypot(d["x1"] - x, d["y1"] - y))
            assert err <= 0.5, (t, d, err)


def _streak_on_noise(shape, x0, y0, x1, y1, fwhm, snr100, noise=20.0, seed=0, extra=None):
    """A white-noise image (sky 500, t = 1 s) with one simulated streak of the given SNR100,
    `extra` (an image) added; returns the image and the streak's truth row."""
    s = fwhm / FWHM_PER_SIGMA
    flux = snr100 * math.sqrt(noise ** 2 * 2 * math.sqrt(math.pi) * s) / 10.0
    truth = streak_truth([(x0, y0, x1, y1, s, flux)], shape)
    img = np.zeros(shape)
    render_streaks(img, truth)
    if extra is not None:
        img += extra
    img += 500.0 + np.random.default_rng(seed).normal(0.0, noise, shape)
    return img.astype(np.float32), truth[0]


def _end_errors(res, t):
    """Distances (pix) of the detected ends from the true ends of streak `t`."""
    assert len(res.table) == 1, res.table
    d = res.table[0]
    return [min(math.hypot(d["x0"] - x, d["y0"] - y), math.hypot(d["x1"] - x, d["y1"] - y))
            for x, y in ((t["X0"], t["Y0"]), (t["X1"], t["Y1"]))]


def test_end_on_a_faint_star():
    # a bright streak (SNR100 100) whose end lies 5 pix past a faint catalogue star on its line
    # (peak 3 sigma): the star's pixel mask is 2 pix, so the data still show where the streak
    # stops (a 4-pix mask hid the end, which then landed mid-mask, ~5 pix off)
    from pc_gpu.backend import get_backend

    shape = (200, 300)
    a = math.radians(10.0)
    x1, y1 = 220.0, 100.0
    sx, sy = x1 - 5 * math.cos(a), y1 - 5 * math.sin(a)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    star_flux, star_sigma = 300.0, 0.85
    star = star_flux / (2 * np.pi * star_sigma ** 2) * np.exp(-0.5 * ((xx - sx) ** 2 + (yy - sy) ** 2) / star_sigma ** 2)
    img, t = _streak_on_noise(shape, x1 - 150 * math.cos(a), y1 - 150 * math.sin(a), x1, y1, 2.0, 100,
                              seed=5, extra=star)
    res = detect_streaks(img, None, np.array([sx]), np.array([sy]), np.array([star_flux]), exptime_s=1.0,
                         backend=get_backend("cpu"))
    # the ideal end at SNR100 100 is good to a fraction of a pixel
    assert max(_end_errors(res, t)) <= 1.5, (res.table, _end_errors(res, t))


def test_end_in_a_cell_masked_as_a_steep_gradient():
    # a bright streak ending in the middle of a 32 x 32 cell whose sky is 10 ADU (two standard
    # deviations of its 4 x 4 block means) above its neighbours': the cell and its neighbours are
    # masked for detection as a steep gradient, but the end is still cut from the data (it was
    # hidden, landing ~20 pix off)
    from pc_gpu.backend import get_backend

    shape = (240, 320)
    step = np.zeros(shape)
    step[96:128, 128:160] = 10.0
    img, t = _streak_on_noise(shape, 20.0, 60.0, 144.0, 112.0, 3.0, 100, seed=6, extra=step)
    res = detect_streaks(img, None, np.zeros(0), np.zeros(0), np.zeros(0), exptime_s=1.0,
                         backend=get_backend("cpu"))
    assert max(_end_errors(res, t)) <= 1.5, (res.table, _end_errors(res, t))


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


def _bench_frame(sim_gaia_dir, seed, streaks):
    """A full-size frame of the streak benchmark (bench_streaks.py) and the detections on it."""
    from pc_gpu.backend import get_backend
    from pc_gpu.camera import EL_NINO

    cal = make_calibrations(EL_NINO, seed=0)
    fr = simulate_frame(sim_gaia_dir, DEMO_RA, DEMO_DEC, camera=EL_NINO, calibrations=cal, seed=seed,
                        streaks=streaks)
    img = ((fr.raw.astype(np.float32) - cal.bias - cal.dark * np.float32(T)) / cal.flat).astype(np.float32)
    tr = fr.truth
    tr = tr[(tr["PHOT_G_MEAN_MAG"] <= 15.16) & tr["IN_FRAME"]]
    res = detect_streaks(img, cal.mask, tr["X"], tr["Y"], tr["FLUX_ADU"], exptime_s=T,
                         backend=get_backend("cpu"))
    return fr, res, match_streaks(res.table, [s[:4] for s in streaks], img.shape)


def test_end_that_runs_on_to_the_edge_is_measured_out_to_it(sim_gaia_dir):
    # a bench frame (seed 2027, frame 33): an SNR100-10 streak leaves through the left edge
    # after 121 pix, beside bright stars. Its cut came out 4.6 pix inside the edge, and the
    # data let it run on to the edge, so it went there, but the line had been fitted only from
    # 3 pix past that cut: 0.60 pix off along the edge (an ideal line fit: 0.31 pix rms)
    streaks = [(88.98318730381264, 1052.1600538661028, -59.172928757700866, 1186.509468727379,
                0.8990466724060876, 1.2743176320153022),
               (2446.304, -96.448, -1545.010, 167.016, 0.8508840, 0.8678003),
               (2073.461, 742.640, 1819.803, 1051.926, 1.6386249, 0.8601939),
               (36.714, 2234.149, 79.618, 2324.478, 0.7803150, 0.8310355)]
    fr, res, match = _bench_frame(sim_gaia_dir, 101033, streaks)
    d, t = res.table[match[0]], fr.streaks[0]
    assert t["EDGE1"] and d["n_ends_at_edge"] == 1
    err = min(math.hypot(d["x0"] - t["CLIP_X1"], d["y0"] - t["CLIP_Y1"]),
              math.hypot(d["x1"] - t["CLIP_X1"], d["y1"] - t["CLIP_Y1"]))
    assert err < 0.5, err


def test_faint_streak_beside_a_very_bright_star_keeps_its_ends(sim_gaia_dir):
    # a bench frame (bench_streaks.py, seed 2026, frame 3): an SNR100-10 streak of 200 pix
    # across a G 6.3 star at (144, 713), and three other streaks. The sky offset measured
    # beside the star (half the pixel noise under the cells' map there) was once subtracted
    # along the whole line: the rest of the line read as a faint streak and both ends went
    # to the frame edges
    streaks = [(1859.195, 533.381, 983.092, 1015.504, 0.8817175, 3.7859299),
               (210.4387975233403, 634.8288828991801, 83.53915731615947, 789.4137505780318,
                1.5399941181377983, 1.6678081982308084),
               (219.657, 934.470, 956.553, 1610.476, 1.3346390, 0.7763159),
               (2726.795, 591.963, 1227.699, 1915.863, 0.7343674, 0.8061972)]
    _, res, match = _bench_frame(sim_gaia_dir, 1003, streaks)
    k = match[1]
    assert k >= 0
    d = res.table[k]
    assert d["n_ends_at_edge"] == 0
    x0, y0, x1, y1 = streaks[1][:4]
    for ex, ey in ((x0, y0), (x1, y1)):
        assert min(math.hypot(d["x0"] - ex, d["y0"] - ey), math.hypot(d["x1"] - ex, d["y1"] - ey)) < 10.0
