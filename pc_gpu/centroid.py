"""Recentroiding of the Gaia stars and the wrong-source flag."""

import numpy as np

__all__ = ["max_centroid_shift", "recentroid", "nearest_guess", "wrong_source_flags"]


def _cmaxshift_centre(camera):
    """The reference point of the maximum-shift ramp, (nx/2 + 0.5, ny/2 + 0.5), as the original."""
    return camera.nx / 2 + 0.5, camera.ny / 2 + 0.5


def max_centroid_shift(x, y, camera):
    """Largest allowed centroid shift per star (pixels): clip(2.5 + 2 r / r_max, 2.5, 4.5), with r
    the distance from (nx/2 + 0.5, ny/2 + 0.5) and r_max that point's distance from the origin."""
    xc, yc = _cmaxshift_centre(camera)
    r = np.hypot(np.asarray(x) - xc, np.asarray(y) - yc)
    return np.clip(2.5 + 2.0 * r / np.hypot(xc, yc), 2.5, 4.5)


def recentroid(image, x_guess, y_guess, camera, backend, *, frame=None):
    """Flux-weighted centroids (pixels) from the Gaia guesses, on the detrended image.

    With `frame` (int per star), `image` is a stack (n_frames, ny, nx) and star s lies on
    image[frame[s]]: the stars of several frames in one kernel launch.

    Returns host arrays (xcentroid, ycentroid, qmaxshift); qmaxshift = 1 where the centroid
    wandered more than the allowed shift and the guess was kept.
    """
    xc, yc = _cmaxshift_centre(camera)
    x, y, q = backend.kernels.recentroid_frames(
        image, None if frame is None else backend.asarray(np.asarray(frame, np.int32)),
        backend.asarray(np.ascontiguousarray(x_guess, dtype=np.float64)),
        backend.asarray(np.ascontiguousarray(y_guess, dtype=np.float64)),
        camera.centroid_box_pix, camera.centroid_iterations, xc, yc, float(np.hypot(xc, yc)))
    return backend.to_host(x), backend.to_host(y), backend.to_host(q).astype(np.int64)


def nearest_guess(x_guess, y_guess, x, y):
    """Index of the guess nearest to each point (x, y); exact, like a KD-tree query.

    Guesses are binned on a square grid with cells as large as the farthest point-to-own-guess
    distance, so the nearest guess of a point always lies in the 3 x 3 cells around it.
    """
    n = len(x_guess)
    own = np.hypot(x - x_guess, y - y_guess)
    cell = max(float(np.max(own)) if n else 1.0, 1.0)
    gx, gy = np.floor(x_guess / cell).astype(np.int64), np.floor(y_guess / cell).astype(np.int64)
    width = int(gx.max() - gx.min()) + 3 if n else 1
    gx0, gy0 = gx.min() - 1 if n else 0, gy.min() - 1 if n else 0
    key = (gy - gy0) * width + (gx - gx0)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    px = np.floor(x / cell).astype(np.int64) - gx0
    py = np.floor(y / cell).astype(np.int64) - gy0
    best = np.arange(n)
    best_d2 = own**2
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            k = (py + dy) * width + (px + dx)
            lo, hi = np.searchsorted(sorted_key, k, "left"), np.searchsorted(sorted_key, k, "right")
            for j in range(int(np.max(hi - lo)) if n else 0):
                has = lo + j < hi
                cand = order[np.minimum(lo + j, n - 1)]
                d2 = (x - x_guess[cand]) ** 2 + (y - y_guess[cand]) ** 2
                better = has & ((d2 < best_d2) | ((d2 == best_d2) & (cand < best)))
                best = np.where(better, cand, best)
                best_d2 = np.where(better, d2, best_d2)
    return best


def wrong_source_flags(x_guess, y_guess, xcentroid, ycentroid):
    """1 where the Gaia guess nearest to a star's centroid belongs to another star, else 0."""
    x_guess, y_guess = np.asarray(x_guess, np.float64), np.asarray(y_guess, np.float64)
    nearest = nearest_guess(x_guess, y_guess, np.asarray(xcentroid, np.float64), np.asarray(ycentroid, np.float64))
    return (nearest != np.arange(len(x_guess))).astype(np.int64)
