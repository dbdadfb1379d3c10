"""decode_rgb: every image mode the web throws at us becomes 8-bit RGB, or a ValueError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curator_udfs.decode import decode_rgb


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_rgb_jpeg_roundtrip() -> None:
    out = decode_rgb(encode(Image.new("RGB", (32, 20), (200, 10, 10)), "JPEG", quality=95))
    assert out.mode == "RGB" and out.size == (32, 20)
    assert abs(int(np.asarray(out)[5, 5, 0]) - 200) < 8


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_rgb(encode(cmyk, "JPEG", quality=95))
    assert out.mode == "RGB"
    r, g, b = np.asarray(out)[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_scaled_not_clipped() -> None:
    arr = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = decode_rgb(encode(img, "PNG"))
    assert out.mode == "RGB"
    assert np.asarray(out)[0, :, 0].tolist() == [0, 128, 255]  # PIL's convert would clip to 255


def test_rgba_composited_on_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((0, 0), (0, 0, 255, 255))
    out = np.asarray(decode_rgb(encode(img, "PNG")))
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 255]


def test_la_composited_on_white() -> None:
    img = Image.new("LA", (4, 4), (0, 128))  # black at half alpha
    out = np.asarray(decode_rgb(encode(img, "PNG")))
    assert 120 <= out[0, 0, 0] <= 135 and out[0, 0].tolist() == [out[0, 0, 0]] * 3


def test_palette_with_transparency() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    out = np.asarray(decode_rgb(encode(img, "PNG", transparency=0)))
    assert out[2, 2].tolist() == [255, 255, 255]  # transparent index -> white, not black
    assert out[0, 0].tolist() == [255, 0, 0]


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(decode_rgb(data))
    assert out[4, 4, 0] > 200 and out[4, 4, 1] < 50


def test_webp() -> None:
    out = decode_rgb(encode(Image.new("RGB", (10, 6), (0, 200, 0)), "WEBP", quality=90))
    assert out.mode == "RGB" and out.size == (10, 6)


def test_one_pixel_and_grayscale_and_bilevel() -> None:
    assert decode_rgb(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")).size == (1, 1)
    assert decode_rgb(encode(Image.new("L", (3, 3), 77), "PNG")).getpixel((1, 1)) == (77, 77, 77)
    assert decode_rgb(encode(Image.new("1", (3, 3), 1), "PNG")).getpixel((0, 0)) == (255,) * 3


def test_exif_orientation_applied() -> None:
    img = Image.new("RGB", (40, 20), (10, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_rgb(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize(
    "blob",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20],
    ids=["empty", "text", "png-magic-only"],
)
def test_undecodable_raises_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError, match="decode:"):
        decode_rgb(blob)


def test_truncated_jpeg_raises_value_error() -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ValueError, match="corrupt or truncated|not a recognised"):
        decode_rgb(data[: len(data) // 3])


def test_pixel_limit_enforced_from_header() -> None:
    data = encode(Image.new("L", (200, 200)), "PNG")
    with pytest.raises(ValueError, match="exceeds the limit"):
        decode_rgb(data, max_pixels=100 * 100)
    assert Image.MAX_IMAGE_PIXELS  # the global protection is left on


def test_decompression_bomb_uses_pil_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="exceeds the limit|decompression bomb"):
        decode_rgb(encode(Image.new("RGB", (100, 100)), "PNG"))
