"""What embed reads: the pending images, in the partitions they are stored in.

The image bytes never cross the network. The pending set is an ids-only anti-join (`images`
`sample_id, shard_uri` against the model's `scores` ids: only id columns are shuffled). The
images themselves are then read where they lie: directly when the model has no `scores` rows
yet (every image is pending, no join at all), otherwise with a broadcast semi-join of the
pending ids (the scan of `images` streams through a hash lookup; only the ids are broadcast).
A broadcast must fit in memory, so at most `embed.broadcast_ids` ids go in one: beyond that
the pending set is processed in batches of whole shards (`shard_batches`), each batch its own
broadcast, scan and write. Every batch also filters `images` on its shards, which lets Delta
skip the files of other shards (ingest writes a shard's images together).

Without a repartition the task count comes from the files read, so `split_bytes` sizes
`spark.sql.files.maxPartitionBytes` for the read: the batch's share of the table's bytes over
the tasks `num_tasks` wants (every core busy, a few forward batches each). Parquet splits at
row-group boundaries, so a table with fewer row groups than that gives fewer tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import Config
from spark_jobs.references import Unreadable, image_columns
from spark_jobs.tables import read_table, table_path

SPLIT_CONF = "spark.sql.files.maxPartitionBytes"
MIN_SPLIT = 64 * 1024  # bytes: below this a task's fixed cost dominates
# Pending shards up to this many are also filtered by name (Delta file skipping); more would
# make a plan of a huge IN list, and the semi-join alone still selects the right rows.
MAX_SHARD_FILTER = 10_000


@dataclass(frozen=True)
class Batch:
    """Whole shards whose pending images go through one broadcast, scan and write."""

    shards: tuple[str | None, ...]
    rows: int
    every_shard: bool  # the batch is the whole pending set (no shard filter needed)


@dataclass(frozen=True)
class Pending:
    """The pending ids (persisted: sample_id, shard_uri) read at scores version `version`."""

    ids: DataFrame
    rows: int
    per_shard: tuple[tuple[str | None, int], ...]
    model_has_rows: bool
    version: int
    retry_errors: bool
    image_columns: tuple[str, ...] = ("image",)  # with the reference columns in reference mode
    unreadable: Unreadable | None = None  # left out (reference mode: their shard changed)


def pending_ids(
    spark: SparkSession,
    cfg: Config,
    model: str,
    version: int,
    *,
    retry_errors: bool = False,
    unreadable: Unreadable | None = None,
) -> Pending:
    """The ids of images without a `scores` row for `model` at scores `version` (or with only
    an error row, for `retry_errors`), persisted, with their count per shard; without the
    `unreadable` samples (reference mode: their shard changed)."""
    images = read_table(spark, cfg, "images").select("sample_id", "shard_uri")
    scores = spark.read.format("delta").option("versionAsOf", version)
    done = scores.load(table_path(cfg, "scores")).where(F.col("model") == model)
    if retry_errors:
        done = done.where(F.col("error").isNull())
    has_rows = done.limit(1).count() > 0
    ids = images.join(done.select("sample_id"), "sample_id", "left_anti") if has_rows else images
    if unreadable is not None:
        ids = unreadable.without(ids)
    ids = ids.persist()
    counts = ids.groupBy("shard_uri").count().collect()
    per_shard = tuple(sorted(((r["shard_uri"], int(r["count"])) for r in counts), key=_shard_key))
    rows = sum(c for _, c in per_shard)
    cols = tuple(image_columns(spark, cfg))
    return Pending(ids, rows, per_shard, has_rows, version, retry_errors, cols, unreadable)


def _shard_key(item: tuple[str | None, int]) -> str:
    return "" if item[0] is None else "\x01" + item[0]


def shard_batches(per_shard: tuple[tuple[str | None, int], ...], limit: int) -> list[Batch]:
    """Consecutive shards, at most `limit` pending ids a batch (a bigger shard: alone)."""
    batches: list[Batch] = []
    shards: list[str | None] = []
    rows = 0
    for shard, n in per_shard:
        if shards and rows + n > limit:
            batches.append(Batch(tuple(shards), rows, False))
            shards, rows = [], 0
        shards.append(shard)
        rows += n
    if shards:
        batches.append(Batch(tuple(shards), rows, not batches))
    return batches


def _in_shards(shards: tuple[str | None, ...]) -> F.Column:
    names = [s for s in shards if s is not None]
    cond = F.col("shard_uri").isin(names)
    return cond | F.col("shard_uri").isNull() if None in shards else cond


def batch_images(spark: SparkSession, cfg: Config, pending: Pending, batch: Batch) -> DataFrame:
    """`sample_id, image, caption` of the batch's pending images, read without a shuffle of
    the image column (see the module docstring)."""
    images = read_table(spark, cfg, "images")
    if pending.model_has_rows:  # the semi-join selects; the shard filter only prunes files
        by_shard = len(batch.shards) <= MAX_SHARD_FILTER
    else:  # no join: every image of the batch's shards is pending
        by_shard = not batch.every_shard
    if by_shard:
        images = images.where(_in_shards(batch.shards))
    if pending.model_has_rows:
        ids = pending.ids
        if not batch.every_shard:
            ids = ids.where(_in_shards(batch.shards))
        images = images.join(F.broadcast(ids.select("sample_id")), "sample_id", "left_semi")
    elif pending.unreadable is not None:  # no join to leave them out
        images = pending.unreadable.without(images)
    return images.select(*dict.fromkeys(("sample_id", *pending.image_columns, "caption")))


def split_bytes(spark: SparkSession, cfg: Config, rows: int, tasks: int) -> int:
    """`maxPartitionBytes` giving about `tasks` read tasks for `rows` of the images table: its
    size × rows / its row count / tasks (ingest writes images of a shard together, so a
    batch's files are about its share of the bytes)."""
    path = table_path(cfg, "images").replace("`", "``")
    size = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").select("sizeInBytes").first()
    total = read_table(spark, cfg, "images").count()  # Delta answers from its stats
    if size is None or not total:
        return MIN_SPLIT
    share = int(size["sizeInBytes"] or 0) * min(rows, total) / total
    return max(MIN_SPLIT, math.ceil(share / max(tasks, 1)))
