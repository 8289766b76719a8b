"""Host-side helpers shared by both kernel sets: the bad-pixel gather, sky-region preparation,
order-statistic bookkeeping. Plain numpy; nothing here runs per pixel per frame."""

import weakref
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["BadPixelGather", "bad_pixel_gather", "SkyRegions", "prepare_sky_regions",
           "rank_indices", "key_to_float", "float_to_key", "sky_summary"]

KEY_BINS = 1 << 16


# --------------------------------------------------------------------------- bad pixels
@dataclass(frozen=True)
class BadPixelGather:
    """Precomputed static bad-pixel interpolation: a per-frame gather.

    Attributes
    ----------
    index : int64 (n,)
        Flat index of each bad pixel.
    nbr : int64 (n, 4)
        Flat indices of up to 4 good neighbours (left, right, below, above; unused slots point
        at the bad pixel itself with weight 0).
    weight : float32 (n, 4)
        Weights: value = sum(weight * image.flat[nbr]).
    shape : tuple
        Image shape (ny, nx) the gather was built for.
    """

    index: object
    nbr: object
    weight: object
    shape: tuple

    def __len__(self):
        return int(self.index.shape[0])

    def to(self, asarray):
        """The same gather with its arrays moved by `asarray` (e.g. `Backend.asarray`)."""
        return replace(self, index=asarray(self.index), nbr=asarray(self.nbr), weight=asarray(self.weight))


def _nearest_good(good, axis):
    """Index of the nearest good pixel at or before / at or after each pixel along `axis`
    (-1 / n where none)."""
    n = good.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    pos = np.arange(n).reshape(shape)
    before = np.maximum.accumulate(np.where(good, pos, -1), axis=axis)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(good, pos, n), axis=axis), axis=axis), axis=axis)
    return before, after


def _one_axis_weights(pos, before, after, n):
    """Neighbour positions and weights of linear interpolation along one axis, constant past the
    last good pixel; valid = False where the line has no good pixel."""
    has_b = before >= 0
    has_a = after < n
    span = np.where(has_b & has_a, after - before, 1).astype(np.float64)
    wa = np.where(has_b & has_a, (pos - before) / span, np.where(has_a, 1.0, 0.0))
    wb = np.where(has_b & has_a, (after - pos) / span, np.where(has_b, 1.0, 0.0))
    return np.where(has_b, before, pos), wb, np.where(has_a, after, pos), wa, has_b | has_a


def bad_pixel_gather(mask):
    """Precompute the interpolation of every bad pixel (mask != 0) from good pixels.

    Along its row: linear interpolation between the nearest good pixels on either side, the
    nearest good value where only one side has one; the same along its column; the result is
    the mean of the row and column estimates, or the one that exists (a pixel whose row and
    column are both entirely bad is set to 0). This is the intent of IDL's
    ``djs_maskinterp`` row/column average (the original's Python port returned the column
    estimate alone because it modified its input in place).

    Parameters
    ----------
    mask : ndarray (ny, nx)
        Nonzero marks a bad pixel.

    Returns
    -------
    BadPixelGather
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError("bad-pixel mask must be 2-D")
    ny, nx = mask.shape
    bad = mask != 0
    rows, cols = np.nonzero(bad)
    good = ~bad
    n = rows.size
    nbr = np.empty((n, 4), dtype=np.int64)
    weight = np.zeros((n, 4), dtype=np.float64)
    if n:
        # row direction (along x); only the rows/columns holding bad pixels are needed
        urows, rinv = np.unique(rows, return_inverse=True)
        bx, ax = _nearest_good(good[urows], axis=1)
        lb, wlb, la, wla, okx = _one_axis_weights(cols, bx[rinv, cols], ax[rinv, cols], nx)
        ucols, cinv = np.unique(cols, return_inverse=True)
        by, ay = _nearest_good(good[:, ucols], axis=0)
        db, wdb, da, wda, oky = _one_axis_weights(rows, by[rows, cinv], ay[rows, cinv], ny)
        scale_x = np.where(okx & oky, 0.5, np.where(okx, 1.0, 0.0))
        scale_y = np.where(okx & oky, 0.5, np.where(oky, 1.0, 0.0))
        nbr[:, 0] = rows * nx + lb
        nbr[:, 1] = rows * nx + la
        nbr[:, 2] = db * nx + cols
        nbr[:, 3] = da * nx + cols
        weight[:, 0] = wlb * scale_x
        weight[:, 1] = wla * scale_x
        weight[:, 2] = wdb * scale_y
        weight[:, 3] = wda * scale_y
    return BadPixelGather(index=(rows * nx + cols).astype(np.int64), nbr=nbr,
                          weight=weight.astype(np.float32), shape=(ny, nx))


# --------------------------------------------------------------------------- sky regions
@dataclass(frozen=True)
class SkyRegions:
    """Sky regions prepared for the order-statistics kernels (build once per camera).

    Every region is a union of "base" regions; each base region is a set of row runs
    [c0, c1) stored CSR-like (`run_ptr[b, row]` .. `run_ptr[b, row + 1]` index `run_c0`,
    `run_c1`). A full-frame region tiled exactly by rectangular regions (the four
    quadrants) is derived from them rather than read again.

    Attributes
    ----------
    shape : tuple
        Image shape (ny, nx).
    run_ptr : int64 (n_base, ny + 1)
    run_c0, run_c1 : int64 (n_runs,)
    region_bases : tuple of tuple of int
        Base regions making up each region.
    consumers : int64 (n_base, max_consumers)
        Regions each base region contributes to (-1 pads).
    sizes : int64 (n_regions,)
        Number of pixels of each region.
    """

    shape: tuple
    run_ptr: np.ndarray
    run_c0: np.ndarray
    run_c1: np.ndarray
    region_bases: tuple
    consumers: np.ndarray
    sizes: np.ndarray

    @property
    def n_regions(self):
        return len(self.region_bases)


def _runs_from_spec(spec, shape):
    """(rows, c0, c1) of the runs of one region spec."""
    ny, nx = shape
    if spec is None:
        return np.arange(ny), np.zeros(ny, np.int64), np.full(ny, nx, np.int64)
    if isinstance(spec, tuple) and len(spec) == 4:
        r0, r1, c0, c1 = (int(v) for v in spec)
        if not (0 <= r0 <= r1 <= ny and 0 <= c0 <= c1 <= nx):
            raise ValueError(f"rectangle {spec} lies outside a {shape} image")
        rows = np.arange(r0, r1)
        return rows, np.full(rows.size, c0, np.int64), np.full(rows.size, c1, np.int64)
    idx = np.asarray(spec).astype(np.int64, copy=False).ravel()
    if idx.size > 1 and np.any(np.diff(idx) <= 0):
        idx = np.unique(idx)
    if idx.size and (idx[0] < 0 or idx[-1] >= ny * nx):
        raise ValueError("flat pixel index outside the image")
    starts = np.flatnonzero(np.r_[True, (np.diff(idx) != 1) | (idx[1:] // nx != idx[:-1] // nx)])
    ends = np.r_[starts[1:], idx.size]
    first = idx[starts]
    rows = first // nx
    c0 = first % nx
    return rows, c0, c0 + (ends - starts)


def _is_tiling(rects, shape):
    """True when the rectangles are disjoint and cover the image."""
    ny, nx = shape
    area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in rects)
    if area != ny * nx:
        return False
    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            p, q = rects[a], rects[b]
            if max(p[0], q[0]) < min(p[1], q[1]) and max(p[2], q[2]) < min(p[3], q[3]):
                return False
    return True


def prepare_sky_regions(shape, specs, to_host=np.asarray):
    """Prepare region specs for `sky_statistics_regions`.

    Parameters
    ----------
    shape : tuple
        Image shape (ny, nx).
    specs : sequence
        Each None (whole image), (row0, row1, col0, col1) (a rectangle, end-exclusive), or an
        array of flat pixel indices (e.g. the science-field circle).
    to_host : callable
        Converts a device index array to numpy.

    Returns
    -------
    SkyRegions
    """
    ny, nx = shape
    specs = [s if s is None or isinstance(s, tuple) else to_host(s) for s in specs]
    specs = [tuple(int(v) for v in s) if isinstance(s, (tuple, list)) and len(s) == 4 else s for s in specs]
    rect_ids = [g for g, s in enumerate(specs) if isinstance(s, tuple)]
    full_derived = _is_tiling([specs[g] for g in rect_ids], shape) if rect_ids else False
    base_runs = []
    base_of = {}
    region_bases = []
    for g, s in enumerate(specs):
        if s is None and full_derived:
            region_bases.append(None)  # filled below
            continue
        base_of[g] = len(base_runs)
        base_runs.append(_runs_from_spec(s, shape))
        region_bases.append((base_of[g],))
    for g, s in enumerate(specs):
        if region_bases[g] is None:
            region_bases[g] = tuple(base_of[h] for h in rect_ids)
    n_base = len(base_runs)
    run_ptr = np.zeros((n_base, ny + 1), np.int64)
    c0s, c1s = [], []
    offset = 0
    for b, (rows, c0, c1) in enumerate(base_runs):
        order = np.argsort(rows, kind="stable")
        rows, c0, c1 = rows[order], c0[order], c1[order]
        counts = np.bincount(rows, minlength=ny)
        run_ptr[b, 1:] = offset + np.cumsum(counts)
        run_ptr[b, 0] = offset
        offset += rows.size
        c0s.append(c0)
        c1s.append(c1)
    consumers_l = [[] for _ in range(n_base)]
    for g, bases in enumerate(region_bases):
        for b in bases:
            consumers_l[b].append(g)
    width = max(1, max(len(c) for c in consumers_l)) if consumers_l else 1
    consumers = np.full((n_base, width), -1, np.int64)
    for b, cs in enumerate(consumers_l):
        consumers[b, : len(cs)] = cs
    base_sizes = [int(np.sum(c1 - c0)) for _, c0, c1 in base_runs]
    sizes = np.array([sum(base_sizes[b] for b in bases) for bases in region_bases], np.int64)
    return SkyRegions(shape=(ny, nx), run_ptr=run_ptr,
                      run_c0=np.concatenate(c0s) if c0s else np.zeros(0, np.int64),
                      run_c1=np.concatenate(c1s) if c1s else np.zeros(0, np.int64),
                      region_bases=tuple(region_bases), consumers=consumers, sizes=sizes)


_single_cache = {}


def prepare_one_region(shape, spec, to_host=np.asarray):
    """`prepare_sky_regions(shape, [spec])`, cached per index array object (the science-field
    index array is built once; do not modify it in place afterwards)."""
    if spec is None or isinstance(spec, tuple):
        return prepare_sky_regions(shape, [spec], to_host)
    key = (id(spec), tuple(shape))
    hit = _single_cache.get(key)
    if hit is not None and hit[0]() is spec:
        return hit[1]
    prepared = prepare_sky_regions(shape, [spec], to_host)
    try:
        ref = weakref.ref(spec)
    except TypeError:
        return prepared
    if len(_single_cache) > 16:
        _single_cache.clear()
    _single_cache[key] = (ref, prepared)
    return prepared


def rank_indices(n):
    """Indices into the sorted values of (0.16 n, 0.5 n, 0.84 n), rounded half to even as
    Python's round and clamped to [0, n - 1] (the original's sky_metrics)."""
    return tuple(min(max(int(round(f * n)), 0), n - 1) for f in (0.16, 0.5, 0.84))


def key_to_float(key):
    """float32 value of an order-preserving uint32 key."""
    key = int(key) & 0xFFFFFFFF
    bits = key ^ 0x80000000 if key >> 31 else (~key) & 0xFFFFFFFF
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def float_to_key(value):
    """Order-preserving uint32 key (int) of a float32 value."""
    b = int(np.array([value], dtype=np.float32).view(np.uint32)[0])
    return b ^ (0xFFFFFFFF if b >> 31 else 0x80000000)


def locate_ranks(h1_region):
    """For one region's level-1 histogram (int64, 65536): n, the rank indices, and for each
    rank its level-1 bin and its rank inside that bin."""
    cum = np.cumsum(h1_region)
    n = int(cum[-1])
    if n == 0:
        return 0, (), (), ()
    idx = rank_indices(n)
    bins = np.searchsorted(cum, np.array(idx), side="right")
    within = [int(i - (cum[b - 1] if b > 0 else 0)) for i, b in zip(idx, bins)]
    return n, idx, tuple(int(b) for b in bins), tuple(within)


def sky_summary(v16, v50, v84):
    """(median, sigma, lower bound, upper bound) in float32 exactly as the original computes
    them from the order statistics: sigma = (v84 - v16) / 2, bounds median -+ 5 sigma."""
    med = np.float32(v50)
    sig = (np.float32(v84) - np.float32(v16)) / np.float32(2.0)
    lo = med - np.float32(5.0) * sig
    hi = med + np.float32(5.0) * sig
    return med, np.float32(sig), np.float32(lo), np.float32(hi)
