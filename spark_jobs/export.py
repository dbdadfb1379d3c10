"""Job 6, export: `curated` (joined back to `images` for the bytes) → WebDataset shards.

Deterministic: samples are ordered by sample_id and packed into shards from their sizes
(`export.samples_per_shard`, `export.max_shard_bytes`), so the same `curated` gives the same
shards byte for byte. Shards are split into contiguous ranges, one Spark task
per range; each task writes its shards with curator_udfs.export_shards (to `NNNNN.tar.tmp`,
then renamed). The member key of a sample is its sample_id (hex, safe by construction); the
original key and shard are in its `.json`. `manifest.json` is removed when an export starts
and written last, after leftovers (`*.tmp`, shards of an earlier export that are not part of
this one) are removed, so a directory with a manifest is complete and matches it.

Each export also overwrites the `exported` table (one transaction, before the manifest is
written): every sample's shard file and 0-based position in it, which lineage (`curator why`,
the `fates` view) reads. `export_frame` writes any DataFrame the same way (the Python API's
`ds.to_webdataset`).

The plan is computed in Spark, never on the driver (shard_plan): tasks pack the samples'
(sample_id, sizes) rows in sample_id order, in one range up to PLAN_RANGE_ROWS samples, else
in ranges of sample_id prefixes side by side; the driver gets one row per range, and
`exported` is written from the plan frame.

Executors write to `export.output` directly, so on a cluster it must be a path every executor
sees (a shared or mounted file system) or an object-store prefix (`s3://bucket/out`,
`s3a://...`). There, with no rename, each shard is uploaded in one PUT to its final key,
leftovers are deleted, and the manifest is PUT last: see write_manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.byte_ranges import filled_frames
from curator_udfs.export_shards import (
    PLAN_SCHEMA,
    plan_frames,
    remove_leftovers,
    write_shard_range,
)
from curator_udfs.shard_listing import is_object_store, url_to_fs
from curator_udfs.wds_writer import SHARD_NAME_FORMAT, shard_name
from spark_jobs.config import Config, ConfigError
from spark_jobs.paths import StoreURI
from spark_jobs.references import image_columns, quarantine_changed
from spark_jobs.session import ARROW_BATCH_CONF, session_conf
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import EXPORTED, ensure_table, is_delta, read_table, table_path

if TYPE_CHECKING:
    from pyspark import RDD
    from pyspark.sql import Row

MANIFEST = "manifest.json"


def output_dir(cfg: Config, output: str | None = None) -> Path | StoreURI:
    """`--output` or `export.output`: an absolute local path, or an `s3://`/`s3a://` prefix."""
    raw = (output or cfg.export.output).removeprefix("file://")
    if is_object_store(raw):
        if not raw.split("://", 1)[1].strip("/"):
            raise ConfigError(f"config key `export.output`: {raw!r} names no bucket")
        return StoreURI(raw)
    if "://" in raw:
        raise ConfigError(
            f"config key `export.output`: {raw!r}: use a local or mounted path, or an "
            "s3:// or s3a:// URI"
        )
    return Path(raw).expanduser().resolve()


def write_manifest(out: Path | StoreURI, manifest: dict[str, Any]) -> None:
    """Write `manifest.json`, the commit point of an export: it is written last.

    An export first deletes the manifest, then writes its shards (locally write-then-rename;
    on object storage one PUT per shard to its final key), deletes leftovers of earlier
    exports, and only then writes the manifest (locally `.tmp` + rename, on object storage one
    PUT). So a reader that finds no `manifest.json` knows the export is incomplete (still
    running, or crashed: rerun it, which rewrites the same shard names with the same bytes and
    no duplicates); with a manifest, the directory holds exactly the shards it lists.
    """
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if isinstance(out, Path):
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / MANIFEST)
        return
    fs, key = url_to_fs(str(out / MANIFEST))
    fs.pipe_file(key, text.encode("utf-8"))


def _start_export(out: Path | StoreURI) -> None:
    """Create the directory (local) and delete the manifest: no commit point until the end."""
    if isinstance(out, Path):
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
        return
    fs, key = url_to_fs(str(out / MANIFEST))
    try:
        fs.rm_file(key)
    except FileNotFoundError:
        pass


PLAN_RANGE_ROWS = 2_000_000  # samples per planning range, about (one task packs a range)
PLAN_ARROW_BATCH = 65_536  # rows per Arrow batch into the planning tasks (4 numbers and an id)


@dataclass(frozen=True)
class ShardPlan:
    """Every sample's shard and position (`rows`: sample_id, _shard, _pos, read from the
    persisted per-range plan in `held`) and the totals; `unpersist()` when done."""

    rows: DataFrame
    samples: int
    shards: int
    held: tuple[DataFrame, ...]

    def unpersist(self) -> None:
        """Drop the persisted frames."""
        for df in self.held:
            df.unpersist()


def range_digits(samples: int, rows_per_range: int) -> int:
    """How many leading characters of sample_id name a planning range: none (one range) up to
    `rows_per_range` samples, else enough hex digits for ranges of about that many."""
    if rows_per_range < 1:
        raise ValueError(f"rows_per_range must be >= 1, got {rows_per_range}")
    digits = 0
    while samples > rows_per_range * 16**digits:
        digits += 1
    return digits


def shard_plan(
    df: DataFrame,
    samples_per_shard: int,
    max_shard_bytes: int | None,
    *,
    rows_per_range: int | None = None,
) -> ShardPlan:
    """The greedy plan over the rows of `df` in sample_id order, made in Spark from their byte
    sizes (only sizes travel, never the bytes; nothing per sample reaches the driver).

    Up to `rows_per_range` (default PLAN_RANGE_ROWS) samples it is one range packed by one
    task: the plan of the whole sorted list. Above, the samples are split into ranges by the
    first characters of their sample_id (hex: ranges of about `rows_per_range`), each packed by
    the task holding it (curator_udfs.export_shards.plan_frames), and each range's shards
    numbered after the previous ranges' (a range's last shard may be short). Deterministic: the
    ranges and the plan depend only on the rows. A row without a sample_id is a ConfigError."""

    def size(col: str, fn: Any) -> Column:
        return F.coalesce(fn(F.col(col)), F.lit(0)) if col in df.columns else F.lit(0)

    img = (
        size("image_bytes", lambda c: c)
        if "image_bytes" in df.columns
        else size("image", F.octet_length)
    )
    sizes = df.select(
        "sample_id",
        img.cast("long").alias("img"),
        size("caption", F.octet_length).cast("long").alias("txt"),
        size("meta", F.octet_length).cast("long").alias("meta"),
    ).persist(StorageLevel.MEMORY_AND_DISK)  # `df` is computed once for the count and the plan
    counted = sizes.agg(
        F.count(F.lit(1)).alias("n"), F.count_if(F.col("sample_id").isNull()).alias("nulls")
    ).first()
    n, nulls = (int(counted["n"]), int(counted["nulls"] or 0)) if counted else (0, 0)
    if nulls:
        sizes.unpersist()
        raise ConfigError(
            f"export: {nulls} rows have no sample_id, which names a sample's members in the "
            "shards: give every row one (or filter those rows out) and export again"
        )
    limit = PLAN_RANGE_ROWS if rows_per_range is None else rows_per_range
    digits = range_digits(n, limit)
    key = F.substring("sample_id", 1, digits) if digits else F.lit("")
    keyed = sizes.withColumn("_range", key)
    parts = min(16**digits, keyed.sparkSession.sparkContext.defaultParallelism * 4)
    keyed = keyed.repartition(parts, "_range") if digits else keyed.repartition(1)
    pack = partial(
        plan_frames, samples_per_shard=samples_per_shard, max_shard_bytes=max_shard_bytes
    )
    local = keyed.sortWithinPartitions("_range", "sample_id").mapInPandas(pack, PLAN_SCHEMA)
    local = local.persist(StorageLevel.MEMORY_AND_DISK)
    # the planning pass runs here (it fills the cache): size-only rows, so Arrow batches far
    # larger than the image-sized ones the session is set up for
    with session_conf(keyed.sparkSession, {ARROW_BATCH_CONF: str(PLAN_ARROW_BATCH)}):
        per_range = (
            local.groupBy("_range")
            .agg(F.count(F.lit(1)).alias("n"), F.max("_local").alias("last"))
            .collect()  # one row per range: at most 16 ** digits
        )
    offsets, shards, samples = [], 0, 0
    for r in sorted(per_range, key=lambda r: r["_range"]):
        offsets.append((r["_range"], shards))
        shards += int(r["last"]) + 1
        samples += int(r["n"])
    first = local.sparkSession.createDataFrame(offsets, "_range STRING, _first INT")
    rows = local.join(F.broadcast(first), "_range").select(
        "sample_id", (F.col("_local") + F.col("_first")).alias("_shard"), "_pos"
    )
    return ShardPlan(rows=rows, samples=samples, shards=shards, held=(local, sizes))


def task_column(n_shards: int, n_tasks: int) -> Column:
    """The writing task of each `_shard` (curator_udfs.export_shards.task_of_shard, in SQL)."""
    return F.expr(f"CAST((CAST(_shard AS BIGINT) * {n_tasks}) DIV {max(n_shards, 1)} AS INT)")


def export_frame(
    spark: SparkSession,
    cfg: Config,
    df: DataFrame,
    output: str | None = None,
    *,
    run_id: str | None = None,
    record: bool = True,
    source: dict[str, Any] | None = None,
    fail_at_shard: int | None = None,
) -> Summary:
    """Write the rows of `df` (sample_id + curated columns) as WebDataset shards + manifest.

    The image bytes come from `df`'s `image` column, else from `images` by sample_id. With
    `record`, the `exported` table is overwritten with every sample's shard and position.
    """
    summary = Summary(job="export", run_id=run_id or new_run_id("export"), unit="samples")
    if "sample_id" not in df.columns:
        raise ConfigError(f"export: the frame has no sample_id column (columns: {df.columns})")
    out = output_dir(cfg, output)
    _start_export(out)  # no manifest until this export is complete
    unreadable = quarantine_changed(spark, cfg, summary.run_id)  # reference mode
    summary.extra.update(unreadable.summary())
    df = unreadable.without(df)

    plan = shard_plan(df, cfg.export.samples_per_shard, cfg.export.max_shard_bytes)
    try:
        return _export_planned(spark, cfg, df, plan, out, summary, record, source, fail_at_shard)
    finally:
        plan.unpersist()


def _export_planned(
    spark: SparkSession,
    cfg: Config,
    df: DataFrame,
    plan: ShardPlan,
    out: Path | StoreURI,
    summary: Summary,
    record: bool,
    source: dict[str, Any] | None,
    fail_at_shard: int | None,
) -> Summary:
    """export_frame once the plan is made: write the shards, `exported` and the manifest."""
    n_rows, n_shards = plan.samples, plan.shards
    n_tasks = max(1, min(n_shards, cfg.export.tasks or spark.sparkContext.defaultParallelism))
    assign = plan.rows.select("sample_id", "_shard", task_column(n_shards, n_tasks).alias("_task"))
    rows = df.join(assign, "sample_id")
    cols = image_columns(spark, cfg)
    if "image" not in df.columns:
        need = [c for c in cols if c not in df.columns]
        rows = rows.join(read_table(spark, cfg, "images").select("sample_id", *need), "sample_id")
    if len(cols) > 1 and "image_offset" in rows.columns:  # reference mode: bytes from shards
        rows = rows.mapInPandas(filled_frames, rows.schema)
        rows = rows.drop(*[c for c in cols if c != "image" and c not in df.columns])
    out_str, fail = str(out), fail_at_shard
    shards: list[dict[str, Any]] = []
    if n_shards:
        # Key typed Any: pyspark's SupportsOrdering protocol (the sort key bound) rejects tuples.
        keyed: RDD[tuple[Any, Row]] = rows.rdd.map(
            lambda r: ((r["_task"], r["_shard"], r["sample_id"]), r)
        )
        shards = (
            keyed.repartitionAndSortWithinPartitions(n_tasks, partitionFunc=lambda k: k[0])
            .mapPartitions(
                lambda it: write_shard_range(((k, r.asDict()) for k, r in it), out_str, fail)
            )
            .collect()
        )
    shards.sort(key=lambda s: s["name"])
    if [s["name"] for s in shards] != [shard_name(i) for i in range(n_shards)]:
        raise RuntimeError(f"export wrote {len(shards)} shards, planned {n_shards}; rerun it")
    removed = remove_leftovers(out, {s["name"] for s in shards})
    version = (source or {}).get("version")
    if record:
        _record_positions(spark, cfg, plan.rows, out, version, summary.run_id)
    manifest = {
        "format": "webdataset",
        "source": source or {"table": None},
        "samples_per_shard": cfg.export.samples_per_shard,
        "max_shard_bytes": cfg.export.max_shard_bytes,
        "shard_count": len(shards),
        "samples": sum(s["samples"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
    }
    write_manifest(out, manifest)
    summary.rows_in = n_rows
    summary.rows_written = manifest["samples"]
    summary.skipped = summary.rows_in - summary.rows_written
    summary.extra.update(
        output=str(out),
        shards=len(shards),
        bytes_written=manifest["bytes"],
        tasks=n_tasks,
        leftovers_removed=len(removed),
    )
    return summary.finish()


def _record_positions(
    spark: SparkSession,
    cfg: Config,
    plan: DataFrame,
    out: Path | StoreURI,
    version: int | None,
    run_id: str,
) -> None:
    """Overwrite `exported` (one transaction) with each sample's shard and position in it."""
    at = datetime.now(UTC)
    records = plan.select(
        "sample_id",
        F.format_string(SHARD_NAME_FORMAT, "_shard").alias("shard"),
        F.col("_pos").alias("position"),
        F.lit(str(out)).alias("output"),
        F.lit(version).cast("bigint").alias("curated_version"),
        F.lit(run_id).alias("run_id"),
        F.lit(at).cast("timestamp").alias("exported_at"),
    )
    ensure_table(spark, cfg, EXPORTED)
    records.write.format("delta").mode("overwrite").save(table_path(cfg, "exported"))


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    output: str | None = None,
    fail_at_shard: int | None = None,
) -> Summary:
    """Export `curated` (its latest version) to WebDataset shards plus manifest.json."""
    path = table_path(cfg, "curated")
    if not is_delta(path):
        raise ConfigError(f"no curated table at {path}; run `curator filter` first")
    last = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
    assert last is not None  # is_delta(path): a Delta table has at least one commit
    version = int(last["version"])
    curated = spark.read.format("delta").option("versionAsOf", version).load(path)
    summary = export_frame(
        spark,
        cfg,
        curated,
        output,
        source={"table": "curated", "path": path, "version": version},
        fail_at_shard=fail_at_shard,
    )
    summary.extra["curated_version"] = version
    return summary


if __name__ == "__main__":  # spark-submit spark_jobs/export.py ARGS
    from spark_jobs.cli import main

    main("export")
