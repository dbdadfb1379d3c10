"""Cheap per-image quality signals from decoded pixels: sharpness, colourfulness, grayscale.

Computed in the embed pass, where the pixels are already decoded, on a fixed-size copy so that
the values do not depend on the image's resolution: every image is resized (bilinear, PIL's
antialiased downsampling) to ``SIGNAL_SIZE`` × ``SIGNAL_SIZE`` pixels, aspect ratio not kept
(the decoder already bounds it to 4:1), then

- ``sharpness``: variance of the 4-neighbour Laplacian of the grayscale copy (ITU-R 601 luma,
  0..255), over the interior pixels. Blur, upscaled thumbnails and flat images score low.
- ``colorfulness``: Hasler & Süsstrunk (2003), ``sigma_rgyb + 0.3 * mu_rgyb`` with
  ``rg = R - G`` and ``yb = (R + G) / 2 - B`` on 0..255 RGB; 0 for a gray image, about 100+
  for saturated ones.
- ``grayscale``: true when the 99th percentile of per-pixel channel spread (max − min of R, G, B)
  is at most ``GRAYSCALE_SPREAD`` (tolerates JPEG chroma noise on scanned black-and-white).

Any PIL mode is accepted (non-RGB is converted; transparency composited on white, as the
decoder does). A degenerate image gives NaN/None values, never an exception. uint8 pixels
(every PIL image, the tensor decoder's copies) are computed exactly, in integers that float32
holds and float64/Python-int totals: the same values as float64 arithmetic to ~1e-12.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "GRAYSCALE_SPREAD",
    "SIGNAL_SIZE",
    "ImageSignals",
    "colorfulness",
    "image_signals",
    "is_grayscale",
    "sharpness",
    "signals_of_rgb",
]

SIGNAL_SIZE = 256
GRAYSCALE_SPREAD = 8.0
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True)
class ImageSignals:
    """The signals of one image (NaN / None when they could not be computed)."""

    sharpness: float = float("nan")
    colorfulness: float = float("nan")
    grayscale: bool | None = None


def image_signals(img: Image.Image) -> ImageSignals:
    """All signals of ``img`` from one resized copy; never raises on a bad image."""
    try:
        planes = _fixed_planes(img)
    except Exception:  # noqa: BLE001 - a mode PIL cannot convert or resize: no signals
        return ImageSignals()
    return _signals_of_planes(planes, SIGNAL_SIZE, SIGNAL_SIZE)


def signals_of_rgb(rgb: np.ndarray) -> ImageSignals:
    """The signals of an already resized ``(SIGNAL_SIZE, SIGNAL_SIZE, 3)`` 0..255 RGB array
    (the tensor decoder resizes on its device and hands the copy over).

    uint8 pixels take the exact integer path (a tensor's ``permute(1, 2, 0)`` is already planar
    in memory: no copy); any other dtype, or a size the path cannot chunk, the float64 one."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
        h, w, _ = rgb.shape
        if h * w and h * w % _CHUNK == 0:
            planes = list(np.ascontiguousarray(rgb.transpose(2, 0, 1)).reshape(3, h * w))
            return _signals_of_planes(planes, h, w)
    return _signals_of_float(rgb.astype(np.float64))


def sharpness(img: Image.Image) -> float:
    """Variance of the Laplacian of ``img`` resized to SIGNAL_SIZE² grayscale (NaN if not
    computable)."""
    return image_signals(img).sharpness


def colorfulness(img: Image.Image) -> float:
    """Hasler–Süsstrunk colourfulness of ``img`` resized to SIGNAL_SIZE² (NaN if not
    computable)."""
    return image_signals(img).colorfulness


def is_grayscale(img: Image.Image) -> bool | None:
    """Whether ``img`` is (near-)grayscale, None when not computable."""
    return image_signals(img).grayscale


# ---- internals --------------------------------------------------------------------------------
# The uint8 path is exact: every per-pixel value is an integer that float32 holds exactly (luma
# scaled by 1000, R - G, 2 * yb, the Laplacian of that luma; chunk sums of _CHUNK values), and
# the totals are float64 or Python ints, so it agrees with float64 arithmetic to ~1e-12.
_CHUNK = 64  # 64 * (2 * 255) ** 2 < 2 ** 24: a chunk's sum of squares is exact in float32
assert SIGNAL_SIZE * SIGNAL_SIZE % _CHUNK == 0, "image_signals' planes must split into chunks"
# Rows: luma * 1000 (ITU-R 601: 0.299, 0.587, 0.114), rg = R - G, 2 * yb = R + G - 2B.
_MIX = np.array([[299, 587, 114], [1, -1, 0], [1, 1, -2]], dtype=np.float32)
_MIX.flags.writeable = False
_ONES = np.ones(_CHUNK, dtype=np.float32)
_ONES.flags.writeable = False
_SPREAD_LIMIT = math.floor(GRAYSCALE_SPREAD)  # for an integer spread, s > 8.0 iff s > 8
_local = threading.local()


class _Scratch:
    """One thread's work arrays for ``h`` x ``w`` images: two ``(3, h * w)`` float32 blocks
    (1.5 MB at 256²), the Laplacian's arrays laid into the first once it is consumed. Fresh
    arrays per image cost more in page faults than the arithmetic, and a smaller working set
    stays in the L2 cache."""

    def __init__(self, h: int, w: int) -> None:
        n, inner = h * w, max(h - 2, 0) * w
        self.shape = (h, w)
        self.pixels = np.empty((3, n), dtype=np.float32)
        self.rows = np.empty((3, n), dtype=np.float32)
        spare = self.pixels.reshape(-1)  # 3n float32: lap (inner) + exact (2 * inner) fit
        self.lap = spare[:inner]
        self.exact = spare[inner : 3 * inner].view(np.float64)


def _scratch(h: int, w: int) -> _Scratch:
    """This thread's scratch arrays for ``h`` x ``w`` (threads never share them)."""
    scratch: _Scratch | None = getattr(_local, "scratch", None)
    if scratch is None or scratch.shape != (h, w):
        scratch = _local.scratch = _Scratch(h, w)
    return scratch


def _fixed_planes(img: Image.Image) -> list[np.ndarray]:
    """The R, G, B planes (flat uint8, row-major) of ``img`` in any mode resized to
    SIGNAL_SIZE²; PIL packs each band itself, cheaper than splitting an interleaved array."""
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        img = background
    if img.mode != "RGB":
        img = img.convert("RGB")
    small = img.resize((SIGNAL_SIZE, SIGNAL_SIZE), Image.Resampling.BILINEAR)
    return [np.frombuffer(small.tobytes("raw", band), dtype=np.uint8) for band in "RGB"]


def _signals_of_planes(planes: Sequence[np.ndarray], h: int, w: int) -> ImageSignals:
    """Signals of flat contiguous uint8 R, G, B planes of ``h`` x ``w``, ``h * w`` a multiple
    of _CHUNK."""
    n = h * w
    grayscale = _grayscale(*planes)
    scratch = _scratch(h, w)
    for plane, pixels in zip(planes, scratch.pixels, strict=True):
        np.copyto(pixels, plane)
    rows = scratch.rows
    np.matmul(_MIX, scratch.pixels, out=rows)  # luma * 1000, rg, 2 yb
    chunks = rows[1:].reshape(-1, _CHUNK)
    s_rg, s_yb2 = (int(v) for v in (chunks @ _ONES).reshape(2, -1).sum(axis=1, dtype=np.float64))
    squares = np.einsum("ij,ij->i", chunks, chunks).reshape(2, -1)
    q_rg, q_yb2 = (int(v) for v in squares.sum(axis=1, dtype=np.float64))
    return ImageSignals(
        sharpness=_sharpness(scratch, h, w),  # after the sums: it overwrites rows 1 and 2
        colorfulness=_colorfulness(n, s_rg, s_yb2, q_rg, q_yb2),
        grayscale=grayscale,
    )


def _sharpness(scratch: _Scratch, h: int, w: int) -> float:
    """Variance of the 4-neighbour Laplacian of the luma row over the interior pixels. Taken
    over the flat rows 1..h-2 so that every slice is contiguous; the two wrapped-around columns
    are zeroed and left out of the count."""
    if h < 3 or w < 3:
        return float("nan")
    n, luma, lap = h * w, scratch.rows[0], scratch.lap
    center = scratch.rows[1, : n - 2 * w]
    np.add(luma[: n - 2 * w], luma[2 * w :], out=lap)
    np.add(lap, luma[w - 1 : n - w - 1], out=lap)
    np.add(lap, luma[w + 1 : n - w + 1], out=lap)
    np.multiply(luma[w : n - w], 4.0, out=center)
    np.subtract(lap, center, out=lap)
    edges = lap.reshape(h - 2, w)
    edges[:, 0] = 0.0
    edges[:, -1] = 0.0
    exact = scratch.exact  # |lap| <= 1.02e6 (luma * 1000): its squares need float64
    np.copyto(exact, lap)
    # einsum, not np.dot: OpenBLAS threads a ddot this long, and its spinning threads cost more
    # than the dot itself when the embed pass keeps the cores busy.
    m = (h - 2) * (w - 2)
    total = float(np.einsum("i->", exact))
    var = (float(np.einsum("i,i->", exact, exact)) - total * total / m) / m
    return max(var, 0.0) / 1e6


def _colorfulness(n: int, s_rg: int, s_yb2: int, q_rg: int, q_yb2: int) -> float:
    """Hasler–Süsstrunk from the exact sums and sums of squares of rg and 2 yb over n pixels."""
    var_rg = (n * q_rg - s_rg * s_rg) / (n * n)
    var_yb = (n * q_yb2 - s_yb2 * s_yb2) / (4 * n * n)
    mean_rg, mean_yb = s_rg / n, s_yb2 / (2 * n)
    return math.sqrt(var_rg + var_yb) + 0.3 * math.sqrt(mean_rg * mean_rg + mean_yb * mean_yb)


def _grayscale(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> bool:
    """At most 1 % of pixels spread more than GRAYSCALE_SPREAD (the 99th percentile, counted),
    on uint8 planes (``max(axis=2)`` over an interleaved last axis of 3 is ~50x slower)."""
    spread = np.maximum(r, g)
    np.maximum(spread, b, out=spread)
    spread -= np.minimum(np.minimum(r, g), b)
    return bool(np.count_nonzero(spread > _SPREAD_LIMIT) <= 0.01 * spread.size)


def _signals_of_float(rgb: np.ndarray) -> ImageSignals:
    """The definitions in plain float64 on ``(H, W, 3)`` pixels of any real dtype (float input,
    or a size the uint8 path cannot chunk)."""
    if rgb.size == 0:
        return ImageSignals()
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    lap -= 4.0 * gray[1:-1, 1:-1]
    rg = r - g
    yb = 0.5 * (r + g) - b
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return ImageSignals(
        sharpness=float(lap.var()) if lap.size else float("nan"),
        colorfulness=float(
            np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
        ),
        grayscale=bool(np.count_nonzero(spread > GRAYSCALE_SPREAD) <= 0.01 * spread.size),
    )
