"""torch's uint8 resize kernels (curator_udfs.cpu_resize) against PIL and torchvision.

What `embed.decode: auto` does on a CPU worker to the images PIL decodes: the model transform's
Resize and the signals' fixed-size copy run on uint8 tensors; `pil` keeps PIL's resize."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image, ImageDraw
from timm.data import create_transform, resolve_data_config
from torchvision import transforms as T

from curator_udfs.cpu_resize import chw_view, native_mode, resize_u8, resized_size
from curator_udfs.decode import decode_rgb
from curator_udfs.embed_batches import build_embedder
from curator_udfs.image_signals import image_signals
from curator_udfs.specs import EmbedSpec
from curator_udfs.tensor_decode import TensorTransform, signals_of_tensor

CLIP_L = "vit_large_patch14_clip_quickgelu_224.openai"


def _transform(model: str):  # noqa: ANN202 - a torchvision Compose
    cfg = timm.models.get_pretrained_cfg(model).to_dict()
    return create_transform(**resolve_data_config({}, pretrained_cfg=cfg))


def _smooth(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8))
    return img.resize((w, h), Image.Resampling.BICUBIC)


def _sharp(w: int, h: int, seed: int) -> Image.Image:
    """Text and hard-edged shapes: where bicubic overshoots and the two resizers round apart."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        draw.rectangle((x, y, x + int(rng.integers(2, 40)), y + int(rng.integers(2, 40))), fill)
        draw.text((int(rng.integers(0, w)), int(rng.integers(0, h))), "curated", fill=fill)
    return img


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("height", "width", "size", "max_size"),
    [
        (240, 320, 224, None),
        (503, 97, 224, None),
        (100, 1000, 168, None),
        (100, 1000, [168], 400),
        (1000, 100, 168, 400),
        (50, 40, (160, 200), None),
        (7, 7, 224, None),
    ],
)
def test_output_size_is_torchvisions(
    height: int, width: int, size: int | list[int] | tuple[int, int], max_size: int | None
) -> None:
    step = T.Resize(size, max_size=max_size, antialias=True)
    want = step(torch.zeros(3, height, width, dtype=torch.uint8)).shape[-2:]
    assert resized_size(height, width, step.size, step.max_size) == tuple(want)


def test_max_size_not_above_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        resized_size(10, 20, 224, 224)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resize_is_within_two_levels_of_pil_on_smooth_images(mode: str) -> None:
    pil_filter = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    for seed, (w, h, out) in enumerate([(320, 240, (168, 224)), (97, 503, (256, 256))]):
        img = _smooth(w, h, seed)
        got = resize_u8(chw_view(img), out, mode).permute(1, 2, 0).numpy().astype(int)
        want = np.asarray(img.resize((out[1], out[0]), pil_filter[mode])).astype(int)
        diff = np.abs(got - want)
        assert got.shape == want.shape and diff.max() <= 2 and diff.mean() <= 0.2


def test_chw_view_shapes_and_refusals() -> None:
    rgb = chw_view(Image.new("RGB", (5, 3), (1, 2, 3)))
    assert (
        rgb.shape == (3, 3, 5) and rgb.dtype == torch.uint8 and rgb[:, 0, 0].tolist() == [1, 2, 3]
    )
    assert chw_view(Image.new("L", (5, 3), 9)).shape == (1, 3, 5)
    with pytest.raises(ValueError, match="resize_u8"):
        resize_u8(rgb.float(), (2, 2), "bilinear")
    with pytest.raises(ValueError, match="resize_u8"):
        resize_u8(rgb, (2, 2), "nearest")
    assert native_mode(T.Resize(8, interpolation=T.InterpolationMode.NEAREST)) is None
    assert native_mode(T.Resize(8, antialias=False)) is None
    assert native_mode(T.Resize(8, interpolation=T.InterpolationMode.BICUBIC)) == "bicubic"


@pytest.mark.parametrize("model", ["test_vit", CLIP_L])
def test_transform_on_uint8_matches_timms_on_pil(model: str) -> None:
    transform = _transform(model)
    steps = TensorTransform.of(transform)
    assert steps is not None
    one_level = 1.0 / 255.0 / min(transform.transforms[-1].std)
    for seed, img in enumerate([_smooth(320, 240, 0), _smooth(60, 90, 1), _sharp(400, 150, 2)]):
        got, want = steps(chw_view(img)), transform(img)
        diff = (got - want).abs()
        assert got.shape == want.shape
        assert float(diff.mean()) <= 0.1 * one_level, seed
        # nearly every value within two levels; sharp edges may differ more (bicubic overshoot)
        assert float((diff > 2.01 * one_level).float().mean()) <= 0.002, seed


def test_signals_from_uint8_copy_match_pils() -> None:
    images = [_smooth(320, 240, 3), _sharp(300, 200, 4), _smooth(64, 48, 5).convert("L")]
    for img in images:
        rgb = img.convert("RGB")
        got, want = signals_of_tensor(chw_view(rgb)), image_signals(rgb)
        assert got.grayscale == want.grayscale
        assert got.colorfulness == pytest.approx(want.colorfulness, rel=0.01, abs=0.05)
        assert got.sharpness == pytest.approx(want.sharpness, rel=0.03, abs=0.05)


def test_auto_and_pil_decode_give_the_same_embeddings_errors_and_signals() -> None:
    blobs: list[bytes | None] = [
        _encode(_smooth(200, 150, 6), "PNG"),
        _encode(_sharp(180, 260, 7), "JPEG"),
        _encode(_smooth(90, 400, 8), "WEBP"),
        None,
        b"not an image",
        _encode(_sharp(40, 30, 9).convert("L"), "PNG"),
    ]
    results, steps = {}, {}
    for decode in ("pil", "auto"):
        spec = EmbedSpec(model="test_vit", pretrained=False, batch_size=4, decode=decode)
        embedder = build_embedder(spec).prepare("cpu")
        steps[decode] = embedder._pil_steps
        results[decode] = embedder.embed_and_score(blobs)
        if decode == "pil":  # exactly timm's transform on the PIL image
            img = decode_rgb(blobs[0])  # type: ignore[arg-type]
            torch.testing.assert_close(
                embedder.preprocess([img])[0], embedder.transform(img), rtol=0, atol=0
            )
        embedder.close()
    assert steps["pil"] is None and steps["auto"] is not None
    pil, auto = results["pil"], results["auto"]
    assert auto.errors == pil.errors
    ok = [i for i, e in enumerate(pil.errors) if e is None]
    assert ok == [0, 1, 2, 5]
    cos = (torch.from_numpy(pil.embeddings[ok]) * torch.from_numpy(auto.embeddings[ok])).sum(-1)
    assert float(cos.min()) >= 0.9999
    for i in ok:
        a, b = pil.signals[i], auto.signals[i]
        assert a is not None and b is not None and a.grayscale == b.grayscale
        assert b.colorfulness == pytest.approx(a.colorfulness, rel=0.01, abs=0.05)
