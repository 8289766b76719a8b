"""Observing conditions of a frame: per-star flux errors and PSF shape, and the CONDITIONS table.

Per star (new CATALOG columns, after the original's): the flux error of every aperture from
the source's and the sky's shot noise (camera gain), the read noise of its quadrant, the dark
current and the error of the annulus median, all through the flat field at the star; SNR; the
error of m_inst; adaptive second moments (one kernel source for CPU and CUDA) turned into a PSF
FWHM, ellipticity and position angle for the stars fit to measure the image quality.

Per region (full frame, quadrants 1-4, science field; one row each): FWHM (pix, arcsec),
ellipticity and its position angle from the median of the stars' moments, sky in mag/arcsec^2
in the G' system, an error-weighted zeropoint and its error (beside the seed's median, which
ZEROPOINTS keeps), transparency against the camera's clear-sky zeropoint, and the 5-sigma
point-source limit in the standard aperture.
"""

import math

import numpy as np

from .zeropoints import zeropoint_stars

__all__ = ["REGIONS", "TELEMETRY_FIELDS", "flux_noise_terms", "star_errors", "psf_moments",
           "zeropoint_weighted", "aperture_corrections", "conditions_table", "frame_values",
           "measure_conditions"]

MAG_PER_LN = 2.5 / math.log(10.0)
GAUSS_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))

REGIONS = (("full", 0, 0), ("quad1", 1, 0), ("quad2", 2, 0), ("quad3", 3, 0), ("quad4", 4, 0),
           ("sci", 0, 1))
"""CONDITIONS rows: (region, quadrant, science_fov_only), as in ZEROPOINTS."""

TELEMETRY_FIELDS = ("fwhm_arcsec", "ellipticity", "transparency", "sky_mag_arcsec2", "zp_err",
                    "lim_mag_5sigma")
"""Frame values (the full-frame row) added to the telemetry after the seed's fields."""

PSF_MIN_SNR = 30.0
"""Stars measured for the image quality have at least this SNR in the standard aperture."""
PSF_MAX_STARS = 150
"""...and are at most this many, those of highest SNR (the cost stays a few ms)."""
PSF_ISOLATION_PIX = 8.0
"""...and have no catalogue neighbour within this distance (pixels) brighter than G + 4."""
_ISOLATION_K = 6
"""Neighbours fetched at once per candidate for the isolation test (more only where needed)."""
ZP_MAX_ERR_MAG = 0.2
"""The weighted zeropoint uses stars whose predicted m_inst error is below this (mag)."""


def flux_noise_terms(phot, catalog, camera, calibrations, backend, *, exptime_s, radii, flatfield):
    """The two parts of each star's flux variance that do not depend on its flux.

    var(flux_adu) = max(flux_adu, 0) * per_adu + background, in detrended ADU^2: per_adu =
    1 / (gain * flat) is the source's shot noise per ADU; background (n, n_radii) = A s^2 +
    A^2 (pi / 2) s^2 / n_annulus, with A = pi r^2 the aperture area, s^2 = ((B flat + dark t) /
    gain + read_noise^2) / flat^2 the variance of one detrended sky pixel (B the annulus median,
    flat and dark at the star's pixel, the read noise of its quadrant) and the last term the
    variance of the annulus median.

    Returns (per_adu (n,), background (n, n_radii)).
    """
    n = len(catalog)
    ix = np.clip(np.round(catalog["xcentroid"]).astype(np.int64), 0, camera.nx - 1)
    iy = np.clip(np.round(catalog["ycentroid"]).astype(np.int64), 0, camera.ny - 1)
    flat = backend.to_host(calibrations.flat[backend.asarray(iy), backend.asarray(ix)]).astype(np.float64) \
        if flatfield and n else np.ones(n)
    dark = backend.to_host(calibrations.dark[backend.asarray(iy), backend.asarray(ix)]).astype(np.float64) \
        if n else np.zeros(n)
    flat = np.where(flat > 0, flat, 1.0)
    read = np.asarray(camera.read_noise_adu, np.float64)[catalog["quadrant"] - 1]
    gain = camera.gain_e_per_adu
    sky = np.nan_to_num(np.maximum(phot["bkg_median"], 0.0))
    s2 = ((sky * flat + np.maximum(dark, 0.0) * exptime_s) / gain + read ** 2) / flat ** 2
    area = np.pi * np.asarray(radii, np.float64) ** 2
    n_ann = np.maximum(phot["n_annulus"], 1).astype(np.float64)
    background = s2[:, None] * (area[None, :] + area[None, :] ** 2 * (np.pi / 2) / n_ann[:, None])
    return 1.0 / (gain * flat), background


def star_errors(flux_adu, per_adu, background):
    """(flux_adu_err (ADU), snr, m_inst_err (mag; NaN where flux <= 0)), each (n, n_radii)."""
    err = np.sqrt(np.maximum(flux_adu, 0.0) * per_adu[:, None] + background)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux_adu / err
        m_err = np.where(flux_adu > 0, MAG_PER_LN / snr, np.nan)
    return err, snr, m_err


def psf_moments(image, catalog, good, bkg, snr, backend):
    """Adaptive moments of the stars fit for image quality, with the pixel's 1/12 pix^2
    removed.

    Stars: `good` (usable for zeropoints), SNR >= `PSF_MIN_SNR` in the standard aperture, no
    catalogue neighbour within `PSF_ISOLATION_PIX` brighter than G + 4, at most
    `PSF_MAX_STARS` of them (highest SNR).

    Returns (cxx, cyy, cxy) in pixels^2 (n,), NaN for the stars not measured or failed.
    """
    from scipy.spatial import cKDTree

    n = len(catalog)
    out = np.full((3, n), np.nan)
    if n == 0:
        return out
    cand = good & (snr >= PSF_MIN_SNR) & np.isfinite(bkg)
    xy = np.column_stack([catalog["xcentroid"], catalog["ycentroid"]])
    g = catalog["PHOT_G_MEAN_MAG"].astype(np.float64)
    idx = np.flatnonzero(cand)
    if len(idx):
        # a candidate is crowded by any other star within the radius brighter than its G + 4
        # (NaN G read as 0): the nearest few, then all of them where those fill the radius
        g = np.nan_to_num(g, nan=0.0)
        tree = cKDTree(xy, balanced_tree=False, compact_nodes=False)  # quicker to build, as exact
        dist, near = tree.query(xy[idx], k=_ISOLATION_K,
                                distance_upper_bound=np.nextafter(PSF_ISOLATION_PIX, np.inf))
        found = dist <= PSF_ISOLATION_PIX
        crowded = (found & (near != idx[:, None])
                   & (g[np.minimum(near, n - 1)] < g[idx, None] + 4.0)).any(axis=1)
        for i in np.flatnonzero(np.isfinite(dist[:, -1])):
            others = np.asarray(tree.query_ball_point(xy[idx[i]], PSF_ISOLATION_PIX), np.int64)
            crowded[i] = ((others != idx[i]) & (g[others] < g[idx[i]] + 4.0)).any()
        idx = idx[~crowded]
    if len(idx) > PSF_MAX_STARS:
        idx = idx[np.argsort(-snr[idx], kind="stable")[:PSF_MAX_STARS]]
    if len(idx) == 0:
        return out
    moments, status = backend.kernels.psf_moments(
        image, backend.asarray(np.ascontiguousarray(xy[idx, 0])), backend.asarray(np.ascontiguousarray(xy[idx, 1])),
        backend.asarray(np.ascontiguousarray(bkg[idx], dtype=np.float64)))
    moments, status = backend.to_host(moments), backend.to_host(status)
    ok = status == 0
    pixel = 1.0 / 12.0
    out[0, idx[ok]] = moments[ok, 2] - pixel
    out[1, idx[ok]] = moments[ok, 3] - pixel
    out[2, idx[ok]] = moments[ok, 4]
    return out


def _shape(cxx, cyy, cxy):
    """(fwhm_pix, ellipticity 1 - b/a, position angle deg from +x towards +y in [0, 180)) of
    Gaussian covariances (arrays, NaN where not positive definite)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        det = cxx * cyy - cxy ** 2
        fwhm = np.where(det > 0, GAUSS_FWHM * np.sqrt(np.sqrt(np.where(det > 0, det, 1.0))), np.nan)
        trace = cxx + cyy
        chi = np.hypot(cxx - cyy, 2 * cxy) / trace
        ell = np.where(det > 0, 1.0 - np.sqrt(np.clip((1 - chi) / (1 + chi), 0, 1)), np.nan)
        pa = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180.0
    return fwhm, ell, np.where(det > 0, pa, np.nan)


def _median(values):
    """np.median of a non-empty 1-D array, the same value to the bit (NaN when it holds one),
    without np.median's overhead (a few 10 us a call, ~70 calls a frame)."""
    n = len(values)
    h = n // 2
    part = np.partition(values, [h, -1] if n % 2 else [h - 1, h, -1])
    if np.isnan(part[-1]):
        return math.nan
    return float(part[h]) if n % 2 else float((part[h - 1] + part[h]) / 2)


def _lower_half(values):
    """values < np.percentile(values, 50) (finite 1-D values; the same threshold to the bit:
    numpy's linear interpolation between the two middle values)."""
    n = len(values)
    lo = (n - 1) // 2
    hi = min(lo + 1, n - 1)
    part = np.partition(values, [lo, hi])
    a, b = part[lo], part[hi]
    threshold = b - (b - a) * 0.5 if n % 2 == 0 else a
    return values < threshold


def _weighted_median(values, weights):
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    c = np.cumsum(w)
    return float(v[np.searchsorted(c, 0.5 * c[-1])])


def zeropoint_weighted(g_prime, m_inst, per_adu, background, exptime_s, zp_guess):
    """Error-weighted zeropoint of one region and aperture: (zp, zp_err, n_used), mag.

    Each star's m_inst error is predicted from its catalogue flux at `zp_guess` (never from
    its measured flux, whose noise would then set its weight); stars predicted better than
    `ZP_MAX_ERR_MAG` are kept (so that none is lost to a flux <= 0, which biases the seed's
    median bright). The zeropoint is the median of G' - m_inst weighted by 1 / (sigma^2 +
    sigma_int^2), sigma_int the scatter the errors do not explain; its error is sqrt(pi / 2)
    times the scatter of the normalised residuals (>= 1) over sqrt(sum of weights).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        predicted = 10.0 ** (-0.4 * (np.asarray(g_prime, np.float64) - zp_guess)) * exptime_s
        sigma = MAG_PER_LN * np.sqrt(predicted * per_adu + background) / predicted
    resid = np.asarray(g_prime, np.float64) - np.asarray(m_inst, np.float64)
    use = np.isfinite(resid) & (sigma < ZP_MAX_ERR_MAG)
    n = int(use.sum())
    if n == 0 or not np.isfinite(zp_guess):
        return math.nan, math.nan, 0
    resid, sigma = resid[use], sigma[use]
    sharp = _lower_half(sigma)
    sharp = sharp if sharp.sum() >= 5 else np.ones(n, bool)
    centre = _median(resid[sharp])
    spread = 1.4826 * _median(np.abs(resid[sharp] - centre))
    sigma_int2 = max(spread ** 2 - _median(sigma[sharp] ** 2), 0.0)
    w = 1.0 / (sigma ** 2 + sigma_int2)
    zp = _weighted_median(resid, w)
    scale = max(1.4826 * _median(np.abs(resid - zp) * np.sqrt(w)), 1.0) if n > 2 else 1.0
    return zp, math.sqrt(math.pi / 2) * scale / math.sqrt(float(w.sum())), n


def _limit_mag(zp, per_adu, background, exptime_s):
    """5-sigma point-source limit (mag) from a median star's noise terms in one aperture."""
    if not (np.isfinite(zp) and np.isfinite(per_adu) and np.isfinite(background)):
        return math.nan
    flux = 0.5 * (25.0 * per_adu + math.sqrt((25.0 * per_adu) ** 2 + 100.0 * background))
    return zp - 2.5 * math.log10(flux / exptime_s)


def conditions_table(catalog, sky, zeropoints, camera, *, good, standard_aperture, per_adu, background,
                     aper_corr, exptime_s, pixel_area_arcsec2, frame_columns=()):
    """The CONDITIONS table, one row per `REGIONS` entry.

    Columns: region, quadrant, science_fov_only; fwhm_pix and fwhm_arcsec (the median of the
    n_psf_stars' FWHM), ellipticity (1 - b/a) and psf_pa_deg (major axis, deg from +x towards
    +y) of their median moments;
    sky_adu_per_s (SKY's median) and sky_mag_arcsec2 (G' mag/arcsec^2); zp, zp_err, zp_median
    (the seed's estimator) and n_zp_stars in the standard aperture (aper_ind); aper_corr_mag,
    the flux-weighted aperture correction of the region's PSF stars (`_aperture_correction`;
    the frame's where it has none) to the camera's largest aperture, which holds nearly all of
    a star's light; zp_total = zp +
    aper_corr_mag, for the sky brightness and transparency = 10^(-0.4 (camera.nominal_zp -
    zp_total));
    lim_mag_5sigma, the G' of a point source with SNR 5 in the standard aperture; then
    `frame_columns`.

    Parameters
    ----------
    catalog : structured array
        CATALOG with the new columns (`measure_conditions`).
    sky, zeropoints : structured arrays
        The one-row SKY table and ZEROPOINTS (for the seed's median).
    good : bool array
        The stars usable for zeropoints (`zeropoints.zeropoint_stars`).
    standard_aperture : int
        Index of the standard aperture in the catalogue's vector columns.
    per_adu, background : arrays
        From `flux_noise_terms`.
    aper_corr : array (n,)
        Per PSF star, 2.5 log10 of its flux in the camera's largest aperture over that in the
        standard one, mag (NaN for the other stars).
    pixel_area_arcsec2 : float
        Area of a pixel on the sky at the image centre, arcsec^2.
    frame_columns : sequence of (name, value, dtype)
        Frame-level columns repeated on every row, after the others.
    """
    in_sci = catalog["in_science_fov"] != 0
    k = standard_aperture
    g_prime, m_inst = catalog["G_PRIME"], catalog["m_inst"][:, k]
    has_corr = np.isfinite(aper_corr)
    corr_weight = np.where(has_corr, catalog["flux_adu"][:, k], 0.0)
    frame_corr = _aperture_correction(aper_corr, corr_weight, has_corr)
    cxx, cyy, cxy, fwhm_pix = (catalog[name] for name in ("psf_cxx", "psf_cyy", "psf_cxy", "fwhm_pix"))
    psf = np.isfinite(cxx)
    background_k = background[:, k]
    quadrants = catalog["quadrant"]
    dtype = [("region", "S5"), ("quadrant", "i8"), ("science_fov_only", "i8"), ("fwhm_pix", "f8"),
             ("fwhm_arcsec", "f8"), ("ellipticity", "f8"), ("psf_pa_deg", "f8"), ("n_psf_stars", "i8"),
             ("sky_adu_per_s", "f8"), ("sky_mag_arcsec2", "f8"), ("zp", "f8"), ("zp_err", "f8"),
             ("zp_median", "f8"), ("aper_corr_mag", "f8"), ("zp_total", "f8"), ("transparency", "f8"),
             ("lim_mag_5sigma", "f8"), ("n_zp_stars", "i8"), ("aper_ind", "i8")]
    dtype += [(name, dt) for name, _, dt in frame_columns]
    table = np.zeros(len(REGIONS), dtype=dtype)
    scale = math.sqrt(pixel_area_arcsec2)
    sky_keys = {"full": "", "sci": "_sci", **{f"quad{q}": f"_quad{q}" for q in range(1, 5)}}
    for row, (region, quadrant, sci_only) in zip(table, REGIONS):
        inside = np.ones(len(catalog), bool) if quadrant == 0 else quadrants == quadrant
        if sci_only:
            inside &= in_sci
        seed_row = ((zeropoints["quadrant"] == quadrant) & (zeropoints["aper_ind"] == k)
                    & (zeropoints["science_fov_only"] == sci_only))
        zp_median = float(zeropoints["zp_adu_per_s"][seed_row][0])
        sel = good & inside
        zp, zp_err, n_zp = zeropoint_weighted(g_prime[sel], m_inst[sel], per_adu[sel], background_k[sel],
                                              exptime_s, zp_median)
        corr = _aperture_correction(aper_corr, corr_weight, inside & has_corr)
        corr = frame_corr if math.isnan(corr) else corr
        zp_total = zp + corr
        p = psf & inside
        _, ell, pa = _shape(*(np.array([_median(c[p]) if p.any() else math.nan]) for c in (cxx, cyy, cxy)))
        fwhm = [_median(fwhm_pix[p]) if p.any() else math.nan]
        sky_rate = float(sky[0][f"median_adu{sky_keys[region]}_per_s"])
        with np.errstate(invalid="ignore", divide="ignore"):
            sky_mag = zp_total - 2.5 * np.log10(sky_rate / pixel_area_arcsec2) if sky_rate > 0 else math.nan
        lim = _limit_mag(zp, _median(per_adu[inside]), _median(background_k[inside]),
                         exptime_s) if inside.any() else math.nan
        row["region"], row["quadrant"], row["science_fov_only"] = region, quadrant, sci_only
        row["fwhm_pix"], row["fwhm_arcsec"] = fwhm[0], fwhm[0] * scale
        row["ellipticity"], row["psf_pa_deg"], row["n_psf_stars"] = ell[0], pa[0], int(p.sum())
        row["sky_adu_per_s"], row["sky_mag_arcsec2"] = sky_rate, sky_mag
        row["zp"], row["zp_err"], row["zp_median"] = zp, zp_err, zp_median
        row["aper_corr_mag"], row["zp_total"] = corr, zp_total
        row["transparency"] = 10.0 ** (-0.4 * (camera.nominal_zp - zp_total))
        row["lim_mag_5sigma"], row["n_zp_stars"], row["aper_ind"] = lim, n_zp, k
    for name, value, _ in frame_columns:
        table[name] = value
    return table


def _aperture_correction(aper_corr, flux, use):
    """2.5 log10 of the summed largest-aperture flux over the summed standard-aperture flux of
    the stars `use` (each star's ratio weighted by its flux: the bright stars, whose ratios are
    precise, carry it), mag; NaN without stars."""
    w = flux[use]
    if not len(w) or not np.sum(w) > 0:
        return math.nan
    return float(2.5 * np.log10(np.sum(w * 10.0 ** (0.4 * aper_corr[use])) / np.sum(w)))


def frame_values(conditions):
    """{telemetry field: value} of the frame (the full-frame row of CONDITIONS)."""
    row = conditions[conditions["region"] == b"full"][0]
    return {name: float(row[name]) for name in TELEMETRY_FIELDS}


def _append_columns(table, columns):
    """A copy of `table` with (name, array) columns after its own (vector columns kept): its
    records copied as bytes at the same offsets, the new columns after them."""
    columns = [(name, np.asarray(v)) for name, v in columns]
    dt = table.dtype
    names = list(dt.names)
    formats = [dt.fields[name][0] for name in names]
    offsets = [dt.fields[name][1] for name in names]
    end = dt.itemsize
    for name, v in columns:
        names.append(name)
        formats.append(np.dtype((v.dtype, v.shape[1:])))
        offsets.append(end)
        end += formats[-1].itemsize
    n = len(table)
    out = np.empty(n, dtype=np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": end}))
    out.view(np.uint8).reshape(n, end)[:, :dt.itemsize] = np.ascontiguousarray(table).view(np.uint8).reshape(
        n, dt.itemsize)
    for name, v in columns:
        out[name] = v
    return out


def aperture_corrections(image, catalog, phot, psf, camera, backend, *, radii, standard_aperture, bg_sigclip):
    """Per star, 2.5 log10(flux in the camera's largest aperture / flux in the standard one),
    mag (what a zeropoint of the standard aperture gains to become one of total light), for
    the stars of mask `psf` (NaN for the others); measured here when the frame's radii lack the
    largest (`--one_aper`)."""
    from .photometry import aperture_photometry

    out = np.full(len(catalog), np.nan)
    idx = np.flatnonzero(psf)
    big = float(camera.aperture_radii_pix[-1])
    if len(idx) == 0:
        return out
    if float(radii[-1]) == big:
        f_big = phot["flux_adu"][idx, -1]
    else:
        f_big = aperture_photometry(image, catalog["xcentroid"][idx], catalog["ycentroid"][idx], camera, backend,
                                    radii=(big,), bg_sigclip=bg_sigclip)["flux_adu"][:, 0]
    f_std = phot["flux_adu"][idx, standard_aperture]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[idx] = np.where((f_big > 0) & (f_std > 0), 2.5 * np.log10(f_big / f_std), np.nan)
    return out


def measure_conditions(catalog, image, phot, camera, calibrations, backend, sky, zeropoints, *, exptime_s,
                       radii, standard_aperture, flatfield, pixel_area_arcsec2, bg_sigclip=False,
                       frame_columns=()):
    """The new CATALOG columns and the CONDITIONS table of one frame.

    Parameters
    ----------
    catalog : structured array
        The CATALOG (original columns, and `on_streak` when streaks were searched).
    image : device array
        The detrended image, ADU.
    phot : dict
        From `photometry.aperture_photometry` (host arrays; flux_adu, bkg_median, n_annulus).
    calibrations : detrend.DeviceCalibrations
        For the flat and dark at each star.
    sky, zeropoints : structured arrays
        The SKY and ZEROPOINTS tables.

    Returns (catalog with flux_adu_err, snr, m_inst_err (per aperture), psf_cxx, psf_cyy,
    psf_cxy (pix^2), fwhm_pix, ellipticity, psf_pa_deg appended; CONDITIONS table).
    """
    per_adu, background = flux_noise_terms(phot, catalog, camera, calibrations, backend, exptime_s=exptime_s,
                                           radii=radii, flatfield=flatfield)
    err, snr, m_err = star_errors(phot["flux_adu"], per_adu, background)
    good = zeropoint_stars(catalog, camera)
    cxx, cyy, cxy = psf_moments(image, catalog, good, phot["bkg_median"], snr[:, standard_aperture], backend)
    fwhm, ell, pa = np.full((3, len(catalog)), np.nan)
    measured = np.flatnonzero(np.isfinite(cxx))
    fwhm[measured], ell[measured], pa[measured] = _shape(cxx[measured], cyy[measured], cxy[measured])
    names = ["flux_adu_err", "snr", "m_inst_err", "psf_cxx", "psf_cyy", "psf_cxy", "fwhm_pix",
             "ellipticity", "psf_pa_deg"]
    catalog = _append_columns(catalog, zip(names, [err, snr, m_err, cxx, cyy, cxy, fwhm, ell, pa]))
    aper_corr = aperture_corrections(image, catalog, phot, np.isfinite(cxx), camera, backend, radii=radii,
                                     standard_aperture=standard_aperture, bg_sigclip=bg_sigclip)
    table = conditions_table(catalog, sky, zeropoints, camera, good=good, standard_aperture=standard_aperture,
                             per_adu=per_adu, background=background, aper_corr=aper_corr, exptime_s=exptime_s,
                             pixel_area_arcsec2=pixel_area_arcsec2, frame_columns=frame_columns)
    return catalog, table
