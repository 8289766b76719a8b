"""Plate solving (`pc_gpu.astrometry`), against the simulator's truth: star detection (CPU and
the CUDA simulator), pattern data, verification, the solver on awkward frames and on frames it
must refuse, and `--solve` in pc-proc.

The figures over hundreds of frames (success rate, accuracy, speed) are benchmarks/bench_solve.py's;
these are a few frames of the same kinds. Tolerances: the solution must map every point of the
frame within 0.5 pixel of the truth (the issue's requirement; the solver's own scatter is about
0.2 pixel at the corners), detections lie within 1 pixel of their star (centroid scatter about
0.2 pixel).
"""

import os
import shutil
import subprocess
import sys

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from pc_gpu.astrometry import patterns
from pc_gpu.astrometry.detect import detect_stars
from pc_gpu.astrometry.frame import check_given_wcs, frame_astrometry
from pc_gpu.astrometry.solve import NoSolution, solve_detections, solve_frame
from pc_gpu.astrometry.tan import tangent_plane
from pc_gpu.astrometry.verify import verify_wcs
from pc_gpu.camera import EL_NINO
from pc_gpu.cli import main
from pc_gpu.sim import Region, make_calibrations
from pc_gpu.sim.solvecases import (detrended_image, random_solve_frame, scrambled_catalogue, starless_frame)

GRID = np.meshgrid(np.linspace(0, EL_NINO.nx - 1, 12), np.linspace(0, EL_NINO.ny - 1, 9))


def max_error_pix(solved, truth):
    """Largest distance (pixels) between where the two WCSs put the sky under a grid over the frame."""
    gx, gy = (g.ravel() for g in GRID)
    ra, dec = truth.all_pix2world(gx, gy, 0)
    x, y = solved.all_world2pix(ra, dec, 0)
    return float(np.max(np.hypot(x - gx, y - gy)))


@pytest.fixture(scope="module")
def calibrations():
    return make_calibrations(EL_NINO, seed=0)


@pytest.fixture(scope="module")
def demo(demo_field):
    """(RawFrame, detrended image, given WCS, truth table) of the full-size demo frame."""
    from pc_gpu.pipeline import Reducer, RunOptions

    reducer = Reducer(RunOptions(device="cpu", solve="never"), meta_dir=demo_field.meta_dir,
                      gaia_dir=demo_field.gaia_dir)
    frame, wcs = reducer.load(demo_field.raw)
    from pc_gpu.detrend import detrend

    image = np.empty(EL_NINO.shape, np.float32)
    detrend(frame.image, reducer.calibrations, frame.exptime_s, reducer.backend, out=image)
    return frame, image, wcs, fitsio.read(demo_field.truth, ext="TRUTH")


@pytest.fixture(scope="module")
def demo_stars(demo):
    return detect_stars(demo[1])


def test_detected_stars_are_the_simulated_stars(demo, demo_stars):
    truth = demo[3]
    bright = slice(0, 200)
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(np.column_stack([truth["X"], truth["Y"]])).query(
        np.column_stack([demo_stars.x[bright], demo_stars.y[bright]]))
    assert np.mean(dist < 1.0) >= 0.97
    ok = dist < 1.0
    assert np.sqrt(np.mean(dist[ok] ** 2)) < 0.35
    # brightest first, and the brightest detections are bright stars
    assert np.all(np.diff(demo_stars.flux) <= 0)
    assert np.median(truth["PHOT_G_MEAN_MAG"][idx[:50]]) < np.median(truth["PHOT_G_MEAN_MAG"][idx[150:200]])


_CUDASIM_SCRIPT = """
import sys
import numpy as np
from pc_gpu.astrometry.detect import detect_stars
from pc_gpu.backend import get_backend
be = get_backend("gpu")
assert be.name == "gpu-sim", be.name
d = detect_stars(be.asarray(np.load(sys.argv[1])), be)
np.savez(sys.argv[2], x=d.x, y=d.y, flux=d.flux, noise=d.noise_adu)
"""


def test_detection_cpu_and_cuda_simulator_agree(demo, demo_stars, tmp_path):
    """The same kernels through numba's CUDA simulator on a 96 x 160 cut of the demo frame
    (with NaN pixels) find the same stars, bit for bit."""
    x0, y0 = int(demo_stars.x[5]) - 80, int(demo_stars.y[5]) - 48
    cut = np.array(demo[1][max(y0, 0):max(y0, 0) + 96, max(x0, 0):max(x0, 0) + 160])
    cut[10, 20:23] = np.nan
    np.save(tmp_path / "cut.npy", cut)
    proc = subprocess.run([sys.executable, "-W", "error", "-c", _CUDASIM_SCRIPT, str(tmp_path / "cut.npy"),
                           str(tmp_path / "sim.npz")], env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = detect_stars(cut)
    assert len(cpu) >= 2
    with np.load(tmp_path / "sim.npz") as sim:
        for name in ("x", "y", "flux"):
            np.testing.assert_array_equal(sim[name], getattr(cpu, name), err_msg=name)
        assert float(sim["noise"]) == cpu.noise_adu


def test_verification_accepts_the_true_wcs_and_rejects_a_wrong_one(demo, demo_stars, demo_field):
    _, _, wcs, _ = demo
    good = verify_wcs(demo_stars, wcs, demo_field.gaia_dir, EL_NINO.shape)
    assert good.ok and good.n_matched >= 200 and good.rms_pix < 0.5 and good.log10_false_alarm < -50
    for change in ({"crpix": (6.0, 0.0)}, {"rotate_deg": 1.0}):
        bad = wcs.deepcopy()
        if "crpix" in change:
            bad.wcs.crpix = bad.wcs.crpix + np.array(change["crpix"])
        else:
            t = np.radians(change["rotate_deg"])
            bad.wcs.cd = bad.wcs.cd @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        check = verify_wcs(demo_stars, bad, demo_field.gaia_dir, EL_NINO.shape)
        assert not check.ok and check.n_matched < 12, change


def test_solves_awkward_frames_near_and_far_from_the_header_pointing(sim_gaia_dir, calibrations, demo, demo_field):
    """Random pointing and rotation, scale off by up to 3%, thin cloud, moonlit sky, dome,
    streaks, SIP distortion: with the header pointing 0.5 and 5 deg off, and with none."""
    for seed, hint_error in ((11, 0.5), (12, 5.0)):
        case = random_solve_frame(sim_gaia_dir, seed, calibrations=calibrations, radius_deg=1.5,
                                  hint_error_deg=hint_error)
        result = solve_frame(detrended_image(case.frame), gaia_dir=sim_gaia_dir, ra_hint=case.hint[0],
                             dec_hint=case.hint[1])
        assert max_error_pix(result.wcs, case.frame.wcs) < 0.5, (seed, case.conditions)
        assert result.near_hint and result.n_matched >= 100
        assert abs(result.pixscale_arcsec / case.pixscale_arcsec - 1) < 2e-4
    blind = solve_frame(demo[1], gaia_dir=demo_field.gaia_dir)
    assert max_error_pix(blind.wcs, demo[2]) < 0.5 and not blind.near_hint


def test_no_solution_without_stars_or_with_the_wrong_catalogue(sim_gaia_dir, calibrations, demo_stars, tmp_path):
    for clouded in (False, True):
        frame = starless_frame(sim_gaia_dir, 3, calibrations=calibrations, clouded=clouded)
        with pytest.raises(NoSolution, match="no solution"):
            solve_frame(detrended_image(frame), gaia_dir=sim_gaia_dir, ra_hint=150.0, dec_hint=30.0)
    wrong = scrambled_catalogue(sim_gaia_dir, tmp_path / "wrong", Region(150.0, 30.0, 6.0))
    for hint in ((150.0, 30.0), (None, None)):
        with pytest.raises(NoSolution, match="none verified"):
            solve_detections(demo_stars, EL_NINO.shape, gaia_dir=str(wrong), ra_hint=hint[0], dec_hint=hint[1])


def test_tan_sip_fit_recovers_the_distortion_and_its_astropy_wcs_maps_alike():
    from astropy.wcs import WCS

    from pc_gpu.astrometry.tansip import fit_tan_sip
    from pc_gpu.sim.simulate import make_wcs

    truth = WCS(make_wcs(210.0, -40.0, 75.0, EL_NINO, sip=True))
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, EL_NINO.nx - 1, 300), rng.uniform(0, EL_NINO.ny - 1, 300)
    ra, dec = truth.all_pix2world(x, y, 0)
    sol = fit_tan_sip(x, y, ra, dec, crpix=EL_NINO.centre, crval=(210.01, -40.01), order=3, shape=EL_NINO.shape)
    wcs = sol.to_wcs()
    gx, gy = (g.ravel() for g in GRID)
    gra, gdec = truth.all_pix2world(gx, gy, 0)
    # noiseless stars, a third-order truth: the fit (forward, and AP/BP back) is exact to ~1e-4 pix
    assert max_error_pix(wcs, truth) < 1e-3
    x_back, y_back = sol.sky_to_pixel(gra, gdec)
    assert np.max(np.hypot(x_back - gx, y_back - gy)) < 1e-3
    # the astropy WCS is the same solution: forward, and the inverse SIP (AP, BP) it carries
    # (sip_foc2pix takes offsets from the 0-indexed CRPIX with origin 1 and returns 1-indexed pixels)
    sky = np.array(wcs.all_pix2world(gx, gy, 0))
    np.testing.assert_allclose(sky, np.array(sol.pixel_to_sky(gx, gy)), rtol=0, atol=1e-11)
    crpix0 = wcs.wcs.crpix - 1
    focal = wcs.wcs_world2pix(np.column_stack([gra, gdec]), 0)
    np.testing.assert_allclose(wcs.sip_foc2pix(focal - crpix0, 1).T - 1, np.array([x_back, y_back]),
                               rtol=0, atol=1e-8)


def test_pattern_data_are_cached_and_rebuilt_when_the_tree_changes(sim_gaia_dir, tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in sorted(os.listdir(sim_gaia_dir))[:12]:
        shutil.copy(os.path.join(sim_gaia_dir, name), tree)
    params = patterns.pattern_params((450, 600), EL_NINO.pixel_scale_arcsec)
    monkeypatch.setenv("PC_GPU_CACHE_DIR", str(tmp_path / "cache"))
    first = patterns.load_patterns(str(tree), params)
    cached = os.listdir(tmp_path / "cache" / "patterns")
    assert len(cached) == 1 and cached[0].endswith(".npz") and len(first.quads) > 100
    # a quad's code is that of its stars' positions, whatever order they are given in
    x, y = tangent_plane(first.ra[first.quads[:50]], first.dec[first.quads[:50]],
                         first.ra[first.quads[:50, 0]][:, None], first.dec[first.quads[:50, 0]][:, None])
    codes, _ = patterns.quad_codes(x[:, [1, 0, 3, 2]], y[:, [1, 0, 3, 2]])
    np.testing.assert_allclose(codes, first.codes[:50], atol=2e-3)
    patterns._LOADED.clear()

    def no_build(*args):
        raise AssertionError("pattern data were rebuilt")

    monkeypatch.setattr(patterns, "build_patterns", no_build)
    again = patterns.load_patterns(str(tree), params)
    np.testing.assert_array_equal(again.codes, first.codes)
    monkeypatch.undo()
    monkeypatch.setenv("PC_GPU_CACHE_DIR", str(tmp_path / "cache"))
    os.remove(tree / sorted(os.listdir(tree))[0])  # the tree changes: built afresh
    changed = patterns.load_patterns(str(tree), params)
    assert len(changed.ra) < len(first.ra)
    assert len(os.listdir(tmp_path / "cache" / "patterns")) == 2


def test_frame_astrometry_replaces_a_failing_wcs_and_keeps_it_when_unsolvable(demo, demo_field, sim_gaia_dir,
                                                                              calibrations):
    from pc_gpu.backend import get_backend

    frame, image, wcs, _ = demo
    be = get_backend("cpu")
    shifted = wcs.deepcopy()
    shifted.wcs.crpix = shifted.wcs.crpix + np.array([30.0, -20.0])
    always = frame_astrometry(frame, wcs, image, mode="always", gaia_dir=demo_field.gaia_dir, camera=EL_NINO,
                              backend=be)
    assert always.origin == "solved" and always.solve is not None and max_error_pix(always.wcs, wcs) < 0.5
    kept = frame_astrometry(frame, wcs, image, mode="auto", gaia_dir=demo_field.gaia_dir, camera=EL_NINO,
                            backend=be)
    assert (kept.origin, kept.verified, kept.solve) == ("given", True, None) and kept.wcs is wcs
    fixed = frame_astrometry(frame, shifted, image, mode="auto", gaia_dir=demo_field.gaia_dir, camera=EL_NINO,
                             backend=be)
    assert fixed.origin == "solved" and max_error_pix(fixed.wcs, wcs) < 0.5
    cards = dict((k, v) for k, v, _ in fixed.header_cards())
    assert cards["WCSORIG"] == "solved" and cards["WCSVERIF"] is True and "SOLVTIME" in cards
    assert "WCSORIG" not in dict((k, v) for k, v, _ in fixed.header_cards(origin=False))
    starless = starless_frame(sim_gaia_dir, 4, calibrations=calibrations)
    unverified = frame_astrometry(frame, wcs, detrended_image(starless), mode="auto", gaia_dir=demo_field.gaia_dir,
                                  camera=EL_NINO, backend=be)
    assert (unverified.origin, unverified.verified) == ("given", False) and unverified.wcs is wcs


def test_given_wcs_checked_on_the_image_centre(demo, demo_field):
    """The quick check of a given .wcs (the central CHECK_WINDOW pixels square, the stars the pipeline
    predicts there) passes the true WCS and fails one shifted by 30 pix or turned by 1 deg."""
    from pc_gpu.backend import get_backend
    from pc_gpu.gaia import field_healpix, read_gaia_chunks, star_list

    frame, image, wcs, _ = demo
    be = get_backend("cpu")

    def check(w):
        stars = star_list(read_gaia_chunks(demo_field.gaia_dir, field_healpix(w, EL_NINO)), w, EL_NINO,
                          frame.exptime_s)
        return check_given_wcs(image, stars, EL_NINO, be)

    good = check(wcs)
    assert good.ok and good.n_matched >= 50 and good.rms_pix < 1.0
    shifted, turned = wcs.deepcopy(), wcs.deepcopy()
    shifted.wcs.crpix = shifted.wcs.crpix + np.array([30.0, 0.0])
    angle = np.radians(1.0)
    turned.wcs.cd = turned.wcs.cd @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for bad in (shifted, turned):
        result = check(bad)
        assert not result.ok and result.n_matched < good.n_matched / 3, result.reason


def _summary_header(outdir):
    name = next(n for n in os.listdir(outdir) if n.endswith("-summary.fits"))
    return fitsio.read_header(os.path.join(outdir, name)), fitsio.read(os.path.join(outdir, name), ext="CATALOG")


def test_pc_proc_solve_modes(demo_field, sim_gaia_dir, calibrations, tmp_path, caplog):
    """auto solves a frame without .wcs (its stars land where the simulator put them); never
    refuses it; always does not read the .wcs; a frame with no star is an error, not a guess."""
    raw = tmp_path / "raw" / os.path.basename(demo_field.raw)
    raw.parent.mkdir()
    shutil.copy(demo_field.raw, raw)
    common = ["--device", "cpu", "--meta_dir", demo_field.meta_dir, "--gaia_dir", demo_field.gaia_dir,
              "--skip_checkplot", "--dont_write_detrended"]
    assert main([str(raw), "--outdir", str(tmp_path / "never"), "--solve", "never", *common]) == 1
    assert not (tmp_path / "never").exists()
    assert main([str(raw), "--outdir", str(tmp_path / "auto"), *common]) == 0
    header, catalog = _summary_header(tmp_path / "auto")
    assert (header["WCSORIG"], header["WCSVERIF"]) == ("solved", True) and header["WCSNMAT"] >= 100
    assert header["CTYPE1"] == "RA---TAN-SIP"  # the solved and refined WCS, in the primary header
    truth = fitsio.read(demo_field.truth, ext="TRUTH")
    by_id = {s: i for i, s in enumerate(truth["SOURCE_ID"])}
    rows = np.array([by_id[s] for s in catalog["SOURCE_ID"]])
    dx = catalog["x_gaia_guess"] - truth["X"][rows]
    dy = catalog["y_gaia_guess"] - truth["Y"][rows]
    assert len(rows) > 1000 and np.max(np.hypot(dx, dy)) < 0.5
    # with --solve always the .wcs is not even read (a wrong one changes nothing); never modified
    wrong = fits.getheader(demo_field.wcs)
    wrong["CRPIX1"] += 40.0
    wrong.tofile(str(raw)[:-5] + ".wcs")
    from pc_gpu.pipeline import Reducer, RunOptions

    for mode, expected in (("always", None), ("auto", 40.0 + fits.getheader(demo_field.wcs)["CRPIX1"])):
        _, given = Reducer(RunOptions(solve=mode, device="cpu"), meta_dir=demo_field.meta_dir).load(str(raw))
        assert (given if given is None else given.wcs.crpix[0]) == expected, mode
    # no star: exit 1, the file named, nothing written
    from pc_gpu.sim import write_frame

    starless = starless_frame(sim_gaia_dir, 5, calibrations=calibrations)
    paths = write_frame(starless, str(tmp_path / "dark"))
    os.remove(paths.wcs)
    assert main([paths.raw, "--outdir", str(tmp_path / "none"), *common]) == 1
    assert f"{paths.raw}: no solution" in caplog.text
    assert not (tmp_path / "none").exists() or not os.listdir(tmp_path / "none")
