"""The realtime service's behaviours, each run with and without the condition or flag that
causes it: a retry after a failed write (telemetry once), the veto list, the incomplete-file
timeout, the lock, giving up after repeated crashes, --pattern, the realtime flags' effects on
outputs, telemetry and ledger, and SIGINT with a frame in hand (a real process)."""

import logging
import os
import signal
import socket
import time
from pathlib import Path

import fitsio
import pytest

from pc_gpu.errors import InputError
from pc_gpu.realtime import RealtimeService, main, options_from_args, parse_args
from pc_gpu.sim import make_demo_field
from pc_gpu.telemetry import RedisSettings
from realtime_helpers import (KEY, SLEW_AFTER, check_telemetry, drop, make_service, outcomes, read_ledger,
                              start_service, wait_for)

NIGHT_DIR = "20210611"


def names(night, indices):
    return [os.path.basename(night.raw[i]) for i in indices]


def final_events(tmp_path):
    return {e["frame"]: e for e in outcomes(read_ledger(str(tmp_path / "out")))}


def test_retry_after_failed_write_sends_telemetry_once(tmp_path, night, small_camera, cpu, redis_server,
                                                       redis_client):
    """Telemetry goes out before the files; when the files then fail to write (here the night
    directory cannot be made: a file has its name) the frame fails, and when it is taken up
    again (the file is touched once the problem is fixed) its record is not added again."""
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    watchdir = svc.service_options.watchdir
    blocker = tmp_path / "out" / NIGHT_DIR
    blocker.write_bytes(b"not a directory")
    first, second = names(night, (0, 1))
    try:
        drop(night, 0, watchdir)
        assert svc.poll_once() == (1, 0)
        failed = svc.ledger.outcome(first)
        assert failed["event"] == "failed" and "outputs not written" in failed["reason"]
        st = os.stat(os.path.join(watchdir, first))
        assert (failed["size"], failed["mtime_ns"]) == (st.st_size, st.st_mtime_ns)   # retried once it changes
        assert [f["frame"] for _, f in redis_client.xrange(f"{KEY}:history")] == [first]
        assert svc.poll_once() == (0, 0)   # not retried while the file is unchanged
        blocker.unlink()
        os.utime(os.path.join(watchdir, first), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        drop(night, 1, watchdir)
        assert svc.poll_once() == (2, 0)
    finally:
        svc.close()
    events = read_ledger(str(tmp_path / "out"))
    assert [(e["frame"], e["event"]) for e in outcomes(events)] == [(first, "failed"), (first, "done"),
                                                                     (second, "done")]
    starts = [e for e in events if e["event"] == "start" and e["frame"] == first]
    assert len(starts) == 2 and starts[0]["seq"] == starts[1]["seq"]
    assert starts[0]["stream_id"] == starts[1]["stream_id"]
    check_telemetry(redis_client, str(tmp_path / "out"), n_done=2)   # each frame once, in order


def test_veto_list(tmp_path, night, small_camera, cpu, redis_server, redis_client):
    """Vetoed frames are never reduced (nor recorded); without the veto they are."""
    vetoed, kept = names(night, (1, 0))
    (tmp_path / "watch").mkdir()
    veto_file = tmp_path / "veto.txt"
    veto_file.write_text(f"\n/somewhere/else/{vetoed}\n  \n")
    args = parse_args([str(tmp_path / "watch"), "--outdir", str(tmp_path / "out"), "--veto_list", str(veto_file)])
    veto = options_from_args(args)[1].veto
    assert veto == frozenset({vetoed})
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server, veto=veto)
    try:
        for i in (0, 1):
            drop(night, i, svc.service_options.watchdir)
        assert svc.poll_once() == (1, 0)
        assert svc.poll_once() == (0, 0)
    finally:
        svc.close()
    assert list(final_events(tmp_path)) == [kept]
    assert not [f for f in os.listdir(tmp_path / "out" / NIGHT_DIR) if f.startswith(vetoed[:-5])]
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)   # no veto now
    try:
        assert svc.poll_once() == (1, 0)
    finally:
        svc.close()
    assert final_events(tmp_path)[vetoed]["event"] == "done"
    with pytest.raises(InputError, match="cannot read the veto list"):
        options_from_args(parse_args([str(tmp_path), "--outdir", "o", "--veto_list", str(tmp_path / "none")]))


def test_incomplete_file_timeout(tmp_path, night, small_camera, cpu, redis_server, redis_client):
    """A frame whose file stopped growing short of its size waits; past --incomplete_timeout
    it is tried anyway (and fails, naming the problem); with the default timeout it waits on."""
    data = Path(night.raw[0]).read_bytes()
    name = names(night, (0,))[0]
    results = {}
    for timeout in (0.2, 60.0):
        base = tmp_path / str(timeout)
        base.mkdir()
        svc = make_service(base, night, small_camera, cpu, redis_server, incomplete_timeout_s=timeout)
        watchdir = svc.service_options.watchdir
        try:
            drop(night, 0, watchdir)
            with open(os.path.join(watchdir, name), "wb") as fh:
                fh.write(data[: len(data) // 2])
            assert svc.poll_once() == (0, 1)
            time.sleep(0.3)
            results[timeout] = svc.poll_once()
        finally:
            svc.close()
    assert results == {0.2: (1, 0), 60.0: (0, 1)}
    failed = final_events(tmp_path / "0.2")[name]
    st = os.stat(tmp_path / "0.2" / "watch" / name)
    assert failed["event"] == "failed" and (failed["size"], failed["mtime_ns"]) == (len(data) // 2, st.st_mtime_ns)
    assert not (tmp_path / "60.0" / "out" / NIGHT_DIR).exists()


def test_lock_against_a_second_service(tmp_path, night, small_camera, cpu, redis_server, redis_client, caplog):
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    try:
        with pytest.raises(InputError, match="another pc-realtime is already writing here"):
            make_service(tmp_path, night, small_camera, cpu, redis_server)
        with caplog.at_level(logging.ERROR):
            assert main([str(tmp_path / "watch"), "--outdir", str(tmp_path / "out"), "--dont_send_redis"]) == 1
        assert "another pc-realtime" in caplog.text and str(tmp_path / "out") in caplog.text
        other = tmp_path / "elsewhere"
        other.mkdir()
        make_service(other, night, small_camera, cpu, redis_server).close()   # another OUTDIR is free
    finally:
        svc.close()
    make_service(tmp_path, night, small_camera, cpu, redis_server).close()   # released on close


def _crash_with_frame_in_hand(tmp_path, night, small_camera, cpu, redis_server, name):
    """A service that takes `name` up and stops abruptly (no outcome recorded)."""
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    previous = svc.ledger.in_hand.get(name)
    seq, sid = (previous["seq"], previous["stream_id"]) if previous else svc.ledger.next_ids(time.time() * 1000)
    svc.ledger.append("start", frame=name, seq=seq, stream_id=sid,
                      path=os.path.join(svc.service_options.watchdir, name))
    svc.ledger.close()
    svc._lock.close()
    if svc.publisher is not None:
        svc.publisher.close()


@pytest.mark.parametrize("crashes", [2, 3])
def test_frame_given_up_after_three_crashes(tmp_path, night, small_camera, cpu, redis_server, redis_client,
                                            crashes):
    (tmp_path / "watch").mkdir()
    name = drop(night, 0, tmp_path / "watch")
    for _ in range(crashes):
        _crash_with_frame_in_hand(tmp_path, night, small_camera, cpu, redis_server, name)
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)
    try:
        polls = [svc.poll_once(), svc.poll_once()]
    finally:
        svc.close()
    final = final_events(tmp_path)[name]
    if crashes < 3:
        assert polls == [(1, 0), (0, 0)] and final["event"] == "done"
    else:   # given up, and not taken up again while the file is unchanged
        assert polls == [(0, 0), (0, 0)] and final["event"] == "failed"
        assert "stopped 3 times" in final["reason"]
        assert redis_client.xlen(f"{KEY}:history") == 0


def test_pattern(tmp_path, night, small_camera, cpu, redis_server, redis_client):
    first, second = names(night, (0, 1))
    assert options_from_args(parse_args([str(tmp_path), "--outdir", "o", "--pattern", "*1.fits"]))[1].pattern == "*1.fits"
    pattern = "*" + second[-16:]   # '*.00002_20000.fits': only the second frame matches
    assert not first.endswith(second[-16:])
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server, pattern=pattern)
    try:
        for i in (0, 1):
            drop(night, i, svc.service_options.watchdir)
        assert svc.poll_once() == (1, 0)
    finally:
        svc.close()
    assert list(final_events(tmp_path)) == [second]
    svc = make_service(tmp_path, night, small_camera, cpu, redis_server)   # the default *.fits
    try:
        assert svc.poll_once() == (1, 0)
    finally:
        svc.close()
    assert list(final_events(tmp_path)) == [second, first]


def _summary_tables(path):
    with fitsio.FITS(path) as f:
        return f["CATALOG"].read(), f["ZEROPOINTS"].read()


def test_realtime_flags_change_outputs_telemetry_and_ledger(tmp_path, night, small_camera, cpu, redis_server,
                                                            redis_client):
    """The realtime defaults against each flag that turns one off, over a tracked frame and the
    frame after the slew (ZPFLAG = 1)."""
    frames = (SLEW_AFTER - 1, SLEW_AFTER)
    flags = ["--write_detrended", "--no_nightly_subdir", "--all_apers", "--no_check_tcs_motion",
             "--dont_send_redis", "--no_max_zp_radius", "--no_thumbnail"]
    runs = {}
    for label, extra in (("defaults", []), ("flags", flags)):
        base = tmp_path / label
        (base / "watch").mkdir(parents=True)
        run, service_options = options_from_args(parse_args(
            [str(base / "watch"), "--outdir", str(base / "out"), "--device", "cpu", "--no_events", *extra]))
        svc = RealtimeService(run, service_options, camera=small_camera, meta_dir=night.meta_dir,
                              gaia_dir=night.gaia_dir, backend=cpu,
                              redis_settings=RedisSettings(host="127.0.0.1", port=redis_server.port, key=label))
        try:
            for i in frames:
                drop(night, i, str(base / "watch"))
            assert svc.poll_once() == (2, 0)
        finally:
            svc.close()
        runs[label] = final_events(base)
    tracked, moved = names(night, frames)
    stem = tracked[:-5]
    # --no_check_tcs_motion: the frame after the slew is reduced instead of skipped
    assert runs["defaults"][moved]["event"] == "skipped" and "ZPFLAG" in runs["defaults"][moved]["reason"]
    assert runs["flags"][moved]["event"] == "done"
    # --no_nightly_subdir, --write_detrended and --no_thumbnail: where the files go and which
    night_dir = tmp_path / "defaults" / "out" / NIGHT_DIR
    assert sorted(os.listdir(night_dir)) == [f"{stem}-summary.fits", f"{stem}-thumb.jpg", f"{stem}-zp.png"]
    flat = tmp_path / "flags" / "out"
    assert {f"{stem}-summary.fits", f"{stem}-zp.png", f"{stem}-detrended.fits"} <= set(os.listdir(flat))
    assert not any(name.endswith("-thumb.jpg") for name in os.listdir(flat))
    assert not (flat / NIGHT_DIR).exists()
    assert fitsio.read(flat / f"{stem}-detrended.fits").shape == small_camera.shape
    # --all_apers: 7 apertures in the catalogue and the zeropoints instead of the 2.5 pix one
    cat_default, zp_default = _summary_tables(night_dir / f"{stem}-summary.fits")
    cat_flags, zp_flags = _summary_tables(flat / f"{stem}-summary.fits")
    assert set(zp_default["aper_ind"]) == {0} and set(zp_flags["aper_ind"]) == set(range(7))
    assert cat_default["flux_adu"].shape[1:] in ((), (1,)) and cat_flags["flux_adu"].shape[1:] == (7,)
    # the one aperture is the standard 2.5 pix one: its zeropoint equals aperture 1 of all seven
    assert zp_default[zp_default["quadrant"] == 0]["zp_adu_per_s"][0] == pytest.approx(
        zp_flags[(zp_flags["quadrant"] == 0) & (zp_flags["aper_ind"] == 1)]["zp_adu_per_s"][0], abs=1e-6)
    # --no_max_zp_radius: recorded (the radius cut itself is tested on a wide frame below)
    assert set(zp_default["max_zp_radius"]) == {1200} and set(zp_flags["max_zp_radius"]) == {99999}
    # --dont_send_redis: telemetry for the defaults only; no telemetry events in the ledger
    assert redis_client.xlen("defaults:history") == 1 and redis_client.exists("defaults:heartbeat")
    assert not redis_client.keys("flags*")
    assert not [e for e in read_ledger(str(flat)) if e["event"] in ("telemetry", "delivered")]


@pytest.fixture(scope="module")
def wide_field(tmp_path_factory, sim_gaia_dir):
    """A 2600 x 64 pixel frame: stars out to 1300 pix from the centre, cheap to simulate."""
    from pc_gpu.camera import EL_NINO

    camera = EL_NINO.with_(nx=2600, ny=64)
    return make_demo_field(tmp_path_factory.mktemp("wide"), seed=3, gaia_dir=sim_gaia_dir, camera=camera), camera


def test_max_zp_radius_default_and_no_max_zp_radius(tmp_path, wide_field, cpu):
    """Realtime uses only stars within 1200 pix for zeropoints unless --no_max_zp_radius."""
    field, camera = wide_field
    watch = tmp_path / "watch"
    watch.mkdir()
    for path in (field.raw, field.wcs):
        os.symlink(path, watch / os.path.basename(path))
    counts = {}
    for label, extra in (("defaults", []), ("flags", ["--no_max_zp_radius"])):
        run, service_options = options_from_args(parse_args(
            [str(watch), "--outdir", str(tmp_path / label), "--device", "cpu", "--no_events", "--dont_send_redis",
             "--no_nightly_subdir", *extra]))
        svc = RealtimeService(run, service_options, camera=camera, meta_dir=field.meta_dir,
                              gaia_dir=field.gaia_dir, backend=cpu)
        try:
            assert svc.poll_once() == (1, 0)
        finally:
            svc.close()
        summary = tmp_path / label / os.path.basename(field.raw).replace(".fits", "-summary.fits")
        cat, zps = _summary_tables(summary)
        far = cat["radius_pix"] > 1200
        assert far.sum() >= 5
        expected = far if label == "defaults" else 0 * far
        assert (cat["radius_too_large"].astype(bool) == expected.astype(bool)).all(), label
        counts[label] = zps[(zps["quadrant"] == 0) & (zps["science_fov_only"] == 0)]["n_sources_for_zp"][0]
    assert counts["flags"] > counts["defaults"]


def test_redis_timeout(tmp_path, night, small_camera, cpu, caplog):
    """--redis_timeout reaches the client: a server that accepts and never answers costs that
    long, the frame is still written and its record waits in the ledger."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        (tmp_path / "watch").mkdir()
        run, service_options = options_from_args(parse_args(
            [str(tmp_path / "watch"), "--outdir", str(tmp_path / "out"), "--device", "cpu", "--no_events",
             "--redis_timeout", "0.2"]))
        settings = RedisSettings(host="127.0.0.1", port=silent.getsockname()[1], key=KEY)
        svc = RealtimeService(run, service_options, camera=small_camera, meta_dir=night.meta_dir,
                              gaia_dir=night.gaia_dir, backend=cpu, redis_settings=settings)
        try:
            assert svc.publisher.client.connection_pool.connection_kwargs["socket_timeout"] == 0.2
            drop(night, 0, str(tmp_path / "watch"))
            with caplog.at_level(logging.WARNING):
                assert svc.poll_once() == (1, 0)
            assert svc.publisher.n_pending == 1
        finally:
            svc.publisher.close()
            svc.publisher = None   # closing would wait for the silent server again
            svc.close()
    assert "Timeout" in caplog.text
    done = final_events(tmp_path)[names(night, (0,))[0]]
    assert done["event"] == "done" and done["telemetry_queued"]


def test_sigint_finishes_the_frame_in_hand(tmp_path, night, redis_server, redis_client):
    """SIGINT arrives while a frame is in hand (held there by the test-only hold point): that
    frame is finished, the next one is left for later, the service exits 0."""
    (tmp_path / "watch").mkdir()
    for i in (0, 1):
        drop(night, i, str(tmp_path / "watch"))
    hold = tmp_path / "hold"
    proc = start_service(tmp_path, night, redis_server, "--no_events", "--poll_seconds", "600",
                         env={"PC_GPU_TEST_HOLD": str(hold)})
    first = names(night, (0,))[0]
    try:
        wait_for(lambda: hold.exists() and hold.read_text() == first, 120, "a frame in hand", proc)
        proc.send_signal(signal.SIGINT)
        log = tmp_path / "service.log"
        wait_for(lambda: "SIGINT: finishing the frame in hand" in log.read_text(), 30, "the signal", proc)
        hold.unlink()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(final_events(tmp_path)) == [first] and final_events(tmp_path)[first]["event"] == "done"
    check_telemetry(redis_client, str(tmp_path / "out"), n_done=1)
    assert redis_client.hget(f"{KEY}:heartbeat", "state") == "stopped"
    text = (tmp_path / "service.log").read_text()
    assert "(polling)" in text and "Traceback" not in text   # --no_events: no filesystem events
    assert os.path.exists(tmp_path / "out" / NIGHT_DIR / (first[:-5] + "-summary.fits"))


def test_a_frame_whose_wcs_never_comes_is_solved_after_the_wait(tmp_path, night, small_camera, cpu, redis_server):
    """--solve auto: the frame waits for its .wcs for --wcs_wait seconds, then is plate-solved;
    with --solve never it waits for as long as the .wcs does not come."""
    import dataclasses
    import shutil

    for solve in ("never", "auto"):
        base = tmp_path / solve
        base.mkdir()
        svc = make_service(base, night, small_camera, cpu, redis_server, wcs_wait_s=0.5)
        svc.options = dataclasses.replace(svc.options, solve=solve)
        svc.reducer.options = svc.options
        try:
            name = os.path.basename(night.raw[0])
            shutil.copy(night.raw[0], base / "watch" / name)  # the frame, and no .wcs
            assert svc.poll_once() == (0, 1)
            time.sleep(0.6)
            assert svc.poll_once() == ((0, 1) if solve == "never" else (1, 0))
        finally:
            svc.close()
        events = outcomes(read_ledger(base / "out"))
        if solve == "never":
            assert events == []
            continue
        (done,) = events
        assert done["event"] == "done", done
        summary = next(p for p in done["outputs"] if p.endswith("-summary.fits"))
        header = fitsio.read_header(summary)
        assert (header["WCSORIG"], header["WCSVERIF"]) == ("solved", True)
    # a frame with no star and no .wcs: failed, with the reason
    from pc_gpu.sim import write_frame
    from pc_gpu.sim.solvecases import starless_frame

    base = tmp_path / "starless"
    base.mkdir()
    raw = write_frame(starless_frame(night.gaia_dir, 7, camera=small_camera), str(tmp_path / "sim")).raw
    svc = make_service(base, night, small_camera, cpu, redis_server, wcs_wait_s=0.0)
    try:
        shutil.copy(raw, base / "watch")
        assert svc.poll_once() == (1, 0)
    finally:
        svc.close()
    (failed,) = outcomes(read_ledger(base / "out"))
    assert failed["event"] == "failed" and "no solution" in failed["reason"], failed
