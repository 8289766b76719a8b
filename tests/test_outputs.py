"""`pc_gpu.outputs`: atomic single files and all-or-none publication of a frame's files, with
failures of the writers and of the renames themselves (real file-system conditions)."""

import errno
import os

import pytest

from pc_gpu.errors import InputError, OutputExistsError
from pc_gpu.outputs import atomic_output, check_outputs_free, output_paths, publish, temporary_path


def _writer(content):
    def write(path):
        with open(path, "wb") as fh:
            fh.write(content)
    return write


def _names(directory):
    return sorted(os.listdir(directory))


def test_output_paths_and_temporary_names(tmp_path):
    paths = output_paths("/raw/night/20210611.051106.00001_02000.fits.fz", tmp_path)
    assert paths["summary"] == str(tmp_path / "20210611.051106.00001_02000-summary.fits")
    assert paths["zp_plot"].endswith("00001_02000-zp.png")
    assert set(paths) == {"detrended", "summary", "zp_plot", "detrended_plot", "quiver_plot", "thumbnail"}
    assert paths["thumbnail"].endswith("00001_02000-thumb.jpg")
    tmp = temporary_path(tmp_path / "a-summary.fits")
    assert os.path.dirname(tmp) == str(tmp_path)
    assert os.path.basename(tmp).startswith(".a-summary.") and tmp.endswith(".tmp.fits")
    assert not os.path.exists(tmp)   # a free name, not a file
    assert temporary_path(tmp_path / "x.png").endswith(".tmp.png")
    assert temporary_path(tmp_path / "x.fits.gz").endswith(".tmp.fits.gz")


def test_check_outputs_free(tmp_path):
    (tmp_path / "a").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="--overwrite") as info:
        check_outputs_free([str(tmp_path / "a"), str(tmp_path / "b")])
    assert str(tmp_path / "a") in str(info.value) and str(tmp_path / "b") not in str(info.value)
    check_outputs_free([str(tmp_path / "a")], overwrite=True)
    check_outputs_free([str(tmp_path / "b")])


def test_atomic_output(tmp_path):
    final = tmp_path / "one.fits"
    with atomic_output(final) as tmp:
        assert not final.exists()
        with open(tmp, "wb") as fh:
            fh.write(b"x")
    assert final.read_bytes() == b"x" and _names(tmp_path) == ["one.fits"]
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "two.fits") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half")
            raise RuntimeError("writer died")
    assert _names(tmp_path) == ["one.fits"]


def test_publish_all_and_in_order(tmp_path):
    order = []
    settled = []

    def writer(name):
        def write(path):
            order.append(name)
            assert not (tmp_path / name).exists() and not settled   # written under a temporary name
            _writer(name.encode())(path)
        return write

    finals = {str(tmp_path / n): writer(n) for n in ("s.fits", "z.png", "d.fits")}
    publish(finals, settle=lambda: settled.append(_names(tmp_path)))
    assert order == ["s.fits", "z.png", "d.fits"]
    assert len(settled[0]) == 3 and all(n.startswith(".") for n in settled[0])   # all staged, none renamed
    assert _names(tmp_path) == ["d.fits", "s.fits", "z.png"]
    assert (tmp_path / "z.png").read_bytes() == b"z.png"
    with pytest.raises(OutputExistsError):
        publish({str(tmp_path / "s.fits"): _writer(b"new"), str(tmp_path / "n.png"): _writer(b"n")})
    assert (tmp_path / "s.fits").read_bytes() == b"s.fits" and not (tmp_path / "n.png").exists()


def test_publish_writer_failure_leaves_nothing(tmp_path):
    settle_calls = []

    def broken(path):
        _writer(b"half")(path)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        publish({str(tmp_path / "s.fits"): _writer(b"s"), str(tmp_path / "z.png"): broken},
                settle=lambda: settle_calls.append(1))
    assert _names(tmp_path) == [] and settle_calls == [1]   # settled before the cleanup


def test_publish_unwritable_directory_is_an_input_error(tmp_path):
    (tmp_path / "night").write_bytes(b"a file where the directory should be")
    with pytest.raises(InputError, match="cannot create output directory") as info:
        publish({str(tmp_path / "night" / "s.fits"): _writer(b"s")})
    assert str(tmp_path / "night") in str(info.value)


def test_publish_second_rename_fails_nothing_published(tmp_path):
    """The second rename fails for real (another process put a directory at the PNG's name
    while the summary was being written: rename(2) gives EISDIR); the summary already renamed
    into place is taken back and no temporary is left."""
    summary, png = str(tmp_path / "f-summary.fits"), str(tmp_path / "f-zp.png")

    def summary_writer(path):
        _writer(b"summary")(path)
        os.mkdir(png)   # the concurrent writer

    with pytest.raises(IsADirectoryError):
        publish({summary: summary_writer, png: _writer(b"png")})
    assert _names(tmp_path) == ["f-zp.png"] and os.path.isdir(png)   # only the other party's dir
    assert not os.listdir(png)


def test_publish_overwrite_failure_restores_previous_files(tmp_path):
    """With --overwrite, a failed rename puts back the files that were replaced."""
    summary, png, det = (str(tmp_path / n) for n in ("f-summary.fits", "f-zp.png", "f-detrended.fits"))
    for path in (summary, png):
        _writer(b"old " + os.path.basename(path).encode())(path)

    def summary_writer(path):
        _writer(b"new summary")(path)
        os.unlink(png)
        os.mkdir(png)

    with pytest.raises(OSError):
        publish({det: _writer(b"new det"), summary: summary_writer, png: _writer(b"new png")},
                overwrite=True)
    assert _names(tmp_path) == ["f-summary.fits", "f-zp.png"]
    assert (tmp_path / "f-summary.fits").read_bytes() == b"old f-summary.fits"
    publish({summary: _writer(b"new summary"), det: _writer(b"new det")}, overwrite=True)
    assert (tmp_path / "f-summary.fits").read_bytes() == b"new summary"
    assert _names(tmp_path) == ["f-detrended.fits", "f-summary.fits", "f-zp.png"]


def _fits_content(path):
    """Every HDU of a FITS file as read back by fitsio: [(header (name, value) pairs, data)]."""
    import fitsio

    out = []
    with fitsio.FITS(path) as f:
        for hdu in f:
            cards = [(r["name"], r["value"]) for r in hdu.read_header().records()]
            out.append((cards, hdu.read() if hdu.get_exttype() != "IMAGE_HDU" else None))
    return out


def test_summary_tables_laid_out_here_read_back_as_fitsio_wrote_them(small_field, small_camera, tmp_path):
    """The summary's tables are laid out in one buffer per table instead of through cfitsio:
    read back, every header card and every cell equals what fitsio writes for the same tables
    (floats in the header: cfitsio kept 15 digits, now all), astropy verifies the file, and a
    table with a column kind not handled here (2-d cells) still goes through fitsio."""
    import numpy as np
    from astropy.io import fits

    from pc_gpu import fitsout
    from pc_gpu.backend import get_backend
    from pc_gpu.pipeline import Reducer, RunOptions

    result = Reducer(RunOptions(), camera=small_camera, meta_dir=small_field.meta_dir,
                     gaia_dir=small_field.gaia_dir, backend=get_backend("cpu")).reduce(small_field.raw)
    records = fitsout.header_records(result.header, result.header_extra)
    streaks = np.zeros(2, dtype=[("x0", "f8"), ("n", "i4"), ("name", "S5"), ("ok", "?"), ("adu", "u2"),
                                 ("ends", "f4", (4,))])
    streaks["name"], streaks["ok"], streaks["adu"], streaks["ends"] = [b"a", b"abcde"], [True, False], [0, 65535], 1.5
    cases = {"summary": (result.catalog, result.zeropoints, result.sky, streaks),
             "empty": (result.catalog[:0], result.zeropoints, result.sky, streaks[:0]),
             "2-d cells": (result.catalog, result.zeropoints, result.sky,
                           np.zeros(3, dtype=[("cell", "f8", (2, 2))]))}
    # the primary HDU may carry cards of its own (the refined WCS)
    primary = records + [{"name": "CRVAL1", "value": 150.25, "comment": "primary HDU only"}]
    for name, (catalog, zeropoints, sky, extra) in cases.items():
        ours, reference = str(tmp_path / f"{name}-ours.fits"), str(tmp_path / f"{name}-ref.fits")
        fitsout.write_summary(ours, records, catalog, zeropoints, sky, extra, primary_records=primary)
        fitsout._write_tables_fitsio(reference, primary, records, [("CATALOG", catalog), ("ZEROPOINTS", zeropoints),
                                                                   ("SKY", sky), ("STREAKS", extra)])
        assert (fitsout._columns(extra.dtype) is None) == (name == "2-d cells")
        got, expected = _fits_content(ours), _fits_content(reference)
        assert len(got) == len(expected) == 5
        for (cards, data), (ref_cards, ref_data) in zip(got, expected):
            assert [k for k, _ in cards] == [k for k, _ in ref_cards], name
            for (key, value), (_, ref_value) in zip(cards, ref_cards):
                if isinstance(ref_value, float):
                    assert value == pytest.approx(ref_value, rel=1e-14, abs=0.0), (name, key)
                else:
                    assert value == ref_value, (name, key)
            if ref_data is not None:
                assert data.dtype == ref_data.dtype and len(data) == len(ref_data), name
                for column in ref_data.dtype.names:
                    np.testing.assert_array_equal(data[column], ref_data[column], err_msg=f"{name} {column}")
        with fits.open(ours) as hdul:
            hdul.verify("exception")
            assert [h.name for h in hdul] == ["PRIMARY", "CATALOG", "ZEROPOINTS", "SKY", "STREAKS"]
            assert hdul[0].header["CRVAL1"] == 150.25 and "CRVAL1" not in hdul[1].header
    assert [k for k, _ in _fits_content(str(tmp_path / "summary-ours.fits"))[1][0]].count("DOMEFLAG") == 1
