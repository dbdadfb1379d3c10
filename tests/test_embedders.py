"""Embedders: test_vit through the shared batch loop, custom subclasses, weights, errors."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from curator_udfs.embedders import DEFAULT_MODEL, ImageEmbedder, TimmImageEmbedder
from curator_udfs.weights import WeightsError


def jpeg(seed: int, size: tuple[int, int] = (224, 224)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def vit() -> TimmImageEmbedder:
    return TimmImageEmbedder("test_vit", pretrained=False, batch_size=4).prepare("cpu")


@pytest.fixture(scope="module")
def blobs() -> list[bytes]:
    return [jpeg(i, (64 + 16 * i, 48 + 8 * i)) for i in range(6)]


def test_embedding_dim_is_the_models_output(vit: TimmImageEmbedder, blobs: list[bytes]) -> None:
    assert vit.model is not None
    assert vit.embedding_dim == vit.model.num_classes == 1000  # head kept, not pooled features
    emb, errors = vit.embed_bytes(blobs)
    assert emb.shape == (6, 1000) and emb.dtype == np.float32
    assert errors == [None] * 6


def test_embeddings_are_unit_norm(vit: TimmImageEmbedder, blobs: list[bytes]) -> None:
    emb, _ = vit.embed_bytes(blobs)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_same_image_twice_identical(vit: TimmImageEmbedder, blobs: list[bytes]) -> None:
    emb, _ = vit.embed_bytes([blobs[0], blobs[1], blobs[0]])
    assert np.array_equal(emb[0], emb[2])
    again, _ = vit.embed_bytes([blobs[0]])
    np.testing.assert_allclose(again[0], emb[0], atol=1e-6)


def test_batching_does_not_change_results(vit: TimmImageEmbedder, blobs: list[bytes]) -> None:
    whole, _ = vit.embed_bytes(blobs)  # batch_size 4: two batches
    one_by_one = np.stack([vit.embed_bytes([b])[0][0] for b in blobs])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)


def test_bad_blobs_get_errors_and_nan_rows(vit: TimmImageEmbedder, blobs: list[bytes]) -> None:
    batch = [blobs[0], b"\xff\xd8\xff garbage", None, b"", blobs[1]]
    emb, errors = vit.embed_bytes(batch)  # type: ignore[arg-type]
    assert errors[0] is None and errors[4] is None
    assert errors[1] is not None and errors[1].startswith("decode:")
    assert errors[2] is not None and "null" in errors[2]
    assert errors[3] is not None and "no image bytes" in errors[3]
    assert np.isnan(emb[1:4]).all() and np.isfinite(emb[[0, 4]]).all()
    all_bad, errs = vit.embed_bytes([b"x", b"y"])
    assert all_bad.shape == (2, 1000) and np.isnan(all_bad).all() and None not in errs
    empty, errs = vit.embed_bytes([])
    assert empty.shape == (0, 1000) and errs == []


def test_unnormalized_option(blobs: list[bytes]) -> None:
    raw = TimmImageEmbedder("test_vit", pretrained=False, normalize_embeddings=False)
    emb, _ = raw.prepare("cpu").embed_bytes(blobs[:2])
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_preprocessing_comes_from_the_models_config(vit: TimmImageEmbedder) -> None:
    assert vit.data_config["input_size"] == (3, 160, 160)  # test_vit's pretrained config
    x = vit.preprocess([Image.new("RGB", (300, 100), (255, 255, 255))])
    assert x.shape == (1, 3, 160, 160)
    assert torch.allclose(x, torch.ones_like(x))  # white with mean=std=0.5 normalisation


def test_model_id_and_seeded_random_init(vit: TimmImageEmbedder, blobs: list[bytes]) -> None:
    assert vit.model_id == "test_vit+random"
    other = TimmImageEmbedder("test_vit", pretrained=False).prepare("cpu")
    assert np.array_equal(other.embed_bytes(blobs[:2])[0], vit.embed_bytes(blobs[:2])[0])


@pytest.mark.parametrize("name", ["model.safetensors", "weights.pth"])
def test_weights_from_local_file_and_directory(
    vit: TimmImageEmbedder, blobs: list[bytes], tmp_path: Path, name: str
) -> None:
    assert vit.model is not None
    state = {k: v.contiguous() for k, v in vit.model.state_dict().items()}
    if name.endswith(".safetensors"):
        save_file(state, tmp_path / name)
    else:
        torch.save({"state_dict": state}, tmp_path / name)
    expected, _ = vit.embed_bytes(blobs[:3])
    for source in (tmp_path / name, tmp_path):
        loaded = TimmImageEmbedder("test_vit", pretrained=True, weights=str(source))
        got, _ = loaded.prepare("cpu").embed_bytes(blobs[:3])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert loaded.model_id == "test_vit"


def test_weights_that_do_not_fit(vit: TimmImageEmbedder, tmp_path: Path) -> None:
    assert vit.model is not None
    state = {k: v.contiguous() for k, v in vit.model.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 64)  # a 10-class head instead of 1000
    save_file(state, tmp_path / "ten.safetensors")
    embedder = TimmImageEmbedder("test_vit", weights=str(tmp_path / "ten.safetensors"))
    with pytest.raises(WeightsError, match=r"does not fit test_vit .*head.weight: file \(10, 64\)"):
        embedder.prepare("cpu")
    save_file({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    embedder = TimmImageEmbedder("test_vit", weights=str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected fc.weight; missing cls_token.*more"):
        embedder.prepare("cpu")


def test_pretrained_offline_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as info:
        TimmImageEmbedder("test_vit", pretrained=True).prepare("cpu")
    msg = str(info.value)
    assert "timm/test_vit" in msg and str(tmp_path / "hub") in msg and "HF_HOME" in msg
    assert "embed.weights" in msg and "embed.pretrained: false" in msg


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown timm model 'no_such_vit'"):
        TimmImageEmbedder("no_such_vit", pretrained=False).prepare("cpu")


def test_default_model_keeps_the_768d_clip_projection() -> None:
    """Build the real default architecture on the meta device: no weights, no memory."""
    embedder = TimmImageEmbedder(DEFAULT_MODEL, pretrained=False)
    start = time.perf_counter()
    with torch.device("meta"):
        embedder.prepare("meta")
    assert embedder.embedding_dim == 768  # num_classes=0 would give 1024-d pooled features
    assert embedder.model is not None and embedder.model.num_features == 1024
    assert embedder.data_config["mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert embedder.model_id == DEFAULT_MODEL + "+random"
    assert TimmImageEmbedder().model_id == DEFAULT_MODEL
    assert time.perf_counter() - start < 60


class MeanColor(ImageEmbedder):
    """A custom embedder: the mean RGB of an 8x8 thumbnail (3-d), in plain torch."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.loaded_on: str | None = None

    def load(self, device: str) -> None:  # deliberately no super().load()
        self.loaded_on = device

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = [np.asarray(im.resize((8, 8)), dtype=np.float32) / 255.0 for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=(2, 3)) + 1.0

    @property
    def embedding_dim(self) -> int:
        return 3

    @property
    def model_id(self) -> str:
        return "mean-color-v1"


def test_custom_subclass_through_embed_bytes() -> None:
    red = io.BytesIO()
    Image.new("RGB", (10, 10), (255, 0, 0)).save(red, "PNG")
    embedder = MeanColor(batch_size=2, num_threads_per_worker=2, normalize_embeddings=False)
    emb, errors = embedder.embed_bytes([red.getvalue(), b"bad", red.getvalue()])
    assert embedder.loaded_on == "cpu" and embedder.device == "cpu"  # loaded on first use
    np.testing.assert_allclose(emb[0], [2.0, 1.0, 1.0], atol=1e-6)
    assert errors[1] is not None and np.isnan(emb[1]).all()
    normed, _ = MeanColor().embed_bytes([red.getvalue()])
    np.testing.assert_allclose(normed[0], np.array([2.0, 1.0, 1.0]) / np.sqrt(6), atol=1e-6)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        MeanColor(batch_size=0)
    with pytest.raises(ValueError, match="num_threads_per_worker"):
        MeanColor(num_threads_per_worker=0)


def test_decoding_runs_in_the_task_thread_on_cpu_and_in_threads_on_a_gpu(
    blobs: list[bytes],
) -> None:
    """A CPU worker decodes in its own thread (no pool to contend with the forward); a GPU
    worker decodes in `num_threads_per_worker` threads while the device runs the batch."""
    import threading

    embedder = TimmImageEmbedder("test_vit", pretrained=False, batch_size=4).prepare("cpu")
    seen: list[str] = []
    decode_one = embedder._decode_one

    def spy(blob):  # noqa: ANN001, ANN202 - wraps the bound method
        seen.append(threading.current_thread().name)
        return decode_one(blob)

    embedder._decode_one = spy  # type: ignore[method-assign]
    inline = embedder.embed_and_score(blobs)
    assert embedder._pool is None and set(seen) == {threading.current_thread().name}
    # Routing only (no GPU here): a cuda device hands the PIL path to the pool's threads.
    embedder.device = "cuda:0"
    seen.clear()
    futures = embedder._submit(blobs, range(len(blobs)))
    pooled = [f.result() for f in futures]
    assert embedder._pool is not None and len(seen) == len(blobs)
    assert all(n.startswith("curator-decode") for n in seen)
    assert inline.errors == [None] * len(blobs)
    assert all(error is None and tensor is not None for tensor, error, _ in pooled)
    embedder.close()
