"""Job 3, classify: re-score stored embeddings with the configured heads, decoding no image.

Reads `scores` rows of the configured model (`sample_id`, `embedding` only; never `images`),
runs the heads with `curator_udfs.embed_batches.make_classify_fn`, and updates the head columns
of those rows with one MERGE. Incremental by default: only rows with an embedding where some
configured head column is NULL (e.g. a head was just added, its column is created empty), and
only the NULL columns are filled.
After changing a head's weights, pass `--all` (`run(..., all_rows=True)`) to re-score every
row. Rerunning is safe: a MERGE update of the same values changes nothing.
"""

from __future__ import annotations

import sys
from functools import reduce
from typing import Annotated, Any

import typer
from pyspark import StorageLevel
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from spark_jobs.cli_options import ConfigOpt, JsonOpt, SetOpt, WarehouseOpt
from spark_jobs.config import Config, ConfigError
from spark_jobs.embed import (
    check_heads,
    describe_device,
    ensure_score_columns,
    model_id,
    nan_to_null,
    validate,
)
from spark_jobs.errors import worker_message
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import SCORES, ensure_table, last_metric, read_table, sql_list


def run(spark: SparkSession, cfg: Config, *, all_rows: bool = False) -> Summary:
    """Fill (or with `all_rows`, recompute) the head columns of this model's scores rows."""
    from curator_udfs.embed_batches import classify_output_schema, make_classify_fn

    summary = Summary(job="classify", run_id=new_run_id("classify"), unit="embeddings")
    spec = validate(cfg)
    model = model_id(spec)
    columns = check_heads(spec, None)
    added = ensure_score_columns(spark, cfg, columns)
    summary.extra.update(
        model=model,
        device=describe_device(spark),
        heads=",".join(columns),
        columns_added=",".join(added) or "-",
        mode="all rows" if all_rows else "rows with a NULL head column",
        images_decoded=0,
    )
    if not columns:
        raise ConfigError("config key `classifiers`: no heads configured, nothing to score")

    rows = read_table(spark, cfg, "scores").where(
        (F.col("model") == model) & F.col("embedding").isNotNull()
    )
    if not all_rows:
        rows = rows.where(reduce(lambda a, b: a | b, [F.col(c).isNull() for c in columns]))
    dims = rows.agg(F.count(F.lit(1)).alias("n"), F.max("embedding_dim").alias("dim")).first()
    assert dims is not None  # a global aggregate has exactly one row
    n = int(dims["n"])
    summary.rows_in = n
    if n:
        check_heads(spec, int(dims["dim"]))  # stored width vs heads, before any task runs
        cores = spark.sparkContext.defaultParallelism
        scored = (
            rows.select("sample_id", "embedding")
            .repartition(max(1, min(cores, n)), "sample_id")
            .mapInPandas(make_classify_fn(spec), classify_output_schema(spec))
        )
        scored = nan_to_null(scored, columns).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            try:
                scored.count()
            except Exception as exc:
                msg = worker_message(exc)
                if msg:
                    raise RuntimeError(f"classify failed in a Python worker: {msg}") from exc
                raise
            # Incremental: fill only the NULL columns, keep existing scores exactly as they are.
            updates: dict[str, str | Column] = {
                c: f"s.{c}" if all_rows else f"coalesce(t.{c}, s.{c})" for c in columns
            }
            target = ensure_table(spark, cfg, SCORES)
            last = target.history(1).select("version").first()
            assert last is not None  # ensure_table: the table has at least one commit
            before = int(last["version"])
            (
                target.alias("t")
                .merge(
                    scored.alias("s"),
                    f"t.model IN ({sql_list([model])}) AND t.sample_id = s.sample_id",
                )
                .whenMatchedUpdate(set=updates)
                .execute()
            )
            updated = last_metric(target, "numTargetRowsUpdated", since=before)
        finally:
            scored.unpersist()
        summary.rows_written = updated
        summary.skipped = n - updated
    summary.finish()
    summary.tables["scores"] = read_table(spark, cfg, "scores").count()
    return summary


def register(app: Any) -> None:
    """Add `curator classify` to the CLI."""
    from spark_jobs.cli import resolve_config, run_job

    def classify(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        warehouse: WarehouseOpt = None,
        as_json: JsonOpt = False,
        all_rows: Annotated[
            bool, typer.Option("--all", help="re-score every row (e.g. after new head weights)")
        ] = False,
    ) -> None:
        """Re-score stored embeddings with the configured heads (no image is decoded)."""
        cfg = resolve_config(config, set_, warehouse, validate)
        run_job("classify", cfg, as_json, lambda spark, c: run(spark, c, all_rows=all_rows))

    app.command()(classify)


def main(argv: list[str] | None = None) -> None:
    """`spark-submit spark_jobs/classify.py --config FILE [...]`."""
    from spark_jobs.cli import main_for

    main_for("classify", argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
