"""The night generator: a tracked field, a slew, a passing cloud, one META and one tree."""

import os

import fitsio
import numpy as np
from astropy.io import fits

from pc_gpu.sim import make_demo_field, simulate_night
from pc_gpu.sim import night


def test_night_sequence(tmp_path, sim_gaia_dir, small_camera):
    paths = simulate_night(tmp_path / "night", n_frames=6, slew_after=4, cloud_centre_frame=2,
                           cloud_width_frames=1.0, camera=small_camera, gaia_dir=sim_gaia_dir,
                           fields=((150.0, 30.0), (152.0, 31.0)))
    assert len(paths.raw) == len(paths.wcs) == len(paths.truth) == 6
    assert sorted(os.listdir(paths.meta_dir)) == sorted(
        ["pc_badpix_mask.fits.gz", "pc_master_bias.fits.gz", "pc_master_dark.fits.gz",
         "pc_master_flat.fits.gz"])
    index = fitsio.read(paths.index)
    np.testing.assert_array_equal(index["DEV_FNUM"], np.arange(1, 7))
    np.testing.assert_allclose(np.diff(index["MJD_OBS"]) * 86400, 20.0, atol=1e-3)
    np.testing.assert_array_equal(index["FIELD"], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(index["ZPFLAG"], [0, 0, 0, 0, 1, 0])
    assert np.argmin(index["ZP"]) == 2 and index["ZP"][2] < 17.58 - 0.5
    assert index["ZP"][5] > 17.58 - 0.01
    headers = [fits.getheader(p) for p in paths.raw]
    assert [h["ZPFLAG"] for h in headers] == [0, 0, 0, 0, 1, 0]
    assert headers[0]["RADEG"] == 150.0 and headers[5]["RADEG"] == 152.0
    names = [os.path.basename(p) for p in paths.raw]
    assert names == sorted(names) and len(set(names)) == 6
    for raw, wcs in zip(paths.raw, paths.wcs):
        assert wcs == raw[:-5] + ".wcs" and os.path.exists(wcs)


def test_demo_field_paths(small_field, small_camera):
    for path in (small_field.raw, small_field.wcs, small_field.truth):
        assert os.path.isfile(path)
    assert os.path.isdir(small_field.meta_dir) and os.path.isdir(small_field.gaia_dir)
    assert small_field.camera == small_camera


def test_demo_field_reuses_tree(tmp_path, sim_gaia_dir, small_camera):
    before = sorted(os.listdir(sim_gaia_dir))
    mtimes = [os.path.getmtime(os.path.join(sim_gaia_dir, n)) for n in before]
    field = make_demo_field(tmp_path, seed=1, camera=small_camera, gaia_dir=sim_gaia_dir,
                            n_streaks=1)
    assert sorted(os.listdir(sim_gaia_dir)) == before
    assert [os.path.getmtime(os.path.join(sim_gaia_dir, n)) for n in before] == mtimes
    assert fitsio.read_header(field.truth, ext="TRUTH")["NSTREAK"] == 1


def test_console_main(tmp_path, sim_gaia_dir):
    code = night.main([str(tmp_path / "n"), "--n-frames", "2", "--nx", "300", "--ny", "200",
                       "--gaia-dir", sim_gaia_dir, "--field", "150,30"])
    assert code == 0
    assert len([n for n in os.listdir(tmp_path / "n" / "raw") if n.endswith(".wcs")]) == 2
    assert night.main([str(tmp_path / "m"), "--field", "north"]) == 1
    assert night.main([str(tmp_path / "m"), "--n-frames", "0"]) == 1
