"""The report's jinja2 templates (autoescaped: every name and value reaching HTML is escaped)."""

import functools

from .data import flags_text

__all__ = ["environment"]

_BASE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
<title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 1em 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; cursor: pointer; position: sticky; top: 0; }
td.name { text-align: left; }
tr.frame { cursor: pointer; }
tr.frame:hover { background: #ffd; }
tr.failed { background: #fcc; } tr.skipped { background: #eee; color: #666; }
tr.dome td.flags, tr.streak td.flags { color: #a50; font-weight: bold; }
.note { color: #666; } .live { color: #080; font-weight: bold; }
img.thumb { image-rendering: pixelated; border: 1px solid #888; max-width: 100%; }
</style>
{{ head | safe }}
</head><body>
{% block body %}{% endblock %}
<script>
// sortable tables: click a header; rows that carry data-href open that page when clicked
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.order !== "up"; th.dataset.order = up ? "up" : "down";
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v || a.cells[col].textContent;
        var y = b.cells[col].dataset.v || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  table.querySelectorAll("tr[data-href]").forEach(function (tr) {
    tr.addEventListener("click", function (e) {
      if (e.target.tagName !== "A") { window.location.href = tr.dataset.href; }
    });
  });
});
</script>
</body></html>
"""

_NIGHT = """{% extends "base.html" %}{% block body %}
<p><a href="../index.html">all nights</a></p>
<h1>Night {{ night }}</h1>
<p>{{ stats.n_frames }} frames ({{ stats.n_failed }} failed, {{ stats.n_skipped }} skipped);
median zeropoint {{ fmt(stats.zp_median, 3) }}, median sky {{ fmt(stats.sky_median, 2) }} ADU/s/pix.
{% if refresh %}<span class="live">Live: this page reloads every {{ refresh }} s while the night runs.</span>{% endif %}
<span class="note">Built {{ built }}.</span></p>
{{ plot_div | safe }}
<h2>Frames</h2>
<table class="sortable" id="frames">
<thead><tr><th>#</th><th>frame</th><th>time (UTC)</th><th>outcome</th><th>reason</th><th>zp</th>
<th>zp q1</th><th>zp q2</th><th>zp q3</th><th>zp q4</th><th>zp sci</th><th>stars</th>
<th>sky ADU/s/pix</th><th>flags</th>{% for c in conditions %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in rows %}<tr class="frame {{ r.outcome }}{% if r.dome %} dome{% endif %}{% if r.n_streaks %} streak{% endif %}" data-href="{{ r.url }}">
<td>{{ loop.index }}</td><td class="name"><a href="{{ r.url }}">{{ r.frame }}</a></td><td>{{ r.time }}</td>
<td>{{ r.outcome }}</td><td class="name">{{ r.reason }}</td>
<td>{{ fmt(r.zp, 3) }}</td><td>{{ fmt(r.zp_q1, 3) }}</td><td>{{ fmt(r.zp_q2, 3) }}</td><td>{{ fmt(r.zp_q3, 3) }}</td>
<td>{{ fmt(r.zp_q4, 3) }}</td><td>{{ fmt(r.zp_sci, 3) }}</td><td>{{ r.n_stars if r.n_stars is not none else "" }}</td>
<td>{{ fmt(r.sky, 3) }}</td><td class="flags">{{ flags(r) }}</td>
{% for c in conditions %}<td>{{ fmt((r.conditions or {}).get(c), 3) }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endblock %}"""

_FRAME = """{% extends "base.html" %}{% block body %}
<p><a href="../index.html">night {{ row.night }}</a> &middot; <a href="../../index.html">all nights</a></p>
<h1>{{ row.frame }}</h1>
<p>Outcome: <b>{{ row.outcome }}</b>{% if row.reason %}: {{ row.reason }}{% endif %}.
{% if row.time %}Exposure start {{ row.time }} UTC.{% endif %}</p>
{% if files %}<p>Files: {% for kind, href in files %}<a href="{{ href }}">{{ kind }}</a>{% if not loop.last %} &middot; {% endif %}{% endfor %}</p>{% endif %}
<h2>Images</h2>
{% if zp_plot %}<p><img src="{{ zp_plot }}" alt="zeropoint checkplot"></p>{% else %}<p class="note">No -zp.png checkplot for this frame.</p>{% endif %}
{% if thumbnail %}<p><img class="thumb" src="{{ thumbnail }}" alt="detrended image, binned"></p>
{% else %}<p class="note">No thumbnail or detrended image for this frame (reduce with --thumbnail to get one).</p>{% endif %}
{% if details %}
<h2>Zeropoints</h2>
<table class="sortable"><thead><tr>{% for c in zp_columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for z in details.zeropoints %}<tr>{% for c in zp_columns %}<td>{{ fmt(z[c], 4) }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>
<h2>Sky</h2>
<table><thead><tr><th>region</th><th>median ADU</th><th>median ADU/s/pix</th><th>mean ADU/s/pix</th></tr></thead><tbody>
{% for name, m, ms, mean in sky %}<tr><td class="name">{{ name }}</td><td>{{ fmt(m, 2) }}</td><td>{{ fmt(ms, 4) }}</td><td>{{ fmt(mean, 4) }}</td></tr>{% endfor %}
</tbody></table>
{% if details.conditions %}<h2>Conditions</h2>
<table><thead><tr>{% for c in details.conditions[0] %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for z in details.conditions %}<tr>{% for c in z %}<td>{{ fmt(z[c], 4) }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>{% endif %}
<h2>Streaks</h2>
{% if details.streaks is none %}<p class="note">Streak detection did not run on this frame.</p>
{% elif not details.streaks %}<p>No streak found.</p>
{% else %}<table><thead><tr>{% for c in details.streaks[0] %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for z in details.streaks %}<tr>{% for c in z %}<td>{{ fmt(z[c], 3) }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>{% endif %}
<h2>Header</h2>
<table><tbody>{% for k, v in details.header %}<tr><td class="name">{{ k }}</td><td class="name">{{ v }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="note">No summary was written for this frame.</p>{% endif %}
{% endblock %}"""

_INDEX = """{% extends "base.html" %}{% block body %}
<h1>Pointing camera nights</h1>
<p>{{ nights | length }} nights, {{ n_frames }} frames. <span class="note">Built {{ built }}.</span></p>
{{ plot_div | safe }}
<table class="sortable" id="nights">
<thead><tr><th>night</th><th>frames</th><th>failed</th><th>skipped</th><th>median zp</th>
<th>median sky ADU/s/pix</th><th>median FWHM</th></tr></thead><tbody>
{% for n in nights %}<tr class="frame{% if n.n_failed %} failed{% endif %}" data-href="{{ n.url }}">
<td class="name"><a href="{{ n.url }}">{{ n.night }}</a></td><td>{{ n.n_frames }}</td><td>{{ n.n_failed }}</td>
<td>{{ n.n_skipped }}</td><td>{{ fmt(n.zp_median, 3) }}</td><td>{{ fmt(n.sky_median, 3) }}</td>
<td>{{ fmt(n.fwhm_median, 2) }}</td></tr>
{% endfor %}</tbody></table>
{% endblock %}"""


def _fmt(value, digits):
    """A number with `digits` decimals ('' for None/NaN); text and integers as they are."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if value != value else f"{value:.{digits}f}"
    return value


@functools.lru_cache(maxsize=1)
def environment():
    """The jinja2 environment with the report's templates, autoescape on."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.DictLoader({"base.html": _BASE, "night.html": _NIGHT, "frame.html": _FRAME,
                                  "index.html": _INDEX}),
        autoescape=True)
    env.globals.update(fmt=_fmt, flags=flags_text)
    return env
