"""Job 5, dedup: `images` (+ `scores`) → `duplicates` by exact, perceptual and semantic methods.

- exact: equal `image_sha256`; a window per hash keeps the best sample under the order.
- perceptual: 64-bit pHashes in `phashes` (computed only for images not hashed yet; an image
  that does not decode gets `error` set, never a crash). Equal hashes are grouped first, one
  representative per distinct hash goes into an equi-join on (band index, band value) of the
  hashes cut into bands (never an all-pairs join), verified with `bit_count(a XOR b) <=
  phash_max_distance`; the groups expand into O(n) candidate edges that keep every sample's
  best-ranked partner (spark_jobs.dedup_perceptual), so 10^4 copies of one hash are 10^4 rows.
- semantic: coarse k-means on a seeded sample of embeddings on the driver (cuML on a GPU,
  faiss on CPU), centroids broadcast, every embedding assigned in a pandas UDF to its nearest
  centroid and, when the margin is small, also to the second nearest (two rows); grouped by
  coarse centroid, `applyInPandas(fine_cluster_pairs)` splits each group below
  `max_cluster_size` and emits the pairs at the lowest threshold from a blocked similarity
  join; then, per eps, pairs with similarity >= 1 - eps are resolved.

Resolution (spark_jobs.dedup_resolve) is Spark DataFrame operations over the persisted pairs;
no pair goes to the driver: a sample is a duplicate if a better-ranked sample is similar to it;
`similar_to` is its best-ranked similar partner (an aggregation over the pairs in both
directions), `duplicate_of` the kept sample at the end of that chain (pointer jumping: a
bounded number of self-join rounds, about log2 of the longest chain; the summary's
`resolve_rounds`; unresolved chains after 32 rounds are an error, nothing is written). The
order is `dedup.keep` (aesthetic = the scores' aesthetic_score, resolution = width * height,
farthest_from_centroid = SemDeDup's distance to the fine centroid), ties by sample_id.
farthest_from_centroid only exists for semantic pairs; exact and perceptual use resolution then.

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

from curator_udfs.kmeans import assign_ids, fit_sample
from curator_udfs.phash import PHASH_SCHEMA, hash_images
from curator_udfs.resolve import order_for
from curator_udfs.semantic import fine_cluster_pairs
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError
from spark_jobs.dedup_perceptual import expand_pairs, pair_count, perceptual_candidates
from spark_jobs.dedup_resolve import (
    centroid_distances,
    eps_pairs,
    order_columns,
    resolve,
    unique_pairs,
)
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


# ---- writing -----------------------------------------------------------------------------------
def replace_method_rows(
    spark: SparkSession, cfg: Config, tdef: TableDef, df: DataFrame, method: str
) -> None:
    """Replace `method`'s rows of the table with `df`'s, in one Delta transaction."""
    replace_where(spark, cfg, tdef, df, f"method = '{method}'")


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


PAIRS_SCHEMA = "a STRING, b STRING, similarity DOUBLE, cluster STRING, dist_a DOUBLE, dist_b DOUBLE"


def semantic_pairs(spark: SparkSession, cfg: Config, emb: DataFrame, summary: Summary) -> DataFrame:
    """Coarse → assign → fine pairs over `emb` (sample_id, embedding; no nulls), any source.

    Returns the unique pairs at the lowest threshold (a, b, similarity, cluster, dist_a,
    dist_b), persisted: the caller unpersists. Shared by the job and the Python API.
    """
    d = cfg.dedup
    n = emb.count()
    summary.extra["embeddings"] = n
    if n == 0:
        return spark.createDataFrame([], PAIRS_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
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
        pairs = unique_pairs(found).persist(StorageLevel.MEMORY_AND_DISK)
        pairs.count()  # materialised before the fine frame goes
    finally:
        fine.unpersist()
        bc.unpersist()
    summary.extra.update(
        fine_clusters=int(stats["clusters"] or 0),
        largest_fine_cluster=int(stats["largest"] or 0),
    )
    return pairs


def semantic_rows(
    pairs: DataFrame,
    ranked: DataFrame,
    cfg: Config,
    summary: Summary,
    removed: dict[str, int] | None = None,
) -> DataFrame:
    """The `duplicates` rows (no run_id) of every `dedup.eps` from the unique pairs, each eps
    resolved independently; counts per eps into `removed`, rounds into the summary."""
    order = order_for("semantic", cfg.dedup.keep)
    ranks = ranked
    if order == "farthest_from_centroid":
        ranks = ranked.join(centroid_distances(pairs), "sample_id", "left")
    per_eps = eps_pairs(pairs.select("a", "b", "similarity", "cluster"), cfg.dedup.eps)
    rows, rounds = resolve(per_eps, ranks, order)
    summary.extra.setdefault("resolve_rounds", {})["semantic"] = rounds
    if removed is not None:
        counts = {
            r["eps"]: int(r["n"])
            for r in rows.groupBy("eps").agg(F.count("*").alias("n")).collect()
        }
        for e in cfg.dedup.eps:
            removed[f"semantic eps={e:g}"] = counts.get(float(e), 0)
    return rows.withColumn("method", F.lit("semantic"))


def perceptual_rows(
    spark: SparkSession, cfg: Config, ranked: DataFrame, summary: Summary, run_col: Column
) -> tuple[int, int]:
    """Hash what is new, resolve the grouped candidates, write; return (rows, pairs found)."""
    d = cfg.dedup
    hashed, errors = update_phashes(spark, cfg, summary.run_id)
    n_bands = d.phash_bands or d.phash_max_distance + 1
    summary.extra.update(phashes_computed=hashed, phash_errors=errors, phash_bands=n_bands)
    hashes = read_table(spark, cfg, "phashes").where(F.col("phash").isNotNull())
    order = order_for("perceptual", d.keep)
    cands = perceptual_candidates(hashes, ranked, order, d.phash_max_distance, n_bands)
    edges = cands.edges.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        summary.extra["perceptual_candidates"] = edges.count()
        pairs = edges.select(
            "*",
            F.lit(None).cast("string").alias("cluster"),
            F.lit(None).cast("double").alias("eps"),
        )
        rows, rounds = resolve(pairs, ranked, order)
        summary.extra.setdefault("resolve_rounds", {})["perceptual"] = rounds
        rows = rows.withColumn("method", F.lit("perceptual"))
        replace_method_rows(spark, cfg, DUPLICATES, rows.select("*", run_col), "perceptual")
        if d.write_pairs:  # every pair, as before grouping: quadratic in group sizes
            full = expand_pairs(cands).select(
                "*",
                F.lit("perceptual").alias("method"),
                F.lit(None).cast("string").alias("cluster"),
                run_col,
            )
            replace_method_rows(spark, cfg, DUPLICATE_PAIRS, full, "perceptual")
        return rows.count(), pair_count(cands)
    finally:
        edges.unpersist()
        cands.unpersist()


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
            if method == "exact":
                order = order_for(method, d.keep)
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
                removed[method], pairs_found[method] = perceptual_rows(
                    spark, cfg, ranked, summary, run_col
                )
            else:
                assert model is not None  # _check_inputs
                pairs_found[method] = semantic_stage(spark, cfg, model, ranked, summary, removed)
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


def semantic_stage(
    spark: SparkSession,
    cfg: Config,
    model: str,
    ranked: DataFrame,
    summary: Summary,
    removed: dict[str, int],
) -> int:
    """The job's semantic method over `scores` rows of `model`: write; return pairs found."""
    run_col = F.lit(summary.run_id).alias("run_id")
    pairs = semantic_pairs(spark, cfg, embeddings(spark, cfg, model), summary)
    try:
        rows = semantic_rows(pairs, ranked, cfg, summary, removed)
        replace_method_rows(spark, cfg, DUPLICATES, rows.select("*", run_col), "semantic")
        if cfg.dedup.write_pairs:
            out = pairs.select(
                "a", "b", "similarity", "cluster", F.lit("semantic").alias("method"), run_col
            )
            replace_method_rows(spark, cfg, DUPLICATE_PAIRS, out, "semantic")
        return pairs.count()
    finally:
        pairs.unpersist()


if __name__ == "__main__":  # spark-submit spark_jobs/dedup.py ARGS
    from spark_jobs.cli import main

    main("dedup")
