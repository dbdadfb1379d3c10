"""`curator check`: the accounting invariants hold after ingest and catch a broken table."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs import check, ingest
from spark_jobs.tables import read_table, register_tables, table_path
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
