"""Job 1, ingest: WebDataset tar shards → Delta tables `images`, `quarantine`, `shards`.

The shards of a batch are read in one task per core or per 128 MiB of image bytes, whichever
is more (spark_jobs.file_sizing), never more than one per shard; shards already recorded in
`shards` are skipped. Each batch of shards commits `images` and `quarantine` with insert-only
MERGEs and records the shards last (an idempotent append where that is safe,
spark_jobs.shard_record), so a crash at any point followed by a rerun leaves every sample
exactly once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import cast

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import inheritable_thread_target
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame, SparkSession

from curator_udfs.ingest_batches import (
    INGEST_ROW_DDL,
    StreamList,
    image_rows_only,
    rows_from_ipc,
)
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


def side_rows(batch: list[ShardFile], streams: list[bytes]) -> pa.Table:
    """The quarantine and shard rows of one batch, once each, checked complete: every shard of
    the batch ends with its own shard row."""
    rows = rows_from_ipc(streams)
    shard_rows = rows.filter(pc.equal(rows.column("kind"), "shard"))
    seen = set(shard_rows.column("shard_uri").to_pylist())
    missing = [f.uri for f in batch if f.uri not in seen]
    if missing:  # their images may be in; rerunning inserts only what is missing
        raise RuntimeError(
            f"ingest: the outcome of {len(missing)} shard(s) never reached the driver "
            f"(first: {missing[0]}); they are not recorded, so rerunning the job finishes them"
        )
    return rows


def copied_bytes(batch: list[ShardFile], *, reference: bool) -> int:
    """About what the batch's `images` write stores: its shards' tar bytes where images are
    copied (reference mode copies only those of compressed shards)."""
    return sum(f.size for f in batch if not reference or not f.uri.lower().endswith(".tar"))


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
    """Read one batch of shards and commit it to the three tables.

    The image rows go straight from the reading tasks into the `images` MERGE; each task's
    quarantine and shard rows (a few per shard) come back to the driver with its result
    (curator_udfs.ingest_batches.image_rows_only), where they are merged and recorded after.
    Caching the batch's rows to feed the three writes instead cost about a quarter of the time.
    `retried`: some shard of the batch is recorded already (failed, retried), so its `shards`
    row is updated; otherwise the rows are only inserted (`recorder` says how)."""
    reference = cfg.ingest.bytes == "reference"
    side = spark.sparkContext.accumulator([], cast("AccumulatorParam[list[bytes]]", StreamList()))
    read = partial(image_rows_only, side=side, limits=ingest_limits(cfg), run_id=run_id,
                   at=datetime.now(UTC), reference=reference)  # fmt: skip
    rows = one_task_per_shard(spark, batch).mapInArrow(read, INGEST_ROW_DDL)
    scope = f"t.shard_uri IN ({sql_list([f.uri for f in batch])})"
    images = conform(rows.withColumnRenamed("at", "ingested_at"), IMAGES)
    slots = spark.sparkContext.defaultParallelism
    # the coalesce also sets how many tasks read the shards (nothing is cached in between;
    # an insert-only MERGE reads its source once and does not materialise it)
    try:
        with session_conf(spark, images_write_conf(cfg)):
            inserted_images = merge_insert_new(
                spark,
                cfg,
                IMAGES,
                coalesced(images, copied_bytes(batch, reference=reference), parallelism=slots),
                scope=scope,
            )
    finally:  # Spark keeps every accumulator (in a notebook, for the session): not its rows
        streams, side.value = side.value, []
    others = side_rows(batch, streams)
    # one partition, one file per table (a local table is split over the cluster's cores)
    local = spark.createDataFrame(others).coalesce(1)
    stats = others.filter(pc.equal(others.column("kind"), "shard")).to_pylist()
    n_images = sum(int(r["images"] or 0) for r in stats)
    n_quarantined = sum(int(r["quarantined"] or 0) for r in stats)
    inserted_q = 0
    if n_quarantined:  # an empty source would still cost a transaction's work
        quarantine = local.where("kind = 'quarantine'").withColumnRenamed("at", "quarantined_at")
        inserted_q = merge_insert_new(spark, cfg, QUARANTINE, conform(quarantine, QUARANTINE),
                                      scope=scope)  # fmt: skip
    shards = local.where("kind = 'shard'").withColumnRenamed("at", "ingested_at")
    recorder.record(conform(shards, SHARDS), scope=scope, retried=retried)  # recorded last
    read_in = n_images + n_quarantined
    summary.rows_in += read_in
    summary.rows_written += inserted_images
    summary.quarantined += inserted_q
    summary.skipped += read_in - inserted_images - inserted_q
    summary.extra["shards_ingested"] += len(batch)
    summary.extra["shards_failed"] += sum(r["status"] == "failed" for r in stats)
    summary.extra["shards_truncated"] += sum(r["status"] == "truncated" for r in stats)
    summary.extra["bytes_read"] += sum(int(r["bytes_read"] or 0) for r in stats)


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
