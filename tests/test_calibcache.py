"""The calibration disk cache returns what the files hold and notices replaced files."""

import os
import shutil

import numpy as np

from pc_gpu.calibcache import cache_root, load_calibrations
from pc_gpu.kernels.common import bad_pixel_gather
from pc_gpu.rawio import CALIB_FILES, read_calibrations


def _assert_same(a, b):
    for name in ("bias", "dark", "flat", "mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_cache_round_trip_and_invalidation(small_field, small_camera, tmp_path):
    meta = tmp_path / "meta"
    shutil.copytree(small_field.meta_dir, meta)
    direct = read_calibrations(str(meta), small_camera)
    first, gather1 = load_calibrations(str(meta), small_camera)
    _assert_same(first, direct)
    cached = os.listdir(os.path.join(cache_root(), "calibrations"))
    second, gather2 = load_calibrations(str(meta), small_camera)
    assert os.listdir(os.path.join(cache_root(), "calibrations")) == cached
    _assert_same(second, direct)
    reference = bad_pixel_gather(direct.mask)
    for g in (gather1, gather2):
        np.testing.assert_array_equal(g.index, reference.index)
        np.testing.assert_array_equal(g.weight, reference.weight)
    # replacing a file (new size or time) gives a new cache entry with the new contents
    os.remove(meta / CALIB_FILES["flat"])
    shutil.copy(os.path.join(small_field.meta_dir, CALIB_FILES["bias"]), meta / CALIB_FILES["flat"])
    os.utime(meta / CALIB_FILES["flat"], ns=(1, 1))
    third, _ = load_calibrations(str(meta), small_camera)
    np.testing.assert_array_equal(third.flat, direct.bias)
    assert len(os.listdir(os.path.join(cache_root(), "calibrations"))) == len(cached) + 1
