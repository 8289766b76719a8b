"""Atomic output files: every file is written to a temporary name beside its final name and
renamed into place, so a reader never sees half a file and a crash leaves no partial output."""

import contextlib
import glob
import logging
import os
import tempfile

from .errors import OutputExistsError, InputError

__all__ = ["atomic_output", "check_outputs_free", "output_paths", "publish", "remove_outputs",
           "temporary_path"]

log = logging.getLogger(__name__)

SUFFIXES = {
    "detrended": "-detrended.fits",
    "summary": "-summary.fits",
    "zp_plot": "-zp.png",
    "detrended_plot": "-detrended.png",
    "quiver_plot": "-quiver.png",
    "thumbnail": "-thumb.jpg",
}


def output_paths(raw_path, outdir):
    """Final output file names for a raw frame, keyed as in `SUFFIXES`."""
    base = os.path.basename(os.fspath(raw_path))
    if base.endswith(".fz"):
        base = base[:-3]
    if base.endswith(".fits"):
        base = base[:-5]
    return {key: os.path.join(outdir, base + suffix) for key, suffix in SUFFIXES.items()}


def remove_outputs(raw_name, outdir, *, temporaries_only=False):
    """Delete the final and temporary output files of one raw frame in `outdir` (what a run
    stopped mid-frame may have left), or only the temporaries; return the paths removed."""
    final = output_paths(raw_name, outdir)
    base = os.path.basename(final["summary"])[: -len(SUFFIXES["summary"])]
    paths = [] if temporaries_only else list(final.values())
    paths += glob.glob(os.path.join(glob.escape(outdir), "." + glob.escape(base) + "-*.tmp*"))
    removed = []
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
            removed.append(p)
            log.info("removed %s", p)
    return removed


def check_outputs_free(paths, *, overwrite=False):
    """Raise `OutputExistsError` if any of `paths` exists and `overwrite` is false."""
    if overwrite:
        return
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        raise OutputExistsError(
            f"output already exists: {', '.join(existing)} (use --overwrite to replace)")


def temporary_path(final_path):
    """A free temporary name beside `final_path`, keeping its extension (writers look at it)."""
    final_path = os.fspath(final_path)
    directory = os.path.dirname(final_path) or "."
    base = os.path.basename(final_path)
    stem, ext = base, ""
    for known in (".fits.gz", ".fits", ".png", ".jpg", ".json"):
        if base.endswith(known):
            stem, ext = base[: -len(known)], known
            break
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp" + ext, dir=directory)
    os.close(fd)
    os.unlink(tmp)  # writers such as fitsio refuse to write over an existing file
    return tmp


@contextlib.contextmanager
def atomic_output(final_path):
    """Yield a temporary path beside `final_path`; on success rename it into place.

    On an exception the temporary file is removed and nothing appears under the final name.
    """
    tmp = temporary_path(final_path)
    try:
        yield tmp
        os.replace(tmp, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _ensure_writable_dir(directory):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise InputError(directory, f"cannot create output directory ({exc.strerror})") from None
    if not os.access(directory, os.W_OK):
        raise InputError(directory, "output directory is not writable")


def publish(writers, *, overwrite=False, settle=None):
    """Write several outputs so that either all appear or none do.

    Every file is written to a temporary name first; then they are renamed into place. If a
    writer or a rename fails, the renames already made are undone (an output that existed
    before, with `overwrite`, is put back) and the temporaries are removed.

    Parameters
    ----------
    writers : dict
        final path -> callable(tmp_path) that writes the file.
    overwrite : bool
        Replace existing outputs instead of refusing.
    settle : callable, optional
        Called after every writer ran and before anything is renamed, and again on failure
        before the temporaries are removed: a writer that hands its file to another process
        returns at once and `settle` waits for that process (it must be safe to call twice).
    """
    check_outputs_free(writers, overwrite=overwrite)
    staged = []
    try:
        for final, write in writers.items():
            _ensure_writable_dir(os.path.dirname(final) or ".")
            tmp = temporary_path(final)
            staged.append((tmp, final))
            write(tmp)
        if settle is not None:
            settle()
    except BaseException:
        if settle is not None:
            with contextlib.suppress(Exception):
                settle()
        _remove(tmp for tmp, _ in staged)
        raise
    _rename_all(staged, keep_old=overwrite)


def _rename_all(staged, *, keep_old):
    """Rename each (tmp, final) into place; on a failure undo the renames made and re-raise.

    With `keep_old`, a file being replaced is kept under a second name (a hard link) until
    every rename succeeded, and put back if one fails."""
    placed = []     # (final, backup of the file it replaced or None), in order
    backup = None
    try:
        for tmp, final in staged:
            backup = None
            if keep_old and os.path.lexists(final):
                backup = temporary_path(final)
                os.link(final, backup)
            os.replace(tmp, final)
            placed.append((final, backup))
            log.debug("wrote %s", final)
    except BaseException:
        for final, old in reversed(placed):
            try:
                if old is None:
                    os.unlink(final)
                else:
                    os.replace(old, final)
            except OSError as exc:
                log.error("could not undo %s after a failed rename (%s)", final, exc)
        _remove([tmp for tmp, _ in staged] + [backup])
        raise
    _remove(old for _, old in placed)


def _remove(paths):
    for path in paths:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
