"""Unit tests of the pipeline's edges: times, atomic outputs, zeropoint statistics, telemetry."""

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

from pc_gpu.errors import InputError, OutputExistsError, TelemetryError
from pc_gpu.obstime import local_datetime, observing_night, telemetry_timestamp
from pc_gpu.outputs import atomic_output, publish
from pc_gpu.telemetry import RedisSettings, send_telemetry
from pc_gpu.zeropoints import zeropoint



@pytest.mark.parametrize("time, night", [("22:13:35", "20210621"), ("03:00:00", "20210620"),
                                         ("11:59:59", "20210620"), ("12:00:00", "20210621")])
def test_observing_night_changes_at_local_noon(time, night):
    local = local_datetime({"DATE": "2021/06/21", "TIME": time})
    assert observing_night(local) == night


def test_observing_night_across_month_and_timestamp_format():
    local = local_datetime({"DATE": "2021/03/01", "TIME": "01:02:03"})
    assert observing_night(local) == "20210228"
    assert telemetry_timestamp(local) == "2021-03-01/01:02:03/MST/"


def test_bad_date_names_file():
    with pytest.raises(InputError, match="raw.fits.*DATE"):
        local_datetime({"DATE": "21-06-2021", "TIME": "22:00:00"}, "raw.fits")
    with pytest.raises(InputError, match="lacks DATE"):
        local_datetime({"TIME": "22:00:00"}, "raw.fits")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "a-summary.fits"
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []


def test_publish_is_all_or_none_and_refuses_overwrite(tmp_path):
    a, b = str(tmp_path / "a.fits"), str(tmp_path / "b.png")

    def fail(path):
        Path(path).write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish({a: lambda p: Path(p).write_text("A"), b: fail})
    assert os.listdir(tmp_path) == []
    publish({a: lambda p: Path(p).write_text("A"), b: lambda p: Path(p).write_text("B")})
    assert Path(a).read_text() == "A" and Path(b).read_text() == "B"
    with pytest.raises(OutputExistsError, match="a.fits"):
        publish({a: lambda p: Path(p).write_text("C")})
    publish({a: lambda p: Path(p).write_text("C")}, overwrite=True)
    assert Path(a).read_text() == "C"
    assert sorted(os.listdir(tmp_path)) == ["a.fits", "b.png"]


def test_zeropoint_median_and_robust_sigma():
    rng = np.random.default_rng(1)
    g = rng.uniform(10, 15, 1001)
    resid = rng.normal(0, 0.05, 1001)
    m = g - 17.5 + resid
    zp, sig = zeropoint(g, m)
    assert zp == pytest.approx(np.median(g - m), abs=1e-12)
    assert sig == pytest.approx(0.05, rel=0.15)
    m[:10] = np.nan  # stars with no flux are ignored by the median
    assert zeropoint(g, m)[0] == pytest.approx(np.median((g - m)[10:]), abs=1e-12)
    assert np.isnan(zeropoint(g[:3], np.full(3, np.nan))[0])


def test_redis_settings_from_environment_hide_password():
    s = RedisSettings.from_environment({"REDISHOST": "h", "REDISPORT": "7000", "REDISDBNUM": "2",
                                        "REDISKEY": "k", "REDISPASSWORD": "s3cret"})
    assert (s.host, s.port, s.db, s.key, s.password) == ("h", 7000, 2, "k", "s3cret")
    assert "s3cret" not in repr(s)
    with pytest.raises(InputError, match="REDISPORT"):
        RedisSettings.from_environment({"REDISPORT": "x"})


def test_send_telemetry_to_real_redis(redis_server, redis_client):
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key="pc_test")
    send_telemetry({"zp_adu_per_s": 17.5, "flag": 0, "timestamp": "t"}, settings)
    assert redis_client.hgetall("pc_test") == {"zp_adu_per_s": "17.5", "flag": "0", "timestamp": "t"}


def test_send_telemetry_unreachable_raises_telemetry_error():
    settings = RedisSettings(host="127.0.0.1", port=1, key="pc_test")
    with pytest.raises(TelemetryError, match="127.0.0.1:1"):
        send_telemetry({"flag": 0}, settings, timeout_s=0.5)


def test_nearest_guess_equals_kdtree():
    from scipy.spatial import cKDTree

    from pc_gpu.centroid import nearest_guess, wrong_source_flags

    rng = np.random.default_rng(3)
    for n, spread in ((1, 1.0), (50, 3.0), (3000, 4.5)):
        xg, yg = rng.uniform(0, 3296, n), rng.uniform(0, 2472, n)
        xg[: n // 10], yg[: n // 10] = xg[n // 10: 2 * (n // 10)] + 1.0, yg[n // 10: 2 * (n // 10)]  # close pairs
        x, y = xg + rng.uniform(-spread, spread, n), yg + rng.uniform(-spread, spread, n)
        _, expected = cKDTree(np.column_stack([xg, yg])).query(np.column_stack([x, y]))
        np.testing.assert_array_equal(nearest_guess(xg, yg, x, y), expected)
        assert wrong_source_flags(xg, yg, x, y).sum() == np.sum(expected != np.arange(n))
    assert len(wrong_source_flags(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))) == 0


def test_frames_and_wcs_read_on_several_threads_at_once(small_field, small_camera):
    """pc-archive's GPU engine reads frames on several threads. The WCS reader ignores astropy's
    warnings through the process-wide warning filters; when the raw reader still turned them
    into errors the same way, one thread's "error" made another's harmless WCS warning fail a
    good frame."""
    import threading

    from pc_gpu.rawio import read_raw, read_wcs, wcs_path_for

    failures = []

    def read(k):
        for _ in range(100):
            try:
                if k % 2:
                    read_raw(small_field.raw, small_camera)
                else:
                    read_wcs(wcs_path_for(small_field.raw))
            except InputError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_raw_reader_pixels_equal_astropy_and_refuses_truncated_files(small_field, small_camera, tmp_path):
    """read_raw decodes the pixels itself (no astropy data read, no warning filters): the
    camera's unsigned frames, a signed frame (negative values clipped to 0) and a scaled one
    give astropy's physical values; a file cut anywhere in its image is refused as truncated."""
    from astropy.io import fits

    from pc_gpu.rawio import read_raw

    with fits.open(small_field.raw) as hdul:
        header, expected = hdul[0].header.copy(), hdul[0].data.copy()
    frame = read_raw(small_field.raw, small_camera)
    assert frame.image.dtype == np.uint16 and frame.image.flags.c_contiguous
    np.testing.assert_array_equal(frame.image, expected)
    rows, cols = np.array([0, 5, small_camera.ny - 1]), np.array([small_camera.nx - 1, 7, 0])
    np.testing.assert_array_equal(frame.values((rows, cols)), expected[rows, cols])  # the catalogue's read
    assert list(frame.header.items()) == list(header.items())

    rng = np.random.default_rng(2)
    signed = rng.integers(-3000, 30000, small_camera.shape).astype(np.int16)
    for name, data, scaling in (("signed", signed, {}), ("scaled", signed, {"BSCALE": 2.0, "BZERO": 100.0})):
        path = str(tmp_path / f"{name}.fits")
        hdu = fits.PrimaryHDU(data, header=fits.Header([("EXPOSURE", 1000.0)]))
        hdu.header.update(scaling)
        hdu.writeto(path)
        with fits.open(path) as hdul:
            physical = hdul[0].data.astype(np.float64)
        np.testing.assert_array_equal(read_raw(path, small_camera).image,
                                      np.clip(physical, 0, 65535).astype(np.uint16))

    data = Path(small_field.raw).read_bytes()
    for cut in (2880 + 1, len(data) - 2880 - 1):
        path = tmp_path / f"cut{cut}.fits"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match=rf"cut{cut}\.fits.*truncated: the header announces"):
            read_raw(str(path), small_camera)
