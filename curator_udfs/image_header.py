"""A fast header reader for JPEG and PNG that answers only where PIL would answer the same.

``Image.open`` costs ~18 us per JPEG (a byte-by-byte marker walk in Python) and ~9 us per PNG;
ingest probes every member. ``header_info`` reads the same fields from the bytes, replicating
each check Pillow 13 makes while *opening* them (line references: "J:" JpegImagePlugin.py,
"P:" PngImagePlugin.py, "F:" ImageFile.py, "I:" Image.py). It is never less strict than PIL:
what it does not model (MPO, APNG, PNG EXIF, odd headers, large images) gives None.
"""

from __future__ import annotations

import math
import re
import struct
import zlib

import PIL
from PIL import Image, PngImagePlugin

__all__ = ["header_info"]

Header = tuple[str, int, int, int]

# The checks below were read off Pillow 13; another major version turns the fast path off.
_PIL_OK = PIL.__version__.split(".")[0] == "13"
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_IHDR = struct.Struct(">IIBBBBB").unpack_from

# J:276-340 (MARKER): the markers parsed by SOF(), and those read with no length field.
_SOF = frozenset({*range(0xC0, 0xD0), 0xDE}) - {0xC4, 0xC8, 0xCC}  # DHT, JPG, DAC are not
_NO_LENGTH = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
_CHECKED = _SOF | {0xDA, 0xDB, 0xE0, 0xE1, 0xE2, 0xED, 0xEE}  # segments PIL reads fields of
# By the byte after 0xFF (J:404-411): 0 bad, 1 fill, 2 no length/0x00, 3 skipped, 4 checked
_KIND = [2 if m in _NO_LENGTH else 3 + (m in _CHECKED) for m in range(0xC0, 0xFF)]
_KIND = [2, *[0] * 0xBF, *_KIND, 1]
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # I:1630 getexif
_DPI_ERRORS = (struct.error, KeyError, SyntaxError, TypeError, ValueError, ZeroDivisionError)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {  # P:78-100 (_MODES): (bit depth, colour type) -> mode
    (1, 0): "1", (2, 0): "L", (4, 0): "L", (8, 0): "L", (16, 0): "I;16",
    (8, 2): "RGB", (16, 2): "RGB", (1, 3): "P", (2, 3): "P", (4, 3): "P", (8, 3): "P",
    (8, 4): "LA", (16, 4): "RGBA", (8, 6): "RGBA", (16, 6): "RGBA",
}  # fmt: skip
_PNG_MIN_LEN = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"PLTE": 0}  # P:499-597
_TOO_MUCH = 1 << 62  # a text size over any MAX_TEXT_MEMORY: the chunk gives None
_PNG_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_PNG_MODELLED = frozenset({b"iCCP", b"tRNS", *_PNG_MIN_LEN, *_PNG_TEXT})
# Chunks PIL has a handler for (PngStream.chunk_*): one not modelled here (IHDR again, IEND,
# eXIf, acTL, fcTL, fdAT, any new one) gives None; PIL only CRC-checks the others (P:812-818).
_PNG_UNMODELLED = (
    frozenset(n[6:].encode("ascii") for n in dir(PngImagePlugin.PngStream) if n[:6] == "chunk_")
    - _PNG_MODELLED
)
_IS_CID = re.compile(rb"\w\w\w\w").match  # P:72


def header_info(data: bytes) -> Header | None:
    """(format, width, height, EXIF orientation 1-8) as PIL and image_probe._orientation report
    them for ``data``, or None when unsure (the caller then asks PIL). Never raises."""
    try:
        jpeg, png = data[:3] == b"\xff\xd8\xff", data[:8] == _PNG_MAGIC  # J:343, P:776 (_accept)
        found = (_jpeg(data) if jpeg else _png(data) if png else None) if _PIL_OK else None
        limit = Image.MAX_IMAGE_PIXELS  # I:3577: PIL warns above it and fails at twice it
        return found if found is None or limit is None or found[1] * found[2] <= limit else None
    except Exception:  # noqa: BLE001 - untrusted bytes: never raise, let PIL decide
        return None


def _jpeg(d: bytes) -> Header | None:
    """Walk the markers from SOI to SOS as JpegImageFile._open (J:356-413) does."""
    n, pos, has_dpi = len(d), 3, False  # d[2] is the 0xFF of the first marker (J:358-363)
    size: tuple[int, int] | None = None
    exif = xmp = b""  # both are at least 6 bytes when present; an empty XMP counts as none
    icc: list[bytes] = []
    # Reading past the end raises IndexError (EOF before SOS; a short length field): None.
    while True:
        m = d[pos]  # the byte after an 0xFF (J:380-384)
        pos += 1
        kind = _KIND[m]
        if kind >= 3:  # Skip/APP/COM/SOF/DQT read a length, then the segment
            start = pos + 2
            end = pos + (d[pos] << 8 | d[pos + 1])
            pos = end = end if end > start else start  # _safe_read(<=0) is b""
            if end > n:  # F:713 (_safe_read): "Truncated File Read"
                return None
            if kind == 3:
                pass
            elif m == 0xDA:  # SOS ends the header (J:394-402)
                break
            elif m in _SOF:  # J:199-245
                length = end - start  # s[5] is read; a partial 3-byte component: IndexError
                if size is not None or length < 6 or (length - 6) % 3 or d[start] != 8:
                    return None  # a second SOF would override the first: not answered
                size = _U16(d, start + 3)[0], _U16(d, start + 1)[0]
                if d[start + 5] not in (1, 3, 4) or (icc and len(min(icc)) < 14) or 0 in size:
                    return None  # mode; sorted icclist [0][13] (J:231-234); empty size (F:167)
                icc.clear()
            elif m == 0xDB:  # J:248-270: each table 1 + 64 or 128 bytes
                while start < end:
                    start += 65 if d[start] < 16 else 129
                    if start > end:  # "bad quantization table marker"
                        return None
            elif m == 0xE0 and d.startswith(b"JFIF", start, end):  # J:94-111
                if end - start < 7:  # i16(s, 5)
                    return None
                has_dpi = has_dpi or (end - start >= 12 and d[start + 7] in (1, 2))
            elif m == 0xE1:
                if d.startswith(b"Exif\0\0", start, end):  # J:112-118: later ones appended
                    exif = exif + d[start + 6 : end] if exif else d[start:end]
                elif d.startswith(_XMP, start, end):  # J:119-120: the last one counts
                    xmp = d[start + len(_XMP) : end]
            elif m == 0xE2:
                if d.startswith(b"ICC_PROFILE\0", start, end):  # J:124-136
                    icc.append(d[start:end])
                elif d.startswith(b"MPF\0", start, end):  # J:179-184, jpeg_factory J:878
                    return None  # maybe an MPO: not modelled
            elif m == 0xED and d.startswith(b"Photoshop 3.0\x00", start, end):
                if not _photoshop_ok(d[start:end]):
                    return None
            elif m == 0xEE and d.startswith(b"Adobe", start, end) and end - start < 7:
                return None  # J:170-171: i16(s, 5)
        elif kind == 1:  # fill byte
            continue
        elif not kind:  # not in MARKER: "no marker found"
            return None
        # After a marker PIL reads one byte and skips anything up to the next 0xFF (J:386-388).
        pos = pos + 1 if d[pos] == 0xFF else d.find(b"\xff", pos) + 1
        if not pos:
            return None
    orientation = _orientation(exif, xmp, has_dpi) if exif or xmp else 1
    if orientation is None or size is None:  # no SOF before SOS: no mode (F:167)
        return None
    return "JPEG", size[0], size[1], orientation


def _photoshop_ok(s: bytes) -> bool:
    """False where the APP13 resource walk (J:137-168) raises: IndexError escapes it."""
    off, n = 14, len(s)
    while s[off : off + 4] == b"8BIM" and off + 6 <= n:  # short code: struct.error, caught
        code = _U16(s, off + 4)[0]
        if off + 6 >= n:  # name length s[offset]: IndexError
            return False
        off = (off + 8 + s[off + 6]) & ~1  # code, name, then rounded up to even
        if off + 4 > n:  # data size: struct.error, caught
            return True
        size = _U32(s, off)[0]
        if code == 0x03ED and len(s[off + 4 : off + 4 + size]) < 14:  # struct.error, caught
            return True
        off = (off + 5 + size) & ~1
    return True


def _orientation(exif: bytes, xmp: bytes, has_dpi: bool) -> int | None:
    """image_probe._orientation's value for a JPEG, as Image.getexif (I:1630) and the DPI read
    in JpegImageFile._read_dpi_from_exif (J:520-547) go; None where PIL might fail or differ."""
    match = _XMP_ORIENTATION.search(xmp) if xmp else None
    if not exif:  # PIL's Exif is empty: only XMP's tiff:Orientation can set the tag
        value = int(match[2]) if match else 1
        return value if 1 <= value <= 8 else 1
    info = Image.Exif()
    try:
        info.load(exif)
        if 0x0112 not in info and match:
            info[0x0112] = int(match[2])
    except Exception:  # noqa: BLE001 - PIL could fail to open, or keep a partial EXIF
        return None
    if not has_dpi:
        try:
            unit, x_res = info[0x0128], info[0x011A]
            try:
                dpi = float(x_res[0]) / x_res[1]
            except TypeError:
                dpi = x_res
            if math.isnan(dpi) or unit == 3:  # PIL raises ValueError (caught) on NaN
                dpi *= 2.54
        except _DPI_ERRORS:  # what PIL catches there
            pass
        except Exception:  # noqa: BLE001 - anything else fails PIL's open
            return None
    try:
        value = int(info.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - as in _orientation: broken EXIF means 1
        return 1
    return value if 1 <= value <= 8 else 1


def _png(d: bytes) -> Header | None:
    """Walk the chunks to the first IDAT as PngImageFile._open (P:788-818) does."""
    n = len(d)
    # IHDR first with length 13 (PIL also takes other orders and longer IHDRs: not answered)
    if n < 33 or d[8:16] != b"\x00\x00\x00\x0dIHDR" or zlib.crc32(d[12:29]) != _U32(d, 29)[0]:
        return None
    width, height, depth, colour, compression, filt, interlace = _IHDR(d, 16)
    mode = _PNG_MODES.get((depth, colour))  # P:461-480; no mode: not identified (F:167)
    if mode is None or filt or compression or interlace > 1 or (width | height) >> 31:
        return None  # filter: SyntaxError (P:477); 0 x 0 is checked with the other sizes
    pos, text = 33, 0
    while True:  # ChunkStream.read (P:185-193): a short read fails _U32 or _IS_CID
        cid = d[pos + 4 : pos + 8]
        if cid == b"IDAT":  # chunk_IDAT ends the header (P:482-493); its CRC is not read
            break
        start = pos + 8
        end = start + _U32(d, pos)[0]
        if not _IS_CID(cid) or end + 4 > n or zlib.crc32(d[pos + 4 : end]) != _U32(d, end)[0]:
            return None  # bad chunk id, _safe_read truncation, bad or missing CRC (P:216-235)
        pos = end + 4
        if cid in _PNG_TEXT:
            text += _text_size(cid, d[start:end])
        elif cid == b"iCCP":  # P:433-459
            s = d[start:end]
            i = s.find(b"\0")  # profile name, then the compression method s[i + 1]
            if i + 1 >= len(s) or s[i + 1] or _inflate(s[i + 2 :]) is None:
                return None
        elif cid == b"tRNS" and mode in ("1", "L", "I;16", "RGB"):  # P:507-535
            if end - start < (6 if mode == "RGB" else 2):
                return None
        elif cid in _PNG_UNMODELLED or end - start < _PNG_MIN_LEN.get(cid, 0):
            return None
    if not width or not height or text > PngImagePlugin.MAX_TEXT_MEMORY:  # F:167, P:412-419
        return None
    return "PNG", width, height, 1  # image_probe._orientation: 1 for a PNG without "exif"


def _inflate(s: bytes) -> bytes | None:
    """_safe_zlib_decompress (P:154-160): None where it raises ValueError, b"" on zlib.error."""
    try:
        inflater = zlib.decompressobj()
        plain = inflater.decompress(s, PngImagePlugin.MAX_TEXT_CHUNK)
    except zlib.error:
        return b""
    return None if inflater.unconsumed_tail else plain


def _text_size(cid: bytes, s: bytes) -> int:
    """An upper bound of the text a tEXt/zTXt/iTXt chunk adds (P:599-695); _TOO_MUCH where PIL
    fails, or where the key "exif" puts EXIF into ``info`` (PIL then reads it)."""
    key, _, value = s.partition(b"\0")
    if key == b"exif" or (cid == b"zTXt" and value[:1] not in (b"", b"\0")):
        return _TOO_MUCH  # zTXt: unknown compression method (P:628-634)
    if cid == b"zTXt":
        plain = _inflate(value[1:])
        return _TOO_MUCH if plain is None else len(plain)
    if cid == b"iTXt" and len(value) >= 2 and value[0] and not value[1]:  # P:658-679
        fields = value[2:].split(b"\0", 2)  # compressed with method 0: lang, key, text
        plain = _inflate(fields[2]) if len(fields) == 3 else b""
        return _TOO_MUCH if plain is None else len(plain)
    return len(value)
