"""Decode untrusted image bytes to an 8-bit RGB PIL image, the embedders' only input.

Web-scraped images come in every mode PIL knows: CMYK JPEGs, 16-bit PNGs, palettes with a
transparent colour, RGBA logos, animated GIFs, rotated phone photos. :func:`decode_rgb` turns
all of them into plain ``RGB`` the same way every time (transparency composited on white, EXIF
orientation applied, 16-bit scaled to 8-bit), and turns every failure into ``ValueError`` so the
caller can record the reason and move on. The decompression-bomb limit stays on.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "decode_rgb",
    "open_checked",
    "bound_aspect_box",
    "DEFAULT_MAX_PIXELS",
    "DECODE_FORMATS",
    "MAX_ASPECT",
]

# PIL's own default for Image.MAX_IMAGE_PIXELS (and the ingest default max_image_pixels).
DEFAULT_MAX_PIXELS = 89_478_485
# Only these PIL plugins may parse the bytes (same set as ingest's header probe; MPO = JPEG).
DECODE_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Longer side / shorter side beyond which the long side is center-cropped (see _bound_aspect).
MAX_ASPECT = 4.0
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# What PIL raises on broken data (ValueError too, e.g. "tile cannot extend outside image").
_DECODER_ERRORS = (OSError, SyntaxError, EOFError, ValueError, TypeError, IndexError, KeyError)


def decode_rgb(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode ``data`` fully and return an ``RGB`` image; raise ``ValueError`` if impossible.

    ``max_pixels`` defaults to ``Image.MAX_IMAGE_PIXELS`` (or PIL's default when someone set that
    to None): images with more pixels are refused from the header, before any pixel is decoded.
    Multi-frame images (GIF, APNG, WebP) give their first frame. Images longer than
    ``MAX_ASPECT``:1 come back center-cropped to that ratio (see :func:`_bound_aspect`).
    """
    img = open_checked(data, max_pixels=max_pixels)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"decode: refused as a decompression bomb: {exc}") from exc
    except _DECODER_ERRORS as exc:
        raise ValueError(f"decode: image data is corrupt or truncated: {exc}") from exc
    try:
        return _to_rgb(_bound_aspect(_apply_exif_orientation(img)))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"decode: could not convert {img.mode} image to RGB: {exc}") from exc


def open_checked(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Open ``data``'s header (no pixel decoded) and apply decode_rgb's refusals: empty data,
    unknown formats, corrupt headers, empty sizes and more than ``max_pixels`` pixels, each a
    ``ValueError`` with the reason. Shared by the PIL and torchvision decoders."""
    if data is None or len(data) == 0:
        raise ValueError("decode: no image bytes (empty or missing image)")
    limit = max_pixels if max_pixels is not None else (Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS)
    try:
        # No warnings.catch_warnings() here: it is not thread-safe, and decoding runs in
        # threads. PIL's DecompressionBombWarning (1x-2x its limit) is moot: we refuse those.
        img = Image.open(io.BytesIO(bytes(data)), formats=_available_formats())
    except Image.DecompressionBombError as exc:
        raise ValueError(f"decode: refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"decode: not a recognised image ({len(data)} bytes; allowed formats: "
            f"{', '.join(DECODE_FORMATS)})"
        ) from exc
    except _DECODER_ERRORS as exc:
        raise ValueError(f"decode: image header is corrupt: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ValueError(f"decode: image has an empty size {width}x{height}")
    if width * height > limit:
        raise ValueError(
            f"decode: {width}x{height} = {width * height} pixels exceeds the limit of {limit} "
            "(decompression-bomb guard; raise ingest.max_image_pixels only for trusted data)"
        )
    return img


def _available_formats() -> list[str]:
    """DECODE_FORMATS this Pillow can open (newer Pillows read MPO through the JPEG plugin and
    have no separate ``MPO`` opener; naming a missing one makes ``Image.open`` raise KeyError)."""
    Image.init()
    return [f for f in DECODE_FORMATS if f in Image.OPEN]


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag; a malformed EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a decodable image fail
        return img


def _bound_aspect(img: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Center-crop the long side to ``max_aspect`` times the short side.

    Why: model transforms resize the *short* side to the input size, so a 1x4000 strip becomes
    168x672000 (1.3 GB) before the center crop, and a 1x60000 one takes the worker down. Every
    timm eval transform then center-crops a square (crop_pct <= 1), which lies inside the kept
    region, so the result is the same; squash-mode models see a 4:1 strip instead of a line.
    """
    box = bound_aspect_box(*img.size, max_aspect)
    return img if box is None else img.crop(box)


def bound_aspect_box(
    width: int, height: int, max_aspect: float = MAX_ASPECT
) -> tuple[int, int, int, int] | None:
    """The (left, top, right, bottom) center crop of :func:`_bound_aspect`, None when the image
    is within ``max_aspect`` (shared with the tensor decoder, so both crop the same pixels)."""
    short, long_ = min(width, height), max(width, height)
    keep = max(1, int(short * max_aspect))
    if long_ <= keep:
        return None
    if width > height:
        left = (width - keep) // 2
        return (left, 0, left + keep, height)
    top = (height - keep) // 2
    return (0, top, width, top + keep)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB with a defined, documented rule per mode."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _high_depth_to_rgb(img)
    if mode == "P" or "transparency" in img.info:
        has_alpha = "transparency" in img.info or mode == "PA"
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in _ALPHA_MODES:
        return _composite_on_white(img.convert("RGBA"))
    # CMYK (PIL already un-inverts Adobe CMYK JPEGs), L, 1, YCbCr, LAB, HSV, ...
    return img.convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    """Alpha-composite over a white background so transparent pixels look like a page."""
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit integer / float greyscale to 8 bits (PIL's convert clips instead).

    16-bit (``I;16*`` and ``I``, which 16-bit PNGs may open as) maps 0..65535 to 0..255 with
    rounding; float images are taken as 0..1 when their maximum is at most 1, else 0..255.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0 / scale, neginf=0.0) * scale
    else:
        arr = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
