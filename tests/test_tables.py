"""Table discovery: only a Delta table with a commit counts (a killed first write is not one)."""

from __future__ import annotations

from pathlib import Path

from spark_jobs.catalog import register_tables
from spark_jobs.tables import is_delta, table_path


def test_a_log_without_a_commit_is_not_a_table(spark, make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    half = Path(table_path(cfg, "curated"))
    (half / "_delta_log").mkdir(parents=True)  # what a writer killed before commit 0 leaves
    (half / "_delta_log" / ".00000000000000000000.json.tmp").write_text("{}")
    (half / "part-00000.parquet").write_bytes(b"PAR1")
    assert not is_delta(half)
    register_tables(spark, cfg)  # must not try to register it (that fails every session)
    real = table_path(cfg, "shards")
    spark.range(3).write.format("delta").save(real)
    assert is_delta(real)
    register_tables(spark, cfg)
    assert spark.table(f"{cfg.database}.shards").count() == 3
    spark.range(2).write.format("delta").mode("overwrite").save(str(half))  # the rerun's write
    assert is_delta(half) and spark.read.format("delta").load(str(half)).count() == 2
