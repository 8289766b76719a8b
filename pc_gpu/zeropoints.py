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
    absolute residuals at the 16th and 84th percentiles (NaN, NaN when nothing is finite)."""
    diff = np.asarray(g_prime, np.float64) - np.asarray(m_inst, np.float64)
    n = len(diff)
    finite = diff[~np.isnan(diff)]
    nf = len(finite)
    if nf == 0:
        return np.nan, np.nan
    zp = float(np.median(finite))
    resid = np.sort(finite - zp)
    lo = max(_py_round(0.16 * nf), 0)
    hi = min(_py_round(0.84 * nf), n - 1, nf - 1)
    return zp, (abs(resid[lo]) + abs(resid[hi])) / 2.0


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
        for aper in range(n_apertures):
            for sci_only, idx in selections:
                zp, sig = zeropoint(g_prime[idx], m_inst[idx, aper]) if len(idx) else (np.nan, np.nan)
                rows.append({"quadrant": quadrant, "aper_ind": aper, "zp_adu_per_s": zp,
                             "n_sources_for_zp": len(idx), "bp_rp_median": medians[sci_only][0],
                             "gaia_g_median": medians[sci_only][1], "robust_sigma_mag": sig,
                             "science_fov_only": sci_only})
    return rows
