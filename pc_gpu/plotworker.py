"""The zeropoint checkplot drawn by a forked helper process.

`pc-proc` forks the helper before its own heavy imports, so that importing matplotlib (about
0.45 s here) and drawing run on the second core while the frame is reduced, instead of after it.
Requests and replies are JSON lines over two pipes (numbers and strings only; nothing is
unpickled). Where forking is not safe the plot is drawn in-process.
"""

import json
import logging
import os

from .errors import PCError

__all__ = ["PlotWorker"]

log = logging.getLogger(__name__)


class PlotWorker:
    """A child process that draws zeropoint checkplots on request."""

    def __init__(self):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # child
            os.close(req_w)
            os.close(rep_r)
            _serve(req_r, rep_w)
        os.close(req_r)
        os.close(rep_w)
        self._requests = os.fdopen(req_w, "w")
        self._replies = os.fdopen(rep_r, "r")
        self._outstanding = 0
        log.debug("checkplots drawn by forked process %d", self.pid)

    @classmethod
    def start(cls):
        """A running worker, or None where forking is not safe: no `os.fork`, or threads already
        running (a lock held by another thread would stay held in the child)."""
        try:
            single_threaded = len(os.listdir("/proc/self/task")) == 1
        except OSError:
            single_threaded = False
        return cls() if hasattr(os, "fork") and single_threaded else None

    def zeropoint_plot(self, path, g_prime, m_inst, zp, *, title, n_used, aperture_radius_pix):
        """Ask for `plots.zeropoint_plot` into `path` and return at once; `wait` collects it."""
        request = dict(path=os.fspath(path), g_prime=[float(v) for v in g_prime],
                       m_inst=[float(v) for v in m_inst], zp=float(zp), title=str(title),
                       n_used=int(n_used), aperture_radius_pix=float(aperture_radius_pix))
        try:
            self._requests.write(json.dumps(request) + "\n")
            self._requests.flush()
        except OSError as exc:
            raise PCError(f"the checkplot process is gone ({exc})") from None
        self._outstanding += 1

    def wait(self):
        """Block until every plot asked for is written; raise PCError for one that failed."""
        errors = []
        while self._outstanding:
            line = self._replies.readline()
            if not line:
                self._outstanding = 0
                raise PCError("the checkplot process ended unexpectedly")
            self._outstanding -= 1
            reply = json.loads(line)
            if not reply["ok"]:
                errors.append(reply["error"])
        if errors:
            raise PCError(f"checkplot failed: {'; '.join(errors)}")

    def close(self):
        """Let the child finish and reap it."""
        self._requests.close()
        self._replies.close()
        os.waitpid(self.pid, 0)


def _serve(req_fd, rep_fd):
    """Child side: draw each request, reply {"ok": bool, "error": str}; never returns."""
    status = 0
    try:
        import io

        import numpy as np

        from . import plots

        # matplotlib is imported on first use, and fonts are loaded on first draw: do both now,
        # while the parent is still busy
        plots.zeropoint_plot(io.BytesIO(), np.array([10.0, 11.0]), np.array([-7.5, -6.5]), 17.5,
                             title="warm-up", n_used=2, aperture_radius_pix=2.5)
        with os.fdopen(req_fd, "r") as requests, os.fdopen(rep_fd, "w") as replies:
            for line in requests:
                try:
                    r = json.loads(line)
                    plots.zeropoint_plot(r["path"], np.array(r["g_prime"]), np.array(r["m_inst"]), r["zp"],
                                         title=r["title"], n_used=r["n_used"],
                                         aperture_radius_pix=r["aperture_radius_pix"])
                    reply = {"ok": True}
                except Exception as exc:  # reported to the parent, which decides
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                replies.write(json.dumps(reply) + "\n")
                replies.flush()
    except BaseException:
        status = 1
    finally:
        os._exit(status)
