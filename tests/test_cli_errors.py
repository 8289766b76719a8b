"""Bad input to pc-proc: a clear message naming the file and the problem, a non-zero exit,
and no output files."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from pc_gpu.backend import get_backend
from pc_gpu.cli import main
from pc_gpu.pipeline import Reducer, RunOptions, process_frame
from pc_gpu.rawio import CALIB_FILES


@pytest.fixture
def frame(demo_field, tmp_path, monkeypatch):
    """A private copy of the demo frame (raw + .wcs) and environment pointing at its inputs."""
    raw = tmp_path / "raw" / os.path.basename(demo_field.raw)
    raw.parent.mkdir()
    shutil.copy(demo_field.raw, raw)
    shutil.copy(demo_field.wcs, str(raw)[:-5] + ".wcs")
    monkeypatch.setenv("POINTING_CAMERA_META", demo_field.meta_dir)
    monkeypatch.setenv("PC_GAIA_DIR", demo_field.gaia_dir)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    return raw


def _run(raw, tmp_path, caplog, *extra):
    out = tmp_path / "out"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = main([str(raw), "--outdir", str(out), "--device", "cpu", *extra])
    messages = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    files = sorted(os.listdir(out)) if out.exists() else []
    return rc, messages, files


def _rewrite(raw, data=None, **header_changes):
    with fits.open(raw) as hdul:
        header, image = hdul[0].header.copy(), hdul[0].data.copy()
    for key, value in header_changes.items():
        if value is None:
            del header[key]
        else:
            header[key] = value
    fits.PrimaryHDU(image if data is None else data, header=header).writeto(raw, overwrite=True)


def test_good_frame_writes_outputs_then_refuses_to_overwrite(frame, tmp_path, caplog):
    rc, messages, files = _run(frame, tmp_path, caplog)
    assert rc == 0 and messages == ""
    assert len(files) == 3 and all(f.endswith(("-detrended.fits", "-summary.fits", "-zp.png")) for f in files)
    rc, messages, files2 = _run(frame, tmp_path, caplog)
    assert rc == 1 and "already exists" in messages and "--overwrite" in messages
    assert files2 == files
    rc, _, _ = _run(frame, tmp_path, caplog, "--overwrite")
    assert rc == 0


@pytest.mark.parametrize("case, pattern", [
    ("truncated", "truncated: the header announces"),
    ("not_fits", "not a readable FITS"),
    ("wrong_size", "expected 3296 x 2472"),
    ("wrong_bitpix", "BITPIX = -32"),
    ("no_exposure", "no EXPOSURE or EXPTIME"),
    ("zero_exposure", "must be positive"),
    ("no_wcs", r"\.wcs: astrometric solution"),
])
def test_bad_raw_input(frame, tmp_path, caplog, case, pattern):
    if case == "truncated":
        data = frame.read_bytes()
        frame.write_bytes(data[: len(data) // 2])
    elif case == "not_fits":
        frame.write_text("this is not a FITS file\n")
    elif case == "wrong_size":
        _rewrite(frame, data=np.zeros((100, 120), dtype=np.uint16))
    elif case == "wrong_bitpix":
        _rewrite(frame, data=np.zeros((2472, 3296), dtype=np.float32))
    elif case == "no_exposure":
        _rewrite(frame, EXPOSURE=None)
    elif case == "zero_exposure":
        _rewrite(frame, EXPOSURE=0)
    elif case == "no_wcs":
        os.remove(str(frame)[:-5] + ".wcs")
    # without a .wcs, --solve auto (the default) would plate-solve the frame
    rc, messages, files = _run(frame, tmp_path, caplog, *(["--solve", "never"] if case == "no_wcs" else []))
    assert rc == 1
    assert os.path.basename(str(frame)[:-5]) in messages
    assert __import__("re").search(pattern, messages), messages
    assert files == []


def test_missing_calibrations(frame, tmp_path, caplog, monkeypatch, demo_field):
    monkeypatch.setenv("POINTING_CAMERA_META", str(tmp_path / "nowhere"))
    rc, messages, files = _run(frame, tmp_path, caplog)
    assert rc == 1 and "nowhere" in messages and "calibration directory not found" in messages
    assert files == []
    meta = tmp_path / "meta"
    shutil.copytree(demo_field.meta_dir, meta)
    os.remove(meta / CALIB_FILES["flat"])
    monkeypatch.setenv("POINTING_CAMERA_META", str(meta))
    rc, messages, files = _run(frame, tmp_path, caplog)
    assert rc == 1 and CALIB_FILES["flat"] in messages and "not found" in messages
    assert files == []


def test_no_gaia_chunk_covers_field(frame, tmp_path, caplog, monkeypatch):
    empty = tmp_path / "gaia_empty"
    empty.mkdir()
    monkeypatch.setenv("PC_GAIA_DIR", str(empty))
    rc, messages, files = _run(frame, tmp_path, caplog)
    assert rc == 1 and "gaia_empty" in messages and "no Gaia chunk" in messages
    assert files == []


def test_field_without_usable_star_gives_nan_zeropoints(frame, tmp_path, caplog, monkeypatch, demo_field):
    faint = tmp_path / "gaia_faint"
    faint.mkdir()
    for name in os.listdir(demo_field.gaia_dir):
        table = fitsio.read(os.path.join(demo_field.gaia_dir, name), ext=1)
        table["PHOT_G_MEAN_MAG"] = 19.0  # all fainter than the magnitude limit
        fitsio.write(str(faint / name), table)
    monkeypatch.setenv("PC_GAIA_DIR", str(faint))
    rc, _, files = _run(frame, tmp_path, caplog)
    assert rc == 0 and len(files) == 3
    summary = tmp_path / "out" / [f for f in files if f.endswith("-summary.fits")][0]
    assert len(fitsio.read(summary, ext="CATALOG")) == 0
    zps = fitsio.read(summary, ext="ZEROPOINTS")
    assert len(zps) == 42 and np.all(np.isnan(zps["zp_adu_per_s"])) and np.all(zps["n_sources_for_zp"] == 0)


def test_max_zp_radius_can_leave_no_usable_star(frame, tmp_path, caplog):
    rc, _, files = _run(frame, tmp_path, caplog, "--max_zp_radius", "1", "--skip_checkplot")
    assert rc == 0 and len(files) == 2
    summary = tmp_path / "out" / [f for f in files if f.endswith("-summary.fits")][0]
    zps = fitsio.read(summary, ext="ZEROPOINTS")
    assert np.all(zps["n_sources_for_zp"] == 0) and np.all(zps["max_zp_radius"] == 1)


def test_telescope_motion_is_skipped_cleanly(frame, tmp_path, caplog):
    _rewrite(frame, ZPFLAG=1)
    rc, _, files = _run(frame, tmp_path, caplog, "--check_tcs_motion")
    assert rc == 0 and files == []
    assert any("ZPFLAG" in r.getMessage() for r in caplog.records)


def test_console_script_help_and_exit_status(frame, tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "pc_gpu", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for flag in ("--outdir", "--dont_write_detrended", "--skip_checkplot", "--nightly_subdir", "--send_redis",
                 "--one_aper", "--bg_sigclip", "--multiproc", "--max_n_stars", "--pm_corr", "--skip_flatfield",
                 "--sci_inst_name", "--sci_fov_checkplot", "--check_tcs_motion", "--plot_detrended",
                 "--plot_quiver", "--max_zp_radius"):
        assert flag in help_text, flag
    os.remove(str(frame)[:-5] + ".wcs")
    proc = subprocess.run([sys.executable, "-m", "pc_gpu", str(frame), "--outdir", str(tmp_path / "o"),
                           "--solve", "never"], capture_output=True, text=True)  # auto would solve it
    assert proc.returncode == 1 and ".wcs" in proc.stderr
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_redis_down_still_writes_files_and_exit_says_so(frame, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("REDISHOST", "127.0.0.1")
    monkeypatch.setenv("REDISPORT", "1")  # nothing listens there
    rc, messages, files = _run(frame, tmp_path, caplog, "--send_redis", "--dont_write_detrended")
    assert rc == 3
    assert "redis" in messages and "127.0.0.1:1" in messages
    assert len(files) == 2 and any(f.endswith("-summary.fits") for f in files)


def test_send_redis_through_redisurl(frame, tmp_path, caplog, monkeypatch, redis_server, redis_client):
    for name in ("REDISHOST", "REDISPORT", "REDISDBNUM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDISURL", f"redis://127.0.0.1:{redis_server.port}/2")
    monkeypatch.setenv("REDISKEY", "pc_url")
    rc, messages, files = _run(frame, tmp_path, caplog, "--send_redis", "--dont_write_detrended",
                               "--skip_checkplot")
    assert rc == 0 and messages == ""
    assert redis_client.exists("pc_url") == 0  # database 0 untouched
    redis_client.select(2)
    zps = fitsio.read(os.path.join(tmp_path, "out", files[0]), ext="ZEROPOINTS")
    whole = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == 1) & (zps["science_fov_only"] == 0)][0]
    assert float(redis_client.hget("pc_url", "zp_adu_per_s")) == whole["zp_adu_per_s"]


def test_checkplot_from_forked_worker_equals_in_process(frame, tmp_path, demo_field):
    """A new pc-proc process draws the checkplot in a forked child; the PNG is byte-identical
    to the one drawn in-process."""
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "pc_gpu", str(frame), "--outdir", str(tmp_path / "forked"),
                           "--device", "cpu", "--dont_write_detrended", "-v"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "checkplots drawn by forked process" in proc.stderr
    reducer = Reducer(RunOptions(outdir=str(tmp_path / "inproc"), write_detrended=False),
                      meta_dir=demo_field.meta_dir, gaia_dir=demo_field.gaia_dir, backend=get_backend("cpu"))
    _, paths, _ = process_frame(str(frame), reducer, plot_worker=None)
    name = os.path.basename(paths["zp_plot"])
    forked = (tmp_path / "forked" / name).read_bytes()
    assert forked[:8] == b"\x89PNG\r\n\x1a\n"
    assert forked == Path(paths["zp_plot"]).read_bytes()


def test_checkplot_worker_failure_is_reported_and_worker_goes_on(tmp_path):
    script = f"""
from pc_gpu.errors import PCError
from pc_gpu.plotworker import PlotWorker
w = PlotWorker.start()  # before numpy, whose thread pool would make forking unsafe
assert w is not None
import numpy as np
g = np.linspace(9, 15, 50)
w.zeropoint_plot({str(tmp_path / 'no' / 'such' / 'dir.png')!r}, g, g - 17.5, 17.5, title="t", n_used=50,
                 aperture_radius_pix=2.5)
try:
    w.wait()
except PCError as exc:
    print("ERROR:", exc)
w.zeropoint_plot({str(tmp_path / 'ok.png')!r}, g, g - 17.5, float("nan"), title="t", n_used=0,
                 aperture_radius_pix=2.5)
w.wait()
w.close()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR: checkplot failed: FileNotFoundError" in proc.stdout
    assert (tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG"
