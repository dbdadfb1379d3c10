"""Dedup against planted copies: the weight-free DCT embedder and the recall/precision score."""

from __future__ import annotations

import io
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from scipy.fft import dctn

from curator_udfs.dct_embedder import DctImageEmbedder, dct_matrix
from curator_udfs.planted_eval import groups, planted_pairs, score_methods
from curator_udfs.sample_shards import write_sample_shards


def test_groups_and_scores_compare_groups_not_edges() -> None:
    assert sorted(map(sorted, groups([("a", "b"), ("c", "b"), ("x", "y")]))) == [
        ["a", "b", "c"], ["x", "y"]]  # fmt: skip
    planted = {"exact": [["a", "b"]], "near": [["b", "c", "crop"], ["x", "y", "resize"]]}
    assert planted_pairs(planted, exact_only=True) == {("a", "b")}
    assert len(planted_pairs(planted, exact_only=False)) == 4  # ab ac bc xy
    found = [
        ("b", "a", "exact", None),
        ("c", "a", "semantic", 0.01), ("b", "a", "semantic", 0.01),  # the whole group via chain
        ("q", "x", "semantic", 0.05), ("y", "x", "semantic", 0.05),  # q is a false member
    ]  # fmt: skip
    runs = [("exact", None), ("perceptual", None), ("semantic", 0.01), ("semantic", 0.05)]
    by = {(s.method, s.eps): s for s in score_methods(planted, found, runs)}
    assert (by["exact", None].recall, by["exact", None].precision) == (1.0, 1.0)
    assert by["perceptual", None].found_pairs == 0 and by["perceptual", None].recall == 0.0
    assert by["perceptual", None].precision is None  # nothing found: no precision to speak of
    assert (by["semantic", 0.01].recall, by["semantic", 0.01].precision) == (0.75, 1.0)
    s5 = by["semantic", 0.05]
    assert (s5.found_pairs, s5.correct_pairs, s5.recalled_pairs) == (3, 1, 1)  # qx qy xy


def test_dct_matches_scipy_and_is_orthonormal() -> None:
    d = dct_matrix(32)
    assert torch.allclose(d @ d.T, torch.eye(32), atol=1e-5)
    emb = DctImageEmbedder(size=32, k=8, batch_size=4, num_threads_per_worker=1)
    emb.prepare("cpu")
    img = Image.effect_noise((50, 70), 60).convert("RGB")
    x = emb.preprocess([img])
    ref = np.stack([dctn(x[0, c].numpy().astype(np.float64), norm="ortho")[:8, :8].ravel()[1:]
                    for c in range(3)]).ravel()  # fmt: skip
    got = emb.forward(x)[0].numpy()
    assert got.shape == (emb.embedding_dim,) == (189,)
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="k <= size"):
        DctImageEmbedder(size=8, k=16)


def _encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_dct_separates_the_planted_copies_of_sample_shards(tmp_path: Path) -> None:
    """On `make demo`'s shards (4 x 100, seed 0): every pair at >= 0.97 similarity is a planted
    copy (precision 1 at the demo's eps 0.03), and most planted copies are found."""
    import tarfile

    report = write_sample_shards(tmp_path, shards=4, per_shard=100, seed=0)
    blobs: dict[str, bytes] = {}
    for path in report.paths:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.rsplit(".", 1)
                if ext in ("jpg", "jpeg", "png", "webp"):
                    blobs[key] = tar.extractfile(m).read()  # type: ignore[union-attr]
    keys = sorted(blobs)
    emb = DctImageEmbedder(batch_size=64, num_threads_per_worker=2)
    x, errors = emb.embed_bytes([blobs[k] for k in keys])
    assert not any(errors) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sim = x @ x.T
    truth = planted_pairs(json.loads(report.planted_path.read_text()), exact_only=False)  # type: ignore[union-attr]
    pos = {k: i for i, k in enumerate(keys)}
    found = {(a, b) for a, b in combinations(keys, 2) if sim[pos[a], pos[b]] >= 0.97}
    assert found and found <= truth, sorted(found - truth)
    assert len(found) / len(truth) >= 0.85
    # what makes a near copy: re-encode, resize, mild crop; a blur is not a different picture
    src = Image.open(io.BytesIO(blobs[keys[0]])).convert("RGB")
    w, h = src.size
    copies = [
        _encode(src, quality=60),
        _encode(src.resize((w // 2, h // 2))),
        _encode(src.crop((w // 20, h // 20, w - w // 20, h - h // 20))),
        _encode(src.filter(ImageFilter.GaussianBlur(1)), "PNG"),
    ]
    y, _ = emb.embed_bytes([blobs[keys[0]], *copies])
    assert (y[1:] @ y[0] >= 0.97).all(), y[1:] @ y[0]
