"""The full CPU reduction of a simulated frame, checked against the simulator's truth and
against photutils; output contract (tables, columns, rows) and telemetry."""

import os

import fitsio
import numpy as np
import pytest

from pc_gpu.astrometry.pointing import POINTING_FIELDS
from pc_gpu.backend import get_backend
from pc_gpu.camera import EL_NINO
from pc_gpu.pipeline import Reducer, RunOptions, process_frame
from pc_gpu.rawio import read_raw, read_wcs, wcs_path_for
from pc_gpu.sim import make_demo_field
from pc_gpu.telemetry import RedisSettings
from pc_gpu.zeropoints import zeropoint_stars


STANDARD_RADII = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


@pytest.fixture(scope="module")
def cpu():
    return get_backend("cpu")


@pytest.fixture(scope="module")
def reduced(demo_field, cpu, tmp_path_factory):
    """The demo frame reduced with all outputs written."""
    outdir = tmp_path_factory.mktemp("out")
    reducer = Reducer(RunOptions(outdir=str(outdir), plot_detrended=True, plot_quiver=True),
                      meta_dir=demo_field.meta_dir, gaia_dir=demo_field.gaia_dir, backend=cpu)
    result, paths, ok = process_frame(demo_field.raw, reducer)
    assert ok
    truth = fitsio.read(demo_field.truth, ext="TRUTH")
    truth_header = fitsio.read_header(demo_field.truth, ext="TRUTH")
    return result, paths, truth, truth_header, reducer


def _matched(result, truth):
    cat = result.catalog
    index = {sid: i for i, sid in enumerate(truth["SOURCE_ID"])}
    rows = np.array([index[s] for s in cat["SOURCE_ID"]])
    return cat, truth[rows]


def _snr(truth, header, read_noise=12.8):
    """Expected SNR in the 5-pixel aperture (shot noise of star and sky, read noise)."""
    gain, t, sky = header["GAIN"], header["EXPTIME"], header["SKY"]
    flux = truth["APER_FLUX_ADU"][:, -1]
    npix = np.pi * 5.0**2
    return flux / np.sqrt(flux / gain + npix * (sky * t / gain + read_noise**2))


def test_centroids_and_fluxes_match_truth(reduced):
    result, _, truth, header, _ = reduced
    cat, tru = _matched(result, truth)
    good = (~tru["SATURATED"]) & (cat["centroid_pixel_saturated"] == 0) & (_snr(tru, header) > 100)
    good &= (cat["min_edge_dist_pix"] > 25) & (cat["wrong_source_centroid"] == 0)
    assert good.sum() > 150
    err = np.hypot(cat["xcentroid"] - tru["X"], cat["ycentroid"] - tru["Y"])[good]
    assert np.median(err) < 0.05
    for a in range(7):
        ratio = cat["flux_adu"][good, a] / tru["APER_FLUX_ADU"][good, a]
        assert abs(np.median(ratio) - 1) < 0.01, (a, np.median(ratio))


def test_zeropoints_and_sky_match_truth(reduced):
    result, _, truth, header, _ = reduced
    zps, sky = result.zeropoints, result.sky[0]
    cat, tru = _matched(result, truth)
    injected = header["ZP"]

    def zp(q, a, sci=0):
        row = zps[(zps["quadrant"] == q) & (zps["aper_ind"] == a) & (zps["science_fov_only"] == sci)]
        assert len(row) == 1
        return row[0]["zp_adu_per_s"]

    assert abs(zp(0, 6) - injected) < 0.01
    # Every aperture against the zeropoint the truth's aperture fluxes give for the same stars.
    # 0.02 mag: for the faint majority the median background of integer-valued pixels and the
    # centroid noise move small-aperture fluxes by ~1% (the bright-star test above holds 1%).
    used = zeropoint_stars(cat, EL_NINO)
    for a in range(7):
        expected = np.median(tru["G_PRIME"][used] + 2.5 * np.log10(tru["APER_FLUX_ADU"][used, a] / header["EXPTIME"]))
        assert abs(zp(0, a) - expected) < 0.02, a
    for q in range(1, 5):
        assert abs(zp(q, 6) - injected) < 0.02, q
    assert abs(sky["median_adu_per_s"] / header["SKY"] - 1) < 0.005
    for q in range(1, 5):
        assert abs(sky[f"median_adu_quad{q}_per_s"] / header[f"SKYQ{q}"] - 1) < 0.005, q
    assert sky["has_dome"] == 0


def test_aperture_sums_and_annulus_medians_equal_photutils(reduced):
    from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry

    result, paths, _, _, _ = reduced
    image = fitsio.read(paths["detrended"]).astype(np.float64)
    cat = result.catalog
    rng = np.random.default_rng(0)
    pick = rng.choice(len(cat), 300, replace=False)
    pos = np.column_stack([cat["xcentroid"][pick], cat["ycentroid"][pick]])
    table = aperture_photometry(image, [CircularAperture(pos, r) for r in STANDARD_RADII], method="exact")
    for a in range(7):
        ours = cat[f"aper_sum_bkgsub_{a}"][pick] + cat[f"aper_bkg_{a}"][pick]
        np.testing.assert_allclose(ours, np.asarray(table[f"aperture_sum_{a}"]), rtol=1e-6)
    inside = cat["min_edge_dist_pix"][pick] > 21  # off-image annulus pixels are left out on purpose
    masks = CircularAnnulus(pos, 12.0, 20.0).to_mask(method="center")
    expected = np.array([np.median(m.get_values(image)) for m in masks])
    np.testing.assert_allclose(cat["sky_annulus_median"][pick][inside], expected[inside], rtol=1e-6)


def test_output_files_and_columns(reduced):
    result, paths, _, _, _ = reduced
    for key in ("detrended", "summary", "zp_plot", "detrended_plot", "quiver_plot"):
        assert os.path.getsize(paths[key]) > 0
    with fitsio.FITS(paths["summary"]) as f:
        assert [h.get_extname() for h in f][1:] == ["CATALOG", "ZEROPOINTS", "SKY", "CONDITIONS"]
        zps, sky, cat = f["ZEROPOINTS"].read(), f["SKY"].read(), f["CATALOG"].read()
        assert f["CATALOG"].read_header()["DATE"] == f[0].read_header()["DATE"]
    assert len(zps) == 42
    assert list(zps["quadrant"][:3]) == [0, 0, 0] and list(zps["science_fov_only"][:2]) == [0, 1]
    for col in ("quadrant", "aper_ind", "zp_adu_per_s", "n_sources_for_zp", "time_seconds",
                "bp_rp_median", "gaia_g_median", "robust_sigma_mag", "fname_raw", "science_fov_only",
                "mjd_obs", "obs_night", "target_ra_deg", "target_dec_deg", "has_dome", "max_zp_radius"):
        assert col in zps.dtype.names, col
    for col in ("time_seconds", "fname_raw", "median_adu", "median_adu_per_s", "mean_adu_sci",
                "mean_adu_quad4_per_s", "inter_quad_rms_adu", "mjd_obs", "obs_night", "has_dome"):
        assert col in sky.dtype.names, col
    for col in ("SOURCE_ID", "RA", "DEC", "PHOT_G_MEAN_MAG", "x_gaia_guess", "y_gaia_guess", "xcentroid",
                "ycentroid", "x_shift", "cmaxshift", "qmaxshift", "centroid_shift_flag",
                "aper_sum_bkgsub_6", "aper_bkg_0", "sky_annulus_median", "flux_adu",
                "wrong_source_centroid", "BP_RP", "G_PRIME", "quadrant", "min_edge_dist_pix",
                "flux_adu_per_s", "m_inst", "radius_pix", "in_science_fov", "radius_too_large",
                "has_dome", "centroid_raw_pixel_val", "centroid_pixel_saturated"):
        assert col in cat.dtype.names, col
    assert cat["flux_adu"].shape[1] == 7 and cat["m_inst"].shape[1] == 7
    np.testing.assert_allclose(cat["G_PRIME"], cat["PHOT_G_MEAN_MAG"] + 0.25 * cat["BP_RP"], rtol=1e-6)
    np.testing.assert_array_equal(cat["quadrant"], result.catalog["quadrant"])
    assert set(np.unique(cat["quadrant"])) == {1, 2, 3, 4}
    # the detrended image carries the raw header and the pipeline's keywords
    header = fitsio.read_header(paths["detrended"])
    assert header["EXPOSURE"] == 20000 and header["DOMEFLAG"] is False and header["PCDEVICE"] == "cpu"


def test_one_aper_gives_six_rows(demo_field, cpu):
    reducer = Reducer(RunOptions(one_aper=True), meta_dir=demo_field.meta_dir,
                      gaia_dir=demo_field.gaia_dir, backend=cpu)
    result = reducer.reduce(demo_field.raw)
    assert len(result.zeropoints) == 6
    assert set(result.zeropoints["aper_ind"]) == {0}
    assert result.catalog["flux_adu"].shape[1] == 1


def test_telemetry_hash_equals_summary(demo_field, cpu, redis_server, redis_client, tmp_path):
    reducer = Reducer(RunOptions(outdir=str(tmp_path), send_redis=True, write_detrended=False,
                                 checkplot=False, sci_inst_name="desi"),
                      meta_dir=demo_field.meta_dir, gaia_dir=demo_field.gaia_dir, backend=cpu)
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key="pc_test")
    _, paths, ok = process_frame(demo_field.raw, reducer, redis_settings=settings)
    assert ok
    got = redis_client.hgetall("pc_test")
    expected_fields = {"timestamp", "zp_adu_per_s", "sky_adu_per_s", "mjd_obs", "n_stars_for_zp", "flag",
                       "sky_adu_per_s_desi", "zp_adu_per_s_desi", "n_stars_for_zp_desi"}
    expected_fields |= {f"{p}_q{q}" for p in ("sky_adu_per_s", "zp_adu_per_s", "n_stars_for_zp") for q in range(1, 5)}
    conditions = fitsio.read(paths["summary"], ext="CONDITIONS")[0]
    for name in ("fwhm_arcsec", "ellipticity", "transparency", "sky_mag_arcsec2", "zp_err", "lim_mag_5sigma"):
        assert float(got.pop(name)) == conditions[name], name
    # the seed's fields, then the pointing (tests/test_wcs_refine.py checks those values)
    assert set(got) == expected_fields | set(POINTING_FIELDS)
    zps = fitsio.read(paths["summary"], ext="ZEROPOINTS")
    sky = fitsio.read(paths["summary"], ext="SKY")[0]
    whole = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == 1) & (zps["science_fov_only"] == 0)][0]
    sci = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == 1) & (zps["science_fov_only"] == 1)][0]
    assert float(got["zp_adu_per_s"]) == whole["zp_adu_per_s"]
    assert int(got["n_stars_for_zp"]) == whole["n_sources_for_zp"]
    assert float(got["zp_adu_per_s_desi"]) == sci["zp_adu_per_s"]
    assert float(got["sky_adu_per_s"]) == sky["median_adu_per_s"]
    assert float(got["sky_adu_per_s_desi"]) == sky["median_adu_sci_per_s"]
    for q in range(1, 5):
        row = zps[(zps["quadrant"] == q) & (zps["aper_ind"] == 1)][0]
        assert float(got[f"zp_adu_per_s_q{q}"]) == row["zp_adu_per_s"]
        assert int(got[f"n_stars_for_zp_q{q}"]) == row["n_sources_for_zp"]
        assert float(got[f"sky_adu_per_s_q{q}"]) == sky[f"median_adu_quad{q}_per_s"]
    assert float(got["mjd_obs"]) == sky["mjd_obs"]
    assert int(got["flag"]) == sky["has_dome"] == 0
    assert got["timestamp"].endswith("/MST/") and got["timestamp"][:4] == "2021"


def test_dome_flag_right_with_and_without_dome(tmp_path, sim_gaia_dir, small_camera, cpu):
    flags = {}
    for dome in (False, True):
        field = make_demo_field(tmp_path / str(dome), seed=5, gaia_dir=sim_gaia_dir,
                                camera=small_camera, dome=dome)
        reducer = Reducer(RunOptions(), camera=small_camera, meta_dir=field.meta_dir,
                          gaia_dir=field.gaia_dir, backend=cpu)
        flags[dome] = bool(reducer.reduce(field.raw).sky[0]["has_dome"])
    assert flags == {False: False, True: True}


def test_reduce_frame_in_memory_equals_reduce_from_file(demo_field, cpu):
    reducer = Reducer(RunOptions(), meta_dir=demo_field.meta_dir, gaia_dir=demo_field.gaia_dir, backend=cpu)
    from_file = reducer.reduce(demo_field.raw)
    frame = read_raw(demo_field.raw, reducer.camera)
    in_memory = reducer.reduce_frame(frame, read_wcs(wcs_path_for(demo_field.raw)))
    assert len(in_memory.catalog) > 1000
    for name in ("xcentroid", "ycentroid", "flux_adu", "sky_annulus_median"):
        np.testing.assert_array_equal(in_memory.catalog[name], from_file.catalog[name])
    np.testing.assert_array_equal(in_memory.zeropoints["zp_adu_per_s"], from_file.zeropoints["zp_adu_per_s"])
    assert in_memory.raw_path == from_file.raw_path and in_memory.obs_night == from_file.obs_night
