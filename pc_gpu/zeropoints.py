"""Photometric zeropoints per region and aperture from the CATALOG."""

import numpy as np

__all__ = ["zeropoint_stars", "zeropoint", "zeropoint_rows"]


def zeropoint_stars(catalog, camera):
    """Boolean mask of stars fit for zeropoints: unsaturated, raw centre below the camera's
    zeropoint saturation level, no centroid or wrong-source flag, not too far out, finite G/BP/RP."""
    c = catalog
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
    rows = []
    for quadrant in range(5):
        region = good if quadrant == 0 else good & (catalog["quadrant"] == quadrant)
        for aper in range(n_apertures):
            for sci_only in ((0, 1) if quadrant == 0 else (0,)):
                sel = region & (catalog["in_science_fov"] != 0) if sci_only else region
                stars = catalog[sel]
                if len(stars):
                    zp, sig = zeropoint(stars["G_PRIME"], stars["m_inst"][:, aper])
                    bp_rp = np.float32(np.nanmedian(stars["BP_RP"])) if np.isfinite(stars["BP_RP"]).any() else np.float32(np.nan)
                    g_med = np.float32(np.nanmedian(stars["PHOT_G_MEAN_MAG"]))
                else:
                    zp = sig = np.nan
                    bp_rp = g_med = np.float32(np.nan)
                rows.append({"quadrant": quadrant, "aper_ind": aper, "zp_adu_per_s": zp,
                             "n_sources_for_zp": len(stars), "bp_rp_median": bp_rp,
                             "gaia_g_median": g_med, "robust_sigma_mag": sig,
                             "science_fov_only": sci_only})
    return rows
