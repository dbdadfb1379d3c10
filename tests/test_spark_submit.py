"""`spark-submit spark_jobs/<job>.py`: ingest alone, then embed and the later stages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from curator_udfs.sample_shards import write_sample_shards
from spark_jobs import ingest
from spark_jobs.catalog import register_tables
from spark_jobs.tables import read_table
from tests import badshards
from tests.tiny import TINY as BASE_TINY
from tests.tiny import spark_submit, spark_submit_process

TINY = (*BASE_TINY, "filter.predicates=['width >= 64']")


def test_spark_submit_embed_then_dedup_filter_export(
    spark, make_cfg: Callable, tmp_path: Path
) -> None:
    shards, out = tmp_path / "shards", tmp_path / "curated"
    report = write_sample_shards(shards, shards=2, per_shard=20, seed=1)
    cfg = make_cfg(*TINY)
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(shards)])  # the small ingested warehouse
    sets: list[str] = []
    for s in (f"database={cfg.database}", *TINY):
        sets += ["--set", s]
    common = ["--warehouse", str(cfg.warehouse_path), *sets]

    embedded = spark_submit("embed.py", *common, cwd=tmp_path)
    assert isinstance(embedded, dict) and embedded["job"] == "embed"
    assert embedded["rows_in"] == embedded["rows_written"] == report.samples == 40

    stages = spark_submit(
        "pipeline.py",
        *common,
        "--stages",
        "dedup,filter,export",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert isinstance(stages, list) and [s["job"] for s in stages] == ["dedup", "filter", "export"]
    by = {s["job"]: s for s in stages}

    scores = read_table(spark, cfg, "scores").collect()
    assert len(scores) == 40 and {r.model for r in scores} == {"test_vit+random"}
    assert all(r.error is None and len(r.embedding) == 1000 for r in scores)
    dups = read_table(spark, cfg, "duplicates").collect()
    exact = {r.sample_id for r in dups if r.method == "exact"}
    assert len(exact) == report.exact_pairs == 1  # the planted byte-identical copy
    curated = {r.sample_id for r in read_table(spark, cfg, "curated").collect()}
    assert curated and not curated & {r.sample_id for r in dups if r.eps in (None, 0.01)}
    assert by["filter"]["rows_written"] == len(curated) == by["export"]["rows_written"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == len(curated) and manifest["source"]["table"] == "curated"
    exported = {r.sample_id for r in read_table(spark, cfg, "exported").collect()}
    assert exported == curated


def test_spark_submit_runs_the_ingest_job(tmp_path: Path) -> None:
    """Spark's PythonRunner merges the driver's stderr into stdout: messages must still reach
    stderr, stdout holds the summary alone, and Spark's INFO logging stays off."""
    shards, wh = tmp_path / "shards", tmp_path / "wh"
    badshards.write_tar(shards / "00000.tar", badshards.good_members(4))
    bad = spark_submit_process(
        "ingest.py", "--warehouse", str(wh), "--set", "ingest.max_image_bytes=-4", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout
    assert "config key `ingest.max_image_bytes`: Input should be greater than 0" in bad.stderr
    proc = spark_submit_process(
        "ingest.py", "--warehouse", str(wh), "--input", str(shards), "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # nothing but the summary
    summary = json.loads(lines[0])
    assert summary["job"] == "ingest" and summary["rows_written"] == 4
    assert f"curator ingest — {summary['run_id']}" in proc.stderr
    info = [ln for ln in proc.stderr.splitlines() if " INFO " in ln]
    # spark.log.level=WARN (the profile) leaves SparkContext's three version lines, logged
    # before it applies; conf/spark/log4j2.properties takes over once the context is up
    assert len(info) <= 3 and all("SparkContext" in ln for ln in info), info
