"""Pattern data for plate solving: quads of bright Gaia stars with a code invariant to
translation, rotation and scale, built once from a Gaia chunk tree and cached on disk.

Pattern stars are the brightest few Gaia stars of each HEALPix cell (cells about a third of
the camera's short side), so that their density on the sky matches that of the few dozen
brightest stars a frame shows, wherever it points. A quad is two stars A, B (the backbone, a
fraction of the short side apart) and two stars C, D inside the circle of diameter AB; its code
is the position of C and D in the frame where A = (0, 0) and B = (1, 1) (astrometry.net's
geometric hash), made unique by ordering C, D by x and swapping A, B when xC + xD > 1. For each
star, backbones go to its `partners` brightest neighbours in range, and C, D come from the
`inner` brightest stars in the circle.

The cache (``$PC_GPU_CACHE_DIR/patterns/KEY.npz``, no pickle) is keyed on the chunk files'
names, sizes and modification times and on the parameters: a changed tree is rebuilt.
"""

import functools
import glob
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..calibcache import cache_root
from .tan import tangent_plane

__all__ = ["PatternParams", "PatternIndex", "pattern_params", "load_patterns", "quad_codes",
           "unit_vectors"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_STARS = 40
"""How many of a frame's brightest stars the pattern star density is matched to."""


@dataclass(frozen=True)
class PatternParams:
    """How pattern data are built (all derived from the camera's field by `pattern_params`).

    nside : HEALPix nside of the cells pattern stars are chosen in; stars_per_cell : brightest
    stars kept per cell; min_side_deg, max_side_deg : backbone length range, deg; partners :
    backbones per star; inner : brightest stars in a backbone's circle that make its quads.
    """

    nside: int
    stars_per_cell: int
    min_side_deg: float
    max_side_deg: float
    partners: int = 8
    inner: int = 3


def pattern_params(shape, pixscale_arcsec):
    """PatternParams for an image of `shape` (ny, nx) at `pixscale_arcsec` arcsec/pixel."""
    ny, nx = shape
    short = min(nx, ny) * pixscale_arcsec / 3600.0
    area = nx * ny * (pixscale_arcsec / 3600.0) ** 2
    nside = 1
    while np.degrees(np.sqrt(4 * np.pi / (12 * nside ** 2))) > short / 2.5:
        nside *= 2
    cell_area = 41252.96 / (12 * nside ** 2)
    per_cell = max(2, int(round(1.6 * IMAGE_STARS / area * cell_area)))
    return PatternParams(nside=nside, stars_per_cell=per_cell, min_side_deg=round(0.25 * short, 4),
                         max_side_deg=round(0.6 * short, 4))


@dataclass(frozen=True)
class PatternIndex:
    """Pattern stars (ra, dec in deg, G mag, unit vectors xyz) and quads ((n, 4) star indices
    A, B, C, D in code order; codes (n, 4); side_deg, the backbone length)."""

    params: PatternParams
    ra: np.ndarray
    dec: np.ndarray
    g: np.ndarray
    quads: np.ndarray
    codes: np.ndarray
    side_deg: np.ndarray

    @functools.cached_property
    def xyz(self):
        return unit_vectors(self.ra, self.dec)

    @functools.cached_property
    def star_tree(self):
        from scipy.spatial import cKDTree

        return cKDTree(self.xyz)

    @functools.cached_property
    def code_tree(self):
        from scipy.spatial import cKDTree

        return cKDTree(self.codes)


def unit_vectors(ra_deg, dec_deg):
    """(n, 3) unit vectors of sky positions (deg)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def quad_codes(x, y):
    """Codes of quads given as (n, 4) coordinates of A, B, C, D (any plane, any units).

    Returns (codes (n, 4): xC, yC, xD, yD; order (n, 4): the column order of A, B, C, D that
    gives the canonical code)."""
    z = np.asarray(x, np.float64) + 1j * np.asarray(y, np.float64)
    rows = np.arange(len(z))[:, None]
    order = np.tile(np.arange(4), (len(z), 1))

    def frame(order):
        za, zb = z[rows[:, 0], order[:, 0]], z[rows[:, 0], order[:, 1]]
        return (z[rows, order[:, 2:]] - za[:, None]) / (zb - za)[:, None] * (1 + 1j)

    cd = frame(order)
    swap = cd.real.sum(axis=1) > 1
    order[swap, :2] = order[swap, 1::-1]
    cd = frame(order)
    swap = cd[:, 0].real > cd[:, 1].real
    order[swap, 2:] = order[swap, :1:-1]
    cd[swap] = cd[swap, ::-1]
    return np.column_stack([cd[:, 0].real, cd[:, 0].imag, cd[:, 1].real, cd[:, 1].imag]), order


def _chunk_files(gaia_dir):
    return sorted(glob.glob(os.path.join(gaia_dir, "chunk-[0-9][0-9][0-9][0-9][0-9].fits")))


def _cache_path(gaia_dir, params, files):
    digest = hashlib.sha256(repr((FORMAT_VERSION, sorted(asdict(params).items()))).encode())
    for path in files:
        st = os.stat(path)
        digest.update(f"{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return os.path.join(cache_root(), "patterns", digest.hexdigest()[:24] + ".npz")


def _read_stars(gaia_dir, files):
    from ..gaia import read_gaia_chunks

    pixels = [int(os.path.basename(p)[6:11]) for p in files]
    stars = read_gaia_chunks(gaia_dir, pixels, columns=("RA", "DEC", "PHOT_G_MEAN_MAG"))
    ok = np.isfinite(stars["PHOT_G_MEAN_MAG"]) & np.isfinite(stars["RA"]) & np.isfinite(stars["DEC"])
    stars = stars[ok]
    return (stars["RA"].astype(np.float64), stars["DEC"].astype(np.float64),
            stars["PHOT_G_MEAN_MAG"].astype(np.float64))


def _pattern_stars(ra, dec, g, params):
    """Indices of the `stars_per_cell` brightest stars of each HEALPix cell."""
    from astropy_healpix import HEALPix
    import astropy.units as u

    cell = HEALPix(nside=params.nside, order="ring").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    order = np.lexsort((g, cell))
    sorted_cell = cell[order]
    first = np.searchsorted(sorted_cell, sorted_cell, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < params.stars_per_cell])


def _chord(deg):
    return 2 * np.sin(np.radians(deg) / 2)


def build_patterns(ra, dec, g, params):
    """Pattern stars and quads from star positions (deg) and G magnitudes; a PatternIndex."""
    from scipy.spatial import cKDTree

    keep = _pattern_stars(ra, dec, g, params)
    # brightest first: star index order is brightness order
    keep = keep[np.argsort(g[keep], kind="stable")]
    ra, dec, g = ra[keep], dec[keep], g[keep]
    xyz = unit_vectors(ra, dec)
    tree = cKDTree(xyz)
    pairs = tree.query_pairs(_chord(params.max_side_deg), output_type="ndarray")
    if len(pairs) == 0:
        return _index(params, ra, dec, g, np.zeros((0, 4), np.int32), np.zeros((0, 4)), np.zeros(0))
    d = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
    pairs = pairs[d >= _chord(params.min_side_deg)]
    # each star's `partners` brightest neighbours in range (index order = brightness)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.lexsort((both[:, 1], both[:, 0]))]
    first = np.searchsorted(both[:, 0], both[:, 0], side="left")
    chosen = both[(np.arange(len(both)) - first) < params.partners]
    chosen = np.unique(np.sort(chosen, axis=1), axis=0)
    # stars inside each backbone's circle
    mid = xyz[chosen[:, 0]] + xyz[chosen[:, 1]]
    mid /= np.linalg.norm(mid, axis=1)[:, None]
    radius = 0.5 * np.linalg.norm(xyz[chosen[:, 0]] - xyz[chosen[:, 1]], axis=1)
    inside = tree.query_ball_point(mid, radius)
    quads = []
    for (a, b), members in zip(chosen, inside):
        members = sorted(m for m in members if m != a and m != b)[: params.inner]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                quads.append((a, b, members[i], members[j]))
    quads = np.asarray(quads, np.int64).reshape(-1, 4)
    codes, order = _sky_codes(ra, dec, quads)
    quads = np.take_along_axis(quads, order, axis=1)
    side = np.degrees(2 * np.arcsin(0.5 * np.linalg.norm(xyz[quads[:, 0]] - xyz[quads[:, 1]], axis=1)))
    return _index(params, ra, dec, g, quads.astype(np.int32), codes, side)


def _sky_codes(ra, dec, quads):
    """Codes of quads of sky positions, each in the tangent plane at its backbone's middle."""
    if len(quads) == 0:
        return np.zeros((0, 4)), np.zeros((0, 4), np.int64)
    xyz = unit_vectors(ra, dec)
    mid = xyz[quads[:, 0]] + xyz[quads[:, 1]]
    ra0 = np.degrees(np.arctan2(mid[:, 1], mid[:, 0]))
    dec0 = np.degrees(np.arctan2(mid[:, 2], np.hypot(mid[:, 0], mid[:, 1])))
    xi, eta = tangent_plane(ra[quads], dec[quads], ra0[:, None], dec0[:, None])
    return quad_codes(xi, eta)


def _index(params, ra, dec, g, quads, codes, side):
    return PatternIndex(params=params, ra=ra, dec=dec, g=g, quads=quads,
                        codes=np.asarray(codes, np.float64), side_deg=np.asarray(side, np.float64))


def _save(path, index):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, params=np.array(list(asdict(index.params).values()), np.float64),
                     ra=index.ra, dec=index.dec, g=index.g, quads=index.quads, codes=index.codes,
                     side_deg=index.side_deg)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(path, params):
    with np.load(path, allow_pickle=False) as data:
        return _index(params, data["ra"], data["dec"], data["g"], data["quads"], data["codes"],
                      data["side_deg"])


_LOADED = {}


def load_patterns(gaia_dir, params):
    """The PatternIndex of a chunk tree: from memory, else from the disk cache, else built (and
    cached; a cache that cannot be written is logged and skipped)."""
    from ..errors import InputError

    if gaia_dir is None or not os.path.isdir(gaia_dir):
        raise InputError(gaia_dir, "Gaia chunk directory not found (set PC_GAIA_DIR)")
    files = _chunk_files(os.fspath(gaia_dir))
    if not files:
        raise InputError(gaia_dir, "no Gaia chunk files (chunk-NNNNN.fits) to build pattern data from")
    path = _cache_path(gaia_dir, params, files)
    if path in _LOADED:
        return _LOADED[path]
    if os.path.exists(path):
        index = _load(path, params)
    else:
        t0 = time.perf_counter()
        index = build_patterns(*_read_stars(os.fspath(gaia_dir), files), params)
        log.info("pattern data: %d quads of %d stars from %d chunk files in %.1f s", len(index.quads),
                 len(index.ra), len(files), time.perf_counter() - t0)
        try:
            _save(path, index)
        except OSError as exc:
            log.warning("pattern data not cached (%s)", exc)
    _LOADED.clear()  # one tree at a time in memory
    _LOADED[path] = index
    return index
