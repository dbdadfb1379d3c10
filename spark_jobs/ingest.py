"""Job 1, ingest: WebDataset tar shards → Delta tables `images`, `quarantine`, `shards`.

One Spark task per shard; shards already recorded in `shards` are skipped. Each batch of
shards commits `images` and `quarantine` with insert-only MERGEs and records the shards last
(an idempotent append where that is safe, spark_jobs.shard_record), so a crash at any point
followed by a rerun leaves every sample exactly once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

from pyspark import StorageLevel, inheritable_thread_target
from pyspark.sql import DataFrame, SparkSession

from curator_udfs.ingest_batches import INGEST_ROW_DDL, ingest_shard_rows
from curator_udfs.shard_listing import ShardFile, list_shards
from spark_jobs.config import Config, ConfigError, InputCfg, ingest_limits
from spark_jobs.file_sizing import coalesced
from spark_jobs.literal_frames import literal_frame
from spark_jobs.session import session_conf
from spark_jobs.shard_record import ShardRecorder
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import (
    IMAGES,
    QUARANTINE,
    SHARDS,
    add_missing_columns,
    conform,
    ensure_table,
    merge_insert_new,
    read_table,
    sql_list,
)


def recorded_shards(spark: SparkSession, cfg: Config) -> dict[str, str]:
    """shard_uri → status of every shard recorded in `shards`."""
    ensure_table(spark, cfg, SHARDS)
    done = read_table(spark, cfg, "shards").select("shard_uri", "status").collect()
    return {r.shard_uri: r.status for r in done}


def pending_shards(
    files: list[ShardFile], recorded: dict[str, str], *, retry_failed: bool
) -> list[ShardFile]:
    """The listed shards not yet recorded (failed ones too, with `retry_failed`)."""
    return [
        f for f in files if f.uri not in recorded or (retry_failed and recorded[f.uri] == "failed")
    ]


IMAGES_CODEC = "snappy"  # the Parquet codec of `images` (see images_write_conf)
# `images` columns whose values differ from sample to sample: no Parquet dictionary
UNIQUE_COLUMNS = ("sample_id", "key", "image_sha256", "caption", "meta")


def images_write_conf(cfg: Config) -> dict[str, str]:
    """Session settings that Delta's Parquet writer reads for `images`: row groups of about
    `ingest.row_group_bytes`, the size checked from the 10th row on (Parquet's default, the
    100th, would make a group of 100 large images before looking).

    Image bytes are compressed already: Snappy (in place of the session's zstd) and no
    dictionary for the `image` column, whose every value Parquet hashed before falling back
    to plain, save about a tenth of the JVM's CPU per sample for ~5 % larger files. Snappy,
    not LZ4_RAW: the RAPIDS plugin writes only Snappy and zstd, and the Delta checkpoint a
    commit writes inside this scope must stay readable by every Delta reader. The columns of
    one value per sample (UNIQUE_COLUMNS) get no dictionary either: it only ever filled up
    and fell back (about 5 % of the JVM's CPU, the files no larger without it)."""
    return {
        "parquet.block.size": str(cfg.ingest.row_group_bytes),
        "parquet.page.size.row.check.min": "10",
        "spark.sql.parquet.compression.codec": IMAGES_CODEC,
        **{f"parquet.enable.dictionary#{c}": "false" for c in ("image", *UNIQUE_COLUMNS)},
    }


def _batches(items: list[ShardFile], size: int) -> list[list[ShardFile]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def one_task_per_shard(spark: SparkSession, batch: list[ShardFile]) -> DataFrame:
    """(shard_uri, size, mtime) of `batch`, one row per partition, built in the JVM
    (spark_jobs.literal_frames: a Python RDD would run a job of Python tasks first)."""
    return literal_frame(
        spark,
        [(f.uri, f.size, f.mtime) for f in batch],
        [("shard_uri", "string"), ("size", "bigint"), ("mtime", "double")],
        partitions=len(batch),
    )


def ingest_batch(
    spark: SparkSession,
    cfg: Config,
    batch: list[ShardFile],
    run_id: str,
    summary: Summary,
    recorder: ShardRecorder,
    *,
    retried: bool = False,
) -> None:
    """Read one batch of shards (one task each) and commit it to the three tables.

    `retried`: some shard of the batch is recorded already (failed, retried), so its `shards`
    row is updated; otherwise the rows are only inserted (`recorder` says how)."""
    limits = ingest_limits(cfg)
    at = datetime.now(UTC)
    shards_df = one_task_per_shard(spark, batch)
    reference = cfg.ingest.bytes == "reference"
    rows = shards_df.mapInArrow(
        partial(ingest_shard_rows, limits=limits, run_id=run_id, at=at, reference=reference),
        INGEST_ROW_DDL,
    )
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        scope = f"t.shard_uri IN ({sql_list([f.uri for f in batch])})"
        # one row type for the three tables; `at` is each table's own timestamp column
        images = conform(
            rows.where("kind = 'image'").withColumnRenamed("at", "ingested_at"), IMAGES
        )
        quarantine = conform(
            rows.where("kind = 'quarantine'").withColumnRenamed("at", "quarantined_at"), QUARANTINE
        )
        shards = conform(
            rows.where("kind = 'shard'").withColumnRenamed("at", "ingested_at"), SHARDS
        )
        # the shard rows carry each shard's totals (images + quarantined = its rows); reading
        # them also materialises the cache, in one stage where an aggregate would take two
        stats = (
            rows.where("kind = 'shard'")
            .select("images", "quarantined", "bytes_read", "status", "byte_mode")
            .collect()
        )
        n_images = sum(int(r["images"] or 0) for r in stats)
        n_quarantined = sum(int(r["quarantined"] or 0) for r in stats)
        tar_bytes = sum(int(r["bytes_read"] or 0) for r in stats)
        # what the images write stores: the copied shards' bytes (reference mode copies the
        # images of compressed shards too), about their tar size
        copied = sum(int(r["bytes_read"] or 0) for r in stats if r["byte_mode"] == "copy")
        slots = spark.sparkContext.defaultParallelism
        # Delta may warn "Merge source has 0 rows in initial scan" here: a miscount of its
        # first scan, not a changed source (conf/spark/log4j2.properties, tests/test_ingest.py).
        with session_conf(spark, images_write_conf(cfg)):
            inserted_images = merge_insert_new(
                spark, cfg, IMAGES, coalesced(images, copied, parallelism=slots), scope=scope
            )
        inserted_q = 0
        if n_quarantined:  # an empty source would still cost a transaction's work
            inserted_q = merge_insert_new(
                spark, cfg, QUARANTINE, coalesced(quarantine, 0, parallelism=slots), scope=scope
            )
        # one file: the few shard rows are shuffled into one task (a coalesce would read
        # every cached block of the batch, image bytes and all, in that one task)
        recorder.record(shards.repartition(1), scope=scope, retried=retried)  # recorded last
    finally:
        rows.unpersist()
    read_in = n_images + n_quarantined
    summary.rows_in += read_in
    summary.rows_written += inserted_images
    summary.quarantined += inserted_q
    summary.skipped += read_in - inserted_images - inserted_q
    summary.extra["shards_ingested"] += len(batch)
    summary.extra["shards_failed"] += sum(r["status"] == "failed" for r in stats)
    summary.extra["shards_truncated"] += sum(r["status"] == "truncated" for r in stats)
    summary.extra["bytes_read"] += tar_bytes


def list_inputs(cfg: Config, inputs: list[str] | None = None) -> list[ShardFile]:
    """The shards of `input.shards` plus `--input`; checked before Spark starts.

    When `--input` is given and `input.shards` was left at its default, only `--input` counts.
    """
    configured = list(cfg.input.shards)
    if inputs and configured == InputCfg().shards:
        configured = []
    try:
        return list_shards(configured + list(inputs or []))
    except FileNotFoundError as exc:
        raise ConfigError(f"config key `input.shards` / --input: {exc}") from None


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    inputs: list[str] | None = None,
    files: list[ShardFile] | None = None,
) -> Summary:
    """Ingest every shard of `input.shards` (plus `inputs`) not ingested yet."""
    summary = Summary(job="ingest", run_id=new_run_id("ingest"), unit="samples")
    files = list_inputs(cfg, inputs) if files is None else files
    recorder = ShardRecorder(spark, cfg, summary.run_id)
    recorded = recorder.recorded()
    todo = pending_shards(files, recorded, retry_failed=cfg.ingest.retry_failed)
    # all three exist after a run, each with every column (a table from before a column,
    # caption signals, ...: NULLs there), also when no batch quarantines anything
    for tdef in (IMAGES, QUARANTINE, SHARDS):
        add_missing_columns(spark, cfg, tdef)
    summary.extra.update(
        shards_listed=len(files),
        shards_skipped=len(files) - len(todo),
        shards_ingested=0,
        shards_failed=0,
        shards_truncated=0,
        bytes_read=0,
    )
    for batch in _batches(todo, cfg.ingest.shards_per_batch):
        retried = any(f.uri in recorded for f in batch)
        ingest_batch(spark, cfg, batch, summary.run_id, summary, recorder, retried=retried)
    summary.extra["shard_records"] = f"{recorder.appended} appended, {recorder.merged} merged"
    mb = summary.extra["bytes_read"] / 1e6
    summary.finish()
    summary.extra["MB_per_s"] = round(mb / summary.seconds, 2) if summary.seconds else 0.0
    # three small metadata queries: side by side, not one after another
    logicals = ("images", "quarantine", "shards")
    with ThreadPoolExecutor(len(logicals)) as pool:
        # (inheritable: the count jobs keep the run's job group and description)
        count = inheritable_thread_target(spark)(
            lambda logical: read_table(spark, cfg, logical).count()
        )
        counts = pool.map(count, logicals)
        summary.tables.update(zip(logicals, counts, strict=True))
    return summary


if __name__ == "__main__":  # spark-submit spark_jobs/ingest.py ARGS
    from spark_jobs.cli import main

    main("ingest")
