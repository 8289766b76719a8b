"""Time the realtime service: latency from a frame's file being complete to its telemetry in
Redis, and behaviour under load (frames every second for minutes: backlog, resident memory).

Usage:
    python benchmarks/bench_realtime.py latency [--frames 30] [--device cpu]
    python benchmarks/bench_realtime.py load [--minutes 5] [--interval 1.0] [--device cpu]

A full-size simulated night (El Nino frames, ~4000 stars each) is made once in --workdir and
reused. A private redis-server (needs the binary on PATH) and the service (`python -m
pc_gpu.realtime`, realtime defaults) run as subprocesses. Each frame lands as a camera's does:
the .wcs first, then the FITS written under a hidden name and renamed into WATCHDIR, the
moment it is complete. The clock stops when its entry appears in the Redis stream (XREAD BLOCK).
"""

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from machine import environment

KEY = "pc_bench"


def make_night(workdir, n_frames):
    """The simulated full-size night (made once, then reused)."""
    from pc_gpu.sim import simulate_night

    night_dir = os.path.join(workdir, f"night{n_frames}")
    done = os.path.join(night_dir, "night_truth.fits")
    if not os.path.exists(done):
        shutil.rmtree(night_dir, ignore_errors=True)
        t0 = time.perf_counter()
        simulate_night(night_dir, n_frames=n_frames)
        print(f"simulated {n_frames} full-size frames in {time.perf_counter() - t0:.0f} s", flush=True)
    import fitsio

    index = fitsio.read(done)
    raw = [os.path.join(night_dir, "raw", str(name).strip()) for name in index["FNAME"]]
    return night_dir, raw, index["ZPFLAG"].astype(bool)


class Redis:
    def __init__(self, workdir):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.client.close()
        self.proc.terminate()
        self.proc.wait()


def start_service(watchdir, outdir, night_dir, redis, device, logpath, extra=()):
    env = {**os.environ, "REDISHOST": "127.0.0.1", "REDISPORT": str(redis.port), "REDISKEY": KEY}
    cmd = [sys.executable, "-m", "pc_gpu.realtime", watchdir, "--outdir", outdir,
           "--meta_dir", os.path.join(night_dir, "meta"), "--gaia_dir", os.path.join(night_dir, "gaia"),
           "--device", device, *extra]
    with open(logpath, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    while redis.client.hget(f"{KEY}:heartbeat", "state") != "running":
        if proc.poll() is not None:
            raise RuntimeError(f"service exited ({proc.returncode}); see {logpath}")
        if time.time() - t0 > 600:
            raise RuntimeError("service did not start")
        time.sleep(0.05)
    print(f"service warm after {time.time() - t0:.1f} s", flush=True)
    return proc


def land(raw, watchdir, name=None):
    """Put a frame in WATCHDIR (its .wcs, then its FITS renamed in whole); return (name, time)."""
    name = name or os.path.basename(raw)
    stem = name[:-5]
    shutil.copyfile(raw[:-5] + ".wcs", os.path.join(watchdir, stem + ".wcs"))
    tmp = os.path.join(watchdir, "." + name + ".part")
    shutil.copyfile(raw, tmp)
    os.replace(tmp, os.path.join(watchdir, name))
    return name, time.time()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def wait_entry(redis, last_id, timeout_s):
    """Block until the stream has an entry after `last_id`; return (id, fields, time) or None."""
    got = redis.client.xread({f"{KEY}:history": last_id}, count=1, block=int(timeout_s * 1000))
    if not got:
        return None
    entry_id, fields = got[0][1][0]
    return entry_id, fields, time.time()


def count_outcomes(ledger_path):
    with open(ledger_path) as fh:
        return sum(any(f'"event":"{e}"' in line for e in ("done", "skipped", "failed")) for line in fh)


def percentiles(values):
    v = np.asarray(values)
    return {"n": int(v.size), "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "max": float(v.max()), "mean": float(v.mean())}


def bench_latency(args, work):
    night_dir, raws, zpflag = make_night(args.workdir, args.frames)
    redis = Redis(work)
    watchdir, outdir = os.path.join(work, "watch"), os.path.join(work, "out")
    os.makedirs(watchdir)
    proc = start_service(watchdir, outdir, night_dir, redis, args.device, os.path.join(work, "service.log"),
                         extra=shlex.split(args.service_args))
    latencies, last_id = [], "0-0"
    try:
        for raw, moved in zip(raws, zpflag):
            name, t_complete = land(raw, watchdir)
            if moved:   # skipped by the TCS-motion check: no telemetry to wait for
                time.sleep(args.interval)
                continue
            got = wait_entry(redis, last_id, 60)
            if got is None:
                raise RuntimeError(f"no telemetry for {name}")
            last_id, fields, t_seen = got
            assert fields["frame"] == name, (fields["frame"], name)
            latencies.append(t_seen - t_complete)
            time.sleep(max(0.0, args.interval - (time.time() - t_complete)))
    finally:
        proc.terminate()
        rc = proc.wait()
        redis.stop()
    ledger = [json.loads(line) for line in open(os.path.join(outdir, "pc-realtime-ledger.jsonl"))]
    done = [e for e in ledger if e["event"] == "done"]
    stages = {k: percentiles([e[k] for e in done]) for k in ("reduce_s", "telemetry_s", "write_s")}
    return {"latency_s": percentiles(latencies), "stages": stages, "exit_status": rc,
            "frames": len(raws), "reduced": len(done)}


def bench_load(args, work):
    night_dir, raws, _ = make_night(args.workdir, args.frames)
    redis = Redis(work)
    watchdir, outdir = os.path.join(work, "watch"), os.path.join(work, "out")
    os.makedirs(watchdir)
    proc = start_service(watchdir, outdir, night_dir, redis, args.device, os.path.join(work, "service.log"))
    ledger_path = os.path.join(outdir, "pc-realtime-ledger.jsonl")
    samples, landed = [], {}
    t_start = time.time()
    n = 0
    try:
        while time.time() - t_start < 60 * args.minutes:
            raw = raws[n % len(raws)]
            base = os.path.basename(raw)[:-5]           # YYYYMMDD.HHMMSS.NNNNN_EEEEE
            name = f"{base[:15]}.{100000 + n:06d}{base[21:]}.fits"
            name, t_complete = land(raw, watchdir, name)
            landed[name] = t_complete
            n += 1
            with open(ledger_path) as fh:
                finished = {json.loads(line)["frame"]: json.loads(line) for line in fh
                            if '"event":"done"' in line or '"event":"skipped"' in line
                            or '"event":"failed"' in line}
            for f in finished:          # the camera's disk rotates: remove reduced raw frames
                if f in landed:
                    for ext in (".fits", ".wcs"):
                        with_ext = os.path.join(watchdir, f[:-5] + ext)
                        if os.path.exists(with_ext):
                            os.unlink(with_ext)
            samples.append({"t": t_complete - t_start, "landed": n, "finished": len(finished),
                            "backlog": n - len(finished), "rss_mib": rss_mib(proc.pid)})
            time.sleep(max(0.0, t_start + n * args.interval - time.time()))
        t_end = time.time() + 60
        while time.time() < t_end and count_outcomes(ledger_path) < n:
            time.sleep(0.2)
    finally:
        proc.terminate()
        rc = proc.wait()
    entries = redis.client.xrange(f"{KEY}:history")
    redis.stop()
    with open(ledger_path) as fh:
        events = [json.loads(line) for line in fh]
    done = {e["frame"]: e for e in events if e["event"] == "done"}
    delivered = {e["frame"]: e["time"] for e in events if e["event"] == "delivered"}
    import datetime as dt  # latency: landing to the ledger's record of delivery to Redis

    lat = [dt.datetime.fromisoformat(delivered[f]).timestamp() - landed[f] for f in done if f in delivered]
    after = [s["rss_mib"] for s in samples if s["t"] >= 60]
    return {"frames_landed": n, "reduced": len(done), "stream_entries": len(entries),
            "outcomes": sum(e["event"] in ("done", "skipped", "failed") for e in events),
            "max_backlog": max(s["backlog"] for s in samples),
            "backlog_last_minute_max": max(s["backlog"] for s in samples if s["t"] >= samples[-1]["t"] - 60),
            "rss_mib_at_60s": after[0] if after else None,
            "rss_mib_after_60s_min": min(after) if after else None,
            "rss_mib_after_60s_max": max(after) if after else None,
            "rss_mib_end": samples[-1]["rss_mib"],
            "rss_growth_after_60s_pct": (100.0 * (max(after) - min(after)) / min(after)) if after else None,
            "rss_mib_median_per_minute": [
                float(np.median([x["rss_mib"] for x in samples if m * 60 <= x["t"] < (m + 1) * 60]))
                for m in range(int(np.ceil(samples[-1]["t"] / 60)))],
            "latency_to_delivery_s": percentiles(lat), "exit_status": rc,
            "samples_every_10s": samples[::10]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("latency", "load"))
    parser.add_argument("--frames", type=int, default=30, help="frames in the simulated night")
    parser.add_argument("--minutes", type=float, default=5.0, help="load: how long frames keep coming")
    parser.add_argument("--interval", type=float, default=1.0, help="s between frames")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pc_gpu_bench_realtime"))
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--service_args", default="",
                        help="latency: more pc-realtime flags, e.g. '--report --report_interval 1'")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    for key, value in environment("numba", "astropy").items():
        print(f"{key:>9}: {value}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        result = bench_latency(args, work) if args.mode == "latency" else bench_load(args, work)
        shutil.copy(os.path.join(work, "service.log"), os.path.join(args.workdir, f"service-{args.mode}.log"))
    result = {"mode": args.mode, "device": args.device, "interval_s": args.interval, **result}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
