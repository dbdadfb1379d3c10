"""Export: curated → WebDataset shards; read back, re-ingest, crash and rerun."""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from curator_udfs.export_shards import sample_tar_estimate, task_of_shard
from curator_udfs.wds_writer import plan_shards, sanitize_key
from spark_jobs import export, ingest
from spark_jobs import filter as filter_job
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError
from spark_jobs.tables import read_table
from tests.test_filter import cfg_like, ingest_and_score


@pytest.fixture(scope="module")
def curated_wh(spark, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """Real shards ingested, scored, filtered (one predicate): a curated table to export."""
    from spark_jobs.config import load_config

    base = tmp_path_factory.mktemp("export")
    cfg = load_config(
        sets=["database=exp", "spark.conf={spark.master: 'local[2]'}",
              "filter.predicates=['aesthetic_score >= 1']", "export.samples_per_shard=7"],
        warehouse=str(base / "warehouse"),
    )  # fmt: skip
    ingest_and_score(spark, cfg, base / "shards", shards=2, per_shard=12, seed=11)
    filter_job.run(spark, cfg)
    return cfg


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_sanitize_and_plan() -> None:
    assert sanitize_key("../../etc/passwd") == "etc_passwd"
    assert sanitize_key("/abs/a.b.c") == "abs_a_b_c" and sanitize_key("ok-1_2") == "ok-1_2"
    long = sanitize_key("x" * 300)
    assert len(long) <= 80 and long != sanitize_key("x" * 301)
    with pytest.raises(ValueError):
        sanitize_key("../..")
    assert plan_shards([10] * 5, 2) == [0, 0, 1, 1, 2]
    assert plan_shards([100, 100, 100, 5000, 10], 10, 300) == [0, 0, 0, 1, 2]


def test_export_reads_back_with_webdataset_and_reruns_identically(
    spark, curated_wh: Config, tmp_path: Path
) -> None:
    cfg = curated_wh
    out = tmp_path / "out"
    out.mkdir()
    (out / "00009.tar").write_bytes(b"stale shard of an older export")
    (out / "00042.tar.tmp").write_bytes(b"half a shard")
    (out / "notes.txt").write_text("not ours: kept")
    summary = export.run(spark, cfg, output=str(out))
    curated = {r.sample_id: r for r in read_table(spark, cfg, "curated").collect()}
    images = {
        r.sample_id: r
        for r in read_table(spark, cfg, "images").select("sample_id", "image", "caption").collect()
    }
    n = len(curated)
    assert summary.rows_written == n and summary.extra["leftovers_removed"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    names = [s["name"] for s in manifest["shards"]]
    assert names == [f"{i:05d}.tar" for i in range(-(-n // 7))]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "manifest.json", "notes.txt"])
    assert manifest["samples"] == n and sum(s["samples"] for s in manifest["shards"]) == n
    for s in manifest["shards"]:
        assert (
            _sha(out / s["name"]) == s["sha256"] and (out / s["name"]).stat().st_size == s["bytes"]
        )

    urls = [str(out / name) for name in names]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert [g["__key__"] for g in got] == sorted(curated)  # ordered by sample_id
    for g in got:
        sid = g["__key__"]
        ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[curated[sid].image_format]
        assert g[ext] == bytes(images[sid].image)  # original bytes
        assert g["txt"].decode() == images[sid].caption
        doc = json.loads(g["json"])
        assert doc["sample_id"] == sid and doc["key"] == curated[sid].key
        assert doc["aesthetic_score"] == curated[sid].aesthetic_score
        assert doc["meta"]["key"] == curated[sid].key  # original img2dataset json, parsed

    before = {name: _sha(out / name) for name in names}
    export.run(spark, cfg, output=str(out))  # rerun: same bytes, same manifest
    assert {name: _sha(out / name) for name in names} == before
    assert json.loads((out / "manifest.json").read_text()) == manifest

    # re-ingest the export: the same image bytes come back
    again = cfg_like(cfg, "database=reingest")
    register_tables(spark, again)
    ingest.run(spark, again, inputs=[str(out)])
    back = {r.image_sha256 for r in read_table(spark, again, "images").collect()}
    assert back == {r.image_sha256 for r in curated.values()}


def test_crash_during_export_then_rerun(spark, curated_wh: Config, tmp_path: Path) -> None:
    cfg = cfg_like(curated_wh, "export.tasks=1", "export.max_shard_bytes=20000")
    out = tmp_path / "out"
    first = export.run(spark, cfg, output=str(out))
    good = {p.name: _sha(p) for p in out.glob("*.tar")}
    assert len(good) >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    # the byte target holds for the members unless one sample is bigger; the tar format adds
    # its 1 KiB end marker and pads the file to a whole 10 KiB record
    bound = -(-(20000 + 1024) // 10240) * 10240
    for s in manifest["shards"]:
        assert s["bytes"] <= bound or s["samples"] == 1
    with pytest.raises(Exception, match="injected failure while writing shard 1"):
        export.run(spark, cfg, output=str(out), fail_at_shard=1)
    assert not (out / "manifest.json").exists()  # no manifest: the output is not complete
    assert not list(out.glob("*.tmp"))  # the failed shard's temporary file was removed
    for p in out.glob("*.tar"):  # whatever has a final name is a complete shard
        assert _sha(p) == good[p.name]
    (out / "00002.tar.tmp").write_bytes(b"left by a killed process")
    again = export.run(spark, cfg, output=str(out))
    assert again.rows_written == first.rows_written
    assert {p.name: _sha(p) for p in out.glob("*.tar")} == good
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not list(out.glob("*.tmp"))


def test_exported_table_records_shard_and_position(
    spark, curated_wh: Config, tmp_path: Path
) -> None:
    """`exported` says, for every curated sample, which shard holds it and where."""
    cfg = curated_wh
    out = tmp_path / "pos"
    export.run(spark, cfg, output=str(out))
    rows = read_table(spark, cfg, "exported").collect()
    curated_ids = {r["sample_id"] for r in read_table(spark, cfg, "curated").collect()}
    assert {r["sample_id"] for r in rows} == curated_ids and len(rows) == len(curated_ids)
    for shard in {r["shard"] for r in rows}:
        with tarfile.open(out / shard) as tar:
            keys = list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))
        recorded = sorted((r["position"], r["sample_id"]) for r in rows if r["shard"] == shard)
        assert [sid for _, sid in recorded] == keys
        assert [pos for pos, _ in recorded] == list(range(len(keys)))
    assert {r["output"] for r in rows} == {str(out.resolve())}


def test_shard_plan_in_spark_is_the_one_list_plan(spark) -> None:
    """The plan made in Spark over rows from many partitions, in any order: one range gives
    the same shards and positions as plan_shards over the rows sorted by sample_id; ranges of
    sample_id prefixes give each range's own plan, numbered after the ranges before it; the SQL
    task of each shard is task_of_shard's."""
    rng = random.Random(5)
    rows = [
        (f"{rng.getrandbits(64):016x}", rng.randbytes(rng.randrange(0, 3000)), "c" * (i % 50))
        for i in range(300)
    ]
    df = spark.createDataFrame(rows, "sample_id STRING, image BINARY, caption STRING")
    ordered = sorted(rows)
    est = {sid: sample_tar_estimate(len(img), len(cap), 0) for sid, img, cap in ordered}
    assert export.range_digits(300, 300) == 0 and export.range_digits(301, 300) == 1
    assert export.range_digits(300, 40) == 1 and export.range_digits(10**9, 2_000_000) == 3

    def planned(rows_per_range: int) -> tuple[export.ShardPlan, list[tuple[str, int, int]]]:
        plan = export.shard_plan(df.repartition(7), 11, 40_000, rows_per_range=rows_per_range)
        got = sorted((r["sample_id"], r["_shard"], r["_pos"]) for r in plan.rows.collect())
        plan.unpersist()
        assert [g[0] for g in got] == [r[0] for r in ordered] and plan.samples == 300
        assert plan.shards == got[-1][1] + 1
        return plan, got

    plan, got = planned(export.PLAN_RANGE_ROWS)  # one range
    want = plan_shards([est[sid] for sid, _, _ in ordered], 11, 40_000)
    assert [g[1] for g in got] == want
    assert [g[2] for g in got] == [want[:i].count(s) for i, s in enumerate(want)]
    n_shards = plan.shards
    assert n_shards > 300 // 11 + 1  # the byte target closed some shards early

    plan, got = planned(40)  # 16 ranges: sample_id's first hex digit
    first = 0
    for digit in "0123456789abcdef":
        mine = [g for g in got if g[0].startswith(digit)]
        local = plan_shards([est[sid] for sid, _, _ in mine], 11, 40_000)
        assert [g[1] for g in mine] == [first + s for s in local]
        assert [g[2] for g in mine] == [local[:i].count(s) for i, s in enumerate(local)]
        first += local[-1] + 1 if local else 0
    assert plan.shards == first

    shards = spark.createDataFrame([(s,) for s in range(n_shards)], "_shard INT")
    for n_tasks in (1, 2, 5, n_shards):
        tasks = shards.select("_shard", export.task_column(n_shards, n_tasks).alias("t"))
        got_tasks = {r["_shard"]: r["t"] for r in tasks.collect()}
        assert got_tasks == {s: task_of_shard(s, n_shards, n_tasks) for s in range(n_shards)}
    empty = export.shard_plan(df.limit(0), 11, None)
    assert (empty.samples, empty.shards, empty.rows.count()) == (0, 0, 0)
    empty.unpersist()
    with pytest.raises(ValueError, match="rows_per_range"):
        export.range_digits(10, 0)
    nameless = df.limit(3).union(spark.createDataFrame([(None, b"x", "c")], df.schema))
    with pytest.raises(ConfigError, match="1 rows have no sample_id"):
        export.shard_plan(nameless, 11, None)


def test_export_in_ranges_writes_every_sample_once_in_order(
    spark, curated_wh: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above PLAN_RANGE_ROWS samples the plan packs sample_id ranges side by side: the shards
    still hold every curated sample once, in sample_id order across the numbered shards, no
    shard mixes two ranges, and `exported` records each sample's shard and position."""
    monkeypatch.setattr(export, "PLAN_RANGE_ROWS", 4)  # 16 ranges: sample_id's first digit
    out = tmp_path / "ranged"
    summary = export.run(spark, curated_wh, output=str(out))
    curated = sorted(r["sample_id"] for r in read_table(spark, curated_wh, "curated").collect())
    assert len(curated) > 4 and summary.rows_written == len(curated)
    manifest = json.loads((out / "manifest.json").read_text())
    names = [s["name"] for s in manifest["shards"]]
    per_range = [sum(sid[0] == d for sid in curated) for d in "0123456789abcdef"]
    assert names == [f"{i:05d}.tar" for i in range(sum(-(-n // 7) for n in per_range))]
    where: dict[str, tuple[str, int]] = {}
    for name in names:
        with tarfile.open(out / name) as tar:
            mine = list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))
        assert len({sid[0] for sid in mine}) == 1 and len(mine) <= 7
        where.update({sid: (name, i) for i, sid in enumerate(mine)})
    assert list(where) == curated  # every sample once, in sample_id order across the shards
    rows = read_table(spark, curated_wh, "exported").collect()
    assert {r["sample_id"]: (r["shard"], r["position"]) for r in rows} == where
