"""Checkplots: which stars -zp.png and -quiver.png draw (`plots.zeropoint_plot_stars`,
`plots.quiver_plot_stars`), and the plot flags of pc-proc (--sci_fov_checkplot,
--plot_quiver, --plot_detrended, --skip_checkplot) by what the PNGs show."""

import os

import fitsio
import numpy as np
import pytest
from PIL import Image

from pc_gpu.backend import get_backend
from pc_gpu.camera import EL_NINO
from pc_gpu.cli import main
from pc_gpu.pipeline import Reducer, RunOptions
from pc_gpu.plots import quiver_plot_stars, zeropoint_plot_stars
from pc_gpu.zeropoints import zeropoint_stars


@pytest.fixture(scope="module")
def sci_camera(small_camera):
    """The small camera with a science field (150 pix radius) smaller than the frame."""
    return small_camera.with_(sci_fov_radius_pix=150.0)


@pytest.fixture(scope="module")
def catalog(small_field, sci_camera):
    reducer = Reducer(RunOptions(), camera=sci_camera, meta_dir=small_field.meta_dir,
                      gaia_dir=small_field.gaia_dir, backend=get_backend("cpu"))
    return reducer.reduce(small_field.raw).catalog


def _planted(catalog, camera, selection):
    """Six stars the selection takes, each given one defect; returns (catalogue, rows)."""
    rows = np.flatnonzero(selection(catalog, camera))[:7]
    c = catalog.copy()
    c["centroid_pixel_saturated"][rows[0]] = 1
    c["centroid_raw_pixel_val"][rows[1]] = int(camera.zp_saturation_adu)       # at the cut: out
    c["centroid_raw_pixel_val"][rows[2]] = int(camera.zp_saturation_adu) - 1   # just below: in
    c["wrong_source_centroid"][rows[3]] = 1
    c["centroid_shift_flag"][rows[4]] = True
    c["radius_too_large"][rows[5]] = 1
    c["PHOT_BP_MEAN_MAG"][rows[6]] = np.nan
    return c, rows


def test_zeropoint_plot_stars_are_the_zeropoint_stars(catalog, sci_camera):
    base = zeropoint_plot_stars(catalog, sci_camera)
    np.testing.assert_array_equal(base, zeropoint_stars(catalog, sci_camera))
    assert 50 < base.sum() < len(catalog)
    c, rows = _planted(catalog, sci_camera, zeropoint_plot_stars)
    assert list(zeropoint_plot_stars(c, sci_camera)[rows]) == [False, False, True, False, False, False, False]
    # the untouched stars keep their selection
    others = np.setdiff1d(np.arange(len(c)), rows)
    np.testing.assert_array_equal(zeropoint_plot_stars(c, sci_camera)[others], base[others])


def test_zeropoint_plot_stars_science_field_option(catalog, sci_camera):
    base = zeropoint_plot_stars(catalog, sci_camera)
    sci = zeropoint_plot_stars(catalog, sci_camera, sci_fov_only=True)
    inside = catalog["radius_pix"] < sci_camera.sci_fov_radius_pix
    np.testing.assert_array_equal(sci, base & inside)
    assert 10 < sci.sum() < base.sum() - 10
    np.testing.assert_array_equal(zeropoint_plot_stars(catalog, sci_camera, sci_fov_only=False), base)


def test_quiver_plot_stars_cut_saturation_shift_and_wrong_source_only(catalog, sci_camera):
    base = quiver_plot_stars(catalog, sci_camera)
    ok = ((catalog["centroid_pixel_saturated"] == 0)
          & (catalog["centroid_raw_pixel_val"] < sci_camera.zp_saturation_adu)
          & ~catalog["centroid_shift_flag"] & (catalog["wrong_source_centroid"] == 0))
    np.testing.assert_array_equal(base, ok)
    assert 50 < base.sum() < len(catalog)
    c, rows = _planted(catalog, sci_camera, quiver_plot_stars)
    # radius_too_large and a missing BP do not matter for a centroid shift
    assert list(quiver_plot_stars(c, sci_camera)[rows]) == [False, False, True, False, False, True, True]


# ---------------------------------------------------------------- the plot flags of pc-proc

def _png_text(path):
    with Image.open(path) as image:
        return dict(image.text), image.size


@pytest.fixture(scope="module")
def plot_runs(demo_field, tmp_path_factory):
    """pc-proc on the demo frame: plain, and with --sci_fov_checkplot --plot_quiver
    --plot_detrended; returns {name: (exit status, output directory)}."""
    runs = {}
    for name, flags in (("plain", []), ("plots", ["--sci_fov_checkplot", "--plot_quiver", "--plot_detrended"]),
                        ("skip", ["--skip_checkplot"])):
        out = tmp_path_factory.mktemp(f"plots_{name}")
        rc = main([demo_field.raw, "--outdir", str(out), "--device", "cpu", "--dont_write_detrended",
                   "--meta_dir", demo_field.meta_dir, "--gaia_dir", demo_field.gaia_dir, *flags])
        runs[name] = (rc, str(out))
    return runs


def _output(outdir, suffix):
    names = [n for n in os.listdir(outdir) if n.endswith(suffix)]
    return os.path.join(outdir, names[0]) if names else None


def test_zp_checkplot_draws_the_zeropoint_stars_of_its_field(plot_runs):
    for name, sci in (("plain", False), ("plots", True)):
        rc, out = plot_runs[name]
        assert rc == 0
        summary = _output(out, "-summary.fits")
        cat = fitsio.read(summary, ext="CATALOG")
        zps = fitsio.read(summary, ext="ZEROPOINTS")
        text, _ = _png_text(_output(out, "-zp.png"))
        sel = zeropoint_stars(cat, EL_NINO)
        if sci:
            sel &= cat["in_science_fov"] != 0
        drawn = sel & np.isfinite(cat["m_inst"][:, 1]) & np.isfinite(cat["G_PRIME"])
        assert int(text["Stars drawn"]) == drawn.sum()
        row = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == 1) & (zps["science_fov_only"] == int(sci))][0]
        assert float(text["Zeropoint"]) == pytest.approx(row["zp_adu_per_s"], abs=1e-6)
        assert text["Aperture radius"] == "2.5"
        assert ("sci FOV" in text["Title"]) == sci
        assert text["Title"].startswith(os.path.basename(summary).removesuffix("-summary.fits") + "; ")
        full = fitsio.read(summary, ext="CONDITIONS")[0]
        assert f'FWHM {full["fwhm_arcsec"]:.1f}"; transparency {full["transparency"]:.2f}' in text["Title"]
    # the science field holds a minority of the frame's stars
    plain, sci = (int(_png_text(_output(plot_runs[n][1], "-zp.png"))[0]["Stars drawn"]) for n in ("plain", "plots"))
    assert 100 < sci < plain / 3


def test_quiver_and_detrended_plots_only_when_asked(plot_runs):
    _, plain = plot_runs["plain"]
    assert _output(plain, "-quiver.png") is None and _output(plain, "-detrended.png") is None
    _, out = plot_runs["plots"]
    cat = fitsio.read(_output(out, "-summary.fits"), ext="CATALOG")
    text, _ = _png_text(_output(out, "-quiver.png"))
    assert int(text["Stars drawn"]) == quiver_plot_stars(cat, EL_NINO).sum() > 1000
    _, size = _png_text(_output(out, "-detrended.png"))
    # the 3296 x 2472 frame downsampled by 2 (about 1100 pix wide at most 2x), plus margins
    assert 1600 < size[0] < 1800 and 1200 < size[1] < 1350


def test_skip_checkplot_writes_no_zp_png(plot_runs):
    rc, out = plot_runs["skip"]
    assert rc == 0 and _output(out, "-summary.fits") is not None
    assert _output(out, "-zp.png") is None
    assert _output(plot_runs["plain"][1], "-zp.png") is not None


def test_zeropoint_plot_does_not_depend_on_earlier_plots(tmp_path):
    """Each thread redraws one kept figure for every frame: a plot drawn after others (more or
    fewer stars, no zeropoint, no star at all) is byte for byte the plot a new thread draws."""
    import threading

    from pc_gpu.plots import zeropoint_plot

    rng = np.random.default_rng(5)
    g = rng.uniform(8.0, 17.0, 1000)
    cases = {"many": (g, g - 17.5 + rng.normal(0, 0.05, 1000), 17.5), "few": (g[:40] + 1.0, g[:40] - 19.0, 19.0),
             "no zp": (g[:500], g[:500] - 17.0, np.nan), "empty": (np.zeros(0), np.zeros(0), np.nan)}

    def draw(name):
        path = tmp_path / f"{name}-{threading.get_ident()}.png"
        gp, m, zp = cases[name]
        zeropoint_plot(path, gp, m, zp, title=name, n_used=len(gp), aperture_radius_pix=2.5)
        return path.read_bytes()

    for name in cases:
        fresh = []
        thread = threading.Thread(target=lambda: fresh.append(draw(name)))
        thread.start()
        thread.join()
        for other in cases:
            draw(other)
        assert draw(name) == fresh[0], name
        text, size = _png_text(tmp_path / f"{name}-{threading.get_ident()}.png")
        assert size == (600, 500) and text["Zeropoint"] == f"{cases[name][2]:.6f}"
        assert int(text["Stars drawn"]) == len(cases[name][0])
