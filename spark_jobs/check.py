"""`curator check`: verify the accounting invariants across the tables.

Nothing lost, nothing twice: every shard's samples are in `images` or `quarantine` exactly
once, every image has a shard, every score an image, every duplicate is an image and points at
a kept sample that exists, every curated row is an image, the last export holds exactly the
curated rows of the version it read, and no key is duplicated in any table. Each failed
invariant is reported with a count and a few example keys; the command exits 1 when any fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.byte_ranges import UNREADABLE_REASONS
from spark_jobs.config import Config
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import is_delta, read_table, table_path


@dataclass
class Invariant:
    """One checked statement: how many rows break it, with examples."""

    name: str
    violations: int
    examples: list[str] = field(default_factory=list)


class CheckFailed(Exception):
    """Some invariants do not hold (the message lists them)."""


def _table(spark: SparkSession, cfg: Config, logical: str) -> DataFrame | None:
    return read_table(spark, cfg, logical) if is_delta(table_path(cfg, logical)) else None


def _count(df: DataFrame, name: str, col: str) -> Invariant:
    rows = df.select(col).limit(5).collect()
    return Invariant(name, df.count(), [str(r[0]) for r in rows])


def invariants(spark: SparkSession, cfg: Config) -> list[Invariant]:
    """Evaluate every invariant whose tables exist."""
    names = ("shards", "images", "quarantine", "scores", "duplicates", "curated", "exported",
             "dedup_centroids")  # fmt: skip
    t = {n: _table(spark, cfg, n) for n in names}
    out: list[Invariant] = []
    shards, images, quarantine = t["shards"], t["images"], t["quarantine"]
    for name, keys in (
        ("images", ("sample_id",)),
        ("shards", ("shard_uri",)),
        ("quarantine", ("shard_uri", "ordinal")),
        ("curated", ("sample_id",)),
        ("exported", ("sample_id",)),
        ("dedup_centroids", ("model", "centroid_id")),  # one centroid set per model
    ):
        df = t[name]
        if df is not None:
            dup = df.groupBy(*keys).count().where("count > 1")
            out.append(_count(dup, f"{name}: {', '.join(keys)} unique", keys[0]))
    for child, parent, key, name in (
        ("images", "shards", "shard_uri", "every image has a shard"),
        ("scores", "images", "sample_id", "every score has an image"),
        ("duplicates", "images", "sample_id", "every duplicate is an image"),
        ("curated", "images", "sample_id", "every curated row is an image"),
    ):
        c, p = t[child], t[parent]
        if c is not None and p is not None:
            out.append(_count(c.join(p.select(key), key, "left_anti"), name, "sample_id"))
    if shards is not None and images is not None and quarantine is not None:
        per_shard = (
            shards.select("shard_uri", "samples")
            .join(
                images.groupBy("shard_uri").agg(F.countDistinct("sample_id").alias("i")),
                "shard_uri",
                "left",
            )
            .join(  # samples quarantined after ingest (reference mode) are still in images
                quarantine.where(~F.col("reason").isin(*UNREADABLE_REASONS))
                .groupBy("shard_uri")
                .count()
                .withColumnRenamed("count", "q"),
                "shard_uri",
                "left",
            )
            .where("samples != coalesce(i, 0) + coalesce(q, 0)")
        )
        out.append(
            _count(per_shard, "shard samples = images + quarantined, exactly once", "shard_uri")
        )
    scores = t["scores"]
    if scores is not None:
        dup = scores.groupBy("sample_id", "model").count().where("count > 1")
        out.append(_count(dup, "scores: one row per image and model", "sample_id"))
    dups = t["duplicates"]
    if dups is not None and images is not None:
        kept_missing = dups.join(
            images.withColumnRenamed("sample_id", "duplicate_of").select("duplicate_of"),
            "duplicate_of",
            "left_anti",
        )
        out.append(_count(kept_missing, "every duplicate_of exists in images", "sample_id"))
        d, r = dups.alias("d"), dups.select("method", "eps", "sample_id").alias("r")
        kept_removed = d.join(
            r,
            (F.col("d.duplicate_of") == F.col("r.sample_id"))
            & (F.col("d.method") == F.col("r.method"))
            & F.col("d.eps").eqNullSafe(F.col("r.eps")),
            "left_semi",
        ).select("d.sample_id")
        out.append(_count(kept_removed, "every duplicate_of is a kept sample", "sample_id"))
    if t["exported"] is not None:
        unreadable = None
        if images is not None and quarantine is not None and "ordinal" in images.columns:
            lost = quarantine.where(F.col("reason").isin(*UNREADABLE_REASONS))
            unreadable = images.join(lost.select("shard_uri", "ordinal"), ["shard_uri", "ordinal"])
        out.extend(_export_invariants(spark, cfg, t["exported"], unreadable))
    return out


def _export_invariants(
    spark: SparkSession, cfg: Config, exported: DataFrame, unreadable: DataFrame | None
) -> list[Invariant]:
    """The last export holds exactly the rows of the `curated` version it read (when known),
    but the `unreadable` images (reference mode: quarantined as their shard changed)."""
    versions = [r[0] for r in exported.select("curated_version").distinct().collect()]
    if len(versions) != 1 or versions[0] is None or not is_delta(table_path(cfg, "curated")):
        return []  # an export of a DataFrame (no curated version) has nothing to compare with
    try:
        source = (
            spark.read.format("delta")
            .option("versionAsOf", int(versions[0]))
            .load(table_path(cfg, "curated"))
            .select("sample_id")
        )
        source.schema  # noqa: B018 - resolves the version now (vacuumed away: nothing to check)
    except Exception:  # noqa: BLE001
        return []
    if unreadable is not None:
        source = source.join(unreadable.select("sample_id"), "sample_id", "left_anti")
    return [
        _count(
            exported.join(source, "sample_id", "left_anti"),
            "every exported row is a curated row",
            "sample_id",
        ),
        _count(
            source.join(exported, "sample_id", "left_anti"),
            "every curated row was exported",
            "sample_id",
        ),
    ]


def run(spark: SparkSession, cfg: Config) -> Summary:
    """Check the invariants; raise CheckFailed (exit 1) listing the broken ones."""
    summary = Summary(job="check", run_id=new_run_id("check"), unit="invariants")
    results = invariants(spark, cfg)
    summary.rows_in = len(results)
    summary.rows_written = sum(1 for r in results if r.violations == 0)
    for r in results:
        summary.extra[r.name] = "ok" if r.violations == 0 else f"{r.violations} violations"
    summary.skipped = len(results) - summary.rows_written
    summary.finish()
    broken = [r for r in results if r.violations]
    if broken:
        lines = [
            f"{r.name}: {r.violations} violations, e.g. {', '.join(r.examples)}" for r in broken
        ]
        raise CheckFailed("; ".join(lines))
    return summary


if __name__ == "__main__":  # spark-submit spark_jobs/check.py ARGS
    from spark_jobs.cli import main

    main("check")
