"""Multi-aperture photometry with an annulus background."""

import numpy as np

__all__ = ["aperture_photometry"]


def aperture_photometry(image, x, y, camera, backend, *, radii, bg_sigclip=False, frame=None):
    """Aperture sums and annulus background at the given centres.

    Parameters
    ----------
    image : device array
        Detrended image, ADU.
    x, y : array
        Centres, pixels.
    radii : sequence of float
        Aperture radii, pixels.
    bg_sigclip : bool
        Use the 3-sigma clipped median of the annulus (else the plain median).
    frame : int array, optional
        Per star, its frame in `image`, then a stack (n_frames, ny, nx): the stars of several
        frames in one kernel launch.

    Returns
    -------
    dict of host arrays: aperture_sum (n, n_radii) ADU (exact circle/pixel overlap),
    bkg_median (n,) ADU/pixel (pixels whose centres lie in the camera's annulus),
    aper_bkg (n, n_radii) = bkg_median * pi r^2, flux_adu = aperture_sum - aper_bkg,
    n_annulus (n,) pixels behind each median.
    """
    radii = np.asarray(radii, dtype=np.float64)
    r_in, r_out = camera.annulus_pix
    result = backend.kernels.aperture_photometry_frames(
        image, None if frame is None else backend.asarray(np.asarray(frame, np.int32)), backend.asarray(np.ascontiguousarray(x, dtype=np.float64)),
        backend.asarray(np.ascontiguousarray(y, dtype=np.float64)),
        backend.asarray(radii), float(r_in), float(r_out), bool(bg_sigclip))
    sums = backend.to_host(result[0]).astype(np.float64)
    bkg = backend.to_host(result[1]).astype(np.float64)
    aper_bkg = bkg[:, None] * (np.pi * radii**2)[None, :]
    return {"aperture_sum": sums, "bkg_median": bkg, "aper_bkg": aper_bkg, "flux_adu": sums - aper_bkg,
            "n_annulus": backend.to_host(result[2]).astype(np.int64)}
