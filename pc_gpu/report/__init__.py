"""Web report of an output tree: a page per night, per frame and an index (`pc-report`).

`build_report` writes static pages under ``OUT/report/`` (Bokeh plots with their JavaScript
inline, jinja2 templates with autoescape), redoing only nights whose outputs changed;
`LiveReport` rebuilds them in a background thread for `pc-realtime --report`.
"""

from .build import REPORT_DIR, BuildResult, build_report
from .live import LiveReport

__all__ = ["build_report", "BuildResult", "LiveReport", "REPORT_DIR"]
