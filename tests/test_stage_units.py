"""Small stage functions with exact answers (the centroid shift limit, quadrant boundaries,
instrumental magnitudes of non-positive fluxes, the flat field's default), and the
per-quadrant sky against a simulated sky gradient."""

import numpy as np
import pytest

from pc_gpu.camera import EL_NINO
from pc_gpu.catalog import _m_inst, quadrant_of
from pc_gpu.centroid import max_centroid_shift


def test_max_centroid_shift_ramp():
    """clip(2.5 + 2 r / r_max, 2.5, 4.5), r from (nx/2 + 0.5, ny/2 + 0.5), r_max that point's
    distance from the origin."""
    xc, yc = EL_NINO.nx / 2 + 0.5, EL_NINO.ny / 2 + 0.5
    r_max = np.hypot(xc, yc)
    x = np.array([xc, xc + 100.0, xc, 0.0, -50.0])
    y = np.array([yc, yc, yc - 300.0, 0.0, -50.0])
    expected = [2.5, 2.5 + 200.0 / r_max, 2.5 + 600.0 / r_max, 4.5, 4.5]
    np.testing.assert_allclose(max_centroid_shift(x, y, EL_NINO), expected, rtol=1e-12)


def test_quadrant_boundaries():
    """The centre (nx/2 - 0.5, ny/2 - 0.5) and the lines through it belong to the left/bottom."""
    xc, yc = EL_NINO.centre
    e = 1e-9
    x = np.array([xc, xc + e, xc, xc + e, 0.0, EL_NINO.nx - 1.0])
    y = np.array([yc, yc, yc + e, yc + e, EL_NINO.ny - 1.0, 0.0])
    assert list(quadrant_of(x, y, EL_NINO)) == [3, 4, 2, 1, 2, 4]


def test_m_inst_is_nan_for_non_positive_flux_without_warnings():
    # pytest turns warnings into errors: a divide-by-zero warning from log10(0) would fail here
    np.testing.assert_array_equal(_m_inst(np.array([0.0, -3.0, 10.0, 1.0])), [np.nan, np.nan, -2.5, 0.0])


def test_quadrant_skies_and_their_rms_follow_a_sky_gradient(sim_cache, sim_gaia_dir, small_camera):
    """A sky 30 % brighter at the top than at the bottom: each quadrant's median is the
    simulator's SKYQ (noise-free frame: stars on ~1 % of pixels move a median by < 0.3 %), and
    inter_quad_rms is the rms of those four about their median."""
    from pc_gpu.backend import get_backend
    from pc_gpu.pipeline import Reducer, RunOptions
    from pc_gpu.sim import make_demo_field
    import fitsio

    field = sim_cache.get("gradient_field", lambda d: make_demo_field(
        d, seed=2, gaia_dir=sim_gaia_dir, camera=small_camera, noise=False, sky_gradient=0.3))
    header = fitsio.read_header(field.truth, ext="TRUTH")
    reducer = Reducer(RunOptions(), camera=small_camera, meta_dir=field.meta_dir,
                      gaia_dir=field.gaia_dir, backend=get_backend("cpu"))
    sky = reducer.reduce(field.raw).sky[0]
    truth = np.array([header[f"SKYQ{q}"] for q in range(1, 5)])
    assert truth[0] / truth[2] > 1.1  # top quadrants brighter than the bottom ones
    measured = np.array([sky[f"median_adu_quad{q}_per_s"] for q in range(1, 5)])
    np.testing.assert_allclose(measured, truth, rtol=0.003)
    expected_rms = np.sqrt(np.mean((truth - np.median(truth)) ** 2)) * header["EXPTIME"]
    assert sky["inter_quad_rms_adu"] == pytest.approx(expected_rms, rel=0.03)


def test_detrend_divides_by_the_flat_unless_told_not_to(small_camera):
    from types import SimpleNamespace

    from pc_gpu.backend import get_backend
    from pc_gpu.detrend import detrend
    from pc_gpu.kernels.common import bad_pixel_gather

    be = get_backend("cpu")
    shape = small_camera.shape
    calib = SimpleNamespace(bias=np.full(shape, 100, np.float32), dark=np.zeros(shape, np.float32),
                            flat=np.full(shape, 2.0, np.float32),
                            gather=be.gather_to_device(bad_pixel_gather(np.zeros(shape, bool))))
    raw = np.full(shape, 300, np.uint16)
    assert np.all(detrend(raw, calib, 20.0, be) == 100.0)
    assert np.all(detrend(raw, calib, 20.0, be, flatfield=False) == 200.0)
