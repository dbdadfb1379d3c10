"""embed reads the images where they are stored (no shuffle of the bytes) and writes with an
idempotent Delta append (txnAppId/txnVersion) that a repeated or racing run cannot duplicate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import classify, embed, ingest
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, load_config
from spark_jobs.embed_input import (
    SPLIT_CONF,
    Batch,
    batch_images,
    pending_ids,
    shard_batches,
    split_bytes,
)
from spark_jobs.idempotent import append_once, txn_point
from spark_jobs.session import session_conf
from spark_jobs.tables import SCORES, ensure_table, read_table, table_path
from tests.plans import exchanges as _exchanges
from tests.test_embed_job import _broken_jpeg_shard
from tests.tiny import TINY

MODEL = "m+random"


def _fed_to_udf(todo: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """`todo` through a mapInPandas, as embed feeds it: the run frame and {sample_id: bytes}."""

    def sizes(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            yield pd.DataFrame({"sample_id": b["sample_id"], "n": b["image"].map(len)})

    out = todo.mapInPandas(sizes, "sample_id string, n long")
    return out, {r.sample_id: r.n for r in out.collect()}


def _score_rows(spark, cfg, ids: list[str]) -> None:
    """Rows of MODEL in `scores` for `ids` (other columns NULL), as an earlier run left them."""
    ensure_table(spark, cfg, SCORES)
    rows = spark.createDataFrame([(s, MODEL) for s in ids], "sample_id string, model string")
    rows.write.format("delta").mode("append").save(table_path(cfg, "scores"))


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """One ingest for the module: 3 shards of 4 images and one of 2 (one undecodable)."""
    base = tmp_path_factory.mktemp("embed-write")
    write_sample_shards(base / "s", shards=3, per_shard=4, seed=8)
    (base / "bad").mkdir()
    _broken_jpeg_shard(base / "bad" / "bad.tar")
    sets = [f"database=t_{uuid.uuid4().hex[:8]}", "spark.conf={spark.master: 'local[2]'}"]
    cfg = load_config(sets=[*sets, *TINY, "embed.broadcast_ids=8"], warehouse=str(base / "wh"))
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(base / "s"), str(base / "bad")])
    return cfg


def test_pending_images_are_read_without_a_shuffle_of_the_bytes(spark, lake: Config) -> None:
    cfg = lake
    images = read_table(spark, cfg, "images").select("sample_id", "shard_uri", "image_bytes")
    rows = images.collect()
    by_shard: dict[str, list[str]] = {}
    for r in rows:
        by_shard.setdefault(r.shard_uri, []).append(r.sample_id)
    first, *rest = sorted(by_shard)
    _score_rows(spark, cfg, by_shard[first])
    want = {r.sample_id: r.image_bytes for r in rows if r.shard_uri != first}
    version = txn_point(spark, table_path(cfg, "scores"), "x").table_version

    # The model has rows: ids-only anti-join, broadcast semi-join of the pending ids.
    pending = pending_ids(spark, cfg, MODEL, version)
    assert pending.model_has_rows and pending.rows == len(want)
    assert [s for s, _ in pending.per_shard] == rest
    one = shard_batches(pending.per_shard, 1000)
    assert len(one) == 1 and one[0].every_shard
    out, got = _fed_to_udf(batch_images(spark, cfg, pending, one[0]))
    assert got == want  # every pending image once, its bytes whole
    exchanges = _exchanges(out)
    assert any("Broadcast" in name for name, _ in exchanges), exchanges
    assert not [e for e in exchanges if "image" in e[1]], exchanges
    # Batches of whole shards (a shard above broadcast_ids alone): the same rows, in parts.
    parts = shard_batches(pending.per_shard, 1)
    assert [b.shards for b in parts] == [(s,) for s in rest]
    seen: dict[str, int] = {}
    for b in parts:
        out, got = _fed_to_udf(batch_images(spark, cfg, pending, b))
        assert set(got) == set(by_shard[b.shards[0]]) and not set(got) & set(seen)
        assert not [e for e in _exchanges(out) if "image" in e[1]]
        seen.update(got)
    assert seen == want
    pending.ids.unpersist()

    # A model without rows: every image, read directly (no join, no exchange at all).
    fresh = pending_ids(spark, cfg, "other+random", version)
    assert not fresh.model_has_rows and fresh.rows == len(rows)
    out, got = _fed_to_udf(batch_images(spark, cfg, fresh, Batch(tuple(by_shard), len(rows), True)))
    assert len(got) == len(rows) and _exchanges(out) == []
    fresh.ids.unpersist()

    # The detector sees what the old plan did: a hash repartition that moves the bytes.
    done = read_table(spark, cfg, "scores").where(F.col("model") == MODEL).select("sample_id")
    old = (
        read_table(spark, cfg, "images")
        .select("sample_id", "image", "caption")
        .join(done, "sample_id", "left_anti")
        .repartition(2, "sample_id")
    )
    out, got = _fed_to_udf(old)
    assert got == want and [e for e in _exchanges(out) if "image" in e[1]]


def test_two_writes_of_the_same_snapshot_commit_once(spark, make_cfg) -> None:
    cfg = make_cfg()
    register_tables(spark, cfg)
    ensure_table(spark, cfg, SCORES)
    path = table_path(cfg, "scores")
    rows = spark.createDataFrame([("a", MODEL), ("b", MODEL)], "sample_id string, model string")
    app = embed.app_id(MODEL)
    point = txn_point(spark, path, app)  # both runs read this snapshot
    assert append_once(spark, rows, path, point, "run-1") == 2
    assert append_once(spark, rows, path, point, "run-2") is None  # the second: skipped
    # An unrelated commit in between (another model) does not let a stale claim through.
    other = spark.createDataFrame([("a", "other")], "sample_id string, model string")
    assert append_once(spark, other, path, txn_point(spark, path, "x"), "run-3") == 1
    assert append_once(spark, rows, path, point, "run-4") is None
    later = txn_point(spark, path, app)
    assert later.txn_version == point.txn_version + 1
    new = spark.createDataFrame([("c", MODEL)], "sample_id string, model string")
    assert append_once(spark, new, path, later, "run-5") == 1
    table = spark.read.format("delta").load(path)
    assert table.count() == 4
    assert table.groupBy("sample_id", "model").count().where(F.col("count") > 1).count() == 0


def test_embed_in_batches_then_retry_errors(spark, lake: Config) -> None:
    cfg = lake  # broadcast_ids 8: shards of 2+4, 4+4 pending images
    first = embed.run(spark, cfg)
    assert first.extra["batches"] == 2 and first.balanced
    assert (first.rows_in, first.rows_written, first.quarantined) == (14, 13, 1)
    assert first.extra["write"].startswith("appended")
    retry = embed.run(spark, cfg, retry_errors=True)  # the same bytes fail again: updated
    assert (retry.rows_in, retry.rows_written, retry.quarantined, retry.skipped) == (1, 0, 1, 0)
    scores = read_table(spark, cfg, "scores")
    scores = scores.where(F.col("model") == embed.model_id(embed.embed_spec(cfg)))
    assert scores.count() == 14 and scores.select("sample_id").distinct().count() == 14
    assert scores.where(F.col("error").isNotNull()).select("run_id").first()[0] == retry.run_id


def test_the_append_writes_few_files_whatever_the_task_count(spark, tmp_path) -> None:
    """The embed UDF runs in many small tasks; the append coalesces their cached rows into
    files of about FILE_BYTES, at least one per core (not one small file per task)."""
    write_sample_shards(tmp_path / "s", shards=4, per_shard=12, seed=9)
    sets = [f"database=t_{uuid.uuid4().hex[:8]}", "spark.conf={spark.master: 'local[2]'}"]
    small = ["ingest.row_group_bytes=65536", "embed.batch_size=1"]  # many splits, many tasks
    cfg = load_config(sets=[*sets, *TINY, *small], warehouse=str(tmp_path / "wh"))
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(tmp_path / "s")])
    slots = spark.sparkContext.defaultParallelism
    model = embed.model_id(embed.embed_spec(cfg))
    embed.ensure_score_columns(spark, cfg, [])
    version = txn_point(spark, table_path(cfg, "scores"), embed.app_id(model)).table_version
    pending = pending_ids(spark, cfg, model, version)
    (batch,) = shard_batches(pending.per_shard, 1000)
    split = split_bytes(spark, cfg, batch.rows, embed.num_tasks(spark, batch.rows, 1))
    with session_conf(spark, {SPLIT_CONF: str(split)}):
        tasks = batch_images(spark, cfg, pending, batch).rdd.getNumPartitions()
    pending.ids.unpersist()
    assert tasks > slots  # the UDF's tasks: more than the files the write should make

    summary = embed.run(spark, cfg)
    assert summary.rows_written == 48
    history = DeltaTable.forPath(spark, table_path(cfg, "scores")).history(1).collect()[0]
    assert history["operation"] == "WRITE"
    assert 1 <= int(history["operationMetrics"]["numFiles"]) <= slots


def test_the_embeddings_are_written_without_a_parquet_dictionary(spark, tmp_path) -> None:
    """parquet-java would build a dictionary of every file's embedding floats (and, for real
    embeddings, drop it again): the embed write turns it off for that column only. Identical
    images give repeated floats, where a dictionary would otherwise be kept."""
    import pyarrow.parquet as pq

    from tests import badshards as bs

    image = bs.jpeg_bytes()
    members = [m for i in range(24) for m in bs.sample(f"{i:03d}", image=image)]
    bs.write_tar(tmp_path / "s" / "same.tar", members)
    sets = [f"database=t_{uuid.uuid4().hex[:8]}", "spark.conf={spark.master: 'local[2]'}"]
    cfg = load_config(sets=[*sets, *TINY], warehouse=str(tmp_path / "wh"))
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(tmp_path / "s")])
    assert embed.run(spark, cfg).rows_written == 24

    def check(files: list[Path]) -> None:
        assert files
        for f in files:
            group = pq.ParquetFile(f).metadata.row_group(0)
            encodings = {
                group.column(i).path_in_schema: group.column(i).encodings
                for i in range(group.num_columns)
            }
            embedding = encodings["embedding.list.element"]
            assert not any("DICTIONARY" in e for e in embedding), encodings
            assert any("DICTIONARY" in e for e in encodings["model"]), encodings  # others keep it
        assert spark.conf.get("parquet.enable.dictionary#embedding.list.element", None) is None

    written = set((tmp_path / "wh").rglob("scores/*.parquet"))
    check(sorted(written))
    # classify's MERGE rewrites the files it updates, embeddings and all: the same setting
    assert classify.run(spark, cfg, all_rows=True).rows_written == 24
    check(sorted(set((tmp_path / "wh").rglob("scores/*.parquet")) - written))
