"""The realtime service: ledger, readiness, telemetry queue, and whole nights (in process and as
a real `python -m pc_gpu.realtime` process) against a real redis-server."""

import os
import shutil
import signal
import time

import fitsio
import numpy as np
import pytest

from pc_gpu.camera import EL_NINO
from pc_gpu.ledger import Ledger
from pc_gpu.realtime import LEDGER_NAME, build_parser, options_from_args, parse_args
from pc_gpu.telemetry import RedisSettings, redis_settings
from pc_gpu.telemetry_queue import TelemetryPublisher
from pc_gpu.watch import BAD, READY, WAIT, inspect_frame
from realtime_helpers import (KEY, N_FRAMES, SLEW_AFTER, check_telemetry, drop, make_service, n_outcomes,
                              outcomes, read_ledger, start_service, wait_for)


def open_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


# --- units ---------------------------------------------------------------------------------------

def test_ledger_replay_resume_and_torn_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    sid = led.service_id
    seq, stream_id = led.next_ids(1000)
    assert (seq, stream_id) == (1, "1000-0")
    led.append("start", frame="a.fits", seq=seq, stream_id=stream_id)
    led.append("telemetry", frame="a.fits", seq=seq, stream_id=stream_id, record={"zp_adu_per_s": 17.5})
    led.append("done", frame="a.fits", reason="")
    led.append("start", frame="b.fits", seq=2, stream_id="1001-0")
    led.close()
    with open(path, "a") as fh:
        fh.write('{"event": "done", "fra')   # a crash mid-write
    again = Ledger(path)
    assert again.service_id == sid
    assert again.outcome("a.fits")["event"] == "done"
    assert list(again.in_hand) == ["b.fits"] and again.starts["b.fits"] == 1
    assert list(again.pending) == [1]
    assert again.next_ids(5) == (3, "1002-0")  # never backwards, even if the clock is
    again.append("delivered", seq=1, stream_id="1000-0")
    again.close()
    with Ledger(path) as last:
        assert not last.pending
    assert path.read_text().endswith("\n")


def test_ledger_values_are_plain_json(tmp_path):
    """numpy scalars are written as JSON numbers; anything else that JSON cannot hold is refused
    before a line is written."""
    with Ledger(tmp_path / "ledger.jsonl") as led:
        led.append("done", frame="a.fits", reason="", zp_adu_per_s=np.float32(17.25), n_stars_for_zp=np.int64(3))
        with pytest.raises(TypeError, match="set is not JSON serialisable"):
            led.append("done", frame="b.fits", reason="", bad={1})
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"zp_adu_per_s":17.25,"n_stars_for_zp":3' in lines[1]
    with Ledger(tmp_path / "ledger.jsonl") as again:
        assert again.outcome("a.fits")["n_stars_for_zp"] == 3 and again.outcome("b.fits") is None


def test_watcher_events_wake_it_and_scan_keeps_arrival_order(tmp_path):
    from pc_gpu.watch import DirectoryWatcher

    watcher = DirectoryWatcher(tmp_path, pattern="*.fits", use_events=True)
    try:
        assert watcher.uses_events
        assert not watcher.wake.is_set()
        (tmp_path / "b.fits").write_bytes(b"x")
        assert watcher.wake.wait(10)   # woken by the filesystem event, no scan needed
        os.utime(tmp_path / "b.fits", ns=(0, 2_000_000_000))
        (tmp_path / "a.fits").write_bytes(b"x")
        os.utime(tmp_path / "a.fits", ns=(0, 1_000_000_000))
        for name in (".hidden.fits", "c.wcs", "d-summary.fits"):
            (tmp_path / name).write_bytes(b"x")
        assert watcher.scan() == {"a.fits", "b.fits"}
        assert [c.name for c in watcher.candidates()] == ["a.fits", "b.fits"]   # oldest first
        watcher.forget("a.fits")
        watcher.scan()
        assert [c.name for c in watcher.candidates()] == ["b.fits"]
    finally:
        watcher.stop()
    assert not watcher.uses_events
    polling = DirectoryWatcher(tmp_path, use_events=False)
    assert not polling.uses_events


def test_inspect_frame_states(tmp_path, night, small_camera):
    raw = night.raw[0]
    data = open_bytes(raw)
    d = tmp_path
    shutil.copy(raw, d / "ok.fits")
    assert inspect_frame(str(d / "ok.fits"), small_camera)[0] == WAIT  # no .wcs yet
    shutil.copy(night.wcs[0], d / "ok.wcs")
    assert inspect_frame(str(d / "ok.fits"), small_camera) == (READY, "complete")
    for name, content in (("empty", b""), ("start", data[:5]), ("header", data[:1000]),
                          ("half", data[: len(data) // 2]), ("short", data[:-2880])):
        (d / f"{name}.fits").write_bytes(content)
        shutil.copy(night.wcs[0], d / f"{name}.wcs")
        state, reason = inspect_frame(str(d / f"{name}.fits"), small_camera)
        assert state == WAIT, (name, reason)
    (d / "junk.fits").write_bytes(os.urandom(5000))
    assert inspect_frame(str(d / "junk.fits"), small_camera)[0] == BAD
    state, reason = inspect_frame(raw, EL_NINO)
    assert state == BAD and "3296 x 2472" in reason


def test_redis_settings_from_url_hide_password():
    s = redis_settings({"REDISURL": "rediss://user:s3cr%40t@db.example:6380/3", "REDISKEY": "k"})
    assert (s.host, s.port, s.db, s.key, s.ssl, s.username, s.password) == (
        "db.example", 6380, 3, "k", True, "user", "s3cr@t")
    assert "s3cr" not in repr(s) and "s3cr" not in s.description()
    s = redis_settings({"REDISURL": "redis://h", "REDISPASSWORD": "pw"})
    assert (s.port, s.db, s.ssl, s.password, s.key) == (6379, 0, False, "pw", "pointing_camera")
    s = redis_settings({"REDISHOST": "h2", "REDISPORT": "7000"})
    assert (s.host, s.port) == ("h2", 7000)
    from pc_gpu.errors import InputError

    with pytest.raises(InputError):
        redis_settings({"REDISURL": "http://h"})


def test_command_line_defaults_are_the_original_realtime_ones(tmp_path):
    args = parse_args([str(tmp_path), "--outdir", str(tmp_path / "o"), "--multiproc", "2"])
    run, service = options_from_args(args)
    assert (run.nightly_subdir, run.one_aper, run.check_tcs_motion, run.send_redis,
            run.write_detrended, run.checkplot, run.max_zp_radius, run.threads) == (
        True, True, True, True, False, True, 1200.0, 2)
    assert (service.pattern, service.poll_seconds, service.use_events, service.incomplete_timeout_s,
            service.heartbeat_ttl_s, service.stream_maxlen, service.redis_timeout_s, service.veto) == (
        "*.fits", 1.0, True, 60.0, 30.0, 100000, 1.0, frozenset())
    assert (run.solve, service.wcs_wait_s) == ("auto", 30.0)
    assert options_from_args(parse_args([str(tmp_path), "--outdir", "o", "--wcs_wait", "5"]))[1].wcs_wait_s == 5.0
    args = parse_args(["--meta_dir", "m", str(tmp_path), "--outdir", "o", "--no_nightly_subdir",
                       "--all_apers", "--no_check_tcs_motion", "--dont_send_redis", "--write_detrended",
                       "--skip_checkplot", "--no_max_zp_radius", "--no_events"])
    run, service = options_from_args(args)
    assert args.meta_dir == "m" and args.watchdir == str(tmp_path)
    assert (run.nightly_subdir, run.one_aper, run.check_tcs_motion, run.send_redis,
            run.write_detrended, run.checkplot, run.max_zp_radius, service.use_events) == (
        False, False, False, False, True, False, None, False)
    assert "--no_check_tcs_motion" in build_parser().format_help()


def test_redelivery_after_crash_adds_nothing(tmp_path, redis_server, redis_client):
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key=KEY)
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    pub = TelemetryPublisher(settings, led)
    for i in range(3):
        seq, sid = led.next_ids(time.time() * 1000)
        led.append("start", frame=f"f{i}.fits", seq=seq, stream_id=sid)
        pub.enqueue(f"f{i}.fits", seq, sid, {"zp_adu_per_s": 17.0 + i, "flag": 0})
    assert pub.flush() == 3
    pub.close()
    led.close()
    # a crash after XADD but before the 'delivered' events reached the disk
    lines = [ln for ln in path.read_text().splitlines(keepends=True) if '"delivered"' not in ln]
    path.write_text("".join(lines))
    led = Ledger(path)
    assert len(led.pending) == 3
    pub = TelemetryPublisher(settings, led)
    assert pub.flush() == 3 and not led.pending
    pub.close()
    led.close()
    entries = redis_client.xrange(f"{KEY}:history")
    assert [f["frame"] for _, f in entries] == ["f0.fits", "f1.fits", "f2.fits"]
    assert redis_client.hget(KEY, "zp_adu_per_s") == "19.0"


# --- whole nights, in process ------------------------------------------------------------------

def test_night_each_frame_once_with_redis_outage(tmp_path, night, small_camera, cpu, redis_server,
                                                 redis_client):
    """30 frames one by one; Redis down for frames 8-15 (records queued, then delivered)."""
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    watchdir = svc.service_options.watchdir
    try:
        for i in range(N_FRAMES):
            if i == 8:
                redis_client.save()   # the server keeps its data across the restart
                redis_server.stop()
            if i == 16:
                redis_server.start()
            drop(night, i, watchdir)
            processed, waiting = svc.poll_once()
            assert (processed, waiting) == (1, 0)
            if 8 <= i < 16:
                assert svc.publisher.n_pending == i - 7
            if i == 16:   # delivered, in order, at the first retry after Redis is back
                wait_for(svc.publisher.due, 5, "the retry")
                svc.tick()
                assert svc.publisher.n_pending == 0
        assert svc.poll_once() == (0, 0)   # nothing is reduced twice
    finally:
        if redis_server.proc is None:
            redis_server.start()
        svc.close()
    outdir = str(tmp_path / "out")
    events = read_ledger(outdir)
    final = outcomes(events)
    assert [e["frame"] for e in final] == [os.path.basename(p) for p in night.raw]
    skipped = [e for e in final if e["event"] == "skipped"]
    # the frame after the slew has ZPFLAG = 1: skipped by the TCS check, so it has no files and
    # no telemetry (the stream holds the 29 reduced frames; the ledger says why it is absent)
    assert [e["frame"] for e in skipped] == [os.path.basename(night.raw[SLEW_AFTER])]
    assert "ZPFLAG" in skipped[0]["reason"]
    assert sum(e["event"] == "done" for e in final) == N_FRAMES - 1
    client = redis_server.client()
    entries = check_telemetry(client, outdir, n_done=N_FRAMES - 1)
    assert len(entries) == N_FRAMES - 1
    # nightly subdirectory, standard outputs only (no detrended image), nothing temporary
    night_dir = os.path.join(outdir, "20210611")
    files = sorted(os.listdir(night_dir))
    assert len(files) == 2 * (N_FRAMES - 1)
    assert all(f.endswith(("-summary.fits", "-zp.png")) for f in files)
    hb = client.hgetall(f"{KEY}:heartbeat")
    assert set(hb) == {"time", "state", "pid", "host", "version", "watchdir", "outdir", "device", "uptime_s",
                       "frames_done", "frames_skipped", "frames_failed", "telemetry_pending", "last_frame",
                       "last_status", "last_reason", "last_time"}
    assert hb["state"] == "stopped" and int(hb["frames_done"]) == N_FRAMES - 1
    assert hb["last_frame"] == os.path.basename(night.raw[-1])
    assert 0 < client.ttl(f"{KEY}:heartbeat") <= 30


def test_corrupt_and_half_written_frames(tmp_path, night, small_camera, cpu, redis_server, redis_client):
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    watchdir = svc.service_options.watchdir
    half = os.path.basename(night.raw[3])
    data = open_bytes(night.raw[3])
    try:
        for i in range(3):
            drop(night, i, watchdir)
        with open(os.path.join(watchdir, "corrupt.fits"), "wb") as fh:
            fh.write(b"SIMPLE  =                    T" + os.urandom(6000))
        shutil.copy(night.wcs[0], os.path.join(watchdir, "corrupt.wcs"))
        fitsio.write(os.path.join(watchdir, "wrongsize.fits"), np.zeros((100, 120), np.uint16))
        shutil.copy(night.wcs[0], os.path.join(watchdir, "wrongsize.wcs"))
        shutil.copy(night.wcs[3], watchdir)
        with open(os.path.join(watchdir, half), "wb") as fh:
            fh.write(data[: len(data) // 2])
        assert svc.poll_once() == (3, 1)   # 3 good frames; the half-written one waits
        for i in range(4, 7):
            drop(night, i, watchdir)
            assert svc.poll_once() == (1, 1)
        with open(os.path.join(watchdir, half), "ab") as fh:
            fh.write(data[len(data) // 2:])
        assert svc.poll_once() == (1, 0)
        assert svc.poll_once() == (0, 0)
    finally:
        svc.close()
    final = outcomes(read_ledger(str(tmp_path / "out")))
    by_frame = {e["frame"]: e for e in final}
    assert len(by_frame) == len(final) == 9
    assert by_frame["corrupt.fits"]["event"] == "failed"
    assert "corrupt" in by_frame["corrupt.fits"]["reason"]
    assert by_frame["wrongsize.fits"]["event"] == "failed"
    assert "expected 600 x 450" in by_frame["wrongsize.fits"]["reason"]
    assert by_frame[half]["event"] == "done"
    assert sum(e["event"] == "done" for e in final) == 7


def test_interrupted_frame_is_cleaned_and_reduced_once(tmp_path, night, small_camera, cpu, redis_server,
                                                       redis_client):
    """A crash mid-frame leaves a 'start' and maybe partial files: the restart removes them and
    reduces the frame with the same sequence number (its telemetry is not duplicated)."""
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    watchdir = svc.service_options.watchdir
    for i in range(2):
        drop(night, i, watchdir)
    assert svc.poll_once() == (2, 0)
    name = drop(night, 2, watchdir)
    seq, sid = svc.ledger.next_ids(time.time() * 1000)
    svc.ledger.append("start", frame=name, seq=seq, stream_id=sid)
    result = svc.reducer.reduce(os.path.join(watchdir, name))
    svc.publisher.enqueue(name, seq, sid, svc._telemetry(result))
    svc.publisher.flush()
    night_dir = tmp_path / "out" / "20210611"
    base = name[:-5]
    (night_dir / f"{base}-summary.fits").write_bytes(b"partial")   # as if killed mid-publish
    (night_dir / f".{base}-zp.abc123.tmp.png").write_bytes(b"partial")
    svc.close()   # stands in for the SIGKILL: nothing after the telemetry was recorded

    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    assert not (night_dir / f".{base}-zp.abc123.tmp.png").exists()
    assert svc.poll_once() == (1, 0)
    svc.close()
    events = read_ledger(str(tmp_path / "out"))
    assert [e["frame"] for e in outcomes(events)] == [os.path.basename(p) for p in night.raw[:3]]
    starts = [e for e in events if e["event"] == "start" and e["frame"] == name]
    assert len(starts) == 2 and starts[0]["seq"] == starts[1]["seq"] == seq
    check_telemetry(redis_server.client(), str(tmp_path / "out"), n_done=3)
    assert not [f for f in os.listdir(night_dir) if f.startswith(".")]


def test_password_never_logged_and_redis_errors_do_not_stop_frames(tmp_path, night, small_camera, cpu,
                                                                  redis_server, redis_client, caplog):
    """A wrong password: frames are still reduced and written, telemetry stays queued, and the
    password appears nowhere in the log."""
    import logging

    secret = "hunter2-do-not-log"
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    svc.publisher.close()
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key=KEY, password=secret)
    svc.publisher = TelemetryPublisher(settings, svc.ledger)
    watchdir = svc.service_options.watchdir
    redis_client.ping()
    redis_client.config_set("requirepass", "the-right-one")   # this connection stays authenticated
    try:
        with caplog.at_level(logging.DEBUG):
            for i in range(2):
                drop(night, i, watchdir)
            assert svc.poll_once() == (2, 0)
            svc.close()
    finally:
        redis_client.config_set("requirepass", "")
    final = outcomes(read_ledger(str(tmp_path / "out")))
    assert [e["event"] for e in final] == ["done", "done"]
    with Ledger(tmp_path / "out" / LEDGER_NAME) as ledger:
        assert len(ledger.pending) == 2
    assert "unreachable" in caplog.text and secret not in caplog.text
    assert redis_client.xlen(f"{KEY}:history") == 0


# --- the real service process --------------------------------------------------------------------

def test_service_process_sigkill_restart_sigterm(tmp_path, night, redis_server, redis_client):
    """A real service process: frames picked up through filesystem events (the scan interval is
    600 s), SIGKILL while a frame is in hand (held there by the test-only hold point, after its
    telemetry and before its files), a restart that polls only, then SIGTERM."""
    (tmp_path / "watch").mkdir()
    watchdir = str(tmp_path / "watch")
    hold = tmp_path / "hold"
    proc = start_service(tmp_path, night, redis_server, "--poll_seconds", "600", env={"PC_GPU_TEST_HOLD": str(hold)})
    killed = os.path.basename(night.raw[12])
    try:
        wait_for(lambda: redis_client.hget(f"{KEY}:heartbeat", "state") == "running", 120,
                 "the service to start", proc)
        for i in range(12):
            name = drop(night, i, watchdir)
            wait_for(lambda: hold.exists() and hold.read_text() == name, 30, f"frame {i} in hand", proc)
            hold.unlink()
            wait_for(lambda: n_outcomes(tmp_path) == i + 1, 30, f"frame {i}", proc)
        for i in range(12, 15):
            drop(night, i, watchdir)
        wait_for(lambda: hold.exists() and hold.read_text() == killed, 30, "frame 12 in hand", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert n_outcomes(tmp_path) == 12
        for i in range(15, 18):
            drop(night, i, watchdir)   # frames landing while the service is down
        hold.unlink()
        proc = start_service(tmp_path, night, redis_server, "--no_events")
        wait_for(lambda: n_outcomes(tmp_path) == 18, 120, "the backlog after the restart", proc)
        for i in range(18, N_FRAMES):
            drop(night, i, watchdir)
        wait_for(lambda: n_outcomes(tmp_path) == N_FRAMES, 60, "the rest of the night", proc)
        wait_for(lambda: redis_client.xlen(f"{KEY}:history") == N_FRAMES - 1, 10, "the telemetry", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = read_ledger(str(tmp_path / "out"))
    final = outcomes(events)
    assert sorted(e["frame"] for e in final) == sorted(os.path.basename(p) for p in night.raw)  # each once
    # the killed frame: its telemetry was delivered before the kill; taken up again with the same
    # IDs after the restart; in the stream once (check_telemetry below)
    mine = [e for e in events if e.get("frame") == killed]
    assert [e["event"] for e in mine] == ["start", "telemetry", "delivered", "start", "done"]
    assert mine[0]["seq"] == mine[3]["seq"] and mine[0]["stream_id"] == mine[3]["stream_id"]
    assert [e["event"] for e in final].count("done") == N_FRAMES - 1
    check_telemetry(redis_client, str(tmp_path / "out"), n_done=N_FRAMES - 1)
    assert redis_client.hget(f"{KEY}:heartbeat", "state") == "stopped"
    leftovers = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "out") for f in fs
                 if f.startswith(".") and f != ".pc-realtime.lock"]
    assert not leftovers
    for e in final:
        for p in e.get("outputs", []):
            assert os.path.getsize(p) > 0
    log = (tmp_path / "service.log").read_text()
    assert "Traceback" not in log
