"""Live report for `pc-realtime --report`: a helper process rebuilds the pages off the latency path.

The service writes one line (the night of the frame just recorded) to the helper's standard
input per frame, without ever blocking; the helper, at idle priority, coalesces the lines and
rebuilds at most once every `interval_s` seconds (only the nights whose outputs changed), with
the current night's page reloading itself. When the service closes the pipe the helper builds
once more without the reload and exits.
"""

import argparse
import logging
import os
import select
import subprocess
import sys
import time

__all__ = ["LiveReport", "serve", "main"]

log = logging.getLogger(__name__)


class LiveReport:
    """Start the helper for output tree `outdir`.

    Parameters
    ----------
    outdir : str
    interval_s : float
        Least time between two rebuilds, s.
    refresh_s : int
        The live night page reloads itself this often, s.
    """

    def __init__(self, outdir, *, interval_s=5.0, refresh_s=10):
        self.outdir = os.path.abspath(os.fspath(outdir))
        cmd = [sys.executable, "-m", "pc_gpu.report.live", self.outdir, "--interval", str(float(interval_s)),
               "--refresh", str(int(refresh_s))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        os.set_blocking(self.proc.stdin.fileno(), False)
        self._broken = False
        log.info("live report of %s: helper pid %d, at most one rebuild every %.0f s", self.outdir,
                 self.proc.pid, interval_s)

    def notify(self, night=None):
        """A frame was recorded (its observing night, if known): schedule a rebuild. Never
        blocks; a full pipe only means the helper already has a rebuild to do."""
        if self._broken:
            return
        try:
            os.write(self.proc.stdin.fileno(), f"{night or ''}\n".encode())
        except BlockingIOError:
            pass
        except OSError as exc:  # the helper died: the service goes on without the live report
            self._broken = True
            log.warning("live report helper is gone (%s); pages are no longer updated", exc)

    def close(self, timeout_s=120.0):
        """Ask for the final build (no reload) and wait for the helper to finish it."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("live report helper still busy after %.0f s; stopping it", timeout_s)
            self.proc.terminate()
            self.proc.wait()


def _read_lines(fd, timeout_s):
    """(lines, eof): the lines `fd` has within `timeout_s` seconds (None: wait), stripped."""
    lines, eof = [], False
    ready, _, _ = select.select([fd], [], [], timeout_s)
    while ready:
        data = os.read(fd, 65536)
        if not data:
            eof = True
            break
        lines += [line.strip() for line in data.decode(errors="replace").splitlines()]
        ready, _, _ = select.select([fd], [], [], 0)
    return lines, eof


def serve(outdir, *, interval_s=5.0, refresh_s=10, fd=0):
    """The helper's loop: rebuild when told, at most every `interval_s` s, until end of input."""
    live_night, pending, eof, last = None, False, False, 0.0
    while not eof:
        wait = None if not pending else max(0.0, last + interval_s - time.monotonic())
        lines, eof = _read_lines(fd, wait)
        if lines:  # one line per frame recorded: its night, or empty when it has none
            live_night, pending = next((n for n in reversed(lines) if n), live_night), True
        if pending and time.monotonic() >= last + interval_s and not eof:
            last = time.monotonic()
            pending = False
            _build(outdir, live_night=live_night, refresh_s=refresh_s)
    _build(outdir)  # the night is over (or the service stopped): no more reloading


def _build(outdir, **kwargs):
    from .build import build_report

    try:
        build_report(outdir, **kwargs)
    except Exception:  # noqa: BLE001 - the report must never stop the service
        log.exception("live report of %s failed; trying again at the next frame", outdir)


def main(argv=None):
    """Entry point of the helper (``python -m pc_gpu.report.live OUT``)."""
    from ..cli import configure_logging

    p = argparse.ArgumentParser(prog="python -m pc_gpu.report.live",
                                description="pc-realtime's live report helper (reads nights on stdin)")
    p.add_argument("outdir")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--refresh", type=int, default=10)
    args = p.parse_args(argv)
    configure_logging(quiet=True)
    try:  # run only when the reduction leaves a CPU idle (else as low a priority as nice allows)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass
    serve(args.outdir, interval_s=args.interval, refresh_s=args.refresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
