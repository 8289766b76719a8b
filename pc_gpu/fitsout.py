"""Writing the FITS outputs (detrended image, summary tables) with the raw header carried along.

The image goes through astropy (about 1.5x faster than fitsio for a 32 MB float32 frame here).
The summary's binary tables are laid out here, row by row in one buffer, with astropy formatting
the header cards: cfitsio writes a table column by column through a small block cache, which
took 12 ms for the 3000-row catalogue against about 2 ms here. A table with a column type not
handled here goes through fitsio instead; both give the same file content when read back."""

import functools

import numpy as np

__all__ = ["header_records", "write_detrended", "write_summary"]

_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE",
               "PCOUNT", "GCOUNT", "XTENSION", "TFIELDS", "EXTNAME", "CHECKSUM", "DATASUM", ""}


def header_records(header, extra=()):
    """fitsio header records: the raw header's cards (structural ones dropped, and those that
    `extra` sets again) then `extra`, a sequence of (name, value, comment)."""
    records = []
    replaced = {name for name, _, _ in extra}
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key in replaced or key.startswith(("TTYPE", "TFORM", "TZERO", "TSCAL", "TDIM", "TUNIT")):
            continue
        if key in ("COMMENT", "HISTORY"):
            records.append({"name": key, "value": str(card.value)})
            continue
        records.append({"name": key, "value": card.value, "comment": card.comment})
    for name, value, comment in extra:
        records.append({"name": name, "value": value, "comment": comment})
    return records


def write_detrended(path, image, records):
    """Write the float32 detrended image with the given header records."""
    from astropy.io import fits

    header = fits.Header([(r["name"], r["value"], r.get("comment", "")) for r in records])
    fits.PrimaryHDU(np.asarray(image, dtype=np.float32), header=header).writeto(path, overwrite=True)


def write_summary(path, records, catalog, zeropoints, sky, streaks=None, conditions=None, *,
                  primary_records=None):
    """Write the summary file: header-only primary HDU, then CATALOG, ZEROPOINTS, SKY, when
    `streaks` is given (streak detection ran; possibly no rows) STREAKS, and when `conditions`
    is given CONDITIONS, each carrying the same header records (the primary HDU
    `primary_records` when given: the WCS goes there only)."""
    tables = [("CATALOG", catalog), ("ZEROPOINTS", zeropoints), ("SKY", sky)]
    if streaks is not None:
        tables.append(("STREAKS", streaks))
    if conditions is not None:
        tables.append(("CONDITIONS", conditions))
    primary = records if primary_records is None else primary_records
    if all(_columns(table.dtype) is not None for _, table in tables):
        _write_tables(path, primary, records, tables)
    else:
        _write_tables_fitsio(path, primary, records, tables)


def _write_tables_fitsio(path, primary, records, tables):
    import fitsio

    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None, header=primary)
        for name, table in tables:
            f.write(table, extname=name, header=records)


_BLOCK = 2880  # bytes in a FITS block
_FORMS = {"i8": ("K", "8-byte INTEGER"), "i4": ("J", "4-byte INTEGER"), "i2": ("I", "2-byte INTEGER"),
          "u2": ("I", "2-byte INTEGER"), "f8": ("D", "8-byte DOUBLE"), "f4": ("E", "4-byte REAL"),
          "b1": ("L", "1-byte LOGICAL")}


@functools.lru_cache(maxsize=32)
def _columns(dtype):
    """Per field of a structured dtype: (name, TFORM, comment, FITS storage dtype, TZERO or
    None); None when a field is of a kind laid out only by fitsio (multi-dimensional cells,
    other integer widths, unsigned types other than uint16)."""
    out = []
    for name in dtype.names:
        field = dtype[name]
        base, shape = field.base, field.shape
        if len(shape) > 1:
            return None
        count = shape[0] if shape else 1
        if base.kind == "S" and not shape:
            out.append((name, f"{base.itemsize}A", "ASCII Character", f"S{base.itemsize}", None))
            continue
        key = f"{base.kind}{base.itemsize}"
        if key not in _FORMS:
            return None
        form, what = _FORMS[key]
        storage = {"b1": "u1", "u2": ">i2"}.get(key, base.newbyteorder(">").str)
        out.append((name, (f"{count}" if shape else "") + form, f"data format of field: {what}",
                    (storage, shape) if shape else storage, 32768 if key == "u2" else None))
    return tuple(out)


def _cards(cards):
    """80-character card images of (keyword, value[, comment]) tuples (astropy's formatting:
    floats with all their digits, where cfitsio kept 15)."""
    return "".join(_card_image(c[0], type(c[1]), c[1], c[2] if len(c) > 2 else "") for c in cards)


@functools.lru_cache(maxsize=4096)
def _card_image(keyword, kind, value, comment):
    """One card's image, as astropy writes it in a header (CONTINUE cards included); cached:
    most cards repeat from frame to frame (`kind` keeps 1, 1.0 and True apart)."""
    from astropy.io import fits

    return fits.Card(keyword, value, comment).image


@functools.lru_cache(maxsize=32)
def _table_cards(dtype, extname):
    """The structural header of a binary table of `dtype` but for NAXIS2: (before, after)."""
    columns = _columns(dtype)
    before = [("XTENSION", "BINTABLE", "binary table extension"), ("BITPIX", 8, "8-bit bytes"),
              ("NAXIS", 2, "2-dimensional binary table"), ("NAXIS1", dtype.itemsize, "width of table in bytes")]
    after = [("PCOUNT", 0, "size of special data area"), ("GCOUNT", 1, "one data group (required keyword)"),
             ("TFIELDS", len(columns), "number of fields in each row")]
    for i, (name, form, comment, _, zero) in enumerate(columns, start=1):
        after += [(f"TTYPE{i}", name, f"label for field {i:3d}"), (f"TFORM{i}", form, comment)]
        if zero is not None:
            after += [(f"TZERO{i}", zero, "offset for unsigned integers"), (f"TSCAL{i}", 1, "data are not scaled")]
    after.append(("EXTNAME", extname, "name of this binary table extension"))
    return _cards(before), _cards(after)


def _table_data(table):
    """The table's rows as FITS stores them (big-endian, logicals 'T'/'F', uint16 offset by
    TZERO), padded to whole blocks."""
    columns = _columns(table.dtype)
    stored = np.empty(len(table), dtype=[(name, storage) for name, _, _, storage, _ in columns])
    for name, form, _, _, zero in columns:
        values = table[name]
        if form.endswith("L"):
            stored[name] = np.where(values, ord("T"), ord("F"))
        elif zero is not None:
            stored[name] = (values ^ np.uint16(0x8000)).view(np.int16)
        else:
            stored[name] = values
    data = stored.tobytes()
    return data + bytes(-len(data) % _BLOCK)


def _padded_header(text):
    text += "END".ljust(80)
    return (text + " " * (-len(text) % _BLOCK)).encode("ascii")


def _cards_of(records):
    return _cards((r["name"], r["value"], r.get("comment", "")) for r in records)


def _write_tables(path, primary_records, records, tables):
    common = _cards_of(records)
    primary = _cards([("SIMPLE", True, "file does conform to FITS standard"),
                      ("BITPIX", 16, "number of bits per data pixel"), ("NAXIS", 0, "number of data axes"),
                      ("EXTEND", True, "FITS dataset may contain extensions"),
                      ("COMMENT", "  FITS (Flexible Image Transport System) format is defined in 'Astronomy"),
                      ("COMMENT", "  and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H")])
    with open(path, "wb") as fh:
        fh.write(_padded_header(primary + (common if primary_records is records else _cards_of(primary_records))))
        for name, table in tables:
            before, after = _table_cards(table.dtype, name)
            naxis2 = _card_image("NAXIS2", int, len(table), "number of rows in table")
            fh.write(_padded_header(before + naxis2 + after + common))
            fh.write(_table_data(table))
