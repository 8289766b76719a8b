"""Where the camera points: one record per frame from its final WCS and the header pointing.

`pointing_record` is the one place these numbers are made; the summary header
(`header_cards`), the telemetry and any per-frame table take them from it.
"""

import math

import numpy as np

from .tan import tangent_plane

__all__ = ["POINTING_FIELDS", "pointing_record", "header_cards", "table_columns", "wcs_cards", "wcs_rotation_scale"]

# record field -> (FITS keyword, comment); the order is the record's
POINTING_FIELDS = {
    "wcs_origin": ("WCSORIG", "WCS: given .wcs, refined, or solved by pc_gpu"),
    "wcs_fit_order": ("WCSORDER", "WCS fit order: 1 TAN, 2-3 SIP, 0 none"),
    "wcs_n_stars": ("WCSNSTAR", "Gaia stars in the WCS fit"),
    "wcs_rms_ra_arcsec": ("WCSRMSRA", "[arcsec] WCS fit RMS along RA*cos(Dec)"),
    "wcs_rms_dec_arcsec": ("WCSRMSDE", "[arcsec] WCS fit RMS along Dec"),
    "field_ra_deg": ("FIELDRA", "[deg] RA of the image centre"),
    "field_dec_deg": ("FIELDDEC", "[deg] Dec of the image centre"),
    "field_rotation_deg": ("FIELDROT", "[deg] sky turn, CCW from N up E left"),
    "pixel_scale_arcsec": ("PIXSCALE", "[arcsec/pix] pixel scale at CRPIX"),
    "pointing_offset_ra_arcsec": ("PNTOFFRA", "[arcsec] (FIELDRA - RADEG) cos(Dec)"),
    "pointing_offset_dec_arcsec": ("PNTOFFDE", "[arcsec] FIELDDEC - DECDEG"),
}


def wcs_rotation_scale(wcs):
    """(rotation, deg; pixel scale, arcsec/pix) of a WCS's linear part.

    Rotation is the angle the sky is turned counter-clockwise on the image from North up,
    East left (the simulator's `make_wcs` convention), in (-180, 180].
    """
    cd = wcs.pixel_scale_matrix
    rotation = math.degrees(math.atan2(cd[0, 1] + cd[1, 0], cd[1, 1] - cd[0, 0]))
    return rotation, 3600.0 * math.sqrt(abs(np.linalg.det(cd)))


def _header_float(header, key):
    try:
        value = float(header.get(key))
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def pointing_record(wcs, camera, header, *, origin, fit_order=0, ra=(), dec=(), x=(), y=()):
    """The frame's pointing numbers as one dict (keys of `POINTING_FIELDS`).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        The WCS the frame was reduced with.
    camera : pc_gpu.camera.Camera
        Gives the image centre.
    header : mapping
        Raw header: RADEG, DECDEG (the telescope's pointing, deg) when present.
    origin : str
        'given' or 'refined' (a solver adds 'solved').
    fit_order : int
        Polynomial order of the fit, 0 when the WCS was not fitted.
    ra, dec, x, y : array_like
        The stars the WCS is judged on: catalogue positions (deg) and measured pixels; the
        RMS is NaN without any.
    """
    cx, cy = camera.centre
    field_ra, field_dec = (float(c[0]) for c in wcs.all_pix2world([cx], [cy], 0))
    rotation, scale = wcs_rotation_scale(wcs)
    rms_ra = rms_dec = math.nan
    if len(ra):
        wra, wdec = wcs.all_pix2world(np.asarray(x, np.float64), np.asarray(y, np.float64), 0)
        xi_w, eta_w = tangent_plane(wra, wdec, field_ra, field_dec)
        xi_c, eta_c = tangent_plane(np.asarray(ra, np.float64), np.asarray(dec, np.float64), field_ra, field_dec)
        rms_ra = 3600.0 * float(np.sqrt(np.mean((xi_w - xi_c) ** 2)))
        rms_dec = 3600.0 * float(np.sqrt(np.mean((eta_w - eta_c) ** 2)))
    ra_tel, dec_tel = _header_float(header, "RADEG"), _header_float(header, "DECDEG")
    d_ra = ((field_ra - ra_tel + 180.0) % 360.0 - 180.0) * math.cos(math.radians(field_dec)) * 3600.0
    return {
        "wcs_origin": origin, "wcs_fit_order": int(fit_order), "wcs_n_stars": int(len(ra)),
        "wcs_rms_ra_arcsec": rms_ra, "wcs_rms_dec_arcsec": rms_dec,
        "field_ra_deg": field_ra, "field_dec_deg": field_dec, "field_rotation_deg": rotation,
        "pixel_scale_arcsec": scale, "pointing_offset_ra_arcsec": d_ra,
        "pointing_offset_dec_arcsec": (field_dec - dec_tel) * 3600.0,
    }


def header_cards(record):
    """(keyword, value, comment) cards of a `pointing_record`; NaN values are left out (FITS
    headers cannot hold them)."""
    cards = []
    for name, (key, comment) in POINTING_FIELDS.items():
        value = record[name]
        if isinstance(value, float) and not math.isfinite(value):
            continue
        cards.append((key, value, comment))
    return cards


def table_columns(record):
    """(name, value, dtype) of a `pointing_record`, as frame-level columns of a table
    (the summary's CONDITIONS)."""
    columns = []
    for name in POINTING_FIELDS:
        value = record[name]
        if isinstance(value, str):
            dtype = f"S{max(len(value), 1)}"
        else:
            dtype = "i8" if isinstance(value, int) else "f8"
        columns.append((name, value, dtype))
    return columns


def wcs_cards(wcs):
    """(keyword, value, comment) cards of a WCS, SIP included (comments cut to fit a card)."""
    header = wcs.to_header(relax=True)
    return [(card.keyword, card.value, card.comment[:36]) for card in header.cards
            if card.keyword not in ("COMMENT", "HISTORY", "")]
