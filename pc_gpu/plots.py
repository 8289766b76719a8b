"""Checkplots as PNG files: zeropoint, detrended image, centroid-shift quiver.

Each function draws on its own Agg figure and writes to the path it is given (the caller makes
that path atomic); nothing here touches pyplot's global state. The zeropoint and quiver PNGs
record what they show as PNG text entries ("Stars drawn", "Zeropoint", ...). Which catalogue
stars they show is decided by `zeropoint_plot_stars` and `quiver_plot_stars`.
"""

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


def zeropoint_plot(path, g_prime, m_inst, zp, *, title, n_used, aperture_radius_pix):
    """Instrumental mag against Gaia G' for the zeropoint stars, with the line m = G' - zp
    (mag); the PNG's text records the stars drawn, zp and the aperture radius (pixels)."""
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    ok = np.isfinite(g_prime) & np.isfinite(m_inst)
    ax.scatter(g_prime[ok], m_inst[ok], s=4, c="k", edgecolors="none")
    if np.isfinite(zp) and ok.any():
        xs = np.array([np.min(g_prime[ok]) - 0.25, np.max(g_prime[ok]) + 0.25])
        ax.plot(xs, xs - zp, c="r", lw=1, label=f"zp = {zp:.3f}")
        ax.legend(loc="upper left")
    ax.set_xlabel("Gaia G + 0.25 (BP - RP)")
    ax.set_ylabel(f"instrumental mag, r = {aperture_radius_pix:g} pix (-2.5 log10 ADU/s)")
    ax.set_title(f"{title}\n{n_used} stars", fontsize=9)
    fig.savefig(path, format="png", metadata={"Title": title, "Stars drawn": str(int(ok.sum())),
                                              "Zeropoint": f"{zp:.6f}",
                                              "Aperture radius": f"{aperture_radius_pix:g}"})


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
