"""Engines: where `task.reduce_chunk` runs. Each has ``submit(paths, spec) -> future`` (a
future with ``add_done_callback`` and ``result``), ``max_inflight`` and ``close()``.

- `LocalEngine`: a pool of worker processes on this machine (one warm Reducer each).
- `GpuEngine`: this process, one Reducer on the GPU backend, reading ahead and writing behind
  on host threads.
- `DaskEngine`: a `dask.distributed` cluster (an existing scheduler, or a LocalCluster); each
  worker process keeps its warm Reducer, a task lost with its worker is run again elsewhere.
"""

import concurrent.futures
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys

from ..errors import InputError
from .task import reduce_chunk

__all__ = ["LocalEngine", "GpuEngine", "DaskEngine"]

log = logging.getLogger(__name__)


def _worker_init(level):
    """In each pool worker: die with the driver (Linux), log at the driver's level."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    for noisy in ("numba", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LocalEngine:
    """A pool of `workers` processes (spawned: nothing of the driver's state is inherited)."""

    name = "local"

    def __init__(self, workers):
        self.workers = workers
        self.max_inflight = 2 * workers
        level = max(logging.WARNING, logging.getLogger().getEffectiveLevel())
        self.pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
            initargs=(level,))

    def submit(self, paths, spec):
        return self.pool.submit(reduce_chunk, paths, spec)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class GpuEngine:
    """This process reduces on the GPU; `io_threads` host threads read ahead and write behind;
    `batch` frames are reduced together (their stars in one kernel launch)."""

    name = "gpu"

    def __init__(self, io_threads=4, batch=8):
        self.io_threads = io_threads
        self.batch = batch
        self.max_inflight = 2
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pc-gpu")

    def submit(self, paths, spec):
        return self.pool.submit(reduce_chunk, paths, dataclasses.replace(spec, io_threads=self.io_threads,
                                                                         batch=self.batch))

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


_LOCAL_CLUSTER_CONFIG = {
    # the nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap
    # threshold: every array over 128 KiB is then mapped and faulted in afresh for each frame
    # (detrend and sky ~30% slower); without it, freed frames' memory is reused
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # no dashboard, so no use for the workers' stack sampling (every 10 ms) either
    "distributed.worker.profile.enabled": False,
}


class DaskEngine:
    """Tasks on a dask.distributed cluster.

    Parameters
    ----------
    scheduler : str
        'tcp://HOST:PORT' of a running scheduler, or 'local' for a LocalCluster of `workers`
        single-threaded worker processes on this machine.
    workers : int
        Worker processes of the LocalCluster.
    """

    name = "dask"

    def __init__(self, scheduler, workers):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError(None, "--scheduler needs dask.distributed: pip install 'pc_gpu[distributed]'") from None
        quiet = logging.getLogger("pc_gpu").getEffectiveLevel() > logging.DEBUG
        for name in list(logging.root.manager.loggerDict):
            if quiet and name.startswith("distributed"):
                logging.getLogger(name).setLevel(logging.WARNING)  # dask logs every connection at INFO
        self.cluster = None
        if scheduler == "local":
            import dask

            with dask.config.set(_LOCAL_CLUSTER_CONFIG):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(scheduler, timeout=30)
            except OSError as exc:
                raise InputError(None, f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
        threads = sum(self.client.nthreads().values())
        self.max_inflight = max(2, 2 * threads)
        log.info("Dask: %s, %d worker thread(s)", self.client.scheduler.address, threads)

    def submit(self, paths, spec):
        return self.client.submit(reduce_chunk, paths, spec, pure=False)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def default_workers():
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
