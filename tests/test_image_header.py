"""curator_udfs.image_header: the fast JPEG/PNG header path answers exactly as PIL or not at all.

Every image is generated here with PIL. The expected value is what image_probe reads: PIL's
format (MPO as JPEG), size and ``_orientation``. The property tests mutate real headers
(truncations, byte flips, insertions, garbage) and require that whenever ``header_info``
answers, PIL opens the same bytes and reports the same thing.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from curator_udfs.image_header import header_info
from curator_udfs.image_probe import _PIL_FORMATS, _orientation

Result = tuple[str, int, int, int]

# Broken EXIF makes PIL warn (and header_info, which reads EXIF through PIL, likewise).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def pil_header(data: bytes) -> Result | Exception:
    """What probe_image reads through PIL, or the exception PIL raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
                fmt = "JPEG" if img.format == "MPO" else str(img.format)
                return fmt, img.size[0], img.size[1], _orientation(img)
    except Exception as exc:  # noqa: BLE001 - any failure is an answer here
        return exc


def check(data: bytes) -> Result | None:
    """header_info(data), asserting it agrees with PIL whenever it answers."""
    got = header_info(data)
    if got is not None:
        assert got == pil_header(data), data[:64]
    return got


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def picture(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A noisy image (so encoders emit real tables and data), converted to ``mode``."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    return img.convert(mode)


def exif_with(orientation: int | None, extra: bool = False) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if extra:
        exif[0x010F] = "Camera"
        exif[0x0128] = 2  # ResolutionUnit: the DPI read PIL makes while opening
        exif[0x011A] = 300.0
    return exif


def jpeg_segment(data: bytes, marker: int, payload: bytes, at: int = 2) -> bytes:
    """``data`` with one segment inserted at byte ``at`` (default: right after SOI)."""
    seg = struct.pack(">HH", marker, len(payload) + 2) + payload
    return data[:at] + seg + data[at:]


def png_chunk(cid: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(cid + payload)
    return struct.pack(">I", len(payload)) + cid + payload + struct.pack(">I", crc)


def png_insert(data: bytes, chunk: bytes) -> bytes:
    """``data`` with ``chunk`` inserted right after IHDR."""
    return data[:33] + chunk + data[33:]


def interlaced(data: bytes) -> bytes:
    ihdr = bytearray(data[12:29])
    ihdr[-1] = 1
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


XMP6 = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf'
    b'-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
    b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)


def ordinary_jpegs() -> dict[str, bytes]:
    """JPEGs as cameras and encoders write them: all must get a fast answer."""
    out: dict[str, bytes] = {}
    rgb = picture("RGB", (96, 64))
    for q in (20, 75, 95):
        for sub in (0, 2):
            for prog in (False, True):
                out[f"rgb-q{q}-s{sub}-p{prog}"] = encode(
                    rgb, "JPEG", quality=q, subsampling=sub, progressive=prog
                )
    for mode in ("L", "CMYK"):
        out[mode] = encode(picture(mode, (50, 70)), "JPEG")
        out[mode + "-prog"] = encode(picture(mode, (50, 70)), "JPEG", progressive=True)
    for o in range(1, 9):
        out[f"exif-{o}"] = encode(rgb, "JPEG", exif=exif_with(o))
        out[f"exif-{o}-dpi"] = encode(rgb, "JPEG", exif=exif_with(o, True), dpi=(72, 72))
        out[f"exif-{o}-nodpi"] = encode(rgb, "JPEG", exif=exif_with(o, True))
    exif3 = b"Exif\0\0" + exif_with(3).tobytes()
    out["two-exif"] = jpeg_segment(out["exif-6"], 0xFFE1, exif3)  # PIL appends the second
    out["exif-none"] = encode(rgb, "JPEG", exif=exif_with(None, True))
    out["exif-bad-9"] = encode(rgb, "JPEG", exif=exif_with(9))
    out["xmp-6"] = encode(rgb, "JPEG", xmp=XMP6)
    out["xmp-6-exif"] = encode(rgb, "JPEG", xmp=XMP6, exif=exif_with(None, True))
    out["xmp-6-exif-3"] = encode(rgb, "JPEG", xmp=XMP6, exif=exif_with(3))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out["icc"] = encode(rgb, "JPEG", icc_profile=srgb)
    out["icc-3-segments"] = encode(rgb, "JPEG", icc_profile=random.Random(1).randbytes(150_000))
    out["comment"] = encode(rgb, "JPEG", comment=b"made by a test")
    out["everything"] = encode(
        rgb,
        "JPEG",
        comment="c",
        icc_profile=srgb,
        exif=exif_with(8, True),
        xmp=XMP6,
        dpi=(300, 300),
    )
    out["1x1"] = encode(picture("RGB", (1, 1)), "JPEG")
    out["wide"] = encode(Image.new("L", (65500, 2)), "JPEG")
    out["big"] = encode(Image.new("RGB", (4000, 3000)), "JPEG", quality=10)
    base = out["rgb-q75-s2-pFalse"]
    sof = base.index(b"\xff\xc0")
    out["fill-bytes"] = base[:sof] + b"\xff\xff\xff" + base[sof:]
    out["junk-between"] = base[:sof] + b"junk\x00" + base[sof:]
    out["rst-eoi-before-sof"] = base[:sof] + b"\xff\xd0\xff\xd9" + base[sof:]
    photoshop = b"Photoshop 3.0\x00" + b"8BIM\x03\xed\x00\x00" + struct.pack(">I", 16) + bytes(16)
    out["photoshop"] = jpeg_segment(base, 0xFFED, photoshop + b"8BIM\x04\x04\x00\x00" + bytes(4))
    out["adobe-app14"] = jpeg_segment(base, 0xFFEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")
    out["app-unknown"] = jpeg_segment(base, 0xFFE9, b"anything at all")
    return out


def ordinary_pngs() -> dict[str, bytes]:
    """PNGs as encoders write them: all must get a fast answer."""
    out: dict[str, bytes] = {}
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        img = picture(mode if mode != "I;16" else "L", (40, 30)).convert(mode)
        out[mode] = encode(img, "PNG")
        out[mode + "-interlaced"] = interlaced(out[mode])
    out["P-4bit"] = encode(picture("P", (33, 17)), "PNG", bits=4)
    out["P-trns"] = encode(picture("P", (20, 20)), "PNG", transparency=3)
    out["L-trns"] = encode(picture("L", (20, 20)), "PNG", transparency=7)
    out["RGB-trns"] = encode(picture("RGB", (20, 20)), "PNG", transparency=(1, 2, 3))
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "plain")
    info.add_text("Comment", "zipped " * 50, zip=True)
    info.add_itxt("Author", "ünïcode", lang="de", tkey="Autor")
    info.add_itxt("Note", "compressed " * 40, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP6.decode())
    rgb = picture("RGB", (64, 48))
    out["text"] = encode(rgb, "PNG", pnginfo=info)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out["icc-dpi"] = encode(rgb, "PNG", icc_profile=srgb, dpi=(300, 300))
    out["gama-chrm-srgb"] = png_insert(
        png_insert(png_insert(out["RGB"], png_chunk(b"gAMA", bytes(4))), png_chunk(b"sRGB", b"\0")),
        png_chunk(b"cHRM", bytes(32)),
    )
    out["private-chunks"] = png_insert(
        out["RGB"], png_chunk(b"prVt", b"x") + png_chunk(b"bKGD", b"\0")
    )
    out["1x1"] = encode(picture("RGB", (1, 1)), "PNG")
    out["big"] = encode(Image.new("1", (5000, 4000)), "PNG")
    return out


def unanswered() -> dict[str, bytes]:
    """Files the fast path leaves to PIL (other formats, MPO, APNG, PNG EXIF, a JPEG without
    SOS) and JPEGs that each break one check PIL makes while opening ("broken-")."""
    rgb = picture("RGB", (60, 40))
    out = {
        "mpo": encode(rgb, "MPO", save_all=True, append_images=[picture("RGB", (60, 40), 1)]),
        "png-exif": encode(rgb, "PNG", exif=exif_with(6)),
        "apng": encode(rgb, "PNG", save_all=True, append_images=[picture("RGB", (60, 40), 2)]),
        "gif": encode(rgb, "GIF"),
        "webp": encode(rgb, "WEBP"),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
    }
    info = PngImagePlugin.PngInfo()
    info.add_text("exif", "not really")
    out["png-text-exif"] = encode(rgb, "PNG", pnginfo=info)
    base = encode(rgb, "JPEG")
    out["broken-12bit-sof"] = base.replace(b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x0c", 1)
    out["jpeg-no-sos"] = base[: base.index(b"\xff\xda")]
    bad_ps = b"Photoshop 3.0\x00" + b"8BIM\x03\xed"  # PIL: IndexError on the name length
    out["broken-photoshop-bad"] = jpeg_segment(base, 0xFFED, bad_ps)
    out["broken-adobe-short"] = jpeg_segment(base, 0xFFEE, b"Adobe")
    out["broken-jfif-short"] = jpeg_segment(base, 0xFFE0, b"JFIF\0")
    out["broken-dqt-short"] = jpeg_segment(base, 0xFFDB, bytes(64))
    out["broken-icc-short"] = jpeg_segment(base, 0xFFE2, b"ICC_PROFILE\0\x01")
    out["broken-sof-zero-height"] = base.replace(
        b"\xff\xc0\x00\x11\x08\x00\x28", b"\xff\xc0\x00\x11\x08\x00\x00", 1
    )
    return out


ORDINARY: dict[str, bytes] = {
    **{"jpeg-" + k: v for k, v in ordinary_jpegs().items()},
    **{"png-" + k: v for k, v in ordinary_pngs().items()},
}
UNANSWERED = unanswered()


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_images_get_the_same_fast_answer(name: str) -> None:
    data = ORDINARY[name]
    expected = pil_header(data)
    assert isinstance(expected, tuple), expected
    assert header_info(data) == expected


def test_orientation_is_read_from_exif_and_xmp() -> None:
    answers = {name: check(data) for name, data in ORDINARY.items()}
    for o in range(1, 9):
        assert answers[f"jpeg-exif-{o}"] == ("JPEG", 96, 64, o)
    assert answers["jpeg-two-exif"] == ("JPEG", 96, 64, 3)
    assert answers["jpeg-exif-bad-9"] == ("JPEG", 96, 64, 1)
    assert answers["jpeg-xmp-6"] == answers["jpeg-xmp-6-exif"] == ("JPEG", 96, 64, 6)
    assert answers["jpeg-xmp-6-exif-3"] == ("JPEG", 96, 64, 3)
    assert answers["jpeg-wide"] == ("JPEG", 65500, 2, 1)
    assert answers["png-big"] == ("PNG", 5000, 4000, 1)


@pytest.mark.parametrize("name", sorted(UNANSWERED))
def test_unusual_files_are_left_to_pil(name: str) -> None:
    expected = pil_header(UNANSWERED[name])
    assert isinstance(expected, Exception) == name.startswith("broken-"), expected
    assert header_info(UNANSWERED[name]) is None


def test_broken_exif_is_answered_as_pil_does() -> None:
    """PIL opens a JPEG whose EXIF it cannot parse (warning) and reads orientation 1."""
    data = jpeg_segment(ORDINARY["jpeg-L"], 0xFFE1, b"Exif\0\0MM\0*\0\0\0\x08\xff\xff")
    assert check(data) == ("JPEG", 50, 70, 1)


def test_not_images_and_odd_inputs_give_none() -> None:
    for data in (b"", b"\xff", b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"hello"):
        assert header_info(data) is None
    assert header_info(None) is None  # type: ignore[arg-type]
    view = memoryview(ORDINARY["png-text"])
    assert header_info(view) in (None, header_info(ORDINARY["png-text"]))  # type: ignore[arg-type]


def test_pixel_limit_is_left_to_pil(monkeypatch: pytest.MonkeyPatch) -> None:
    data = ORDINARY["jpeg-exif-6"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 96 * 64 - 1)
    assert header_info(data) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert header_info(data) == ("JPEG", 96, 64, 6)


def segments(data: bytes) -> tuple[list[bytes], int]:
    """The JPEG segments after SOI / PNG chunks after the signature up to the pixel data, and
    where that data starts (after SOS's segment; at the first IDAT chunk)."""
    parts: list[bytes] = []
    if data.startswith(b"\x89PNG"):
        pos = 8
        while data[pos + 4 : pos + 8] != b"IDAT":
            n = 12 + struct.unpack_from(">I", data, pos)[0]
            parts.append(data[pos : pos + n])
            pos += n
        return parts, pos
    pos = 2
    while True:
        while data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        n = 2 + struct.unpack_from(">H", data, pos + 2)[0]
        parts.append(data[pos : pos + n])
        pos += n
        if parts[-1][1] == 0xDA:
            return parts, pos


def header_end(data: bytes) -> int:
    """Where PIL stops reading: the end of the SOS segment, or 8 bytes into the first IDAT."""
    end = segments(data)[1]
    return end + 8 if data.startswith(b"\x89PNG") else end


MUTATED_BASES = (
    "jpeg-everything",
    "jpeg-exif-6-nodpi",
    "jpeg-CMYK-prog",
    "jpeg-photoshop",
    "jpeg-fill-bytes",
    "jpeg-two-exif",
    "jpeg-xmp-6",
    "png-text",
    "png-icc-dpi",
    "png-P-trns",
    "png-I;16-interlaced",
    "png-gama-chrm-srgb",
)


def mutations(data: bytes, rnd: random.Random) -> list[bytes]:
    end = header_end(data)
    out = [data[:n] for n in range(end + 8)]  # every truncation of the header region
    for i in range(min(len(data), 1024)):
        for value in {data[i] ^ 0xFF, data[i] ^ 1, data[i] ^ 0x80, rnd.randrange(256)}:
            out.append(data[:i] + bytes([value]) + data[i + 1 :])
    for _ in range(300):
        i = rnd.randrange(min(len(data), end + 1))
        insert = rnd.choice([b"\xff", b"\x00", b"\xff\xff", rnd.randbytes(rnd.randrange(1, 9))])
        out.append(data[:i] + insert + data[i:])
        j = rnd.randrange(min(len(data), end + 1))
        out.append(data[:j] + data[j + rnd.randrange(1, 9) :])
    return out


@pytest.mark.parametrize("name", MUTATED_BASES)
def test_mutated_headers_answer_only_as_pil(name: str) -> None:
    rnd = random.Random(name)
    answered = refused_by_pil = 0
    for data in mutations(ORDINARY[name], rnd):
        got = header_info(data)
        expected = pil_header(data)
        if got is not None:
            answered += 1
            assert got == expected, (name, data[:80])
        if isinstance(expected, Exception):
            refused_by_pil += 1
            assert got is None, (name, expected)
    # Not vacuous: many mutants still open (data bytes, text) and many do not.
    assert answered > 100 and refused_by_pil > 100


def test_garbage_answers_only_as_pil() -> None:
    rnd = random.Random(7)
    prefixes = (b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n")
    for _ in range(3000):
        data = rnd.choice(prefixes) + rnd.randbytes(rnd.randrange(0, 200))
        check(data)


def test_spliced_segments_answer_only_as_pil() -> None:
    """Segments and chunks of real files reshuffled: orders PIL accepts and ones it does not."""
    rnd = random.Random(11)
    odd = ("big", "wide", "junk", "rst")  # large, or not a plain walk of segments
    plain = [d for k, d in ORDINARY.items() if not any(o in k for o in odd)]
    for magic in (b"\xff\xd8", b"\x89PNG\r\n\x1a\n"):
        files = [d for d in plain if d.startswith(magic)]
        pool = [p for d in files for p in segments(d)[0]]
        for _ in range(3000):
            d = rnd.choice(files)
            parts, end = segments(d)
            k = rnd.randrange(len(parts))
            parts[k : k + rnd.randrange(0, 2)] = rnd.sample(pool, rnd.randrange(0, 3))
            check(magic + b"".join(parts) + d[end:])


def mutate(payload: bytes, rnd: random.Random) -> bytes:
    """A few edits: byte changes, insertions of telling tokens, deletions, truncation."""
    p = bytearray(payload)
    tokens = (b"\0", b"exif\0", b"8BIM", b"\x03\xed", b'tiff:Orientation="7', b"\xff\xff")
    for _ in range(rnd.choice((1, 1, 2, 4))):
        op, i = rnd.random(), rnd.randrange(len(p) + 1)
        if op < 0.4 and i < len(p):
            p[i] = rnd.choice((rnd.randrange(256), 0, 1, 3, 8, 16, 0xFF, p[i] ^ 1))
        elif op < 0.6:
            p[i:i] = rnd.choice((*tokens, rnd.randbytes(rnd.randrange(1, 6))))
        elif op < 0.8:
            del p[i : i + rnd.randrange(1, 20)]
        else:
            del p[i:]
    return bytes(p)


def test_mutated_segments_with_valid_framing_answer_only_as_pil() -> None:
    """Edits inside JPEG segments and PNG chunks, with lengths and CRCs made right again, so
    that the per-segment checks (not only the framing and CRCs) are what decides."""
    rnd = random.Random(13)
    odd = ("big", "wide", "junk", "rst")
    files = [d for k, d in ORDINARY.items() if not any(o in k for o in odd)]
    markers = (0xC0, 0xC2, 0xC3, 0xC4, 0xDB, 0xDE, 0xE0, 0xE1, 0xE2, 0xED, 0xEE, 0xFE)
    cids = (b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"tRNS", b"gAMA", b"pHYs", b"eXIf", b"bKGD")
    answered = 0
    for _ in range(20_000):
        d = rnd.choice(files)
        parts, end = segments(d)
        png = d.startswith(b"\x89PNG")
        units = [(p[4:8], p[8:-4]) if png else (p[:2], p[4:]) for p in parts]
        for _ in range(rnd.choice((1, 1, 2))):
            k = rnd.randrange(len(units))
            name, payload = units[k]
            if rnd.random() < 0.8:
                units[k] = (name, mutate(payload, rnd))
            elif png:
                units[k] = (rnd.choice(cids), payload)
            else:
                units[k] = (bytes([0xFF, rnd.choice(markers)]), payload)
        if png:
            body = b"".join(png_chunk(c, p) for c, p in units)
        else:
            body = b"".join(m + struct.pack(">H", len(p) + 2 & 0xFFFF) + p for m, p in units)
        answered += check(d[: 8 if png else 2] + body + d[end:]) is not None
    assert answered > 4000
