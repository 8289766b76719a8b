"""`pc-realtime`: reduce each new pointing-camera frame as it lands, with telemetry to Redis.

A thin loop around one long-lived `Reducer` (calibrations, Gaia stars, compiled kernels and
device buffers stay warm): watch WATCHDIR, take each ready frame in arrival order, reduce it,
queue and deliver its telemetry, write its files, record its outcome in the ledger
(``OUTDIR/pc-realtime-ledger.jsonl``, see `pc_gpu.ledger`). A restart resumes from the ledger.

`RealtimeService.process` reduces one frame and can be driven without the watcher;
`RealtimeService.poll_once` does one pass over the directory; `run` is the service loop.
"""

import argparse
import dataclasses
import datetime as dt
import glob
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from . import __version__
from .camera import EL_NINO
from .errors import InputError, OutputExistsError, PCError, TelescopeMotion
from .ledger import Ledger, lock_directory
from .outputs import remove_outputs
from .watch import BAD, READY, WAIT, DirectoryWatcher, inspect_frame

__all__ = ["ServiceOptions", "RealtimeService", "build_parser", "parse_args", "options_from_args",
           "main", "LEDGER_NAME"]

log = logging.getLogger("pc_gpu.realtime")

LEDGER_NAME = "pc-realtime-ledger.jsonl"
LOCK_NAME = ".pc-realtime.lock"
_MAX_STARTS = 3   # a frame in hand at this many crashes is given up as failed
_HOLD_ENV = "PC_GPU_TEST_HOLD"   # tests only, see _hold_for_test


@dataclass(frozen=True)
class ServiceOptions:
    """How the service watches and reports (the reduction itself is `RunOptions`).

    watchdir : directory where raw frames and .wcs files land; pattern : raw file names;
    poll_seconds : directory scan interval, s (the fallback when events are missed);
    use_events : filesystem events (inotify) when available; incomplete_timeout_s : a frame
    whose file stops growing before it is complete is tried anyway after this, s;
    heartbeat_ttl_s : lifetime of the heartbeat key, s (refreshed every third of it);
    stream_maxlen : approximate cap on the Redis history stream (0: none); redis_timeout_s :
    socket timeouts, s; veto : raw file names never to reduce; wcs_wait_s : with --solve auto,
    a complete frame whose .wcs has not come after this long (since its file last changed) is
    plate-solved, s.
    """

    watchdir: str
    pattern: str = "*.fits"
    poll_seconds: float = 1.0
    use_events: bool = True
    incomplete_timeout_s: float = 60.0
    heartbeat_ttl_s: float = 30.0
    stream_maxlen: int = 100000
    redis_timeout_s: float = 1.0
    veto: frozenset = frozenset()
    wcs_wait_s: float = 30.0

    def __post_init__(self):
        if self.poll_seconds <= 0:
            raise InputError(None, f"--poll_seconds must be positive, not {self.poll_seconds}")
        if self.heartbeat_ttl_s < 3:
            raise InputError(None, f"--heartbeat_ttl must be at least 3 s, not {self.heartbeat_ttl_s}")
        if self.incomplete_timeout_s <= 0:
            raise InputError(None, "--incomplete_timeout must be positive")
        if not self.wcs_wait_s >= 0:
            raise InputError(None, f"--wcs_wait must be >= 0 seconds, not {self.wcs_wait_s}")
        if not os.path.isdir(self.watchdir):
            raise InputError(self.watchdir, "watch directory not found")


def _utc_now():
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class RealtimeService:
    """The realtime reduction service.

    Parameters
    ----------
    run_options : pc_gpu.pipeline.RunOptions
        The reduction options; `outdir` is required (the ledger lives there).
    service_options : ServiceOptions
    camera : pc_gpu.camera.Camera
    meta_dir, gaia_dir : str, optional
        As for `Reducer`.
    backend : optional
        As for `Reducer`.
    redis_settings : pc_gpu.telemetry.RedisSettings, optional
        Default: from the environment (`pc_gpu.telemetry.redis_settings`).
    """

    def __init__(self, run_options, service_options, *, camera=EL_NINO, meta_dir=None, gaia_dir=None,
                 backend=None, redis_settings=None):
        from .pipeline import Reducer

        if run_options.outdir is None:
            raise InputError(None, "--outdir is required: the ledger and outputs go there")
        self.options = run_options
        self.service_options = service_options
        self.camera = camera
        self.outdir = os.path.abspath(run_options.outdir)
        os.makedirs(self.outdir, exist_ok=True)
        self._lock = lock_directory(self.outdir, LOCK_NAME, "pc-realtime")
        self.ledger = Ledger(os.path.join(self.outdir, LEDGER_NAME))
        self.reducer = Reducer(run_options, camera=camera, meta_dir=meta_dir, gaia_dir=gaia_dir,
                               backend=backend)
        self.publisher = None
        if run_options.send_redis:
            from .telemetry import redis_settings as settings_from_env
            from .telemetry_queue import TelemetryPublisher

            settings = redis_settings if redis_settings is not None else settings_from_env()
            self.publisher = TelemetryPublisher(
                settings, self.ledger, stream_maxlen=service_options.stream_maxlen,
                heartbeat_ttl_s=service_options.heartbeat_ttl_s,
                timeout_s=service_options.redis_timeout_s)
            log.info("telemetry to %s (stream %s, heartbeat %s)", settings.description(),
                     self.publisher.stream_key, self.publisher.heartbeat_key)
        self.watcher = None
        self.reporter = None  # pc_gpu.report.live.LiveReport with --report: told of every outcome
        self.stopping = False
        self.started = time.time()
        self.last = {"last_frame": "", "last_status": "", "last_reason": "", "last_time": ""}
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self._next_heartbeat = 0.0
        self._waiting_logged = {}
        self.recover()

    # --- one frame -----------------------------------------------------------------------

    def recover(self):
        """Prepare frames that were in hand when the service last stopped abruptly: remove
        their partial outputs so they are reduced afresh (or give up after repeated crashes)."""
        for name, start in list(self.ledger.in_hand.items()):
            removed = self._remove_outputs(name)
            if self.ledger.starts.get(name, 0) >= _MAX_STARTS:
                size, mtime_ns = _signature(start["path"]) if start.get("path") else (None, None)
                self._record("failed", name, f"the service stopped {_MAX_STARTS} times while reducing it",
                             seq=start.get("seq"), size=size, mtime_ns=mtime_ns)
            else:
                log.warning("%s was in hand when the service stopped; it will be reduced again%s", name,
                            f" (removed {len(removed)} partial output file(s))" if removed else "")

    def _remove_outputs(self, name):
        """Delete the final and temporary output files of one frame; return their paths."""
        dirs = [self.outdir] + [d for d in glob.glob(os.path.join(glob.escape(self.outdir), "*"))
                                if os.path.isdir(d)]
        return [p for d in dirs for p in remove_outputs(name, d)]

    def process(self, raw_path, *, ready_time=None):
        """Reduce one frame, deliver its telemetry, write its files, record the outcome.

        Never raises for a bad frame: the outcome event (done, skipped or failed) is returned.
        """
        from .frameout import write_outputs

        raw_path = os.path.abspath(os.fspath(raw_path))
        name = os.path.basename(raw_path)
        ready_time = time.time() if ready_time is None else ready_time
        # a frame taken up again (after a crash, or after its files failed to write) keeps the
        # IDs its telemetry was queued with, so the history stream gets it once
        previous = self.ledger.telemetry_of.get(name) or self.ledger.in_hand.get(name)
        if previous is not None and previous.get("seq") is not None:
            seq, stream_id = int(previous["seq"]), previous["stream_id"]
        else:
            seq, stream_id = self.ledger.next_ids(time.time() * 1000)
        self.ledger.append("start", frame=name, seq=seq, stream_id=stream_id, path=raw_path)
        sig = _signature(raw_path)
        t0 = time.perf_counter()
        try:
            result = self.reducer.reduce(raw_path)
        except TelescopeMotion:
            return self._record("skipped", name, "telescope moved during the exposure (ZPFLAG set)", seq=seq)
        except (InputError, OutputExistsError, PCError) as exc:
            return self._record("failed", name, str(exc), seq=seq, size=sig[0], mtime_ns=sig[1])
        except Exception as exc:  # a bug or an unforeseen input: log it, record it, go on
            log.exception("%s: reduction failed", name)
            return self._record("failed", name, f"{type(exc).__name__}: {exc}", seq=seq,
                                size=sig[0], mtime_ns=sig[1])
        t_reduced = time.perf_counter()
        record = self._telemetry(result)
        sent = self.ledger.telemetry_of.get(name)
        if sent is not None and sent["seq"] == seq and sent["delivered"]:
            log.info("%s: telemetry already delivered (seq %d); not sent again", name, seq)
        elif self.publisher is not None:
            self.publisher.enqueue(name, seq, stream_id, record)
            self.publisher.flush()
        t_telemetry = time.perf_counter()
        _hold_for_test(name)
        try:
            paths = write_outputs(result, self.reducer)
        except (PCError, OSError) as exc:
            return self._record("failed", name, f"outputs not written: {exc}", seq=seq,
                                size=sig[0], mtime_ns=sig[1])
        t_written = time.perf_counter()
        warning = None
        if record["n_stars_for_zp"] == 0:
            warning = "no usable star for the zeropoint" if len(result.catalog) else "no Gaia star in the field"
            log.warning("%s: %s", name, warning)
        return self._record(
            "done", name, warning or "", seq=seq, stream_id=stream_id, outputs=sorted(paths.values()),
            obs_night=result.obs_night, zp_adu_per_s=record["zp_adu_per_s"],
            n_stars_for_zp=record["n_stars_for_zp"], device=self.reducer.backend.name,
            reduce_s=round(t_reduced - t0, 4), telemetry_s=round(t_telemetry - t_reduced, 4),
            write_s=round(t_written - t_telemetry, 4), since_ready_s=round(time.time() - ready_time, 4),
            telemetry_queued=bool(self.publisher and seq in self.ledger.pending))

    def _telemetry(self, result):
        from .telemetry import telemetry_record

        return telemetry_record(result.zeropoints, result.sky, result.timestamp,
                                standard_aperture=self.reducer.standard_aperture,
                                sci_inst_name=self.options.sci_inst_name, conditions=result.conditions,
                                pointing=result.pointing)

    def _record(self, status, name, reason, **fields):
        rec = self.ledger.append(status, frame=name, reason=reason, **fields)
        self.counts[status] += 1
        self.last = {"last_frame": name, "last_status": status, "last_reason": reason,
                     "last_time": rec["time"]}
        if status == "done":
            log.info("%s done in %.0f ms (reduce %.0f, telemetry %.0f, write %.0f)%s", name,
                     1e3 * (fields["reduce_s"] + fields["telemetry_s"] + fields["write_s"]),
                     1e3 * fields["reduce_s"], 1e3 * fields["telemetry_s"], 1e3 * fields["write_s"],
                     "; telemetry queued" if fields.get("telemetry_queued") else "")
        elif status == "skipped":
            log.warning("%s skipped: %s", name, reason)
        else:
            log.error("%s failed: %s", name, reason)
        self.heartbeat(force=True)
        if self.reporter is not None:
            self.reporter.notify(fields.get("obs_night"))
        return rec

    # --- the watch loop ------------------------------------------------------------------

    def _open_watcher(self):
        if self.watcher is None:
            so = self.service_options
            self.watcher = DirectoryWatcher(so.watchdir, pattern=so.pattern, use_events=so.use_events)
        return self.watcher

    def poll_once(self):
        """Scan the watch directory and reduce every ready frame, in arrival order.

        Returns
        -------
        (n_processed, n_waiting) : (int, int)
        """
        watcher = self._open_watcher()
        watcher.scan()
        processed = waiting = 0
        for cand in watcher.candidates():
            if self.stopping:
                break
            name = cand.name
            outcome = self.ledger.outcome(name)
            changed = watcher.touch(cand)
            if name in self.service_options.veto or (outcome is not None and outcome["event"] != "failed"):
                watcher.forget(name)
                continue
            if outcome is not None and cand.signature == (outcome.get("size"), outcome.get("mtime_ns")):
                continue  # failed before, and the file has not changed since
            if cand.signature is None:
                watcher.forget(name)
                continue
            state, reason = inspect_frame(cand.path, self.camera)
            if state == WAIT and reason != "no .wcs file yet" and not changed and (
                    time.monotonic() - cand.last_change > self.service_options.incomplete_timeout_s):
                log.warning("%s has not grown for %.0f s and is still %s: trying it anyway", name,
                            self.service_options.incomplete_timeout_s, reason)
                state = READY
            elif state == WAIT and reason == "no .wcs file yet" and self._solve_without_wcs(cand):
                state = READY
            if state == READY:
                self.process(cand.path, ready_time=time.time())
                processed += 1
                if self.ledger.outcome(name) and self.ledger.outcome(name)["event"] != "failed":
                    watcher.forget(name)
            elif state == BAD:
                sig = cand.signature
                self._record("failed", name, reason, size=sig[0], mtime_ns=sig[1])
            else:
                waiting += 1
                if self._waiting_logged.get(name) != reason:
                    self._waiting_logged[name] = reason
                    log.debug("%s: waiting (%s)", name, reason)
        self.tick()
        return processed, waiting

    def _solve_without_wcs(self, cand):
        """Whether a complete frame still without its .wcs is reduced now (and so solved):
        at once with --solve always, after --wcs_wait seconds with --solve auto, never with
        --solve never."""
        solve = self.options.solve
        waited = time.monotonic() - cand.last_change
        if solve == "always" or (solve == "auto" and waited >= self.service_options.wcs_wait_s):
            if solve == "auto":
                log.info("%s: no .wcs after %.0f s: solving it", cand.name, waited)
            return True
        return False

    def tick(self):
        """Deliver queued telemetry and refresh the heartbeat when they are due."""
        if self.publisher is not None and self.publisher.n_pending and self.publisher.due():
            self.publisher.flush()
        self.heartbeat()

    def heartbeat(self, *, force=False, state=None):
        """Refresh the heartbeat key (every third of its TTL, or now with `force`)."""
        if self.publisher is None:
            return
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        if self.publisher.n_pending and self.publisher.due():
            self.publisher.flush()
        status = {"time": _utc_now(), "state": state or ("stopping" if self.stopping else "running"),
                  "pid": os.getpid(), "host": socket.gethostname(), "version": __version__,
                  "watchdir": os.path.abspath(self.service_options.watchdir), "outdir": self.outdir,
                  "device": self.reducer.backend.name, "uptime_s": round(time.time() - self.started, 1),
                  "frames_done": self.counts["done"], "frames_skipped": self.counts["skipped"],
                  "frames_failed": self.counts["failed"], "telemetry_pending": self.publisher.n_pending,
                  **self.last}
        if self.publisher.heartbeat(status):
            self._next_heartbeat = now + self.service_options.heartbeat_ttl_s / 3.0

    def request_stop(self, signum=None, frame=None):
        """Ask the loop to stop after the frame in hand (safe in a signal handler)."""
        if signum is not None and not self.stopping:
            log.info("%s: finishing the frame in hand, then stopping", signal.Signals(signum).name)
        self.stopping = True
        if self.watcher is not None:
            self.watcher.wake.set()

    def run(self):
        """Warm up, then watch and reduce until SIGTERM/SIGINT; return the exit status (0)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        watcher = self._open_watcher()
        log.info("pc-realtime %s watching %s (%s), outputs and ledger in %s", __version__,
                 watcher.directory, "inotify events + polling" if watcher.uses_events else "polling",
                 self.outdir)
        self.warm_up()
        while not self.stopping:
            watcher.wake.clear()
            _, waiting = self.poll_once()
            if self.stopping:
                break
            timeout = self.service_options.poll_seconds
            if waiting or (self.publisher is not None and self.publisher.n_pending):
                timeout = min(timeout, 0.25)
            watcher.wake.wait(timeout)
        self.close()
        return 0

    def warm_up(self):
        """Before the first frame: load calibrations, compile (or load) the kernels, and make
        the first plot and FITS/WCS reads, so the first frame is as fast as the rest."""
        t0 = time.perf_counter()
        from .kernels import warm_up as warm_kernels

        self.reducer.calibrations
        warm_kernels(self.reducer.backend)
        if self.options.detect_streaks:
            from .streaks import warm_up as warm_streaks

            warm_streaks(self.reducer.backend)
        if self.options.solve != "never":
            from .astrometry.detect import warm_up as warm_detection
            from .astrometry.patterns import load_patterns, pattern_params

            warm_detection(self.reducer.backend)
            try:  # built here once rather than on the first frame to solve
                load_patterns(self.reducer.gaia_dir, pattern_params(self.camera.shape, self.camera.pixel_scale_arcsec))
            except InputError as exc:
                log.warning("no pattern data for plate solving: %s", exc)
        _warm_io(self.options.checkplot, self.options.thumbnail)
        log.info("warm in %.1f s; waiting for frames", time.perf_counter() - t0)

    def close(self):
        """Flush telemetry, mark the heartbeat stopped, release everything."""
        if self.publisher is not None:
            self.publisher.flush(force=True)
            self.heartbeat(force=True, state="stopped")
            if self.publisher.n_pending:
                log.warning("%d telemetry record(s) still queued in %s; delivered at the next start",
                            self.publisher.n_pending, self.ledger.path)
            self.publisher.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.reporter is not None:
            self.reporter.close()
        self.ledger.close()
        self._lock.close()
        log.info("stopped: %d done, %d skipped, %d failed", self.counts["done"], self.counts["skipped"],
                 self.counts["failed"])


def _warm_io(checkplot, thumbnail=False):
    """Import and exercise the FITS, WCS, plotting and thumbnail code once (first-use costs ~0.5 s)."""
    import tempfile
    import warnings

    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 30.0,
                              "CRPIX1": 8.0, "CRPIX2": 8.0, "CD1_1": -0.0024, "CD2_2": 0.0024})
        WCS(header).all_pix2world([[1.0, 2.0]], 0)
        path = os.path.join(tmp, "warm.fits")
        fits.writeto(path, np.zeros((16, 16), np.uint16), header)
        with fits.open(path, memmap=False) as hdul:
            hdul[0].data.sum()
        if checkplot:
            from .plots import zeropoint_plot

            g = np.linspace(10.0, 15.0, 20)
            zeropoint_plot(os.path.join(tmp, "warm.png"), g, g - 17.5, 17.5, title="warm-up", n_used=20,
                           aperture_radius_pix=2.5)
        if thumbnail:
            from .thumbnail import bin_image, write_thumbnail

            write_thumbnail(os.path.join(tmp, "warm.jpg"), bin_image(np.ones((16, 16), np.float32), 8))


def _hold_for_test(name):
    """Tests only: with $PC_GPU_TEST_HOLD set to a file name, write `name` there and wait while
    that file exists, so that a test signals or kills the service with a frame in hand (after
    its telemetry, before its files), by construction rather than by timing."""
    path = os.environ.get(_HOLD_ENV)
    if not path:
        return
    with open(path + ".part", "w", encoding="utf-8") as fh:
        fh.write(name)
    os.replace(path + ".part", path)
    log.warning("%s in hand: holding while %s exists (%s is set)", name, path, _HOLD_ENV)
    while os.path.exists(path):
        time.sleep(0.01)


def _signature(path):
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        return None, None


# --- command line ----------------------------------------------------------------------------

def build_parser():
    """The pc-realtime parser: its own flags, then every pc-proc reduction flag."""
    from .cli import add_reduction_arguments, add_test_camera_arguments

    p = argparse.ArgumentParser(
        prog="pc-realtime",
        description="Watch WATCHDIR for new pointing-camera frames and reduce each once, as it "
                    "lands (its FITS complete and its .wcs present, or plate-solved when the .wcs has not "
                    "come after --wcs_wait seconds), with telemetry to Redis. "
                    "The ledger OUTDIR/pc-realtime-ledger.jsonl records every frame's outcome; "
                    "a restart resumes from it. SIGTERM/SIGINT: finish the frame in hand, stop.",
        epilog="Defaults are the original's realtime ones: --nightly_subdir, --one_aper, "
               "--check_tcs_motion, --send_redis, --dont_write_detrended, --max_zp_radius 1200, "
               "and --thumbnail "
               "(the realtime flags turn them off). Redis: REDISURL (redis:// or rediss://) or "
               "REDISHOST, REDISPORT, REDISDBNUM; REDISKEY, REDISPASSWORD.")
    p.add_argument("watchdir", metavar="WATCHDIR", help="directory where raw frames and .wcs files land")
    p.add_argument("--outdir", required=True, help="output directory (ledger, per-night subdirectories)")
    g = p.add_argument_group("realtime")
    g.add_argument("--write_detrended", action="store_true", help="also write -detrended.fits")
    g.add_argument("--no_nightly_subdir", action="store_true", help="outputs directly in OUTDIR")
    g.add_argument("--all_apers", action="store_true", help="photometry in all 7 apertures (not only 2.5 pix)")
    g.add_argument("--no_check_tcs_motion", action="store_true", help="reduce frames with ZPFLAG set too")
    g.add_argument("--dont_send_redis", action="store_true", help="no Redis telemetry")
    g.add_argument("--no_max_zp_radius", action="store_true", help="use stars at any radius for zeropoints")
    g.add_argument("--pattern", default="*.fits", help="raw file names to watch (default *.fits)")
    g.add_argument("--poll_seconds", type=float, default=1.0,
                   help="directory scan interval, s (fallback for missed filesystem events; default 1)")
    g.add_argument("--no_events", action="store_true", help="do not use filesystem events; poll only")
    g.add_argument("--incomplete_timeout", type=float, default=60.0,
                   help="try a frame anyway when its file stopped growing this long ago, s (default 60)")
    g.add_argument("--heartbeat_ttl", type=float, default=30.0, help="heartbeat key lifetime, s (default 30)")
    g.add_argument("--stream_maxlen", type=int, default=100000,
                   help="approximate cap on the Redis history stream (0: none; default 100000)")
    g.add_argument("--redis_timeout", type=float, default=1.0, help="Redis socket timeout, s (default 1)")
    g.add_argument("--no_thumbnail", action="store_true", help="do not write RAW-thumb.jpg previews")
    g.add_argument("--wcs_wait", type=float, default=30.0, metavar="SECONDS",
                   help="with --solve auto, plate-solve a frame whose .wcs has not come this long after "
                        "the frame (default 30)")
    g.add_argument("--report", action="store_true",
                   help="keep the web report (OUTDIR/report/, as pc-report) up to date, off the latency path")
    g.add_argument("--report_interval", type=float, default=5.0,
                   help="least time between two report rebuilds, s (default 5)")
    g.add_argument("--veto_list", help="file of raw file names (or paths), one a line, never to reduce")
    add_test_camera_arguments(g)
    add_reduction_arguments(p.add_argument_group("reduction (as pc-proc; some are already the default here)"))
    return p


def parse_args(argv=None):
    """The parsed command line."""
    return build_parser().parse_args(argv)


def options_from_args(args):
    """(RunOptions, ServiceOptions) with the realtime defaults."""
    from .cli import options_from_args as proc_options

    run = proc_options(args)
    max_zp = None if args.no_max_zp_radius else (args.max_zp_radius or 1200.0)
    run = dataclasses.replace(
        run, outdir=args.outdir, write_detrended=args.write_detrended,
        nightly_subdir=not args.no_nightly_subdir, one_aper=not args.all_apers,
        check_tcs_motion=not args.no_check_tcs_motion, send_redis=not args.dont_send_redis,
        max_zp_radius=max_zp, thumbnail=not args.no_thumbnail)
    veto = frozenset()
    if args.veto_list:
        try:
            with open(args.veto_list, encoding="utf-8") as fh:
                veto = frozenset(os.path.basename(line.strip()) for line in fh if line.strip())
        except OSError as exc:
            raise InputError(args.veto_list, f"cannot read the veto list ({exc.strerror})") from None
    service = ServiceOptions(
        watchdir=args.watchdir, pattern=args.pattern, poll_seconds=args.poll_seconds,
        use_events=not args.no_events, incomplete_timeout_s=args.incomplete_timeout,
        heartbeat_ttl_s=args.heartbeat_ttl, stream_maxlen=args.stream_maxlen,
        redis_timeout_s=args.redis_timeout, veto=veto, wcs_wait_s=args.wcs_wait)
    return run, service


class _Redact(logging.Filter):
    """Replace a secret wherever it would appear in a log line."""

    def __init__(self, secret):
        super().__init__()
        self.secret = secret

    def filter(self, record):
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "***"), ()
        return True


def main(argv=None):
    """Entry point of `pc-realtime`; returns the exit status."""
    from .cli import camera_from_args, configure_logging

    args = parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    secret = os.environ.get("REDISPASSWORD")
    try:
        run, service_options = options_from_args(args)
        settings = None
        if run.send_redis:
            from .telemetry import redis_settings

            settings = redis_settings()
            secret = settings.password or secret
        if secret:
            for handler in logging.getLogger().handlers:
                handler.addFilter(_Redact(secret))
        camera = camera_from_args(args)
        service = RealtimeService(run, service_options, camera=camera, meta_dir=args.meta_dir,
                                  gaia_dir=args.gaia_dir, redis_settings=settings)
        if args.report:
            from .report.live import LiveReport

            service.reporter = LiveReport(service.outdir, interval_s=args.report_interval)
    except PCError as exc:
        log.error("%s", exc)
        return 1
    try:
        return service.run()
    except PCError as exc:
        log.error("%s", exc)
        service.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
