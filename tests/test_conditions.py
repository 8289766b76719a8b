"""Observing conditions against the simulator's truth: PSF FWHM and ellipticity per quadrant,
calibrated flux errors, sky brightness, transparency under grey cloud, the 5-sigma limit, the
weighted zeropoint, and the outputs (CATALOG column order,
CONDITIONS table, telemetry fields)."""

import fitsio
import numpy as np
import pytest

from pc_gpu.backend import get_backend
from pc_gpu.camera import EL_NINO
from pc_gpu.conditions import REGIONS, TELEMETRY_FIELDS
from pc_gpu.pipeline import Reducer, RunOptions, process_frame
from pc_gpu.sim import make_demo_field
from pc_gpu.sim.psf import PSFField, halfmax_fwhm
from pc_gpu.telemetry import TELEMETRY_FIELDS as SEED_FIELDS, telemetry_record

PSF = PSFField(fwhm_pix=(1.6, 2.4, 3.0, 3.5), ellipticity=(0.0, 0.1, 0.2, 0.15), pa_deg=(0.0, 30.0, 100.0, 150.0))
MID_CAMERA = EL_NINO.with_(nx=1200, ny=900)


def _reduce(field, camera, **options):
    reducer = Reducer(RunOptions(device="cpu", **options), camera=camera, meta_dir=field.meta_dir,
                      gaia_dir=field.gaia_dir, backend=get_backend("cpu"))
    return reducer, reducer.reduce(field.raw)


def _matched_truth(field, catalog):
    truth = fitsio.read(field.truth, ext="TRUTH")
    index = {sid: i for i, sid in enumerate(truth["SOURCE_ID"])}
    return truth[[index[s] for s in catalog["SOURCE_ID"]]], fitsio.read_header(field.truth, ext="TRUTH")


@pytest.fixture(scope="module")
def psf_frame(sim_cache, sim_gaia_dir):
    """1200 x 900 frame: a different PSF in each quadrant, stars to G' 19 below the catalogue."""
    field = sim_cache.get("cond_psf", lambda d: make_demo_field(d, seed=1, gaia_dir=sim_gaia_dir, camera=MID_CAMERA,
                                                                psf=PSF, faint_g_max=19.0))
    return field, _reduce(field, MID_CAMERA)[1]


@pytest.fixture(scope="module")
def demo_reduced(demo_field):
    """The full-size demo frame (no stars below the catalogue: true aperture fluxes are exact)."""
    return _reduce(demo_field, demo_field.camera)


def test_fwhm_and_ellipticity_per_quadrant(psf_frame):
    _, result = psf_frame
    cond = result.conditions
    for q in range(1, 5):
        row = cond[cond["region"] == f"quad{q}".encode()][0]
        assert row["n_psf_stars"] >= 5
        truth = halfmax_fwhm(PSF.fwhm_pix[q - 1])
        # the PSF's 10% wing reads +1.9% (1.6 pix) to +0.4% (3.5 pix) without noise (README)
        assert abs(row["fwhm_pix"] / truth - 1) < 0.03, (q, row["fwhm_pix"], truth)
        assert row["fwhm_arcsec"] == pytest.approx(row["fwhm_pix"] * MID_CAMERA.pixel_scale_arcsec, rel=1e-3)
        assert abs(row["ellipticity"] - PSF.ellipticity[q - 1]) < 0.02, (q, row["ellipticity"])
        if PSF.ellipticity[q - 1] >= 0.1:
            diff = (row["psf_pa_deg"] - PSF.pa_deg[q - 1] + 90) % 180 - 90
            assert abs(diff) < 10, (q, row["psf_pa_deg"])
    # per-star FWHM: measured stars only, each near its quadrant's truth
    cat = result.catalog
    measured = np.isfinite(cat["fwhm_pix"])
    assert measured.sum() == cond[cond["region"] == b"full"][0]["n_psf_stars"]
    truth = halfmax_fwhm(np.asarray(PSF.fwhm_pix)[cat["quadrant"][measured] - 1])
    assert np.median(np.abs(cat["fwhm_pix"][measured] / truth - 1)) < 0.05


@pytest.mark.parametrize("fwhm", [1.2, 1.6, 2.4])
def test_moments_of_pixel_integrated_gaussian_stars_are_exact(fwhm):
    """Noise-free round Gaussian stars integrated over square pixels (exact erf), at random
    sub-pixel positions: every converged star's FWHM (moments less the pixel's 1/12) within
    0.3% of the truth and its ellipticity below 0.003 (0.6% and 0.006 at 1.2 pix), however
    undersampled (the grid-matched model leaves only its O(kappa4^2) term; sampling the weight
    alone gives a few % that varies with the sub-pixel position)."""
    from scipy.special import erf

    from pc_gpu.conditions import _shape
    from pc_gpu.kernels import cpu

    rng = np.random.default_rng(7)
    sigma, side, n = fwhm / (2 * np.sqrt(2 * np.log(2))), 24, 36
    x = (np.arange(n) % 6 + 1) * side + rng.uniform(-0.5, 0.5, n)
    y = (np.arange(n) // 6 + 1) * side + rng.uniform(-0.5, 0.5, n)
    edges = np.arange(7 * side + 1) - 0.5
    cdf_x = 0.5 * erf((edges[None, :] - x[:, None]) / (np.sqrt(2) * sigma))
    cdf_y = 0.5 * erf((edges[None, :] - y[:, None]) / (np.sqrt(2) * sigma))
    image = 1e4 * np.einsum("si,sj->ij", np.diff(cdf_y, axis=1), np.diff(cdf_x, axis=1)).astype(np.float32)
    moments, status = cpu.psf_moments(image, x + rng.uniform(-0.3, 0.3, n), y + rng.uniform(-0.3, 0.3, n),
                                      np.zeros(n))
    ok = status == 0
    assert ok.mean() >= (0.8 if fwhm < 1.6 else 1.0), status  # a few of the 1.2 pix stars converge slowly
    measured, ell, _ = _shape(moments[ok, 2] - 1 / 12, moments[ok, 3] - 1 / 12, moments[ok, 4])
    tolerance = 0.003 if fwhm >= 1.6 else 0.006  # the Edgeworth remainder grows below 1.6 pix
    assert np.abs(measured / fwhm - 1).max() < tolerance
    assert ell.max() < tolerance


def test_flux_errors_are_calibrated(demo_reduced, demo_field):
    """(measured - true) / error has a standard deviation within 10% of 1 in three magnitude
    bins at r = 2.5 and 5 pix (stars with a flagged centroid, saturated, at the edge or with a
    neighbour within 12 pix left out; pulls beyond 6, blends with stars off the catalogue's
    edge, dropped before the standard deviation)."""
    reducer, result = demo_reduced
    cat = result.catalog
    truth, _ = _matched_truth(demo_field, cat)
    from scipy.spatial import cKDTree

    ok = ((cat["centroid_shift_flag"] == 0) & (cat["centroid_pixel_saturated"] == 0)
          & (cat["centroid_raw_pixel_val"] < EL_NINO.zp_saturation_adu) & (cat["min_edge_dist_pix"] > 25))
    xy = np.column_stack([truth["X"], truth["Y"]])
    ok &= cKDTree(xy).query(xy, k=2)[0][:, 1] > 12  # no other star's light in the aperture or annulus edge
    g = cat["G_PRIME"]
    for aperture in (1, 6):
        pull = (cat["flux_adu"][:, aperture] - truth["APER_FLUX_ADU"][:, aperture]) / cat["flux_adu_err"][:, aperture]
        for lo, hi in ((10.0, 13.0), (13.0, 14.5), (14.5, 15.6)):
            sel = ok & (g >= lo) & (g < hi) & np.isfinite(pull)
            p = pull[sel]
            p = p[np.abs(p) < 6]
            assert len(p) > 100, (aperture, lo, len(p))
            assert abs(np.std(p) - 1) < 0.1, (aperture, lo, hi, np.std(p))
    assert np.allclose(cat["snr"], cat["flux_adu"] / cat["flux_adu_err"], equal_nan=True)
    pos = cat["flux_adu"] > 0
    assert np.allclose(cat["m_inst_err"][pos], 2.5 / np.log(10) / cat["snr"][pos])


def test_five_sigma_limit_matches_the_measured_snr(demo_reduced, demo_field):
    """The empirical SNR (true flux over the scatter of measured - true, per 0.25 mag of G')
    crosses 5 within 0.2 mag of lim_mag_5sigma."""
    _, result = demo_reduced
    cat = result.catalog
    truth, _ = _matched_truth(demo_field, cat)
    k = 1
    ok = (cat["centroid_shift_flag"] == 0) & (cat["min_edge_dist_pix"] > 25)
    g = cat["G_PRIME"]
    centres, snr = [], []
    for lo in np.arange(13.0, 15.5, 0.25):
        sel = ok & (g >= lo) & (g < lo + 0.25)
        diff = cat["flux_adu"][sel, k] - truth["APER_FLUX_ADU"][sel, k]
        spread = 1.4826 * np.median(np.abs(diff - np.median(diff)))
        centres.append(lo + 0.125)
        snr.append(np.median(truth["APER_FLUX_ADU"][sel, k]) / spread)
    snr = np.array(snr)
    assert snr[0] > 5 > snr[-1]
    crossing = np.interp(np.log10(5), np.log10(snr[::-1]), np.array(centres)[::-1])
    lim = result.conditions[0]["lim_mag_5sigma"]
    assert abs(lim - crossing) < 0.2, (lim, crossing)


@pytest.mark.parametrize("cloud", [0.1, 1.0])
def test_sky_brightness_and_transparency_under_grey_cloud(cloud, sim_cache, sim_gaia_dir):
    camera = EL_NINO.with_(nx=1000, ny=750)
    field = sim_cache.get(f"cond_cloud{cloud}", lambda d: make_demo_field(
        d, seed=5, gaia_dir=sim_gaia_dir, camera=camera, cloud_mag=cloud, fwhm_pix=2.0, fwhm_corner_pix=2.0))
    _, result = _reduce(field, camera)
    _, header = _matched_truth(field, result.catalog)
    full = result.conditions[0]
    assert full["transparency"] == pytest.approx(10 ** (-0.4 * cloud), rel=0.01)
    true_sky_mag = header["ZP"] - 2.5 * np.log10(header["SKY"] / camera.pixel_scale_arcsec ** 2)
    assert abs(full["sky_mag_arcsec2"] - true_sky_mag) < 0.01
    if cloud > 0.5:
        return
    # the weighted zeropoint under thin cloud, against the truth as in the test below: with the
    # frames there, three differently simulated frames within 0.002 mag
    from pc_gpu.zeropoints import zeropoint_stars

    truth, _ = _matched_truth(field, result.catalog)
    good = zeropoint_stars(result.catalog, camera)
    m_true = -2.5 * np.log10(truth["APER_FLUX_ADU"][:, 1] / result.exptime_s)
    expected = np.median(result.catalog["G_PRIME"][good] - m_true[good])
    assert abs(full["zp"] - expected) < 0.002, (full["zp"] - expected, full["zp_median"] - expected)


def test_weighted_zeropoint_is_unbiased_on_faint_crowded_frames(psf_frame, demo_reduced, demo_field):
    """Against the truth (median of G' - m_true over the same stars, m_true from each star's
    exact aperture flux): the weighted zeropoint within 0.002 mag on the full-size demo frame,
    and within 0.002 mag plus twice its error in each quadrant (each with its own PSF) of the
    small frame with stars below the catalogue. The full-size frames with those stars, where the
    seed's median reads 0.003-0.006 mag bright, are in benchmarks/bench_conditions.py."""
    cases = [(psf_frame[0], psf_frame[1], range(1, 5)), (demo_field, demo_reduced[1], [0])]
    from pc_gpu.zeropoints import zeropoint_stars

    for field, result, quadrants in cases:
        cat = result.catalog
        truth, _ = _matched_truth(field, cat)
        good = zeropoint_stars(cat, EL_NINO)
        m_true = -2.5 * np.log10(truth["APER_FLUX_ADU"][:, 1] / result.exptime_s)
        for q in quadrants:
            region = good if q == 0 else good & (cat["quadrant"] == q)
            expected = np.median(cat["G_PRIME"][region] - m_true[region])
            row = result.conditions[result.conditions["quadrant"] == q][0]
            # a quadrant of the small frame has ~30 stars: there its error bar sets the bound
            bound = 0.002 if q == 0 else 0.002 + 2 * row["zp_err"]
            assert abs(row["zp"] - expected) < bound, (q, row["zp"] - expected, row["zp_median"] - expected)
            assert 0 < row["zp_err"] < 0.01


def test_outputs_carry_the_conditions(small_field, tmp_path):
    """CATALOG keeps the original columns first, in order; CONDITIONS has one row per region;
    the telemetry record is the seed's 21 fields, in order, then the six frame values."""
    camera = small_field.camera
    reducer = Reducer(RunOptions(outdir=str(tmp_path), device="cpu", checkplot=False, write_detrended=False),
                      camera=camera, meta_dir=small_field.meta_dir, gaia_dir=small_field.gaia_dir)
    result, paths, _ = process_frame(small_field.raw, reducer)
    cat = fitsio.read(paths["summary"], ext="CATALOG")
    names = list(cat.dtype.names)
    first_new = names.index("flux_adu_err")
    assert names[first_new - 1] == "centroid_pixel_saturated"
    assert names[first_new:] == ["flux_adu_err", "snr", "m_inst_err", "psf_cxx", "psf_cyy", "psf_cxy",
                                 "fwhm_pix", "ellipticity", "psf_pa_deg"]
    assert cat["flux_adu_err"].shape == cat["flux_adu"].shape
    cond = fitsio.read(paths["summary"], ext="CONDITIONS")
    assert [r.strip() for r in cond["region"].astype(str)] == [r[0] for r in REGIONS]
    assert (cond["fname_raw"].astype(str) == small_field.raw).all()
    record = telemetry_record(result.zeropoints, result.sky, result.timestamp, standard_aperture=1,
                              conditions=result.conditions)
    seed = [f.format(inst="desi") for f in SEED_FIELDS]
    assert list(record)[:21] == seed and list(record)[21:] == list(TELEMETRY_FIELDS)
    for name in TELEMETRY_FIELDS:
        assert record[name] == pytest.approx(float(cond[0][name]))
