"""Every flag of `pc-proc`, run with and without it, judged by its effect on the outputs
(against the simulator's truth where there is one).

Most runs go through `cli.main` on the full-size demo frame (the command line has no camera
option); proper motions and the flat field use small frames made for them through `Reducer`,
and `test_every_flag_reaches_run_options` checks that the command line hands each flag on.
"""

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from pc_gpu.backend import get_backend, gpu_problem
from pc_gpu.camera import EL_NINO
from pc_gpu.cli import build_parser, main, options_from_args
from pc_gpu.errors import InputError
from pc_gpu.gaia import gaia_mag_limit
from pc_gpu.pipeline import Reducer, RunOptions
from pc_gpu.rawio import CALIB_FILES
from pc_gpu.sim import Region, build_chunk_tree, make_demo_field
from pc_gpu.sim.chunks import read_chunk_tree
from pc_gpu.zeropoints import zeropoint_stars

# Where each flag's behaviour is tested (this file unless a file is named).
BEHAVIOUR_TESTS = {
    "--outdir": "test_outdir_decides_whether_anything_is_written",
    "--dont_write_detrended": "test_dont_write_detrended",
    "--skip_checkplot": "test_plots.py::test_skip_checkplot_writes_no_zp_png",
    "--nightly_subdir": "test_nightly_subdir_is_the_observing_night",
    "--send_redis": "test_send_redis_and_sci_inst_name",
    "--one_aper": "test_zeropoints_truth.py::test_one_aper_rows_are_the_standard_aperture",
    "--bg_sigclip": "test_bg_sigclip_lowers_the_annulus_background_toward_the_truth",
    "--multiproc": "test_multiproc_sets_the_kernel_threads_and_changes_no_number",
    "--max_n_stars": "test_max_n_stars_keeps_the_brightest",
    "--pm_corr": "test_pm_corr_moves_stars_by_their_proper_motion",
    "--skip_flatfield": "test_skip_flatfield_leaves_the_flat_in_the_sky",
    "--sci_inst_name": "test_send_redis_and_sci_inst_name",
    "--sci_fov_checkplot": "test_plots.py::test_zp_checkplot_draws_the_zeropoint_stars_of_its_field",
    "--check_tcs_motion": "test_check_tcs_motion",
    "--plot_detrended": "test_plots.py::test_quiver_and_detrended_plots_only_when_asked",
    "--plot_quiver": "test_plots.py::test_quiver_and_detrended_plots_only_when_asked",
    "--max_zp_radius": "test_max_zp_radius_leaves_outer_stars_out",
    "--overwrite": "test_overwrite_replaces_and_its_absence_refuses",
    "--device": "test_device",
    "--calib_fallback": "test_calib_fallback_uses_the_per_quadrant_scalars",
    "--detect_streaks": "test_streaks_pipeline.py::test_streak_table_flags_and_zeropoints",
    "--plot_streaks": "test_streaks_pipeline.py::test_streak_table_flags_and_zeropoints",
    "--streak_time_limit": "test_streaks_pipeline.py::test_time_limit_leaves_other_outputs_alone",
    "--meta_dir": "test_meta_dir_and_gaia_dir_override_the_environment",
    "--gaia_dir": "test_meta_dir_and_gaia_dir_override_the_environment",
    "--verbose": "test_verbose_and_quiet",
    "--quiet": "test_verbose_and_quiet",
    "--thumbnail": "test_thumbnail_is_the_binned_detrended_image",
    "--no_wcs_refine": "test_wcs_refine.py::test_no_wcs_refine_keeps_the_given_wcs",
    "--solve": "test_astrometry.py::test_pc_proc_solve_modes",
}

# flag (with a value when it takes one) -> (RunOptions field, value it must set)
OPTION_FIELDS = {
    ("--outdir", "o"): ("outdir", "o"),
    ("--dont_write_detrended",): ("write_detrended", False),
    ("--skip_checkplot",): ("checkplot", False),
    ("--nightly_subdir",): ("nightly_subdir", True),
    ("--send_redis",): ("send_redis", True),
    ("--one_aper",): ("one_aper", True),
    ("--bg_sigclip",): ("bg_sigclip", True),
    ("--multiproc", "3"): ("threads", 3),
    ("--max_n_stars", "7"): ("max_n_stars", 7),
    ("--pm_corr",): ("pm_corr", True),
    ("--skip_flatfield",): ("flatfield", False),
    ("--sci_inst_name", "ci"): ("sci_inst_name", "ci"),
    ("--sci_fov_checkplot",): ("sci_fov_checkplot", True),
    ("--check_tcs_motion",): ("check_tcs_motion", True),
    ("--plot_detrended",): ("plot_detrended", True),
    ("--plot_quiver",): ("plot_quiver", True),
    ("--max_zp_radius", "100"): ("max_zp_radius", 100.0),
    ("--overwrite",): ("overwrite", True),
    ("--device", "cpu"): ("device", "cpu"),
    ("--calib_fallback",): ("calib_fallback", True),
    ("--detect_streaks",): ("detect_streaks", True),
    ("--plot_streaks",): ("plot_streaks", True),
    ("--streak_time_limit", "2"): ("streak_time_limit", 2.0),
    ("--thumbnail",): ("thumbnail", True),
    ("--no_wcs_refine",): ("wcs_refine", False),
    ("--solve", "always"): ("solve", "always"),
}


def test_every_flag_has_a_behaviour_test():
    parser = build_parser()
    assert parser.format_usage().startswith("usage: pc-proc [-h] ")
    flags = {max(a.option_strings, key=len) for a in parser._actions if a.option_strings} - {"--help"}
    assert flags == set(BEHAVIOUR_TESTS)
    assert all(len(a.help) > 10 for a in parser._actions), "every argument is explained in --help"
    here = os.path.dirname(__file__)
    for where in set(BEHAVIOUR_TESTS.values()):
        path, _, name = where.rpartition("::")
        with open(os.path.join(here, path or os.path.basename(__file__))) as f:
            assert f"def {name}(" in f.read(), where


@pytest.mark.parametrize("argv, expected", list(OPTION_FIELDS.items()), ids=lambda v: str(v[0]))
def test_every_flag_reaches_run_options(argv, expected):
    field, value = expected
    with_flag = options_from_args(build_parser().parse_args(["x.fits", *argv]))
    without = options_from_args(build_parser().parse_args(["x.fits"]))
    assert getattr(with_flag, field) == value
    assert getattr(without, field) != value


# ---------------------------------------------------------------- helpers

def _proc(raw, field, *flags, outdir=None, locations=True):
    """Run pc-proc in-process on the CPU; returns the exit status."""
    argv = [str(raw), "--device", "cpu", *flags]
    if outdir is not None:
        argv += ["--outdir", str(outdir)]
    if locations:
        argv += ["--meta_dir", field.meta_dir, "--gaia_dir", field.gaia_dir]
    return main(argv)


def _files(outdir):
    return sorted(os.listdir(outdir)) if os.path.isdir(outdir) else []


def _summary(outdir, ext):
    name = [n for n in os.listdir(outdir) if n.endswith("-summary.fits")][0]
    return fitsio.read(os.path.join(outdir, name), ext=ext)


def _truth(field):
    return fitsio.read(field.truth, ext="TRUTH"), fitsio.read_header(field.truth, ext="TRUTH")


def _copy_frame(field, directory, **header_changes):
    """Copy of the raw frame and its .wcs, with header keywords changed."""
    os.makedirs(directory, exist_ok=True)
    raw = os.path.join(directory, os.path.basename(field.raw))
    shutil.copy(field.wcs, raw[:-5] + ".wcs")
    with fits.open(field.raw) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.copy()
    for key, value in header_changes.items():
        header[key] = value
    fits.PrimaryHDU(data, header=header).writeto(raw)
    return raw


@pytest.fixture(scope="module")
def plain(demo_field, tmp_path_factory):
    """The demo frame reduced with no optional flag but --dont_write_detrended --skip_checkplot."""
    out = tmp_path_factory.mktemp("plain")
    assert _proc(demo_field.raw, demo_field, "--dont_write_detrended", "--skip_checkplot", outdir=out) == 0
    return str(out)


# ---------------------------------------------------------------- outputs and where they go

def test_outdir_decides_whether_anything_is_written(demo_field, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw_dir_before = _files(os.path.dirname(demo_field.raw))
    assert _proc(demo_field.raw, demo_field) == 0
    assert _files(tmp_path) == [] and _files(os.path.dirname(demo_field.raw)) == raw_dir_before
    out = tmp_path / "out"
    assert _proc(demo_field.raw, demo_field, outdir=out) == 0
    stem = os.path.basename(demo_field.raw)[:-5]
    assert _files(out) == sorted(f"{stem}{s}" for s in ("-detrended.fits", "-summary.fits", "-zp.png"))


def test_dont_write_detrended(demo_field, plain, tmp_path):
    assert not any(n.endswith("-detrended.fits") for n in _files(plain))
    assert _proc(demo_field.raw, demo_field, "--skip_checkplot", outdir=tmp_path) == 0
    name = [n for n in _files(tmp_path) if n.endswith("-detrended.fits")]
    assert len(name) == 1
    image = fitsio.read(os.path.join(tmp_path, name[0]))
    _, header = _truth(demo_field)
    assert image.dtype == np.float32 and image.shape == EL_NINO.shape
    # the detrended sky is the simulated one: the median of 8 M pixels of ~14 ADU noise is good
    # to ~0.01 ADU; stars (a few % of pixels) lift it by ~0.1 %
    assert np.median(image) / (header["SKY"] * header["EXPTIME"]) == pytest.approx(1, abs=0.005)


def test_thumbnail_is_the_binned_detrended_image(demo_field, plain, tmp_path):
    from PIL import Image

    from pc_gpu.thumbnail import THUMBNAIL_BIN, bin_image, stretch

    assert not any(n.endswith("-thumb.jpg") for n in _files(plain))
    assert _proc(demo_field.raw, demo_field, "--skip_checkplot", "--thumbnail", outdir=tmp_path) == 0
    thumb = [n for n in _files(tmp_path) if n.endswith("-thumb.jpg")]
    detrended = [n for n in _files(tmp_path) if n.endswith("-detrended.fits")]
    assert len(thumb) == len(detrended) == 1
    expected = stretch(bin_image(fitsio.read(os.path.join(tmp_path, detrended[0])), THUMBNAIL_BIN))
    with Image.open(os.path.join(tmp_path, thumb[0])) as im:
        shown = np.asarray(im)
    assert shown.shape == (EL_NINO.ny // THUMBNAIL_BIN, EL_NINO.nx // THUMBNAIL_BIN)
    # JPEG (quality 88) of a noisy sky: about 3 grey levels from the stretched binned image on
    # average; a flipped, unbinned or raw image would not correlate
    assert np.mean(np.abs(shown.astype(float) - expected)) < 5.0
    assert np.corrcoef(shown.ravel(), expected.ravel())[0, 1] > 0.9
    assert np.corrcoef(shown[::-1].ravel(), expected.ravel())[0, 1] < 0.5


def _night_from_truth(header):
    """Observing night from the truth's MJD: local (UTC-7) date, the day before before noon."""
    local = dt.datetime(1858, 11, 17) + dt.timedelta(days=header["MJD-OBS"], hours=-7)
    return (local - dt.timedelta(days=1 if local.hour < 12 else 0)).strftime("%Y%m%d")


def test_nightly_subdir_is_the_observing_night(demo_field, plain, tmp_path):
    _, header = _truth(demo_field)
    night = _night_from_truth(header)
    assert not any(os.path.isdir(os.path.join(plain, n)) for n in _files(plain))
    assert _proc(demo_field.raw, demo_field, "--nightly_subdir", "--skip_checkplot", outdir=tmp_path / "a") == 0
    assert _files(tmp_path / "a") == [night]
    assert len(_files(tmp_path / "a" / night)) == 2
    # a frame taken at 02:30 local time belongs to the night that began the day before
    raw = _copy_frame(demo_field, tmp_path / "late", DATE="2021/06/12", TIME="02:30:00")
    assert _proc(raw, demo_field, "--nightly_subdir", "--skip_checkplot", outdir=tmp_path / "b") == 0
    assert _files(tmp_path / "b") == ["20210611"]


def test_overwrite_replaces_and_its_absence_refuses(demo_field, tmp_path, caplog):
    flags = ("--dont_write_detrended", "--skip_checkplot")
    assert _proc(demo_field.raw, demo_field, "--skip_flatfield", *flags, outdir=tmp_path) == 0
    name = _files(tmp_path)[0]
    before = (tmp_path / name).read_bytes()
    caplog.clear()
    assert _proc(demo_field.raw, demo_field, *flags, outdir=tmp_path) == 1
    assert "--overwrite" in caplog.text
    assert (tmp_path / name).read_bytes() == before
    assert _proc(demo_field.raw, demo_field, "--overwrite", *flags, outdir=tmp_path) == 0
    assert fitsio.read_header(str(tmp_path / name))["FLATFLD"] is True
    assert _files(tmp_path) == [name]


# ---------------------------------------------------------------- the reduction

def test_max_n_stars_keeps_the_brightest(demo_field, plain, tmp_path):
    """The catalogue holds the N brightest truth stars whose position lies inside the image
    (0 < x < nx - 1, 0 < y < ny - 1) and below the 20 s magnitude limit."""
    truth, header = _truth(demo_field)
    inside = ((truth["X"] > 0) & (truth["X"] < EL_NINO.nx - 1) & (truth["Y"] > 0) & (truth["Y"] < EL_NINO.ny - 1)
              & (truth["PHOT_G_MEAN_MAG"] <= gaia_mag_limit(header["EXPTIME"])))
    by_g = truth["SOURCE_ID"][inside][np.argsort(truth["PHOT_G_MEAN_MAG"][inside], kind="stable")]
    assert len(by_g) > 3000  # so that the default (3000) cuts
    assert set(_summary(plain, "CATALOG")["SOURCE_ID"]) == set(by_g[:3000])
    for n in (250, 100000):
        out = tmp_path / str(n)
        assert _proc(demo_field.raw, demo_field, "--max_n_stars", str(n), "--dont_write_detrended",
                     "--skip_checkplot", outdir=out) == 0
        ids = _summary(out, "CATALOG")["SOURCE_ID"]
        assert len(ids) == min(n, len(by_g)) and set(ids) == set(by_g[:n])


def test_bg_sigclip_lowers_the_annulus_background_toward_the_truth(demo_field, plain, tmp_path):
    """Clipping drops neighbouring stars' pixels and hot pixels from the annulus: the median
    moves down, toward the simulated sky."""
    assert _proc(demo_field.raw, demo_field, "--bg_sigclip", "--dont_write_detrended", "--skip_checkplot",
                 outdir=tmp_path) == 0
    _, header = _truth(demo_field)
    sky = header["SKY"] * header["EXPTIME"]
    plain_bkg = _summary(plain, "CATALOG")["sky_annulus_median"]
    clipped = _summary(tmp_path, "CATALOG")["sky_annulus_median"]
    diff = clipped - plain_bkg
    assert np.mean(diff != 0) > 0.5
    # paired difference: its mean is many standard errors below zero
    assert np.mean(diff) < -5 * np.std(diff) / np.sqrt(len(diff))
    assert abs(np.mean(clipped - sky)) < abs(np.mean(plain_bkg - sky))


def test_multiproc_sets_the_kernel_threads_and_changes_no_number(demo_field, plain, tmp_path):
    import numba

    before = numba.get_num_threads()
    try:
        assert _proc(demo_field.raw, demo_field, "--multiproc", "1", "--dont_write_detrended",
                     "--skip_checkplot", outdir=tmp_path) == 0
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    for ext in ("CATALOG", "ZEROPOINTS"):
        a, b = _summary(tmp_path, ext), _summary(plain, ext)
        for name in a.dtype.names:
            if a.dtype[name].kind == "f":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_allclose(_summary(tmp_path, "SKY")["mean_adu"], _summary(plain, "SKY")["mean_adu"],
                               rtol=1e-6)


def test_max_zp_radius_leaves_outer_stars_out(demo_field, plain, tmp_path):
    assert _proc(demo_field.raw, demo_field, "--max_zp_radius", "900", "--dont_write_detrended",
                 "--skip_checkplot", outdir=tmp_path) == 0
    truth, header = _truth(demo_field)
    cat, zps = _summary(tmp_path, "CATALOG"), _summary(tmp_path, "ZEROPOINTS")
    plain_cat, plain_zps = _summary(plain, "CATALOG"), _summary(plain, "ZEROPOINTS")
    assert np.all(plain_zps["max_zp_radius"] == 99999) and np.all(zps["max_zp_radius"] == 900)
    # flagged exactly where the true position lies beyond 900 pix (no star within a centroid
    # error of the circle in this field)
    index = {s: i for i, s in enumerate(truth["SOURCE_ID"])}
    tru = truth[[index[s] for s in cat["SOURCE_ID"]]]
    xc, yc = EL_NINO.centre
    np.testing.assert_array_equal(cat["radius_too_large"] != 0, np.hypot(tru["X"] - xc, tru["Y"] - yc) > 900)
    assert not plain_cat["radius_too_large"].any()
    whole = (zps["quadrant"] == 0) & (zps["science_fov_only"] == 0)
    used = zeropoint_stars(plain_cat, EL_NINO)
    assert np.all(zps["n_sources_for_zp"][whole] == (used & (plain_cat["radius_pix"] <= 900)).sum())
    assert 500 < zps["n_sources_for_zp"][whole][0] < used.sum() - 500
    # the standard-aperture zeropoint of the inner stars is still the injected one (noisy
    # frame: the faint stars' Poisson-skewed annulus medians allow ~0.01, see test_zeropoints_truth)
    std = zps[whole & (zps["aper_ind"] == 1)][0]
    inner = used & (plain_cat["radius_pix"] <= 900)
    expected = np.median(tru["ZP_STAR"][inner] + 2.5 * np.log10(tru["APER_FRAC"][inner, 1]))
    assert std["zp_adu_per_s"] == pytest.approx(expected, abs=0.02)


PM_CAMERA = EL_NINO.with_(nx=1200, ny=900)


@pytest.fixture(scope="module")
def pm_field(sim_cache, sim_gaia_dir):
    """A 1200 x 900 frame of stars that each move 1500 mas/yr (random directions) since REF_EPOCH
    2015.5, from a chunk tree built by the chunk builder out of a Gaia table written here."""
    return sim_cache.get("pm_field", lambda d: _make_pm_field(Path(d), sim_gaia_dir))


def _make_pm_field(work, sim_gaia_dir):
    stars = read_chunk_tree(sim_gaia_dir)
    near = (np.abs(stars["DEC"] - 30.0) < 3.5) & (np.abs(stars["RA"] - 150.0) < 4.0)
    stars = stars[near]
    rng = np.random.default_rng(8)
    angle = rng.uniform(0, 2 * np.pi, len(stars))
    table = np.zeros(len(stars), dtype=[("source_id", "i8"), ("ra", "f8"), ("dec", "f8"),
                                        ("phot_g_mean_mag", "f4"), ("phot_bp_mean_mag", "f4"),
                                        ("phot_rp_mean_mag", "f4"), ("pmra", "f8"), ("pmdec", "f8"),
                                        ("ref_epoch", "f8")])
    for name in ("SOURCE_ID", "RA", "DEC", "PHOT_G_MEAN_MAG", "PHOT_BP_MEAN_MAG", "PHOT_RP_MEAN_MAG"):
        table[name.lower()] = stars[name]
    table["pmra"], table["pmdec"] = 1500.0 * np.cos(angle), 1500.0 * np.sin(angle)
    table["ref_epoch"] = 2015.5
    fitsio.write(str(work / "gaia_pm.fits"), table)
    build_chunk_tree(work / "gaia", source=str(work / "gaia_pm.fits"), regions=[Region(150.0, 30.0, 3.0)])
    return make_demo_field(work / "frame", seed=6, gaia_dir=str(work / "gaia"), camera=PM_CAMERA,
                           proper_motion=True)


def test_pm_corr_moves_stars_by_their_proper_motion(pm_field):
    truth, header = _truth(pm_field)
    years = 2000.0 + (header["MJD-OBS"] - 51544.5) / 365.25 - 2015.5
    expected_pix = 1500.0 * years / 1000.0 / PM_CAMERA.pixel_scale_arcsec  # ~1 pix
    index = {s: i for i, s in enumerate(truth["SOURCE_ID"])}
    shifts = {}
    for pm_corr in (False, True):
        # the given WCS as it is: refinement would fit this field's common motion into the WCS
        reducer = Reducer(RunOptions(pm_corr=pm_corr, wcs_refine=False), camera=PM_CAMERA, meta_dir=pm_field.meta_dir,
                          gaia_dir=pm_field.gaia_dir, backend=get_backend("cpu"))
        cat = reducer.reduce(pm_field.raw).catalog
        tru = truth[[index[s] for s in cat["SOURCE_ID"]]]
        guess_error = np.hypot(cat["x_gaia_guess"] - tru["X"], cat["y_gaia_guess"] - tru["Y"])
        # bright unsaturated stars (> 2000 ADU, SNR > ~20), centroids good to a few 0.01 pix
        bright = zeropoint_stars(cat, PM_CAMERA) & (tru["FLUX_ADU"] > 2e3)
        assert bright.sum() > 15
        shifts[pm_corr] = np.median(np.hypot(cat["x_shift"], cat["y_shift"])[bright])
        if pm_corr:  # the guesses are where the stars were rendered, to rounding
            assert np.max(guess_error) < 1e-3
        else:  # each guess is off by the motion (the pixel scale varies by < 1 % in this field)
            np.testing.assert_allclose(guess_error, expected_pix, rtol=0.01)
    # the measured centroids show it: ~1 pix from the guess without, ~0 with
    assert shifts[False] == pytest.approx(expected_pix, rel=0.1)
    assert shifts[True] < 0.1, shifts


@pytest.fixture(scope="module")
def flat_field(sim_cache, sim_gaia_dir, small_camera):
    """A small noise-free frame (sky 5 ADU/s/pix)."""
    return sim_cache.get("flat_field", lambda d: make_demo_field(d, seed=9, gaia_dir=sim_gaia_dir,
                                                                  camera=small_camera, noise=False,
                                                                  sky_adu_per_s=5.0))


def test_skip_flatfield_leaves_the_flat_in_the_sky(flat_field, small_camera, tmp_path):
    """Without the flat, each region's sky median is the simulated sky times the median of the
    flat (the simulator's truth, in META) over that region; with it, the simulated sky."""
    from pc_gpu.pipeline import process_frame

    camera = small_camera.with_(sci_fov_radius_pix=150.0)  # a centre well inside the vignetting
    _, header = _truth(flat_field)
    sky = header["SKY"] * header["EXPTIME"]
    flat = fits.getdata(os.path.join(flat_field.meta_dir, CALIB_FILES["flat"]))
    xc, yc = camera.centre
    y, x = np.mgrid[:camera.ny, :camera.nx]
    regions = {"": np.ones(camera.shape, bool), "_sci": np.hypot(x - xc, y - yc) <= camera.sci_fov_radius_pix}
    for q, (rows, cols) in enumerate(camera.quadrant_slices(), 1):
        regions[f"_quad{q}"] = np.zeros(camera.shape, bool)
        regions[f"_quad{q}"][rows, cols] = True
    assert np.median(flat[regions["_sci"]]) > 1.02  # what the test can see (vs 0.2 % tolerance)
    for flatfield in (True, False):
        reducer = Reducer(RunOptions(outdir=str(tmp_path / str(flatfield)), flatfield=flatfield, checkplot=False),
                          camera=camera, meta_dir=flat_field.meta_dir, gaia_dir=flat_field.gaia_dir,
                          backend=get_backend("cpu"))
        _, paths, _ = process_frame(flat_field.raw, reducer)
        row = fitsio.read(paths["summary"], ext="SKY")[0]
        assert fitsio.read_header(paths["detrended"])["FLATFLD"] is flatfield
        for suffix, where in regions.items():
            expected = sky if flatfield else sky * np.median(flat[where])
            # stars cover ~1 % of the pixels; they lift a region's median by about that fraction
            # of the flat's spread there (<= 20 %): < 0.2 %
            assert row[f"median_adu{suffix}"] == pytest.approx(expected, rel=0.002), (flatfield, suffix)


def test_calib_fallback_uses_the_per_quadrant_scalars(demo_field, tmp_path, caplog):
    meta = tmp_path / "meta"
    shutil.copytree(demo_field.meta_dir, meta)
    os.remove(meta / CALIB_FILES["bias"])
    os.remove(meta / CALIB_FILES["dark"])
    out = tmp_path / "out"
    flags = ("--skip_checkplot", "--meta_dir", str(meta), "--gaia_dir", demo_field.gaia_dir)
    caplog.clear()
    assert _proc(demo_field.raw, demo_field, *flags, outdir=out, locations=False) == 1
    assert CALIB_FILES["bias"] in caplog.text and _files(out) == []
    assert _proc(demo_field.raw, demo_field, "--calib_fallback", *flags, outdir=out, locations=False) == 0
    name = [n for n in _files(out) if n.endswith("-detrended.fits")][0]
    image, header = fitsio.read(str(out / name), header=True)
    assert header["CALFALLB"] is True
    # detrended = (raw - bias_q - dark_q * t) / flat with the camera's scalars of each quadrant
    raw = fits.getdata(demo_field.raw).astype(np.float64)
    flat = fits.getdata(meta / CALIB_FILES["flat"]).astype(np.float64)
    good = fits.getdata(meta / CALIB_FILES["mask"]) == 0
    t = header["EXPOSURE"] / 1000.0
    for q, (rows, cols) in enumerate(EL_NINO.quadrant_slices()):
        expected = (raw[rows, cols] - EL_NINO.bias_adu[q] - EL_NINO.dark_quad_adu_per_s[q] * t) / flat[rows, cols]
        ok = good[rows, cols]
        np.testing.assert_allclose(image[rows, cols][ok], expected[ok], rtol=1e-5, atol=1e-3)


def test_check_tcs_motion(demo_field, tmp_path, caplog):
    raw = _copy_frame(demo_field, tmp_path / "raw", ZPFLAG=1)
    caplog.clear()
    assert _proc(raw, demo_field, "--check_tcs_motion", outdir=tmp_path / "with") == 0
    assert _files(tmp_path / "with") == [] and "ZPFLAG" in caplog.text
    assert _proc(raw, demo_field, "--skip_checkplot", outdir=tmp_path / "without") == 0
    assert len(_files(tmp_path / "without")) == 2


def test_device(demo_field, tmp_path, caplog):
    argv = [demo_field.raw, "--meta_dir", demo_field.meta_dir, "--gaia_dir", demo_field.gaia_dir,
            "--dont_write_detrended", "--skip_checkplot"]
    assert main([*argv, "--device", "cpu", "--outdir", str(tmp_path / "cpu")]) == 0
    assert fitsio.read_header(os.path.join(tmp_path / "cpu", _files(tmp_path / "cpu")[0]))["PCDEVICE"] == "cpu"
    caplog.clear()
    rc = main([*argv, "--device", "gpu", "--outdir", str(tmp_path / "gpu")])
    problem = gpu_problem()
    if problem is None:  # a machine with a GPU
        assert rc == 0
        assert fitsio.read_header(os.path.join(tmp_path / "gpu", _files(tmp_path / "gpu")[0]))["PCDEVICE"] == "gpu"
    else:
        assert rc == 1 and "GPU" in caplog.text.upper() and _files(tmp_path / "gpu") == []


def test_meta_dir_and_gaia_dir_override_the_environment(demo_field, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("POINTING_CAMERA_META", str(tmp_path / "no_meta"))
    monkeypatch.setenv("PC_GAIA_DIR", str(tmp_path / "no_gaia"))
    caplog.clear()
    assert _proc(demo_field.raw, demo_field, outdir=tmp_path / "a", locations=False) == 1
    assert "no_meta" in caplog.text and _files(tmp_path / "a") == []
    caplog.clear()
    assert _proc(demo_field.raw, demo_field, "--meta_dir", demo_field.meta_dir, outdir=tmp_path / "b",
                 locations=False) == 1
    assert "no_gaia" in caplog.text and _files(tmp_path / "b") == []
    assert _proc(demo_field.raw, demo_field, "--meta_dir", demo_field.meta_dir, "--gaia_dir", demo_field.gaia_dir,
                 "--skip_checkplot", outdir=tmp_path / "c", locations=False) == 0
    assert len(_files(tmp_path / "c")) == 2


# ---------------------------------------------------------------- telemetry and logging

def test_send_redis_and_sci_inst_name(demo_field, tmp_path, monkeypatch, redis_server, redis_client):
    """The hash appears only with --send_redis; the science-field fields take their suffix
    from --sci_inst_name (lower-cased) and hold the science-field zeropoint and sky."""
    for name in ("REDISURL", "REDISPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in redis_server.environ("pc_flags").items():
        monkeypatch.setenv(name, value)
    flags = ("--dont_write_detrended", "--skip_checkplot")
    assert _proc(demo_field.raw, demo_field, *flags, outdir=tmp_path / "a") == 0
    assert redis_client.exists("pc_flags") == 0
    assert _proc(demo_field.raw, demo_field, "--send_redis", *flags, outdir=tmp_path / "b") == 0
    desi = redis_client.hgetall("pc_flags")
    redis_client.delete("pc_flags")
    assert _proc(demo_field.raw, demo_field, "--send_redis", "--sci_inst_name", "WIYN", *flags,
                 outdir=tmp_path / "c") == 0
    wiyn = redis_client.hgetall("pc_flags")
    suffixed = ("sky_adu_per_s", "zp_adu_per_s", "n_stars_for_zp")
    assert {f"{p}_desi" for p in suffixed} <= set(desi) and not any(k.endswith("_wiyn") for k in desi)
    assert {f"{p}_wiyn" for p in suffixed} <= set(wiyn) and not any(k.endswith("_desi") for k in wiyn)
    assert set(wiyn) - {f"{p}_wiyn" for p in suffixed} == set(desi) - {f"{p}_desi" for p in suffixed}
    # against the truth: the science field's stars and sky
    truth, header = _truth(demo_field)
    cat = _summary(tmp_path / "c", "CATALOG")
    index = {s: i for i, s in enumerate(truth["SOURCE_ID"])}
    tru = truth[[index[s] for s in cat["SOURCE_ID"]]]
    sci = zeropoint_stars(cat, EL_NINO) & (cat["in_science_fov"] != 0)
    assert int(wiyn["n_stars_for_zp_wiyn"]) == sci.sum() > 200
    expected = np.median(tru["ZP_STAR"][sci] + 2.5 * np.log10(tru["APER_FRAC"][sci, 1]))
    # noisy frame: Poisson-skewed annulus medians bias faint stars (see test_zeropoints_truth)
    assert float(wiyn["zp_adu_per_s_wiyn"]) == pytest.approx(expected, abs=0.02)
    assert float(wiyn["sky_adu_per_s_wiyn"]) == pytest.approx(header["SKY"], rel=0.005)
    assert float(wiyn["zp_adu_per_s_wiyn"]) == float(desi["zp_adu_per_s_desi"])


def test_verbose_and_quiet(demo_field):
    """-v adds debug records (the stage timings); -q leaves only warnings and errors. Each run
    is the other's run without the flag."""
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    base = [sys.executable, "-m", "pc_gpu", demo_field.raw, "--device", "cpu",
            "--meta_dir", demo_field.meta_dir, "--gaia_dir", demo_field.gaia_dir]
    levels, logs = {}, {}
    for flag in ("-v", "-q"):
        proc = subprocess.run(base + [flag], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        logs[flag] = proc.stderr
        levels[flag] = {name for name in ("DEBUG", "INFO", "WARNING") if f" {name} " in proc.stderr}
    assert levels["-v"] == {"DEBUG", "INFO", "WARNING"} and "stage timings" in logs["-v"]
    assert levels["-q"] == {"WARNING"}  # the warning: no --outdir
    assert "zp " in logs["-v"] and "zp " not in logs["-q"]


@pytest.mark.parametrize("flags, message", [
    (("--max_n_stars", "0"), "--max_n_stars must be at least 1, not 0"),
    (("--multiproc", "0"), "--multiproc must be at least 1, not 0"),
    (("--max_zp_radius", "-5"), "--max_zp_radius must be positive, not -5.0"),
    (("--streak_time_limit", "-1"), "--streak_time_limit must be >= 0 seconds, not -1.0"),
])
def test_bad_flag_values_are_refused_before_any_work(demo_field, tmp_path, caplog, flags, message):
    caplog.clear()
    assert _proc(demo_field.raw, demo_field, *flags, outdir=tmp_path) == 1
    assert message in caplog.text and _files(tmp_path) == []


def test_unknown_device_is_refused():
    with pytest.raises(InputError, match="--device must be auto, cpu or gpu, not 'tpu'"):
        RunOptions(device="tpu")


def test_annulus_median_is_unclipped_unless_asked(small_camera):
    """The photometry stage clips the annulus only when asked (as --bg_sigclip does): a bright
    neighbour on 9 % of the annulus lifts the plain median by 0.13 sigma (0.65 ADU here), and
    3-sigma clipping removes it (its pixels lie 200 sigma above the sky)."""
    from pc_gpu.photometry import aperture_photometry

    rng = np.random.default_rng(1)
    image = rng.normal(100.0, 5.0, small_camera.shape).astype(np.float32)
    image[200:260, 316:340] += 1000.0  # x >= 316: 9 % of the 12-20 pix annulus of (300, 225)
    be = get_backend("cpu")
    args = (be.asarray(image), np.array([300.0]), np.array([225.0]), small_camera, be)
    default = aperture_photometry(*args, radii=(2.5,))["bkg_median"][0]
    plain = aperture_photometry(*args, radii=(2.5,), bg_sigclip=False)["bkg_median"][0]
    clipped = aperture_photometry(*args, radii=(2.5,), bg_sigclip=True)["bkg_median"][0]
    assert default == plain
    # the median of 820 pixels of 5 ADU noise is good to 1.25 x 5 / sqrt(820) = 0.22 ADU; the
    # difference of the two medians of the same pixels scatters much less than that
    assert plain - clipped > 0.35 and abs(clipped - 100) < 3 * 0.22
