"""Interactive Bokeh figures of a night and of the archive (JavaScript inline, no network)."""

import datetime as dt
import functools
import json
import math

from .data import flags_text

__all__ = ["night_figures", "archive_figures", "bokeh_js", "QUADRANT_COLOURS"]

# the original's night plot: all quadrants black, q1 magenta, q2 red, q3 green, q4 cyan
QUADRANT_COLOURS = {"": "black", "_q1": "magenta", "_q2": "red", "_q3": "green", "_q4": "cyan",
                    "_sci": "royalblue"}
_LABELS = {"": "full frame", "_q1": "q1", "_q2": "q2", "_q3": "q3", "_q4": "q4", "_sci": "science field"}


@functools.lru_cache(maxsize=1)
def bokeh_js():
    """BokehJS (core only) as inline <script> tags."""
    from bokeh.resources import Resources

    return Resources(mode="inline", components=["bokeh"]).render_js()


def _ms(mjd):
    """MJD to milliseconds since 1970 (Bokeh's datetime axis)."""
    return (mjd - 40587.0) * 86400e3


def _float(v):
    return math.nan if v is None else float(v)


def _sky_value(row, key, mag_column):
    """Sky of a region for the plot: mag/arcsec² from the conditions (full frame only) when
    `mag_column` is given, else -2.5 log10(ADU/s/pix)."""
    if mag_column:
        return _float(row.get("conditions", {}).get(mag_column)) if key == "" else math.nan
    v = row.get("sky" + key)
    return -2.5 * math.log10(v) if v is not None and v > 0 else math.nan


def night_figures(rows, *, sky_mag_column=None):
    """Bokeh figures of one night: zeropoint, sky, stars used and every condition column
    against time, sharing the time axis; hover names the frame, a click opens its page.

    The figures are built and serialised once per layout (the condition columns, the sky
    axis, whether dome, streak and failure marks are drawn) and reused for every night of that
    layout; each page carries its own data as JSON, which the figures load when the page is
    ready (Bokeh's serialisation took ~0.7 s a night, the data ~ms).

    Parameters
    ----------
    rows : list of dict
        Frame rows (`pc_gpu.report.data`), each with ``url`` (its page, relative to the night
        page); frames with no time (skipped, failed) are drawn as red crosses at the time of
        the frame before them.
    sky_mag_column : str, optional
        A CONDITIONS column with the sky in mag/arcsec² (else the sky is plotted as
        -2.5 log10 ADU/s/pix, per region).

    Returns
    -------
    (script, div) : (str, str)
        For the page's head (the data as JSON and `bokeh.embed.components`' script) and body.
    """
    data, marks, dome, streaked = _night_data(rows, sky_mag_column)
    conditions = tuple(k[len("cond_"):] for k in data if k.startswith("cond_"))
    script, div = _night_layout(conditions, sky_mag_column, bool(dome), bool(streaked), bool(marks["t"]))
    payload = {"sources": {"frames": data, "failed": marks}, "indices": {"dome": dome, "streaked": streaked}}
    return _json_script(_DATA_ID, payload) + script, div


_DATA_ID = "pc-plot-data"


def _json_script(element_id, payload):
    """A JSON data block for a page's head, safe inside HTML (no '<', '>' or '&' as such)."""
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _json_num(v):
    return None if v is None or not math.isfinite(v) else v


def _night_data(rows, sky_mag_column):
    """The night's plot data: (frame columns, failure-mark columns, dome rows, streaked rows);
    NaN as None (JSON null, NaN again in the page)."""
    timed = [r for r in rows if r.get("mjd") is not None]
    data = {"t": [_ms(r["mjd"]) for r in timed], "frame": [r["frame"] for r in timed],
            "url": [r["url"] for r in timed], "time": [r.get("time", "") for r in timed],
            "n_stars": [r.get("n_stars", 0) for r in timed],
            "flags": [flags_text(r) for r in timed]}
    for key in QUADRANT_COLOURS:
        data["zp" + key] = [_json_num(_float(r.get("zp" + key))) for r in timed]
        data["sky" + key] = [_json_num(_sky_value(r, key, sky_mag_column)) for r in timed]
    for k in sorted({k for r in timed for k in r.get("conditions", {})}):
        data["cond_" + k] = [_json_num(_float(r["conditions"].get(k))) for r in timed]

    # skipped/failed frames: at the time of the frame before them in the night
    last_t, marks = None, {"t": [], "frame": [], "url": [], "reason": []}
    for r in rows:
        if r.get("mjd") is not None:
            last_t = _ms(r["mjd"])
        elif last_t is not None or timed:
            marks["t"].append(last_t if last_t is not None else _ms(timed[0]["mjd"]))
            marks["frame"].append(r["frame"])
            marks["url"].append(r["url"])
            marks["reason"].append(f"{r['outcome']}: {r.get('reason', '')}")
    zps = [v for v in data["zp"] if v is not None]
    marks["y"] = [min(zps) - 0.1 if zps else 0.0] * len(marks["t"])
    dome = [i for i, r in enumerate(timed) if r.get("dome")]
    streaked = [i for i, r in enumerate(timed) if r.get("n_streaks")]
    return data, marks, dome, streaked


# run when the page is ready: the page's JSON data into the sources (null back to NaN), then the
# rows the dome and streak marks select
_LOAD_DATA_JS = """
const payload = JSON.parse(document.getElementById(data_id).textContent);
for (const [name, source] of Object.entries(sources)) {
  const columns = {};
  for (const [key, values] of Object.entries(payload.sources[name])) {
    columns[key] = values.map((v) => (v === null ? NaN : v));
  }
  source.data = columns;
}
for (const [name, filter] of Object.entries(filters)) { filter.indices = payload.indices[name]; }
"""


@functools.lru_cache(maxsize=16)
def _night_layout(conditions, sky_mag_column, with_dome, with_streaks, with_marks):
    """(script, div) of a night's figures with empty sources that fill themselves from the
    page's JSON data when the document is ready."""
    from bokeh.document import Document
    from bokeh.embed import components
    from bokeh.events import DocumentReady
    from bokeh.layouts import column
    from bokeh.models import CDSView, ColumnDataSource, CustomJS, HoverTool, IndexFilter, OpenURL, TapTool

    columns = ["t", "frame", "url", "time", "n_stars", "flags"]
    columns += [p + key for key in QUADRANT_COLOURS for p in ("zp", "sky")] + ["cond_" + k for k in conditions]
    source = ColumnDataSource({c: [] for c in columns}, name="frames")
    bad = ColumnDataSource({c: [] for c in ("t", "frame", "url", "reason", "y")}, name="failed")
    filters = {"dome": IndexFilter([]), "streaked": IndexFilter([])}

    tips = [("frame", "@frame"), ("time (UTC)", "@time"), ("zp", "@zp{0.000}"), ("sky", "@sky{0.00}"),
            ("stars", "@n_stars"), ("flags", "@flags")]

    def figure(title, y_label, x_range=None):
        from bokeh.plotting import figure as bokeh_figure

        shared = {"x_range": x_range} if x_range is not None else {}
        fig = bokeh_figure(title=title, x_axis_type="datetime", height=260, sizing_mode="stretch_width",
                           tools="pan,box_zoom,wheel_zoom,reset,save", y_axis_label=y_label,
                           x_axis_label="time (UTC)", **shared)
        fig.add_tools(HoverTool(tooltips=tips), TapTool(callback=OpenURL(url="@url", same_tab=True)))
        return fig

    zp_fig = figure("zeropoint", "zeropoint (mag of 1 ADU/s)")
    zp_fig.name = "zp_figure"
    for key, colour in QUADRANT_COLOURS.items():
        zp_fig.scatter("t", "zp" + key, source=source, color=colour, size=6 if key == "" else 4,
                       legend_label=_LABELS[key], name="zp" + key)
    if with_dome:
        zp_fig.scatter("t", "zp", source=source, view=CDSView(filter=filters["dome"]), marker="circle",
                       fill_alpha=0, line_color="orange", line_width=2, size=12, legend_label="dome")
    if with_streaks:
        zp_fig.scatter("t", "zp", source=source, view=CDSView(filter=filters["streaked"]),
                       marker="triangle", fill_alpha=0, line_color="purple", size=12, legend_label="streaks")
    if with_marks:  # their own tooltip: no zeropoint or sky, the reason instead
        zp_fig.select_one({"type": HoverTool}).renderers = list(zp_fig.renderers)
        crosses = zp_fig.scatter("t", "y", source=bad, marker="x", color="red", size=12, line_width=2,
                                 legend_label="skipped/failed")
        zp_fig.add_tools(HoverTool(tooltips=[("frame", "@frame"), ("", "@reason")], renderers=[crosses]))
    _legend_outside(zp_fig)

    sky_fig = figure("sky", "sky (mag/arcsec²)" if sky_mag_column else "sky (-2.5 log10 ADU/s/pix)", zp_fig.x_range)
    for key, colour in QUADRANT_COLOURS.items():
        sky_fig.scatter("t", "sky" + key, source=source, color=colour, size=5 if key == "" else 3,
                        legend_label=_LABELS[key])
    sky_fig.y_range.flipped = True  # brighter sky up, as for magnitudes
    _legend_outside(sky_fig)
    star_fig = figure("stars used for the zeropoint", "stars", zp_fig.x_range)
    star_fig.scatter("t", "n_stars", source=source, color="black", size=5)
    figs = [zp_fig, sky_fig, star_fig]
    for k in conditions:
        fig = figure(k, k, zp_fig.x_range)
        fig.scatter("t", "cond_" + k, source=source, color="black", size=5)
        figs.append(fig)
    layout = column(*figs, sizing_mode="stretch_width")
    document = Document()
    document.add_root(layout)
    document.js_on_event(DocumentReady, CustomJS(args={"data_id": _DATA_ID, "sources": {"frames": source, "failed": bad},
                                                       "filters": filters}, code=_LOAD_DATA_JS))
    return components(layout)


def _legend_outside(fig):
    """Move the figure's legend to its right (off the data); a click hides a series."""
    legend = fig.legend[0]
    legend.click_policy = "hide"
    fig.add_layout(legend, "right")


def archive_figures(nights):
    """The archive's median zeropoint (16th-84th percentile bars) and sky against date.

    Parameters
    ----------
    nights : list of dict
        Per night: ``night``, ``url`` and `pc_gpu.report.data.night_stats` values.

    Returns
    -------
    (script, div) : (str, str)
    """
    from bokeh.embed import components
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, HoverTool, OpenURL, TapTool
    from bokeh.plotting import figure

    def day_ms(night):
        return dt.datetime.strptime(night, "%Y%m%d").replace(tzinfo=dt.timezone.utc).timestamp() * 1e3

    ok = [n for n in nights if n.get("zp_median") is not None and n["night"].isdigit()]
    data = {"t": [day_ms(n["night"]) for n in ok], "night": [n["night"] for n in ok],
            "url": [n["url"] for n in ok], "zp": [n["zp_median"] for n in ok],
            "lo": [_float(n.get("zp_p16")) for n in ok], "hi": [_float(n.get("zp_p84")) for n in ok],
            "sky": [-2.5 * math.log10(n["sky_median"]) if n.get("sky_median") else math.nan for n in ok],
            "n": [n["n_frames"] for n in ok]}
    source = ColumnDataSource(data, name="nights")
    tips = [("night", "@night"), ("median zp", "@zp{0.000}"), ("frames", "@n")]
    figs = []
    for title, y, label in (("median zeropoint per night", "zp", "zeropoint (mag of 1 ADU/s)"),
                            ("median sky per night", "sky", "sky (-2.5 log10 ADU/s/pix)")):
        shared = {"x_range": figs[0].x_range} if figs else {}
        fig = figure(title=title, x_axis_type="datetime", height=260, sizing_mode="stretch_width",
                     tools="pan,box_zoom,wheel_zoom,reset,save", y_axis_label=label, **shared)
        if y == "zp":
            fig.segment("t", "lo", "t", "hi", source=source, color="grey")
        fig.scatter("t", y, source=source, color="black", size=6)
        fig.add_tools(HoverTool(tooltips=tips), TapTool(callback=OpenURL(url="@url", same_tab=True)))
        figs.append(fig)
    figs[1].y_range.flipped = True
    return components(column(*figs, sizing_mode="stretch_width"))
