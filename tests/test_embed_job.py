"""The embed and classify jobs on real Spark and Delta, with tiny random-init timm models."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curator_udfs.classifiers import ClassifierHead
from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import classify, embed, ingest
from spark_jobs.catalog import register_tables
from spark_jobs.config import ConfigError
from spark_jobs.tables import read_table, table_path
from tests.tiny import TINY

ROOT = Path(__file__).resolve().parents[1]

MODEL_ID = "test_vit+random"
TEST_VIT_DIM = 1000


class MeanHead(ClassifierHead):
    """A user head registered by class path: the mean of the embedding (easy to check)."""

    name = "mean"
    default_output_column = "mean_score"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def _broken_jpeg_shard(path: Path) -> None:
    """One good PNG and one JPEG whose header is fine but whose pixel data is cut off."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(buf, "JPEG")
    broken = buf.getvalue()[: len(buf.getvalue()) // 2]
    good = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 200, 30)).save(good, "PNG")
    with tarfile.open(path, "w") as tar:
        for key, ext, data in (("good", "png", good.getvalue()), ("broken", "jpg", broken)):
            for name, payload in ((f"{key}.{ext}", data), (f"{key}.txt", b"a caption")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def _ingest(spark, cfg, *inputs: str) -> None:
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=list(inputs))


def _scores(spark, cfg) -> dict:
    return {r.sample_id: r for r in read_table(spark, cfg, "scores").collect()}


def test_embed_then_incremental_then_classify(spark, make_cfg, tmp_path: Path) -> None:
    write_sample_shards(tmp_path / "a", shards=2, per_shard=30, seed=3)
    (tmp_path / "bad").mkdir()
    _broken_jpeg_shard(tmp_path / "bad" / "bad.tar")
    cfg = make_cfg(*TINY)
    _ingest(spark, cfg, str(tmp_path / "a"), str(tmp_path / "bad"))
    n_images = read_table(spark, cfg, "images").count()
    assert n_images == 62  # the truncated JPEG passes ingest (header only) and fails at embed
    # A scores table from before the signal columns: embed adds them (ALTER TABLE ADD COLUMNS).
    old = "sample_id STRING NOT NULL, model STRING NOT NULL, embedding ARRAY<FLOAT>, " \
        "embedding_dim INT, error STRING, scored_at TIMESTAMP, run_id STRING"
    spark.sql(f"CREATE TABLE delta.`{table_path(cfg, 'scores')}` ({old}) USING DELTA")

    first = embed.run(spark, cfg)
    assert first.rows_in == n_images and first.quarantined == 1 and first.balanced
    assert first.rows_written == n_images - 1
    assert first.extra["model"] == MODEL_ID and first.extra["embedding_dim"] == TEST_VIT_DIM
    assert first.extra["clip_score"].startswith("NULL: test_vit is a timm image model without")
    scores = _scores(spark, cfg)
    assert len(scores) == n_images and {r.model for r in scores.values()} == {MODEL_ID}
    images = {r.sample_id: r for r in read_table(spark, cfg, "images").collect()}
    bad = [r for r in scores.values() if r.error is not None]
    assert len(bad) == 1 and images[bad[0].sample_id].key == "broken"
    assert bad[0].embedding is None and bad[0].aesthetic_score is None  # NULL, not NaN
    for r in scores.values():
        if r.error is None:
            assert r.embedding_dim == len(r.embedding) == TEST_VIT_DIM
            assert abs(float(np.linalg.norm(r.embedding)) - 1.0) < 1e-3
            assert np.isfinite(r.aesthetic_score) and 0.0 <= r.nsfw_score <= 1.0
            assert r.sharpness >= 0.0 and r.colorfulness >= 0.0 and r.grayscale is not None
        else:
            assert r.sharpness is None and r.colorfulness is None and r.grayscale is None
        assert r.clip_score is None  # test_vit has no text tower
    good = images[next(s for s, r in scores.items() if images[s].key == "good")]
    assert scores[good.sample_id].colorfulness > 50  # the saturated green PNG
    assert scores[good.sample_id].sharpness == 0.0  # one flat colour
    # Same bytes (planted exact duplicates) -> the same embedding, even across tasks and batches.
    # Bit-identical only within one batch layout: float32 matmuls in batches of different
    # composition round differently (~1e-7), so across batches we compare to 1e-5.
    by_hash: dict[str, list] = {}
    for sid, img in images.items():
        by_hash.setdefault(img.image_sha256, []).append(sid)
    groups = [g for g in by_hash.values() if len(g) > 1]
    planted = json.loads((tmp_path / "a" / "_planted.json").read_text())["exact"]
    assert len(groups) >= 1 and len(planted) >= 1
    for group in groups:
        ref = scores[group[0]]
        for sid in group[1:]:
            np.testing.assert_allclose(scores[sid].embedding, ref.embedding, atol=1e-5, rtol=0)
            assert abs(scores[sid].aesthetic_score - ref.aesthetic_score) < 1e-4

    # Add a user head: classify fills its new column from stored embeddings, decodes nothing.
    heads = TINY[-1][:-1] + ", {name: mean, class_path: 'tests.test_embed_job:MeanHead', "
    cfg2 = make_cfg(*TINY[:-1], heads + "random_init: true}]", database=cfg.database)
    result = classify.run(spark, cfg2)
    assert result.extra["images_decoded"] == 0 and result.extra["columns_added"] == "mean_score"
    assert result.rows_in == result.rows_written == n_images - 1  # all but the error row
    scored = _scores(spark, cfg2)
    for sid, r in scored.items():
        assert r.embedding == scores[sid].embedding  # embeddings untouched
        assert r.aesthetic_score == scores[sid].aesthetic_score  # only NULL columns filled
        if r.error is None:
            assert r.mean_score == pytest.approx(float(np.mean(r.embedding)), abs=1e-6)
        else:
            assert r.mean_score is None

    # New shards: only their rows are embedded (all three heads); reruns do nothing.
    write_sample_shards(tmp_path / "b", shards=1, per_shard=10, seed=4)
    _ingest(spark, cfg2, str(tmp_path / "b"))
    second = embed.run(spark, cfg2)
    assert second.rows_in == 10 and second.rows_written == 10 and second.quarantined == 0
    third = embed.run(spark, cfg2)
    assert third.rows_in == third.rows_written == 0 and third.extra["images_decoded"] == 0
    again = classify.run(spark, cfg2)
    assert again.rows_in == 0 and again.rows_written == 0
    after = _scores(spark, cfg2)
    assert len(after) == n_images + 10
    assert all(after[s].embedding == scores[s].embedding for s in scores)
    assert sum(r.mean_score is None for r in after.values()) == 1


@pytest.fixture
def aesthetic_768(tmp_path: Path) -> Path:
    """A weights-only torch file of the 768-d aesthetic head (random values, real layout)."""
    from curator_udfs.classifiers import build_head

    path = tmp_path / "aesthetic-768.pth"
    torch.save(build_head("aesthetic", weights=None, random_init=True).state_dict(), path)
    return path


def test_config_errors_name_the_key(make_cfg, aesthetic_768: Path) -> None:
    aesthetic = aesthetic_768
    cfg = make_cfg(*TINY[:-1], f"classifiers=[{{name: aesthetic, weights: '{aesthetic}'}}]")
    with pytest.raises(ConfigError) as exc:
        embed.validate(cfg)
    msg = str(exc.value)
    assert "classifiers[0]" in msg and "768-d" in msg and "1000-d" in msg
    cfg = make_cfg(*TINY[:-1], "classifiers=[{name: x, class_path: 'nope.mod:Head'}]")
    with pytest.raises(ConfigError, match=r"classifiers\[0\]"):
        embed.validate(cfg)
    cfg = make_cfg(*TINY[:-1], "classifiers=[{name: nsfw, weights: /no/such/file.pth}]")
    with pytest.raises(ConfigError, match=r"classifiers\[0\]\.weights"):
        embed.validate(cfg)
    with pytest.raises(ConfigError, match="embed.model"):
        embed.validate(make_cfg("embed.model=no_such_model_xyz"))
    with pytest.raises(ConfigError, match="output_column"):
        embed.validate(
            make_cfg(
                *TINY[:-1], "classifiers=[{name: nsfw, random_init: true, output_column: error}]"
            )
        )


def test_cli_dimension_mismatch_exits_2(tmp_path: Path, aesthetic_768: Path) -> None:
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    aesthetic = aesthetic_768
    args = ["embed", "--warehouse", str(tmp_path / "wh")]
    for s in (*TINY[:-1], f"classifiers=[{{name: aesthetic, weights: '{aesthetic}'}}]"):
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "768-d" in result.output and "embed.model" in result.output


def test_python_api_keeps_columns(spark) -> None:
    from spark_jobs.api import TimmImageEmbedder

    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(buf, "PNG")
    df = spark.createDataFrame(
        [("x", buf.getvalue(), 1), ("y", b"garbage", 2)], "name string, image binary, n int"
    )
    embedder = TimmImageEmbedder("test_vit", pretrained=False, batch_size=4)
    heads = [{"name": "aesthetic", "random_init": True}]
    rows = {r.name: r for r in embedder(df, heads=heads).collect()}
    assert rows["x"].n == 1 and len(rows["x"].embedding) == TEST_VIT_DIM
    assert rows["x"].error is None and rows["x"].aesthetic_score is not None
    assert rows["y"].embedding is None and rows["y"].error.startswith("decode")


def test_cli_embed_json(spark, make_cfg, tmp_path: Path) -> None:
    write_sample_shards(tmp_path / "s", shards=1, per_shard=12, seed=6)
    cfg = make_cfg(*TINY)
    _ingest(spark, cfg, str(tmp_path / "s"))
    args = [sys.executable, "-m", "spark_jobs.embed", "--json", "--warehouse", cfg.warehouse]
    for s in (f"database={cfg.database}", "spark.conf={spark.master: 'local[2]'}", *TINY):
        args += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["job"] == "embed" and summary["rows_in"] == summary["rows_written"] == 12
    assert summary["extra"]["model"] == MODEL_ID and summary["tables"]["scores"] == 12
    assert summary["throughput_per_s"] > 0 and summary["extra"]["images_per_s"] > 0


def test_torchvision_decoder_on_executors_matches_pil(spark, make_cfg, tmp_path: Path) -> None:
    """`embed.decode: torchvision` travels in the spec to the Python workers (the CPU path of
    the nvJPEG decoder here): the same errors and, within float noise, the same embeddings."""
    from spark_jobs.config import embed_spec
    from spark_jobs.dataset_ops import embed_dataframe

    write_sample_shards(tmp_path / "a", shards=1, per_shard=24, seed=5)
    cfg = make_cfg(*TINY)
    _ingest(spark, cfg, str(tmp_path / "a"))
    images = read_table(spark, cfg, "images").select("sample_id", "image", "image_format")
    formats = {r.image_format for r in images.collect()}
    assert "JPEG" in formats and len(formats) > 1  # both paths are taken
    out = {}
    for decode in ("pil", "torchvision"):
        spec = embed_spec(make_cfg(*TINY, f"embed.decode={decode}", database=cfg.database))
        assert spec.decode == decode
        rows = embed_dataframe(images, spec).collect()
        out[decode] = {r.sample_id: r for r in rows}
    pil, tv = out["pil"], out["torchvision"]
    assert pil.keys() == tv.keys() and len(pil) == 24
    for sid, r in pil.items():
        assert r.error == tv[sid].error
        if r.error is None:
            cos = float(np.dot(r.embedding, tv[sid].embedding))
            assert cos >= 0.9999, (sid, r.image_format, cos)
    # the other decoder really ran on the JPEGs: not bit-identical to PIL's (~1 level apart)
    jpegs = [s for s, r in pil.items() if r.image_format == "JPEG" and r.error is None]
    assert any(pil[s].embedding != tv[s].embedding for s in jpegs)
