"""Writing a reduced frame (`pipeline.FrameResult`): its files atomically, all or none, then
its telemetry."""

import logging
import os

from .outputs import publish
from .thumbnail import write_thumbnail

__all__ = ["write_outputs", "process_frame", "finish_frame"]

log = logging.getLogger(__name__)


def write_outputs(result, reducer, plot_worker=None):
    """Write the frame's files atomically (all or none); return {kind: path}. With a
    `plotworker.PlotWorker`, the zeropoint checkplot is drawn by it while the FITS files are
    written."""
    from . import fitsout, plots

    o, cam = reducer.options, reducer.camera
    paths = reducer.planned_outputs(result.raw_path, result.obs_night)
    if not paths:
        return {}
    records = fitsout.header_records(result.header, result.header_extra)
    primary = records
    if result.pointing is not None or result.wcs_origin != "given":
        # the WCS the frame was reduced with (refined, solved or given), in the image-like headers
        from .astrometry.pointing import wcs_cards

        primary = fitsout.header_records(result.header, result.header_extra + wcs_cards(result.wcs))
    base = os.path.basename(result.raw_path).removesuffix(".fits")
    streak_table = result.streaks.table if result.streaks is not None else None
    writers = {paths["summary"]: lambda p: fitsout.write_summary(p, records, result.catalog,
                                                                 result.zeropoints, result.sky,
                                                                 streak_table, result.conditions,
                                                                 primary_records=primary)}
    if "detrended" in paths:
        writers[paths["detrended"]] = lambda p: fitsout.write_detrended(p, result.detrended, primary)
    # each plot's stars are selected here, not inside its writer: a writer runs later, and a
    # closure would see whatever a name was last bound to
    cat = result.catalog
    if "zp_plot" in paths:
        zp_stars = plots.zeropoint_plot_stars(cat, cam, sci_fov_only=o.sci_fov_checkplot)
        g_prime = cat["G_PRIME"][zp_stars]
        m_inst = cat["m_inst"][zp_stars, reducer.standard_aperture]
        zps = result.zeropoints
        row = zps[(zps["quadrant"] == 0) & (zps["aper_ind"] == reducer.standard_aperture)
                  & (zps["science_fov_only"] == int(o.sci_fov_checkplot))][0]
        title = f"{base}; aper {reducer.standard_aperture}; {'sci FOV' if o.sci_fov_checkplot else 'full FOV'}"
        if result.conditions is not None:
            full = result.conditions[0]
            title += f"\nFWHM {full['fwhm_arcsec']:.1f}\"; transparency {full['transparency']:.2f}"
        draw = plot_worker.zeropoint_plot if plot_worker is not None else plots.zeropoint_plot
        writers[paths["zp_plot"]] = lambda p: draw(
            p, g_prime, m_inst, row["zp_adu_per_s"], title=title, n_used=int(row["n_sources_for_zp"]),
            aperture_radius_pix=reducer.radii[reducer.standard_aperture])
    if "detrended_plot" in paths:
        segments = result.streaks.segments if o.plot_streaks and result.streaks is not None else ()
        writers[paths["detrended_plot"]] = lambda p: plots.detrended_plot(p, result.detrended, title=base,
                                                                          streaks=segments)
    if "thumbnail" in paths:
        writers[paths["thumbnail"]] = lambda p: write_thumbnail(p, result.thumbnail)
    if "quiver_plot" in paths:
        shifts = cat[plots.quiver_plot_stars(cat, cam)]
        writers[paths["quiver_plot"]] = lambda p: plots.quiver_plot(
            p, shifts["xcentroid"], shifts["ycentroid"], shifts["x_shift"], shifts["y_shift"],
            nx=cam.nx, ny=cam.ny, title=f"{base}; {list(result.wcs_ctype)}")
    settle = None
    if plot_worker is not None and "zp_plot" in paths:  # ask for the plot first: it draws meanwhile
        writers = {paths["zp_plot"]: writers.pop(paths["zp_plot"]), **writers}
        settle = plot_worker.wait
    publish(writers, overwrite=o.overwrite, settle=settle)
    for p in paths.values():
        log.info("wrote %s", p)
    return paths


def process_frame(raw_path, reducer, *, redis_settings=None, plot_worker=None):
    """Reduce one frame, write its outputs (the checkplot through `plot_worker` when given),
    send telemetry when asked.

    Returns (result, paths, telemetry_ok). Telemetry failures are logged, never raised: the
    files are already written by then.
    """
    result = reducer.reduce(raw_path)
    paths, telemetry_ok = finish_frame(result, reducer, redis_settings=redis_settings, plot_worker=plot_worker)
    return result, paths, telemetry_ok


def finish_frame(result, reducer, *, redis_settings=None, plot_worker=None):
    """Write a reduced frame's outputs, then send its telemetry when the options ask for it.

    Returns (paths, telemetry_ok); telemetry failures are logged, never raised.
    """
    from .telemetry import TelemetryError, send_telemetry, telemetry_record

    paths = write_outputs(result, reducer, plot_worker)
    telemetry_ok = True
    if reducer.options.send_redis:
        record = telemetry_record(result.zeropoints, result.sky, result.timestamp,
                                  standard_aperture=reducer.standard_aperture,
                                  sci_inst_name=reducer.options.sci_inst_name, conditions=result.conditions,
                                  pointing=result.pointing)
        try:
            send_telemetry(record, redis_settings)
        except TelemetryError as exc:
            log.error("%s", exc)
            telemetry_ok = False
    return paths, telemetry_ok
