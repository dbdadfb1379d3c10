"""`curator optimize`: lay out the scores table so that selective queries skip files.

Two layouts, one per table (Delta refuses Z-order on a clustered table):
- Z-order (default): `OPTIMIZE ... ZORDER BY` the head score columns (or `--zorder COLS`);
  the table keeps reader 1 / writer 2 with no table features.
- Liquid clustering (`--cluster-by COLS`): `ALTER TABLE ... CLUSTER BY (COLS)`, then `OPTIMIZE`
  (`OPTIMIZE ... FULL` when the keys changed, so files clustered by the old keys are rewritten
  too). The table gains the writer features `clustering` and `domainMetadata` (writer 7);
  readers stay at version 1 (delta-rs and DuckDB read it). Later plain `curator optimize` runs
  cluster incrementally (only files written since).
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from spark_jobs.config import Config, ConfigError
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import is_delta, read_table, table_path
from spark_jobs.views import head_score_columns


def clustering_columns(spark: SparkSession, path: str) -> list[str]:
    """The table's liquid clustering keys (empty when it is not clustered)."""
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    cols = detail["clusteringColumns"] if detail is not None else None
    return list(cols or [])


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    zorder: list[str] | None = None,
    cluster_by: list[str] | None = None,
) -> Summary:
    """Z-order or liquid-cluster the scores table (see the module docstring for which)."""
    summary = Summary(job="optimize", run_id=new_run_id("optimize"), unit="files")
    path = table_path(cfg, "scores")
    if not is_delta(path):
        raise ConfigError(f"no scores table at {path}; run `curator embed` first")
    have = set(read_table(spark, cfg, "scores").columns)
    for flag, cols in (("--zorder", zorder), ("--cluster-by", cluster_by)):
        missing = [c for c in cols or [] if c not in have]
        if missing:
            raise ConfigError(f"{flag}: the scores table has no column(s) {missing}")
    current = clustering_columns(spark, path)
    table = f"delta.`{path}`"
    if cluster_by:
        if cluster_by != current:
            spark.sql(f"ALTER TABLE {table} CLUSTER BY ({', '.join(cluster_by)})")
        metrics = spark.sql(f"OPTIMIZE {table}{' FULL' if cluster_by != current else ''}")
        summary.extra.update(cluster_by=", ".join(cluster_by), reclustered=cluster_by != current)
    elif current:
        if zorder:
            raise ConfigError(
                f"--zorder: the scores table is liquid-clustered by ({', '.join(current)}), and "
                "Delta does not Z-order a clustered table; run `curator optimize` (incremental "
                "clustering) or `--cluster-by COLS` to change the keys"
            )
        metrics = spark.sql(f"OPTIMIZE {table}")
        summary.extra.update(cluster_by=", ".join(current), reclustered=False)
    else:
        cols = list(zorder or head_score_columns(cfg))
        if not cols:
            raise ConfigError("--zorder: no columns given and no classifier heads configured")
        missing = [c for c in cols if c not in have]
        if missing:
            raise ConfigError(
                f"--zorder: the scores table has no head column(s) {missing} yet; run "
                "`curator classify` (or `curator embed`) first, or name columns with --zorder"
            )
        metrics = spark.sql(f"OPTIMIZE {table} ZORDER BY ({', '.join(cols)})")
        summary.extra.update(zorder_by=", ".join(cols))
    m: dict[str, Any] = {}
    row = metrics.first()
    if row is not None and row["metrics"] is not None:
        m = row["metrics"].asDict()
    summary.rows_in = int(m.get("numFilesRemoved", 0) or 0)
    summary.rows_written = int(m.get("numFilesAdded", 0) or 0)
    summary.skipped = summary.rows_in - summary.rows_written
    return summary.finish()


if __name__ == "__main__":  # spark-submit spark_jobs/optimize.py ARGS
    from spark_jobs.cli import main

    main("optimize")
