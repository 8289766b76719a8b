"""Pixel kernels (detrend, bad-pixel gather, sky order statistics) against plain references."""

import numpy as np
import pytest

from pc_gpu.backend import get_backend
from pc_gpu.errors import PCError
from pc_gpu.kernels import cpu
from pc_gpu.kernels.common import prepare_sky_regions, rank_indices


# ------------------------------------------------------------------ detrend
@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(11)
    shape = (37, 53)
    raw = rng.integers(0, 16384, shape).astype(np.uint16)
    bias = rng.normal(100, 3, shape).astype(np.float32)
    dark = rng.uniform(0.05, 0.12, shape).astype(np.float32)
    flat = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    return raw, bias, dark, flat


def test_detrend_bit_identical_to_numpy(calib):
    raw, bias, dark, flat = calib
    t = 19.873
    ref = (raw.astype(np.float32) - bias - dark * np.float32(t)) / flat
    out = np.empty_like(bias)
    cpu.detrend(raw, bias, dark, flat, t, out)
    assert np.array_equal(out, ref)
    cpu.detrend(raw, bias, dark, None, t, out)
    assert np.array_equal(out, raw.astype(np.float32) - bias - dark * np.float32(t))


def test_detrend_reads_big_endian_fits_payload(calib):
    raw, bias, dark, flat = calib
    payload = (raw.astype(np.int32) - 32768).astype(">i2")  # FITS BITPIX 16 with BZERO 32768
    out, ref = np.empty_like(bias), np.empty_like(bias)
    cpu.detrend(payload, bias, dark, flat, 20.0, out, bzero=32768.0)
    cpu.detrend(raw, bias, dark, flat, 20.0, ref)
    assert np.array_equal(out, ref)
    # the same bytes through a native dtype (how a device holds them), swapped in the kernel
    out[:] = 0
    cpu.detrend(payload.view(np.int16), bias, dark, flat, 20.0, out, bzero=32768.0, swapped=True)
    assert np.array_equal(out, ref)


def test_detrend_rejects_bad_input(calib):
    raw, bias, dark, flat = calib
    with pytest.raises(ValueError):
        cpu.detrend(raw.astype(np.float32), bias, dark, flat, 20.0, np.empty_like(bias))
    with pytest.raises(ValueError):
        cpu.detrend(raw, bias[:-1], dark, flat, 20.0, np.empty_like(bias))


# ------------------------------------------------------------------ bad pixels
def _interp_line(values, bad):
    """Slow reference: linear interpolation over bad entries, constant past the ends; None
    where the line has no good entry."""
    good = np.flatnonzero(~bad)
    if good.size == 0:
        return None
    out = values.astype(np.float64).copy()
    for i in np.flatnonzero(bad):
        left = good[good < i]
        right = good[good > i]
        if left.size and right.size:
            a, b = left[-1], right[0]
            out[i] = values[a] + (values[b] - values[a]) * (i - a) / (b - a)
        else:
            out[i] = values[left[-1]] if left.size else values[right[0]]
    return out


def _reference_badpix(image, mask):
    bad = mask != 0
    out = image.astype(np.float64).copy()
    for r, c in zip(*np.nonzero(bad)):
        row = _interp_line(image[r], bad[r])
        col = _interp_line(image[:, c], bad[:, c])
        est = [e for e in (None if row is None else row[c], None if col is None else col[r]) if e is not None]
        out[r, c] = np.mean(est) if est else 0.0
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_pixel_gather_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    ny, nx = 23, 31
    image = rng.normal(50, 10, (ny, nx)).astype(np.float32)
    mask = (rng.random((ny, nx)) < 0.08).astype(np.uint8)
    mask[3, :5] = 1  # run at the left edge
    mask[7, -4:] = 1  # run at the right edge
    mask[:, 9] = 1  # a whole bad column
    mask[12, :] = 1  # a whole bad row
    if seed == 2:
        mask[15, :] = 1
        mask[:, 20] = 1  # pixel (15, 20): row and column both entirely bad -> 0
    ref = _reference_badpix(image, mask)
    gather = cpu.bad_pixel_gather(mask)
    out = image.copy()
    cpu.apply_bad_pixel_gather(out, gather)
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-4)
    assert np.array_equal(out[mask == 0], image[mask == 0])
    if seed == 2:
        assert out[15, 20] == 0


def test_bad_pixel_gather_empty_mask():
    gather = cpu.bad_pixel_gather(np.zeros((4, 5), bool))
    assert len(gather) == 0
    image = np.ones((4, 5), np.float32)
    cpu.apply_bad_pixel_gather(image, gather)
    assert np.all(image == 1)


# ------------------------------------------------------------------ sky statistics
def _reference_sky(values):
    v = np.sort(values.ravel())
    n = v.size
    i16, i50, i84 = rank_indices(n)
    med = v[i50]
    sig = (v[i84] - v[i16]) / 2.0
    good = (v >= med - 5.0 * sig) & (v <= med + 5.0 * sig)
    return med, sig, np.mean(v[good].astype(np.float64)), int(good.sum())


def _images():
    rng = np.random.default_rng(5)
    shape = (61, 83)
    gauss = rng.normal(64, 10, shape).astype(np.float32)
    gauss[rng.random(shape) < 0.01] = 5000.0  # outliers ("stars")
    ties = rng.integers(-3, 4, shape).astype(np.float32)  # heavy ties, negatives, zeros
    negative = rng.normal(-20, 30, shape).astype(np.float32)
    return {"gauss": gauss, "ties": ties, "negative": negative}


@pytest.mark.parametrize("name", ["gauss", "ties", "negative"])
def test_sky_order_statistics_exact(name):
    image = _images()[name]
    ny, nx = image.shape
    yy, xx = np.mgrid[:ny, :nx]
    circle = np.flatnonzero(((xx - 40.5) ** 2 + (yy - 30.2) ** 2 <= 20.0 ** 2).ravel())
    cases = [(None, image), ((5, 40, 7, 60), image[5:40, 7:60]), (circle, image.ravel()[circle]),
             ((0, 1, 0, 1), image[:1, :1])]
    for region, values in cases:
        med, sig, mean, n = cpu.sky_order_statistics(image, region)
        rmed, rsig, rmean, rn = _reference_sky(values)
        assert med == rmed and sig == rsig and n == rn
        assert mean == pytest.approx(rmean, rel=1e-12, abs=1e-12)


def test_sky_statistics_six_regions_match_single_calls():
    image = _images()["gauss"]
    ny, nx = image.shape
    yy, xx = np.mgrid[:ny, :nx]
    circle = np.flatnonzero(((xx - 41) ** 2 + (yy - 30) ** 2 <= 25.0 ** 2).ravel())
    hy, hx = ny // 2, nx // 2
    specs = [None, circle, (hy, ny, hx, nx), (hy, ny, 0, hx), (0, hy, 0, hx), (0, hy, hx, nx)]
    prepared = prepare_sky_regions(image.shape, specs)
    assert len(prepared.region_bases[0]) == 4  # the full frame is derived from the quadrants
    got = cpu.sky_statistics_regions(image, prepared)
    for spec, stats in zip(specs, got):
        values = image.ravel()[spec] if isinstance(spec, np.ndarray) else (
            image if spec is None else image[spec[0]:spec[1], spec[2]:spec[3]])
        rmed, rsig, rmean, rn = _reference_sky(values)
        assert (stats[0], stats[1], stats[3]) == (rmed, rsig, rn)
        assert stats[2] == pytest.approx(rmean, rel=1e-12)


# ------------------------------------------------------------------ backend
def test_cpu_backend_and_gpu_error():
    import numba

    before = numba.get_num_threads()
    be = get_backend("cpu", threads=1)
    assert numba.get_num_threads() == 1
    numba.set_num_threads(before)
    assert be.name == "cpu" and be.xp is np and not be.is_gpu
    a = be.asarray([1.0, 2.0])
    assert isinstance(be.to_host(a), np.ndarray)
    with pytest.raises(PCError):
        get_backend("tpu")
    from pc_gpu.backend import gpu_problem

    if gpu_problem() is not None:
        with pytest.raises(PCError, match="pc_gpu\\[gpu\\]|CUDA"):
            get_backend("gpu")
        assert get_backend("auto").name == "cpu"
