"""The archive driver: ledger, lock, recovery, dispatch to an engine, tables, progress, exit.

The driver is the only writer of the ledger (``OUT/pc-archive-ledger.jsonl``, `pc_gpu.ledger`
format): a ``start`` event for every frame of a chunk before the chunk is handed to the engine,
one final event (done, skipped, failed) per frame when its outcome comes back. After a crash
(`kill -9` included), frames started but without an outcome have their outputs removed and are
reduced again; finished frames are never redone.
"""

import collections
import contextlib
import logging
import os
import queue
import sys
import time

from ..errors import PCError
from ..ledger import Ledger, lock_directory
from ..outputs import output_paths, remove_outputs
from . import season
from .discover import NO_WCS
from .task import STOPPED

__all__ = ["run_archive", "LEDGER_NAME", "EXIT_OK", "EXIT_INPUT", "EXIT_FAILED"]

log = logging.getLogger("pc_gpu.archive")

LEDGER_NAME = "pc-archive-ledger.jsonl"
LOCK_NAME = ".pc-archive.lock"
EXIT_OK, EXIT_INPUT, EXIT_FAILED = 0, 1, 4
_MAX_STARTS = 3  # a frame in hand at this many crashes is given up as failed


def open_outdir(outdir):
    """Create OUT, take its lock and open its ledger: (lock handle, Ledger)."""
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise PCError(f"{outdir}: cannot create the output directory ({exc.strerror})") from None
    lock = lock_directory(outdir, LOCK_NAME, "pc-archive")
    try:
        return lock, Ledger(os.path.join(outdir, LEDGER_NAME))
    except BaseException:
        lock.close()
        raise


class Progress:
    """A tqdm bar on a terminal; otherwise a log line every `interval_s` seconds."""

    def __init__(self, total, *, interval_s=10.0, bar=None):
        self.total, self.interval_s = total, interval_s
        self.counts = collections.Counter()
        self.started = self._last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True, smoothing=0.1)

    def add(self, event, n=1):
        self.counts[event] += n
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(done=self.counts["done"], skipped=self.counts["skipped"],
                                 failed=self.counts["failed"], refresh=False)
        self.tick()

    def tick(self):
        now = time.monotonic()
        if self.bar is None and now - self._last >= self.interval_s:
            self._last = now
            n = sum(self.counts.values())
            rate = n / max(now - self.started, 1e-9)
            eta = (self.total - n) / rate if rate > 0 else float("nan")
            log.info("%d/%d frames (done %d, skipped %d, failed %d), %.2f frames/s, ETA %.0f s", n,
                     self.total, self.counts["done"], self.counts["skipped"], self.counts["failed"], rate, eta)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _reason_key(outcome):
    """A failure reason without the frame's own path, so equal causes group together."""
    reason = outcome.get("reason", "")
    for prefix in (outcome.get("path", ""), outcome["frame"]):
        if prefix and reason.startswith(prefix):
            reason = reason[len(prefix):].lstrip(": ")
    return reason[:120]


class _Run:
    """One pc-archive run over `frames` (see `run_archive`)."""

    def __init__(self, frames, spec, engine, ledger, *, chunk_size, retry_failed, progress_bar):
        self.spec, self.engine, self.ledger = spec, engine, ledger
        self.outdir = spec.options.outdir
        self.chunk_size = chunk_size
        self.frames = frames
        self.by_name = {f.name: f for f in frames}
        self.rows = {}
        self.remaining = collections.Counter()
        self.touched = set()
        self.written = set()
        self.stop_reason = None
        self.reasons = collections.Counter()
        self.recover()
        todo, skips = [], []
        for f in frames:
            outcome = ledger.outcome(f.name)
            if outcome is not None and not (retry_failed and outcome["event"] == "failed"):
                continue
            # without a .wcs a frame is skipped, unless it is to be plate-solved
            (skips if f.problem == NO_WCS and spec.options.solve == "never" else todo).append(f)
        self.todo = todo
        self.progress = Progress(len(todo) + len(skips), bar=progress_bar)
        for f in todo + skips:
            if f.night:
                self.remaining[f.night] += 1
        self.record([{"frame": f.name, "path": f.path, "event": "skipped", "reason": NO_WCS} for f in skips])

    def output_dir(self, night):
        return os.path.join(self.outdir, night) if self.spec.options.nightly_subdir else self.outdir

    def recover(self):
        """Frames in hand when a run stopped abruptly: remove what they may have left."""
        given_up = []
        for name, start in list(self.ledger.in_hand.items()):
            removed = remove_outputs(name, start["outdir"]) if start.get("outdir") else []
            if self.ledger.starts.get(name, 0) >= _MAX_STARTS:
                given_up.append({"frame": name, "path": start.get("path", ""), "night": start.get("night"),
                                 "event": "failed",
                                 "reason": f"the run stopped {_MAX_STARTS} times while reducing it"})
            else:
                log.warning("%s was in hand when a run stopped; reducing it again%s", name,
                            f" (removed {len(removed)} partial output file(s))" if removed else "")
        self.ledger.append_many([(o["event"], {k: v for k, v in o.items() if k != "event"}) for o in given_up])

    def check_free(self, frame):
        """A failed outcome when the frame's outputs already exist (and --overwrite is off)."""
        if self.spec.options.overwrite or frame.night is None:
            return None
        existing = [p for p in output_paths(frame.path, self.output_dir(frame.night)).values() if os.path.exists(p)]
        if existing:
            return {"frame": frame.name, "path": frame.path, "event": "failed",
                    "reason": f"output already exists: {', '.join(existing)} (use --overwrite to replace)"}
        return None

    def record(self, outcomes):
        """Append the final events of `outcomes` to the ledger; update tables and progress."""
        events = []
        for o in outcomes:
            if o["event"] == STOPPED:
                self.stop_reason = self.stop_reason or o["reason"]
                continue
            frame = self.by_name.get(o["frame"])
            night = o.get("night") or (frame.night if frame else None)
            fields = {"frame": o["frame"], "reason": o["reason"], "path": o["path"], "night": night,
                      "local_time": frame.local_time if frame else None}
            for key in ("outputs", "seconds", "load_s", "stages_ms", "write_s", "batch"):
                if key in o:
                    fields[key] = o[key]
            events.append((o["event"], fields))
            if o.get("rows") is not None:
                self.rows[o["frame"]] = o["rows"]
            if o["event"] != "done":
                self.reasons[(o["event"], _reason_key(o))] += 1
        if not events:
            return
        self.ledger.append_many(events)
        for event, fields in events:
            self.progress.add(event)
            night = fields["night"]
            if night:
                self.touched.add(night)
                self.remaining[night] -= 1
                if self.remaining[night] <= 0 and self.stop_reason is None:
                    try:
                        self.write_tables(night)
                    except OSError as exc:
                        self.stop_reason = f"the season tables could not be written ({exc})"

    def write_tables(self, night, outcomes=None):
        if outcomes is None:
            outcomes = season.nights_of(self.ledger, only=night).get(night, [])
        season.write_night(self.outdir, night, outcomes, self.rows)
        self.written.add(night)
        for outcome in outcomes:
            self.rows.pop(outcome["frame"], None)

    def dispatch(self):
        """Hand chunks to the engine, record outcomes as chunks finish."""
        finished = queue.Queue()
        inflight = {}
        pending = collections.deque(self.todo[i:i + self.chunk_size]
                                    for i in range(0, len(self.todo), self.chunk_size))
        while inflight or (pending and self.stop_reason is None):
            while pending and self.stop_reason is None and len(inflight) < self.engine.max_inflight:
                chunk = pending.popleft()
                refused = [r for r in map(self.check_free, chunk) if r is not None]
                self.record(refused)
                chunk = [f for f in chunk if f.name not in {r["frame"] for r in refused}]
                if not chunk:
                    continue
                self.ledger.append_many([("start", {"frame": f.name, "path": f.path, "night": f.night,
                                                    "outdir": self.output_dir(f.night) if f.night else None})
                                         for f in chunk])
                future = self.engine.submit([f.path for f in chunk], self.spec)
                inflight[future] = chunk
                future.add_done_callback(finished.put)
            try:
                future = finished.get(timeout=1.0)
            except queue.Empty:
                self.progress.tick()
                continue
            inflight.pop(future)
            try:
                outcomes = future.result()
            except Exception as exc:  # the engine lost the task (a worker crashed, the cluster went away)
                log.error("a task of %s failed: %s: %s", self.engine.name, type(exc).__name__, exc)
                self.stop_reason = self.stop_reason or f"the {self.engine.name} engine failed ({type(exc).__name__}: {exc})"
                continue
            self.record(outcomes)

    def finish(self, wall_s):
        """Write the tables of nights changed and not yet written (or left stale by a run that
        stopped); log the summary; return the exit status."""
        try:
            for night, outcomes in season.nights_of(self.ledger).items():
                if (night in self.touched and night not in self.written) or \
                        season.frames_in_table(self.outdir, night) != len(outcomes):
                    self.write_tables(night, outcomes)
        except OSError as exc:
            self.stop_reason = self.stop_reason or f"the season tables could not be written ({exc})"
        self.progress.close()
        counts = self.progress.counts
        n = sum(counts.values())
        log.info("pc-archive: %d frame(s) in %.1f s (%.2f frames/s): %d done, %d skipped, %d failed; "
                 "%d finished by earlier runs", n, wall_s, n / max(wall_s, 1e-9), counts["done"],
                 counts["skipped"], counts["failed"], len(self.frames) - self.progress.total)
        for (event, reason), k in sorted(self.reasons.items()):
            log.info("  %s x%d: %s", event, k, reason or "-")
        failed = [f.name for f in self.frames if (self.ledger.outcome(f.name) or {}).get("event") == "failed"]
        unfinished = [f.name for f in self.frames if self.ledger.outcome(f.name) is None]
        if self.stop_reason is not None:
            log.error("pc-archive stopped: %s. %d frame(s) not reduced; fix the cause (e.g. free disk "
                      "space) and run the same command again to finish them", self.stop_reason, len(unfinished))
            return EXIT_INPUT
        if failed or unfinished:
            log.warning("%d frame(s) failed (reasons in %s)%s", len(failed), self.ledger.path,
                        f"; {len(unfinished)} not reduced" if unfinished else "")
            return EXIT_FAILED
        return EXIT_OK


def run_archive(frames, spec, make_engine, *, chunk_size=8, retry_failed=False, progress_bar=None):
    """Reduce `frames` (from `discover.discover`) with `engine` into ``spec.options.outdir``.

    Parameters
    ----------
    frames : list of discover.Frame
    spec : task.TaskSpec
    make_engine : callable
        Returns the engine (LocalEngine, GpuEngine or DaskEngine); called once OUT is locked,
        and closed at the end.
    chunk_size : int
        Frames per task.
    retry_failed : bool
        Reduce again frames whose recorded outcome is 'failed'.
    progress_bar : bool, optional
        tqdm bar (default: when stderr is a terminal); else log lines every ~10 s.

    Returns
    -------
    int
        0 every frame done or skipped; 4 some failed or were not reduced; 1 the run stopped
        (outputs could not be written, or the engine failed).
    """
    lock, ledger = open_outdir(spec.options.outdir)
    started = time.perf_counter()
    engine = None
    try:
        engine = make_engine()
        run = _Run(frames, spec, engine, ledger, chunk_size=chunk_size, retry_failed=retry_failed,
                   progress_bar=progress_bar)
        try:
            run.dispatch()
        except OSError as exc:  # the ledger itself could not be written (e.g. disk full)
            run.stop_reason = f"the ledger could not be written ({exc})"
        return run.finish(time.perf_counter() - started)
    finally:
        if engine is not None:
            engine.close()
        with contextlib.suppress(OSError):  # a full disk: what could not be flushed is dropped
            ledger.close()
        lock.close()
