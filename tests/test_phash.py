"""phash64: robust to re-encoding and resizing, far apart for distinct images; banding; batches."""

from __future__ import annotations

import io
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curator_udfs import phash as phash_module
from curator_udfs.phash import (
    band_layout,
    bands,
    hamming,
    hash_images,
    phash64,
    to_signed64,
    to_unsigned64,
)


def _scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth random picture (blurred blobs) - phash needs low-frequency structure."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(12):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(15, 90)
        colour = rng.uniform(0, 255, 3)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * colour
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_near_duplicates_are_close() -> None:
    for seed in range(5):
        img = _scene(seed)
        original = phash64(_encode(img, quality=95))
        requality = phash64(_encode(img, quality=40))
        w, h = img.size
        resized = phash64(_encode(img.resize((int(w * 0.8), int(h * 0.8))), quality=90))
        as_png = phash64(_encode(img, "PNG"))
        assert hamming(original, requality) <= 8
        assert hamming(original, resized) <= 8
        assert hamming(original, as_png) <= 8


def test_distinct_images_are_far_apart() -> None:
    hashes = [phash64(_encode(_scene(100 + s), quality=90)) for s in range(8)]
    dists = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(dists) > 12


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_modes_decode_and_fit_int64(mode: str) -> None:
    img = _scene(1)
    if mode in ("I;16", "I", "F"):
        arr = np.asarray(img.convert("L"), dtype=np.float32) * 200.0
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        img = Image.fromarray(arr.astype(dtype))
        assert img.mode == mode
    else:
        img = img.convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else ("TIFF" if mode in ("I", "F") else "PNG")
    h = phash64(_encode(img, fmt))
    assert -(2**63) <= h < 2**63
    ref = phash64(_encode(_scene(1).convert("L"), "PNG"))
    if mode not in ("1",):  # 1-bit loses too much to compare
        assert hamming(h, ref) <= 8


def test_undecodable_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="cannot decode"):
        phash64(b"not an image")


def test_signed_mapping_round_trips() -> None:
    for u in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        s = to_signed64(u)
        assert -(2**63) <= s < 2**63 and to_unsigned64(s) == u
    assert to_signed64(2**64 - 1) == -1


def test_bands_shape_and_pigeonhole() -> None:
    rng = random.Random(0)
    h = to_signed64(0xFEDC_BA98_7654_3210)
    assert bands(h) == [0x3210, 0x7654, 0xBA98, 0xFEDC]
    assert [len(bin(b)) - 2 <= 13 for b in bands(h, 5)] == [True] * 5
    for n_bands in (2, 4, 5, 8):
        for _ in range(2000):
            a = rng.getrandbits(64)
            flips = rng.sample(range(64), rng.randrange(n_bands))  # < n_bands differing bits
            b = a
            for bit in flips:
                b ^= 1 << bit
            sa, sb = to_signed64(a), to_signed64(b)
            assert hamming(sa, sb) == len(flips) < n_bands
            assert any(x == y for x, y in zip(bands(sa, n_bands), bands(sb, n_bands), strict=True))
    # the bound is tight: n_bands flips, one per band, can leave no band shared
    a = 0
    b = sum(1 << (16 * k) for k in range(4))
    assert hamming(a, b) == 4 and all(x != y for x, y in zip(bands(a), bands(b), strict=True))


@pytest.mark.parametrize("n_bands", [1, 2, 4, 5, 7, 9, 63, 64])
def test_band_layout_covers_64_bits_and_matches_bands(n_bands: int) -> None:
    layout = band_layout(n_bands)
    assert len(layout) == n_bands and layout[0][0] == 0
    widths = [w for _, w in layout]
    assert sum(widths) == 64 and max(widths) - min(widths) <= 1
    assert widths == sorted(widths, reverse=True)  # the wider bands come first
    for (shift, width), (nxt, _) in zip(layout, layout[1:], strict=False):
        assert nxt == shift + width  # contiguous, no overlap
    rng = random.Random(n_bands)
    for _ in range(50):
        h = to_signed64(rng.getrandbits(64))
        u = to_unsigned64(h)
        assert bands(h, n_bands) == [(u >> s) & ((1 << w) - 1) for s, w in layout]


def test_band_layout_rejects_out_of_range() -> None:
    assert band_layout(4) == [(0, 16), (16, 16), (32, 16), (48, 16)]
    assert band_layout(5) == [(0, 13), (13, 13), (26, 13), (39, 13), (52, 12)]
    for bad in (0, 65, -1):
        with pytest.raises(ValueError, match="n_bands"):
            band_layout(bad)


def test_hash_images_hashes_and_reports_bad_images() -> None:
    good = _encode(_scene(1), quality=90)
    frames = [
        pd.DataFrame(
            {"sample_id": ["g", "none", "junk"], "image": [good, None, b"not an image"]},
            index=[10, 11, 12],
        ),
        pd.DataFrame({"sample_id": ["g2"], "image": [bytearray(good)]}),
    ]
    out = list(hash_images(iter(frames)))
    assert len(out) == 2
    first, second = out
    assert list(first.columns) == ["sample_id", "phash", "error"]
    assert first["sample_id"].tolist() == ["g", "none", "junk"]
    assert first.index.tolist() == [10, 11, 12]  # aligned with the input rows
    assert str(first["phash"].dtype) == "Int64"
    assert first["phash"].iloc[0] == phash64(good) and first["error"].iloc[0] is None
    assert first["phash"].isna().tolist() == [False, True, True]
    assert first["error"].iloc[1] == "no image bytes"
    assert first["error"].iloc[2].startswith("cannot decode image for phash")
    assert second["phash"].tolist() == [phash64(good)]  # bytearray (Arrow binary) works


def test_hash_images_cuts_long_errors_and_keeps_empty_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(data: bytes) -> int:
        raise ValueError("x" * 2000)

    monkeypatch.setattr(phash_module, "phash64", fail)
    (out,) = hash_images([pd.DataFrame({"sample_id": ["a"], "image": [b"1"]})])
    assert out["error"].tolist() == ["x" * 500]
    (empty,) = hash_images([pd.DataFrame({"sample_id": [], "image": []})])
    assert empty.empty and list(empty.columns) == ["sample_id", "phash", "error"]
