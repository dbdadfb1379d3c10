"""Hostile-but-valid input, unit level: extreme aspect ratios, EXIF rotation, deep JSON."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from curator_udfs.decode import MAX_ASPECT, decode_rgb
from curator_udfs.image_probe import probe_image
from curator_udfs.sample_text import MAX_JSON_DEPTH
from curator_udfs.sample_text import parse_meta as _parse_meta
from tests import badshards
from tests.faults import corpus


@pytest.mark.parametrize(("w", "h"), [(60_000, 1), (1, 60_000), (4000, 3), (2, 90_000)])
def test_extreme_strips_decode_to_a_bounded_aspect(w: int, h: int) -> None:
    out = decode_rgb(corpus.strip_png(w, h))
    assert max(out.size) <= MAX_ASPECT * min(out.size) and min(out.size) == min(w, h)


def test_ordinary_aspect_ratios_are_untouched() -> None:
    for w, h in ((400, 100), (100, 400), (33, 17)):
        assert decode_rgb(badshards.png_bytes(w, h)).size == (w, h)


def test_cropping_a_strip_gives_the_model_the_same_pixels() -> None:
    """The transform's center crop lies inside the kept region: same tensor either way."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("test_vit", pretrained=False)
    transform = create_transform(**resolve_data_config({}, model=model))
    rng = np.random.default_rng(0)
    strip = Image.fromarray(rng.integers(0, 255, (12, 600, 3), dtype=np.uint8))
    data = badshards.encode(strip, "PNG")
    cropped = transform(decode_rgb(data))
    full = transform(strip)
    assert torch.allclose(cropped, full, atol=1e-4)


@pytest.mark.parametrize(("orientation", "size"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40))])
def test_probe_reports_the_displayed_size(orientation: int, size: tuple[int, int]) -> None:
    data = corpus.exif_jpeg(orientation)
    info = probe_image(data, max_pixels=10**6)
    assert (info.width, info.height) == size == decode_rgb(data).size
    assert info.orientation == orientation


def test_broken_exif_does_not_reject_the_image() -> None:
    data = bytearray(corpus.exif_jpeg(6))
    at = data.index(b"Exif\0\0")
    data[at + 6 : at + 14] = b"\xff" * 8  # garble the TIFF header inside the EXIF block
    info = probe_image(bytes(data), max_pixels=10**6)
    assert info.format == "JPEG" and info.orientation in (1, 6)


@pytest.mark.parametrize("kind", ["[", "{"])
def test_json_depth_bound(kind: str) -> None:
    assert _parse_meta(corpus.deep_json(MAX_JSON_DEPTH, kind).encode()) is not None
    assert _parse_meta(corpus.deep_json(MAX_JSON_DEPTH + 1, kind).encode()) is None
    assert _parse_meta(corpus.deep_json(200_000, kind).encode()) is None  # no RecursionError


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"caption": "' + "[{" * 5000 + '\\" still a string", "n": [1, 2]}'
    assert _parse_meta(text.encode()) == text
