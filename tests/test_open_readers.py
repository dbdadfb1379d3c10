"""Every table the pipeline writes reads back with the same rows in delta-rs (`deltalake`) and
in DuckDB's delta extension (from the `duckdb-extension-delta` wheel: nothing is downloaded at
run time), and keeps to Delta features those readers support."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pytest
from deltalake import DeltaTable

from spark_jobs.tables import ALL_TABLES, table_path
from tests.conftest import PipelineRun

# A reader (delta-rs, DuckDB's delta extension) understands these protocols without features.
MAX_READER, MAX_WRITER = 1, 2


def delta_extension() -> Path:
    """The delta extension binary the wheel ships for exactly this DuckDB version."""
    root = resources.files("duckdb_extension_delta") / "extensions" / f"v{duckdb.__version__}"
    path = Path(str(root / "delta.duckdb_extension"))
    assert path.is_file(), (
        f"duckdb-extension-delta lacks a build for DuckDB {duckdb.__version__}: pin both to the "
        "same version in pyproject.toml"
    )
    return path


@pytest.fixture(scope="module")
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    con.execute(f"LOAD '{delta_extension()}'")
    yield con
    con.close()


def _value(v: Any) -> Any:
    """One comparable form per value, whichever reader produced it."""
    if isinstance(v, bytes | bytearray | memoryview):
        return hashlib.sha256(bytes(v)).hexdigest()
    if isinstance(v, list | tuple):
        return tuple(_value(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _value(x)) for k, x in v.items()))
    return v


def _rows(records: Iterable[Any], columns: list[str]) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(_value(r[c]) for c in columns) for r in records)


def _comparable(spark_types: dict[str, str]) -> list[str]:
    """Columns compared value by value: all but timestamps (time zones differ per reader)."""
    return [c for c, t in spark_types.items() if t not in ("timestamp", "timestamp_ntz", "date")]


@pytest.fixture(scope="module")
def spark_view(spark, pipeline_run: PipelineRun) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Per table, as Spark reads it: path, column types, rows of the compared columns."""
    out: dict[str, dict[str, Any]] = {}
    for logical in ALL_TABLES:
        path = table_path(pipeline_run.cfg, logical)
        df = spark.read.format("delta").load(path)
        types = dict(df.dtypes)
        columns = _comparable(types)
        rows = [r.asDict(recursive=True) for r in df.select(*columns).collect()]
        out[logical] = {"path": path, "types": types, "columns": columns,
                        "rows": _rows(rows, columns)}  # fmt: skip
    return out


def test_the_run_wrote_every_table_with_rows(
    spark_view: dict[str, dict[str, Any]], pipeline_run: PipelineRun
) -> None:
    assert len(ALL_TABLES) == 13  # + dedup_centroids, dedup_members, dedup_group_pairs
    empty = [t for t, v in spark_view.items() if not v["rows"]]
    assert not empty, f"tables without rows: {empty}"
    images = sum(spark_view["images"]["rows"].values())
    assert images == pipeline_run.samples + 3  # the truncated shard keeps its 3 whole samples


@pytest.mark.parametrize("logical", list(ALL_TABLES))
def test_delta_rs_reads_the_same_rows(logical: str, spark_view: dict[str, dict[str, Any]]) -> None:
    want = spark_view[logical]
    table = DeltaTable(want["path"]).to_pyarrow_table()  # every column decodes
    assert sorted(table.column_names) == sorted(want["types"])
    got = _rows(table.select(want["columns"]).to_pylist(), want["columns"])
    assert sum(got.values()) == sum(want["rows"].values())
    assert got == want["rows"]


@pytest.mark.parametrize("logical", list(ALL_TABLES))
def test_duckdb_reads_the_same_rows(
    logical: str, spark_view: dict[str, dict[str, Any]], duck: duckdb.DuckDBPyConnection
) -> None:
    want = spark_view[logical]
    scan = f"delta_scan('{want['path']}')"
    relation = duck.sql(f"SELECT * FROM {scan}")
    assert sorted(relation.columns) == sorted(want["types"])
    relation.fetchall()  # every column decodes
    count = duck.sql(f"SELECT count(*) FROM {scan}").fetchone()
    assert count is not None and count[0] == sum(want["rows"].values())
    selected = ", ".join(f'"{c}"' for c in want["columns"])
    result = duck.sql(f"SELECT {selected} FROM {scan}")
    records = [dict(zip(want["columns"], row, strict=True)) for row in result.fetchall()]
    assert _rows(records, want["columns"]) == want["rows"]


def _protocol(path: str) -> dict[str, Any]:
    """The table's current protocol action (the last one in the log's JSON commits)."""
    protocol: dict[str, Any] = {}
    for commit in sorted(Path(path, "_delta_log").glob("*.json")):
        for line in commit.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            protocol = action.get("protocol", protocol)
    return protocol


@pytest.mark.parametrize("logical", list(ALL_TABLES))
def test_tables_need_no_reader_or_writer_features(
    logical: str, spark_view: dict[str, dict[str, Any]]
) -> None:
    """No deletion vectors, column mapping or other table features unless configured."""
    protocol = _protocol(spark_view[logical]["path"])
    assert protocol, f"{logical}: no protocol action in the log"
    assert protocol["minReaderVersion"] <= MAX_READER, (logical, protocol)
    assert protocol["minWriterVersion"] <= MAX_WRITER, (logical, protocol)
    assert not protocol.get("readerFeatures") and not protocol.get("writerFeatures"), protocol
    meta = DeltaTable(spark_view[logical]["path"]).metadata().configuration
    assert meta.get("delta.enableDeletionVectors", "false") == "false", (logical, meta)
    assert meta.get("delta.columnMapping.mode", "none") == "none", (logical, meta)


def test_value_normalisation() -> None:
    assert _value(b"ab") == _value(bytearray(b"ab")) == hashlib.sha256(b"ab").hexdigest()
    assert _value([1.5, [2]]) == (1.5, (2,))
    assert _comparable({"a": "string", "t": "timestamp", "d": "date"}) == ["a"]
    assert isinstance(datetime.now(), date)  # timestamps are left out, not compared


def test_a_catalog_schema_database_names_every_table(spark, pipeline_run: PipelineRun) -> None:  # type: ignore[no-untyped-def]
    """The run's database is `spark_catalog.<schema>` (a Unity Catalog style two-part name):
    tables and views answer to three-part names; the directories sit under the catalog."""
    from spark_jobs.tables import db_dir, table_name

    cfg = pipeline_run.cfg
    catalog, schema = cfg.database.split(".")
    assert catalog == "spark_catalog"
    assert db_dir(cfg) == cfg.warehouse_path / "spark_catalog" / f"{schema}.db"
    listed = {r["tableName"] for r in spark.sql(f"SHOW TABLES IN {cfg.database}").collect()}
    assert {"images", "scores", "curated", "scored", "fates"} <= listed
    n = spark.table(table_name(cfg, "images")).count()
    assert n == pipeline_run.samples + 3
    assert spark.sql(f"SELECT count(*) AS n FROM {cfg.database}.scored").first()["n"] > 0
    assert f"CREATE SCHEMA IF NOT EXISTS {cfg.database} LOCATION" in (
        cfg.warehouse_path / "catalog.sql"
    ).read_text()
