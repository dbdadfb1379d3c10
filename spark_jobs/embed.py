"""Job 2, embed: `images` → `scores` (one row per image per model: embedding + head scores).

Only images without a `scores` row for this model are read, and only their `sample_id`,
`image` and `caption` columns, in the partitions they are stored in: the pending set is an
ids-only anti-join and the bytes are never shuffled (`spark_jobs.embed_input`). They go through
`mapInArrow` with the executor-side batch function of `curator_udfs.embed_batches` (model
loaded once per Python worker, heads run on the same device in the same pass) and are written
with an idempotent Delta append (`spark_jobs.idempotent`: txnAppId `curator-embed:<model>`,
claimed from the same `scores` snapshot the pending set was read at), which reads no target
file, so a run's cost does not grow with the table; a crash followed by a rerun, or two runs at
once, never duplicate a row (the run that loses the race writes no more and says so in its
summary's `write` line). The same pass fills
the signal columns: `sharpness`, `colorfulness`, `grayscale` from the decoded pixels
(`curator_udfs.image_signals`) and `clip_score`, the image-caption cosine, when the model has a
text tower (open_clip models; `embed.text`); the summary's `clip_score` line says which.

An image that cannot be decoded at embed time gets a row with `error` set and null embedding and
scores; it counts as quarantined. It is not retried by default (same bytes, same failure); pass
`--retry-errors` (`run(..., retry_errors=True)`) after fixing the decoder to re-embed those rows
(a MERGE scoped to the model's error rows, under the same transaction claim).
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curator_udfs.model_ids import model_id
from curator_udfs.specs import SIGNAL_COLUMNS, EmbedSpec, head_columns, open_clip_name
from spark_jobs.config import Config, ConfigError, embed_spec
from spark_jobs.embed_input import (
    SPLIT_CONF,
    Batch,
    Pending,
    batch_images,
    pending_ids,
    shard_batches,
    split_bytes,
)
from spark_jobs.errors import worker_message
from spark_jobs.file_sizing import coalesced
from spark_jobs.idempotent import TxnPoint, append_once, dml_once, recorded_version, txn_point
from spark_jobs.references import quarantine_changed
from spark_jobs.session import ARROW_BATCH_CONF, session_conf
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import (
    SCORES,
    SCORES_WRITE_CONF,
    ensure_table,
    read_table,
    sql_list,
    table_path,
)

SIGNAL_NAMES = tuple(c for c, _ in SIGNAL_COLUMNS)
# Columns of `scores` that are not head scores (head output columns may not take these names).
BASE_COLUMNS = (
    "sample_id", "model", "embedding", "embedding_dim", "error", "scored_at", "run_id",
    *SIGNAL_NAMES,
)  # fmt: skip
ROW_BYTES = 256  # a scores row's columns besides the embedding, about, for sizing its files
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- checks on the driver, before Spark starts -------------------------------------------------
@functools.lru_cache(maxsize=8)
def probe_embedding_dim(spec: EmbedSpec) -> int | None:
    """The timm model's output width from a meta-device build (no weights, no memory), or None
    for custom embedders and models that cannot be probed that way. Cached per spec: the
    preflight asks, then the job (to size its files), ~0.4 s each for ViT-L/14."""
    if spec.embedder_class:
        return None
    if open_clip_name(spec.model) is not None:
        from curator_udfs.open_clip_embedder import open_clip_config

        try:
            cfg = open_clip_config(spec.model, spec.pretrained, spec.weights)
            return int(cfg["model_cfg"]["embed_dim"])
        except (ValueError, KeyError, TypeError):
            return None
    try:
        import timm
        import torch

        with torch.device("meta"):
            model = timm.create_model(spec.model, pretrained=False)
        size = timm.data.resolve_data_config({}, model=model)["input_size"]
        with torch.no_grad():
            out = model(torch.zeros(1, *size, device="meta"))
        return int(out.reshape(1, -1).shape[1])
    except Exception:  # noqa: BLE001 - the executors check again with the real model
        return None


def check_heads(spec: EmbedSpec, dim: int | None) -> list[str]:
    """Head output columns; ConfigError for unknown heads/classes, bad names or widths."""
    from curator_udfs.classifiers import head_class

    for i, h in enumerate(spec.heads):
        key = f"classifiers[{i}]"
        try:
            cls = head_class(h.name, h.class_path)
        except ValueError as exc:
            raise ConfigError(f"config key `{key}.class_path`/`{key}.name`: {exc}") from None
        if h.weights and not Path(h.weights).expanduser().exists():
            raise ConfigError(
                f"config key `{key}.weights`: {h.weights} does not exist; point it at a "
                "safetensors or weights-only torch file (or directory), or null for the HF hub"
            )
        if h.random_init and h.weights:
            raise ConfigError(f"config key `{key}`: both weights and random_init; drop one")
        input_dim = h.input_dim
        if input_dim is None and h.random_init:
            input_dim = dim
        if dim is not None:
            try:
                cls(input_dim=input_dim, output_column=h.output_column).check_dim(dim)
            except ValueError as exc:
                raise ConfigError(
                    f"config key `{key}` ({h.name}) vs `embed.model` ({spec.model}): {exc}"
                ) from None
    try:
        columns = head_columns(spec)
    except ValueError as exc:
        raise ConfigError(f"config key `classifiers[].output_column`: {exc}") from None
    for c in columns:
        if not _IDENT.match(c) or c.lower() in BASE_COLUMNS:
            raise ConfigError(
                f"config key `classifiers[].output_column`: {c!r} is not usable as a score "
                f"column (a letter/underscore identifier, not one of {', '.join(BASE_COLUMNS)})"
            )
    return columns


def validate(cfg: Config) -> EmbedSpec:
    """The spec, checked as far as the driver can without Spark or weights (the preflight of
    embed and classify: the CLI and the pipeline call it once, before the session starts)."""
    from curator_udfs.class_path import import_class
    from curator_udfs.embedders import ImageEmbedder

    spec = embed_spec(cfg)
    if spec.weights and not Path(spec.weights).expanduser().exists():
        raise ConfigError(
            f"config key `embed.weights`: {spec.weights} does not exist; point it at a local "
            "weights file or directory, or set it to null to use the HF hub cache"
        )
    if spec.embedder_class:
        try:
            import_class(spec.embedder_class, ImageEmbedder, "embed.embedder_class")
        except ValueError as exc:
            raise ConfigError(f"config key `embed.embedder_class`: {exc}") from None
    elif open_clip_name(spec.model) is not None:
        from curator_udfs.open_clip_embedder import open_clip_config

        try:
            open_clip_config(spec.model, spec.pretrained, spec.weights)
        except ValueError as exc:
            raise ConfigError(f"config key `embed.model`: {exc}") from None
    else:
        import timm

        arch, _tag = timm.models.split_model_name_tag(spec.model)
        if not timm.is_model(arch):
            raise ConfigError(
                f"config key `embed.model`: unknown timm model {spec.model!r}; e.g. "
                "vit_large_patch14_clip_quickgelu_224.openai, or test_vit for tests"
            )
    check_heads(spec, probe_embedding_dim(spec))
    clip_plan(spec)
    return spec


def clip_plan(spec: EmbedSpec) -> str:
    """The summary's `clip_score` line: how it is computed, or why it stays NULL."""
    from curator_udfs.embed_batches import clip_score_plan

    try:
        return clip_score_plan(spec)[1]
    except ValueError as exc:
        raise ConfigError(f"config key `embed.text`: {exc}") from None


# ---- shared with classify ------------------------------------------------------------------------
def ensure_score_columns(spark: SparkSession, cfg: Config, columns: list[str]) -> list[str]:
    """Create `scores` if needed and add missing head columns (DOUBLE) and signal columns
    (a `scores` table from before them); return the head columns added.

    Explicit `ALTER TABLE ADD COLUMNS` rather than schema auto-merge, so a typo in a MERGE can
    never widen the table.
    """
    ensure_table(spark, cfg, SCORES)
    existing = {c.lower() for c in read_table(spark, cfg, "scores").columns}
    new = [c for c in columns if c.lower() not in existing]
    typed = [(c, t) for c, t in SIGNAL_COLUMNS if c not in existing] + [(c, "DOUBLE") for c in new]
    if typed:
        cols = ", ".join(f"{c} {t}" for c, t in typed)
        spark.sql(f"ALTER TABLE delta.`{table_path(cfg, 'scores')}` ADD COLUMNS ({cols})")
    return new


def nan_to_null(df: DataFrame, columns: list[str]) -> DataFrame:
    """Head scores NaN → NULL: in Spark SQL NaN sorts above every number (NaN >= 5 is true)."""
    for c in columns:
        df = df.withColumn(c, F.when(F.isnan(F.col(c)), F.lit(None)).otherwise(F.col(c)))
    return df


def describe_device(spark: SparkSession) -> str:
    """What the executors run on: in local mode the driver's own choice, else the GPU config."""
    master = spark.sparkContext.master or ""
    if master.startswith("local"):
        from curator_udfs.device import current_device

        return current_device()
    gpus = spark.conf.get("spark.executor.resource.gpu.amount", None)
    return "cuda (executor GPUs)" if gpus else "cpu (no executor GPU resources)"


# ---- the job -----------------------------------------------------------------------------------
def pending_images(
    spark: SparkSession, cfg: Config, model: str, *, retry_errors: bool = False
) -> DataFrame:
    """`sample_id` of images without a scores row for `model` (or only an error row): what
    the progress display counts. The job reads the images through `embed_input` instead."""
    done = read_table(spark, cfg, "scores").where(F.col("model") == model)
    if retry_errors:
        done = done.where(F.col("error").isNull())
    images = read_table(spark, cfg, "images").select("sample_id")
    return images.join(done.select("sample_id"), "sample_id", "left_anti")


def num_tasks(spark: SparkSession, n: int, batch_size: int) -> int:
    """Enough tasks to use every core, each a few forward batches long (fewer model loads)."""
    cores = spark.sparkContext.defaultParallelism
    return max(1, min(max(cores, math.ceil(n / (4 * batch_size))), max(n, 1)))


def app_id(model: str) -> str:
    """The Delta application id of embed's writes of `model` (see spark_jobs.idempotent)."""
    return f"curator-embed:{model}"


def run(spark: SparkSession, cfg: Config, *, retry_errors: bool = False) -> Summary:
    """Embed and score every image that has no `scores` row for the configured model."""
    summary = Summary(job="embed", run_id=new_run_id("embed"), unit="images")
    spec = embed_spec(cfg)  # validated by the preflight (`validate`), before the session
    model = model_id(spec)
    columns = check_heads(spec, None)
    ensure_score_columns(spark, cfg, columns)
    summary.extra.update(model=model, device=describe_device(spark), heads=",".join(columns))
    summary.extra["clip_score"] = clip_plan(spec)
    summary.extra["signals"] = "computed" if spec.signals else "NULL: embed.signals is false"

    unreadable = quarantine_changed(spark, cfg, summary.run_id)  # reference mode
    summary.extra.update(unreadable.summary())
    # The pending set and the write's claim come from one snapshot of `scores`.
    point = txn_point(spark, table_path(cfg, "scores"), app_id(model))
    pending = pending_ids(
        spark, cfg, model, point.table_version, retry_errors=retry_errors, unreadable=unreadable
    )
    try:
        n = pending.rows
        summary.rows_in = n
        summary.extra["images_decoded"] = n
        written = 0
        if n:
            batches = shard_batches(pending.per_shard, cfg.embed.broadcast_ids)
            width = probe_embedding_dim(spec) or 768
            summary.extra["batches"] = len(batches)
            with session_conf(spark, {ARROW_BATCH_CONF: str(cfg.embed.arrow_batch_size)}):
                for batch in batches:
                    done = _embed_batch(
                        spark, cfg, spec, model, pending, batch, point, summary, width
                    )
                    if done is None:
                        summary.extra["write"] = (
                            f"lost the race: another embed run of {model} already committed "
                            f"transaction {point.txn_version} of {point.app_id}, so this run "
                            f"wrote only {written} rows (rerun embed for what is still pending)"
                        )
                        break
                    written += done
                    point = point.next()
                else:
                    last = point.txn_version - 1
                    summary.extra["write"] = f"appended ({point.app_id}, transaction {last})"
        failed = _run_outcome(spark, cfg, model, summary) if written else 0
        summary.quarantined = min(failed, written)
        summary.rows_written = written - summary.quarantined
        summary.skipped = n - written
    finally:
        pending.ids.unpersist()
    summary.finish()
    summary.extra["images_per_s"] = summary.throughput
    summary.tables["scores"] = read_table(spark, cfg, "scores").count()
    return summary


def scored_frame(
    spark: SparkSession, cfg: Config, spec: EmbedSpec, model: str, todo: DataFrame, run_id: str
) -> DataFrame:
    """`todo` (sample_id, image, caption) embedded and scored: rows in the `scores` schema."""
    from curator_udfs.embed_batches import embed_output_schema, make_embed_arrow_fn

    columns = head_columns(spec)
    at = datetime.now(UTC)
    scored = todo.mapInArrow(make_embed_arrow_fn(spec), embed_output_schema(spec))
    scored = nan_to_null(scored, columns).select(
        "sample_id",
        F.lit(model).alias("model"),
        "embedding",
        F.when(F.col("embedding").isNull(), F.lit(None))
        .otherwise(F.size("embedding"))
        .cast("int")
        .alias("embedding_dim"),
        *columns,
        *SIGNAL_NAMES,
        "error",
        F.lit(at).cast("timestamp").alias("scored_at"),
        F.lit(run_id).alias("run_id"),
    )
    # Columns the table has but this config does not fill (another config's heads): NULL.
    target = read_table(spark, cfg, "scores").schema
    missing = [f for f in target.fields if f.name not in scored.columns]
    return scored.select(
        *scored.columns, *[F.lit(None).cast(f.dataType).alias(f.name) for f in missing]
    )


def _embed_batch(
    spark: SparkSession,
    cfg: Config,
    spec: EmbedSpec,
    model: str,
    pending: Pending,
    batch: Batch,
    point: TxnPoint,
    summary: Summary,
    width: int,
) -> int | None:
    """Embed one batch and write it as transaction `point`: rows written, or None when another
    run already committed that transaction (nothing written). `width`: the embedding's, about
    (it sizes the files).

    The UDF's output goes straight into the write (no cache and no count before it): the
    append's own metrics say how many rows it wrote, and `_run_outcome` reads the run's error
    rows and width back from the table. Only a retry's MERGE, which reads its source twice,
    caches it first."""
    path = table_path(cfg, "scores")
    if recorded_version(spark, path, point.app_id) >= point.txn_version:
        return None  # lost already: do not spend the embedding work
    split = split_bytes(spark, cfg, batch.rows, num_tasks(spark, batch.rows, spec.batch_size))
    # files of about FILE_BYTES (not one small file per task), sized from the pending rows
    size = batch.rows * (4 * width + ROW_BYTES)
    with session_conf(spark, {SPLIT_CONF: str(split), **SCORES_WRITE_CONF}):
        todo = batch_images(spark, cfg, pending, batch)
        scored = scored_frame(spark, cfg, spec, model, todo, summary.run_id)
        t0 = datetime.now(UTC)
        if pending.retry_errors:
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            out = coalesced(scored, size, parallelism=spark.sparkContext.defaultParallelism)
            if pending.retry_errors:
                written = _merge_retry(spark, cfg, out, model, point, summary.run_id)
            else:
                written = append_once(spark, out, path, point, summary.run_id)
        except Exception as exc:
            msg = worker_message(exc)
            if msg:
                raise RuntimeError(f"embed failed in a Python worker: {msg}") from exc
            raise
        finally:
            scored.unpersist()
    seconds = (datetime.now(UTC) - t0).total_seconds()
    summary.extra["embed_seconds"] = round(
        float(summary.extra.get("embed_seconds") or 0.0) + seconds, 3
    )
    return written


def _run_outcome(spark: SparkSession, cfg: Config, model: str, summary: Summary) -> int:
    """The error rows this run wrote, and its embedding width into the summary: one query over
    the run's own files (Delta skips the others from their run_id statistics)."""
    row = (
        read_table(spark, cfg, "scores")
        .where((F.col("run_id") == summary.run_id) & (F.col("model") == model))
        .agg(
            F.count(F.when(F.col("error").isNotNull(), 1)).alias("failed"),
            F.max("embedding_dim").alias("dim"),
        )
        .first()
    )
    assert row is not None  # a global aggregate has exactly one row
    summary.extra["embedding_dim"] = int(row["dim"]) if row["dim"] is not None else None
    return int(row["failed"] or 0)


def _merge_retry(
    spark: SparkSession,
    cfg: Config,
    source: DataFrame,
    model: str,
    point: TxnPoint,
    run_id: str,
) -> int | None:
    """Insert new rows and overwrite rows that only held an error, as transaction `point`
    (None: skipped, see append_once). The target side is scoped to the model's error rows
    (Delta skips files without one, from their null counts); a pending row that has no
    error row is new, so it is inserted: the transaction claim guarantees no other embed of
    the model wrote it since the pending set was read."""
    target = ensure_table(spark, cfg, SCORES)
    scope = f"t.model IN ({sql_list([model])}) AND t.error IS NOT NULL"
    cond = f"{scope} AND t.sample_id = s.sample_id AND t.model = s.model"

    def merge() -> None:
        (
            target.alias("t")
            .merge(source.alias("s"), cond)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    metrics = dml_once(spark, table_path(cfg, "scores"), point, run_id, merge)
    if metrics is None:
        return None
    return int(metrics.get("numTargetRowsInserted", 0) or 0) + int(
        metrics.get("numTargetRowsUpdated", 0) or 0
    )


if __name__ == "__main__":  # spark-submit spark_jobs/embed.py ARGS
    from spark_jobs.cli import main

    main("embed")
