"""Web report of an output tree: a page per night, per frame and an index (`pc-report`).

`build_report` writes static pages under ``OUT/report/`` (Bokeh plots with their JavaScript
inline, jinja2 templates with autoescape), redoing only nights whose outputs changed;
`pc_gpu.report.live.LiveReport` keeps them current for `pc-realtime --report`.
"""

from .build import REPORT_DIR, BuildResult, build_report

__all__ = ["build_report", "BuildResult", "REPORT_DIR"]
