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
    """Index of the guess nearest to each point (x, y): a KD-tree query."""
    from scipy.spatial import cKDTree

    if len(x_guess) == 0:
        return np.zeros(len(x), np.int64)
    _, index = cKDTree(np.column_stack([x_guess, y_guess])).query(np.column_stack([x, y]))
    return index.astype(np.int64)


def wrong_source_flags(x_guess, y_guess, xcentroid, ycentroid):
    """1 where the Gaia guess nearest to a star's centroid belongs to another star, else 0."""
    x_guess, y_guess = np.asarray(x_guess, np.float64), np.asarray(y_guess, np.float64)
    nearest = nearest_guess(x_guess, y_guess, np.asarray(xcentroid, np.float64), np.asarray(ycentroid, np.float64))
    return (nearest != np.arange(len(x_guess))).astype(np.int64)
