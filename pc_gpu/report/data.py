"""Page data: one row per frame from its -summary.fits and the ledgers, grouped by night.

A frame row is a plain dict (JSON-able, cached between builds): ``frame`` (raw name without
``.fits``), ``night`` ('YYYYMMDD'), ``mjd``, ``time`` (UTC, ISO), ``outcome`` (done, skipped,
failed), ``reason``, zeropoints ``zp``, ``zp_q1``..``zp_q4``, ``zp_sci`` (mag of 1 ADU/s, the
standard aperture), ``n_stars`` (and per quadrant, science field), sky ``sky``,
``sky_q1``..``sky_q4``, ``sky_sci`` (ADU/s/pix), ``dome`` (0/1), ``n_streaks`` (None: not
searched), ``conditions`` ({column: value} from a CONDITIONS HDU when there is one) and
``files`` ({kind: path relative to the output tree, or None}).
"""

import datetime as dt
import glob
import logging
import math
import os

import numpy as np

from ..astrometry.pointing import POINTING_FIELDS
from ..camera import EL_NINO
from ..ledger import FINAL_EVENTS, Ledger
from ..obstime import observing_night
from ..outputs import SUFFIXES

__all__ = ["find_summaries", "read_summary", "read_ledgers", "ledger_rows", "night_of_event",
           "mjd_to_iso", "night_stats", "frame_name", "flags_text"]

log = logging.getLogger(__name__)

_MJD0 = dt.datetime(1858, 11, 17, tzinfo=dt.timezone.utc)
SUMMARY_SUFFIX = SUFFIXES["summary"]


def frame_name(raw_or_output_name):
    """The frame's name: the raw file's base name without ``.fits`` / ``.fits.fz`` or an
    output suffix."""
    base = os.path.basename(raw_or_output_name)
    for suffix in (*SUFFIXES.values(), ".fits.fz", ".fits"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def find_summaries(outdir):
    """{directory relative to `outdir` ('' for the top): {summary file name: (size, mtime_ns)}}
    for every ``-summary.fits`` in `outdir` and its night subdirectories."""
    found = {}
    for sub in [""] + sorted(d for d in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, d))
                             and d != "report"):
        directory = os.path.join(outdir, sub)
        files = {}
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.endswith(SUMMARY_SUFFIX) and not entry.name.startswith("."):
                    st = entry.stat()
                    files[entry.name] = (st.st_size, st.st_mtime_ns)
        if files:
            found[sub] = files
    return found


def mjd_to_iso(mjd):
    """MJD to a UTC ISO time string (seconds), '' for NaN."""
    if mjd is None or not math.isfinite(mjd):
        return ""
    return (_MJD0 + dt.timedelta(days=float(mjd))).strftime("%Y-%m-%d %H:%M:%S")


def _num(value):
    """A JSON-able float (None for NaN/inf)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value):
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value).strip()


def _records(table):
    """A FITS table as a list of {column: python value} (vector columns left out; NaN and inf
    as None, bytes as stripped text)."""
    names = [n for n in table.dtype.names if table.dtype[n].shape == ()]
    if not names:
        return [{} for _ in range(len(table))]
    rows = []
    for values in table[names].tolist():
        row = {}
        for n, v in zip(names, values):
            if isinstance(v, float):
                row[n] = v if math.isfinite(v) else None
            elif isinstance(v, bool):
                row[n] = float(v)
            elif isinstance(v, (bytes, str)):
                row[n] = _text(v)
            else:
                row[n] = int(v)
        rows.append(row)
    return rows


def read_summary(path, outdir, *, camera=EL_NINO):
    """One frame's row and the tables its frame page shows.

    Parameters
    ----------
    path : str
        The ``-summary.fits`` file.
    outdir : str
        The output tree (file links are relative to it).

    Returns
    -------
    (row, details) : (dict, dict)
        details: ``zeropoints``, ``sky``, ``streaks`` (None: not searched), ``conditions``
        (None: absent), each a list of {column: value}; ``header``: selected keywords.
    """
    import fitsio

    with fitsio.FITS(path) as fits:
        header = fits[0].read_header()
        zps = fits["ZEROPOINTS"].read()
        sky = fits["SKY"].read()
        streaks = fits["STREAKS"].read() if "STREAKS" in fits else None
        conditions = fits["CONDITIONS"].read() if "CONDITIONS" in fits else None
    name = frame_name(path)
    n_aper = len(np.unique(zps["aper_ind"])) if len(zps) else 0
    std = camera.standard_aperture_index if n_aper > 1 else 0

    def zp_row(quadrant, sci):
        sel = (zps["quadrant"] == quadrant) & (zps["aper_ind"] == std) & (zps["science_fov_only"] == sci)
        return zps[sel][0] if sel.any() else None

    s = sky[0]
    mjd = float(s["mjd_obs"])
    row = {"frame": name, "night": _text(s["obs_night"]), "mjd": _num(mjd), "time": mjd_to_iso(mjd),
           "outcome": "done", "reason": "", "dome": int(s["has_dome"]) if "has_dome" in sky.dtype.names else 0,
           "n_streaks": None if streaks is None else len(streaks)}
    for key, quadrant, sci in (("", 0, 0), ("_q1", 1, 0), ("_q2", 2, 0), ("_q3", 3, 0), ("_q4", 4, 0),
                               ("_sci", 0, 1)):
        zr = zp_row(quadrant, sci)
        row["zp" + key] = None if zr is None else _num(zr["zp_adu_per_s"])
        row["n_stars" + key] = 0 if zr is None else int(zr["n_sources_for_zp"])
    for key, col in (("", "median_adu_per_s"), ("_q1", "median_adu_quad1_per_s"),
                     ("_q2", "median_adu_quad2_per_s"), ("_q3", "median_adu_quad3_per_s"),
                     ("_q4", "median_adu_quad4_per_s"), ("_sci", "median_adu_sci_per_s")):
        row["sky" + key] = _num(s[col])
    cond_rows = None if conditions is None else _records(conditions)
    row["conditions"] = {k: v for k, v in (cond_rows[0].items() if cond_rows else ())
                         if isinstance(v, (int, float)) or v is None}
    directory = os.path.dirname(os.path.abspath(path))
    row["files"] = {}
    for kind in ("summary", "detrended", "zp_plot", "thumbnail"):
        candidate = os.path.join(directory, name + SUFFIXES[kind])
        row["files"][kind] = (os.path.relpath(candidate, outdir).replace(os.sep, "/")
                              if os.path.exists(candidate) else None)
    keep = ("DATE", "TIME", "EXPOSURE", "EXPTIME", "RADEG", "DECDEG", "DOMEFLAG", "PCGPUVER", "PCDEVICE",
            "FLATFLD", "CALFALLB", "OBSNIGHT", "STRKTOUT", "NSTREAKS", "ZPFLAG", "WCSVERIF",
            *(keyword for keyword, _ in POINTING_FIELDS.values()))
    details = {"zeropoints": _records(zps), "sky": _records(sky),
               "streaks": None if streaks is None else _records(streaks), "conditions": cond_rows,
               "header": [(k, _text(header[k])) for k in keep if k in header]}
    return row, details


def read_ledgers(outdir):
    """Final outcomes from every ``*ledger*.jsonl`` in `outdir`: {frame name: event}, in ledger
    order (a later ledger's outcome for the same frame wins)."""
    outcomes = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(outdir), "*ledger*.jsonl"))):
        ledger = Ledger.read(path)
        for raw, event in ledger.outcomes.items():
            if event.get("event") in FINAL_EVENTS:
                outcomes.pop(frame_name(raw), None)
                outcomes[frame_name(raw)] = event
    return outcomes


def night_of_event(event, *, utc_offset_hours=EL_NINO.timezone_offset_hours):
    """Observing night of a ledger event from its UTC time (for frames with no summary)."""
    try:
        utc = dt.datetime.fromisoformat(event["time"])
    except (KeyError, TypeError, ValueError):
        return None
    return observing_night((utc + dt.timedelta(hours=utc_offset_hours)).replace(tzinfo=None))


def ledger_rows(outcomes):
    """Rows for ledger outcomes, with the night each belongs to.

    A frame the ledger calls done has its night in the event. A skipped or failed frame has no
    summary: it belongs to the night of the nearest done frame before it in the ledger (frames
    arrive in order), else the nearest after it, else the night of its ledger time.

    Returns
    -------
    dict
        frame name -> row (outcome, reason and night; the numbers None).
    """
    names = list(outcomes)
    nights = [outcomes[n].get("obs_night") for n in names]
    before, after = [None] * len(names), [None] * len(names)
    last = None
    for i, night in enumerate(nights):
        last = night or last
        before[i] = last
    last = None
    for i in range(len(names) - 1, -1, -1):
        last = nights[i] or last
        after[i] = last
    rows = {}
    for i, name in enumerate(names):
        event = outcomes[name]
        night = nights[i] or before[i] or after[i] or night_of_event(event)
        rows[name] = {"frame": name, "night": night, "outcome": event["event"],
                      "reason": str(event.get("reason") or ""), "ledger_time": event.get("time", "")}
    return rows


def _median(values):
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def night_stats(rows):
    """What the index shows for a night: frame count, failures, median zeropoint, sky, FWHM,
    first and last MJD."""
    done = [r for r in rows if r.get("mjd") is not None]
    fwhm = [next((v for k, v in r.get("conditions", {}).items() if "fwhm" in k.lower() and v is not None), None)
            for r in done]
    mjds = [r["mjd"] for r in done]
    zps = [r.get("zp") for r in done if r.get("zp") is not None]
    skies = [r.get("sky") for r in done if r.get("sky") is not None]
    return {"n_frames": len(rows), "n_failed": sum(r["outcome"] == "failed" for r in rows),
            "n_skipped": sum(r["outcome"] == "skipped" for r in rows),
            "zp_median": _median(zps), "sky_median": _median(skies), "fwhm_median": _median(fwhm),
            "zp_p16": float(np.percentile(zps, 16)) if zps else None,
            "zp_p84": float(np.percentile(zps, 84)) if zps else None,
            "mjd_first": min(mjds) if mjds else None, "mjd_last": max(mjds) if mjds else None}


def flags_text(row):
    """The frame's flags in words ('dome', 'streaks: N'), '' when none."""
    flags = []
    if row.get("dome"):
        flags.append("dome")
    if row.get("n_streaks"):
        flags.append(f"streaks: {row['n_streaks']}")
    return ", ".join(flags)
