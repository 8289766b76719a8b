"""Telemetry against the simulator's truth and the options (`--sci_inst_name`, REDISKEY,
`--heartbeat_ttl`, `--stream_maxlen`), a password login, a TLS connection, and the stream-ID
clash branch, all against real redis-servers."""

import datetime as dt
import os
import shutil
import subprocess
import time

import fitsio
import numpy as np
import pytest

from pc_gpu.astrometry.pointing import POINTING_FIELDS
from pc_gpu.ledger import Ledger
from pc_gpu.realtime import RealtimeService, options_from_args, parse_args
from pc_gpu.conditions import TELEMETRY_FIELDS as CONDITION_FIELDS
from pc_gpu.telemetry import RedisSettings, TELEMETRY_FIELDS, redis_settings, send_telemetry
from pc_gpu.telemetry_queue import TelemetryPublisher
from realtime_helpers import drop, read_ledger
from redis_fixtures import RedisServer

SCI_RADIUS = 150.0        # pixels: a science field smaller than the small frame
CLOUDY = (0, 9, 10, 12)   # clear, then the passing cloud (peak at frame 10)
ZERO_SYSTEMATIC = 0.01    # mag: background of integer pixels, centroid noise (see test_pipeline)


def _truth_expectations(truth_path, camera):
    """Telemetry values the truth implies for one frame: {field: (value, tolerance)}; the
    zeropoints' tolerances ("zp") come from the scatter of the stars used (`_zp_tolerances`)."""
    truth = fitsio.read(truth_path, ext="TRUTH")
    head = fitsio.read_header(truth_path, ext="TRUTH")
    t, sky = head["EXPTIME"], head["SKY"]
    x, y = truth["X"], truth["Y"]
    usable = (truth["IN_FRAME"] & (truth["PEAK_RAW_MODEL"] < camera.zp_saturation_adu)
              & (truth["EDGE_DIST_PIX"] > 20) & np.isfinite(truth["G_PRIME"]))
    per_star = truth["G_PRIME"] + 2.5 * np.log10(truth["APER_FLUX_ADU"][:, 1] / t)   # 2.5 pix aperture
    cx, cy = camera.centre
    right, upper = x > camera.nx / 2 - 0.5, y > camera.ny / 2 - 0.5
    regions = {"": usable, "_q1": upper & right, "_q2": upper & ~right, "_q3": ~upper & ~right,
               "_q4": ~upper & right, "_wiyn": np.hypot(x - cx, y - cy) < SCI_RADIUS}
    out = {}
    for suffix, sel in regions.items():
        out[f"zp_adu_per_s{suffix}"] = (np.median(per_star[sel & usable]), "zp")
        out[f"n_truth{suffix}"] = (int((sel & usable).sum()), None)
    out["sky_adu_per_s"] = (sky, 0.005 * sky)
    out["sky_adu_per_s_wiyn"] = (sky, 0.01 * sky)
    for q in range(1, 5):
        out[f"sky_adu_per_s_q{q}"] = (head[f"SKYQ{q}"], 0.005 * head[f"SKYQ{q}"])
    out["mjd_obs"] = (head["MJD-OBS"], 1e-8)
    utc = dt.datetime(1858, 11, 17) + dt.timedelta(days=head["MJD-OBS"])
    local = (utc + dt.timedelta(hours=camera.timezone_offset_hours, seconds=0.5)).replace(microsecond=0)
    out["timestamp"] = (local.strftime("%Y-%m-%d/%H:%M:%S/MST/"), None)
    out["flag"] = (int(head["DOME"]), None)
    out["cloud"] = (head["CLOUDMAG"], None)
    # conditions: the light outside the 5 pix aperture (~0.2% here) and a small frame's few PSF
    # stars (their flux-weighted aperture correction: ~0.02 mag at worst here; the median of
    # their ratios moved by 0.03); the 0.01 mag accuracy is tests/test_conditions.py's, full size
    out["transparency"] = (10 ** (-0.4 * head["CLOUDMAG"]), 0.03 * 10 ** (-0.4 * head["CLOUDMAG"]))
    out["sky_mag_arcsec2"] = (head["ZP"] - 2.5 * np.log10(sky / camera.pixel_scale_arcsec ** 2), 0.03)
    return out


def _zp_tolerances(summary, sci_inst_name):
    """{telemetry zeropoint field: tolerance, mag} from the frame's ZEROPOINTS rows: a median of
    n stars with robust scatter s is uncertain by 1.2533 s / sqrt(n); allow 5 of those, plus
    ZERO_SYSTEMATIC."""
    zps = fitsio.read(summary, ext="ZEROPOINTS")
    out = {}
    for row in zps:
        q, sci = int(row["quadrant"]), int(row["science_fov_only"])
        key = "zp_adu_per_s" + (f"_{sci_inst_name}" if sci else f"_q{q}" if q else "")
        out[key] = ZERO_SYSTEMATIC + 5 * 1.2533 * row["robust_sigma_mag"] / np.sqrt(row["n_sources_for_zp"])
    return out


def test_telemetry_matches_truth_and_options(tmp_path, night, small_camera, cpu, redis_server, redis_client):
    """Through the command line's options and the environment: REDISKEY names the hash, the
    stream and the heartbeat; --sci_inst_name the science fields; --heartbeat_ttl the TTL;
    --stream_maxlen caps the stream. Every value against the frame's truth."""
    watch = tmp_path / "watch"
    watch.mkdir()
    env = {**redis_server.environ("pc_alt")}
    args = parse_args([str(watch), "--outdir", str(tmp_path / "out"), "--device", "cpu", "--sci_inst_name", "WIYN",
                       "--heartbeat_ttl", "100", "--stream_maxlen", str(len(CLOUDY) - 1), "--no_events"])
    run, service_options = options_from_args(args)
    camera = small_camera.with_(sci_fov_radius_pix=SCI_RADIUS)
    redis_client.config_set("stream-node-max-entries", 1)   # so that the approximate cap is exact
    try:
        svc = RealtimeService(run, service_options, camera=camera, meta_dir=night.meta_dir,
                              gaia_dir=night.gaia_dir, backend=cpu, redis_settings=redis_settings(env))
        latest = {}
        try:
            for i in CLOUDY:
                drop(night, i, str(watch))
                assert svc.poll_once() == (1, 0)
                latest[i] = redis_client.hgetall("pc_alt")
        finally:
            svc.close()
    finally:
        redis_client.config_set("stream-node-max-entries", 100)
    assert set(redis_client.keys()) == {"pc_alt", "pc_alt:history", "pc_alt:heartbeat"}
    assert redis_client.ttl("pc_alt:heartbeat") > 30   # not the default TTL
    assert redis_client.ttl("pc_alt:heartbeat") <= 100
    entries = redis_client.xrange("pc_alt:history")
    names = [os.path.basename(night.raw[i]) for i in CLOUDY]
    assert [f["frame"] for _, f in entries] == names[1:]   # capped at --stream_maxlen, oldest gone
    by_frame = {f["frame"]: f for _, f in entries}
    summaries = {e["frame"]: next(p for p in e["outputs"] if p.endswith("-summary.fits"))
                 for e in read_ledger(str(tmp_path / "out")) if e["event"] == "done"}
    assert list(summaries) == names
    # the seed's fields, the conditions, then the pointing (tests/test_wcs_refine.py checks those)
    fields = {f.replace("{inst}", "wiyn") for f in TELEMETRY_FIELDS} | set(CONDITION_FIELDS) | set(POINTING_FIELDS)
    for i, name in zip(CLOUDY, names):
        record = latest[i]
        assert set(record) == fields, i
        if name in by_frame:
            assert {k: v for k, v in by_frame[name].items() if k in fields} == record
        truth = _truth_expectations(night.truth[i], camera)
        zp_tol = _zp_tolerances(summaries[name], "wiyn")
        for key, (value, tol) in truth.items():
            tol = zp_tol[key] if tol == "zp" else tol
            if key in record and tol is not None:
                assert abs(float(record[key]) - value) <= tol, (i, key, record[key], value, tol)
            elif key in record:
                assert record[key] == str(value), (i, key)
        n = {s: int(record[f"n_stars_for_zp{s}"]) for s in ("", "_q1", "_q2", "_q3", "_q4", "_wiyn")}
        assert n[""] == sum(n[f"_q{q}"] for q in range(1, 5))
        for s, count in n.items():
            assert 0.5 * truth[f"n_truth{s}"][0] <= count <= truth[f"n_truth{s}"][0], (i, s)
    # the cloud is seen: the zeropoint follows the truth from frame to frame
    clear, cloudy = _truth_expectations(night.truth[0], camera), _truth_expectations(night.truth[10], camera)
    assert cloudy["cloud"][0] > 0.3
    measured = float(latest[0]["zp_adu_per_s"]) - float(latest[10]["zp_adu_per_s"])
    expected = clear["zp_adu_per_s"][0] - cloudy["zp_adu_per_s"][0]
    tol = np.hypot(_zp_tolerances(summaries[names[0]], "wiyn")["zp_adu_per_s"],
                   _zp_tolerances(summaries[names[2]], "wiyn")["zp_adu_per_s"])
    assert expected > 2 * tol and abs(measured - expected) < tol


def _publisher_run(settings, ledger_path, frames, **options):
    """Queue and deliver one record per frame name through a `TelemetryPublisher`."""
    with Ledger(ledger_path) as ledger:
        pub = TelemetryPublisher(settings, ledger, **options)
        for i, frame in enumerate(frames):
            seq, stream_id = ledger.next_ids(time.time() * 1000)
            pub.enqueue(frame, seq, stream_id, {"zp_adu_per_s": 17.0 + i, "flag": 0})
        delivered = pub.flush()
        pub.close()
        return delivered, dict(ledger.pending)


def test_stream_maxlen(tmp_path, redis_server, redis_client):
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key="cap")
    frames = [f"f{i}.fits" for i in range(6)]
    redis_client.config_set("stream-node-max-entries", 1)   # so that the approximate cap is exact
    try:
        assert _publisher_run(settings, tmp_path / "a.jsonl", frames, stream_maxlen=2)[0] == 6
        assert [f["frame"] for _, f in redis_client.xrange("cap:history")] == frames[-2:]
        redis_client.delete("cap:history")
        assert _publisher_run(settings, tmp_path / "b.jsonl", frames, stream_maxlen=0)[0] == 6   # 0: no cap
        assert redis_client.xlen("cap:history") == 6
    finally:
        redis_client.config_set("stream-node-max-entries", 100)


@pytest.fixture(scope="module")
def password_server(tmp_path_factory):
    """A redis-server that requires a password."""
    server = RedisServer(tmp_path_factory.mktemp("redis_pw"), args=["--requirepass", "s3cret pass"],
                         password="s3cret pass").start()
    yield server
    server.stop()


def test_password_login(tmp_path, password_server):
    """REDISPASSWORD reaches the server: the realtime queue and pc-proc's one-shot send both log
    in; the same without it is refused."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    env = {**password_server.environ("pw"), "REDISPASSWORD": "s3cret pass"}
    settings = redis_settings(env)
    assert _publisher_run(settings, tmp_path / "ledger.jsonl", ["a.fits", "b.fits"]) == (2, {})
    send_telemetry({"zp_adu_per_s": 18.25}, RedisSettings(**{**settings.__dict__, "key": "pw_proc"}))
    client = password_server.client()
    assert [f["frame"] for _, f in client.xrange("pw:history")] == ["a.fits", "b.fits"]
    assert client.hget("pw", "zp_adu_per_s") == "18.0" and client.hget("pw_proc", "zp_adu_per_s") == "18.25"
    env.pop("REDISPASSWORD")
    delivered, pending = _publisher_run(redis_settings(env), tmp_path / "nopw.jsonl", ["c.fits"])
    assert delivered == 0 and list(pending) == [1]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=password_server.port, retry=Retry(NoBackoff(), 0)).ping()
    assert client.xlen("pw:history") == 2


def test_tls_connection(tmp_path, monkeypatch):
    """`rediss://` to a redis-server with a throw-away certificate: the records arrive, over TLS."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a throw-away certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    tls_args = ["--port", "0", "--tls-port", "{port}", "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    server = RedisServer(tmp_path, args=tls_args, ssl=True, ssl_ca_certs=str(cert))
    try:
        server.start()
    except pytest.fail.Exception:
        log = (tmp_path / "redis-server.log").read_text()
        if "tls" in log.lower() and "support" in log.lower():   # a build without TLS
            pytest.skip(f"the installed redis-server has no TLS support: {log.strip().splitlines()[-1]}")
        raise
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))   # trust the throw-away certificate
        settings = redis_settings({"REDISURL": f"rediss://127.0.0.1:{server.port}/0", "REDISKEY": "tls"})
        assert settings.ssl
        assert _publisher_run(settings, tmp_path / "ledger.jsonl", ["a.fits"]) == (1, {})
        client = server.client()
        assert [f["frame"] for _, f in client.xrange("tls:history")] == ["a.fits"]
        plain = redis_settings({"REDISURL": f"redis://127.0.0.1:{server.port}/0", "REDISKEY": "tls"})
        assert _publisher_run(plain, tmp_path / "plain.jsonl", ["b.fits"])[0] == 0
        assert client.xlen("tls:history") == 1
    finally:
        server.stop()


def test_stream_id_clash_keeps_every_record(tmp_path, redis_server, redis_client):
    """Another writer put newer entries in the stream (or the clock went back): our record
    cannot have the ID the ledger gave it; it is added with a new ID, none is dropped, and
    its delivery is recorded under the ID it got."""
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, key="clash")
    future = int(time.time() * 1000) + 3_600_000
    redis_client.xadd("clash:history", {"frame": "other-writer"}, id=f"{future}-0")
    delivered, pending = _publisher_run(settings, tmp_path / "ledger.jsonl", ["a.fits", "b.fits"])
    assert (delivered, pending) == (2, {})
    entries = redis_client.xrange("clash:history")
    assert [f["frame"] for _, f in entries] == ["other-writer", "a.fits", "b.fits"]
    assert all(int(i.split("-")[0]) >= future for i, _ in entries)
    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        assert ledger.telemetry_of["b.fits"]["delivered"]
    events = [e for e in read_jsonl(tmp_path / "ledger.jsonl") if e["event"] == "delivered"]
    assert [e["stream_id"] for e in events] == [i for i, _ in entries[1:]]
    # delivering the same records again (a crash before 'delivered' was written) adds nothing
    lines = [ln for ln in (tmp_path / "ledger.jsonl").read_text().splitlines(keepends=True) if '"delivered"' not in ln]
    (tmp_path / "ledger.jsonl").write_text("".join(lines))
    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        pub = TelemetryPublisher(settings, ledger)
        assert pub.flush() == 2
        pub.close()
    assert redis_client.xlen("clash:history") == 3


def read_jsonl(path):
    import json

    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_redis_settings_errors_and_database_forms():
    from pc_gpu.errors import InputError

    assert redis_settings({"REDISURL": "redis://h?db=4"}).db == 4
    assert redis_settings({"REDISURL": "redis://h:7000/2"}).db == 2
    for url, message in (("redis://h:notaport/0", "malformed"), ("redis://h/zero", "database must be an integer"),
                         ("http://h", "scheme 'http'")):
        with pytest.raises(InputError, match=message):
            redis_settings({"REDISURL": url})
    with pytest.raises(InputError, match="REDISPORT and REDISDBNUM must be integers"):
        redis_settings({"REDISPORT": "six"})


def test_send_telemetry_reports_where_it_failed(redis_server, redis_client, caplog):
    import logging

    from pc_gpu.errors import TelemetryError

    with socket_closed() as port:
        with pytest.raises(TelemetryError, match=f"telemetry to redis at 127.0.0.1:{port} failed: ConnectionError"):
            send_telemetry({"zp_adu_per_s": 1.0}, RedisSettings(host="127.0.0.1", port=port), timeout_s=0.5)
    with caplog.at_level(logging.INFO, logger="pc_gpu.telemetry"):
        send_telemetry({"zp_adu_per_s": 1.5}, RedisSettings(host="127.0.0.1", port=redis_server.port, key="one"))
    assert f"telemetry sent to redis 127.0.0.1:{redis_server.port} key one" in caplog.text
    assert redis_client.hget("one", "zp_adu_per_s") == "1.5"


class socket_closed:
    """A local port that nothing listens on (as a context manager yielding the port)."""

    def __enter__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


def test_main_in_process_with_password(tmp_path, night, password_server, monkeypatch):
    """`pc-realtime`'s main() in this process: the hidden test camera size, META, Gaia and the
    password-protected Redis from the environment reach the service; the password is redacted
    from every log handler; SIGTERM stops it with status 0."""
    import logging
    import signal
    import threading

    from pc_gpu.realtime import main
    from realtime_helpers import n_outcomes, wait_for

    secret = "s3cret pass"
    for name, value in {**password_server.environ("main"), "REDISPASSWORD": secret}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "watch").mkdir()
    frame = drop(night, 0, str(tmp_path / "watch"))
    stream = []
    handler = logging.StreamHandler(_Lines(stream))
    logging.getLogger().addHandler(handler)
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def stop_when_done():
        wait_for(lambda: n_outcomes(tmp_path) == 1, 120, "the frame")
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_done, daemon=True)
    stopper.start()
    try:
        status = main([str(tmp_path / "watch"), "--outdir", str(tmp_path / "out"), "--meta_dir", night.meta_dir,
                       "--gaia_dir", night.gaia_dir, "--device", "cpu", "--camera_nx", "600", "--camera_ny", "450",
                       "--no_events", "--poll_seconds", "0.2"])
        stopper.join(timeout=10)
        logging.getLogger("pc_gpu.test").warning("the password is %s", secret)
        missing = main([str(tmp_path / "missing"), "--outdir", str(tmp_path / "o2"), "--dont_send_redis"])
        no_meta = main([str(tmp_path / "watch"), "--outdir", str(tmp_path / "o3"), "--meta_dir", str(tmp_path / "nometa"),
                        "--dont_send_redis", "--device", "cpu", "--no_events"])   # fails in the warm-up
    finally:
        logging.getLogger().removeHandler(handler)
        for s, h in old.items():
            signal.signal(s, h)
    assert status == 0
    assert [(e["frame"], e["event"]) for e in read_ledger(str(tmp_path / "out")) if e["event"] == "done"] == [
        (frame, "done")]
    assert [f["frame"] for _, f in password_server.client().xrange("main:history")] == [frame]
    assert logging.getLogger("watchdog").level == logging.WARNING
    text = "".join(stream)
    assert "the password is ***" in text and secret not in text
    assert missing == 1 and f"\n{tmp_path / 'missing'}: watch directory not found\n" in text
    assert no_meta == 1 and f"\n{tmp_path / 'nometa'}: calibration directory not found" in text


class _Lines:
    """A write-only text stream that appends to a list."""

    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.append(text)

    def flush(self):
        pass
