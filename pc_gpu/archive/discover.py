"""Finding an archive's raw frames: directories, globs and file lists, in night/time order."""

import datetime as dt
import glob
import logging
import os
import re
from dataclasses import dataclass

from ..errors import InputError
from ..obstime import local_datetime, observing_night
from ..outputs import SUFFIXES
from ..rawio import CALIB_FILES, wcs_path_for

__all__ = ["Frame", "discover", "parse_nights", "read_file_list", "is_raw_name"]

log = logging.getLogger(__name__)

NO_WCS = "no .wcs"
# names in an archive tree that are never raw frames: our outputs, calibrations, Gaia chunk
# files and the simulator's truth tables
_NOT_RAW = re.compile(r"(%s|-truth\.fits|^night_truth\.fits|^chunk-\d{5}\.fits)$" % "|".join(
    re.escape(s) for s in SUFFIXES.values() if s.endswith(".fits")))


@dataclass(frozen=True)
class Frame:
    """A raw frame of the archive.

    path : absolute path; name : file name (the ledger's key); night : observing night
    'YYYYMMDD' (None when the header cannot be read); local_time : local start time, ISO
    (None likewise); problem : why it will not be reduced (None, or 'no .wcs').
    """

    path: str
    name: str
    night: str | None
    local_time: str | None
    problem: str | None = None


def is_raw_name(name):
    """True for a ``*.fits`` name that is not one of our outputs, calibrations, chunk files or
    truth tables (and not hidden, as our temporary files are)."""
    return (name.endswith(".fits") and not name.startswith(".") and not _NOT_RAW.search(name)
            and name not in CALIB_FILES.values())


def read_file_list(path):
    """Paths listed one per line in `path` (blank lines and '#' comments ignored); a ``.wcs``
    path stands for its ``.fits`` frame. Relative paths are taken from the current directory."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the file list ({exc})") from None
    return [_fits_for(line) for line in lines if line and not line.startswith("#")]


def _fits_for(path):
    return path[: -len(".wcs")] + ".fits" if path.endswith(".wcs") else path


def parse_nights(text):
    """('YYYYMMDD', 'YYYYMMDD') from 'A:B' or 'A' (inclusive); InputError when malformed."""
    first, _, last = text.partition(":")
    last = last or first
    for value in (first, last):
        try:
            dt.datetime.strptime(value, "%Y%m%d")
        except ValueError:
            raise InputError(None, f"--nights {text!r}: expected YYYYMMDD or YYYYMMDD:YYYYMMDD") from None
    if last < first:
        raise InputError(None, f"--nights {text!r}: the last night is before the first")
    return first, last


def _candidates(inputs):
    """Paths of candidate raw frames from directories (recursive), files and globs."""
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                yield from (os.path.join(root, f) for f in sorted(files) if is_raw_name(f))
        elif os.path.lexists(item) or item.endswith((".fits", ".wcs")) and not glob.has_magic(item):
            yield _fits_for(item)  # a missing listed file is recorded as failed, not dropped
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputError(item, "no such file or directory, and no file matches it as a glob")
            for m in matches:
                if os.path.isdir(m):
                    yield from _candidates([m])
                elif is_raw_name(os.path.basename(_fits_for(m))):
                    yield _fits_for(m)


def _frame(path):
    """A `Frame` for `path`, its night and time from the header when it can be read."""
    import fitsio

    night = local = None
    try:
        local_dt = local_datetime(fitsio.read_header(path, ext=0), path)
        night, local = observing_night(local_dt), local_dt.isoformat()
    except (OSError, InputError, ValueError) as exc:
        log.debug("%s: night unknown (%s)", path, exc)
    # a path that is not a regular file fails when read, with the reader's reason
    problem = NO_WCS if os.path.isfile(path) and not os.path.exists(wcs_path_for(path)) else None
    return Frame(path, os.path.basename(path), night, local, problem)


def discover(inputs=(), *, file_list=None, nights=None, limit=None):
    """The archive's frames in night/time order.

    Parameters
    ----------
    inputs : sequence of str
        Directories (searched recursively), files, or globs.
    file_list : str, optional
        A file naming frames one per line (see `read_file_list`).
    nights : (str, str), optional
        First and last observing night to keep, inclusive ('YYYYMMDD').
    limit : int, optional
        Keep only the first `limit` frames (after ordering).

    Returns
    -------
    list of Frame
        Frames whose header cannot be read come last (they fail when reduced, with the reason);
        with `nights` they are left out, and their number is logged.
    """
    paths = list(_candidates(inputs))
    if file_list is not None:
        paths += read_file_list(file_list)
    seen, frames = {}, []
    for path in paths:
        path = os.path.abspath(path)
        name = os.path.basename(path)
        if name in seen:
            if seen[name] != path:
                log.warning("%s has the same name as %s; only the first is reduced (outputs and "
                            "the ledger are keyed by file name)", path, seen[name])
            continue
        seen[name] = path
        frames.append(_frame(path))
    if nights is not None:
        unknown = sum(f.night is None for f in frames)
        if unknown:
            log.warning("%d frame(s) left out: their observing night cannot be read from the header", unknown)
        frames = [f for f in frames if f.night is not None and nights[0] <= f.night <= nights[1]]
    frames.sort(key=lambda f: (f.night is None, f.night or "", f.local_time or "", f.name))
    if limit is not None:
        frames = frames[:limit]
    return frames
