"""Sky statistics of the detrended image: full frame, science field, four quadrants."""

import numpy as np

__all__ = ["sky_regions", "sky_statistics", "inter_quadrant_rms", "REGION_NAMES"]

REGION_NAMES = ("full", "sci", "quad1", "quad2", "quad3", "quad4")


def sky_regions(camera, backend):
    """The six sky regions of `REGION_NAMES`, prepared once for the backend's kernels: the
    whole image, the science-field circle (radius <= camera.sci_fov_radius_pix about the image
    centre, inclusive) and quadrants 1..4."""
    xc, yc = camera.centre
    y, x = np.ogrid[: camera.ny, : camera.nx]
    inside = (x - xc) ** 2 + (y - yc) ** 2 <= camera.sci_fov_radius_pix ** 2
    specs = [None, np.flatnonzero(inside.ravel())]
    for rows, cols in camera.quadrant_slices():
        r0, r1, _ = rows.indices(camera.ny)
        c0, c1, _ = cols.indices(camera.nx)
        specs.append((r0, r1, c0, c1))
    return backend.kernels.prepare_sky_regions(camera.shape, specs, to_host=backend.to_host)


def sky_statistics(image, regions, backend):
    """{region: (median, sigma, clipped_mean)} in ADU, from exact order statistics.

    median = v[round(0.5 n)], sigma = (v[round(0.84 n)] - v[round(0.16 n)]) / 2 over the sorted
    values v, clipped mean = mean of values within median +- 5 sigma.
    """
    stats = backend.kernels.sky_statistics_regions(image, regions)
    return {name: (float(m), float(s), float(c)) for name, (m, s, c, _) in zip(REGION_NAMES, stats)}


def inter_quadrant_rms(quadrant_medians):
    """RMS (float32, ADU) of the four quadrant medians about their median."""
    q = np.asarray(quadrant_medians, dtype=np.float32)
    d = q - np.float32(np.median(q))
    return np.float32(np.sqrt(np.mean(d * d)))
