"""Header-only image checks: format, width and height without decoding any pixels.

Ingest only needs to know that an image member is an image of an allowed format and a sane
size. Opening lazily keeps this cheap (no pixel decode) and safe against decompression bombs:
the pixel count is decided from the header. Common JPEG and PNG headers are read by
curator_udfs/image_header.py (a tenth of PIL's cost, and only where PIL would say the same);
PIL reads the rest.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from curator_udfs.image_header import header_info

__all__ = [
    "IMAGE_EXTENSIONS",
    "ALLOWED_FORMATS",
    "ImageInfo",
    "ImageRejected",
    "probe_image",
    "ext_matches_format",
]

IMAGE_EXTENSIONS: set[str] = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}

# Normalised format names; PIL names on the left when they differ (MPO is multi-picture JPEG).
_FORMAT_ALIASES = {"MPO": "JPEG"}
ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
# Only these PIL plugins may identify a member: fewer parsers see untrusted bytes. (MPO files
# are opened by the JPEG plugin, which returns an MpoImageFile.)
_PIL_FORMATS = sorted(ALLOWED_FORMATS)

_EXT_FORMAT = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
}


@dataclass
class ImageInfo:
    """What the header says: normalised format name and size in pixels as displayed.

    ``orientation`` is the EXIF orientation tag (1 = none); for 5-8 (a quarter turn) width
    and height are already swapped, so filters on width/height see what a viewer (and the
    embedder, which applies the tag) sees.
    """

    format: str
    width: int
    height: int
    orientation: int = 1


class ImageRejected(Exception):
    """An image member that cannot be ingested; ``reason`` is a short quarantine code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def ext_matches_format(ext: str, fmt: str) -> bool:
    """True when a member extension names the given format (jpg/jpeg ↔ JPEG, tif/tiff ↔ TIFF)."""
    fmt = _FORMAT_ALIASES.get(fmt.upper(), fmt.upper())
    return _EXT_FORMAT.get(ext.lower()) == fmt


def probe_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Identify an image from its header only; raise ImageRejected when it cannot be ingested.

    Reasons: ``empty_image`` (no bytes), ``undecodable_image`` (not identifiable, or a format
    outside ALLOWED_FORMATS), ``too_many_pixels`` (width*height > max_pixels, decided from
    the header; PIL's own DecompressionBombError, raised above twice PIL's global
    MAX_IMAGE_PIXELS whatever max_pixels says, maps to this reason too, and its warning is
    silenced because max_pixels is the limit that applies).
    A header that parses but pixel data that is broken is not detected here: that needs a
    full decode, which embedding does anyway.
    """
    if not data:
        raise ImageRejected("empty_image", "image member has 0 bytes")
    pil_format, width, height, orientation = header_info(data) or _pil_header(data)
    fmt = _FORMAT_ALIASES.get(pil_format, pil_format)
    if fmt not in ALLOWED_FORMATS:
        raise ImageRejected("undecodable_image", f"format {pil_format or 'unknown'} not allowed")
    if width < 1 or height < 1:
        raise ImageRejected("undecodable_image", f"invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels", f"{width}x{height} = {width * height} pixels > {max_pixels}"
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(format=fmt, width=width, height=height, orientation=orientation)


def _pil_header(data: bytes) -> tuple[str, int, int, int]:
    """PIL's format name, size and EXIF orientation of `data` (ImageRejected if it fails)."""
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit; max_pixels is checked after, so the user's limit
            # (not PIL's global) decides. PIL's hard error (2x its limit) still maps here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
                return img.format or "", img.size[0], img.size[1], _orientation(img)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", f"decompression bomb check: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected("undecodable_image", "not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes
        raise ImageRejected(
            "undecodable_image", f"header could not be parsed: {type(exc).__name__}: {exc}"
        ) from None


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag, read without decoding pixels (1 when absent or malformed).

    PNG keeps EXIF in an eXIf chunk that may follow the pixel data; PIL's ``getexif`` would
    then decode the whole image, so a PNG only counts when the chunk came before the pixels.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - broken EXIF never rejects an image
        return 1
