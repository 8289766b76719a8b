"""Camera simulator: render a raw pointing-camera frame of the real sky from a Gaia chunk tree.

Signal model, per pixel (ADU)::

    raw = bias + dark * t + flat * dome * (sky + stars + streaks) * t  (+ shot and read noise)

clipped to [0, 16383] and rounded to uint16. Stars have flux 10**(-0.4 (G' - zp)) ADU/s with
G' = G + 0.25 (BP - RP) (BP - RP taken as 0 where a star has none) and zp the clear-sky
zeropoint minus the cloud extinction at the star. The PSF is a double Gaussian (0.9 core of the
given FWHM, 0.1 wing of twice its width), integrated exactly over pixels, broadening toward the
corners. Positions are where ``astropy.wcs`` puts the catalogue RA/Dec (epoch 2016.0, or moved
to the observation epoch with ``proper_motion=True``).

`simulate_frame` returns arrays and tables (`SimFrame`); `pc_gpu.sim.frameio.write_frame` and
`write_calibrations` write the raw FITS (as the camera writes it), the astrometry.net-style
``.wcs`` file, the truth table and the four META calibration products. The calibration truth is
made in `pc_gpu.sim.detector`, the WCS and the PSF in `pc_gpu.sim.render`; their names that other
code imports from this module stay importable from it. Everything is deterministic from the seed.
"""

import argparse
import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..camera import EL_NINO
from ..errors import InputError, PCError
from .chunks import _angular_distance
from .detector import SimCalibrations, _quadrant_map, make_calibrations
from .frameio import FramePaths, _utc, raw_filename, write_calibrations, write_frame
from .psf import aperture_fractions_boxes, faint_population, psf_boxes
from .render import (_APER_HW, _BRIGHT_ADU, _BRIGHT_HW, _FAINT_HW, _STAMP_HW, _WING_SCALE,
                     _WING_WEIGHT, _add_stamps, _circle_lower_left_area, _dome_factor,
                     _field_stars, _psf_box, _wcs_from_header, aperture_fractions, make_wcs)
from .streaks import random_streaks, render_streaks, streak_truth

# Not used here; kept importable from this module for the code that imports them from it.
from .frameio import _ensure_dir  # noqa: F401
from .render import _pixel_profile  # noqa: F401

__all__ = [
    "SimCalibrations", "SimFrame", "FramePaths", "make_calibrations", "make_wcs",
    "raw_filename", "aperture_fractions", "simulate_frame", "write_frame", "write_calibrations",
    "main",
]

log = logging.getLogger(__name__)

_MJD0 = dt.datetime(1858, 11, 17)


@dataclass
class SimFrame:
    """A simulated frame and everything needed to write it and to check a reduction.

    Attributes
    ----------
    raw : numpy.ndarray
        (ny, nx) uint16 raw image.
    header : astropy.io.fits.Header
        Raw primary header (DATE, TIME, EXPOSURE, MJD-OBS, RADEG, ...).
    wcs_header : astropy.io.fits.Header
        The ``.wcs`` file header.
    truth : numpy.ndarray
        One row per rendered star (see `write_frame` for columns).
    truth_header : list of dict
        Frame-level truth (fitsio header records).
    streaks : numpy.ndarray
        One row per streak: X0, Y0, X1, Y1 (pixels, may lie outside the frame), SIGMA_PIX,
        FLUX_ADU_PER_S_PER_PIX (along its length), and the truth of `pc_gpu.sim.streaks`
        (FWHM_PIX, the in-frame part's ends CLIP_X0..CLIP_Y1, EDGE0/EDGE1: boundary crossings).
    calibrations : SimCalibrations
        The calibration truth used.
    filename : str
        Camera-style file name, e.g. ``20210611.221106.00001_20000.fits``.
    signal : numpy.ndarray or None
        Noiseless detrended signal (ADU/s), kept only with ``keep_signal=True``.
    """

    raw: np.ndarray
    header: object
    wcs_header: object
    truth: np.ndarray
    truth_header: list
    streaks: np.ndarray
    calibrations: SimCalibrations
    filename: str
    signal: np.ndarray = field(default=None, repr=False)

    @property
    def wcs(self):
        """The frame's astropy WCS."""
        return _wcs_from_header(self.wcs_header)



_TRUTH_DTYPE = [
    ("SOURCE_ID", "i8"), ("RA", "f8"), ("DEC", "f8"), ("X", "f8"), ("Y", "f8"),
    ("PHOT_G_MEAN_MAG", "f4"), ("PHOT_BP_MEAN_MAG", "f4"), ("PHOT_RP_MEAN_MAG", "f4"),
    ("G_PRIME", "f8"), ("SYNTHETIC", "?"), ("SYNTHETIC_COLOR", "?"), ("ZP_STAR", "f8"),
    ("DOME_FACTOR", "f4"), ("FWHM_PIX", "f4"), ("FLUX_ADU_PER_S", "f8"), ("FLUX_ADU", "f8"),
    ("APER_FRAC", "f8", (7,)), ("APER_FLUX_ADU", "f8", (7,)), ("PEAK_RAW_MODEL", "f4"),
    ("SATURATED", "?"), ("IN_FRAME", "?"), ("EDGE_DIST_PIX", "f4"), ("ELLIPTICITY", "f4"),
    ("PSF_PA_DEG", "f4"),
]


def simulate_frame(gaia_dir, ra, dec, *, rotation_deg=0.0, exptime_s=20.0,
                   obs_time="2021-06-12T05:11:06", frame_number=1, camera=EL_NINO,
                   calibrations=None, seed=0, zp=None, cloud_mag=0.0, cloud_gradient_mag=0.0,
                   sky_adu_per_s=None, sky_gradient=0.0, fwhm_pix=2.0, fwhm_corner_pix=2.5,
                   sip=False, n_streaks=0, dome=False, zpflag=False, proper_motion=False,
                   noise=True, max_g=15.5, min_g=None, bad_pixels=True, pointing_ra_dec=None,
                   keep_signal=False, streaks=None, psf=None, faint_g_max=None):
    """Render one raw frame of the sky in `gaia_dir` for a pointing.

    Parameters
    ----------
    gaia_dir : str or path
        Chunk tree (`pc_gpu.sim.chunks.build_chunk_tree`).
    ra, dec : float
        Image-centre pointing (the WCS CRVAL), deg.
    rotation_deg : float
        Sky rotation on the image, deg.
    exptime_s : float
        Exposure time, s (header EXPOSURE is written in ms).
    obs_time : str or datetime
        UTC start of the exposure (ISO); the header DATE/TIME are local (UTC-7).
    frame_number : int
        DEV_FNUM and the file name's frame field.
    camera : pc_gpu.camera.Camera
        Geometry, bias, read noise, gain, dark, saturation, zeropoint.
    calibrations : SimCalibrations or None
        Calibration truth to use (made from `seed` when None).
    seed : int
        Seed of everything random in the frame.
    zp : float or None
        Clear-sky zeropoint, mag of 1 ADU/s (default `camera.nominal_zp`).
    cloud_mag, cloud_gradient_mag : float
        Cloud extinction at the image centre, mag, and its change across the frame in x
        (left edge -g/2, right edge +g/2).
    sky_adu_per_s : float or None
        Sky at the image centre, ADU/s/pix (default `camera.dark_sky_adu_per_s`).
    sky_gradient : float
        Fractional sky change across the frame in y (bottom -g/2, top +g/2).
    fwhm_pix, fwhm_corner_pix : float
        PSF core FWHM at the centre and at the corners, pixels.
    sip : bool
        Mild SIP distortion in the WCS.
    n_streaks : int
        Satellite streaks (the first crosses the whole frame).
    dome : bool
        Dome vignetting: a large region with 2% transmission.
    zpflag : bool
        Header ZPFLAG = 1 (telescope moved).
    proper_motion : bool
        Move stars to the observation epoch with PMRA/PMDEC from REF_EPOCH.
    noise : bool
        Add shot and read noise (False: the rounded noiseless model).
    max_g, min_g : float
        Render stars with min_g <= G <= max_g.
    bad_pixels : bool
        Static bad pixels and columns (in the mask and in the raw values).
    pointing_ra_dec : (float, float) or None
        Header RADEG/DECDEG (the requested pointing) when it differs from the true centre;
        REAL_RA/REAL_DEC are always the true centre.
    keep_signal : bool
        Keep the noiseless detrended signal (ADU/s) on the result.
    streaks : array_like or None
        Streaks to render as they are, rows (X0, Y0, X1, Y1, SIGMA_PIX,
        FLUX_ADU_PER_S_PER_PIX) in pixels (ends may lie outside the frame) and ADU/s per pixel
        of length; they replace the `n_streaks` random ones.
    psf : pc_gpu.sim.psf.PSFField or None
        FWHM, ellipticity and position angle per quadrant (replacing `fwhm_pix` and
        `fwhm_corner_pix`).
    faint_g_max : float or None
        Also render stars from `max_g` to this G', in no catalogue (`psf.faint_population`).

    Returns
    -------
    SimFrame
    """
    from astropy.io import fits

    if not (np.isfinite(exptime_s) and 0 < exptime_s < 1000):
        raise InputError(None, f"exposure time {exptime_s} s must be positive (and < 1000 s)")
    if fwhm_pix <= 0 or fwhm_corner_pix <= 0:
        raise InputError(None, "PSF FWHM must be positive")
    utc = _utc(obs_time)
    zp = camera.nominal_zp if zp is None else float(zp)
    sky0 = camera.dark_sky_adu_per_s if sky_adu_per_s is None else float(sky_adu_per_s)
    if sky0 < 0:
        raise InputError(None, f"sky level {sky0} ADU/s/pix must not be negative")
    if calibrations is None:
        calibrations = make_calibrations(camera, seed=seed, bad_pixels=bad_pixels)
    elif calibrations.bias.shape != camera.shape:
        raise InputError(None, f"calibrations are {calibrations.bias.shape[::-1]}, camera is "
                               f"{camera.nx} x {camera.ny}")
    rng = np.random.default_rng([int(seed), 11, int(frame_number)])
    ny, nx = camera.shape
    t = float(exptime_s)
    mjd = (utc - _MJD0).total_seconds() / 86400.0
    epoch = 2000.0 + (mjd - 51544.5) / 365.25

    wcs_header = make_wcs(ra, dec, rotation_deg, camera, sip=sip)
    wcs = _wcs_from_header(wcs_header)

    # ---- stars
    stars = _field_stars(gaia_dir, wcs, camera, _BRIGHT_HW, max_g, min_g)
    half_diagonal_deg = 0.5 * np.hypot(nx, ny) * camera.pixel_scale_arcsec / 3600.0
    near = _angular_distance(stars["RA"], stars["DEC"], ra, dec) < half_diagonal_deg + 2.0
    stars = stars[near]
    s_ra, s_dec = stars["RA"].astype(np.float64), stars["DEC"].astype(np.float64)
    if proper_motion:
        ok = np.isfinite(stars["PMRA"]) & np.isfinite(stars["PMDEC"])
        years = epoch - np.where(np.isfinite(stars["REF_EPOCH"]), stars["REF_EPOCH"], 2016.0)
        s_dec = np.where(ok, s_dec + years * stars["PMDEC"] / 3.6e6, s_dec)
        s_ra = np.where(ok, s_ra + years * stars["PMRA"] / (3.6e6 * np.cos(np.radians(s_dec))), s_ra)
    x, y = wcs.all_world2pix(s_ra, s_dec, 0, tolerance=1e-8, maxiter=50) if sip else \
        wcs.all_world2pix(s_ra, s_dec, 0)
    inside = (x > -_BRIGHT_HW) & (x < nx - 1 + _BRIGHT_HW) & (y > -_BRIGHT_HW) & (y < ny - 1 + _BRIGHT_HW)
    stars, x, y, s_ra, s_dec = stars[inside], x[inside], y[inside], s_ra[inside], s_dec[inside]
    n = stars.size
    log.info("rendering %d stars (G <= %g) at RA %.4f Dec %.4f", n, max_g, ra, dec)

    g = stars["PHOT_G_MEAN_MAG"].astype(np.float64)
    bp_rp = (stars["PHOT_BP_MEAN_MAG"] - stars["PHOT_RP_MEAN_MAG"]).astype(np.float64)
    g_prime = g + 0.25 * np.where(np.isfinite(bp_rp), bp_rp, 0.0)
    xc, yc = camera.centre
    r_corner = np.hypot(xc, yc)
    rr = np.hypot(x - xc, y - yc) / r_corner
    fwhm = fwhm_pix + (fwhm_corner_pix - fwhm_pix) * rr ** 2
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    ell = pa = np.zeros(n)
    if psf is not None:
        fwhm, ell, pa = psf.star_shapes(x, y, camera)
        sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    def boxes(sel, hw, xs=x, ys=y, shapes=(fwhm, ell, pa)):
        if psf is None:
            return _psf_box(xs[sel], ys[sel], sigma[sel], hw)
        return psf_boxes(xs[sel], ys[sel], *(v[sel] for v in shapes), hw, wing_weight=_WING_WEIGHT,
                         wing_scale=_WING_SCALE, round_boxes=_psf_box)
    ext = cloud_mag + cloud_gradient_mag * (x - xc) / nx
    zp_star = zp - ext
    dome_star = _dome_factor(camera, x, y) if dome else np.ones(n)
    flux_clear = 10.0 ** (-0.4 * (g_prime - zp_star))  # before the dome (applied per pixel)
    flux = flux_clear * dome_star

    signal = np.zeros(ny * nx, dtype=np.float64)
    bright = flux_clear * t > _BRIGHT_ADU
    for sel, hw in ((~bright, _STAMP_HW), (bright, _BRIGHT_HW)):
        if not sel.any():
            continue
        _add_stamps(signal, *boxes(sel, hw), flux_clear[sel], camera)
    n_faint = 0
    if faint_g_max is not None:
        from astropy.coordinates import SkyCoord

        b_deg = SkyCoord(ra, dec, unit="deg").galactic.b.deg
        fx, fy, fg = faint_population(np.random.default_rng([int(seed), 13, int(frame_number)]), camera, b_deg,
                                      g_range=(max_g, faint_g_max))
        n_faint = len(fx)
        if psf is None:
            fwhm_f = fwhm_pix + (fwhm_corner_pix - fwhm_pix) * (np.hypot(fx - xc, fy - yc) / r_corner) ** 2
            stamps = _psf_box(fx, fy, fwhm_f / (2.0 * np.sqrt(2.0 * np.log(2.0))), _FAINT_HW)
        else:
            stamps = boxes(slice(None), _FAINT_HW, fx, fy, psf.star_shapes(fx, fy, camera))
        f_flux = 10.0 ** (-0.4 * (fg - (zp - cloud_mag - cloud_gradient_mag * (fx - xc) / nx)))
        _add_stamps(signal, *stamps, f_flux, camera)
    signal = signal.reshape(ny, nx).astype(np.float32)

    # ---- sky, streaks, dome
    yy = np.arange(ny, dtype=np.float32)[:, None]
    sky = np.float32(sky0) * (1 + np.float32(sky_gradient) * (yy - np.float32(yc)) / np.float32(ny))
    signal += sky
    if streaks is None:
        streaks = random_streaks(rng, int(n_streaks), camera.shape)
    else:
        streaks = [tuple(r)[:6] for r in streaks]
        n_streaks = len(streaks)
    streaks = streak_truth(streaks, camera.shape)
    render_streaks(signal, streaks)
    if dome:
        gx = np.arange(nx, dtype=np.float32)[None, :]
        dome_map = _dome_factor(camera, gx, yy).astype(np.float32)
        signal *= dome_map
        dome_fraction = float(np.mean(dome_map < 0.5))
    else:
        dome_fraction = 0.0

    # ---- camera: flat, dark, bias, noise, bad pixels, saturation
    cal = calibrations
    electrons_per_adu = camera.gain_e_per_adu
    model = cal.flat * signal * np.float32(t) + cal.dark * np.float32(t)
    peak_model = None
    if noise:
        counts = rng.poisson(np.maximum(model, 0) * electrons_per_adu).astype(np.float32)
        raw = counts / np.float32(electrons_per_adu) + cal.bias
        read = _quadrant_map(camera, camera.read_noise_adu)
        raw += read * rng.standard_normal((ny, nx), dtype=np.float32)
    else:
        raw = model + cal.bias
    model += cal.bias
    if bad_pixels and cal.mask.any():
        bad = np.flatnonzero(cal.mask.ravel() == 1)
        kind = rng.random(bad.size)
        dead, hot = bad[kind < 0.5], bad[kind >= 0.5]
        raw.flat[dead] = cal.bias.flat[dead] + rng.normal(0, 3, dead.size)
        raw.flat[hot] = cal.bias.flat[hot] + rng.uniform(2000, 20000, hot.size)
        columns = cal.mask == 2
        raw[columns] += np.float32(rng.uniform(300, 1000))
    raw = np.clip(np.rint(raw), 0, camera.saturation_adu).astype(np.uint16)

    # ---- truth
    truth = np.zeros(n, dtype=_TRUTH_DTYPE)
    if psf is not None and n:
        box, ix0, iy0 = boxes(slice(None), _APER_HW)
        fractions = aperture_fractions_boxes(x, y, box, ix0, iy0, camera.aperture_radii_pix,
                                             _circle_lower_left_area)
    else:
        fractions = aperture_fractions(x, y, sigma, camera.aperture_radii_pix) if n else np.zeros((0, 7))
    ixr = np.clip(np.rint(x).astype(np.int64), 0, nx - 1)
    iyr = np.clip(np.rint(y).astype(np.int64), 0, ny - 1)
    peak_model = np.full(n, -np.inf)
    for dy_ in (-1, 0, 1):
        for dx_ in (-1, 0, 1):
            peak_model = np.maximum(peak_model, model[np.clip(iyr + dy_, 0, ny - 1),
                                                      np.clip(ixr + dx_, 0, nx - 1)])
    in_frame = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    for name in ("SOURCE_ID", "PHOT_G_MEAN_MAG", "PHOT_BP_MEAN_MAG", "PHOT_RP_MEAN_MAG",
                 "SYNTHETIC", "SYNTHETIC_COLOR"):
        truth[name] = stars[name]
    truth["RA"], truth["DEC"], truth["X"], truth["Y"] = s_ra, s_dec, x, y
    truth["G_PRIME"], truth["ZP_STAR"], truth["DOME_FACTOR"] = g_prime, zp_star, dome_star
    truth["FWHM_PIX"], truth["FLUX_ADU_PER_S"], truth["FLUX_ADU"] = fwhm, flux, flux * t
    truth["ELLIPTICITY"], truth["PSF_PA_DEG"] = ell, pa
    truth["APER_FRAC"] = fractions
    truth["APER_FLUX_ADU"] = fractions * (flux * t)[:, None]
    truth["PEAK_RAW_MODEL"] = peak_model
    truth["SATURATED"] = in_frame & (peak_model >= camera.saturation_adu)
    truth["IN_FRAME"] = in_frame
    truth["EDGE_DIST_PIX"] = np.minimum.reduce([x, y, nx - 1 - x, ny - 1 - y])

    # ---- headers
    local = utc + dt.timedelta(hours=camera.timezone_offset_hours)
    filename = raw_filename(utc, frame_number, t, camera)
    target = (ra, dec) if pointing_ra_dec is None else pointing_ra_dec
    header = fits.Header()
    header["DATE"] = (local.strftime("%Y/%m/%d"), "local (MST) date at exposure start")
    header["TIME"] = (local.strftime("%H:%M:%S"), "local (MST) time at exposure start")
    header["EXPOSURE"] = (int(round(t * 1000)), "exposure time (ms)")
    header["MJD-OBS"] = (round(mjd, 8), "MJD (UTC) at exposure start")
    header["RADEG"] = (float(target[0]), "requested pointing RA (deg)")
    header["DECDEG"] = (float(target[1]), "requested pointing Dec (deg)")
    header["REAL_RA"] = (float(ra), "true image-centre RA (deg)")
    header["REAL_DEC"] = (float(dec), "true image-centre Dec (deg)")
    header["DEV_FNUM"] = (int(frame_number), "frame number")
    header["ZPFLAG"] = (int(bool(zpflag)), "1 = telescope moved during exposure")
    header["INSTRUME"] = (camera.name, "pointing camera")
    header["SIMULATD"] = (True, "simulated by pc_gpu.sim (not a real exposure)")
    header["SIMSEED"] = (int(seed), "simulator seed")
    header["SIMVERS"] = (__version__, "pc_gpu version of the simulator")

    sky_q = [float(np.mean(sky[rows_]) * 1.0) for rows_, _ in camera.quadrant_slices()]
    truth_header = [
        {"name": "RAWFILE", "value": filename, "comment": "raw frame this truth belongs to"},
        {"name": "SEED", "value": int(seed), "comment": "simulator seed"},
        {"name": "CALSEED", "value": int(cal.seed), "comment": "calibration seed"},
        {"name": "EXPTIME", "value": t, "comment": "exposure time (s)"},
        {"name": "MJD-OBS", "value": round(mjd, 8), "comment": "MJD (UTC) at exposure start"},
        {"name": "RA", "value": float(ra), "comment": "image-centre RA (deg)"},
        {"name": "DEC", "value": float(dec), "comment": "image-centre Dec (deg)"},
        {"name": "ROTANG", "value": float(rotation_deg), "comment": "sky rotation (deg)"},
        {"name": "SIP", "value": bool(sip), "comment": "WCS has SIP distortion"},
        {"name": "ZP_NOM", "value": zp, "comment": "clear-sky zeropoint (mag of 1 ADU/s)"},
        {"name": "CLOUDMAG", "value": float(cloud_mag), "comment": "cloud extinction at centre (mag)"},
        {"name": "CLOUDGRD", "value": float(cloud_gradient_mag),
         "comment": "extinction change left->right edge (mag)"},
        {"name": "ZP", "value": zp - float(cloud_mag), "comment": "zeropoint at centre (mag)"},
        {"name": "SKY", "value": sky0, "comment": "sky at centre (ADU/s/pix, detrended)"},
        {"name": "SKYGRAD", "value": float(sky_gradient), "comment": "fractional sky change in y"},
    ] + [{"name": f"SKYQ{q}", "value": v, "comment": f"mean sky in quadrant {q} (ADU/s/pix)"}
         for q, v in enumerate(sky_q, 1)] + [
        {"name": "FWHM", "value": float(fwhm_pix), "comment": "PSF core FWHM at centre (pix)"},
        {"name": "FWHMCORN", "value": float(fwhm_corner_pix), "comment": "PSF core FWHM at corners"},
        {"name": "PSFMODEL", "value": f"{1 - _WING_WEIGHT:g}G(s)+{_WING_WEIGHT:g}G({_WING_SCALE:g}s)",
         "comment": "double Gaussian, pixel-integrated"},
    ] + [{"name": f"{key}Q{q}", "value": float(v), "comment": f"PSF {text} in quadrant {q}"}
         for key, text, values in ((("FWHM", "core FWHM (pix)", psf.fwhm_pix), ("ELL", "1 - b/a", psf.ellipticity),
                                    ("PA", "major axis PA (deg from +x)", psf.pa_deg)) if psf is not None else ())
         for q, v in enumerate(values, 1)] + [
        {"name": "NFAINT", "value": int(n_faint), "comment": "stars rendered fainter than the catalogue"},
        {"name": "PMCORR", "value": bool(proper_motion), "comment": "positions moved by proper motion"},
        {"name": "POSEPOCH", "value": round(epoch, 6) if proper_motion else 2016.0,
         "comment": "epoch of rendered positions (yr)"},
        {"name": "DOME", "value": bool(dome), "comment": "dome vignetting simulated"},
        {"name": "DOMEFRAC", "value": dome_fraction, "comment": "fraction of pixels vignetted"},
        {"name": "ZPFLAG", "value": int(bool(zpflag)), "comment": "header ZPFLAG written"},
        {"name": "NSTREAK", "value": int(n_streaks), "comment": "satellite streaks (STREAKS HDU)"},
        {"name": "NOISE", "value": bool(noise), "comment": "shot and read noise added"},
        {"name": "BADPIX", "value": bool(bad_pixels and cal.mask.any()),
         "comment": "static bad pixels in raw and mask"},
        {"name": "GAIN", "value": float(camera.gain_e_per_adu), "comment": "e-/ADU"},
        {"name": "COMMENT", "value": "X, Y: 0-indexed pixel, centres at integers, x = column."},
        {"name": "COMMENT", "value": "APER_FLUX_ADU: expected detrended ADU in each aperture"},
        {"name": "COMMENT", "value": "radius (camera.aperture_radii_pix), exact overlap."},
    ]
    return SimFrame(raw, header, wcs_header, truth, truth_header, streaks, cal, filename,
                    signal if keep_signal else None)


# --------------------------------------------------------------------------- command line

def main(argv=None):
    """Console entry point ``pc-sim``: simulate and write one frame (and its META)."""
    parser = argparse.ArgumentParser(prog="pc-sim", description="Simulate a raw pointing-camera "
                                     "frame from a Gaia chunk tree.")
    parser.add_argument("gaia_dir", help="Gaia chunk tree (pc-gaia-chunks)")
    parser.add_argument("outdir", help="directory for the raw frame and its .wcs")
    parser.add_argument("--ra", type=float, required=True, help="pointing RA (deg)")
    parser.add_argument("--dec", type=float, required=True, help="pointing Dec (deg)")
    parser.add_argument("--rotation", type=float, default=0.0, help="sky rotation (deg)")
    parser.add_argument("--exptime", type=float, default=20.0, help="exposure time (s)")
    parser.add_argument("--time", default="2021-06-12T05:11:06", help="UTC start, ISO")
    parser.add_argument("--frame", type=int, default=1, help="frame number (DEV_FNUM)")
    parser.add_argument("--meta", default=None, help="write calibrations here (default OUTDIR/meta)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zp", type=float, default=None, help="clear-sky zeropoint (mag)")
    parser.add_argument("--clouds", type=float, default=0.0, help="cloud extinction (mag)")
    parser.add_argument("--cloud-gradient", type=float, default=0.0, help="mag across the frame")
    parser.add_argument("--sky", type=float, default=None, help="sky (ADU/s/pix)")
    parser.add_argument("--fwhm", type=float, default=2.0, help="PSF FWHM at centre (pix)")
    parser.add_argument("--sip", action="store_true", help="mild SIP distortion")
    parser.add_argument("--streaks", type=int, default=0, help="number of satellite streaks")
    parser.add_argument("--dome", action="store_true", help="dome vignetting")
    parser.add_argument("--zpflag", action="store_true", help="header ZPFLAG = 1")
    parser.add_argument("--pm", action="store_true", help="apply proper motions")
    parser.add_argument("--no-noise", action="store_true")
    parser.add_argument("--no-bad-pixels", action="store_true")
    parser.add_argument("--nx", type=int, default=None, help="smaller camera width (tests)")
    parser.add_argument("--ny", type=int, default=None, help="smaller camera height (tests)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        camera = EL_NINO
        if args.nx or args.ny:
            camera = camera.with_(nx=args.nx or camera.nx, ny=args.ny or camera.ny)
        cal = make_calibrations(camera, seed=args.seed, bad_pixels=not args.no_bad_pixels)
        frame = simulate_frame(
            args.gaia_dir, args.ra, args.dec, rotation_deg=args.rotation, exptime_s=args.exptime,
            obs_time=args.time, frame_number=args.frame, camera=camera, calibrations=cal,
            seed=args.seed, zp=args.zp, cloud_mag=args.clouds,
            cloud_gradient_mag=args.cloud_gradient, sky_adu_per_s=args.sky, fwhm_pix=args.fwhm,
            fwhm_corner_pix=1.25 * args.fwhm, sip=args.sip, n_streaks=args.streaks,
            dome=args.dome, zpflag=args.zpflag, proper_motion=args.pm, noise=not args.no_noise,
            bad_pixels=not args.no_bad_pixels)
        write_calibrations(cal, args.meta or os.path.join(args.outdir, "meta"),
                           overwrite=args.overwrite)
        paths = write_frame(frame, args.outdir, overwrite=args.overwrite)
        log.info("raw %s wcs %s truth %s", paths.raw, paths.wcs, paths.truth)
    except PCError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
