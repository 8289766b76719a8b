"""A frame's astrometry under `--solve auto|always`: check the given `.wcs`, or solve.

- auto: a given WCS is checked first on the central `CHECK_WINDOW` pixels of the image (stars
  detected there against the Gaia stars it predicts there: `check_given_wcs`, a few ms); when
  that fails, stars are detected on the whole detrended image and the given WCS is verified
  against them (`verify.verify_wcs`); a frame with no `.wcs`, or whose `.wcs` fails, is
  plate-solved from the header pointing (RADEG, DECDEG). When a failed `.wcs` cannot be replaced by a solution (a
  clouded frame shows too few stars to verify anything), the given one is kept and the header
  says it was not verified.
- always: the frame is solved whatever `.wcs` there is.

No solution for a frame without a usable `.wcs` raises `solve.NoSolution` naming the file.
"""

import dataclasses
import logging

import numpy as np

from .detect import detect_stars
from .solve import NoSolution, solve_detections
from .verify import MAX_DETECTIONS, CATALOG_PER_DETECTION, verify_positions, verify_wcs

__all__ = ["FrameAstrometry", "frame_astrometry", "check_given_wcs", "header_pointing", "CHECK_WINDOW"]

log = logging.getLogger(__name__)

CHECK_WINDOW = 768  # pixels: side of the central square where a given WCS is checked first
CHECK_MIN_FRACTION = 0.5  # ...and passes only when at least this fraction of the detections match


@dataclasses.dataclass(frozen=True)
class FrameAstrometry:
    """The WCS a frame is reduced with and where it came from: origin 'given' or 'solved';
    verified (the WCS passed verification); n_matched, rms_pix (detected stars on Gaia stars and
    their rms distance, pixels); solve (the `solve.SolveResult` when solved, else None)."""

    wcs: object
    origin: str
    verified: bool
    n_matched: int
    rms_pix: float
    solve: object = None

    def header_cards(self, *, origin=True):
        """(name, value, comment) cards for the output headers (WCSORIG only with `origin`: the
        pointing record carries it when the WCS is refined)."""
        rms = float(self.rms_pix) if np.isfinite(self.rms_pix) else -1.0
        cards = [("WCSORIG", self.origin, "WCS: given .wcs, or solved by pc_gpu")] if origin else []
        cards += [("WCSVERIF", bool(self.verified), "WCS verified against detected stars"),
                  ("WCSNMAT", int(self.n_matched), "detected stars matched to Gaia"),
                  ("WCSRMS", round(rms, 4), "rms distance of those matches, pix (-1: none)")]
        if self.solve is not None:
            cards.append(("SOLVTIME", round(self.solve.seconds, 4), "plate solve wall time, s"))
        return cards


def header_pointing(header):
    """(RADEG, DECDEG) in deg from a raw header, or (None, None) when absent or not numbers."""
    try:
        ra, dec = float(header["RADEG"]), float(header["DECDEG"])
    except (KeyError, TypeError, ValueError):
        return None, None
    if not (np.isfinite(ra) and np.isfinite(dec) and -90 <= dec <= 90):
        return None, None
    return ra, dec


def frame_astrometry(frame, wcs, image, *, mode, gaia_dir, camera, backend):
    """The FrameAstrometry of a frame (`rawio.RawFrame`) with its given WCS (None: none) and
    detrended `image` (device array of `backend`), under `mode` 'auto' or 'always'."""
    if mode == "always":
        wcs = None
    detections = detect_stars(image, backend)
    shape = camera.shape
    if wcs is not None and mode == "auto":
        check = verify_wcs(detections, wcs, gaia_dir, shape)
        if check.ok:
            return FrameAstrometry(wcs, "given", True, check.n_matched, check.rms_pix)
        log.warning("%s: the .wcs fails verification (%s); solving the frame", frame.path, check.reason)
    ra, dec = header_pointing(frame.header)
    try:
        result = solve_detections(detections, shape, gaia_dir=gaia_dir, ra_hint=ra, dec_hint=dec,
                                  pixscale_arcsec=camera.pixel_scale_arcsec)
    except NoSolution as exc:
        if wcs is not None:
            log.warning("%s: %s; keeping the given .wcs, unverified", frame.path, exc)
            return FrameAstrometry(wcs, "given", False, check.n_matched, check.rms_pix)
        raise NoSolution(f"{frame.path}: {exc}") from None
    return FrameAstrometry(result.wcs, "solved", True, result.n_matched, result.rms_pix, result)


def check_given_wcs(image, stars, camera, backend, *, radius_pix=2.5):
    """Quick verification of a given WCS (`verify.verify_positions`) on the central
    CHECK_WINDOW x CHECK_WINDOW pixels of the detrended `image` (device array of `backend`):
    the stars detected there against the positions the WCS predicts there for the frame's Gaia
    stars (`gaia.star_list` table: x_gaia_guess, y_gaia_guess, PHOT_G_MEAN_MAG), of which at
    least CHECK_MIN_FRACTION must match. Returns a `verify.Verification`."""
    ny, nx = camera.shape
    side_y, side_x = min(CHECK_WINDOW, ny), min(CHECK_WINDOW, nx)
    y0, x0 = (ny - side_y) // 2, (nx - side_x) // 2
    window = backend.xp.ascontiguousarray(image[y0:y0 + side_y, x0:x0 + side_x])
    detections = detect_stars(window, backend)
    n = min(len(detections), MAX_DETECTIONS)
    x, y = stars["x_gaia_guess"] - x0, stars["y_gaia_guess"] - y0
    inside = np.flatnonzero((x > -0.5) & (y > -0.5) & (x < side_x - 0.5) & (y < side_y - 0.5))
    inside = inside[np.argsort(stars["PHOT_G_MEAN_MAG"][inside], kind="stable")[:CATALOG_PER_DETECTION * max(n, 1)]]
    result = verify_positions(detections.x[:n], detections.y[:n], x[inside], y[inside], (side_y, side_x),
                              radius_pix=radius_pix)
    if result.ok and result.n_matched < CHECK_MIN_FRACTION * n:
        # right near the centre only (e.g. turned): a good WCS matches nearly every detection
        return dataclasses.replace(result, ok=False, reason=f"only {result.reason}")
    return result
