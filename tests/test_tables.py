"""Table discovery: only a Delta table with a commit counts (a killed first write is not one)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_database_may_be_catalog_dot_schema(spark, make_cfg) -> None:
    from spark_jobs.catalog import create_schema_statement
    from spark_jobs.config import ConfigError

    uc = make_cfg(database="main.curation")  # Unity Catalog: no LOCATION for a schema
    assert create_schema_statement(uc) == "CREATE SCHEMA IF NOT EXISTS main.curation"
    assert table_path(uc, "images").endswith("/main/curation.db/images")
    with pytest.raises(ConfigError, match=r"config key `database`: 'main.curation' names "
                       r"catalog 'main'.*spark.sql.catalog.main"):  # fmt: skip
        register_tables(spark, uc)  # no catalog `main` in this session: a message, exit 2
    for bad in ("a.b.c", "a-b", ".x", "x."):
        with pytest.raises(ConfigError, match=r"config key `database`:.*catalog.schema"):
            make_cfg(database=bad)


def test_commit_info_reads_the_commit_file_up_to_its_commit_info(tmp_path: Path) -> None:
    """Local paths and `file:` URIs alike; a missing commit (log cleanup) is None."""
    import json

    from spark_jobs.tables import commit_info

    log = tmp_path / "t" / "_delta_log"
    log.mkdir(parents=True)
    actions = [{"protocol": {"minReaderVersion": 1}}, {"commitInfo": {"userMetadata": "x"}}]
    lines = [json.dumps(a) for a in actions] + ["", "{not json after the commitInfo"]
    (log / f"{3:020d}.json").write_text("\n".join(lines))
    for path in (str(tmp_path / "t"), f"file:{tmp_path / 't'}", f"file://{tmp_path / 't'}"):
        assert commit_info(path, 3) == {"userMetadata": "x"}, path
        assert commit_info(path, 4) is None
