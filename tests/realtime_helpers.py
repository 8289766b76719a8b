"""Shared pieces of the realtime tests: the simulated night (a session fixture, registered in
conftest.py), landing frames in a watch directory, reading the ledger, building the service
in process, and starting it as a real process."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from pc_gpu.pipeline import RunOptions
from pc_gpu.realtime import LEDGER_NAME, RealtimeService, ServiceOptions
from pc_gpu.sim import simulate_night
from pc_gpu.telemetry import RedisSettings, telemetry_record

KEY = "pc_rt"
N_FRAMES = 30
SLEW_AFTER = 20  # frame index 20 has ZPFLAG = 1
FINAL = ("done", "skipped", "failed")


@pytest.fixture(scope="session")
def night(tmp_path_factory, sim_gaia_dir, small_camera):
    """A 30-frame small-camera night (tracking, a cloud, a slew inside the chunk tree)."""
    return simulate_night(tmp_path_factory.mktemp("rt_night"), n_frames=N_FRAMES, camera=small_camera,
                          gaia_dir=sim_gaia_dir, fields=((150.0, 30.0), (153.0, 31.0)),
                          slew_after=SLEW_AFTER)


@pytest.fixture(scope="session")
def cpu():
    """The CPU backend."""
    from pc_gpu.backend import get_backend

    return get_backend("cpu")


def drop(night, i, watchdir):
    """Land frame i in `watchdir` as a camera would: the .wcs, then the FITS appearing whole."""
    shutil.copy(night.wcs[i], watchdir)
    name = os.path.basename(night.raw[i])
    tmp = os.path.join(watchdir, "." + name + ".part")
    shutil.copy(night.raw[i], tmp)
    os.replace(tmp, os.path.join(watchdir, name))
    return name


def read_ledger(outdir):
    with open(os.path.join(outdir, LEDGER_NAME)) as fh:
        return [json.loads(line) for line in fh]


def outcomes(events):
    return [e for e in events if e["event"] in FINAL]


def expected_records(outdir, events):
    """{frame: telemetry fields recomputed from its summary file} for every done frame."""
    import fitsio

    out = {}
    for e in events:
        if e["event"] != "done":
            continue
        summary = [p for p in e["outputs"] if p.endswith("-summary.fits")][0]
        zps = fitsio.read(summary, ext="ZEROPOINTS")
        sky = fitsio.read(summary, ext="SKY")
        rec = telemetry_record(zps, sky, "", standard_aperture=0)
        rec.pop("timestamp")
        out[e["frame"]] = rec
    return out


def same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return np.isclose(float(a), float(b), rtol=1e-12, atol=0)


def check_telemetry(client, outdir, *, n_done, key=KEY):
    """The stream holds one entry per done frame, in order, equal to its summary; the hash
    holds the last one."""
    events = read_ledger(outdir)
    expected = expected_records(outdir, events)
    done_order = [e["frame"] for e in events if e["event"] == "done"]
    assert len(done_order) == n_done == len(set(done_order))
    entries = client.xrange(f"{key}:history")
    frames = [f["frame"] for _, f in entries]
    assert frames == done_order  # every reduced frame once, in order: none lost or duplicated
    assert [int(f["seq"]) for _, f in entries] == sorted(int(f["seq"]) for _, f in entries)
    for _, fields in entries:
        for k, v in expected[fields["frame"]].items():
            assert same(fields[k], v), (fields["frame"], k)
    latest = client.hgetall(key)
    for k, v in expected[done_order[-1]].items():
        assert same(latest[k], v), k
    assert latest["timestamp"] == entries[-1][1]["timestamp"]
    return entries


def realtime_options(tmp_path):
    """The realtime defaults (as `pc-realtime` sets them) on the CPU, outputs in tmp_path/out."""
    return RunOptions(outdir=str(tmp_path / "out"), write_detrended=False, nightly_subdir=True, one_aper=True,
                      check_tcs_motion=True, send_redis=True, max_zp_radius=1200.0, device="cpu")


def make_service(tmp_path, night, small_camera, cpu, redis_server, **service):
    """A `RealtimeService` in process, polling tmp_path/watch, telemetry to `redis_server`."""
    watchdir = tmp_path / "watch"
    watchdir.mkdir(exist_ok=True)
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key=KEY)
    return RealtimeService(realtime_options(tmp_path),
                           ServiceOptions(watchdir=str(watchdir), use_events=False, **service),
                           camera=small_camera, meta_dir=night.meta_dir, gaia_dir=night.gaia_dir,
                           backend=cpu, redis_settings=settings)


def start_service(tmp_path, night, redis_server, *extra, env=None):
    """`python -m pc_gpu.realtime` on tmp_path/watch -> tmp_path/out, logging to service.log."""
    env = {**os.environ, **redis_server.environ(KEY), "NUMBA_NUM_THREADS": "2", **(env or {})}
    cmd = [sys.executable, "-m", "pc_gpu.realtime", str(tmp_path / "watch"), "--outdir", str(tmp_path / "out"),
           "--meta_dir", night.meta_dir, "--gaia_dir", night.gaia_dir, "--device", "cpu",
           "--camera_nx", "600", "--camera_ny", "450", "--poll_seconds", "0.5", *extra]
    with open(tmp_path / "service.log", "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout, what, proc=None):
    """Poll `predicate` until true; fail after `timeout` s or if `proc` exits meanwhile."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"service exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def n_outcomes(tmp_path):
    path = tmp_path / "out" / LEDGER_NAME
    if not path.exists():
        return 0
    return sum(any(f'"event":"{e}"' in ln for e in FINAL) for ln in path.read_text().splitlines())
