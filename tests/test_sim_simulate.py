"""The camera simulator is right before any pipeline depends on it."""

import datetime as dt
import logging
import os
import re
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry
from scipy.spatial import cKDTree

from pc_gpu.errors import InputError, OutputExistsError
from pc_gpu import rawio
from pc_gpu.rawio import CALIB_FILES
from pc_gpu.sim import (Region, aperture_fractions, build_chunk_tree, make_calibrations, simulate_frame,
                        write_calibrations, write_frame)
from pc_gpu.sim import simulate
from pc_gpu.sim.chunks import CHUNK_DTYPE
from pc_gpu.sim.render import _psf_box


def _wcs(path):
    header = fits.getheader(path)
    header["NAXIS"] = 2  # a header-only .wcs file; as the original pipeline does
    return WCS(header)


def _load(field):
    raw = fits.getdata(field.raw).astype(np.float64)
    truth, head = fitsio.read(field.truth, ext="TRUTH", header=True)
    cal = {k: fits.getdata(os.path.join(field.meta_dir, f"pc_master_{k}.fits.gz"))
           for k in ("bias", "dark", "flat")}
    mask = fits.getdata(os.path.join(field.meta_dir, "pc_badpix_mask.fits.gz"))
    t = head["EXPTIME"]
    per_s = (raw - cal["bias"] - cal["dark"] * t) / cal["flat"] / t
    return raw, per_s, truth, head, mask


@pytest.fixture(scope="module")
def one_star_tree(tmp_path_factory):
    star = np.zeros(1, dtype=CHUNK_DTYPE)
    star["SOURCE_ID"] = 42
    star["RA"], star["DEC"] = 150.1234, 30.0567
    star["PHOT_G_MEAN_MAG"] = 9.0
    star["PHOT_BP_MEAN_MAG"], star["PHOT_RP_MEAN_MAG"] = 9.4, 8.5
    star["REF_EPOCH"] = 2016.0
    path = tmp_path_factory.mktemp("one_star")
    build_chunk_tree(path, source=star, regions=Region(150.1, 30.05, 2.0))
    return str(path), star


def test_aperture_truth_is_exact_overlap():
    rng = np.random.default_rng(3)
    x, y = 10 + rng.random(12), 10 + rng.random(12)
    sigma = rng.uniform(0.8, 1.1, 12)
    radii = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
    fractions = aperture_fractions(x, y, sigma, radii)
    box, ix0, iy0 = _psf_box(x, y, sigma, 6)
    for i in range(x.size):
        image = np.zeros((30, 30))
        image[iy0[i]:iy0[i] + 13, ix0[i]:ix0[i] + 13] = box[i]
        for k, r in enumerate(radii):
            ref = aperture_photometry(image, CircularAperture((x[i], y[i]), r), method="exact")
            assert abs(ref["aperture_sum"][0] - fractions[i, k]) < 1e-9
    assert np.all(np.diff(fractions, axis=1) > 0) and np.all(fractions < 1)


@pytest.mark.parametrize("sip", [False, True])
def test_wcs_maps_star_to_rendered_position(tmp_path, one_star_tree, small_camera, sip):
    gaia_dir, star = one_star_tree
    cal = make_calibrations(small_camera, seed=1, bad_pixels=False)
    frame = simulate_frame(gaia_dir, 150.2, 30.1, rotation_deg=17.0, camera=small_camera,
                           calibrations=cal, noise=False, bad_pixels=False, sky_adu_per_s=0.0,
                           sip=sip)
    paths = write_frame(frame, tmp_path)
    x, y = _wcs(paths.wcs).all_world2pix(star["RA"], star["DEC"], 0)
    x, y = float(x[0]), float(y[0])
    assert 50 < x < small_camera.nx - 50 and 50 < y < small_camera.ny - 50
    t = 20.0
    image = (fits.getdata(paths.raw).astype(np.float64) - cal.bias - cal.dark * t) / cal.flat
    ix, iy = int(round(x)), int(round(y))
    stamp = image[iy - 12:iy + 13, ix - 12:ix + 13]
    yy, xx = np.mgrid[iy - 12:iy + 13, ix - 12:ix + 13]
    cx, cy = (stamp * xx).sum() / stamp.sum(), (stamp * yy).sum() / stamp.sum()
    assert abs(cx - x) < 0.01 and abs(cy - y) < 0.01
    truth = frame.truth[frame.truth["SOURCE_ID"] == 42][0]
    assert abs(truth["X"] - x) < 1e-6 and abs(truth["Y"] - y) < 1e-6
    assert header_ctype(paths.wcs) == ("RA---TAN-SIP" if sip else "RA---TAN")


def header_ctype(path):
    return fits.getheader(path)["CTYPE1"]


def test_truth_positions_match_wcs_file(demo_field):
    truth = fitsio.read(demo_field.truth, ext="TRUTH")
    x, y = _wcs(demo_field.wcs).all_world2pix(truth["RA"], truth["DEC"], 0)
    assert np.max(np.abs(x - truth["X"])) < 1e-6 and np.max(np.abs(y - truth["Y"])) < 1e-6
    in_frame = truth["IN_FRAME"]
    bright = truth["PHOT_G_MEAN_MAG"] <= 15.155  # the pipeline's cut at 20 s
    assert 2800 <= np.sum(in_frame & bright) and np.sum(in_frame & (truth["PHOT_G_MEAN_MAG"] <= 15.5)) < 4500


def test_zeropoint_recovered_from_large_apertures(demo_field):
    _, per_s, truth, head, mask = _load(demo_field)
    signal = per_s - head["SKY"]
    kd = cKDTree(np.c_[truth["X"], truth["Y"]])
    nearest = kd.query(np.c_[truth["X"], truth["Y"]], k=2)[0][:, 1]
    bad_near = np.array([mask[max(int(y) - 9, 0):int(y) + 10, max(int(x) - 9, 0):int(x) + 10].any()
                         for x, y in zip(truth["X"], truth["Y"])])
    good = (truth["IN_FRAME"] & ~truth["SATURATED"] & (truth["EDGE_DIST_PIX"] > 10)
            & (truth["PHOT_G_MEAN_MAG"] < 12.5) & (nearest > 15) & ~bad_near)
    assert good.sum() > 150
    positions = np.c_[truth["X"][good], truth["Y"][good]]
    sums = np.asarray(aperture_photometry(signal, CircularAperture(positions, 7.0),
                                          method="exact")["aperture_sum"])
    zp = np.median(truth["G_PRIME"][good] + 2.5 * np.log10(sums))
    assert abs(zp - head["ZP"]) < 0.01
    assert head["ZP"] == pytest.approx(17.58)
    # the truth's per-aperture expectations agree with what an exact aperture sum sees
    sums5 = np.asarray(aperture_photometry(signal * head["EXPTIME"], CircularAperture(positions, 5.0),
                                           method="exact")["aperture_sum"])
    assert abs(np.median(sums5 / truth["APER_FLUX_ADU"][good][:, 6]) - 1) < 0.005


def test_noiseless_aperture_truth(tmp_path, sim_gaia_dir, small_camera):
    frame = simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera, noise=False,
                           bad_pixels=False, keep_signal=True, sky_adu_per_s=0.0)
    truth = frame.truth
    kd = cKDTree(np.c_[truth["X"], truth["Y"]])
    nearest = kd.query(np.c_[truth["X"], truth["Y"]], k=2)[0][:, 1]
    good = truth["IN_FRAME"] & (truth["EDGE_DIST_PIX"] > 8) & (nearest > 25)
    assert good.sum() > 20
    positions = np.c_[truth["X"][good], truth["Y"][good]]
    for k, r in enumerate(small_camera.aperture_radii_pix):
        sums = np.asarray(aperture_photometry(frame.signal, CircularAperture(positions, r),
                                              method="exact")["aperture_sum"])
        expected = truth["APER_FLUX_ADU"][good][:, k] / 20.0
        np.testing.assert_allclose(sums, expected, rtol=1e-3)


def test_features_appear_only_when_asked(tmp_path, sim_gaia_dir, small_camera):
    plain = simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera, bad_pixels=False,
                           min_g=11.0, keep_signal=True)
    assert plain.header["ZPFLAG"] == 0 and not plain.calibrations.mask.any()
    assert plain.raw.max() < 16383 and not plain.truth["SATURATED"].any()
    assert plain.streaks.size == 0
    t = 20.0

    def per_s(frame):
        cal = frame.calibrations
        return (frame.raw - cal.bias - cal.dark * t) / cal.flat / t

    assert np.mean(per_s(plain) < 0.5) < 0.01

    busy = simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera, zp=22.0, n_streaks=2,
                          dome=True, zpflag=True, keep_signal=True)
    cal = busy.calibrations
    assert busy.header["ZPFLAG"] == 1
    # bad pixels: in the mask, and visibly wrong in the raw frame
    assert cal.mask.any() and (cal.mask == 2).any()
    hot_or_dead = np.abs(busy.raw.astype(float) - (cal.bias + cal.dark * t + cal.flat *
                                                    busy.signal * t))[cal.mask == 1]
    assert np.mean(hot_or_dead > 100) > 0.3
    # saturation: raw pixels clipped at 16383 on saturated stars
    sat = busy.truth["SATURATED"]
    assert sat.any()
    x, y = np.rint(busy.truth["X"][sat]).astype(int), np.rint(busy.truth["Y"][sat]).astype(int)
    assert np.any(busy.raw[y, x] == 16383)
    # dome: >= 1% of pixels below 0.5 ADU/s after detrending
    assert np.mean(per_s(busy) < 0.5) >= 0.01
    head = {c["name"]: c["value"] for c in busy.truth_header}
    assert head["DOME"] and head["DOMEFRAC"] > 0.01 and head["NSTREAK"] == 2
    # streaks: the first crosses the whole frame, both ends outside it
    x0, y0, x1, y1 = (busy.streaks[k][0] for k in ("X0", "Y0", "X1", "Y1"))
    outside = [not (0 <= px < small_camera.nx and 0 <= py < small_camera.ny)
               for px, py in ((x0, y0), (x1, y1))]
    assert all(outside)
    no_streak = simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera, zp=22.0,
                               dome=True, keep_signal=True)
    excess = busy.signal - no_streak.signal
    assert excess.min() > -1e-3 and excess.max() > 5.0
    # sample the first streak's line inside the frame: the excess is there
    s = np.linspace(0, 1, 4001)
    lx, ly = x0 + s * (x1 - x0), y0 + s * (y1 - y0)
    inside = (lx > 2) & (lx < small_camera.nx - 3) & (ly > 2) & (ly < small_camera.ny - 3)
    on_line = excess[np.rint(ly[inside]).astype(int), np.rint(lx[inside]).astype(int)]
    assert inside.sum() > 100 and np.median(on_line) > 5.0


def test_raw_file_as_the_camera_writes_it(small_field, small_camera):
    name = os.path.basename(small_field.raw)
    assert re.fullmatch(r"\d{8}\.\d{6}\.\d{5}_\d{5}\.fits", name)
    assert small_field.wcs == small_field.raw[:-5] + ".wcs"
    with open(small_field.raw, "rb") as handle:
        head = handle.read(2880).decode("ascii")
    assert re.search(r"BITPIX  =\s+16 ", head) and re.search(r"BZERO   =\s+32768 ", head)
    header = fits.getheader(small_field.raw)
    data = fits.getdata(small_field.raw)
    assert data.dtype == np.uint16 and data.shape == small_camera.shape
    local = dt.datetime.strptime(header["DATE"] + " " + header["TIME"], "%Y/%m/%d %H:%M:%S")
    assert name.startswith(local.strftime("%Y%m%d.%H%M%S"))
    utc = local + dt.timedelta(hours=7)
    mjd = (utc - dt.datetime(1858, 11, 17)).total_seconds() / 86400
    assert header["MJD-OBS"] == pytest.approx(mjd, abs=1e-7)
    assert header["EXPOSURE"] == 20000 and name.endswith("_20000.fits")
    for key in ("RADEG", "DECDEG", "REAL_RA", "REAL_DEC", "DEV_FNUM", "ZPFLAG"):
        assert key in header
    assert "CHECKSUM" not in header
    wcs_header = fits.getheader(small_field.wcs)
    assert wcs_header["NAXIS"] == 0 and wcs_header["IMAGEW"] == small_camera.nx
    truth_head = fitsio.read_header(small_field.truth, ext="TRUTH")
    for key in ("ZP", "SKY", "SKYQ1", "SKYQ4", "FWHM", "EXPTIME", "DOME", "ZPFLAG", "PMCORR"):
        assert key in truth_head
    mask = fits.getdata(os.path.join(small_field.meta_dir, "pc_badpix_mask.fits.gz"))
    flat = fits.getdata(os.path.join(small_field.meta_dir, "pc_master_flat.fits.gz"))
    assert mask.shape == small_camera.shape and mask.any()
    assert abs(np.median(flat) - 1) < 1e-3


def test_pipeline_readers_accept_the_files(small_field, small_camera):
    frame = rawio.read_raw(small_field.raw, small_camera)
    assert frame.exptime_s == 20.0
    rawio.read_wcs(rawio.wcs_path_for(small_field.raw))
    rawio.read_calibrations(small_field.meta_dir, small_camera)


def test_same_seed_same_bytes(tmp_path, sim_gaia_dir, small_camera):
    options = dict(camera=small_camera, n_streaks=1, dome=True, sip=True)
    outputs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cal = make_calibrations(small_camera, seed=seed)
        frame = simulate_frame(sim_gaia_dir, 150.0, 30.0, calibrations=cal, seed=seed, **options)
        paths = write_frame(frame, tmp_path / name)
        meta = write_calibrations(cal, tmp_path / name / "meta")
        files = [paths.raw, paths.wcs, paths.truth] + [meta[k] for k in sorted(meta)]
        outputs.append([Path(f).read_bytes() for f in files])
    assert outputs[0] == outputs[1]
    assert outputs[0][0] != outputs[2][0] and outputs[0][4] != outputs[2][4]


def test_bad_arguments(tmp_path, sim_gaia_dir, small_camera, caplog):
    with pytest.raises(InputError, match="not found"):
        simulate_frame(tmp_path / "nowhere", 150.0, 30.0, camera=small_camera)
    with pytest.raises(InputError, match="no chunk file"):
        simulate_frame(sim_gaia_dir, 10.0, -60.0, camera=small_camera)
    with pytest.raises(InputError, match="not a valid sky position"):
        simulate_frame(sim_gaia_dir, 150.0, 95.0, camera=small_camera)
    with pytest.raises(InputError, match="exposure time"):
        simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera, exptime_s=-1)
    with pytest.raises(InputError, match="observation time"):
        simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera, obs_time="yesterday")
    frame = simulate_frame(sim_gaia_dir, 150.0, 30.0, camera=small_camera)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create"):
        write_frame(frame, blocker / "out")
    write_frame(frame, tmp_path / "out")
    with pytest.raises(OutputExistsError):
        write_frame(frame, tmp_path / "out")
    with caplog.at_level(logging.ERROR):
        code = simulate.main([str(tmp_path / "nowhere"), str(tmp_path / "o"), "--ra", "150",
                              "--dec", "30", "--nx", "300", "--ny", "200"])
    assert code == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "not found" in errors[0].getMessage()


def test_console_main_writes_frame(tmp_path, sim_gaia_dir):
    code = simulate.main([sim_gaia_dir, str(tmp_path / "o"), "--ra", "150", "--dec", "30",
                          "--nx", "300", "--ny", "200", "--streaks", "1", "--zpflag"])
    assert code == 0
    names = sorted(os.listdir(tmp_path / "o"))
    assert any(n.endswith(".fits") for n in names) and any(n.endswith(".wcs") for n in names)
    assert sorted(os.listdir(tmp_path / "o" / "meta")) == sorted(CALIB_FILES.values())
