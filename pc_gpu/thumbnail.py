"""A small preview of the detrended image: block-averaged on the device, asinh-stretched JPEG."""

import numpy as np

__all__ = ["bin_image", "stretch", "write_thumbnail", "THUMBNAIL_BIN"]

THUMBNAIL_BIN = 8  # pixels per side of a thumbnail pixel


def bin_image(image, factor, xp=np):
    """Mean of `factor` x `factor` blocks (edges that do not fill a block are dropped).

    Parameters
    ----------
    image : 2-d array (numpy or cupy), ADU
    factor : int
    xp : array module of `image`

    Returns
    -------
    array of shape (ny // factor, nx // factor), float32, same module as `image`
    """
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    # rows first: a reduction over a middle axis reads the image once, contiguously; the
    # columns are then summed on an array `factor` times smaller
    rows = image[:ny, :nx].reshape(ny // factor, factor, nx).sum(axis=1, dtype=xp.float32)
    return rows.reshape(ny // factor, nx // factor, factor).sum(axis=2) / np.float32(factor * factor)


def stretch(binned):
    """asinh stretch to 8 bits: black a little below the median, soft knee at a few sigma.

    Parameters
    ----------
    binned : 2-d numpy array, ADU

    Returns
    -------
    2-d uint8 array, the first row at the top (FITS row 0 is at the bottom)
    """
    sample = binned[::3, ::3]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(binned.shape, np.uint8)
    lo, median, hi, top = np.percentile(finite, [16.0, 50.0, 84.0, 99.9])
    sigma = max(0.5 * (hi - lo), 1e-6)
    black = median - sigma
    soft = 3.0 * sigma
    scale = np.arcsinh(max(top - black, soft) / soft)
    values = np.arcsinh(np.clip(np.nan_to_num(binned, nan=black) - black, 0.0, None) / soft) / scale
    return (255.0 * np.clip(values, 0.0, 1.0) + 0.5).astype(np.uint8)[::-1]


def write_thumbnail(path, binned):
    """Write the binned image as an asinh-stretched 8-bit greyscale JPEG at `path`."""
    from PIL import Image

    Image.fromarray(stretch(np.asarray(binned)), mode="L").save(path, format="JPEG", quality=88)
