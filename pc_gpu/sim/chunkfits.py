"""The chunk files' FITS bytes, written directly: an empty primary HDU and one binary table.

fitsio's per-file overhead (about 0.8 ms) made a whole-sky tree of 12,288 files take 10 s;
this writes the same standard FITS in a fraction of that. Files are read back with fitsio.
"""

import os

import numpy as np

from ..errors import InputError

_TFORM = {"i8": "K", "f8": "D", "f4": "E", "b1": "L", "i4": "J", "i2": "I"}


def _card(name, value=None, comment=""):
    """One 80-character FITS header card (fixed format)."""
    if name == "COMMENT":
        return f"COMMENT {value}"[:80].ljust(80)
    if isinstance(value, (bool, np.bool_)):
        text = ("T" if value else "F").rjust(20)
    elif isinstance(value, (int, np.integer)):
        text = str(int(value)).rjust(20)
    elif isinstance(value, (float, np.floating)):
        text = repr(float(value)).upper().rjust(20)
    else:
        text = "'" + str(value).replace("'", "''").ljust(8) + "'"
        text = text.ljust(20)
    card = f"{name:<8}= {text}"
    if comment:
        card += f" / {comment}"
    return card[:80].ljust(80)


def _pad(data, fill):
    return data + fill * (-len(data) % 2880)


def _table_fits_bytes(table, cards, extname):
    """A FITS file (empty primary HDU + one binary table HDU) as bytes."""
    primary = [_card("SIMPLE", True, "file does conform to FITS standard"),
               _card("BITPIX", 8, "number of bits per data pixel"),
               _card("NAXIS", 0, "number of data axes"),
               _card("EXTEND", True, "FITS dataset may contain extensions"), "END".ljust(80)]
    names = table.dtype.names
    big = np.empty(table.size, dtype=[(n, table.dtype[n].newbyteorder(">")
                                        if table.dtype[n].kind != "b" else "u1") for n in names])
    for n in names:
        big[n] = np.where(table[n], 84, 70) if table.dtype[n].kind == "b" else table[n]
    ext = [_card("XTENSION", "BINTABLE", "binary table extension"),
           _card("BITPIX", 8, "8-bit bytes"), _card("NAXIS", 2, "2-dimensional binary table"),
           _card("NAXIS1", big.dtype.itemsize, "width of table in bytes"),
           _card("NAXIS2", table.size, "number of rows in table"),
           _card("PCOUNT", 0, "size of special data area"),
           _card("GCOUNT", 1, "one data group (required keyword)"),
           _card("TFIELDS", len(names), "number of fields in each row")]
    for i, n in enumerate(names, 1):
        dt = table.dtype[n]
        ext += [_card(f"TTYPE{i}", n), _card(f"TFORM{i}", _TFORM[f"{dt.kind}{dt.itemsize}"])]
    ext.append(_card("EXTNAME", extname, "name of this binary table extension"))
    ext += [_card(c["name"], c["value"], c.get("comment", "")) for c in cards]
    ext.append("END".ljust(80))
    return (_pad("".join(primary).encode("ascii"), b" ") + _pad("".join(ext).encode("ascii"), b" ")
            + _pad(big.tobytes(), b"\0"))


def write_chunk(path, table, header):
    """Write one chunk file atomically (a temporary file renamed over `path`): `table` as its
    GAIA binary table with the `header` cards (fitsio record dicts)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(_table_fits_bytes(table, header, "GAIA"))
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise InputError(path, f"cannot write chunk file ({exc.strerror or exc})") from None
