"""The session catalog: every Delta table of the warehouse by name, and the views over them.

Registered by location whenever a session starts (no embedded metastore that admits one
process at a time); the same statements go to `<warehouse>/catalog.sql` for `spark-sql -i`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from curator_udfs.shard_listing import url_to_fs
from spark_jobs.config import Config, ConfigError
from spark_jobs.lineage import FATES_VIEW, fates_select
from spark_jobs.model_choice import view_model
from spark_jobs.paths import StoreURI
from spark_jobs.tables import db_dir, is_delta
from spark_jobs.views import SCORED_VIEW, scored_select

SESSION_CATALOG = "spark_catalog"  # Spark's built-in catalog: schemas there take a LOCATION


def register_tables(spark: SparkSession, cfg: Config) -> None:
    """Create the database and register every Delta table found in the warehouse by location.

    Also writes `<warehouse>/catalog.sql`, an init file for `spark-sql -i`.
    """
    create = create_schema_statement(cfg)
    try:
        spark.sql(create)
    except AnalysisException as exc:
        if exc.getCondition() not in ("CATALOG_NOT_FOUND", "REQUIRES_SINGLE_PART_NAMESPACE"):
            raise
        catalog = cfg.database.split(".")[0]
        raise ConfigError(
            f"config key `database`: {cfg.database!r} names catalog {catalog!r}, which this "
            f"session does not have; create it (Unity Catalog: CREATE CATALOG {catalog}), "
            f"configure spark.sql.catalog.{catalog}, or use a plain schema name"
        ) from None
    statements = [create + ";"]
    base = db_dir(cfg)
    for name in sorted(n for n in _children(base) if is_delta(base / n)):
        stmt = (
            f"CREATE TABLE IF NOT EXISTS {cfg.database}.{name} USING delta LOCATION '{base / name}'"
        )
        spark.sql(stmt)
        statements.append(stmt + ";")
    statements.extend(register_views(spark, cfg))
    text = "\n".join(statements) + "\n"
    warehouse = cfg.warehouse_path
    if isinstance(warehouse, Path):
        (warehouse / "catalog.sql").write_text(text, encoding="utf-8")
    else:  # object storage: one PUT (locations only, never a credential)
        fs, key = url_to_fs(str(warehouse / "catalog.sql"))
        fs.pipe_file(key, text.encode("utf-8"))


def create_schema_statement(cfg: Config) -> str:
    """`CREATE SCHEMA` for `database`, with the warehouse's directory as its location.

    Unity Catalog takes no LOCATION for a schema (it has its own managed storage, which holds
    nothing of ours: every table is registered by its location in the warehouse), so a
    `catalog.schema` other than the session catalog's gets none.
    """
    catalog, _, _schema = cfg.database.rpartition(".")
    if catalog and catalog != SESSION_CATALOG:
        return f"CREATE SCHEMA IF NOT EXISTS {cfg.database}"
    return f"CREATE SCHEMA IF NOT EXISTS {cfg.database} LOCATION '{db_dir(cfg)}'"


def _children(base: Path | StoreURI) -> list[str]:
    """Names of the entries directly below a local directory or an object-store prefix."""
    if isinstance(base, Path):
        return [p.name for p in base.iterdir()] if base.is_dir() else []
    fs, key = url_to_fs(str(base))
    try:
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(key, detail=False)]
    except FileNotFoundError:
        return []


def register_views(spark: SparkSession, cfg: Config) -> list[str]:
    """Create the views whose tables exist; return their statements for catalog.sql."""
    statements: list[str] = []
    select = scored_select(spark, cfg, model=view_model(spark, cfg))
    if select is not None:
        stmt = f"CREATE OR REPLACE VIEW {cfg.database}.{SCORED_VIEW} AS {select}"
        spark.sql(stmt)
        statements.append(stmt + ";")
    try:
        fates = fates_select(spark, cfg)
        if fates is not None:
            stmt = f"CREATE OR REPLACE VIEW {cfg.database}.{FATES_VIEW} AS {fates}"
            spark.sql(stmt)
            statements.append(stmt + ";")
    except AnalysisException as exc:  # lineage must never stop a job: say so, go on
        first = str(exc).strip().splitlines()[0][:300]
        print(f"curator: the `fates` view is not available here: {first}", file=sys.stderr)
    return statements
