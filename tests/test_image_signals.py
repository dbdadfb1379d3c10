"""Sharpness, colourfulness and grayscale on PIL images (no Spark, no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curator_udfs.image_signals import (
    colorfulness,
    image_signals,
    is_grayscale,
    sharpness,
)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    """A detailed RGB image: a checkerboard with noise on top."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((xx // max(1, w // 16)) + (yy // max(1, h // 16))) % 2) * 160.0
    arr = board[..., None] + rng.normal(0, 30, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(64, 64), (300, 200), (1024, 768), (4000, 1), (1, 4000)])
def test_blur_lowers_sharpness_at_every_size(size: tuple[int, int]) -> None:
    sharp = _noise(*size)
    radius = max(1.0, max(size) / 128)  # a visible blur at any resolution
    blurred = sharp.filter(ImageFilter.GaussianBlur(radius))
    s, b = sharpness(sharp), sharpness(blurred)
    assert math.isfinite(s) and math.isfinite(b)
    assert b < 0.5 * s, (size, s, b)


def test_sharpness_does_not_scale_with_resolution() -> None:
    """The same content at 512 and 2048 pixels scores alike (both are resized to 256)."""
    small = _noise(512, 512, seed=1)
    large = small.resize((2048, 2048), Image.Resampling.NEAREST)
    assert sharpness(large) == pytest.approx(sharpness(small), rel=0.15)


def test_colorfulness_gray_vs_saturated() -> None:
    gray = Image.fromarray(np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (100, 1)))
    assert colorfulness(gray) == pytest.approx(0.0, abs=1e-9)
    assert colorfulness(Image.new("RGB", (50, 50), (128, 128, 128))) == pytest.approx(0.0)
    halves = np.zeros((100, 100, 3), dtype=np.uint8)
    halves[:, :50] = (255, 0, 0)
    halves[:, 50:] = (0, 0, 255)
    saturated = colorfulness(Image.fromarray(halves))
    muted = colorfulness(Image.fromarray((halves * 0.3 + 90).astype(np.uint8)))
    assert saturated > 100 and 0 < muted < saturated


def test_grayscale_flag() -> None:
    assert is_grayscale(_noise(80, 60).convert("L")) is True
    assert is_grayscale(Image.new("RGB", (10, 10), (200, 20, 20))) is False
    # Chroma noise of a few levels (a scanned black-and-white page as JPEG) is still grayscale.
    rng = np.random.default_rng(2)
    base = np.asarray(_noise(64, 64).convert("L"), dtype=np.float64)[..., None].repeat(3, -1)
    jittered = np.clip(base + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    assert is_grayscale(Image.fromarray(jittered)) is True


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "RGBA", "LA", "P", "I", "F", "I;16"])
def test_every_mode_gives_values(mode: str) -> None:
    src = _noise(70, 50)
    if mode in ("I", "F", "I;16"):
        img = src.convert("L").convert(mode)
    elif mode == "P":
        img = src.quantize(16)
        img.info["transparency"] = 0
    else:
        img = src.convert(mode)
    sig = image_signals(img)
    assert math.isfinite(sig.sharpness) and math.isfinite(sig.colorfulness)
    assert isinstance(sig.grayscale, bool)


def test_fully_transparent_is_white_and_a_tiny_image_works() -> None:
    clear = image_signals(Image.new("RGBA", (30, 30), (255, 0, 0, 0)))
    assert clear.sharpness == 0.0 and clear.colorfulness == 0.0 and clear.grayscale is True
    one = image_signals(Image.new("RGB", (1, 1), (10, 200, 30)))
    assert one.sharpness == 0.0 and one.colorfulness > 0 and one.grayscale is False


def test_unconvertible_image_gives_nulls_not_an_error() -> None:
    class Broken(Image.Image):
        def convert(self, *args: object, **kwargs: object) -> Image.Image:  # type: ignore[override]
            raise OSError("cannot convert")

    img = Broken()
    img._mode = "CMYK"  # type: ignore[attr-defined]
    sig = image_signals(img)
    assert math.isnan(sig.sharpness) and math.isnan(sig.colorfulness) and sig.grayscale is None
    assert math.isnan(sharpness(img)) and is_grayscale(img) is None
