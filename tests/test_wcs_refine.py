"""WCS refinement and pointing telemetry (issue 14, items 1 and 3), against the simulator's truth.

A full-size frame is rendered with a TAN-SIP WCS (the truth) and given to the pipeline with a
.wcs that is wrong by about 1 pixel of shift, 0.1 deg of rotation, 0.5% of scale and a spurious
distortion: up to ~10 pixels at the corners, more than the recentroiding can reach.
"""

import dataclasses
import hashlib
import math
import os
import shutil
import warnings
from unittest import mock

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from pc_gpu.astrometry.pointing import POINTING_FIELDS, header_cards, pointing_record
from pc_gpu.astrometry.refine import MIN_STARS, refine_wcs, sip_order_for
from pc_gpu.astrometry.tan import from_tangent_plane, tangent_plane
from pc_gpu.camera import EL_NINO
from pc_gpu.cli import main
from pc_gpu.conditions import TELEMETRY_FIELDS as CONDITION_FIELDS
from pc_gpu.sim import make_demo_field
from pc_gpu.sim.night import DEMO_DEC, DEMO_RA
from pc_gpu.sim.perturb import perturb_wcs_header
from pc_gpu.sim.simulate import make_wcs
from pc_gpu.telemetry import TELEMETRY_FIELDS

ROTATION = 12.0
POINTING = (DEMO_RA + 0.02, DEMO_DEC - 0.01)  # header RADEG/DECDEG: the telescope's idea
PERTURBATION = dict(shift_pix=(0.7, -0.7), rotation_deg=0.1, scale_error=0.005, sip_pix=0.6)
KEY = "pc_refine"
# the seed's telemetry fields and the conditions' (issue 11): all but the pointing's
NON_POINTING_FIELDS = {f.format(inst="desi") for f in TELEMETRY_FIELDS} | set(CONDITION_FIELDS)


def _wcs(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy notes the SIP keywords of a header-only HDU
        return WCS(header)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def sip_field(sim_cache, sim_gaia_dir):
    """A full-size frame whose true WCS has SIP distortion, pointed 0.02 deg off its header."""
    return sim_cache.get("sip_field", lambda d: make_demo_field(
        d, seed=3, gaia_dir=sim_gaia_dir, sip=True, rotation_deg=ROTATION, pointing_ra_dec=POINTING))


@pytest.fixture(scope="module")
def runs(sip_field, tmp_path_factory, redis_server):
    """pc-proc on the true .wcs (unrefined), and on the perturbed .wcs with and without
    refinement (telemetry to Redis): {name: (outdir, telemetry hash)}, plus the perturbed raw."""
    root = tmp_path_factory.mktemp("refine")
    perturbed = root / "given" / os.path.basename(sip_field.raw)
    perturbed.parent.mkdir()
    shutil.copy(sip_field.raw, perturbed)
    given = perturb_wcs_header(fits.getheader(sip_field.wcs), **PERTURBATION)
    fits.PrimaryHDU(header=given).writeto(str(perturbed)[:-5] + ".wcs")
    before = _sha(str(perturbed)[:-5] + ".wcs")
    out = {}
    client = redis_server.client()
    # --no_wcs_refine with --solve never: the pipeline as it was before issue 14
    for name, raw, flags in (("true", sip_field.raw, ["--no_wcs_refine", "--solve", "never"]),
                             ("unrefined", perturbed, ["--no_wcs_refine", "--solve", "never"]),
                             ("refined", perturbed, [])):
        client.delete(KEY)
        outdir = root / name
        argv = [str(raw), "--device", "cpu", "--outdir", str(outdir), "--skip_checkplot", "--send_redis",
                "--meta_dir", sip_field.meta_dir, "--gaia_dir", sip_field.gaia_dir, *flags]
        with mock.patch.dict(os.environ, redis_server.environ(KEY)):
            assert main(argv) == 0
        out[name] = (str(outdir), client.hgetall(KEY))
    assert _sha(str(perturbed)[:-5] + ".wcs") == before, "the given .wcs is never modified"
    out["given_wcs"] = _wcs(given)
    return out


def _summary(outdir, ext):
    name = [n for n in os.listdir(outdir) if n.endswith("-summary.fits")][0]
    path = os.path.join(outdir, name)
    return fitsio.read(path, ext=ext), fits.getheader(path, extname=ext)


def _primary(outdir, kind="summary"):
    name = [n for n in os.listdir(outdir) if n.endswith(f"-{kind}.fits")][0]
    return fits.getheader(os.path.join(outdir, name), ext=0)


def _truth(field):
    truth = fitsio.read(field.truth, ext="TRUTH")
    return truth[truth["IN_FRAME"]], fitsio.read_header(field.truth, ext="TRUTH")


def _wcs_error_pix(wcs, truth):
    x, y = wcs.all_world2pix(truth["RA"], truth["DEC"], 0)
    return np.hypot(x - truth["X"], y - truth["Y"])


# ---------------------------------------------------------------- on a frame, end to end

def test_refined_wcs_maps_gaia_stars_onto_the_truth(runs, sip_field):
    truth, _ = _truth(sip_field)
    header = _primary(runs["refined"][0])
    refined = _wcs(header)
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["WCSORIG"] == "refined"
    # the given solution really is off (most stars beyond the recentroiding box), the refined
    # one within 0.05 pix over the whole field (centroid noise of ~300 stars, 20 terms a axis)
    assert np.median(_wcs_error_pix(runs["given_wcs"], truth)) > 2.0
    error = _wcs_error_pix(refined, truth)
    assert np.median(error) < 0.05 and np.percentile(error, 95) < 0.1
    # the detrended image carries the same WCS; the table HDUs only the pointing keywords
    detrended = _wcs(_primary(runs["refined"][0], "detrended"))
    corners = ([0, 3295, 0, 3295], [0, 0, 2471, 2471])
    np.testing.assert_allclose(detrended.all_pix2world(*corners, 0), refined.all_pix2world(*corners, 0),
                               rtol=0, atol=1e-10)
    _, zp_header = _summary(runs["refined"][0], "ZEROPOINTS")
    assert "CTYPE1" not in zp_header and zp_header["WCSORIG"] == "refined"


def test_centroids_and_zeropoints_then_match_those_of_the_true_wcs(runs):
    true_cat, _ = _summary(runs["true"][0], "CATALOG")
    cat, _ = _summary(runs["refined"][0], "CATALOG")
    ids, i, j = np.intersect1d(true_cat["SOURCE_ID"], cat["SOURCE_ID"], return_indices=True)
    assert len(ids) >= 0.99 * len(true_cat)
    d = np.hypot(true_cat["xcentroid"][i] - cat["xcentroid"][j], true_cat["ycentroid"][i] - cat["ycentroid"][j])
    # a refined guess within ~0.005 pix moves a faint star's centroid by at most that much
    assert np.median(d) < 0.005 and np.percentile(d, 99) < 0.05
    zp_true, _ = _summary(runs["true"][0], "ZEROPOINTS")
    zp, _ = _summary(runs["refined"][0], "ZEROPOINTS")
    zp_bad, _ = _summary(runs["unrefined"][0], "ZEROPOINTS")
    used = zp_true["n_sources_for_zp"] > 0
    assert used.sum() >= 40
    assert np.max(np.abs(zp["zp_adu_per_s"] - zp_true["zp_adu_per_s"])[used]) < 0.002
    # the wrong WCS unrefined loses the stars' light: the comparison above can fail
    assert np.median(np.abs(zp_bad["zp_adu_per_s"] - zp_true["zp_adu_per_s"])[used]) > 0.1


def test_pointing_keywords_and_telemetry(runs, sip_field):
    _, truth_header = _truth(sip_field)
    header = _primary(runs["refined"][0])
    scale = EL_NINO.pixel_scale_arcsec
    # one star's centroid scatters ~0.01-0.02 pix: the RMS is a fraction of an arcsec
    assert 0 < header["WCSRMSRA"] < 0.3 and 0 < header["WCSRMSDE"] < 0.3
    assert header["WCSNSTAR"] >= 100 and header["WCSORDER"] == 3
    # the field centre within 0.05 pix of the truth; the turn and scale to 0.05 pix at 2000 pix
    assert abs(header["FIELDRA"] - truth_header["RA"]) * math.cos(math.radians(DEMO_DEC)) * 3600 < 0.05 * scale
    assert abs(header["FIELDDEC"] - truth_header["DEC"]) * 3600 < 0.05 * scale
    assert abs(header["FIELDROT"] - ROTATION) < math.degrees(0.05 / 2000)
    assert abs(header["PIXSCALE"] / scale - 1) < 0.05 / 2000
    expected_ra = (truth_header["RA"] - POINTING[0]) * math.cos(math.radians(DEMO_DEC)) * 3600
    assert abs(header["PNTOFFRA"] - expected_ra) < 0.05 * scale and abs(expected_ra) > 50
    assert abs(header["PNTOFFDE"] - (truth_header["DEC"] - POINTING[1]) * 3600) < 0.05 * scale
    # telemetry: the seed's fields unchanged, then the same pointing numbers as the header
    hash_ = runs["refined"][1]
    assert set(hash_) == NON_POINTING_FIELDS | set(POINTING_FIELDS)
    for field, (keyword, _) in POINTING_FIELDS.items():
        if isinstance(header[keyword], str):
            assert hash_[field] == header[keyword]
        else:
            assert float(hash_[field]) == pytest.approx(header[keyword], rel=1e-9), field
    assert float(hash_["zp_adu_per_s"]) == pytest.approx(float(runs["true"][1]["zp_adu_per_s"]), abs=0.002)
    # the CONDITIONS table repeats the same numbers on every region's row
    conditions, _ = _summary(runs["refined"][0], "CONDITIONS")
    for field, (keyword, _) in POINTING_FIELDS.items():
        for value in conditions[field]:
            if isinstance(header[keyword], str):
                assert str(value) == header[keyword]
            else:
                assert value == pytest.approx(header[keyword], rel=1e-9), field


def test_no_wcs_refine_keeps_the_given_wcs(runs, sip_field):
    outdir, hash_ = runs["unrefined"]
    cat, _ = _summary(outdir, "CATALOG")
    x, y = runs["given_wcs"].all_world2pix(cat["RA"], cat["DEC"], 0)
    np.testing.assert_allclose(cat["x_gaia_guess"], x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cat["y_gaia_guess"], y, rtol=0, atol=1e-6)
    header = _primary(outdir)
    assert not {k for k, _ in POINTING_FIELDS.values()} & set(header)
    assert "CTYPE1" not in header and "CTYPE1" not in _primary(outdir, "detrended")
    assert set(hash_) == NON_POINTING_FIELDS
    refined_cat, _ = _summary(runs["refined"][0], "CATALOG")
    assert cat.dtype.names == refined_cat.dtype.names


# ---------------------------------------------------------------- the fit on its own

def _stars(n, *, seed=0, noise=0.05, outliers=0.0, sip=True, camera=EL_NINO):
    truth = _wcs(make_wcs(210.0, -40.0, 75.0, camera, sip=sip))
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(5, camera.nx - 6, n), rng.uniform(5, camera.ny - 6, n)
    ra, dec = truth.all_pix2world(x, y, 0)
    xm, ym = x + rng.normal(0, noise, n), y + rng.normal(0, noise, n)
    bad = rng.random(n) < outliers
    xm[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(2, 6, bad.sum())
    ym[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(2, 6, bad.sum())
    return truth, ra, dec, xm, ym, bad


def _grid_error(wcs, truth, camera=EL_NINO):
    gx, gy = np.meshgrid(np.linspace(0, camera.nx - 1, 25), np.linspace(0, camera.ny - 1, 25))
    ra, dec = truth.all_pix2world(gx.ravel(), gy.ravel(), 0)
    x, y = wcs.all_world2pix(ra, dec, 0)
    return np.hypot(x - gx.ravel(), y - gy.ravel())


def test_fit_rejects_wrong_matches_and_recovers_the_distortion():
    truth, ra, dec, x, y, bad = _stars(600, outliers=0.2)
    start = _wcs(perturb_wcs_header(make_wcs(210.0, -40.0, 75.0), **PERTURBATION))
    fit = refine_wcs(ra, dec, x, y, start, EL_NINO.centre)
    assert fit.order == 3 and not (fit.used & bad).any()
    assert fit.n_used >= 0.98 * (~bad).sum()
    # 0.05 pix noise on ~480 stars, 10 terms an axis: coefficients good to ~0.05 sqrt(10 / 480)
    # = 0.007 pix, a few times that at the corners, where the polynomial has most leverage
    error = _grid_error(fit.wcs, truth)
    assert np.median(error) < 0.02 and error.max() < 0.1
    # per-axis RMS: 0.05 pix of noise is 0.43 arcsec
    assert fit.rms_ra_arcsec == pytest.approx(0.05 * EL_NINO.pixel_scale_arcsec, rel=0.15)
    assert fit.rms_dec_arcsec == pytest.approx(0.05 * EL_NINO.pixel_scale_arcsec, rel=0.15)
    assert fit.wcs.sip.ap is None  # no image shape given: astropy inverts by iteration


def test_refined_sip_carries_its_inverse():
    """Given the image shape, a SIP solution has AP, BP inverting A, B over the image (sky to
    pixel without iteration, for any reader of the header) to a thousandth of a pixel."""
    from astropy.io import fits
    from astropy.wcs import WCS

    truth, ra, dec, x, y, _ = _stars(600)
    fit = refine_wcs(ra, dec, x, y, truth, EL_NINO.centre, shape=EL_NINO.shape)
    assert fit.order == 3
    header = fit.wcs.to_header(relax=True)
    assert header["AP_ORDER"] == header["A_ORDER"] == 3
    written = WCS(fits.Header.fromstring(header.tostring()))
    gx, gy = np.meshgrid(np.linspace(0, EL_NINO.nx - 1, 17), np.linspace(0, EL_NINO.ny - 1, 13))
    pix = np.column_stack([gx.ravel(), gy.ravel()])
    back = written.sip_foc2pix(written.sip_pix2foc(pix, 0), 0)
    assert np.abs(back - pix).max() < 1e-3
    # the distortion is real: without AP, BP the focal-plane positions would be off by pixels
    assert np.abs(written.sip_pix2foc(pix, 0) - pix).max() > 1.0


@pytest.mark.parametrize("n, order", [(MIN_STARS - 1, None), (20, 1), (60, 2), (150, 3)])
def test_order_follows_the_number_of_stars(n, order):
    truth, ra, dec, x, y, _ = _stars(n, seed=n, noise=0.02, sip=False)
    fit = refine_wcs(ra, dec, x, y, truth, EL_NINO.centre)
    if order is None:
        assert fit is None
        return
    assert fit.order == order == sip_order_for(n)
    assert fit.wcs.wcs.ctype[0] == ("RA---TAN-SIP" if order > 1 else "RA---TAN")
    # no distortion in the truth: every order maps the field to a small fraction of a pixel
    assert np.median(_grid_error(fit.wcs, truth)) < 0.03


def test_tangent_plane_is_the_fits_tan_projection():
    header = make_wcs(359.5, 62.0, 30.0)
    wcs = _wcs(header)
    x, y = np.array([0.0, 1000.0, 3295.0]), np.array([0.0, 2471.0, 1300.0])
    ra, dec = wcs.all_pix2world(x, y, 0)
    xi, eta = tangent_plane(ra, dec, 359.5, 62.0)
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    expected = cd @ np.vstack([x - header["CRPIX1"] + 1, y - header["CRPIX2"] + 1])
    np.testing.assert_allclose(np.vstack([xi, eta]), expected, rtol=0, atol=1e-10)
    back_ra, back_dec = from_tangent_plane(xi, eta, 359.5, 62.0)
    np.testing.assert_allclose(back_dec, dec, rtol=0, atol=1e-10)
    np.testing.assert_allclose((back_ra - ra + 180) % 360 - 180, 0, atol=1e-10)


def test_pointing_record_of_a_known_wcs():
    wcs = _wcs(make_wcs(10.0, 45.0, -20.0))
    record = pointing_record(wcs, EL_NINO, {"RADEG": 9.99, "DECDEG": "45.01"}, origin="given")
    assert list(record) == list(POINTING_FIELDS)
    assert record["field_ra_deg"] == pytest.approx(10.0, abs=1e-9)
    assert record["field_dec_deg"] == pytest.approx(45.0, abs=1e-9)
    assert record["field_rotation_deg"] == pytest.approx(-20.0, abs=1e-9)
    assert record["pixel_scale_arcsec"] == pytest.approx(EL_NINO.pixel_scale_arcsec, rel=1e-12)
    assert record["pointing_offset_ra_arcsec"] == pytest.approx(0.01 * math.cos(math.radians(45)) * 3600, rel=1e-6)
    assert record["pointing_offset_dec_arcsec"] == pytest.approx(-36.0, rel=1e-6)
    assert math.isnan(record["wcs_rms_ra_arcsec"]) and record["wcs_n_stars"] == 0
    # no header pointing: the offsets are NaN and stay out of the FITS header
    bare = pointing_record(wcs, EL_NINO, {}, origin="given")
    assert math.isnan(bare["pointing_offset_ra_arcsec"])
    assert "PNTOFFRA" not in {k for k, _, _ in header_cards(bare)}
    assert "FIELDRA" in {k for k, _, _ in header_cards(bare)}


def test_perturbed_wcs_is_off_by_the_amounts_asked():
    true = make_wcs(150.0, 30.0, 0.0)
    centre = EL_NINO.centre
    for changes, expected in ((dict(shift_pix=(1.0, -0.5)), (1.0, -0.5)), (dict(rotation_deg=0.1), None)):
        wrong = _wcs(perturb_wcs_header(true, **changes))
        ra, dec = _wcs(true).all_pix2world([centre[0], centre[0] + 1000.0], [centre[1], centre[1]], 0)
        x, y = wrong.all_world2pix(ra, dec, 0)
        if expected is not None:
            np.testing.assert_allclose([x[0] - centre[0], y[0] - centre[1]], expected, atol=1e-6)
        else:  # a turn about the centre: 1000 pix out, 1000 * 0.1 deg in radians along y
            assert abs(abs(y[1] - centre[1]) - 1000 * math.radians(0.1)) < 1e-3
    scaled = _wcs(perturb_wcs_header(true, scale_error=0.005))
    assert math.sqrt(abs(np.linalg.det(scaled.pixel_scale_matrix))) * 3600 == pytest.approx(
        1.005 * EL_NINO.pixel_scale_arcsec, rel=1e-9)


# ---------------------------------------------------------------- pc-realtime and pc-archive

@pytest.mark.parametrize("flags", [[], ["--no_wcs_refine", "--solve", "never"]], ids=["refine", "no_wcs_refine"])
def test_realtime_sends_the_pointing_unless_no_wcs_refine(flags, tmp_path, night, small_camera, cpu,
                                                          redis_server, redis_client):
    from pc_gpu.realtime import RealtimeService, options_from_args, parse_args
    from pc_gpu.telemetry import RedisSettings
    from realtime_helpers import drop

    (tmp_path / "watch").mkdir()
    run, service = options_from_args(parse_args([str(tmp_path / "watch"), "--outdir", str(tmp_path / "out"),
                                                 "--device", "cpu", *flags]))
    assert run.wcs_refine == (not flags)
    svc = RealtimeService(run, dataclasses.replace(service, use_events=False), camera=small_camera,
                          meta_dir=night.meta_dir, gaia_dir=night.gaia_dir, backend=cpu,
                          redis_settings=RedisSettings(host="127.0.0.1", port=redis_server.port, key=KEY))
    try:
        drop(night, 0, str(tmp_path / "watch"))
        assert svc.poll_once() == (1, 0)
    finally:
        svc.close()
    [(_, entry)] = redis_client.xrange(f"{KEY}:history")
    header = _primary(str(tmp_path / "out" / "20210611"))
    latest = redis_client.hgetall(KEY)
    if flags:
        assert set(latest) == NON_POINTING_FIELDS and not set(POINTING_FIELDS) & set(entry)
        assert "WCSORIG" not in header
        return
    assert header["WCSORIG"] == "refined" and header["WCSNSTAR"] >= MIN_STARS
    for field, (keyword, _) in POINTING_FIELDS.items():
        expected = header.get(keyword, "nan")
        for got in (entry[field], latest[field]):
            assert got == expected if isinstance(expected, str) else float(got) == pytest.approx(expected)


@pytest.mark.parametrize("flags", [[], ["--no_wcs_refine", "--solve", "never"]], ids=["refine", "no_wcs_refine"])
def test_archive_refines_unless_no_wcs_refine(flags, tmp_path, night, small_camera):
    from pc_gpu.archive.cli import build_parser, options_from_args
    from pc_gpu.archive.task import TaskSpec, reduce_chunk

    options = options_from_args(build_parser().parse_args([night.meta_dir, "--outdir", str(tmp_path),
                                                           "--device", "cpu", "--skip_checkplot", *flags]))
    assert options.wcs_refine == (not flags)
    [outcome] = reduce_chunk([night.raw[1]], TaskSpec(options, camera=small_camera, meta_dir=night.meta_dir,
                                                      gaia_dir=night.gaia_dir))
    assert outcome["event"] == "done", outcome["reason"]
    header = _primary(os.path.join(str(tmp_path), outcome["night"]))
    assert header.get("WCSORIG") == (None if flags else "refined")
    assert ("CTYPE1" in header) == (not flags)


def test_too_few_stars_keep_the_given_wcs_and_say_so(small_field, cpu, tmp_path):
    from pc_gpu.pipeline import Reducer, RunOptions, write_outputs
    from pc_gpu.rawio import read_wcs

    reducer = Reducer(RunOptions(outdir=str(tmp_path), max_n_stars=MIN_STARS - 1, checkplot=False),
                      camera=small_field.camera, meta_dir=small_field.meta_dir, gaia_dir=small_field.gaia_dir,
                      backend=cpu)
    result = reducer.reduce(small_field.raw)
    given = read_wcs(small_field.wcs)
    assert result.pointing["wcs_origin"] == "given"
    assert result.pointing["wcs_fit_order"] == 0 and 0 < result.pointing["wcs_n_stars"] < MIN_STARS
    header = _primary(os.path.dirname(write_outputs(result, reducer)["summary"]))
    assert header["WCSORIG"] == "given"
    # the given solution, written out: the same sky at the corners
    corners = ([0, 599, 0, 599], [0, 0, 449, 449])
    np.testing.assert_allclose(_wcs(header).all_pix2world(*corners, 0), given.all_pix2world(*corners, 0),
                               rtol=0, atol=1e-9)


def test_only_stars_whose_guess_moved_are_recentroided_again():
    from pc_gpu.astrometry.refine import carried_centroids

    dtype = [("SOURCE_ID", "i8"), ("x_gaia_guess", "f8"), ("y_gaia_guess", "f8")]
    old = np.array([(7, 10.0, 10.0), (3, 50.0, 20.0), (9, 80.0, 30.0)], dtype=dtype)
    # star 9 kept within 0.01 pix, 3 moved by 0.02, 5 is new (the refined WCS took it in), 7 left
    new = np.array([(9, 80.005, 30.0), (3, 50.0, 20.02), (5, 5.0, 5.0)], dtype=dtype)
    centroids = (np.array([10.1, 50.3, 80.2]), np.array([10.2, 20.4, 30.1]), np.array([0, 1, 0]))
    moved, (x, y, q) = carried_centroids(old, new, centroids, tolerance_pix=0.01)
    assert moved.tolist() == [False, True, True]
    assert (x[0], y[0], q[0]) == (80.2, 30.1, 0)
    assert carried_centroids(old[:0], new, centroids, tolerance_pix=0.01)[0].all()
