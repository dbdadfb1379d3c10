"""64-bit perceptual hashes for near-duplicate images, with banding for candidate joins.

``phash64`` gives a DCT perceptual hash (``imagehash.phash``, 8x8 bits) as a signed 64-bit int
so it fits a Spark ``LongType``. ``bands`` cuts a hash into ``n_bands`` disjoint bit ranges:
two hashes at Hamming distance < ``n_bands`` differ in at most ``n_bands - 1`` bits, so at
least one band holds no differing bit and is equal in both (pigeonhole). Joining on
(band index, band value) therefore finds every such pair; ``hamming`` then filters the
candidates to the real distance threshold. ``band_layout`` is the same cut as (shift, width)
pairs, for building the band columns in Spark.

``hash_images`` is the ``mapInPandas`` body of the dedup job: it hashes a batch of images and
turns an image that does not decode (``ValueError`` of ``phash64``) into an ``error`` string,
so one bad image does not fail the task.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from curator_udfs.byte_ranges import fill_images

__all__ = [
    "PHASH_SCHEMA",
    "band_layout",
    "bands",
    "hamming",
    "hash_images",
    "phash64",
    "to_signed64",
    "to_unsigned64",
]

PHASH_SCHEMA = "sample_id STRING, phash BIGINT, error STRING"  # hash_images' output frames
_MAX_ERROR_CHARS = 500

_MASK64 = (1 << 64) - 1
_DRAFT_SIZE = (256, 256)  # JPEG DCT scaling never goes below this; phash works at 32x32


def to_signed64(u: int) -> int:
    """Map an unsigned 64-bit value to the int64 with the same bits (two's complement)."""
    u &= _MASK64
    return u - (1 << 64) if u >= (1 << 63) else u


def to_unsigned64(h: int) -> int:
    """Inverse of :func:`to_signed64`: the unsigned 64-bit value with the same bits."""
    return h & _MASK64


def _to_luma(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit greyscale; alpha is composited onto white."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16/32-bit or float greyscale: rescale the actual range to 0..255 (phash only
        # compares DCT coefficients to their median, so an affine rescale is harmless).
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = np.nan_to_num((arr - lo) * scale)
        return Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), mode="L")
    if mode == "P":
        img = img.convert("RGBA")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    if img.mode == "1":
        return img.convert("L")
    return img.convert("L")


def _decode(data: bytes) -> Image.Image:
    img: Image.Image = Image.open(io.BytesIO(data))
    if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale; the hash only needs 32x32 pixels.
        img.draft(img.mode if img.mode != "CMYK" else "CMYK", _DRAFT_SIZE)
    img.load()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF must not lose the hash
        pass
    return img


def phash64(data: bytes) -> int:
    """Perceptual hash of encoded image bytes as a signed int64 (Spark ``LongType``).

    Bits are ``imagehash.phash(img).hash`` flattened row-major, first bit most significant
    (the same order as ``str(ImageHash)`` in hex); the unsigned value ``u`` is stored as
    ``u - 2**64`` when ``u >= 2**63``. Raises ``ValueError`` if the bytes do not decode.
    """
    try:
        img = _decode(data)
        luma = _to_luma(img)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad input
        raise ValueError(f"cannot decode image for phash: {type(exc).__name__}: {exc}") from exc
    bits = imagehash.phash(luma).hash.flatten()
    u = 0
    for bit in bits:
        u = (u << 1) | int(bool(bit))
    return to_signed64(u)


def band_layout(n_bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each of the ``n_bands`` bit ranges of a hash, lowest bits first.

    Widths are ``64 // n_bands``, the first ``64 % n_bands`` bands one bit wider; they cover
    the 64 bits without overlap. :func:`bands` cuts hashes with this layout, and the dedup job
    builds its Spark band columns from it, so both cut the same way.
    """
    if not 1 <= n_bands <= 64:
        raise ValueError(f"n_bands must be in 1..64, got {n_bands}")
    base, extra = divmod(64, n_bands)
    out, shift = [], 0
    for b in range(n_bands):
        width = base + 1 if b < extra else base
        out.append((shift, width))
        shift += width
    return out


def bands(h: int, n_bands: int = 4) -> list[int]:
    """Split a 64-bit hash into ``n_bands`` disjoint bit ranges, lowest bits first.

    With 4 bands each value is 16 bits (0..65535); with widths that do not divide 64 the
    first ``64 % n_bands`` bands get one extra bit. Values are non-negative; the list
    position is the band index, so join on (index, value). Any two hashes with
    ``hamming(a, b) < n_bands`` share at least one (index, value).
    """
    u = to_unsigned64(h)
    return [(u >> shift) & ((1 << width) - 1) for shift, width in band_layout(n_bands)]


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes (signed or unsigned form)."""
    return ((a ^ b) & _MASK64).bit_count()


def hash_images(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (sample_id, image[, reference columns]) → (sample_id, phash, error);
    bad or unreadable images get error.

    ``phash`` is a nullable Int64 (null where the image has no bytes or does not decode) and
    ``error`` the reason, cut to 500 characters; one output frame per input frame, same rows.
    """
    for pdf in frames:
        pdf = fill_images(pdf)  # reference mode: the bytes from the shard, verified
        hashes: list[int | None] = []
        errors: list[str | None] = []
        for data, unreadable in zip(pdf["image"], pdf["image_error"], strict=True):
            try:
                if unreadable is not None:
                    raise ValueError(unreadable)
                if data is None:
                    raise ValueError("no image bytes")
                hashes.append(phash64(bytes(data)))
                errors.append(None)
            except ValueError as exc:
                hashes.append(None)
                errors.append(str(exc)[:_MAX_ERROR_CHARS])
        yield pd.DataFrame(
            {
                "sample_id": pdf["sample_id"],
                "phash": pd.array(hashes, dtype="Int64"),
                "error": errors,
            }
        )
