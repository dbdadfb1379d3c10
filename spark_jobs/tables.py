"""The Delta tables of the warehouse: their schemas, where they live, names in the catalog.

Tables live at `<warehouse>/<database>.db/<table>` and are registered by location when a
session starts, so every command (and `spark-sql -i <warehouse>/catalog.sql`) sees them by name
without an embedded metastore that admits one process at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.config import Config


@dataclass(frozen=True)
class TableDef:
    """A table of the warehouse: its logical name (a key of `tables:` in the config) and schema."""

    logical: str
    schema: str
    keys: tuple[str, ...]
    comment: str = ""


SHARDS = TableDef(
    "shards",
    "shard_uri STRING NOT NULL, size BIGINT, mtime DOUBLE, samples BIGINT, images BIGINT, "
    "quarantined BIGINT, bytes_read BIGINT, status STRING, error STRING, "
    "ingested_at TIMESTAMP, run_id STRING",
    ("shard_uri",),
    "one row per ingested shard; status ok | truncated | failed",
)
IMAGES = TableDef(
    "images",
    "sample_id STRING NOT NULL, key STRING, shard_uri STRING, image BINARY, image_format STRING, "
    "image_ext STRING, width INT, height INT, image_bytes BIGINT, image_sha256 STRING, "
    "caption STRING, meta STRING, warnings ARRAY<STRING>, ingested_at TIMESTAMP, run_id STRING",
    ("sample_id",),
    "original image bytes (never re-encoded), header metadata, hashes, caption, JSON metadata",
)
QUARANTINE = TableDef(
    "quarantine",
    "shard_uri STRING NOT NULL, ordinal BIGINT NOT NULL, key STRING, member STRING, reason STRING, "
    "detail STRING, size BIGINT, quarantined_at TIMESTAMP, run_id STRING",
    ("shard_uri", "ordinal"),
    "every sample or member that could not be ingested, with the reason; "
    "ordinal = position in the shard",
)

ALL_TABLES: dict[str, TableDef] = {t.logical: t for t in (SHARDS, IMAGES, QUARANTINE)}


def add_table(tdef: TableDef) -> TableDef:
    """Make a table known to the warehouse (jobs of later stages register theirs here)."""
    ALL_TABLES[tdef.logical] = tdef
    return tdef


def db_dir(cfg: Config) -> Path:
    return cfg.warehouse_path / f"{cfg.database}.db"


def table_path(cfg: Config, logical: str) -> str:
    """The table's directory: `<warehouse>/<database>.db/<name>`."""
    return str(db_dir(cfg) / getattr(cfg.tables, logical, logical))


def table_name(cfg: Config, logical: str) -> str:
    """The table's catalog name, `database.name`."""
    return f"{cfg.database}.{getattr(cfg.tables, logical, logical)}"


def is_delta(path: str | Path) -> bool:
    return (Path(path) / "_delta_log").is_dir()


def _register_sql(cfg: Config, name: str, path: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table_name(cfg, name)} USING delta LOCATION '{path}'"


def register_tables(spark: SparkSession, cfg: Config) -> None:
    """Create the database and register every Delta table found in the warehouse by location.

    Also writes `<warehouse>/catalog.sql`, an init file for `spark-sql -i`.
    """
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {cfg.database} LOCATION '{db_dir(cfg)}'")
    statements = [f"CREATE DATABASE IF NOT EXISTS {cfg.database} LOCATION '{db_dir(cfg)}';"]
    base = db_dir(cfg)
    found = sorted(p.name for p in base.iterdir() if is_delta(p)) if base.is_dir() else []
    for name in found:
        stmt = (
            f"CREATE TABLE IF NOT EXISTS {cfg.database}.{name} USING delta LOCATION '{base / name}'"
        )
        spark.sql(stmt)
        statements.append(stmt + ";")
    from spark_jobs.views import register_views

    statements.extend(register_views(spark, cfg))
    (cfg.warehouse_path / "catalog.sql").write_text("\n".join(statements) + "\n", encoding="utf-8")


def ensure_table(spark: SparkSession, cfg: Config, tdef: TableDef) -> DeltaTable:
    """Create the table if it does not exist (at its warehouse location) and return it."""
    path = table_path(cfg, tdef.logical)
    if not is_delta(path):
        (
            DeltaTable.createIfNotExists(spark)
            .tableName(table_name(cfg, tdef.logical))
            .location(path)
            .addColumns(spark.createDataFrame([], tdef.schema).schema)
            .comment(tdef.comment)
            .execute()
        )
    else:
        spark.sql(_register_sql(cfg, tdef.logical, path))
    return DeltaTable.forPath(spark, path)


def read_table(spark: SparkSession, cfg: Config, logical: str) -> DataFrame:
    """The current version of a table (by path, so it works before registration too)."""
    return spark.read.format("delta").load(table_path(cfg, logical))


def merge_insert_new(
    spark: SparkSession, cfg: Config, tdef: TableDef, source: DataFrame, *, scope: str | None = None
) -> int:
    """Insert the rows whose key is not in the table yet, in one transaction; return rows inserted.

    `scope` is an extra SQL condition on the target (`t.`) that lets Delta skip files, e.g.
    `t.shard_uri IN (...)`. Rerunning with the same source inserts nothing: rerun-safe.
    """
    target = ensure_table(spark, cfg, tdef)
    cond = " AND ".join(f"t.{k} = s.{k}" for k in tdef.keys)
    if scope:
        cond = f"({scope}) AND {cond}"
    before = _version(target)
    target.alias("t").merge(source.alias("s"), cond).whenNotMatchedInsertAll().execute()
    return last_metric(target, "numTargetRowsInserted", since=before)


def merge_upsert(
    spark: SparkSession, cfg: Config, tdef: TableDef, source: DataFrame, *, scope: str | None = None
) -> int:
    """Insert new keys and overwrite existing ones, in one transaction; return rows written."""
    target = ensure_table(spark, cfg, tdef)
    cond = " AND ".join(f"t.{k} = s.{k}" for k in tdef.keys)
    if scope:
        cond = f"({scope}) AND {cond}"
    before = _version(target)
    target.alias("t").merge(
        source.alias("s"), cond
    ).whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()
    return last_metric(target, "numTargetRowsInserted", since=before) + last_metric(
        target, "numTargetRowsUpdated", since=before
    )


def _version(table: DeltaTable) -> int:
    row = table.history(1).select("version").first()
    return int(row["version"]) if row else -1


def last_metric(table: DeltaTable, metric: str, *, since: int = -1) -> int:
    """An operation metric of the table's latest commit, 0 if nothing was committed after `since`.

    A MERGE that changes nothing writes no commit, so the latest one may be an older operation.
    """
    row = table.history(1).select("version", "operationMetrics").first()
    if row is None or int(row["version"]) <= since:
        return 0
    metrics = row["operationMetrics"] or {}
    return int(metrics.get(metric, 0) or 0)


def sql_list(values: list[str]) -> str:
    """A SQL `IN (...)` list of string literals, quotes escaped."""
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
