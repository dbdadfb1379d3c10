"""The Python API (`spark_jobs.api`) end to end: real Spark, real Delta, tiny timm `test_vit`."""

from __future__ import annotations

import json
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import dedup
from spark_jobs import filter as filter_job
from spark_jobs.api import (
    AestheticClassifier,
    Dataset,
    NsfwClassifier,
    SemanticDeduplicator,
    TimmImageEmbedder,
)
from spark_jobs.tables import read_table
from tests.plans import exchanges
from tests.tiny import TINY as BASE_TINY

TEST_VIT_DIM = 1000
TINY = (*BASE_TINY, "dedup.methods=[semantic]")


def _head_weights(tmp_path: Path) -> dict[str, Path]:
    """Weights-only torch files of both heads at test_vit's width (seeded, not the defaults)."""
    out = {}
    for seed, cls in enumerate((AestheticClassifier, NsfwClassifier), start=7):
        head = cls(input_dim=TEST_VIT_DIM).init_random(seed=seed)
        if cls is NsfwClassifier:  # a non-trivial normalisation layer, as the real file has
            head.norm.mean.normal_(0, 0.01, generator=torch.Generator().manual_seed(seed))
            head.norm.variance.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(seed))
        out[head.name] = tmp_path / f"{head.name}-{TEST_VIT_DIM}.pth"
        torch.save(head.state_dict(), out[head.name])
    return out


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One warehouse for the module: 2 shards x 20 samples ingested, embedded, both heads
    applied and the scores persisted, all through the API (what README shows)."""
    from spark_jobs.config import load_config

    base = tmp_path_factory.mktemp("api")
    shards = base / "shards"
    write_sample_shards(shards, shards=2, per_shard=20, seed=1)
    weights = _head_weights(base)
    cfg = load_config(
        sets=[f"database=t_api_{uuid.uuid4().hex[:8]}", "spark.conf={spark.master: 'local[2]'}"]
        + list(TINY),
        warehouse=str(base / "warehouse"),
    )
    ds = Dataset.from_shards(spark, shards, cfg=cfg)
    ds = TimmImageEmbedder("test_vit", pretrained=False, batch_size=8, num_threads_per_worker=2)(ds)
    ds = AestheticClassifier(input_dim=TEST_VIT_DIM).load_weights(weights["aesthetic"])(ds)
    ds = NsfwClassifier(input_dim=TEST_VIT_DIM).load_weights(weights["nsfw"])(ds)
    ds.persist_scores()
    return {"cfg": cfg, "ds": ds, "weights": weights, "base": base}


def test_pipeline_end_to_end(spark, scored: dict) -> None:
    cfg, ds, weights, out = scored["cfg"], scored["ds"], scored["weights"], scored["base"] / "wds"
    rows = ds.df.drop("image").collect()
    threshold = float(np.quantile([r.aesthetic_score for r in rows], 0.25))

    # the README's last lines (the first ones are the fixture)
    ds = ds.filter(f"aesthetic_score >= {threshold} AND width >= 64")
    ds = SemanticDeduplicator(eps=0.01, keep="aesthetic")(ds)
    summary = ds.to_webdataset(out, samples_per_shard=8)

    assert ds.model == "test_vit+random" and ds.embedding_dim == TEST_VIT_DIM
    assert read_table(spark, cfg, "images").count() == len(rows) == 40  # ingest persisted

    # heads: the loaded weights (not a random re-init) scored the embedding
    emb = torch.tensor(np.stack([r.embedding for r in rows]))
    for col, cls in (("aesthetic_score", AestheticClassifier), ("nsfw_score", NsfwClassifier)):
        head = cls(input_dim=TEST_VIT_DIM).load_weights(weights[cls.name])
        np.testing.assert_allclose(
            [r[col] for r in rows], head.score(emb).numpy(), atol=1e-5, rtol=1e-5
        )

    # filter + dedup: the rows passing the predicate, minus the duplicates found among them
    passing = {r.sample_id for r in rows if r.aesthetic_score >= threshold and r.width >= 64}
    removed = {r.sample_id for r in ds.duplicates.collect()}
    kept = {r.sample_id for r in ds.df.select("sample_id").collect()}
    assert removed and removed <= passing and kept == passing - removed
    by_id = {r.sample_id: np.asarray(r.embedding) for r in rows}
    for dup in ds.duplicates.collect():  # each removed sample is similar to a kept, better one
        assert dup.duplicate_of in kept
        assert float(by_id[dup.sample_id] @ by_id[dup.similar_to]) >= 0.99 - 1e-5

    # the export reads back with the same bytes, one sample per kept row
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary.rows_written == manifest["samples"] == len(kept) and manifest["shard_count"] > 1
    assert manifest["source"]["table"] is None  # not saved: `exported` is left alone
    images = {r.sample_id: bytes(r.image) for r in read_table(spark, cfg, "images").collect()}
    seen = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                sid, _, ext = m.name.partition(".")
                data = tar.extractfile(m).read()
                if ext == "json":
                    assert "embedding" not in json.loads(data)
                elif ext != "txt":
                    seen[sid] = data
    assert set(seen) == kept and all(seen[s] == images[s] for s in kept)

    # persisting: scores, duplicates, the curated table and the export positions of the saved set
    assert ds.persist_scores().rows_written == len(kept)
    assert ds.save_as("curated").rows_written == len(kept)
    assert {r.sample_id for r in read_table(spark, cfg, "curated").collect()} == kept
    ds.persist_duplicates()
    dups = read_table(spark, cfg, "duplicates").where("method = 'semantic' AND eps = 0.01")
    assert {r.sample_id for r in dups.collect()} == removed
    ds.to_webdataset(out, samples_per_shard=8)
    assert {r.sample_id for r in read_table(spark, cfg, "exported").collect()} == kept
    assert json.loads((out / "manifest.json").read_text())["source"]["table"] == "curated"


def test_embed_reads_the_images_where_they_are_stored(spark, scored: dict) -> None:
    """The API's embed feeds the model from the images table's own partitions: no Exchange
    of the plan carries the image bytes (the embed job's rule, tests/test_embed_write.py),
    and the read is still split over several tasks."""
    ds = Dataset.from_tables(spark, cfg=scored["cfg"], scores=False)
    out = TimmImageEmbedder("test_vit", pretrained=False, batch_size=8)(ds)
    assert out.df.where("embedding IS NOT NULL").count() == 40
    assert not [e for e in exchanges(out.df) if "image" in e[1]], exchanges(out.df)
    assert out.df.rdd.getNumPartitions() >= 2


def test_semantic_dedup_matches_the_jobs(spark, scored: dict) -> None:
    """Same rows, same config: the API removes exactly what `curator dedup` + `filter` remove."""
    base = scored["cfg"]
    scores = [r.aesthetic_score for r in read_table(spark, base, "scores").collect()]
    predicates = [f"aesthetic_score >= {float(np.quantile(scores, 0.2))}", "width >= 64"]
    cfg = base.model_copy(
        update={"filter": base.filter.model_copy(update={"predicates": predicates})}
    )
    assert cfg.dedup.methods == ["semantic"] and cfg.dedup.eps == [0.01]

    dedup_summary = dedup.run(spark, cfg)
    filter_job.run(spark, cfg)
    job_dups = {
        r.sample_id
        for r in read_table(spark, cfg, "duplicates").where("method = 'semantic'").collect()
    }
    job_kept = {r.sample_id for r in read_table(spark, cfg, "curated").collect()}

    ds = Dataset.from_tables(spark, cfg)
    assert ds.count() == 40 and {"aesthetic_score", "nsfw_score"} <= set(ds.score_columns)
    ds = SemanticDeduplicator(eps=cfg.dedup.eps[0], keep=cfg.dedup.keep)(ds)
    api_dups = {r.sample_id for r in ds.duplicates.collect()}
    api_kept = {r.sample_id for r in ds.filter(*predicates).df.select("sample_id").collect()}

    assert job_dups and dedup_summary.extra["removed"]["semantic eps=0.01"] == len(job_dups)
    assert api_dups == job_dups
    assert api_kept == job_kept and 0 < len(api_kept) < 40


def test_messages_name_the_fix(spark, make_cfg: Callable, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY)
    df = spark.createDataFrame([("a", 64, 32)], "sample_id string, width int, height int")
    ds = Dataset(spark, cfg, df)
    with pytest.raises(ValueError, match="`;`"):
        ds.filter("width > 1; DROP TABLE x")
    with pytest.raises(ValueError, match="unknown column"):
        ds.filter("widht >= 64")
    assert ds.filter("width >= 64", "height < 64").count() == 1
    with pytest.raises(ValueError, match="has no weights; call .load_weights"):
        AestheticClassifier(input_dim=TEST_VIT_DIM)(df)
    with pytest.raises(ValueError, match="no embedding column; embed first"):
        AestheticClassifier(input_dim=TEST_VIT_DIM).init_random()(ds)
    with pytest.raises(ValueError, match="unknown option"):
        SemanticDeduplicator(eps=0.01, max_cluster=3)
    with pytest.raises(ValueError, match="eps"):
        SemanticDeduplicator(eps=1.5)
    with pytest.raises(ValueError, match="job tables"):
        ds.save_as("images")
    # a head still is an nn.Module on tensors
    head = AestheticClassifier(input_dim=4).init_random()
    assert head(torch.zeros(2, 4)).shape == (2, 1)


def test_plain_dataframes_stay_dataframes(spark, tmp_path: Path) -> None:
    """Without a Dataset the same calls take and return Spark DataFrames; a bad image gets
    NULL scores (not NaN, which Spark SQL sorts above every number)."""
    import io

    from PIL import Image
    from pyspark.sql import DataFrame

    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(buf, "PNG")
    df = spark.createDataFrame(
        [("x", buf.getvalue()), ("y", b"garbage")], "sample_id string, image binary"
    )
    weights = _head_weights(tmp_path)
    embedder = TimmImageEmbedder("test_vit", pretrained=False, batch_size=4)
    aesthetic = AestheticClassifier(input_dim=TEST_VIT_DIM).load_weights(weights["aesthetic"])
    out = embedder(df, heads=[aesthetic])
    rescored = NsfwClassifier(input_dim=TEST_VIT_DIM).load_weights(weights["nsfw"])(out)
    assert isinstance(out, DataFrame) and isinstance(rescored, DataFrame)
    rows = {r.sample_id: r for r in rescored.collect()}
    assert rows["x"].error is None and len(rows["x"].embedding) == TEST_VIT_DIM
    expected = aesthetic.score(torch.tensor([rows["x"].embedding])).item()
    assert rows["x"].aesthetic_score == pytest.approx(expected, abs=1e-5)
    assert 0.0 <= rows["x"].nsfw_score <= 1.0
    assert rows["y"].error.startswith("decode") and rows["y"].embedding is None
    assert rows["y"].aesthetic_score is None and rows["y"].nsfw_score is None


def test_spec_for_carries_the_embedders_decode_and_signals_settings() -> None:
    from curator_udfs.embedders import TimmImageEmbedder
    from spark_jobs.dataset_ops import spec_for

    embedder = TimmImageEmbedder("test_vit", pretrained=False, batch_size=3)
    assert spec_for(embedder).signals is True and spec_for(embedder).decode == "auto"
    embedder.decode, embedder.signals = "pil", False
    spec = spec_for(embedder)
    assert (spec.model, spec.batch_size, spec.decode, spec.signals) == ("test_vit", 3, "pil", False)
