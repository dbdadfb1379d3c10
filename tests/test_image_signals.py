"""Sharpness, colourfulness and grayscale on PIL images (no Spark, no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curator_udfs.image_signals import (
    GRAYSCALE_SPREAD,
    SIGNAL_SIZE,
    ImageSignals,
    colorfulness,
    image_signals,
    is_grayscale,
    sharpness,
    signals_of_rgb,
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


# ---- parity with a plain float64 reference ---------------------------------------------------
def _reference_rgb(img: Image.Image) -> np.ndarray:
    """The module docstring's fixed copy: transparency on white, RGB, bilinear SIGNAL_SIZE²."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        img = white
    small = img.convert("RGB").resize((SIGNAL_SIZE, SIGNAL_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(small)


def _reference(rgb: np.ndarray) -> ImageSignals:
    """The definitions, straight: float64 throughout, np.var, the spread counted."""
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    rg, yb = r - g, (r + g) / 2 - b
    spread = x.max(axis=2) - x.min(axis=2)
    return ImageSignals(
        sharpness=float(np.var(lap)) if lap.size else float("nan"),
        colorfulness=float(
            np.sqrt(np.var(rg) + np.var(yb)) + 0.3 * np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2)
        ),
        grayscale=bool(np.sum(spread > GRAYSCALE_SPREAD) <= 0.01 * spread.size),
    )


def _assert_same(got: ImageSignals, want: ImageSignals) -> None:
    assert got.grayscale == want.grayscale
    for field in ("sharpness", "colorfulness"):
        a, b = getattr(got, field), getattr(want, field)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9), (
            field,
            a,
            b,
        )


def _parity_images() -> list[Image.Image]:
    """~30 images: every common mode, tiny to long sizes, flat, smooth, noisy, saturated."""
    rng = np.random.default_rng(7)
    noise = _noise(120, 90, seed=3)
    yy, xx = np.mgrid[0:200, 0:300]
    ramp = Image.fromarray(((xx + yy) * 255 // 498).astype(np.uint8))
    bowl = Image.fromarray(((xx - 150) ** 2 // 100 % 256).astype(np.uint8)).convert("RGB")
    rgba = rng.integers(0, 256, (70, 110, 4), dtype=np.uint8)
    rgba[:35, :, 3] = 0
    rgba[35:, :55, 3] = 128
    jitter = np.clip(
        np.asarray(noise.convert("L"), dtype=np.int16)[..., None]
        + rng.integers(-3, 4, (90, 120, 3)),
        0,
        255,
    ).astype(np.uint8)
    halves = np.zeros((64, 64, 3), dtype=np.uint8)
    halves[:, :32] = (255, 0, 0)
    halves[:, 32:] = (0, 0, 255)
    transparent_p = noise.quantize(16)
    transparent_p.info["transparency"] = 0
    return [
        Image.new("RGB", (40, 30), (0, 0, 0)),
        Image.new("RGB", (40, 30), (255, 255, 255)),
        Image.new("RGB", (1, 1), (10, 200, 30)),
        Image.new("RGB", (2, 3), (90, 90, 91)),
        Image.new("RGBA", (30, 30), (255, 0, 0, 0)),
        ramp,
        ramp.convert("RGB"),
        bowl,
        noise,
        _noise(256, 256, seed=4),
        _noise(1000, 250, seed=5),
        _noise(4000, 50, seed=6),
        _noise(50, 200, seed=8).filter(ImageFilter.GaussianBlur(3)),
        Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)),
        Image.fromarray(rgba, "RGBA"),
        Image.fromarray(rgba, "RGBA").convert("LA"),
        Image.fromarray(jitter),
        Image.fromarray(halves),
        Image.fromarray((halves * 0.3 + 90).astype(np.uint8)),
        noise.convert("L"),
        noise.convert("1"),
        noise.convert("CMYK"),
        noise.quantize(16),
        transparent_p,
        noise.convert("L").convert("I"),
        noise.convert("L").convert("F"),
        Image.fromarray(rng.integers(0, 65536, (60, 40)).astype(np.uint16)),  # I;16
        noise.convert("YCbCr"),
        noise.convert("HSV"),
    ]


def test_image_signals_match_a_float64_reference() -> None:
    for img in _parity_images():
        _assert_same(image_signals(img), _reference(_reference_rgb(img)))


def test_signals_of_rgb_match_the_reference_for_every_layout_and_dtype() -> None:
    rng = np.random.default_rng(9)
    smooth = np.asarray(_noise(256, 256, seed=10).filter(ImageFilter.GaussianBlur(2)))
    arrays = [
        smooth,
        rng.integers(0, 256, (SIGNAL_SIZE, SIGNAL_SIZE, 3), dtype=np.uint8),
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),  # another size the fast path takes
        rng.integers(0, 256, (13, 10, 3), dtype=np.uint8),  # one it does not: float64 path
        np.zeros((SIGNAL_SIZE, SIGNAL_SIZE, 3), dtype=np.uint8),
    ]
    for rgb in arrays:
        want = _reference(rgb)
        planar = np.ascontiguousarray(rgb.transpose(2, 0, 1)).transpose(1, 2, 0)  # a tensor's
        for variant in (rgb, planar, rgb.astype(np.float32), rgb.astype(np.float64) + 0.25):
            ref = want if variant.dtype == np.uint8 else _reference(variant)
            _assert_same(signals_of_rgb(variant), ref)


@pytest.mark.parametrize("spread", [8, 9])
@pytest.mark.parametrize("count", [655, 656])
def test_grayscale_threshold_is_exact(spread: int, count: int) -> None:
    """1 % of 256² is 655.36 pixels: 655 spread pixels still pass, 656 do not (if over 8)."""
    rgb = np.full((SIGNAL_SIZE, SIGNAL_SIZE, 3), 100, dtype=np.uint8)
    rgb.reshape(-1, 3)[:count, 0] += spread
    got = signals_of_rgb(rgb)
    assert got.grayscale is (spread <= GRAYSCALE_SPREAD or count <= 655)
    _assert_same(got, _reference(rgb))


def test_signals_are_the_same_from_several_threads() -> None:
    """Each thread has its own scratch arrays: concurrent calls do not mix their values."""
    from concurrent.futures import ThreadPoolExecutor

    images = [_noise(100 + 7 * i, 80, seed=i) for i in range(8)]
    alone = [image_signals(img) for img in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(image_signals, images * 4))
    assert together == alone * 4
