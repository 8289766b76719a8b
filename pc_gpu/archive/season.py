"""Season tables: Parquet datasets under ``OUT/tables/``, partitioned by observing night.

``frames/night=YYYYMMDD/part-0.parquet`` has one row per frame (file, path, local time, MJD,
exposure, zeropoint and sky of the standard aperture, stars used, dome flag, outcome and
reason); ``zeropoints/`` and ``sky/`` hold every ZEROPOINTS and SKY row of the summaries. A
night's files are rewritten whole (atomically) from the ledger and the frames' rows, so
`rebuild` from the summaries on disk gives the same tables. Frames whose header could not be
read have no night and are only in the ledger.
"""

import logging
import os
import shutil

import numpy as np

from ..camera import EL_NINO
from ..obstime import local_datetime
from ..outputs import atomic_output

__all__ = ["TABLES", "rows_from_tables", "rows_from_summary", "write_night", "nights_of", "frames_in_table", "rebuild",
           "tables_dir"]

log = logging.getLogger(__name__)

TABLES = ("frames", "zeropoints", "sky")
PART = "part-0.parquet"


def tables_dir(outdir):
    """``OUT/tables``."""
    return os.path.join(outdir, "tables")


def _native(a):
    """A structured array with native byte order (pyarrow wants it) and text as str (a table in
    memory may hold bytes where the same table read from FITS holds str)."""
    dtype = [(n, f"U{a.dtype[n].itemsize}" if a.dtype[n].kind == "S" else a.dtype[n].newbyteorder("="))
             for n in a.dtype.names]
    return a.astype(dtype)


def rows_from_tables(name, header, zeropoints, sky):
    """One done frame's rows: {'frame': dict, 'zeropoints': array, 'sky': array}.

    Parameters
    ----------
    name : str
        The raw file name.
    header : mapping
        The raw header (DATE and TIME give the local time).
    zeropoints, sky : numpy structured arrays
        The frame's ZEROPOINTS and SKY tables (in memory or read from its summary).
    """
    zeropoints, sky = _native(np.asarray(zeropoints)), _native(np.asarray(sky))
    standard = EL_NINO.standard_aperture_index if zeropoints["aper_ind"].max() > 0 else 0
    row = zeropoints[(zeropoints["quadrant"] == 0) & (zeropoints["aper_ind"] == standard)
                     & (zeropoints["science_fov_only"] == 0)][0]
    frame = {"frame": name, "path": str(sky["fname_raw"][0]),
             "local_time": local_datetime(header).isoformat(), "mjd_obs": float(sky["mjd_obs"][0]),
             "exptime_s": float(sky["time_seconds"][0]), "zp_adu_per_s": float(row["zp_adu_per_s"]),
             "robust_sigma_mag": float(row["robust_sigma_mag"]), "n_sources_for_zp": int(row["n_sources_for_zp"]),
             "aper_ind": int(standard), "sky_median_adu_per_s": float(sky["median_adu_per_s"][0]),
             "has_dome": int(sky["has_dome"][0]), "outcome": "done", "reason": ""}
    return {"frame": frame, "zeropoints": zeropoints, "sky": sky}


def rows_from_summary(name, summary_path):
    """`rows_from_tables` for a frame from its ``-summary.fits`` on disk."""
    import fitsio

    with fitsio.FITS(summary_path) as fits:
        header = {k: fits[0].read_header()[k] for k in ("DATE", "TIME")}
        return rows_from_tables(name, header, fits["ZEROPOINTS"].read(), fits["SKY"].read())


def _outcome_row(outcome):
    """The frames-table row of a skipped or failed frame (a ledger event)."""
    return {"frame": outcome["frame"], "path": outcome.get("path", ""), "local_time": outcome.get("local_time") or "",
            "mjd_obs": np.nan, "exptime_s": np.nan, "zp_adu_per_s": np.nan, "robust_sigma_mag": np.nan,
            "n_sources_for_zp": 0, "aper_ind": -1, "sky_median_adu_per_s": np.nan, "has_dome": -1,
            "outcome": outcome["event"], "reason": outcome.get("reason", "")}


def _table(columns_or_array):
    import pyarrow as pa

    if isinstance(columns_or_array, np.ndarray):
        return pa.table({n: columns_or_array[n] for n in columns_or_array.dtype.names})
    return pa.Table.from_pylist(columns_or_array)


def write_night(outdir, night, outcomes, rows):
    """Rewrite one night's partition of the three tables.

    Parameters
    ----------
    outdir : str
        The archive's output directory.
    night : str
        'YYYYMMDD'.
    outcomes : list of dict
        The night's final ledger events (done, skipped, failed) in time order.
    rows : dict
        frame name -> `rows_from_tables` result for done frames reduced in this run; other done
        frames are read from their summaries (the ``outputs`` of their ledger event).
    """
    import pyarrow.parquet as pq

    frames, zps, skies = [], [], []
    for outcome in outcomes:
        if outcome["event"] != "done":
            frames.append(_outcome_row(outcome))
            continue
        r = rows.get(outcome["frame"])
        if r is None:
            summary = next(p for p in outcome["outputs"] if p.endswith("-summary.fits"))
            r = rows_from_summary(outcome["frame"], summary)
        frames.append(r["frame"])
        zps.append(r["zeropoints"])
        skies.append(r["sky"])
    parts = {"frames": _table(frames),
             "zeropoints": _table(np.concatenate(zps)) if zps else None,
             "sky": _table(np.concatenate(skies)) if skies else None}
    for name, table in parts.items():
        directory = os.path.join(tables_dir(outdir), name, f"night={night}")
        final = os.path.join(directory, PART)
        if table is None:
            if os.path.exists(final):
                os.unlink(final)
            continue
        os.makedirs(directory, exist_ok=True)
        with atomic_output(final) as tmp:
            pq.write_table(table, tmp)
    log.debug("tables: night %s, %d frames", night, len(frames))


def frames_in_table(outdir, night):
    """Rows of the night's frames table on disk (-1 when there is none)."""
    import pyarrow.parquet as pq

    path = os.path.join(tables_dir(outdir), "frames", f"night={night}", PART)
    return pq.read_metadata(path).num_rows if os.path.exists(path) else -1


def nights_of(ledger, only=None):
    """night -> that night's final ledger events, in local-time order (frames with a night;
    only night `only` when given)."""
    by_night = {}
    for outcome in ledger.outcomes.values():
        if outcome.get("night") and (only is None or outcome["night"] == only):
            by_night.setdefault(outcome["night"], []).append(outcome)
    for events in by_night.values():
        events.sort(key=lambda e: (e.get("local_time") or "", e["frame"]))
    return dict(sorted(by_night.items()))


def rebuild(outdir, ledger):
    """Rewrite every table under ``OUT/tables`` from the ledger's outcomes and the summaries on
    disk; return the number of nights written."""
    root = tables_dir(outdir)
    if os.path.isdir(root):
        shutil.rmtree(root)
    nights = nights_of(ledger)
    for night, outcomes in nights.items():
        write_night(outdir, night, outcomes, {})
    return len(nights)
