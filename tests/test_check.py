"""`curator check`: the accounting invariants hold after ingest and catch a broken table."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs import check, ingest
from spark_jobs.catalog import register_tables
from spark_jobs.tables import read_table, table_path
from tests import badshards


def test_invariants_hold_then_catch_a_duplicate_and_a_lost_sample(spark, make_cfg, tmp_path: Path):
    d = tmp_path / "shards"
    badshards.write_mixed_bad_shard(d / "00000.tar")
    badshards.write_tar(d / "00001.tar", badshards.good_members(4))
    cfg = make_cfg()
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(d)])
    summary = check.run(spark, cfg)
    assert summary.rows_in >= 3 and summary.rows_written == summary.rows_in

    # the same image row twice, and a quarantined sample gone: both must be reported
    images = read_table(spark, cfg, "images")
    images.limit(1).write.format("delta").mode("append").save(table_path(cfg, "images"))
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, table_path(cfg, "quarantine")).delete("reason = 'missing_image'")
    with pytest.raises(check.CheckFailed) as exc:
        check.run(spark, cfg)
    message = str(exc.value)
    assert "images: sample_id unique: 1 violations" in message
    assert "shard samples = images + quarantined" in message


def test_curated_exported_and_duplicates_invariants(spark, make_cfg, tmp_path: Path):
    d = tmp_path / "shards"
    badshards.write_tar(d / "00000.tar", badshards.good_members(4))
    cfg = make_cfg()
    register_tables(spark, cfg)
    ingest.run(spark, cfg, inputs=[str(d)])
    ids = sorted(r.sample_id for r in read_table(spark, cfg, "images").collect())

    def write(name: str, rows: list, schema: str, mode: str = "overwrite") -> None:
        df = spark.createDataFrame(rows, schema)
        df.write.format("delta").mode(mode).save(table_path(cfg, name))

    write("curated", [(i,) for i in ids[:3]], "sample_id STRING")  # version 0
    write("exported", [(i, 0) for i in ids[:3]], "sample_id STRING, curated_version BIGINT")
    dup_schema = "sample_id STRING, duplicate_of STRING, method STRING, eps DOUBLE"
    # a sample kept by one method may be removed by another: that is no violation
    write(
        "duplicates",
        [(ids[3], ids[0], "exact", None), (ids[0], ids[1], "semantic", 0.1)],
        dup_schema,
    )
    assert all(r.violations == 0 for r in check.invariants(spark, cfg))

    # a curated row that is no image, an export missing one curated row and holding a stranger,
    # a duplicate that is no image, a curated row twice
    write("curated", [("nosuchimage",), (ids[0],), (ids[0],)], "sample_id STRING", "append")
    write(
        "exported",
        [(i, 0) for i in ids[:2]] + [("stranger", 0)],
        "sample_id STRING, curated_version BIGINT",
    )
    write(
        "duplicates",
        [("ghost", ids[0], "exact", None), (ids[2], ids[3], "exact", None)],  # ids[3] removed
        dup_schema,
        "append",
    )
    broken = {r.name: r for r in check.invariants(spark, cfg) if r.violations}
    assert broken["every curated row is an image"].examples == ["nosuchimage"]
    assert broken["curated: sample_id unique"].examples == [ids[0]]
    assert broken["every exported row is a curated row"].examples == ["stranger"]
    assert broken["every curated row was exported"].examples == [ids[2]]
    assert broken["every duplicate is an image"].examples == ["ghost"]
    assert broken["every duplicate_of is a kept sample"].examples == [ids[2]]
    assert len(broken) == 6, sorted(broken)
