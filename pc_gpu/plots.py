"""Checkplots as PNG files: zeropoint, detrended image, centroid-shift quiver.

Each function draws on its own Agg figure and writes to the path it is given (the caller makes
that path atomic); nothing here touches pyplot's global state. The zeropoint and quiver PNGs
record what they show as PNG text entries ("Stars drawn", "Zeropoint", ...). Which catalogue
stars they show is decided by `zeropoint_plot_stars` and `quiver_plot_stars`.
"""

import threading

import numpy as np

from .zeropoints import zeropoint_stars

__all__ = ["zeropoint_plot_stars", "quiver_plot_stars", "zeropoint_plot", "detrended_plot",
           "quiver_plot"]


def zeropoint_plot_stars(catalog, camera, *, sci_fov_only=False):
    """Boolean mask of the CATALOG stars drawn on -zp.png: the zeropoint stars
    (`zeropoints.zeropoint_stars`), and with `sci_fov_only` only those in the science field."""
    selected = zeropoint_stars(catalog, camera)
    if sci_fov_only:
        selected &= catalog["in_science_fov"] != 0
    return selected


def quiver_plot_stars(catalog, camera):
    """Boolean mask of the CATALOG stars whose centroid shift is drawn on -quiver.png: centroid
    pixel not saturated, raw centre below `camera.zp_saturation_adu` (ADU), no centroid-shift
    flag and not a wrong source."""
    c = catalog
    return ((c["centroid_pixel_saturated"] == 0) & (c["centroid_raw_pixel_val"] < camera.zp_saturation_adu)
            & ~c["centroid_shift_flag"].astype(bool) & (c["wrong_source_centroid"] == 0))


def _figure(width_in, height_in):
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


class _ZeropointCanvas:
    """One zeropoint figure and its artists, built once per thread and redrawn for every frame
    (building the axes, ticks and legend anew cost more than drawing them)."""

    def __init__(self):
        self.fig = _figure(6, 5)
        self.ax = self.fig.add_subplot()
        # markers of one Line2D: Agg stamps one marker image per star, faster than a scatter
        (self.stars,) = self.ax.plot([], [], ls="none", marker="o", ms=2.0, mfc="k", mew=0.0)
        (self.line,) = self.ax.plot([], [], c="r", lw=1)
        self.legend = self.ax.legend([self.line], ["zp"], loc="upper left")
        self.ax.set_xlabel("Gaia G + 0.25 (BP - RP)")

    def draw(self, path, g_prime, m_inst, zp, *, title, n_used, aperture_radius_pix):
        ax = self.ax
        ok = np.isfinite(g_prime) & np.isfinite(m_inst)
        self.stars.set_data(g_prime[ok], m_inst[ok])
        with_line = bool(np.isfinite(zp) and ok.any())
        if with_line:
            xs = np.array([np.min(g_prime[ok]) - 0.25, np.max(g_prime[ok]) + 0.25])
            self.line.set_data(xs, xs - zp)
            self.legend.get_texts()[0].set_text(f"zp = {zp:.3f}")
        else:
            self.line.set_data([], [])
        self.line.set_visible(with_line)
        self.legend.set_visible(with_line)
        if ok.any():
            ax.relim()
            ax.autoscale()
        else:  # nothing to scale to: fixed limits, whatever the figure showed before
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(0.0, 1.0)
        ax.set_ylabel(f"instrumental mag, r = {aperture_radius_pix:g} pix (-2.5 log10 ADU/s)")
        # y given: the title is not moved clear of top-axis decorations (there are none), which
        # measured every tick label again (~7 ms of ~45)
        ax.set_title(f"{title}\n{n_used} stars", fontsize=9, y=1.0)
        self.fig.savefig(path, format="png", pil_kwargs={"compress_level": _PNG_COMPRESSION},
                         metadata={"Title": title, "Stars drawn": str(int(ok.sum())), "Zeropoint": f"{zp:.6f}",
                                   "Aperture radius": f"{aperture_radius_pix:g}"})


_PNG_COMPRESSION = 1   # zlib level: PIL's default 6 took 1.5x as long for files ~12% smaller
_CANVASES = threading.local()


def zeropoint_plot(path, g_prime, m_inst, zp, *, title, n_used, aperture_radius_pix):
    """Instrumental mag against Gaia G' for the zeropoint stars, with the line m = G' - zp
    (mag); the PNG's text records the stars drawn, zp and the aperture radius (pixels).
    Each thread draws on its own figure, kept between calls."""
    canvas = getattr(_CANVASES, "zeropoint", None)
    if canvas is None:
        canvas = _CANVASES.zeropoint = _ZeropointCanvas()
    canvas.draw(path, np.asarray(g_prime, dtype=np.float64), np.asarray(m_inst, dtype=np.float64), zp,
                title=title, n_used=n_used, aperture_radius_pix=aperture_radius_pix)


def detrended_plot(path, image, *, title, streaks=()):
    """The detrended image on a robust grey scale, downsampled; optional streak segments
    ((x0, y0, x1, y1) in pixels) overplotted."""
    step = max(1, image.shape[1] // 1100)
    small = image[::step, ::step]
    lo, hi = np.percentile(small, [5, 99.5])
    fig = _figure(small.shape[1] / 100 + 0.5, small.shape[0] / 100 + 0.6)
    ax = fig.add_axes([0.0, 0.0, 1.0, 0.95])
    ax.imshow(small, origin="lower", cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest",
              extent=(-0.5, image.shape[1] - 0.5, -0.5, image.shape[0] - 0.5))
    for x0, y0, x1, y1 in streaks:
        ax.plot([x0, x1], [y0, y1], c="r", lw=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.savefig(path, format="png")


def quiver_plot(path, x, y, dx, dy, *, nx, ny, title):
    """Centroid shifts (measured minus Gaia prediction, pixels) as arrows over the frame; the
    PNG's text records the number of arrows ("Stars drawn")."""
    fig = _figure(8, 6.2)
    ax = fig.add_subplot()
    ok = np.isfinite(dx) & np.isfinite(dy)
    if ok.any():
        q = ax.quiver(x[ok], y[ok], dx[ok], dy[ok], angles="xy", scale_units="xy", scale=0.01, width=0.002)
        ax.quiverkey(q, 0.85, 1.03, 1.0, "1 pix", labelpos="E")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pix)")
    ax.set_ylabel("y (pix)")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, format="png", metadata={"Title": title, "Stars drawn": str(int(ok.sum()))})
