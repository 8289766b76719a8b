"""The SKY and ZEROPOINTS tables, and the per-frame columns they share."""

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameInfo", "sky_table", "zeropoints_table"]

FIELD_CENTRE_KEYS = (("RADEG", "target_ra_deg"), ("DECDEG", "target_dec_deg"),
                     ("REAL_RA", "real_ra_deg"), ("REAL_DEC", "real_dec_deg"))


@dataclass(frozen=True)
class FrameInfo:
    """Per-frame values repeated in the summary tables.

    fname_raw : the raw path as given; exptime_s : s; mjd_obs : MJD at exposure start;
    obs_night : 'YYYYMMDD'; has_dome : dome flag; header : the raw header (for the optional
    field-centre and DEV_FNUM columns).
    """

    fname_raw: str
    exptime_s: float
    mjd_obs: float
    obs_night: str
    has_dome: bool
    header: object


def _field_centre_columns(header):
    cols = []
    for key, name in FIELD_CENTRE_KEYS:
        if key in header:
            try:
                cols.append((name, float(header[key])))
            except (TypeError, ValueError):
                continue
    return cols


def _dev_fnum_column(header):
    if "DEV_FNUM" in header:
        try:
            return [("DEV_FNUM", int(header["DEV_FNUM"]))]
        except (TypeError, ValueError):
            return []
    return []


def _string_dtype(text):
    return f"S{max(len(text.encode()), 1)}"


def _one_row(columns):
    """A one-row structured array from (name, value[, dtype]) tuples."""
    dtype = [(c[0], c[2] if len(c) > 2 else np.asarray(c[1]).dtype) for c in columns]
    row = np.zeros(1, dtype=dtype)
    for c in columns:
        row[c[0]] = c[1]
    return row


def sky_table(stats, quadrant_rms_adu, info):
    """One-row SKY table from `sky.sky_statistics` output (ADU) and per-second values."""
    t = info.exptime_s
    cols = [("time_seconds", t, "f8"), ("fname_raw", info.fname_raw, _string_dtype(info.fname_raw))]
    for region, suffix in (("full", ""), ("sci", "_sci"), ("quad1", "_quad1"), ("quad2", "_quad2"),
                           ("quad3", "_quad3"), ("quad4", "_quad4")):
        median, _, mean = stats[region]
        cols += [(f"median_adu{suffix}", median, "f4"), (f"median_adu{suffix}_per_s", median / t, "f8"),
                 (f"mean_adu{suffix}", mean, "f4"), (f"mean_adu{suffix}_per_s", mean / t, "f8")]
    cols += [("inter_quad_rms_adu", quadrant_rms_adu, "f4"),
             ("inter_quad_rms_adu_per_s", float(quadrant_rms_adu) / t, "f8"),
             ("mjd_obs", info.mjd_obs, "f8"), ("obs_night", info.obs_night, "S8")]
    cols += [(name, value, "f8") for name, value in _field_centre_columns(info.header)]
    cols += [(name, value, "i8") for name, value in _dev_fnum_column(info.header)]
    cols += [("has_dome", int(info.has_dome), "i8")]
    return _one_row(cols)


def zeropoints_table(rows, info, *, max_zp_radius=None):
    """ZEROPOINTS table from `zeropoints.zeropoint_rows` plus the frame's columns."""
    extra = ([("DEV_FNUM", v, "i8") for _, v in _dev_fnum_column(info.header)]
             + [(name, v, "f8") for name, v in _field_centre_columns(info.header)])
    dtype = [("quadrant", "i8"), ("aper_ind", "i8"), ("zp_adu_per_s", "f8"), ("n_sources_for_zp", "i8"),
             ("time_seconds", "f8"), ("bp_rp_median", "f4"), ("gaia_g_median", "f4"),
             ("robust_sigma_mag", "f8"), ("fname_raw", _string_dtype(info.fname_raw)),
             ("science_fov_only", "i8"), ("mjd_obs", "f8"), ("obs_night", "S8")]
    dtype += [(name, dt) for name, _, dt in extra] + [("has_dome", "i8"), ("max_zp_radius", "i8")]
    table = np.zeros(len(rows), dtype=dtype)
    for key in ("quadrant", "aper_ind", "zp_adu_per_s", "n_sources_for_zp", "bp_rp_median",
                "gaia_g_median", "robust_sigma_mag", "science_fov_only"):
        table[key] = [r[key] for r in rows]
    table["time_seconds"] = info.exptime_s
    table["fname_raw"] = info.fname_raw
    table["mjd_obs"] = info.mjd_obs
    table["obs_night"] = info.obs_night
    for name, value, _ in extra:
        table[name] = value
    table["has_dome"] = int(info.has_dome)
    table["max_zp_radius"] = 99999 if max_zp_radius is None else int(max_zp_radius)
    return table
