"""clip_score in the embed pass with a tiny random open_clip model (real open_clip code)."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from curator_udfs import model_cache
from curator_udfs.embed_batches import clip_score_plan, embed_output_schema, make_embed_fn
from curator_udfs.model_ids import model_id
from curator_udfs.open_clip_embedder import CONFIG_FILE, open_clip_config
from curator_udfs.specs import EmbedSpec

# A tiny CLIP: 32x32 images, 2-layer towers of width 64, the standard vocab and context.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    model_cache.clear_cache()
    yield
    model_cache.clear_cache()


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """open_clip's HF layout: open_clip_config.json + random weights as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("tiny_clip")
    (d / CONFIG_FILE).write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.manual_seed(7)
    model = open_clip.create_model(f"local-dir:{d}", load_weights=False)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(d / "open_clip_model.safetensors"),
    )
    return d


def _png(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _spec(weights: Path, **kw: object) -> EmbedSpec:
    base: dict[str, object] = {
        "model": "open_clip:tiny",
        "weights": str(weights),
        "batch_size": 3,
        "num_threads_per_worker": 2,
    }
    base.update(kw)
    return EmbedSpec(**base)  # type: ignore[arg-type]


@functools.cache
def _reference(d: Path) -> tuple:
    """open_clip's own loader, transform and tokenizer for the model in ``d``."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{d}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{d}")


def _direct(d: Path, image: bytes, caption: str) -> float:
    """The cosine computed straight with open_clip, not through the product's code."""
    model, preprocess, tokenizer = _reference(d)
    with torch.no_grad():
        img = model.encode_image(preprocess(Image.open(io.BytesIO(image)).convert("RGB"))[None])
        txt = model.encode_text(tokenizer([caption]))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return float((img * txt).sum())


def test_clip_score_matches_direct_computation_through_shuffles_and_batches(
    tiny_clip_dir: Path,
) -> None:
    n = 11
    captions: list[object] = [f"a photo of thing number {i} in colour {i * 7}" for i in range(n)]
    captions[2] = None
    captions[5] = "   "
    captions[8] = float("nan")  # what pandas gives for a missing string
    captions[9] = "long caption " * 500  # far past 77 tokens: truncated, not an error
    frame = pd.DataFrame(
        {"sample_id": [f"s{i}" for i in range(n)], "image": [_png(i) for i in range(n)],
         "caption": captions}
    )
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    spec = _spec(tiny_clip_dir)
    assert clip_score_plan(spec)[0] and model_id(spec) == "open_clip:tiny"
    assert "clip_score double" in embed_output_schema(spec)
    fn = make_embed_fn(spec)
    out = pd.concat(list(fn(iter([shuffled.iloc[:7], shuffled.iloc[7:]]))), ignore_index=True)
    got = dict(zip(out["sample_id"], out["clip_score"], strict=True))
    assert len(got) == n and out["error"].isna().all()
    for i in range(n):
        value = got[f"s{i}"]
        if i in (2, 5, 8):
            assert value is pd.NA, (i, value)
        else:
            expected = _direct(tiny_clip_dir, frame.at[i, "image"], str(captions[i]).strip())
            assert abs(float(value) - expected) < 1e-5, (i, value, expected)
    assert len({round(float(got[f"s{i}"]), 6) for i in (0, 1, 3, 4)}) == 4  # not one constant
    emb = np.stack(out["embedding"].to_list())
    assert emb.shape == (n, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert out["sharpness"].notna().all() and out["colorfulness"].notna().all()


def test_text_false_and_timm_models_leave_clip_score_null(tiny_clip_dir: Path) -> None:
    frame = pd.DataFrame({"sample_id": ["a"], "image": [_png(1)], "caption": ["a cat"]})
    off = _spec(tiny_clip_dir, text=False)
    assert clip_score_plan(off) == (False, "NULL: embed.text is false")
    out = next(make_embed_fn(off)(iter([frame])))
    assert out.loc[0, "clip_score"] is pd.NA and out.loc[0, "error"] is None

    timm_spec = EmbedSpec(model="test_vit", pretrained=False, batch_size=2)
    on, reason = clip_score_plan(timm_spec)
    assert not on and "test_vit is a timm image model without a text tower" in reason
    out = next(make_embed_fn(timm_spec)(iter([frame])))
    assert out.loc[0, "clip_score"] is pd.NA and out.loc[0, "sharpness"] is not pd.NA
    with pytest.raises(ValueError, match="embed.text: true, but test_vit"):
        clip_score_plan(EmbedSpec(model="test_vit", pretrained=False, text=True))


def test_open_clip_names_and_errors(tiny_clip_dir: Path) -> None:
    cfg = open_clip_config("open_clip:ViT-B-32/laion2b_s34b_b79k", True, None)
    assert cfg["hub_repo"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert cfg["model_cfg"]["embed_dim"] == 512
    assert open_clip_config("open_clip:ViT-B-32/openai", True, None)["model_cfg"]["quick_gelu"]
    assert open_clip_config("open_clip:tiny", True, str(tiny_clip_dir))["source"].startswith(
        "local-dir:"
    )
    with pytest.raises(ValueError, match="unknown open_clip architecture 'NoSuch'"):
        open_clip_config("open_clip:NoSuch", False, None)
    with pytest.raises(ValueError, match="no pretrained tag 'nope'.*openai"):
        open_clip_config("open_clip:ViT-B-32/nope", True, None)
    with pytest.raises(ValueError, match="needs a pretrained tag"):
        open_clip_config("open_clip:ViT-B-32", True, None)
    assert model_id(EmbedSpec(model="open_clip:ViT-B-32", pretrained=False)) == (
        "open_clip:ViT-B-32+random"
    )


def test_config_errors_name_the_key(make_cfg, tiny_clip_dir: Path) -> None:
    from spark_jobs import embed
    from spark_jobs.config import ConfigError

    timm_text = make_cfg("embed.model=test_vit", "embed.pretrained=false", "embed.text=true",
                         "classifiers=[]")
    with pytest.raises(ConfigError, match="config key `embed.text`: embed.text: true, but"):
        embed.validate(timm_text)
    with pytest.raises(ConfigError, match="config key `embed.model`.*needs a pretrained tag"):
        embed.validate(make_cfg("embed.model=open_clip:ViT-B-32", "classifiers=[]"))
    ok = make_cfg("embed.model=open_clip:tiny", f"embed.weights={tiny_clip_dir}",
                  "classifiers=[]")
    assert embed.validate(ok).text is None and embed.probe_embedding_dim(embed.validate(ok)) == 32
    assert embed.clip_plan(embed.validate(ok)).startswith("image-caption cosine from open_clip")


def test_embed_job_writes_clip_score_of_each_image_with_its_own_caption(
    spark, make_cfg, tiny_clip_dir: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Through Spark and Delta (ingest → embed): every stored clip_score equals the direct
    computation on that row's image and caption, so no row met another row's caption."""
    from curator_udfs.decode import decode_rgb
    from curator_udfs.sample_shards import write_sample_shards
    from spark_jobs import embed, ingest
    from spark_jobs.catalog import register_tables
    from spark_jobs.tables import read_table

    write_sample_shards(tmp_path / "shards", shards=2, per_shard=8, seed=4)
    cfg = make_cfg("embed.model=open_clip:tiny", f"embed.weights={tiny_clip_dir}",
                   "embed.batch_size=3", "classifiers=[]")  # fmt: skip
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(tmp_path / "shards")])
    summary = embed.run(spark, cfg)
    assert summary.rows_written == 16 and summary.extra["model"] == "open_clip:tiny"
    images = {r["sample_id"]: r for r in read_table(spark, cfg, "images").collect()}
    rows = read_table(spark, cfg, "scores").select("sample_id", "clip_score").collect()
    assert len(rows) == 16
    model, preprocess, tokenizer = _reference(tiny_clip_dir)
    for r in rows:
        img = images[r["sample_id"]]
        caption = (img["caption"] or "").strip()
        if not caption:
            assert r["clip_score"] is None
            continue
        with torch.no_grad():
            a = model.encode_image(preprocess(decode_rgb(bytes(img["image"])))[None])
            b = model.encode_text(tokenizer([caption]))
        want = float((a / a.norm() * (b / b.norm())).sum())
        assert abs(r["clip_score"] - want) < 1e-5, (img["key"], r["clip_score"], want)
    assert len({round(r["clip_score"], 6) for r in rows if r["clip_score"] is not None}) > 8
