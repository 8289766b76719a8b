"""The CATALOG table: Gaia columns, centroids, photometry and the derived per-star columns."""

import numpy as np

__all__ = ["quadrant_of", "catalog_table"]


def quadrant_of(x, y, camera):
    """Quadrant 1..4 of each position (1 upper right, 2 upper left, 3 lower left, 4 lower right)."""
    xc, yc = camera.centre
    left = np.asarray(x) <= xc
    bottom = np.asarray(y) <= yc
    return np.where(bottom, np.where(left, 3, 4), np.where(left, 2, 1)).astype(np.int64)


def _m_inst(flux_adu_per_s):
    """-2.5 log10(flux) with NaN where flux <= 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux_adu_per_s > 0, -2.5 * np.log10(flux_adu_per_s), np.nan)


def catalog_table(stars, centroids, phot, raw, camera, *, exptime_s, has_dome, max_zp_radius=None):
    """Assemble CATALOG in the original's column order.

    Parameters
    ----------
    stars : structured array
        From `gaia.star_list` (Gaia columns, x_gaia_guess, y_gaia_guess).
    centroids : dict
        xcentroid, ycentroid, cmaxshift, qmaxshift, wrong_source_centroid (host arrays).
    phot : dict
        From `photometry.aperture_photometry`.
    raw : callable
        (rows, columns) -> raw uint16 values there (`rawio.RawFrame.values`), for the centroid
        pixel values.
    exptime_s : float
        Exposure time, s.
    has_dome : bool
        Frame's dome flag.
    max_zp_radius : float or None
        Stars farther than this from the centre (pixels) are flagged radius_too_large.
    """
    n = len(stars)
    n_ap = phot["flux_adu"].shape[1]
    xcen, ycen = centroids["xcentroid"], centroids["ycentroid"]
    x_shift = xcen - stars["x_gaia_guess"]
    y_shift = ycen - stars["y_gaia_guess"]
    cmax = centroids["cmaxshift"]
    qmax = centroids["qmaxshift"]
    flux_per_s = phot["flux_adu"] / exptime_s
    bp_rp = (stars["PHOT_BP_MEAN_MAG"] - stars["PHOT_RP_MEAN_MAG"]).astype(np.float32)
    xc, yc = camera.centre
    radius = np.hypot(xcen - xc, ycen - yc)
    ix = np.clip(np.round(xcen).astype(np.int64), 0, camera.nx - 1)
    iy = np.clip(np.round(ycen).astype(np.int64), 0, camera.ny - 1)
    raw_val = raw((iy, ix))

    columns = [(name, stars[name]) for name in stars.dtype.names]
    columns += [
        ("xcentroid", xcen), ("ycentroid", ycen), ("x_shift", x_shift), ("y_shift", y_shift),
        ("cmaxshift", cmax), ("qmaxshift", qmax.astype(np.int64)),
        ("centroid_shift_flag", (np.abs(x_shift) > cmax) | (np.abs(y_shift) > cmax) | (qmax != 0)),
    ]
    for i in range(n_ap):
        columns += [(f"aper_sum_bkgsub_{i}", phot["flux_adu"][:, i]), (f"aper_bkg_{i}", phot["aper_bkg"][:, i])]
    r_in, r_out = camera.annulus_pix
    columns += [
        ("sky_annulus_area_pix", np.full(n, np.pi * (r_out**2 - r_in**2))),
        ("sky_annulus_median", phot["bkg_median"]),
        ("flux_adu", phot["flux_adu"]),
        ("wrong_source_centroid", centroids["wrong_source_centroid"].astype(np.int64)),
        ("BP_RP", bp_rp),
        ("G_PRIME", (stars["PHOT_G_MEAN_MAG"] + np.float32(0.25) * bp_rp).astype(np.float32)),
        ("quadrant", quadrant_of(xcen, ycen, camera)),
        ("min_edge_dist_pix", np.minimum.reduce([xcen + 0.5, ycen + 0.5, camera.nx - 0.5 - xcen,
                                                 camera.ny - 0.5 - ycen])),
        ("flux_adu_per_s", flux_per_s),
        ("m_inst", _m_inst(flux_per_s)),
        ("radius_pix", radius),
        ("in_science_fov", (radius < camera.sci_fov_radius_pix).astype(np.int16)),
        ("radius_too_large", (radius > max_zp_radius if max_zp_radius is not None
                              else np.zeros(n, bool)).astype(np.int16)),
        ("has_dome", np.full(n, int(has_dome), dtype=np.int64)),
        ("centroid_raw_pixel_val", raw_val.astype(np.uint16)),
        ("centroid_pixel_saturated", (raw_val >= camera.saturation_adu).astype(np.int64)),
    ]
    dtype = [(name, np.asarray(v).dtype, np.asarray(v).shape[1:]) for name, v in columns]
    table = np.zeros(n, dtype=dtype)
    for name, v in columns:
        table[name] = v
    return table
