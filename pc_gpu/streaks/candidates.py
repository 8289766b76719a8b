"""Streak candidates: block sums, background cells, star masks and the line transform
that turns the block signal-to-noise image into seed segments."""

import numpy as np

from ..kernels.streak_core import SEED_LEVEL

def _clean_cells(med, mad, params):
    """Fill cells without statistics, mask cells on steep gradients (host, tiny arrays).

    Returns (bkg, sigma_block_mean, masked) per cell."""
    from scipy import ndimage

    sig = 1.4826 * mad
    good = np.isfinite(med) & np.isfinite(sig) & (sig > 0)
    if not good.any():
        return None
    fill_med = float(np.median(med[good]))
    fill_sig = float(np.median(sig[good]))
    bkg = np.where(good, med, fill_med)
    sig = np.where(good, sig, fill_sig)
    # a cell's sigma is a noisy estimate: smooth it with its neighbours (robustly)
    sig = ndimage.median_filter(sig, size=3, mode="nearest")
    pad = np.pad(bkg, 1, mode="edge")
    diff = np.zeros_like(bkg)
    ny, nx = bkg.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                diff = np.maximum(diff, np.abs(pad[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx] - bkg))
    steep = diff > params.gradient_sigma * sig
    masked = ndimage.binary_dilation(steep | ~good, structure=np.ones((3, 3), bool))
    return bkg, sig, masked


def _upsample(xp, cells, c, nby, nbx):
    """Bilinear interpolation of a cell map (cell centres) onto the block grid."""
    ncy, ncx = cells.shape
    cells = xp.asarray(cells, dtype=xp.float32)

    def axis(n, nc):
        u = (xp.arange(n, dtype=xp.float32) + 0.5) / c - 0.5
        i0 = xp.clip(xp.floor(u), 0, nc - 1).astype(xp.int64)
        i1 = xp.minimum(i0 + 1, nc - 1)
        f = xp.clip(u - i0, 0.0, 1.0).astype(xp.float32)
        return i0, i1, f

    y0, y1, fy = axis(nby, ncy)
    x0, x1, fx = axis(nbx, ncx)
    top = cells[y0][:, x0] * (1 - fx) + cells[y0][:, x1] * fx
    bot = cells[y1][:, x0] * (1 - fx) + cells[y1][:, x1] * fx
    return (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(xp.float32)


def _radius_to_noise(peak, scale, sigma_pix):
    """Radius (pix) where a Gaussian of `scale` (pix) and `peak` (ADU) falls to half the pixel
    noise `sigma_pix` (ADU); 0 where it starts below."""
    ratio = peak / (0.5 * max(sigma_pix, 1e-6))
    return scale * np.sqrt(2 * np.log(np.maximum(ratio, 1.0)))


def _star_radii(flux_adu, sigma_pix, params):
    """Block-mask radius (pix) of each star from its total flux (ADU): where a wing of
    `star_wing_pix` holding `star_wing_fraction` of it falls to half the pixel noise."""
    f = np.asarray(flux_adu, np.float64)
    f = np.where(np.isfinite(f) & (f > 0), f, 0.0)
    w = params.star_wing_pix
    r = _radius_to_noise(params.star_wing_fraction * f / (2 * np.pi * w * w), w, sigma_pix)
    return np.maximum(r, params.star_mask_min_pix)


def _star_pixel_radii(flux_adu, sigma_pix, params):
    """Pixel-mask radius (pix) of each star, for a streak's ends and measurements: where its
    core (the flux outside the wing, a Gaussian of half the wing's scale) or its wing falls to
    half the pixel noise, at least 2 pix: smaller than the block mask's 4 pix for faint stars,
    which would otherwise hide 8 pix of a bright streak ending on one."""
    f = np.asarray(flux_adu, np.float64)
    f = np.where(np.isfinite(f) & (f > 0), f, 0.0)
    w, s = params.star_wing_pix, 0.5 * params.star_wing_pix
    r_wing = _radius_to_noise(params.star_wing_fraction * f / (2 * np.pi * w * w), w, sigma_pix)
    r_core = _radius_to_noise((1.0 - params.star_wing_fraction) * f / (2 * np.pi * s * s), s, sigma_pix)
    return np.maximum(np.maximum(r_core, r_wing), 2.0)


_WORKSPACE = {}


def _workspace(xp, key, size, dtype):
    """A reused flat buffer (fresh large allocations cost page faults on every frame)."""
    k = (xp.__name__, key, np.dtype(dtype).str)
    buf = _WORKSPACE.get(k)
    if buf is None or buf.size < size:
        buf = xp.empty(size, dtype=dtype)
        _WORKSPACE[k] = buf
    return buf[:size]


def _line_sums(z, kern, xp):
    """Yield, for each of the four orientations, the best 16-block line sum at every block and
    the last stored level (to recover the seeds' slopes; valid until the next orientation)."""
    n = 1 << SEED_LEVEL
    for o in range(4):
        a = z if o == 0 else z[::-1] if o == 1 else z.T if o == 2 else z.T[::-1]
        h, w = a.shape
        size = (h + n) * (w + n)
        prev = _workspace(xp, "lvl0", size, np.float32).reshape(1, h + n, w + n)
        prev[...] = 0
        prev[0, :h, :w] = a
        for k in range(1, SEED_LEVEL):
            nxt = _workspace(xp, ("lvl", k), size << k, np.float32).reshape(1 << k, h + n, w + n)
            kern.dyadic(prev, nxt, 1 << (k - 1), h, w)
            prev = nxt
        best = _workspace(xp, "best", h * w, np.float32).reshape(h, w)
        kern.best_line(prev, 1 << (SEED_LEVEL - 1), best)
        yield best, prev


def _seed_slopes(prev, ys, xs, xp, to_host):
    """Slope (rise, 0..15) of the best last-level line at each seed start (ys, xs)."""
    half = 1 << (SEED_LEVEL - 1)
    s = xp.arange(2 * half)
    sh = s >> 1
    yy, xx = xp.asarray(ys)[:, None], xp.asarray(xs)[:, None]
    sums = prev[sh[None, :], yy, xx] + prev[sh[None, :], yy + s[None, :] - sh[None, :], xx + half]
    return to_host(xp.argmax(sums, axis=1))


def _seed_geometry(o, ys, xs, s, nby, nbx, b):
    """Seed segments (x0, y0, x1, y1) in full-resolution pixels from oriented block indices."""
    n = (1 << SEED_LEVEL) - 1
    if o == 0:
        X0, Y0, X1, Y1 = xs, ys, xs + n, ys + s
    elif o == 1:
        X0, Y0, X1, Y1 = xs, nby - 1 - ys, xs + n, nby - 1 - (ys + s)
    elif o == 2:
        X0, Y0, X1, Y1 = ys, xs, ys + s, xs + n
    else:
        X0, Y0, X1, Y1 = nbx - 1 - ys, xs, nbx - 1 - (ys + s), xs + n
    f = lambda v: (np.asarray(v, np.float64) + 0.5) * b - 0.5  # noqa: E731
    return f(X0), f(Y0), f(X1), f(Y1)
