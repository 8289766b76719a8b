"""A wrong astrometric solution for a simulated frame: the true WCS shifted, turned, scaled and
distorted, as an imperfect external solve would give it (the truth table keeps the real one)."""

import numpy as np

from ..camera import EL_NINO

__all__ = ["perturb_wcs_header"]


def perturb_wcs_header(wcs_header, camera=EL_NINO, *, shift_pix=(0.0, 0.0), rotation_deg=0.0,
                       scale_error=0.0, sip_pix=0.0):
    """A copy of a ``.wcs`` header whose solution is wrong by known amounts.

    Parameters
    ----------
    wcs_header : astropy.io.fits.Header
        The true solution (TAN or TAN-SIP, as `render.make_wcs` writes it).
    camera : pc_gpu.camera.Camera
        Gives the image size for the distortion's scale.
    shift_pix : (float, float)
        Every star is predicted this far from where it is, pixels (x, y).
    rotation_deg : float
        Extra rotation of the pixel grid about the reference pixel, deg.
    scale_error : float
        Fractional error of the pixel scale (0.005: the solution says 0.5% larger pixels).
    sip_pix : float
        A wrong second- and third-order distortion added to the SIP polynomials, about this
        many pixels at the image corners (0: none).

    Returns
    -------
    astropy.io.fits.Header
    """
    h = wcs_header.copy()
    h["CRPIX1"] = h["CRPIX1"] + float(shift_pix[0])
    h["CRPIX2"] = h["CRPIX2"] + float(shift_pix[1])
    cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    t = np.radians(rotation_deg)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cd = (1.0 + scale_error) * cd @ turn
    for (i, j), value in np.ndenumerate(cd):
        h[f"CD{i + 1}_{j + 1}"] = float(value)
    if sip_pix:
        half = float(np.hypot(camera.nx, camera.ny)) / 2.0
        extra = {"A": {(2, 0): 0.5, (0, 2): -0.4, (2, 1): 0.3, (0, 3): -0.2},
                 "B": {(1, 1): 0.6, (3, 0): -0.3, (1, 2): 0.25}}
        for axis, terms in extra.items():
            h[f"{axis}_ORDER"] = max(int(h.get(f"{axis}_ORDER", 0)), 3)
            for p in range(4):
                for q in range(4 - p):
                    if p + q >= 2:
                        key = f"{axis}_{p}_{q}"
                        h[key] = float(h.get(key, 0.0)) + sip_pix * terms.get((p, q), 0.0) / half ** (p + q)
        for axis in ("1", "2"):
            name = "RA---TAN-SIP" if axis == "1" else "DEC--TAN-SIP"
            h[f"CTYPE{axis}"] = name
    h.add_comment(f"perturbed: shift {tuple(shift_pix)} pix, rotation {rotation_deg} deg, "
                  f"scale {scale_error:+g}, distortion {sip_pix} pix")
    return h
