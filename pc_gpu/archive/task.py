"""The one task every engine runs: reduce a chunk of frames with warm caches, return outcomes.

`reduce_chunk(paths, spec)` is called in pool worker processes, in Dask workers and in the
GPU engine's process alike. Each process keeps one warm `Reducer` per `TaskSpec`. With
``spec.io_threads > 0`` host threads read and decode the next frames while the current one is
reduced, and write finished frames while the next ones compute (the GPU engine's pipeline);
``spec.batch`` frames are reduced together, their stars in one kernel launch (`reduce_loaded`).
"""

import collections
import concurrent.futures
import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from ..camera import EL_NINO, Camera
from ..errors import PCError, TelescopeMotion
from ..outputs import remove_outputs
from ..frameout import finish_frame
from ..pipeline import Reducer, RunOptions
from .season import rows_from_tables

__all__ = ["TaskSpec", "reduce_chunk", "reducer_for", "reduce_loaded", "STOPPED"]

log = logging.getLogger(__name__)

STOPPED = "stopped"   # not a ledger event: the outputs could not be written, the run must stop
_REDUCERS = {}


@dataclass(frozen=True)
class TaskSpec:
    """What a task needs besides its frames.

    options : RunOptions (the task's reducer replaces outputs: the driver has already refused
    frames whose outputs exist, so any it finds were left by an earlier attempt of this task);
    camera : Camera; meta_dir, gaia_dir : calibration and Gaia chunk directories;
    io_threads : host threads reading ahead and writing behind (0: one frame at a time);
    batch : with io_threads, frames reduced together (`Reducer.reduce_frames`).
    """

    options: RunOptions
    camera: Camera = EL_NINO
    meta_dir: str | None = None
    gaia_dir: str | None = None
    io_threads: int = 0
    batch: int = 1


def reducer_for(spec):
    """This process's warm `Reducer` for `spec` (made on first use)."""
    reducer = _REDUCERS.get(spec)
    if reducer is None:
        options = dataclasses.replace(spec.options, overwrite=True)
        reducer = Reducer(options, camera=spec.camera, meta_dir=spec.meta_dir, gaia_dir=spec.gaia_dir)
        _REDUCERS[spec] = reducer
    return reducer


def reduce_loaded(reducer, loaded):
    """Reduce frames already read (`Reducer.load`'s (frame, wcs) each) together, their stars in
    one kernel launch (`Reducer.reduce_frames`); if that fails, each frame alone, so that a bad
    frame fails only itself. Returns, per frame, its FrameResult or the exception it raised."""
    try:
        return reducer.reduce_frames(*zip(*loaded))
    except Exception as exc:
        if len(loaded) == 1:
            return [exc]
    results = []
    for frame, wcs in loaded:
        try:
            results.append(reducer.reduce_frame(frame, wcs))
        except Exception as exc:  # recorded with its reason by the caller
            results.append(exc)
    return results


def _outcome(path, event, reason="", **fields):
    return {"frame": os.path.basename(path), "path": path, "event": event, "reason": reason, **fields}


def _failure(path, exc):
    if isinstance(exc, TelescopeMotion):
        return _outcome(path, "skipped", "telescope moved during the exposure (ZPFLAG set)")
    if isinstance(exc, PCError):
        return _outcome(path, "failed", str(exc))
    log.error("%s: reduction failed", path, exc_info=exc)
    return _outcome(path, "failed", f"{type(exc).__name__}: {exc}")


def _finish(path, result, reducer, redis_settings, started, load_s):
    """Write a reduced frame (and send its telemetry); its outcome."""
    t_write = time.perf_counter()
    try:
        paths, telemetry_ok = finish_frame(result, reducer, redis_settings=redis_settings)
    except PCError as exc:
        return _outcome(path, "failed", f"outputs not written: {exc}")
    except OSError as exc:
        return _outcome(path, STOPPED, _write_failure(exc, reducer.output_dir(result.obs_night)))
    except Exception as exc:  # a bug or an unforeseen value: recorded, the chunk goes on
        log.error("%s: writing outputs failed", path, exc_info=exc)
        return _outcome(path, "failed", f"outputs not written: {type(exc).__name__}: {exc}")
    if paths:  # an earlier attempt of this task, lost with its worker, may have left temporaries
        remove_outputs(path, os.path.dirname(paths["summary"]), temporaries_only=True)
    return _outcome(path, "done", "" if telemetry_ok else "telemetry not delivered",
                    night=result.obs_night, outputs=sorted(paths.values()),
                    seconds=round(time.perf_counter() - started, 4), load_s=round(load_s, 4),
                    stages_ms=result.timings, write_s=round(time.perf_counter() - t_write, 4),
                    rows=rows_from_tables(os.path.basename(path), result.header, result.zeropoints, result.sky))


def _write_failure(exc, directory):
    """Why outputs could not be written in `directory`, saying so plainly when the disk is full
    (cfitsio reports a full disk only as a write error: a 1 MiB probe file tells)."""
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    if not full:
        try:
            with tempfile.TemporaryFile(dir=directory) as probe:
                probe.write(bytes(1 << 20))
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as probe_exc:
            full = probe_exc.errno in (errno.ENOSPC, errno.EDQUOT)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.debug("writing outputs in %s failed: %s", directory, exc)
    if full:
        return (f"the output disk is full ({os.strerror(errno.ENOSPC)}; "
                f"{shutil.disk_usage(directory).free // 1024} KiB free in {directory})")
    return f"outputs could not be written in {directory}: {first_line}"


def reduce_chunk(paths, spec):
    """Reduce `paths` in order; return one outcome dict per frame attempted.

    Each outcome has frame, path, event ('done', 'skipped', 'failed', or `STOPPED` when the
    outputs could not be written: the chunk ends there) and reason; a done frame also has
    night, outputs, seconds (from the start of its read to the end of its writes), load_s
    (reading and decoding), stages_ms (`Reducer` stage timings), write_s, and rows
    (`season.rows_from_tables`); with io_threads, batch (how many frames were reduced together).
    Frames after a `STOPPED` one are not attempted (with read-ahead, those already in flight
    are finished).
    """
    reducer = reducer_for(spec)
    redis_settings = None
    if spec.options.send_redis:
        from ..telemetry import redis_settings as settings_from_environment

        redis_settings = settings_from_environment()
    if spec.io_threads <= 0:
        outcomes = []
        for path in paths:
            started = time.perf_counter()
            try:
                result = reducer.reduce(path)
            except Exception as exc:  # recorded with its reason; the chunk goes on
                outcomes.append(_failure(path, exc))
                continue
            outcomes.append(_finish(path, result, reducer, redis_settings, started,
                                    result.timings.get("read", 0.0) / 1e3))
            if outcomes[-1]["event"] == STOPPED:
                break
        return outcomes
    return _pipelined(paths, reducer, redis_settings, spec.io_threads, max(1, spec.batch))


def _pipelined(paths, reducer, redis_settings, io_threads, batch):
    """`reduce_chunk` with reads ahead and writes behind on host threads, `batch` frames
    reduced together."""
    outcomes = [None] * len(paths)
    with concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix="pc-read") as readers, \
            concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix="pc-write") as writers:
        loads = collections.deque()
        ahead = iter(enumerate(paths))
        writes = []

        def timed_load(path):
            t0 = time.perf_counter()
            return reducer.load(path), time.perf_counter() - t0

        def read_next():
            for i, path in ahead:
                loads.append((i, path, time.perf_counter(), readers.submit(timed_load, path)))
                return

        for _ in range(max(2 * io_threads, 2 * batch)):
            read_next()
        while loads:
            group = []
            while loads and len(group) < batch:
                i, path, started, future = loads.popleft()
                read_next()
                try:
                    loaded, load_s = future.result()
                except Exception as exc:  # recorded with its reason; the chunk goes on
                    outcomes[i] = _failure(path, exc)
                    continue
                group.append((i, path, started, load_s, loaded))
            results = reduce_loaded(reducer, [g[4] for g in group]) if group else []
            for (i, path, started, load_s, _), result in zip(group, results):
                if isinstance(result, Exception):
                    outcomes[i] = _failure(path, result)
                    continue
                future = writers.submit(_finish, path, result, reducer, redis_settings, started, load_s)
                writes.append((i, future, len(group)))
            if any(f.done() and f.result()["event"] == STOPPED for _, f, _ in writes):
                break
        for _, _, _, future in loads:
            future.cancel()
        for i, future, together in writes:
            outcomes[i] = dict(future.result(), batch=together)
    return [o for o in outcomes if o is not None]
