"""Small stage functions with exact answers: the centroid shift limit, quadrant boundaries,
instrumental magnitudes of non-positive fluxes."""

import numpy as np

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
