"""Builders of small broken (and unusual-but-valid) WebDataset shards for ingest tests.

Used by the pure-Python reader tests and by the Spark-level ingest tests. Every builder that
writes a shard returns the expected outcome per key: ``"image"`` for an ingested sample or the
quarantine reason. A key mapped to ``"duplicate_key"`` was written twice: its first
occurrence is ingested, the second quarantined (see :func:`expected_totals`).
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

Member = tuple[str, bytes] | tarfile.TarInfo
FIXED_MTIME = 1_700_000_000


# -- images ---------------------------------------------------------------------------


def _image(w: int, h: int, mode: str) -> Image.Image:
    """A small image with some structure (not a flat colour) in the given mode."""
    base = Image.linear_gradient("L").resize((w, h))
    if mode == "L":
        return base
    if mode == "I;16":
        return base.convert("I").point(lambda v: v * 257).convert("I;16")
    rgb = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base))
    if mode == "P":
        return rgb.quantize(colors=16)
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(base)
        return rgba
    return rgb.convert(mode)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode a PIL image to bytes in ``fmt``."""
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def jpeg_bytes(w: int = 32, h: int = 24, mode: str = "RGB", quality: int = 90) -> bytes:
    """JPEG bytes; mode "CMYK" gives a CMYK JPEG, "L" a greyscale one."""
    return encode(_image(w, h, mode), "JPEG", quality=quality)


def png_bytes(w: int = 32, h: int = 24, mode: str = "RGB") -> bytes:
    """PNG bytes; modes "RGB", "RGBA", "L", "P" (palette) and "I;16" (16-bit grey)."""
    return encode(_image(w, h, mode), "PNG")


def webp_bytes(w: int = 32, h: int = 24) -> bytes:
    return encode(_image(w, h, "RGB"), "WEBP", quality=80)


def gif_bytes(w: int = 32, h: int = 24, frames: int = 3) -> bytes:
    """An animated GIF (``frames`` > 1) or a still one."""
    imgs = [_image(w, h, "RGB").rotate(i * 90).quantize(colors=8) for i in range(frames)]
    out = io.BytesIO()
    imgs[0].save(out, format="GIF", save_all=frames > 1, append_images=imgs[1:], duration=100)
    return out.getvalue()


def bmp_bytes(w: int = 16, h: int = 8) -> bytes:
    return encode(_image(w, h, "RGB"), "BMP")


def tiff_bytes(w: int = 16, h: int = 8) -> bytes:
    return encode(_image(w, h, "RGB"), "TIFF")


def bomb_png_bytes(w: int = 20_000, h: int = 20_000) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` pixels, built from a 1x1 image (a few bytes).

    The IHDR chunk of a tiny valid PNG is rewritten with the claimed size and a fixed CRC;
    nothing of the claimed size is ever allocated.
    """
    data = bytearray(png_bytes(1, 1, "L"))
    # Signature (8) + length (4) + b"IHDR" (4), then width and height, then 5 bytes, then CRC.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def undecodable_bytes() -> bytes:
    """Bytes that no image plugin identifies."""
    return b"this is not an image, just some text pretending to be one\n" * 4


def disallowed_format_bytes() -> bytes:
    """A valid image in a format PIL knows but ingest does not allow (PPM)."""
    return encode(_image(8, 8, "RGB"), "PPM")


# -- tar writing ------------------------------------------------------------------------


def _fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "", ""
    return info


def symlink(name: str, target: str = "/etc/passwd") -> tarfile.TarInfo:
    info = _fixed(tarfile.TarInfo(name))
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = _fixed(tarfile.TarInfo(name))
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def directory(name: str) -> tarfile.TarInfo:
    info = _fixed(tarfile.TarInfo(name))
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def fifo(name: str) -> tarfile.TarInfo:
    info = _fixed(tarfile.TarInfo(name))
    info.type = tarfile.FIFOTYPE
    return info


def tar_bytes(members: Sequence[Member]) -> bytes:
    """An uncompressed tar holding ``members`` in order: (name, bytes) pairs or TarInfos."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = _fixed(tarfile.TarInfo(name))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_tar(path: str | Path, members: Sequence[Member], *, gz: bool = False) -> Path:
    """Write a tar (gzip-compressed when ``gz``) with ``members`` in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tar_bytes(members)
    path.write_bytes(gzip_bytes(data) if gz else data)
    return path


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (mtime 0)."""
    return gzip.compress(data, mtime=0)


def sample(
    key: str,
    image: bytes | None = None,
    ext: str = "jpg",
    caption: str | bytes | None = "a cat",
    meta: str | bytes | None = None,
) -> list[tuple[str, bytes]]:
    """Members of one sample: image (a small JPEG by default), .txt and .json.

    ``caption=None`` leaves out the .txt member; ``meta`` defaults to ``{"key": key}``.
    """
    members = [(f"{key}.{ext}", jpeg_bytes() if image is None else image)]
    if caption is not None:
        members.append((f"{key}.txt", caption.encode() if isinstance(caption, str) else caption))
    meta = f'{{"key": "{key}"}}' if meta is None else meta
    members.append((f"{key}.json", meta.encode() if isinstance(meta, str) else meta))
    return members


def good_members(n: int, prefix: str = "good") -> list[tuple[str, bytes]]:
    """``n`` valid samples keyed ``{prefix}{i:04d}``."""
    members: list[tuple[str, bytes]] = []
    for i in range(n):
        members += sample(f"{prefix}{i:04d}", caption=f"caption {i}")
    return members


# -- whole-shard bad cases -------------------------------------------------------------


def write_not_a_tar(path: str | Path) -> dict[str, str]:
    """A file that is not a tar at all (text)."""
    Path(path).write_bytes(b"hello, I am definitely not a tar archive\n" * 50)
    return {"": "not_a_tar"}


def write_truncated_tar(path: str | Path, *, complete: int = 3, gz: bool = False) -> dict[str, str]:
    """A tar cut in the middle of the image data of sample ``complete`` (0-based).

    The ``complete`` samples before it are intact and must be kept; the cut one is
    quarantined as ``truncated_tar``.
    """
    members = good_members(complete)
    cut_key = f"good{complete:04d}"
    members += sample(cut_key, image=jpeg_bytes(64, 64))
    data = tar_bytes(members)
    # Offset of the cut sample's image data: find its header, skip 512 bytes, keep 100 bytes.
    header = data.index(f"{cut_key}.jpg".encode())
    cut = data[: header + 512 + 100]
    Path(path).write_bytes(gzip_bytes(cut) if gz else cut)
    expected = {f"good{i:04d}": "image" for i in range(complete)}
    expected[cut_key] = "truncated_tar"
    return expected


def write_truncated_at_boundary(path: str | Path, *, complete: int = 2) -> dict[str, str]:
    """A tar cut right after the last member (no end-of-archive marker).

    The reader cannot know that the last sample was complete, so it is quarantined as
    ``truncated_tar``; the samples before it are kept.
    """
    members = good_members(complete + 1)
    data = tar_bytes(members)
    last_name, last_data = members[-1]
    header = data.rindex(last_name.encode())
    Path(path).write_bytes(data[: header + 512 + (len(last_data) + 511) // 512 * 512])
    expected = {f"good{i:04d}": "image" for i in range(complete)}
    expected[f"good{complete:04d}"] = "truncated_tar"
    return expected


def write_oversized_image_shard(path: str | Path, image_size: int = 200_000) -> dict[str, str]:
    """A shard whose second sample's image member is ``image_size`` bytes (a JPEG + padding).

    With ``max_image_bytes`` below ``image_size`` it is quarantined as ``image_too_large``
    without being read. The padding is trailing zeros after a valid JPEG.
    """
    big = jpeg_bytes(64, 64)
    big += b"\0" * (image_size - len(big))
    members = sample("small0", caption="small") + sample("big", image=big) + sample("small1")
    write_tar(path, members)
    return {"small0": "image", "big": "image_too_large", "small1": "image"}


def expected_totals(expected: dict[str, str]) -> dict[str, int]:
    """Images and quarantined items a reader must report for an expected-outcome dict."""
    images = sum(1 for v in expected.values() if v in ("image", "duplicate_key"))
    quarantined = sum(1 for v in expected.values() if v != "image")
    return {"samples": images + quarantined, "images": images, "quarantined": quarantined}


# -- the mixed shard ---------------------------------------------------------------------

# Warnings each ingested key of the mixed shard must carry (keys not listed: none).
MIXED_SHARD_WARNINGS: dict[str, list[str]] = {
    "badutf8": ["caption_not_utf8"],
    "badjson": ["invalid_json"],
    "deepjson": ["invalid_json"],
    "nanjson": ["invalid_json"],
    "latin1json": ["invalid_json"],
    "mismatch": ["extension_mismatch"],
    "extra": ["ignored_member:cls", "ignored_member:npy"],
}

# Format, width and height of the unusual-but-valid images in the mixed shard.
MIXED_SHARD_IMAGES: dict[str, tuple[str, int, int]] = {
    "cmyk": ("JPEG", 40, 30),
    "png16": ("PNG", 33, 17),
    "rgba": ("PNG", 20, 10),
    "palette": ("PNG", 24, 24),
    "gif": ("GIF", 30, 20),
    "webp": ("WEBP", 28, 14),
    "bmp": ("BMP", 16, 8),
    "tiff": ("TIFF", 16, 8),
    "tiny": ("JPEG", 1, 1),
    "tinypng": ("PNG", 1, 1),
    "upper": ("JPEG", 32, 24),
    "upperjpeg": ("JPEG", 32, 24),
    "a/b/nested": ("JPEG", 32, 24),
    "x.y/dotted": ("PNG", 32, 24),
    "mismatch": ("JPEG", 32, 24),
}


def write_mixed_bad_shard(path: str | Path, *, gz: bool = False) -> dict[str, str]:
    """One shard with every member-level bad case and unusual-but-valid image.

    Returns {key: "image" | reason} for every key written (the directory entry included;
    ``good0001`` appears twice: "duplicate_key" means first kept, second quarantined).
    See MIXED_SHARD_WARNINGS and MIXED_SHARD_IMAGES for what ingested samples must carry.
    """
    m: list[Member] = []
    expected: dict[str, str] = {}

    def add(key: str, outcome: str, members: Sequence[Member]) -> None:
        m.extend(members)
        expected[key] = outcome

    for i in range(3):
        add(f"good{i:04d}", "image", sample(f"good{i:04d}", caption=f"caption {i}"))
    add("cmyk", "image", sample("cmyk", jpeg_bytes(40, 30, "CMYK")))
    add("png16", "image", sample("png16", png_bytes(33, 17, "I;16"), "png"))
    add("rgba", "image", sample("rgba", png_bytes(20, 10, "RGBA"), "png"))
    add("palette", "image", sample("palette", png_bytes(24, 24, "P"), "png"))
    add("gif", "image", sample("gif", gif_bytes(30, 20, frames=3), "gif"))
    add("webp", "image", sample("webp", webp_bytes(28, 14), "webp"))
    add("bmp", "image", sample("bmp", bmp_bytes(16, 8), "bmp"))
    add("tiff", "image", sample("tiff", tiff_bytes(16, 8), "tif"))
    add("tiny", "image", sample("tiny", jpeg_bytes(1, 1)))
    add("tinypng", "image", sample("tinypng", png_bytes(1, 1, "L"), "png"))
    add("upper", "image", sample("upper", ext="JPG"))
    add("upperjpeg", "image", sample("upperjpeg", ext="jpeg"))
    add("a/b/nested", "image", sample("a/b/nested"))
    add("x.y/dotted", "image", sample("x.y/dotted", png_bytes(), "png"))
    add("zero", "empty_image", sample("zero", b""))
    add("garbage", "undecodable_image", sample("garbage", undecodable_bytes()))
    add("ppm", "undecodable_image", sample("ppm", disallowed_format_bytes(), "png"))
    add("bomb", "too_many_pixels", sample("bomb", bomb_png_bytes(), "png"))
    add("noimage", "missing_image", sample("noimage")[1:])
    add("dupmember", "duplicate_member", [*sample("dupmember"), ("dupmember.txt", b"again")])
    add("twoimages", "multiple_images", [*sample("twoimages"), ("twoimages.png", png_bytes())])
    add("symlinked", "link_member", [symlink("symlinked.jpg"), ("symlinked.txt", b"x")])
    add(
        "hardlinked",
        "link_member",
        [("hardlinked.txt", b"x"), hardlink("hardlinked.jpg", "good0000.jpg")],
    )
    add("fifo", "link_member", [*sample("fifo"), fifo("fifo.npy")])
    add("somedir", "directory_member", [directory("somedir")])
    add("badutf8", "image", sample("badutf8", caption=b"caf\xe9 \xff\xfe au lait"))
    add("badjson", "image", sample("badjson", meta='{"url": "http://x", '))
    add("deepjson", "image", sample("deepjson", meta="[" * 100_000 + "]" * 100_000))
    add("nanjson", "image", sample("nanjson", meta='{"score": NaN}'))
    add("latin1json", "image", sample("latin1json", meta=b'{"caption": "caf\xe9"}'))
    add("mismatch", "image", sample("mismatch", jpeg_bytes(), "png"))
    add("extra", "image", [*sample("extra"), ("extra.cls", b"3"), ("extra.npy", b"\x93NUMPY")])
    m.extend(sample("good0001", caption="the same key again"))
    expected["good0001"] = "duplicate_key"
    add("good0003", "image", sample("good0003", caption="last"))
    write_tar(path, m, gz=gz)
    return expected
