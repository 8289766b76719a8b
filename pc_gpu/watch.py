"""Watching a directory for new raw frames, and deciding when a frame is ready to reduce.

A frame is ready when its FITS file is complete (a header that parses, the camera's image
size, and all the data bytes there) and its ``.wcs`` file is present. Filesystem events
(inotify through `watchdog`) wake the watcher at once; a periodic scan is the fallback when
events are unavailable or missed (network filesystems).
"""

import fnmatch
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass

from .outputs import SUFFIXES
from .rawio import wcs_path_for

__all__ = ["READY", "WAIT", "BAD", "inspect_frame", "DirectoryWatcher", "Candidate"]

log = logging.getLogger(__name__)

READY, WAIT, BAD = "ready", "wait", "bad"
_BLOCK = 2880
_MAX_HEADER_BLOCKS = 200
_PRINTABLE = bytes(range(0x20, 0x7F))
_OUTPUT_SUFFIXES = tuple(SUFFIXES.values())   # our own products, should OUTDIR be WATCHDIR
_WAKE_EVENTS = ("created", "modified", "moved", "closed")


def inspect_frame(path, camera):
    """Is the raw frame at `path` ready to reduce?

    Parameters
    ----------
    path : str
        Raw FITS file.
    camera : pc_gpu.camera.Camera
        Gives the expected image size.

    Returns
    -------
    (state, reason) : (str, str)
        `READY`; `WAIT` (still being written, or no .wcs yet); or `BAD` (can never be
        reduced: not FITS, wrong size or type).
    """
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as fh:
            head = fh.read(_BLOCK * 8)
            header_bytes = _read_header(fh, head)
    except FileNotFoundError:
        return WAIT, "file vanished"
    except OSError as exc:
        return WAIT, f"cannot read yet ({exc.strerror})"
    if not head.startswith(b"SIMPLE  =") and not (len(head) < 9 and b"SIMPLE  =".startswith(head)):
        return BAD, "not a FITS file (no SIMPLE card at the start)"
    text = head if header_bytes is None else header_bytes
    if text.translate(None, _PRINTABLE):
        return BAD, "corrupt header (bytes that are not ASCII text)"
    if header_bytes is None:
        if size >= _BLOCK * _MAX_HEADER_BLOCKS:
            return BAD, f"no END card in the first {_MAX_HEADER_BLOCKS} header blocks"
        return WAIT, "header incomplete"
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.Header.fromstring(header_bytes.decode("ascii", "replace"))
            naxis, bitpix = int(header.get("NAXIS", 0)), int(header.get("BITPIX", 0))
            shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
    except Exception as exc:  # astropy raises many kinds for a bad header
        return BAD, f"header does not parse ({type(exc).__name__}: {exc})"
    if naxis != 2 or bitpix != 16:
        return BAD, f"NAXIS = {naxis}, BITPIX = {bitpix}: expected a 16-bit 2-d image"
    if shape != camera.shape:
        return BAD, (f"image is {shape[1]} x {shape[0]} pixels, expected {camera.nx} x {camera.ny} "
                     f"for camera {camera.name}")
    data = shape[0] * shape[1] * 2
    expected = len(header_bytes) + -(-data // _BLOCK) * _BLOCK
    if size < expected:
        return WAIT, f"incomplete: {size} of {expected} bytes"
    if not os.path.exists(wcs_path_for(path)):
        return WAIT, "no .wcs file yet"
    return READY, "complete"


def _read_header(fh, head):
    """The header bytes (whole blocks up to and including END), or None if not all there."""
    data = head
    for block in range(_MAX_HEADER_BLOCKS):
        start = block * _BLOCK
        if len(data) < start + _BLOCK:
            more = fh.read(_BLOCK * 8)
            if not more:
                return None
            data += more
            if len(data) < start + _BLOCK:
                return None
        chunk = data[start:start + _BLOCK]
        for card in range(0, _BLOCK, 80):
            if chunk[card:card + 8] == b"END     ":
                return data[:start + _BLOCK]
    return None


@dataclass
class Candidate:
    """A raw file seen in the watched directory and not finished yet."""

    name: str
    path: str
    arrival: int
    first_seen: float
    signature: tuple = None
    last_change: float = 0.0
    state: str = WAIT
    reason: str = ""


class DirectoryWatcher:
    """Keep the list of raw files in `directory` in arrival order; wake on new events.

    Parameters
    ----------
    directory : str
        The flat directory where raw frames and their .wcs files land.
    pattern : str
        Raw file names to consider (hidden names are always ignored).
    use_events : bool
        Use inotify (watchdog) when available; otherwise (or if it fails) poll.
    """

    def __init__(self, directory, *, pattern="*.fits", use_events=True):
        self.directory = os.fspath(directory)
        self.pattern = pattern
        self.wake = threading.Event()
        self._arrivals = 0
        self._seen = {}
        self._finished = set()
        self._observer = None
        if use_events:
            self._start_events()

    @property
    def uses_events(self):
        """True when filesystem events are delivered (else the caller's polling is all)."""
        return self._observer is not None

    def _start_events(self):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            log.info("watchdog is not installed: polling %s", self.directory)
            return
        wake = self.wake

        class _Handler(FileSystemEventHandler):
            # a file appearing, growing, finished or renamed in; not opens and reads (ours too)
            def on_any_event(self, event):
                if event.event_type in _WAKE_EVENTS:
                    wake.set()

        try:
            observer = Observer()
            observer.schedule(_Handler(), self.directory, recursive=False)
            observer.daemon = True
            observer.start()
        except Exception as exc:  # inotify limits, unsupported filesystem, ...
            log.warning("filesystem events unavailable for %s (%s): polling", self.directory, exc)
            return
        self._observer = observer
        log.info("watching %s with %s", self.directory, type(observer).__name__)

    def scan(self):
        """Register files that appeared since the last scan; return the names seen now."""
        try:
            entries = [(e.name, e.path, e.stat().st_mtime_ns) for e in os.scandir(self.directory)
                       if not e.name.startswith(".") and fnmatch.fnmatch(e.name, self.pattern)
                       and not e.name.endswith(_OUTPUT_SUFFIXES) and e.is_file()]
        except FileNotFoundError:
            entries = []
        now = time.monotonic()
        new = (e for e in entries if e[0] not in self._seen and e[0] not in self._finished)
        for name, path, mtime in sorted(new,
                                        key=lambda e: (e[2], e[0])):
            self._arrivals += 1
            self._seen[name] = Candidate(name=name, path=path, arrival=self._arrivals, first_seen=now,
                                         last_change=now)
        return {e[0] for e in entries}

    def candidates(self):
        """Known candidates in arrival order."""
        return sorted(self._seen.values(), key=lambda c: c.arrival)

    def forget(self, name):
        """Stop tracking a file for good (it is finished)."""
        self._seen.pop(name, None)
        self._finished.add(name)

    def touch(self, cand):
        """Update a candidate's (size, mtime) signature; True if it changed since last time."""
        try:
            st = os.stat(cand.path)
            sig = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            sig = None
        changed = sig != cand.signature
        if changed:
            cand.signature = sig
            cand.last_change = time.monotonic()
        return changed

    def stop(self):
        """Stop the event observer, if any."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
