"""Where the stars land and how they are drawn: the WCS, the catalogue stars in the field, the
pixel-integrated double-Gaussian PSF, exact aperture fractions, stamps and the dome edge.

The PSF is a double Gaussian (0.9 core of the given FWHM, 0.1 wing of twice its width),
integrated exactly over pixels; `pc_gpu.sim.psf` draws elliptical stars with the same profile.
"""

import numpy as np

from ..camera import EL_NINO
from ..errors import InputError
from .chunks import _healpix, read_chunk_tree

__all__ = ["make_wcs", "aperture_fractions"]

_WING_WEIGHT = 0.1      # fraction of a star's flux in the wide PSF component
_WING_SCALE = 2.0       # wide component sigma / core sigma
_STAMP_HW = 7           # stamp half-width, pixels (15 x 15)
_BRIGHT_HW = 20         # stamp half-width for stars brighter than _BRIGHT_ADU in total
_BRIGHT_ADU = 5.0e4
_APER_HW = 6            # half-width of the box holding every aperture (r <= 5 pix)
_FAINT_HW = 4           # stamp half-width of the stars below the catalogue (9 x 9)
_DOME_TRANSMISSION = 0.02


# --------------------------------------------------------------------------- geometry

def make_wcs(ra, dec, rotation_deg=0.0, camera=EL_NINO, *, sip=False):
    """A TAN (or TAN-SIP) WCS centred on (`ra`, `dec`) at the image centre.

    North is up and east left at rotation 0; `rotation_deg` turns the sky counter-clockwise
    on the image. With `sip`, a mild second/third-order distortion (~1 pixel at the corners).

    Returns
    -------
    astropy.io.fits.Header
        The header (as an astrometry.net ``.wcs`` file holds it); build a WCS with
        ``astropy.wcs.WCS(header)``.
    """
    from astropy.io import fits

    if not (np.isfinite(ra) and np.isfinite(dec) and -90 <= dec <= 90):
        raise InputError(None, f"pointing RA {ra}, Dec {dec} is not a valid sky position (deg)")
    scale = camera.pixel_scale_arcsec / 3600.0
    theta = np.radians(rotation_deg)
    cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    suffix = "-SIP" if sip else ""
    h = fits.Header()
    h["WCSAXES"] = 2
    h["CTYPE1"] = ("RA---TAN" + suffix, "TAN (gnomonic) projection" + (" + SIP" if sip else ""))
    h["CTYPE2"] = ("DEC--TAN" + suffix, "TAN (gnomonic) projection" + (" + SIP" if sip else ""))
    h["EQUINOX"] = (2000.0, "Equatorial coordinates definition (yr)")
    h["LONPOLE"] = 180.0
    h["LATPOLE"] = 0.0
    h["CRVAL1"] = (float(ra % 360.0), "RA  of reference point")
    h["CRVAL2"] = (float(dec), "DEC of reference point")
    h["CRPIX1"] = (camera.centre[0] + 1.0, "X reference pixel (1-indexed)")
    h["CRPIX2"] = (camera.centre[1] + 1.0, "Y reference pixel (1-indexed)")
    h["CUNIT1"] = ("deg", "X pixel scale units")
    h["CUNIT2"] = ("deg", "Y pixel scale units")
    h["CD1_1"] = (float(cd[0, 0]), "Transformation matrix")
    h["CD1_2"] = (float(cd[0, 1]), "no comment")
    h["CD2_1"] = (float(cd[1, 0]), "no comment")
    h["CD2_2"] = (float(cd[1, 1]), "no comment")
    h["IMAGEW"] = (camera.nx, "Image width,  in pixels.")
    h["IMAGEH"] = (camera.ny, "Image height, in pixels.")
    if sip:
        half = np.hypot(*camera.centre)
        k = 0.8 / half ** 2  # ~0.8 pix of quadratic distortion at the corners
        coeffs = {"A": {(2, 0): 0.6 * k, (1, 1): -0.3 * k, (0, 2): 0.2 * k, (3, 0): 0.3 * k / half,
                        (1, 2): 0.2 * k / half},
                  "B": {(2, 0): -0.2 * k, (1, 1): 0.4 * k, (0, 2): 0.5 * k, (2, 1): 0.2 * k / half,
                        (0, 3): 0.3 * k / half}}
        for axis, terms in coeffs.items():
            h[f"{axis}_ORDER"] = (3, "Polynomial order, axis " + ("1" if axis == "A" else "2"))
            for p in range(4):
                for q in range(4 - p):
                    if p + q >= 2:
                        h[f"{axis}_{p}_{q}"] = float(terms.get((p, q), 0.0))
    h.add_comment("Simulated astrometric solution (pc_gpu.sim), astrometry.net .wcs layout")
    return h


def _wcs_from_header(header):
    import warnings

    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(header)


# --------------------------------------------------------------------------- PSF and apertures

def _erf(x):
    from scipy.special import erf

    return erf(x)


def _pixel_profile(centre, sigma, start, n):
    """Fraction of a unit 1-D Gaussian in pixels start..start+n-1 (edges at +-0.5): (nstar, n)."""
    edges = start[:, None] + np.arange(n + 1)[None, :] - 0.5 - centre[:, None]
    cdf = 0.5 * _erf(edges / (np.sqrt(2.0) * sigma[:, None]))
    return np.diff(cdf, axis=1)


def _psf_box(x, y, sigma, hw):
    """Pixel-integrated PSF (fractions of total flux) in a (2hw+1)^2 box around each star.

    Returns the boxes (nstar, 2hw+1, 2hw+1) and their lower-left pixel (ix0, iy0).
    """
    ix0 = np.rint(x).astype(np.int64) - hw
    iy0 = np.rint(y).astype(np.int64) - hw
    n = 2 * hw + 1
    box = np.zeros((x.size, n, n))
    for weight, scale in ((1.0 - _WING_WEIGHT, 1.0), (_WING_WEIGHT, _WING_SCALE)):
        px = _pixel_profile(x, sigma * scale, ix0, n)
        py = _pixel_profile(y, sigma * scale, iy0, n)
        box += weight * py[:, :, None] * px[:, None, :]
    return box, ix0, iy0


def _circle_lower_left_area(u, v, r):
    """Area of the disc of radius r at the origin with X <= u and Y <= v (exact)."""
    def prim(a):  # integral of sqrt(r^2 - t^2) from 0 to a, |a| <= r
        return 0.5 * (a * np.sqrt(np.maximum(r * r - a * a, 0.0)) + r * r * np.arcsin(a / r))

    uc = np.clip(u, -r, r)
    vc = np.clip(v, -r, r)
    w = np.sqrt(np.maximum(r * r - vc * vc, 0.0))
    base = prim(uc) - prim(-r)
    outer = (prim(np.minimum(uc, -w)) - prim(-r)) + (prim(np.maximum(uc, w)) - prim(w))
    inner = vc * (np.clip(uc, -w, w) + w)
    return base + np.sign(vc) * outer + inner


def aperture_fractions(x, y, sigma, radii):
    """Fraction of each star's flux inside circular apertures, as an exact-overlap sum would see it.

    The pixel-integrated PSF in each pixel is weighted by the exact area of the pixel inside the
    circle (closed-form circle/rectangle overlap), independent of any pipeline code.

    Parameters
    ----------
    x, y : array_like
        Star positions, pixels (0-indexed, pixel centres at integers).
    sigma : array_like
        Core Gaussian sigma of each star, pixels.
    radii : sequence of float
        Aperture radii, pixels (at most `_APER_HW` - 1).

    Returns
    -------
    numpy.ndarray
        (nstar, nradii) fractions.
    """
    x, y, sigma = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, sigma))
    box, ix0, iy0 = _psf_box(x, y, sigma, _APER_HW)
    n = 2 * _APER_HW + 1
    ue = (ix0[:, None] + np.arange(n + 1)[None, :] - 0.5 - x[:, None])[:, None, :]
    ve = (iy0[:, None] + np.arange(n + 1)[None, :] - 0.5 - y[:, None])[:, :, None]
    out = np.empty((x.size, len(radii)))
    for k, r in enumerate(radii):
        g = _circle_lower_left_area(ue, ve, float(r))
        area = g[:, 1:, 1:] - g[:, :-1, 1:] - g[:, 1:, :-1] + g[:, :-1, :-1]
        out[:, k] = np.einsum("sij,sij->s", area, box)
    return out



# --------------------------------------------------------------------------- stars

def _field_stars(gaia_dir, wcs, camera, margin, max_g, min_g):
    ny, nx = camera.shape
    gx, gy = np.meshgrid(np.linspace(-margin, nx - 1 + margin, 60),
                         np.linspace(-margin, ny - 1 + margin, 60))
    ra, dec = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    import astropy.units as u

    pixels = np.unique(_healpix().lonlat_to_healpix(ra * u.deg, dec * u.deg))
    stars = read_chunk_tree(gaia_dir, pixels)
    keep = np.isfinite(stars["PHOT_G_MEAN_MAG"]) & (stars["PHOT_G_MEAN_MAG"] <= max_g)
    if min_g is not None:
        keep &= stars["PHOT_G_MEAN_MAG"] >= min_g
    return stars[keep]


def _dome_factor(camera, x, y):
    """Transmission of the dome edge: a large disc off the lower-left corner, soft edge."""
    ny, nx = camera.shape
    d = np.hypot(x + 0.25 * nx, y + 0.35 * ny) - 0.75 * ny
    return _DOME_TRANSMISSION + (1 - _DOME_TRANSMISSION) / (1 + np.exp(-np.clip(d / 8.0, -50, 50)))


def _add_stamps(signal, box, ix0, iy0, flux, camera):
    """Add PSF boxes (fractions, lower-left pixel ix0, iy0) times `flux` into the flat `signal`."""
    ny, nx = camera.shape
    size = box.shape[1]
    cols = ix0[:, None, None] + np.arange(size)[None, None, :]
    rows = iy0[:, None, None] + np.arange(size)[None, :, None]
    ok = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
    values = box * flux[:, None, None]
    signal += np.bincount((rows * nx + cols)[ok], weights=values[ok], minlength=ny * nx)
