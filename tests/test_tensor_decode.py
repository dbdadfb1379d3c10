"""The torchvision batch decoder (nvJPEG on CUDA) against the PIL path, on its CPU path.

No GPU here: these run the same TensorDecoder with torchvision's CPU JPEG decoder, which is
what `embed.decode: torchvision` selects on a CPU worker (and `auto` on a CUDA one)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from curator_udfs.decode import decode_rgb
from curator_udfs.embed_batches import build_embedder
from curator_udfs.embedders import TimmImageEmbedder
from curator_udfs.image_signals import image_signals
from curator_udfs.specs import EmbedSpec
from curator_udfs.tensor_decode import TensorDecoder, TensorTransform, use_tensor_decode

CLIP_L = "vit_large_patch14_clip_quickgelu_224.openai"  # the default model's transform


def _transform(model: str):  # noqa: ANN202 - a torchvision Compose
    pretrained_cfg = timm.models.get_pretrained_cfg(model).to_dict()
    return create_transform(**resolve_data_config({}, pretrained_cfg=pretrained_cfg))


def _jpeg(w: int, h: int, *, mode: str = "RGB", seed: int = 0, orientation: int = 0) -> bytes:
    """A smooth random JPEG (blocks upsampled, so resizing has something to interpolate)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8))
    img = img.resize((w, h), Image.Resampling.BICUBIC).convert(mode)
    buf = io.BytesIO()
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    img.save(buf, "JPEG", quality=90, **extra)
    return buf.getvalue()


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("model", ["test_vit", CLIP_L])
def test_preprocessed_tensors_are_within_two_levels_of_pil(model: str) -> None:
    transform = _transform(model)
    steps = TensorTransform.of(transform)
    assert steps is not None
    decoder = TensorDecoder(steps, "cpu")
    std = min(transform.transforms[-1].std)
    one_level = 1.0 / 255.0 / std
    # landscape, portrait, beyond 4:1 (cropped), grayscale, smaller than the input size
    cases = [
        (320, 240, "RGB"),
        (97, 503, "RGB"),
        (1000, 100, "RGB"),
        (200, 200, "L"),
        (50, 40, "RGB"),
    ]
    blobs = [_jpeg(w, h, mode=m, seed=i) for i, (w, h, m) in enumerate(cases)]
    results = decoder.decode(blobs)
    for blob, result in zip(blobs, results, strict=True):
        assert result is not None
        tensor, error, signals = result
        assert error is None and tensor is not None and signals is not None
        image = decode_rgb(blob)
        diff = (transform(image) - tensor).abs()
        assert tensor.shape == transform(image).shape
        # torch's uint8 resize rounds between its two passes in its own fixed point: at most
        # two 8-bit levels from PIL's anywhere on smooth images, nearly every value equal
        assert float(diff.max()) <= 2 * one_level * 1.01
        assert float(diff.mean()) <= 0.1 * one_level
        want = image_signals(image)
        assert signals.grayscale == want.grayscale
        assert signals.colorfulness == pytest.approx(want.colorfulness, rel=0.02, abs=0.1)
        assert signals.sharpness == pytest.approx(want.sharpness, rel=0.15, abs=0.2)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(orientation: int) -> None:
    transform = _transform("test_vit")
    decoder = TensorDecoder(TensorTransform.of(transform), "cpu")  # type: ignore[arg-type]
    blob = _jpeg(240, 120, seed=orientation, orientation=orientation)  # not square: 90° shows
    result = decoder.decode([blob])[0]
    assert result is not None and result[0] is not None
    want = transform(decode_rgb(blob))
    assert float((want - result[0]).abs().max()) <= 1.01 / 255.0 / 0.5


def test_what_the_tensor_path_cannot_treat_the_same_goes_to_pil() -> None:
    decoder = TensorDecoder(TensorTransform.of(_transform("test_vit")), "cpu")  # type: ignore[arg-type]
    rgb = _jpeg(64, 64)
    cmyk = io.BytesIO()
    Image.open(io.BytesIO(rgb)).convert("CMYK").save(cmyk, "JPEG")
    truncated = rgb[: len(rgb) // 2]
    out = decoder.decode([_png(32, 32), cmyk.getvalue(), truncated, None, b"", rgb])
    assert out[:5] == [None] * 5  # PNG, CMYK, truncated (the decoder rejects it), null, empty
    assert out[5] is not None and out[5][1] is None
    # a refusal from the header is the PIL path's own message
    tiny = TensorDecoder(TensorTransform.of(_transform("test_vit")), "cpu", max_pixels=100)  # type: ignore[arg-type]
    refused = tiny.decode([rgb])[0]
    assert refused is not None and refused[0] is None
    with pytest.raises(ValueError) as pil_error:
        decode_rgb(rgb, max_pixels=100)
    assert refused[1] == str(pil_error.value)
    bad_header = b"\xff\xd8\xff" + b"\x00" * 40
    got = decoder.decode([bad_header])[0]
    with pytest.raises(ValueError) as header_error:
        decode_rgb(bad_header)
    assert got == (None, str(header_error.value), None)


def test_modes_and_transforms_that_qualify() -> None:
    assert use_tensor_decode("auto", "cuda:0") and not use_tensor_decode("auto", "cpu")
    assert use_tensor_decode("torchvision", "cpu") and not use_tensor_decode("pil", "cuda:0")
    with pytest.raises(ValueError, match="embed.decode"):
        use_tensor_decode("nvjpeg", "cpu")
    from torchvision import transforms as T

    assert TensorTransform.of(None) is None
    lam = T.Compose([T.Resize(32), T.Lambda(lambda im: im.convert("RGB")), T.ToTensor()])
    assert TensorTransform.of(lam) is None  # a step that only takes PIL images
    assert TensorTransform.of(T.Compose([T.Resize(32), T.CenterCrop(32)])) is None  # no ToTensor


def test_embedder_gives_the_same_embeddings_and_errors_with_either_decoder() -> None:
    blobs: list[bytes | None] = [
        _jpeg(200, 150, seed=1),
        _png(40, 30),
        None,
        _jpeg(300, 300, mode="L", seed=2),
        b"\xff\xd8\xff not a jpeg",
        _jpeg(90, 400, seed=3, orientation=6),
    ]
    results = {}
    for decode in ("pil", "torchvision"):
        spec = EmbedSpec(
            model="test_vit",
            pretrained=False,
            batch_size=4,
            num_threads_per_worker=2,
            decode=decode,
        )
        embedder = build_embedder(spec).prepare("cpu")
        assert isinstance(embedder, TimmImageEmbedder)
        assert (embedder._tensor_decoder is not None) == (decode == "torchvision")
        results[decode] = embedder.embed_and_score(blobs)
        embedder.close()
    pil, tv = results["pil"], results["torchvision"]
    assert tv.errors == pil.errors
    ok = [i for i, e in enumerate(pil.errors) if e is None]
    assert ok == [0, 1, 3, 5]
    cos = (torch.from_numpy(pil.embeddings[ok]) * torch.from_numpy(tv.embeddings[ok])).sum(-1)
    assert float(cos.min()) >= 0.9999
    assert np.isnan(tv.embeddings[[2, 4]]).all()
    for i in ok:
        a, b = pil.signals[i], tv.signals[i]
        assert a is not None and b is not None and a.grayscale == b.grayscale


def test_a_subclass_with_its_own_preprocess_is_never_bypassed() -> None:
    class Gray(TimmImageEmbedder):
        def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
            return super().preprocess([im.convert("L").convert("RGB") for im in images])

    embedder = Gray("test_vit", pretrained=False, batch_size=2, num_threads_per_worker=1)
    embedder.decode = "torchvision"
    embedder.prepare("cpu")
    assert embedder._tensor_decoder is None  # its preprocess runs on every image
    plain = TimmImageEmbedder("test_vit", pretrained=False, batch_size=2)
    plain.decode = "torchvision"
    assert plain.prepare("cpu")._tensor_decoder is not None


def test_tensor_path_without_signals_gives_the_same_tensors_and_no_signals() -> None:
    steps = TensorTransform.of(_transform("test_vit"))
    assert steps is not None
    blobs = [_jpeg(120, 90, seed=s) for s in range(3)]
    with_signals = TensorDecoder(steps, "cpu").decode(blobs)
    without = TensorDecoder(steps, "cpu", signals=False).decode(blobs)
    for a, b in zip(with_signals, without, strict=True):
        assert a is not None and b is not None
        assert a[2] is not None and b[2] is None
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
