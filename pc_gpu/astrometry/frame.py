"""A frame's astrometry under `--solve auto|always`: check the given `.wcs`, or solve.

- auto: stars are detected on the detrended image and the given WCS is verified against them
  (`verify.verify_wcs`); a frame with no `.wcs`, or whose `.wcs` fails, is plate-solved from the
  header pointing (RADEG, DECDEG). When a failed `.wcs` cannot be replaced by a solution (a
  clouded frame shows too few stars to verify anything), the given one is kept and the header
  says it was not verified.
- always: the frame is solved whatever `.wcs` there is.

No solution for a frame without a usable `.wcs` raises `solve.NoSolution` naming the file.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .detect import detect_stars
from .solve import NoSolution, solve_detections
from .verify import verify_wcs

__all__ = ["FrameAstrometry", "frame_astrometry", "header_pointing"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
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

    def header_cards(self):
        """(name, value, comment) cards for the output headers; a solved WCS is included."""
        rms = float(self.rms_pix) if np.isfinite(self.rms_pix) else -1.0
        cards = [("WCSORIG", self.origin, "astrometry: given .wcs, or solved by pc_gpu"),
                 ("WCSVERIF", bool(self.verified), "WCS verified against detected stars"),
                 ("WCSNMAT", int(self.n_matched), "detected stars matched to Gaia"),
                 ("WCSRMS", round(rms, 4), "rms distance of those matches, pix (-1: none)")]
        if self.solve is not None:
            cards.append(("SOLVTIME", round(self.solve.seconds, 4), "plate solve wall time, s"))
            header = self.solve.wcs.to_header(relax=True)
            cards += [(c.keyword, c.value, c.comment) for c in header.cards
                      if c.keyword not in ("COMMENT", "HISTORY", "DATE-OBS", "MJD-OBS", "MJDREF")]
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
