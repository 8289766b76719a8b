"""Build the report pages under OUT/report/, redoing only nights whose outputs changed.

Layout::

    OUT/report/index.html                 every night, newest first; the archive's plots
    OUT/report/NIGHT/index.html           the night page
    OUT/report/NIGHT/frames/FRAME.html    one page per frame
    OUT/report/manifest.json              what each page was built from (signatures)
    OUT/report/cache/DIR.json             per output directory: each summary's row and signature

A summary is read again only when its size or modification time changed; a night page is
rebuilt only when one of its summaries, its ledger outcomes or its live state changed.
"""

import datetime as dt
import fcntl
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from ..camera import EL_NINO
from ..errors import InputError
from ..outputs import atomic_output
from .data import find_summaries, ledger_rows, night_stats, read_ledgers, read_summary
from .templates import environment

__all__ = ["build_report", "BuildResult", "REPORT_DIR"]

log = logging.getLogger(__name__)

REPORT_DIR = "report"
_VERSION = 1
_NIGHT = re.compile(r"^\d{8}$")
_PARALLEL_NIGHTS = 4   # nights to build before worker processes are worth their start
_MAX_WORKERS = 8
_PARALLEL_READS = 400  # summaries to read before worker processes are worth their start
_FORKED = None         # the builder a forked worker inherits
_ZP_COLUMNS = ("quadrant", "aper_ind", "science_fov_only", "zp_adu_per_s", "n_sources_for_zp",
               "robust_sigma_mag", "bp_rp_median", "gaia_g_median")
_SKY_REGIONS = (("full frame", ""), ("science field", "_sci"), ("q1", "_quad1"), ("q2", "_quad2"),
                ("q3", "_quad3"), ("q4", "_quad4"))


@dataclass
class BuildResult:
    """What a build did: nights whose page was (re)built, frame pages written, seconds."""

    nights_built: list = field(default_factory=list)
    frames_written: int = 0
    index_written: bool = False
    seconds: float = 0.0
    n_nights: int = 0


def _digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _load_json(path, default):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def _write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def _safe_night(night):
    return night if night and _NIGHT.match(night) else "unknown"


def _cache_path(report, sub):
    return os.path.join(report, "cache", (sub or "_top") + ".json")


def build_report(outdir, *, live_night=None, refresh_s=10, force=False, camera=EL_NINO):
    """Write or update the report of an output tree.

    Parameters
    ----------
    outdir : str
        Output tree of `pc-proc` (with or without --nightly_subdir), `pc-realtime` or
        `pc-archive`: ``-summary.fits`` files in OUT or OUT/YYYYMMDD, ledgers ``*ledger*.jsonl``.
    live_night : str, optional
        The night in progress: its page reloads itself every `refresh_s` seconds.
    force : bool
        Rebuild every page.

    Returns
    -------
    BuildResult
    """
    t0 = time.perf_counter()
    outdir = os.path.abspath(os.fspath(outdir))
    if not os.path.isdir(outdir):
        raise InputError(outdir, "output directory not found")
    report = os.path.join(outdir, REPORT_DIR)
    try:
        os.makedirs(os.path.join(report, "cache"), exist_ok=True)
        lock = open(os.path.join(report, ".lock"), "a")
    except OSError as exc:
        raise InputError(report, f"cannot write the report here ({exc.strerror})") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (the live service and a manual run)
        result = _Builder(outdir, report, camera, force).run(live_night, refresh_s)
    result.seconds = time.perf_counter() - t0
    log.info("report of %s: %d night page(s) and %d frame page(s) written in %.1f s (%d nights)",
             outdir, len(result.nights_built), result.frames_written, result.seconds, result.n_nights)
    return result


class _Builder:
    def __init__(self, outdir, report, camera, force):
        self.outdir, self.report, self.camera, self.force = outdir, report, camera, force
        manifest = _load_json(os.path.join(report, "manifest.json"), {})
        if force or manifest.get("version") != _VERSION:
            manifest = {}
        self.manifest = {"version": _VERSION, "dirs": manifest.get("dirs", {}),
                         "nights": manifest.get("nights", {})}
        self.caches = {}    # sub -> {summary file name: {"sig", "row", "page"}}
        self.details = {}   # frame -> details read during this build
        self.env = environment()
        self.built = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    # --- summaries ---------------------------------------------------------------------

    def cache(self, sub):
        if sub not in self.caches:
            self.caches[sub] = {} if self.force else _load_json(_cache_path(self.report, sub), {})
        return self.caches[sub]

    def update_dirs(self, listing):
        """Re-read new or changed summaries; return the nights they touch."""
        changed, todo = set(), []
        for sub, files in listing.items():
            sig = _digest(sorted(files.items()))
            old = self.manifest["dirs"].get(sub)
            if old is not None and old["sig"] == sig and not self.force:
                continue
            cache = self.cache(sub)
            todo.append((sub, files, sig, old, cache))
        fresh = self.read_summaries([os.path.join(self.outdir, sub, name) for sub, files, _, _, cache in todo
                                     for name, fsig in files.items()
                                     if tuple((cache.get(name) or {}).get("sig", ())) != tuple(fsig)])
        for sub, files, sig, old, cache in todo:
            new = {}
            for name, fsig in files.items():
                entry = cache.get(name)
                if entry is not None and tuple(entry["sig"]) == tuple(fsig):
                    new[name] = entry
                    continue
                read = fresh.get(os.path.join(self.outdir, sub, name))
                if read is None:
                    continue
                row, details = read
                row["night"] = _safe_night(row["night"])
                self.details[row["frame"]] = details
                new[name] = {"sig": list(fsig), "row": row, "page": None}
                changed.add(row["night"])
            for name in set(cache) - set(new):
                changed.add(cache[name]["row"]["night"])
            self.caches[sub] = new
            nights = sorted({e["row"]["night"] for e in new.values()})
            changed |= set(old["nights"]) - set(nights) if old else set()
            self.manifest["dirs"][sub] = {"sig": sig, "nights": nights}
        for sub in set(self.manifest["dirs"]) - set(listing):
            changed |= set(self.manifest["dirs"].pop(sub)["nights"])
            self.caches[sub] = {}
        return changed

    def read_summaries(self, paths):
        """{path: (row, details)} of the summaries that could be read (`read_summary`; in
        forked worker processes when there are many); one that cannot is logged and left out."""
        workers = min(os.cpu_count() or 1, _MAX_WORKERS)
        if workers < 2 or len(paths) < _PARALLEL_READS or "fork" not in mp.get_all_start_methods():
            results = map(_read_one, paths, [self.outdir] * len(paths), [self.camera] * len(paths))
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                results = pool.starmap(_read_one, [(p, self.outdir, self.camera) for p in paths],
                                       chunksize=max(1, len(paths) // (4 * workers)))
        out = {}
        for path, (read, problem) in zip(paths, results):
            if problem is not None:
                log.warning("%s: cannot read this summary (%s); left out of the report", path, problem)
            else:
                out[path] = read
        return out

    def rows_of(self, night):
        """(sub, summary name, cache entry) of the night's summaries."""
        for sub, info in self.manifest["dirs"].items():
            if night in info["nights"]:
                for name, entry in self.cache(sub).items():
                    if entry["row"]["night"] == night:
                        yield sub, name, entry

    # --- pages -------------------------------------------------------------------------

    def run(self, live_night, refresh_s):
        result = BuildResult()
        changed = self.update_dirs(find_summaries(self.outdir))
        ledger = ledger_rows(read_ledgers(self.outdir))
        for row in ledger.values():
            row["night"] = _safe_night(row["night"])
        by_night = {}
        for name, row in ledger.items():
            by_night.setdefault(row["night"], {})[name] = row
        nights = {n for info in self.manifest["dirs"].values() for n in info["nights"]} | set(by_night)
        todo = []
        for night in sorted(nights):
            lsig = _digest(sorted((n, r["outcome"], r["reason"]) for n, r in by_night.get(night, {}).items()))
            live = refresh_s if night == live_night else 0
            old = self.manifest["nights"].get(night)
            page = os.path.join(self.report, night, "index.html")
            if (night in changed or old is None or old.get("ledger") != lsig or old.get("live") != live
                    or not os.path.exists(page) or self.force):
                todo.append((night, by_night.get(night, {}), live, lsig))
        for (night, _, live, lsig), (stats, n_frames) in zip(todo, self.build_nights(todo)):
            self.manifest["nights"][night] = {"ledger": lsig, "live": live, "stats": stats}
            result.nights_built.append(night)
            result.frames_written += n_frames
        gone = set(self.manifest["nights"]) - nights
        for night in gone:  # its outputs were removed: so are its pages
            del self.manifest["nights"][night]
            shutil.rmtree(os.path.join(self.report, night), ignore_errors=True)
        for sub, cache in self.caches.items():
            _write_text(_cache_path(self.report, sub), json.dumps(cache, separators=(",", ":")))
        index = os.path.join(self.report, "index.html")
        if result.nights_built or gone or not os.path.exists(index) or self.force:
            self.build_index(index)
            result.index_written = True
        _write_text(os.path.join(self.report, "manifest.json"), json.dumps(self.manifest, indent=1))
        result.n_nights = len(nights)
        return result

    def build_nights(self, todo):
        """[(stats, frame pages written)] for [(night, ledger rows, refresh, _)]: in worker
        processes (forked, one per CPU) when there are several nights, else here."""
        workers = min(len(todo), os.cpu_count() or 1, _MAX_WORKERS)
        if workers < 2 or len(todo) < _PARALLEL_NIGHTS or "fork" not in mp.get_all_start_methods():
            return [self.build_night(night, ledger, refresh) for night, ledger, refresh, _ in todo]
        for night, *_ in todo:  # load the caches here, so the workers' page keys land in them
            list(self.rows_of(night))
        global _FORKED
        _FORKED = self
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                done = pool.map(_build_night_in_worker, [t[:3] for t in todo], chunksize=1)
        finally:
            _FORKED = None
        out = []
        for (night, *_), (stats, written, pages) in zip(todo, done):
            for sub, name, entry in self.rows_of(night):
                entry["page"] = pages.get(f"{sub}/{name}", entry.get("page"))
            out.append((stats, written))
        return out

    def build_night(self, night, ledger, refresh):
        """Write the night page and the frame pages that are new or changed; return
        (stats, number of frame pages written)."""
        from .plots import bokeh_js, night_figures

        entries = {e["row"]["frame"]: (sub, name, e) for sub, name, e in self.rows_of(night)}
        rows, order, written = [], {}, 0
        last_mjd = float("-inf")
        for i, frame in enumerate(ledger):  # ledger order places the frames that have no time
            entry = entries.get(frame)
            if entry is not None and entry[2]["row"].get("mjd") is not None:
                last_mjd = entry[2]["row"]["mjd"]
            order[frame] = (last_mjd, 1, i) if entry is None else None
        for frame, (sub, name, entry) in entries.items():
            row = entry["row"]
            lrow = ledger.get(frame)
            row["outcome"] = lrow["outcome"] if lrow else "done"
            row["reason"] = lrow["reason"] if lrow else ""
            rows.append(row)
        for frame, lrow in ledger.items():
            if frame not in entries:
                rows.append(dict(lrow, reason=lrow["reason"] or ("no summary found" if lrow["outcome"] == "done"
                                                                 else "")))
        rows.sort(key=lambda r: order.get(r["frame"]) or (r.get("mjd") or float("-inf"), 0, 0))
        frame_dir = os.path.join(self.report, night, "frames")
        for row in rows:
            row["url"] = "frames/" + quote(row["frame"], safe="") + ".html"
            page = os.path.join(frame_dir, row["frame"] + ".html")
            key = _digest([row.get("outcome"), row.get("reason")])
            entry = entries.get(row["frame"])
            if entry is not None and entry[2].get("page") == key and os.path.exists(page) and not self.force:
                continue
            details = None
            if entry is not None:
                details = self.details.get(row["frame"])
                if details is None:
                    path = os.path.join(self.outdir, entry[0], entry[1])
                    try:
                        details = read_summary(path, self.outdir, camera=self.camera)[1]
                    except Exception as exc:  # noqa: BLE001
                        log.warning("%s: cannot read this summary (%s)", path, exc)
                entry[2]["page"] = key
            _write_text(page, self.frame_page(row, details))
            written += 1
        conditions = sorted({k for r in rows for k in (r.get("conditions") or {})})
        sky_mag = next((c for c in conditions if c.startswith("sky_mag")), None)
        script, div = night_figures(rows, sky_mag_column=sky_mag) if rows else ("", "")
        stats = night_stats(rows)
        html = self.env.get_template("night.html").render(
            title=f"Night {night}", head=bokeh_js() + script, night=night, stats=stats, rows=rows,
            conditions=conditions, plot_div=div, refresh=refresh, built=self.built)
        _write_text(os.path.join(self.report, night, "index.html"), html)
        return stats, written

    def frame_page(self, row, details):
        up = "../../../"
        files = [(kind, up + quote(path)) for kind, path in (row.get("files") or {}).items() if path]
        sky = []
        if details and details["sky"]:
            s = details["sky"][0]
            sky = [(label, s.get(f"median_adu{suffix}"), s.get(f"median_adu{suffix}_per_s"),
                    s.get(f"mean_adu{suffix}_per_s")) for label, suffix in _SKY_REGIONS]
        links = dict(files)
        return self.env.get_template("frame.html").render(
            title=row["frame"], head="", row=row, files=files, details=details, sky=sky,
            zp_columns=[c for c in _ZP_COLUMNS if details and details["zeropoints"]
                        and c in details["zeropoints"][0]],
            zp_plot=links.get("zp_plot"), thumbnail=links.get("thumbnail"), refresh=0)

    def build_index(self, path):
        from .plots import archive_figures, bokeh_js

        nights = [dict(info["stats"], night=n, url=quote(n) + "/index.html")
                  for n, info in self.manifest["nights"].items()]
        nights.sort(key=lambda n: n["night"], reverse=True)
        script, div = archive_figures(nights) if nights else ("", "")
        html = self.env.get_template("index.html").render(
            title="Pointing camera nights", head=bokeh_js() + script, nights=nights, plot_div=div,
            n_frames=sum(n["n_frames"] for n in nights), refresh=0, built=self.built)
        _write_text(path, html)


def _read_one(path, outdir, camera):
    """(`read_summary`'s (row, details), None), or (None, why it could not be read)."""
    try:
        return read_summary(path, outdir, camera=camera), None
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the report
        return None, str(exc)


def _build_night_in_worker(task):
    """In a forked worker: build one night; return (stats, pages written, page keys)."""
    night, ledger, refresh = task
    stats, written = _FORKED.build_night(night, ledger, refresh)
    pages = {f"{sub}/{name}": entry.get("page") for sub, name, entry in _FORKED.rows_of(night)}
    return stats, written, pages
