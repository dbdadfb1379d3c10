"""Job 5, dedup: `images` (+ `scores`) → `duplicates` by exact, perceptual and semantic methods.

- exact: equal `image_sha256`; a window per hash keeps the best sample under the order.
- perceptual: 64-bit pHashes in `phashes` (computed only for images not hashed yet; an image
  that does not decode gets `error` set, never a crash). Equal hashes are grouped first, one
  representative per distinct hash goes into an equi-join on (band index, band value) of the
  hashes cut into bands (never an all-pairs join), verified with `bit_count(a XOR b) <=
  phash_max_distance`; the groups expand into O(n) candidate edges that keep every sample's
  best-ranked partner (spark_jobs.dedup_perceptual), so 10^4 copies of one hash are 10^4 rows.
- semantic (spark_jobs.dedup_semantic): unusable embeddings (NULL, empty, NaN, an embed
  error) skipped and counted; identical embeddings grouped first (one representative each);
  coarse k-means on a seeded sample of the representatives on the driver (cuML on a GPU, faiss
  on CPU), centroids broadcast, every one assigned in a pandas UDF to its nearest centroid
  and, when the margin is small, also to the second nearest (two rows); grouped by coarse
  centroid, `applyInPandas(fine_cluster_pairs)` splits each group below `max_cluster_size`
  and emits the pairs at the lowest threshold from a blocked similarity join; then, per eps,
  pairs with similarity >= 1 - eps plus O(n) edges for the copies are resolved. An empty
  `scores` table, one sample or one distinct vector: a note in the summary, no k-means.

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

Writes: each method's rows replace that method's previous rows in one transaction
(`replaceWhere method = ...`), so a rerun gives the same rows and a crash leaves the last good
version. Exact and perceptual are recomputed over the whole set (hashes are kept in `phashes`).
Semantic is incremental (spark_jobs.dedup_state): stored per model are the coarse centroids
(`dedup_centroids`: model, seed, k, dim, backend; reused while they match, so old
representatives keep their coarse group), each coarse group's members (`dedup_members`) and
its fine-stage pairs and fine clusters (`dedup_group_pairs`), so that a run compares only the
new members of the groups that gained one (against the stored fine clusters they fall in) and
reads every other pair back: a from-scratch run's result with the same centroids, except near
fine-cluster borders. `run(..., full=True)`
(`curator dedup --full`) refits the centroids and recomputes every group.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from curator_udfs.phash import PHASH_SCHEMA, hash_images
from curator_udfs.resolve import order_for
from spark_jobs.catalog import register_tables
from spark_jobs.config import Config, ConfigError
from spark_jobs.dedup_perceptual import expand_pairs, pair_count, perceptual_candidates
from spark_jobs.dedup_resolve import order_columns, resolve_counted
from spark_jobs.dedup_semantic import embeddings, semantic_pairs, semantic_rows
from spark_jobs.dedup_state import SemanticState
from spark_jobs.model_choice import ModelChoice, model_choice
from spark_jobs.references import Unreadable, image_columns, quarantine_changed
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
def update_phashes(
    spark: SparkSession, cfg: Config, run_id: str, unreadable: Unreadable | None = None
) -> tuple[int, int]:
    """Hash images not in `phashes` yet (but the `unreadable`: reference mode, their shard
    changed); return (hashed now, of which errors)."""
    ensure_table(spark, cfg, PHASHES)
    done = read_table(spark, cfg, "phashes").select("sample_id")
    cols = dict.fromkeys(("sample_id", *image_columns(spark, cfg)))
    todo = read_table(spark, cfg, "images").select(*cols)
    todo = todo.join(done, "sample_id", "left_anti")
    if unreadable is not None:
        todo = unreadable.without(todo)
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


def perceptual_rows(
    spark: SparkSession, cfg: Config, ranked: DataFrame, summary: Summary, run_col: Column
) -> tuple[int, int]:
    """Hash what is new, resolve the grouped candidates, write; return (rows, pairs found)."""
    d = cfg.dedup
    unreadable = quarantine_changed(spark, cfg, summary.run_id)  # reference mode
    summary.extra.update(unreadable.summary())
    hashed, errors = update_phashes(spark, cfg, summary.run_id, unreadable)
    n_bands = d.phash_bands or d.phash_max_distance + 1
    summary.extra.update(phashes_computed=hashed, phash_errors=errors, phash_bands=n_bands)
    hashes = read_table(spark, cfg, "phashes").where(F.col("phash").isNotNull())
    order = order_for("perceptual", d.keep)
    cands = perceptual_candidates(hashes, ranked, order, d.phash_max_distance, n_bands)
    edges = cands.edges.persist(StorageLevel.MEMORY_AND_DISK)  # read twice by resolution
    try:
        pairs = edges.select(
            "*",
            F.lit(None).cast("string").alias("cluster"),
            F.lit(None).cast("double").alias("eps"),
        )
        res = resolve_counted(pairs, ranked, order)
        summary.extra.setdefault("resolve_rounds", {})["perceptual"] = res.rounds
        rows = res.rows.withColumn("method", F.lit("perceptual"))
        replace_method_rows(spark, cfg, DUPLICATES, rows.select("*", run_col), "perceptual")
        if d.write_pairs:  # every pair, as before grouping: quadratic in group sizes
            full = expand_pairs(cands).select(
                "*",
                F.lit("perceptual").alias("method"),
                F.lit(None).cast("string").alias("cluster"),
                run_col,
            )
            replace_method_rows(spark, cfg, DUPLICATE_PAIRS, full, "perceptual")
        return res.counts.get(None, 0), pair_count(cands)
    finally:
        edges.unpersist()
        cands.unpersist()


# ---- the job -----------------------------------------------------------------------------------
def _empty_scores(spark: SparkSession, cfg: Config) -> bool:
    """A `scores` table without rows (asked only when no model was found: one Spark job)."""
    return is_delta(table_path(cfg, "scores")) and not read_table(spark, cfg, "scores").take(1)


def _check_inputs(spark: SparkSession, cfg: Config) -> ModelChoice:
    if not is_delta(table_path(cfg, "images")):
        raise ConfigError(
            f"the warehouse {cfg.warehouse_path} has no `images` table; run `curator ingest` first"
        )
    choice = model_choice(spark, cfg)
    if "semantic" in cfg.dedup.methods and choice.model is None and not _empty_scores(spark, cfg):
        raise ConfigError(
            "config key `dedup.methods`: semantic dedup needs embeddings in the `scores` table; "
            "run `curator embed` first, or --set 'dedup.methods=[exact, perceptual]'"
        )
    return choice


def run(spark: SparkSession, cfg: Config, *, full: bool = False) -> Summary:
    """Run the configured methods over all images and replace their `duplicates` rows.

    Semantic: stored coarse centroids are reused and only touched coarse groups recomputed
    (spark_jobs.dedup_state); `full` refits the centroids and recomputes every group."""
    summary = Summary(job="dedup", run_id=new_run_id("dedup"), unit="samples")
    d = cfg.dedup
    methods = [m for m in METHODS if m in d.methods]
    choice = _check_inputs(spark, cfg)
    model = choice.model
    if choice.note:
        summary.extra["model_note"] = choice.note
    if model is None and "semantic" in methods:  # _check_inputs: the table is empty
        summary.extra["scores_note"] = "the scores table is empty: no embeddings to compare"
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
                pairs_found[method] = semantic_stage(
                    spark, cfg, model, ranked, summary, removed, full=full
                )
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
    model: str | None,
    ranked: DataFrame,
    summary: Summary,
    removed: dict[str, int],
    *,
    full: bool = False,
) -> int:
    """The job's semantic method over `scores` rows of `model`: write the `duplicates` rows,
    then the group state (spark_jobs.dedup_state); return pairs found."""
    run_col = F.lit(summary.run_id).alias("run_id")
    state = SemanticState(spark, cfg, model, summary.run_id, full=full) if model else None
    sp = semantic_pairs(spark, cfg, embeddings(spark, cfg, model), ranked, summary, state)
    try:
        rows = semantic_rows(sp, ranked, cfg, summary, removed)
        replace_method_rows(spark, cfg, DUPLICATES, rows.select("*", run_col), "semantic")
        pairs = sp.all_pairs()
        if cfg.dedup.write_pairs:
            out = pairs.select("*", F.lit("semantic").alias("method"), run_col)
            replace_method_rows(spark, cfg, DUPLICATE_PAIRS, out, "semantic")
        found = pairs.count()
        if state is not None:  # last: every read of the stored pairs is done
            state.stage_commit()
    finally:  # the state's frames first (see SemanticPairs.unpersist)
        if state is not None:
            state.unpersist()
        sp.unpersist()
    if state is not None:  # with nothing cached left that reads the state tables
        state.commit()
    return found


if __name__ == "__main__":  # spark-submit spark_jobs/dedup.py ARGS
    from spark_jobs.cli import main

    main("dedup")
