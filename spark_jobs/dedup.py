"""Job 5, dedup: `images` (+ `scores`) → `duplicates` by exact, perceptual and semantic methods.

- exact: equal `image_sha256`; a window per hash keeps the best sample under the order.
- perceptual: 64-bit pHashes in `phashes` (computed only for images not hashed yet; an image
  that does not decode gets `error` set, never a crash); candidates from an equi-join on
  (band index, band value) of the hashes cut into bands (never an all-pairs join), verified
  with `bit_count(a XOR b) <= phash_max_distance`.
- semantic: coarse k-means on a seeded sample of embeddings on the driver (cuML on a GPU,
  faiss on CPU), centroids broadcast, every embedding assigned in a pandas UDF to its nearest
  centroid and, when the margin is small, also to the second nearest (two rows); grouped by
  coarse centroid, `applyInPandas(fine_cluster_pairs)` splits each group below
  `max_cluster_size` with fine k-means and emits the pairs at the lowest threshold from a
  blocked similarity join; then, per eps, pairs with similarity >= 1 - eps are resolved.

Resolution (curator_udfs.resolve, applied by curator_udfs.dedup_rows): a sample is a duplicate
if a better-ranked sample is similar to it; the order is `dedup.keep` (aesthetic = the scores'
aesthetic_score, resolution = width * height, farthest_from_centroid = SemDeDup's distance to
the fine centroid), ties by sample_id. farthest_from_centroid only exists for semantic pairs;
exact and perceptual use resolution then. Pairs are far fewer than samples, so they are
collected to the driver and resolved there, up to `dedup.max_driver_pairs` (above it the job
stops with a message).

Which model's embeddings: the `model` id the embed job writes for `embed.*` (the timm name,
`+random` for random init); if the scores table has no rows for it but exactly one model, that
one.

Writes: each method's rows are recomputed over the whole set every run (deterministic for a
fixed seed and config) and replace that method's previous rows in one transaction
(`replaceWhere method = ...`), so a rerun gives the same rows and a crash leaves the last good
version. Incremental in the sense of the design: new images are compared with every old one,
because everything is recomputed; the cost of a rerun is the full dedup's (hashing is the part
kept between runs, in `phashes`). Restricting the fine stage to coarse clusters that received
new images would need stable, stored coarse centroids: not done yet.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType

from curator_udfs.dedup_rows import (
    add_centroid_distances,
    order_for,
    resolve_rows,
    semantic_eps_rows,
    unique_pairs,
)
from curator_udfs.kmeans import assign_ids, fit_sample
from curator_udfs.phash import PHASH_SCHEMA, band_layout, hash_images
from curator_udfs.resolve import sort_spec
from curator_udfs.semantic import fine_cluster_pairs
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError
from spark_jobs.model_choice import ModelChoice, model_choice
from spark_jobs.summary import Summary, new_run_id
from spark_jobs.tables import (
    DUPLICATE_PAIRS,
    DUPLICATES,
    PHASHES,
    TableDef,
    ensure_table,
    is_delta,
    merge_insert_new,
    read_table,
    replace_where,
    table_path,
)
from spark_jobs.views import head_column

METHODS = ("exact", "perceptual", "semantic")
FINE_SCHEMA = (
    "a STRING, b STRING, similarity DOUBLE, cluster STRING, dist_a DOUBLE, dist_b DOUBLE, "
    "cluster_size BIGINT"
)


# ---- inputs ------------------------------------------------------------------------------------
def scores_model(spark: SparkSession, cfg: Config) -> str | None:
    """The scores' `model` to use: the rule of spark_jobs.model_choice, shared with the filter
    and the API; None without a scores table or rows."""
    return model_choice(spark, cfg).model


def rank_frame(spark: SparkSession, cfg: Config, model: str | None) -> DataFrame:
    """Per image: sample_id, image_sha256, width, height, pixels, aesthetic_score (the aesthetic
    head's configured column; null without one)."""
    images = read_table(spark, cfg, "images").select(
        "sample_id",
        "image_sha256",
        "width",
        "height",
        (F.col("width").cast("double") * F.col("height").cast("double")).alias("pixels"),
    )
    source = head_column(cfg, "aesthetic", "aesthetic_score")
    if model is None:
        return images.withColumn("aesthetic_score", F.lit(None).cast("double"))
    scores = read_table(spark, cfg, "scores")
    if source not in scores.columns:
        return images.withColumn("aesthetic_score", F.lit(None).cast("double"))
    aesthetic = scores.where(F.col("model") == model).select(
        "sample_id", F.col(source).cast("double").alias("aesthetic_score")
    )
    return images.join(aesthetic, "sample_id", "left")


def order_columns(order: str) -> list[Column]:
    """Spark sort expressions of :func:`curator_udfs.resolve.sort_spec` (best first)."""
    return [
        F.col(c).asc_nulls_last() if asc else F.col(c).desc_nulls_last()
        for c, asc in sort_spec(order)
    ]


# ---- writing -----------------------------------------------------------------------------------
def replace_method_rows(
    spark: SparkSession, cfg: Config, tdef: TableDef, df: DataFrame, method: str
) -> None:
    """Replace `method`'s rows of the table with `df`'s, in one Delta transaction."""
    replace_where(spark, cfg, tdef, df, f"method = '{method}'")


def pandas_frame(spark: SparkSession, pdf: pd.DataFrame, tdef: TableDef) -> DataFrame:
    """A Spark frame of `tdef`'s schema from pandas rows (NaN → NULL; empty → no rows)."""
    schema = spark.createDataFrame([], tdef.schema).schema
    if pdf.empty:
        return spark.createDataFrame([], schema)
    pdf = pdf[[f.name for f in schema.fields]].astype(object).where(pdf.notna(), None)
    return spark.createDataFrame(pdf, schema)


def _collect_pairs(df: DataFrame, cfg: Config, what: str) -> pd.DataFrame:
    """`df.toPandas()` unless it has more rows than `dedup.max_driver_pairs` (then an error)."""
    bound = cfg.dedup.max_driver_pairs
    head = df.limit(bound + 1).toPandas()
    if len(head) > bound:
        raise RuntimeError(
            f"{what}: more than dedup.max_driver_pairs={bound:,} similar pairs; they are resolved "
            "on the driver. Use a smaller dedup.eps (or phash_max_distance), or raise "
            "dedup.max_driver_pairs if the driver has the memory (about 200 bytes per pair)"
        )
    return head


def _rank_rows(ranked: DataFrame, pairs: DataFrame) -> pd.DataFrame:
    """The order columns of every sample in `pairs` (a, b), collected (bounded like pairs)."""
    ids = pairs.select(F.col("a").alias("sample_id")).union(
        pairs.select(F.col("b").alias("sample_id"))
    )
    return ranked.join(ids.distinct(), "sample_id", "right").toPandas()


# ---- exact -------------------------------------------------------------------------------------
def exact_duplicates(ranked: DataFrame, order: str) -> DataFrame:
    """Every sample but the best of each group of equal image_sha256, as duplicates rows."""
    w = Window.partitionBy("image_sha256").orderBy(*order_columns(order))
    grouped = (
        ranked.where(F.col("image_sha256").isNotNull())
        .withColumn("_n", F.count(F.lit(1)).over(Window.partitionBy("image_sha256")))
        .where(F.col("_n") > 1)
        .withColumn("_r", F.row_number().over(w))
        .withColumn("_kept", F.first("sample_id").over(w))
    )
    return grouped.where(F.col("_r") > 1).select(
        "sample_id",
        F.col("_kept").alias("duplicate_of"),
        F.col("_kept").alias("similar_to"),
        F.lit(1.0).alias("similarity"),
        F.lit("exact").alias("method"),
        F.lit(None).cast("double").alias("eps"),
        F.col("image_sha256").alias("cluster"),
    )


# ---- perceptual --------------------------------------------------------------------------------
def update_phashes(spark: SparkSession, cfg: Config, run_id: str) -> tuple[int, int]:
    """Hash images not in `phashes` yet; return (hashed now, of which errors)."""
    ensure_table(spark, cfg, PHASHES)
    done = read_table(spark, cfg, "phashes").select("sample_id")
    todo = read_table(spark, cfg, "images").select("sample_id", "image")
    todo = todo.join(done, "sample_id", "left_anti")
    hashed = todo.mapInPandas(hash_images, PHASH_SCHEMA).select(
        "sample_id",
        "phash",
        "error",
        F.lit(datetime.now(UTC)).cast("timestamp").alias("hashed_at"),
        F.lit(run_id).alias("run_id"),
    )
    hashed = hashed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        row = hashed.agg(F.count(F.lit(1)).alias("n"), F.count("error").alias("errors")).first()
        assert row is not None  # a global aggregate has exactly one row
        n, errors = int(row["n"]), int(row["errors"])
        if n:
            merge_insert_new(spark, cfg, PHASHES, hashed)
    finally:
        hashed.unpersist()
    return n, errors


def phash_pairs(hashes: DataFrame, max_distance: int, n_bands: int) -> DataFrame:
    """Pairs (a < b) with Hamming distance <= max_distance, from equal bands; never all pairs.

    Every pair with distance < n_bands shares a band (pigeonhole), so n_bands = max_distance +
    1 finds all of them; fewer bands find most at far fewer candidates. The candidate count is
    about sum over buckets of size^2 per band: a huge bucket (e.g. thousands of blank images)
    is quadratic, which is what exact dedup and a larger band count help against.
    """
    banded = hashes.select(
        "sample_id",
        "phash",
        F.explode(
            F.array(
                *[
                    F.struct(
                        F.lit(i).alias("band"),
                        (
                            F.col("phash")
                            if width == 64
                            else F.shiftrightunsigned("phash", shift).bitwiseAND(
                                F.lit((1 << width) - 1).cast("long")
                            )
                        ).alias("value"),
                    )
                    for i, (shift, width) in enumerate(band_layout(n_bands))
                ]
            )
        ).alias("bv"),
    ).select("sample_id", "phash", "bv.band", "bv.value")
    left, right = banded.alias("l"), banded.alias("r")
    cand = left.join(
        right,
        (F.col("l.band") == F.col("r.band"))
        & (F.col("l.value") == F.col("r.value"))
        & (F.col("l.sample_id") < F.col("r.sample_id")),
    ).select(
        F.col("l.sample_id").alias("a"),
        F.col("r.sample_id").alias("b"),
        F.bit_count(F.col("l.phash").bitwiseXOR(F.col("r.phash"))).alias("distance"),
    )
    return (
        cand.where(F.col("distance") <= max_distance)
        .dropDuplicates(["a", "b"])
        .select("a", "b", (1.0 - F.col("distance") / 64.0).alias("similarity"))
    )


# ---- semantic ----------------------------------------------------------------------------------
def embeddings(spark: SparkSession, cfg: Config, model: str) -> DataFrame:
    """`sample_id, embedding` of the model's rows that have an embedding."""
    return (
        read_table(spark, cfg, "scores")
        .where((F.col("model") == model) & F.col("error").isNull() & F.col("embedding").isNotNull())
        .select("sample_id", "embedding")
    )


def coarse_centroids(emb: DataFrame, cfg: Config, n: int) -> tuple[np.ndarray, str, int, int]:
    """Fit the coarse k-means on a seeded sample; return (centroids, backend, k, sample rows).

    The sample is the `sample_size` rows with the smallest xxhash64(sample_id, seed): the
    same rows whatever the partitioning, sorted by sample_id before fitting (determinism).
    """
    d = cfg.dedup
    k = max(1, min(d.coarse_k or n // 5000, n))
    # pyspark types toPandas() with an alias that does not resolve without pandas stubs
    pdf = cast(
        pd.DataFrame,
        emb.orderBy(F.xxhash64("sample_id", F.lit(d.seed)), "sample_id")
        .limit(d.sample_size)
        .toPandas(),
    )
    centroids, backend = fit_sample(pdf, k, backend=d.backend, seed=d.seed, max_iter=20)
    return centroids, backend, k, len(pdf)


def coarse_assign_udf(centroids: Any, second_margin: float | None) -> Any:
    """pandas UDF: embedding → [nearest] or [nearest, second nearest] coarse centroid ids."""

    # pyspark's stubs lack the type-hint form pandas_udf(returnType) without functionType
    @F.pandas_udf(ArrayType(LongType()))  # type: ignore[call-overload]
    def coarse_ids(emb: pd.Series) -> pd.Series:
        return assign_ids(emb, centroids.value, second_margin=second_margin)

    return coarse_ids


def semantic_stage(
    spark: SparkSession, cfg: Config, model: str, ranked: DataFrame, summary: Summary
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The job's semantic pairs: :func:`semantic_pairs` over the `scores` rows of `model`."""
    return semantic_pairs(spark, cfg, embeddings(spark, cfg, model), ranked, summary)


def semantic_pairs(
    spark: SparkSession, cfg: Config, emb: DataFrame, ranked: DataFrame, summary: Summary
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coarse → assign → fine pairs over `emb` (sample_id, embedding; no nulls), any source.

    Returns (unique pairs at the lowest threshold, rank rows of the paired samples); `ranked`
    holds the order columns (see :func:`rank_frame`). Shared by the job and the Python API.
    """
    d = cfg.dedup
    n = emb.count()
    summary.extra["embeddings"] = n
    if n == 0:
        return pd.DataFrame(columns=["a", "b", "similarity", "cluster"]), pd.DataFrame()
    t0 = time.perf_counter()
    centroids, backend, k, sampled = coarse_centroids(emb, cfg, n)
    summary.extra.update(
        kmeans_backend=backend,
        coarse_k=int(centroids.shape[0]),
        coarse_sample=sampled,
        coarse_fit_seconds=round(time.perf_counter() - t0, 3),
        second_margin=d.second_margin,
    )
    bc = spark.sparkContext.broadcast(centroids)
    assigned = emb.select(
        "sample_id",
        "embedding",
        F.explode(coarse_assign_udf(bc, d.second_margin)("embedding")).alias("coarse"),
    )
    fine_fn = partial(
        fine_cluster_pairs,
        thresholds=[1.0 - e for e in d.eps],
        max_cluster_size=d.max_cluster_size,
        seed=d.seed,
        backend=d.backend,
        block_size=d.block_size,
        include_stats=True,
    )
    fine = assigned.groupBy("coarse").applyInPandas(fine_fn, FINE_SCHEMA)
    fine = fine.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        stats = fine.agg(
            F.count("a").alias("pairs"),
            F.count(F.when(F.col("a").isNull(), 1)).alias("clusters"),
            F.max(F.when(F.col("a").isNull(), F.col("cluster_size"))).alias("largest"),
        ).first()
        assert stats is not None  # a global aggregate has exactly one row
        found = fine.where(F.col("a").isNotNull()).drop("cluster_size")
        pairs = unique_pairs(_collect_pairs(found, cfg, "semantic dedup"))
        rank = _rank_rows(ranked, found)
    finally:
        fine.unpersist()
        bc.unpersist()
    summary.extra.update(
        fine_clusters=int(stats["clusters"] or 0),
        largest_fine_cluster=int(stats["largest"] or 0),
    )
    return pairs, add_centroid_distances(rank, pairs)


def semantic_rows(
    pairs: pd.DataFrame, rank: pd.DataFrame, cfg: Config, removed: dict[str, int] | None = None
) -> pd.DataFrame:
    """The `duplicates` rows of every `dedup.eps` from the pairs (counts into `removed`)."""
    order = order_for("semantic", cfg.dedup.keep)
    return semantic_eps_rows(pairs, rank, order, cfg.dedup.eps, removed)


# ---- the job -----------------------------------------------------------------------------------
def _check_inputs(spark: SparkSession, cfg: Config) -> ModelChoice:
    if not is_delta(table_path(cfg, "images")):
        raise ConfigError(
            f"the warehouse {cfg.warehouse_path} has no `images` table; run `curator ingest` first"
        )
    choice = model_choice(spark, cfg)
    if "semantic" in cfg.dedup.methods and choice.model is None:
        raise ConfigError(
            "config key `dedup.methods`: semantic dedup needs embeddings in the `scores` table; "
            "run `curator embed` first, or --set 'dedup.methods=[exact, perceptual]'"
        )
    return choice


def run(spark: SparkSession, cfg: Config) -> Summary:
    """Recompute the configured methods over all images and replace their `duplicates` rows."""
    summary = Summary(job="dedup", run_id=new_run_id("dedup"), unit="samples")
    d = cfg.dedup
    methods = [m for m in METHODS if m in d.methods]
    choice = _check_inputs(spark, cfg)
    model = choice.model
    if choice.note:
        summary.extra["model_note"] = choice.note
    ranked = rank_frame(spark, cfg, model).persist(StorageLevel.MEMORY_AND_DISK)
    removed: dict[str, int] = {}
    pairs_found: dict[str, int] = {}
    seconds: dict[str, float] = {}
    run_col = F.lit(summary.run_id).alias("run_id")
    summary.extra.update(model=model, keep=d.keep, methods=",".join(methods))
    try:
        summary.rows_in = ranked.count()
        for method in methods:
            t0 = time.perf_counter()
            order = order_for(method, d.keep)
            if method == "exact":
                rows = exact_duplicates(ranked, order).persist(StorageLevel.MEMORY_AND_DISK)
                replace_method_rows(spark, cfg, DUPLICATES, rows.select("*", run_col), method)
                removed["exact"] = pairs_found["exact"] = rows.count()
                if d.write_pairs:
                    pairs_df = rows.select(
                        F.least("sample_id", "duplicate_of").alias("a"),
                        F.greatest("sample_id", "duplicate_of").alias("b"),
                        "similarity",
                        F.lit(method).alias("method"),
                        "cluster",
                        run_col,
                    )
                    replace_method_rows(spark, cfg, DUPLICATE_PAIRS, pairs_df, method)
                rows.unpersist()
            elif method == "perceptual":
                hashed, errors = update_phashes(spark, cfg, summary.run_id)
                summary.extra.update(phashes_computed=hashed, phash_errors=errors)
                n_bands = d.phash_bands or d.phash_max_distance + 1
                hashes = read_table(spark, cfg, "phashes").where(F.col("phash").isNotNull())
                found = phash_pairs(hashes, d.phash_max_distance, n_bands)
                found = found.persist(StorageLevel.MEMORY_AND_DISK)
                try:
                    pairs = _collect_pairs(found, cfg, "perceptual dedup").assign(cluster=None)
                    rank = _rank_rows(ranked, found)
                finally:
                    found.unpersist()
                out = resolve_rows(pairs, rank, order, method, None)
                _write_pandas(spark, cfg, method, out, pairs, summary.run_id)
                removed["perceptual"], pairs_found["perceptual"] = len(out), len(pairs)
                summary.extra["phash_bands"] = n_bands
            else:
                assert model is not None  # _check_inputs
                pairs, rank = semantic_stage(spark, cfg, model, ranked, summary)
                out = semantic_rows(pairs, rank, cfg, removed)
                _write_pandas(spark, cfg, method, out, pairs, summary.run_id)
                pairs_found["semantic"] = len(pairs)
            seconds[method] = round(time.perf_counter() - t0, 3)
        flagged = read_table(spark, cfg, "duplicates").where(F.col("method").isin(methods))
        n_flagged = flagged.select("sample_id").distinct().count()
    finally:
        ranked.unpersist()
    register_tables(spark, cfg)
    summary.rows_written = n_flagged
    summary.skipped = max(summary.rows_in - n_flagged, 0)
    summary.extra.update(
        pairs_found=pairs_found,
        removed=removed,
        method_seconds=seconds,
        duplicate_samples_any_method=n_flagged,
    )
    summary.finish()
    summary.tables["duplicates"] = read_table(spark, cfg, "duplicates").count()
    return summary


def _write_pandas(
    spark: SparkSession,
    cfg: Config,
    method: str,
    rows: pd.DataFrame,
    pairs: pd.DataFrame,
    run_id: str,
) -> None:
    rows = rows.assign(run_id=run_id)
    replace_method_rows(spark, cfg, DUPLICATES, pandas_frame(spark, rows, DUPLICATES), method)
    if cfg.dedup.write_pairs:
        p = pairs[["a", "b", "similarity", "cluster"]].assign(method=method, run_id=run_id)
        replace_method_rows(
            spark, cfg, DUPLICATE_PAIRS, pandas_frame(spark, p, DUPLICATE_PAIRS), method
        )


if __name__ == "__main__":  # spark-submit spark_jobs/dedup.py ARGS
    from spark_jobs.cli import main

    main("dedup")
