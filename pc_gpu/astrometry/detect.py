"""Star detection on a detrended image (for plate solving and for checking a WCS).

Two kernels (`pc_gpu.kernels.detect_core`, one source for CPU and CUDA) find the peaks: a
sampled median and noise per 32 x 32 block (the grid then median-filtered over 3 x 3 blocks on
the host, so that a bright star or the dome edge in one block does not set its level), then
every pixel tested as a star's peak against its local background (the brightest peak of each
run of 8 pixels of a row is kept). The few peaks are then measured on the host: a 3 x 3
flux-weighted centroid above the local background, and one detection kept
per star (the brightest within 4 pixels).
"""

import logging
from dataclasses import dataclass

import numpy as np

from ..kernels.detect_core import HALF_BOX, RUN, detect_kernels
from ..streaks import kernel_target

__all__ = ["Detections", "detect_stars", "warm_up"]

log = logging.getLogger(__name__)

BLOCK = 32  # background block side, pixels
STEP = 4  # background sample stride within a block, pixels


@dataclass(frozen=True)
class Detections:
    """Stars found on an image, brightest first: x, y (pixels, 0-indexed, x = column), flux
    (ADU above the local background in a 5 x 5 box), and the median noise per pixel (ADU)."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    noise_adu: float

    def __len__(self):
        return len(self.x)


def _median3(grid):
    """3 x 3 median filter of a small 2-d grid (edges repeated; NaN blocks take the grid's median)."""
    padded = np.pad(grid, 1, mode="edge")
    ny, nx = grid.shape
    stack = np.stack([padded[j:j + ny, i:i + nx] for j in range(3) for i in range(3)])
    if not np.isnan(stack).any():
        return np.median(stack, axis=0)
    # blocks with no finite value borrow the level of the whole grid
    stack = np.where(np.isnan(stack), np.nanmedian(grid), stack)
    return np.median(stack, axis=0)


def detect_stars(image, backend=None, *, k_sigma=5.0):
    """Find stars on a detrended image.

    Parameters
    ----------
    image : 2-d float32 array (numpy, or the backend's device array)
        Detrended image, ADU.
    backend : pc_gpu.backend.Backend, optional
        Whose kernels run (default: the CPU kernels on a numpy image).
    k_sigma : float
        Detection threshold: the 3 x 3 sum above the local background, in units of its noise.

    Returns
    -------
    Detections
    """
    if backend is None:
        xp, kern, to_host = np, detect_kernels("cpu"), np.asarray
        image = np.ascontiguousarray(image, dtype=np.float32)
    else:
        xp, kern, to_host = backend.xp, detect_kernels(kernel_target(backend)), backend.to_host
    if image.ndim != 2 or min(image.shape) < 2 * HALF_BOX + 1:
        raise ValueError(f"star detection needs a 2-d image of at least 9 x 9 pixels, not {image.shape}")
    ny, nx = image.shape
    nby, nbx = -(-ny // BLOCK), -(-nx // BLOCK)
    scratch = xp.empty((nby * nbx, (BLOCK // STEP + 1) ** 2), np.float32)
    bkg = xp.empty((nby, nbx), np.float32)
    sig = xp.empty((nby, nbx), np.float32)
    kern.block_background(image, BLOCK, STEP, scratch, bkg, sig)
    bkg_h, sig_h = to_host(bkg), to_host(sig)
    if not (np.isfinite(sig_h) & (sig_h > 0)).any():
        return Detections(np.zeros(0), np.zeros(0), np.zeros(0), float("nan"))
    bkg_h, sig_h = _median3(bkg_h), _median3(sig_h)
    bkg_h, sig_h = (np.ascontiguousarray(a, np.float32) for a in (bkg_h, sig_h))
    if backend is not None:
        bkg, sig = backend.asarray(bkg_h), backend.asarray(sig_h)
    else:
        bkg, sig = bkg_h, sig_h
    nruns = -(-nx // RUN)
    out = xp.empty((ny, nruns), np.float32)
    where = xp.empty((ny, nruns), np.int32)
    kern.peaks(image, bkg, sig, BLOCK, float(k_sigma), out, where)
    flat = xp.flatnonzero(out)
    flux = to_host(out.ravel()[flat]).astype(np.float64)
    iy, run = (to_host(a) for a in xp.divmod(flat, nruns))
    ix = run * RUN + to_host(where.ravel()[flat])
    # 3 x 3 centroid above the block background
    wy, wx = np.mgrid[-1:2, -1:2]
    rows = (iy[:, None] + wy.ravel()[None, :]).ravel()
    cols = (ix[:, None] + wx.ravel()[None, :]).ravel()
    if len(flat):
        win = to_host(image[xp.asarray(rows), xp.asarray(cols)]).reshape(len(flat), 9).astype(np.float64)
    else:
        win = np.zeros((0, 9))
    w = np.clip(win - bkg_h[np.minimum(iy // BLOCK, nby - 1), np.minimum(ix // BLOCK, nbx - 1)][:, None], 0, None)
    norm = np.where(w.sum(axis=1) > 0, w.sum(axis=1), 1.0)
    x = ix + (w * wx.ravel()).sum(axis=1) / norm
    y = iy + (w * wy.ravel()).sum(axis=1) / norm
    order = np.argsort(-flux, kind="stable")
    x, y, flux = x[order], y[order], flux[order]
    keep = _isolated(x, y, radius=HALF_BOX)
    x, y, flux = x[keep], y[keep], flux[keep]
    noise = float(np.median(sig_h))
    log.debug("detected %d stars (%.1f sigma, noise %.2f ADU/pix)", len(x), k_sigma, noise)
    return Detections(x, y, flux, noise)


def _isolated(x, y, *, radius):
    """Mask keeping each detection unless a brighter one (earlier in the list) lies within
    `radius` pixels (the several peaks of one saturated star)."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(x), bool)
    if len(x) < 2:
        return keep
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray")
    if len(pairs):
        pairs = np.sort(pairs, axis=1)
        # a detection goes when any brighter one within the radius is itself kept; one pass in
        # brightness order settles chains
        later = {}
        for i, j in pairs:
            later.setdefault(j, []).append(i)
        for j in sorted(later):
            if any(keep[i] for i in later[j]):
                keep[j] = False
    return keep


def warm_up(backend=None):
    """Compile (or load from the disk cache) the detection kernels on a small image."""
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 5.0, (64, 80)).astype(np.float32)
    img[30, 40] += 500.0
    if backend is not None:
        img = backend.asarray(img)
    return detect_stars(img, backend)
