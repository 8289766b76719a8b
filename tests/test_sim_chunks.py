"""The Gaia chunk tree builder: real stars exact, synthetic ones marked, errors clear."""

import logging
import os

import astropy.units as u
import fitsio
import numpy as np
import pytest
from astropy_healpix import HEALPix

from pc_gpu.errors import InputError, OutputExistsError
from pc_gpu.sim import Region, build_chunk_tree, parse_region, read_bundled_gaia
from pc_gpu.sim import chunks
from pc_gpu.sim.chunks import read_chunk_tree, region_pixels

HP = HEALPix(nside=32, order="ring")


def _pixel(ra, dec):
    return HP.lonlat_to_healpix(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)


@pytest.fixture(scope="module")
def bundled():
    return read_bundled_gaia()


def _files(path):
    return sorted(f for f in os.listdir(path) if f.startswith("chunk-"))


def test_every_star_in_its_chunk(sim_gaia_dir):
    names = _files(sim_gaia_dir)
    assert names and all(len(n) == len("chunk-NNNNN.fits") for n in names)
    n_syn = 0
    for name in names:
        path = os.path.join(sim_gaia_dir, name)
        table, header = fitsio.read(path, ext=1, header=True)
        pixel = int(name[6:11])
        assert header["HPXPIX"] == pixel and header["HPXNSIDE"] == 32
        assert header["HPXORDER"] == "RING"
        assert np.all(_pixel(table["RA"], table["DEC"]) == pixel)
        for col in ("SOURCE_ID", "RA", "DEC", "PMRA", "PMDEC", "REF_EPOCH", "PHOT_G_MEAN_MAG",
                    "PHOT_BP_MEAN_MAG", "PHOT_RP_MEAN_MAG", "SYNTHETIC", "SYNTHETIC_COLOR"):
            assert col in table.dtype.names
        n_syn += int(table["SYNTHETIC"].sum())
        assert header["NSYNTH"] == int(table["SYNTHETIC"].sum())
    assert n_syn > 1000


def _assert_real_equal(tree, source):
    real = tree[~tree["SYNTHETIC"]]
    real = real[np.argsort(real["SOURCE_ID"], kind="stable")]
    source = source[np.argsort(source["SOURCE_ID"], kind="stable")]
    assert real.size == source.size
    np.testing.assert_array_equal(real["SOURCE_ID"], source["SOURCE_ID"])
    np.testing.assert_array_equal(real["RA"], source["RA"])
    np.testing.assert_array_equal(real["DEC"], source["DEC"])
    np.testing.assert_array_equal(real["PHOT_G_MEAN_MAG"], source["PHOT_G_MEAN_MAG"])
    np.testing.assert_array_equal(real["PMRA"], source["PMRA"])  # NaN == NaN here
    keep = ~real["SYNTHETIC_COLOR"]
    np.testing.assert_array_equal(real["PHOT_BP_MEAN_MAG"][keep], source["PHOT_BP_MEAN_MAG"][keep])


def test_region_real_stars_equal_source(sim_gaia_dir, bundled):
    pixels = region_pixels([Region(150.0, 30.0, 6.0)])
    source = bundled[np.isin(_pixel(bundled["RA"], bundled["DEC"]), pixels)]
    tree = read_chunk_tree(sim_gaia_dir)
    assert len(_files(sim_gaia_dir)) == pixels.size
    _assert_real_equal(tree, source)
    # every source star within the region radius is present
    assert source.size > 500


def test_whole_sky_equals_source(tmp_path, bundled):
    summary = build_chunk_tree(tmp_path / "sky")
    assert len(summary.pixels) == 12288 and summary.n_real == bundled.size == 482176
    assert summary.n_synthetic == 0
    _assert_real_equal(read_chunk_tree(tmp_path / "sky"), bundled)


def test_synthetic_stars_marked_and_realistic(sim_gaia_dir):
    tree = read_chunk_tree(sim_gaia_dir)
    syn = tree[tree["SYNTHETIC"]]
    real = tree[~tree["SYNTHETIC"]]
    assert np.all(syn["SOURCE_ID"] < 0) and np.all(syn["SYNTHETIC_COLOR"])
    assert np.all(real["SOURCE_ID"][real["PHOT_G_MEAN_MAG"] > 3] > 0)
    assert len(np.unique(tree["SOURCE_ID"])) == tree.size
    g = syn["PHOT_G_MEAN_MAG"]
    assert g.min() >= 10.0 and g.max() <= 15.5
    counts, _ = np.histogram(g, bins=np.arange(10.0, 15.51, 0.5))
    slope = np.polyfit(np.arange(counts.size) * 0.5, np.log10(counts), 1)[0]
    assert 0.3 < slope < 0.4
    bp_rp = syn["PHOT_BP_MEAN_MAG"] - syn["PHOT_RP_MEAN_MAG"]
    assert 0.8 < np.median(bp_rp) < 1.1 and 0.15 < np.std(bp_rp) < 0.5
    assert np.mean(syn["PHOT_BP_MEAN_MAG"] > g) > 0.97 and np.all(syn["PHOT_RP_MEAN_MAG"] <= g)


def test_synthetic_density_follows_galactic_latitude():
    pole = chunks.synthetic_stars(int(_pixel(192.86, 27.13)), 0)     # b = +90
    plane = chunks.synthetic_stars(int(_pixel(266.4, -28.9)), 0)     # b ~ 0
    assert plane.size > 5 * pole.size
    # ~3000-4000 synthetic stars in an 8 x 6 deg field at the demo field's latitude
    area = 3296 * 2472 * (8.66 / 3600) ** 2
    demo = chunks.synthetic_stars(int(_pixel(150.0, 30.0)), 0)
    per_deg2 = demo.size / HP.pixel_area.to_value(u.deg ** 2)
    assert 2500 < per_deg2 * area < 4500


def test_same_seed_same_bytes(tmp_path):
    region = Region(40.0, -20.0, 2.0)
    for name in ("a", "b"):
        build_chunk_tree(tmp_path / name, regions=region, synthetic=True, seed=5)
    build_chunk_tree(tmp_path / "c", regions=region, synthetic=True, seed=6)
    names = _files(tmp_path / "a")
    for name in names:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names)
    # a synthetic star set does not depend on the region asked for
    build_chunk_tree(tmp_path / "d", regions=Region(40.5, -20.0, 1.0), synthetic=True, seed=5)
    for name in _files(tmp_path / "d"):
        assert (tmp_path / "d" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()


def test_user_table_csv(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("Source_ID,RA,Dec,Phot_G_Mean_Mag,PMRA,PMDEC\n"
                   "11,10.5,20.25,12.5,5.0,-3.0\n12,10.6,20.3,13.25,,\n")
    summary = build_chunk_tree(tmp_path / "tree", source=csv, regions=Region(10.5, 20.3, 1.0))
    tree = read_chunk_tree(tmp_path / "tree")
    assert summary.n_real == 2 and tree.size == 2
    tree = tree[np.argsort(tree["SOURCE_ID"])]
    np.testing.assert_array_equal(tree["SOURCE_ID"], [11, 12])
    np.testing.assert_array_equal(tree["RA"], [10.5, 10.6])
    np.testing.assert_array_equal(tree["PHOT_G_MEAN_MAG"], np.float32([12.5, 13.25]))
    assert tree["PMRA"][0] == 5.0 and np.isnan(tree["PMRA"][1])
    assert np.all(tree["SYNTHETIC_COLOR"]) and not tree["SYNTHETIC"].any()
    assert np.all(np.isfinite(tree["PHOT_BP_MEAN_MAG"]))


def test_user_table_fits(tmp_path):
    table = np.zeros(3, dtype=[("source_id", "i8"), ("ra", "f8"), ("dec", "f8"),
                               ("phot_g_mean_mag", "f4"), ("phot_bp_mean_mag", "f4"),
                               ("phot_rp_mean_mag", "f4"), ("ref_epoch", "f8")])
    table["source_id"] = [1, 2, 3]
    table["ra"] = [200.0, 200.1, 200.2]
    table["dec"] = [-10.0, -10.1, -10.2]
    table["phot_g_mean_mag"] = [11, 12, 13]
    table["phot_bp_mean_mag"] = [11.4, 12.4, 13.4]
    table["phot_rp_mean_mag"] = [10.5, 11.5, 12.5]
    table["ref_epoch"] = 2015.5
    fitsio.write(str(tmp_path / "g.fits"), table)
    build_chunk_tree(tmp_path / "tree", source=tmp_path / "g.fits", synthetic_color=False,
                     regions=Region(200.0, -10.0, 1.0))
    tree = read_chunk_tree(tmp_path / "tree")
    assert tree.size == 3 and not tree["SYNTHETIC_COLOR"].any()
    assert np.all(tree["REF_EPOCH"] == 2015.5)
    np.testing.assert_array_equal(np.sort(tree["PHOT_BP_MEAN_MAG"]), np.float32([11.4, 12.4, 13.4]))


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="RA,DEC,RADIUS"):
        parse_region("north")
    with pytest.raises(InputError, match="Dec"):
        parse_region("10,95,1")
    with pytest.raises(InputError, match="radius"):
        Region(10.0, 10.0, -1.0)
    empty = tmp_path / "empty.csv"
    empty.write_text("source_id,ra,dec,phot_g_mean_mag\n")
    with pytest.raises(InputError, match="empty"):
        build_chunk_tree(tmp_path / "t", source=empty)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("id,ra,dec\n1,2,3\n")
    with pytest.raises(InputError, match="PHOT_G_MEAN_MAG"):
        build_chunk_tree(tmp_path / "t", source=nocol)
    one = tmp_path / "one.csv"
    one.write_text("source_id,ra,dec,g\n1,10,10,12\n")
    with pytest.raises(InputError, match="no stars"):
        build_chunk_tree(tmp_path / "t", source=one, regions=Region(200.0, -40.0, 1.0))
    with pytest.raises(InputError, match="not found"):
        build_chunk_tree(tmp_path / "t", source=tmp_path / "missing.fits")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create"):
        build_chunk_tree(blocker / "sub", source=one)
    near = Region(10.0, 10.0, 1.0)
    build_chunk_tree(tmp_path / "t2", source=one, regions=near)
    with pytest.raises(OutputExistsError):
        build_chunk_tree(tmp_path / "t2", source=one, regions=near)


def test_console_main_errors(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert chunks.main([str(tmp_path / "x"), "--region", "somewhere"]) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "RA,DEC,RADIUS" in errors[0].getMessage()
    assert chunks.main([str(tmp_path / "ok"), "--region", "150,30,1", "--synthetic"]) == 0
    assert _files(tmp_path / "ok")
