"""Photometric zeropoints per region and aperture from the CATALOG."""

import numpy as np

__all__ = ["zeropoint_stars", "zeropoint", "zeropoint_rows"]


def zeropoint_stars(catalog, camera):
    """Boolean mask of stars fit for zeropoints: unsaturated, raw centre below the camera's
    zeropoint saturation level, no centroid or wrong-source flag, not too far out, finite G/BP/RP,
    and not on a satellite streak (when the catalogue has `on_streak`)."""
    c = catalog
    good = _usable(c, camera)
    if "on_streak" in c.dtype.names:
        good &= c["on_streak"] == 0
    return good


def _usable(c, camera):
    return ((c["centroid_pixel_saturated"] == 0)
            & (c["centroid_raw_pixel_val"] < camera.zp_saturation_adu)
            & ~c["centroid_shift_flag"].astype(bool)
            & (c["wrong_source_centroid"] == 0)
            & (c["radius_too_large"] == 0)
            & np.isfinite(c["PHOT_G_MEAN_MAG"]) & np.isfinite(c["PHOT_BP_MEAN_MAG"])
            & np.isfinite(c["PHOT_RP_MEAN_MAG"]))


def _py_round(x):
    """Round half to even, as Python's round, to an int."""
    return int(round(float(x)))


def zeropoint(g_prime, m_inst):
    """(zp, robust_sigma) in mag: zp = median of finite G' - m_inst; robust sigma = mean of the
    absolute residuals at the 16th and 84th percentiles (NaN, NaN when nothing is finite).

    With `m_inst` of shape (n, k) (k apertures), each is an array of k, one per column.
    """
    m = np.asarray(m_inst, np.float64)
    diff = np.asarray(g_prime, np.float64)[:, None] - m.reshape(len(m), -1)
    n, k = diff.shape
    ordered = np.sort(diff, axis=0)  # NaN last
    nf = (~np.isnan(diff)).sum(axis=0)
    zp, sigma = np.full(k, np.nan), np.full(k, np.nan)
    for j in np.flatnonzero(nf):
        col, count = ordered[:, j], int(nf[j])
        half = count // 2
        zp[j] = col[half] if count % 2 else (col[half - 1] + col[half]) / 2.0  # np.median's arithmetic
        # sorted(finite - zp) is the sorted column minus zp: subtracting one value keeps the order
        lo = max(_py_round(0.16 * count), 0)
        hi = min(_py_round(0.84 * count), n - 1, count - 1)
        sigma[j] = (abs(col[lo] - zp[j]) + abs(col[hi] - zp[j])) / 2.0
    if m.ndim == 1:
        return float(zp[0]), float(sigma[0])
    return zp, sigma


def zeropoint_rows(catalog, camera, *, n_apertures):
    """Zeropoint rows ordered by quadrant (0 = whole image, then 1..4), aperture, and for
    quadrant 0 the science-field-only row after each whole-image row.

    Each row is a dict: quadrant, aper_ind, zp_adu_per_s, n_sources_for_zp, bp_rp_median,
    gaia_g_median, robust_sigma_mag, science_fov_only. A region without a usable star gives
    NaN values and n_sources_for_zp = 0.
    """
    good = zeropoint_stars(catalog, camera)
    g_prime, m_inst = catalog["G_PRIME"], catalog["m_inst"]
    bp_rp, gmag = catalog["BP_RP"], catalog["PHOT_G_MEAN_MAG"]
    in_sci = catalog["in_science_fov"] != 0
    rows = []
    for quadrant in range(5):
        region = good if quadrant == 0 else good & (catalog["quadrant"] == quadrant)
        selections = [(0, np.flatnonzero(region))]
        if quadrant == 0:
            selections.append((1, np.flatnonzero(region & in_sci)))
        medians = {}
        for sci_only, idx in selections:
            if len(idx):
                finite_bp_rp = bp_rp[idx][np.isfinite(bp_rp[idx])]
                medians[sci_only] = (np.float32(np.median(finite_bp_rp)) if len(finite_bp_rp) else np.float32(np.nan),
                                     np.float32(np.nanmedian(gmag[idx])))
            else:
                medians[sci_only] = (np.float32(np.nan), np.float32(np.nan))
        nan = np.full(n_apertures, np.nan)
        fits = {sci_only: zeropoint(g_prime[idx], m_inst[idx, :n_apertures]) if len(idx) else (nan, nan)
                for sci_only, idx in selections}
        for aper in range(n_apertures):
            for sci_only, idx in selections:
                rows.append({"quadrant": quadrant, "aper_ind": aper, "zp_adu_per_s": fits[sci_only][0][aper],
                             "n_sources_for_zp": len(idx), "bp_rp_median": medians[sci_only][0],
                             "gaia_g_median": medians[sci_only][1], "robust_sigma_mag": fits[sci_only][1][aper],
                             "science_fov_only": sci_only})
    return rows
