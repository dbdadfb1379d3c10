"""Reference mode on the driver: which images must be read from their shards, and which can
no longer be.

A stage that needs image bytes (embed, phash, export, the report) asks `image_columns` for
what to select: in a warehouse with reference-mode shards that includes the columns the
executor-side reader (curator_udfs.byte_ranges) needs. Before it runs, `quarantine_changed` stats
every reference-mode shard (a Spark job, one row per shard), quarantines the samples of those
whose size or mtime changed since ingest (reason `shard_changed`, or `shard_unreadable` when
the file is gone) and removes them from the stage's input: they are never processed from the
wrong bytes. A range that still does not hash to the recorded sha256 becomes that row's error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.byte_ranges import REFERENCE_COLUMNS, fill_images, shard_changes
from spark_jobs.config import Config
from spark_jobs.tables import (
    QUARANTINE,
    conform,
    is_delta,
    merge_insert_new,
    read_table,
    table_path,
)

CHANGES_DDL = "shard_uri STRING, reason STRING, detail STRING"


def _reference_shards(spark: SparkSession, cfg: Config) -> DataFrame | None:
    if not is_delta(table_path(cfg, "shards")):
        return None
    shards = read_table(spark, cfg, "shards")
    if "byte_mode" not in shards.columns:  # a table from before reference mode
        return None
    return shards.where(F.col("byte_mode") == "reference")


def has_references(spark: SparkSession, cfg: Config) -> bool:
    """Whether any ingested shard keeps its images' bytes (reference mode)."""
    shards = _reference_shards(spark, cfg)
    return shards is not None and shards.limit(1).count() > 0


def image_columns(spark: SparkSession, cfg: Config) -> list[str]:
    """The `images` columns a stage reading image bytes selects: `image`, plus the reference
    columns when the warehouse has reference-mode shards."""
    return ["image", *REFERENCE_COLUMNS] if has_references(spark, cfg) else ["image"]


@dataclass(frozen=True)
class Unreadable:
    """The samples of reference-mode shards that changed since ingest (quarantined)."""

    ids: DataFrame | None  # sample_id; None when no shard changed
    shards: int
    quarantined: int  # new quarantine rows of this run

    def summary(self) -> dict[str, int]:
        """Summary fields (none outside reference mode)."""
        if self.ids is None and not self.shards:
            return {}
        return {"shards_changed": self.shards, "samples_quarantined": self.quarantined}

    def without(self, df: DataFrame) -> DataFrame:
        """`df` (with sample_id) without these samples."""
        return df if self.ids is None else df.join(self.ids, "sample_id", "left_anti")


def quarantine_changed(spark: SparkSession, cfg: Config, run_id: str) -> Unreadable:
    """Stat every reference-mode shard; quarantine the samples of those that changed since
    ingest (idempotent: a sample is quarantined once) and return them."""
    shards = _reference_shards(spark, cfg)
    if shards is None or shards.limit(1).count() == 0:  # copy mode: no job on the executors
        return Unreadable(None, 0, 0)
    stats = shards.select("shard_uri", "size", "mtime")
    parts = max(1, min(spark.sparkContext.defaultParallelism, 64))
    changed = stats.repartition(parts).mapInPandas(shard_changes, CHANGES_DDL).collect()
    if not changed:
        return Unreadable(None, 0, 0)
    lost = spark.createDataFrame([tuple(r) for r in changed], CHANGES_DDL)
    images = read_table(spark, cfg, "images").where(F.col("image").isNull())
    images = images.join(F.broadcast(lost), "shard_uri")
    rows = images.select(
        "shard_uri",
        "ordinal",
        "key",
        F.lit(None).cast("string").alias("member"),
        "reason",
        F.concat(F.lit("after ingest: "), F.col("detail")).alias("detail"),
        F.col("image_bytes").alias("size"),
        F.lit(datetime.now(UTC)).cast("timestamp").alias("quarantined_at"),
        F.lit(run_id).alias("run_id"),
    )
    new = merge_insert_new(spark, cfg, QUARANTINE, conform(rows, QUARANTINE))
    return Unreadable(images.select("sample_id"), len(changed), new)


def image_bytes(images: DataFrame, ids: list[str]) -> dict[str, bytes | None]:
    """The bytes of a few images (`ids`) on the driver, read from the shard where `images`
    holds only a reference (None where they cannot be read): for report thumbnails."""
    if not ids:
        return {}
    cols = [c for c in ("sample_id", "image", *REFERENCE_COLUMNS) if c in images.columns]
    rows = images.where(F.col("sample_id").isin(ids)).select(*dict.fromkeys(cols)).collect()
    frame = pd.DataFrame([r.asDict() for r in rows], columns=list(dict.fromkeys(cols)))
    filled = fill_images(frame)
    return {
        str(s): (None if b is None else bytes(b))
        for s, b in zip(filled["sample_id"], filled["image"], strict=True)
    }
