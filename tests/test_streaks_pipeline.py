"""Streak detection inside the reduction: --detect_streaks, --plot_streaks, --streak_time_limit."""

import fitsio
import numpy as np
import pytest

from pc_gpu.backend import get_backend
from pc_gpu.cli import build_parser, options_from_args
from pc_gpu.errors import InputError
from pc_gpu.pipeline import Reducer, RunOptions, process_frame
from pc_gpu.sim import make_demo_field
from pc_gpu.streaks import STREAK_DTYPE
from pc_gpu.zeropoints import zeropoint_stars


@pytest.fixture(scope="module")
def streak_field(tmp_path_factory, sim_gaia_dir, small_camera):
    """A small frame with one bright streak across it (through the brightest stars' area)."""
    return make_demo_field(tmp_path_factory.mktemp("streak_field"), seed=4, gaia_dir=sim_gaia_dir,
                           camera=small_camera,
                           streaks=[(-50.0, 60.0, 650.0, 400.0, 1.1, 40.0)])


def _reduce(field, camera, outdir, **options):
    reducer = Reducer(RunOptions(outdir=str(outdir), **options), camera=camera,
                      meta_dir=field.meta_dir, gaia_dir=field.gaia_dir, backend=get_backend("cpu"))
    return process_frame(field.raw, reducer)


def test_streak_table_flags_and_zeropoints(streak_field, small_camera, tmp_path):
    result, paths, _ = _reduce(streak_field, small_camera, tmp_path / "on", detect_streaks=True,
                               plot_detrended=True, plot_streaks=True)
    table = fitsio.read(paths["summary"], ext="STREAKS")
    header = fitsio.read_header(paths["summary"], ext="STREAKS")
    assert header["STRKDET"] is True and header["STRKTOUT"] is False and header["NSTREAKS"] == 1
    assert len(table) == 1 and table.dtype.names == STREAK_DTYPE.names
    row = table[0]
    assert row["angle_pix_deg"] == pytest.approx(np.degrees(np.arctan2(340, 700)), abs=0.2)
    assert row["n_ends_at_edge"] == 2 and np.isfinite(row["ra0"])
    cat = fitsio.read(paths["summary"], ext="CATALOG")
    assert cat["on_streak"].dtype.kind == "i" and cat["on_streak"].dtype.itemsize == 2
    on = cat["on_streak"] != 0
    # every flagged star lies near the injected line, and none of them makes the zeropoints
    d = np.abs(-(cat["xcentroid"] + 50) * 340 + (cat["ycentroid"] - 60) * 700) / np.hypot(700, 340)
    assert np.all(d[on] < 12)
    # and every star whose centroid lies on the line (within 8 pix) is flagged
    assert on.sum() >= 3 and np.all(on[d < 8])
    assert not np.any(zeropoint_stars(result.catalog, small_camera) & on)
    assert paths["detrended_plot"].endswith(".png")

    # without detection: no STREAKS HDU, no on_streak column
    _, paths_off, _ = _reduce(streak_field, small_camera, tmp_path / "off")
    with fitsio.FITS(paths_off["summary"]) as f:
        assert "STREAKS" not in [h.get_extname() for h in f]
        assert "on_streak" not in f["CATALOG"].get_colnames()


def test_time_limit_leaves_other_outputs_alone(streak_field, small_camera, tmp_path, caplog):
    _, paths, _ = _reduce(streak_field, small_camera, tmp_path / "out", detect_streaks=True,
                          streak_time_limit=0.0)
    table = fitsio.read(paths["summary"], ext="STREAKS")
    header = fitsio.read_header(paths["summary"], ext="STREAKS")
    assert len(table) == 0 and header["STRKTOUT"] is True
    assert "streak detection passed" in caplog.text
    cat = fitsio.read(paths["summary"], ext="CATALOG")
    assert not cat["on_streak"].any()
    _, ref, _ = _reduce(streak_field, small_camera, tmp_path / "ref")
    for ext in ("ZEROPOINTS", "SKY"):
        a, b = fitsio.read(paths["summary"], ext=ext), fitsio.read(ref["summary"], ext=ext)
        for name in a.dtype.names:
            if a.dtype[name].kind == "f":
                np.testing.assert_array_equal(a[name], b[name])


def test_command_line_flags():
    args = build_parser().parse_args(["x.fits", "--detect_streaks", "--plot_streaks",
                                      "--streak_time_limit", "1.5"])
    o = options_from_args(args)
    assert o.detect_streaks and o.plot_streaks and o.streak_time_limit == 1.5
    with pytest.raises(InputError):
        RunOptions(streak_time_limit=-1.0)
