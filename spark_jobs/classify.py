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

from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from curator_udfs.model_ids import model_id
from spark_jobs.config import Config
from spark_jobs.embed import (
    check_heads,
    describe_device,
    ensure_score_columns,
    nan_to_null,
    validate,
)
from spark_jobs.errors import worker_message
from spark_jobs.session import session_conf
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import (
    SCORES,
    SCORES_WRITE_CONF,
    ensure_table,
    is_delta,
    merge_counts,
    read_table,
    sql_list,
    table_path,
)


def run(spark: SparkSession, cfg: Config, *, all_rows: bool = False) -> Summary:
    """Fill (or with `all_rows`, recompute) the head columns of this model's scores rows."""
    from curator_udfs.embed_batches import classify_output_schema, make_classify_fn

    summary = Summary(job="classify", run_id=new_run_id("classify"), unit="embeddings")
    spec = validate(cfg)
    model = model_id(spec)
    columns = check_heads(spec, None)
    if not columns:  # `classifiers: []` is a choice, not an error: `curator run` goes on
        summary.extra.update(model=model, heads="-", images_decoded=0)
        summary.skip("no classifier heads configured")
        if is_delta(table_path(cfg, "scores")):
            summary.tables["scores"] = read_table(spark, cfg, "scores").count()
        return summary
    added = ensure_score_columns(spark, cfg, columns)
    summary.extra.update(
        model=model,
        device=describe_device(spark),
        heads=",".join(columns),
        columns_added=",".join(added) or "-",
        mode="all rows" if all_rows else "rows with a NULL head column",
        images_decoded=0,
    )
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
            with session_conf(spark, SCORES_WRITE_CONF):  # the MERGE rewrites embeddings too
                result = (
                    target.alias("t")
                    .merge(
                        scored.alias("s"),
                        f"t.model IN ({sql_list([model])}) AND t.sample_id = s.sample_id",
                    )
                    .whenMatchedUpdate(set=updates)
                    .execute()
                )
            updated = merge_counts(result)["num_updated_rows"]
        finally:
            scored.unpersist()
        summary.rows_written = updated
        summary.skipped = n - updated
    summary.finish()
    summary.tables["scores"] = read_table(spark, cfg, "scores").count()
    return summary


if __name__ == "__main__":  # spark-submit spark_jobs/classify.py ARGS
    from spark_jobs.cli import main

    main("classify")
