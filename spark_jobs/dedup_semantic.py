"""Semantic dedup: embeddings → pairs between distinct vectors → `duplicates` rows, all in Spark.

1. Usable embeddings only: a row whose embedding is NULL, empty, holds a NaN or a NULL
   element, or whose scores row has an `error` (decoding failed) is skipped and counted
   (`embeddings_skipped` in the summary), never a crash or a NaN similarity.
2. Identical embeddings are grouped first (by two hashes of the array, 96 bits): one
   representative per distinct vector, its best-ranked sample (smallest sample_id under
   farthest_from_centroid, where copies tie by construction), goes on; so 10^5 copies of one
   vector cost one row, not a cluster that cannot be split and 10^10 pairs.
3. Coarse k-means on a seeded sample of the representatives on the driver, centroids
   broadcast, each assigned in a pandas UDF to its nearest centroid (and up to
   `coarse_assignments` in all, the next nearest within `second_margin`); grouped by coarse
   centroid, `applyInPandas(fine_cluster_pairs)` splits each group below
   `max_cluster_size` and emits the pairs at the lowest threshold.
   With fewer than two distinct vectors there is nothing to pair: no k-means runs.
   In the job the centroids come from `dedup_centroids` when they match (model, seed, k,
   dimension) and only the coarse groups whose members changed go through the fine stage,
   which then compares their new members with the stored fine clusters they fall in
   (curator_udfs.fine_increment); the others' rows are read from `dedup_group_pairs`
   (spark_jobs.dedup_state says what is stored and why). The API passes no state and
   computes everything. The job runs the assignment UDF once, into a small persisted frame
   both the membership pass and the fine stage read (`_assigned_once`), and only over the
   representatives the state does not hold with the same embedding.
4. Per eps, pairs with similarity >= 1 - eps, plus for every copy: an edge to its
   representative (similarity 1, no cluster) and one to its representative's best-ranked
   partner at that eps. As for perceptual groups (spark_jobs.dedup_perceptual), that keeps
   every sample's best-ranked similar partner, so resolution (spark_jobs.dedup_resolve) gives
   the rows the expanded pair set would, in O(n) rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DoubleType, FloatType, LongType

from curator_udfs.fine_increment import increment_group_pairs
from curator_udfs.kmeans import assign_ids, fit_sample
from curator_udfs.resolve import DIST_COLUMN, order_for
from curator_udfs.semantic import fine_cluster_pairs
from spark_jobs.config import Config
from spark_jobs.dedup_resolve import (
    best_partners,
    centroid_distances,
    eps_pairs,
    keyed_ids,
    rank_key,
    resolve_counted,
    unique_pairs,
)
from spark_jobs.dedup_state import SemanticState
from spark_jobs.literal_frames import literal_frame
from spark_jobs.summary import Summary
from spark_jobs.tables import read_table

__all__ = [
    "SemanticPairs",
    "coarse_centroids",
    "embeddings",
    "semantic_pairs",
    "semantic_rows",
    "usable_embedding",
]

_EMB = ("sample_id", "embedding")
FINE_SCHEMA = (
    "a STRING, b STRING, similarity DOUBLE, cluster STRING, dist_a DOUBLE, dist_b DOUBLE, "
    "cluster_size BIGINT, centroid ARRAY<FLOAT>"
)
PAIRS_SCHEMA = "a STRING, b STRING, similarity DOUBLE, cluster STRING, dist_a DOUBLE, dist_b DOUBLE"


def embeddings(spark: SparkSession, cfg: Config, model: str | None) -> DataFrame:
    """`sample_id, embedding` of every scores row of `model` (NULL embedding where the row
    has an error); no rows for None. Unusable ones are filtered and counted later."""
    if model is None:
        return spark.createDataFrame([], "sample_id STRING, embedding ARRAY<FLOAT>")
    return (
        read_table(spark, cfg, "scores")
        .where(F.col("model") == model)
        .select("sample_id", F.when(F.col("error").isNull(), F.col("embedding")).alias("embedding"))
    )


def usable_embedding(element: DataType) -> Column:
    """True for a non-empty embedding without NULL or NaN elements; `element` is the array's
    element type.

    For float and double elements, `array_contains` of a NaN of that type (Spark's NaN equals
    NaN; the result is NULL for a NULL element): a higher-order `exists` evaluated its lambda
    element by element, about 1 s more per 100k x 768 scan (measured). A NaN of another type
    would cast every array."""
    if not isinstance(element, FloatType | DoubleType):  # no NaN: only NULL elements to find
        bad = F.exists("embedding", lambda v: v.isNull())
    else:
        nan = F.lit(float("nan")).cast(element)
        bad = F.coalesce(F.array_contains("embedding", nan), F.lit(True))
    return F.col("embedding").isNotNull() & (F.size("embedding") > 0) & ~bad


def coarse_centroids(emb: DataFrame, cfg: Config, n: int) -> tuple[np.ndarray, str, int, int]:
    """Fit the coarse k-means on a seeded sample; return (centroids, backend, k, sample rows).

    The sample is the `sample_size` rows with the smallest xxhash64(sample_id, seed): the
    same rows whatever the partitioning, sorted by sample_id before fitting (determinism).
    They are picked by their ids first, then their embeddings read by a broadcast semi-join: a
    top-k over the rows with their embeddings sent every partition's first `sample_size`
    embeddings to one task (1.3 GB of shuffle at 1M x 768 for 150 MB of sample).
    """
    d = cfg.dedup
    k = max(1, min(d.coarse_k or n // 5000, n))
    order = (F.xxhash64("sample_id", F.lit(d.seed)), "sample_id")
    picked = emb.select("sample_id").orderBy(*order).limit(d.sample_size)
    sample = emb.join(F.broadcast(picked), "sample_id", "left_semi")
    # pyspark types toPandas() with an alias that does not resolve without pandas stubs
    pdf = cast(pd.DataFrame, sample.toPandas())
    centroids, backend = fit_sample(pdf, k, backend=d.backend, seed=d.seed, max_iter=20)
    return centroids, backend, k, len(pdf)


def coarse_assign_udf(centroids: Any, second_margin: float | None, max_ids: int) -> Any:
    """pandas UDF: embedding → its coarse centroid ids, nearest first (`nearest_ids`)."""

    # pyspark's stubs lack the type-hint form pandas_udf(returnType) without functionType
    @F.pandas_udf(ArrayType(LongType()))  # type: ignore[call-overload]
    def coarse_ids(emb: pd.Series) -> pd.Series:
        return assign_ids(emb, centroids.value, second_margin=second_margin, max_ids=max_ids)

    return coarse_ids


@dataclass(frozen=True)
class SemanticPairs:
    """Unique pairs between representatives, and the copies of each representative."""

    pairs: DataFrame  # a, b, similarity, cluster, dist_a, dist_b (lazily checkpointed)
    copies: DataFrame  # sample_id, rep: samples whose embedding equals rep's (persisted)
    held: tuple[DataFrame, ...] = ()  # persisted frames the two above are read from

    def unpersist(self) -> None:
        """Drop the persisted frames, the last persisted first (after the job state's): Spark
        may re-plan the cached frames still read from a dropped one, about a second each for
        these plans. With the bases dropped first that cost 4 s a run at 100k, in this order
        (measured) 1-1.5 s."""
        for df in reversed((self.pairs, self.copies, *self.held)):
            df.unpersist()

    def all_pairs(self) -> DataFrame:
        """What `duplicate_pairs` gets: the pairs, plus each copy with its representative."""
        copies = self.copies.select(
            F.least("sample_id", "rep").alias("a"),
            F.greatest("sample_id", "rep").alias("b"),
            F.lit(1.0).alias("similarity"),
            F.lit(None).cast("string").alias("cluster"),
        )
        return self.pairs.select("a", "b", "similarity", "cluster").unionByName(copies)


def _group_identical(
    emb: DataFrame, ranked: DataFrame, order: str
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """(keyed: sample_id, key, h1, h2, ok, dim, one row per sample; best: h1, h2, rep, size,
    ok, dim, one row per distinct vector; reps: h1, h2, sample_id (= rep), embedding, on disk,
    partitioned by (h1, h2, sample_id); scan: the hashed scan, on disk, which the first two are
    computed from and reps picked out of; all four persisted).

    Grouped by two independent hashes of the array (xxhash64 and murmur3, 96 bits: two distinct
    vectors among 10^9 share a group with probability ~10^-11), not by the array itself, and
    without the embeddings: the best-ranked sample of each group is found over (hashes, rank
    key, sample_id) rows only, then the representatives' embeddings are picked out of the scan
    by a shuffled hash join on (h1, h2, sample_id): the embeddings are read from Delta once
    (the hashed scan is cached on disk: reading it back costs a fifth of the Delta scan at 1M x
    768), shuffled once and never sorted (a min over structs holding them sorted 3 GB twice at
    1M x 768; keyed by the array, they were cached twice and ran a 6 GB local driver out of
    heap). The rank key is joined to the small hashed rows, not to the scan (joined to the
    scan, it shuffled the 3 GB twice more). `emb` has a NULL embedding where it is unusable:
    those rows form the one group that is not `ok` (counted, never paired)."""
    key = F.struct("sample_id") if order == "farthest_from_centroid" else rank_key(order)
    keyed = emb.select(
        "sample_id", "embedding", F.xxhash64("embedding").alias("h1"),
        F.hash("embedding").alias("h2"),
    ).persist(StorageLevel.DISK_ONLY)  # fmt: skip
    ok = F.col("embedding").isNotNull()
    hashed = keyed.select(
        "sample_id", "h1", "h2", ok.alias("ok"), F.when(ok, F.size("embedding")).alias("dim")
    )  # the rank key is joined to these small rows: the embeddings are never shuffled for it
    small = (
        hashed.join(ranked, "sample_id", "left")
        .select("sample_id", key.alias("key"), "h1", "h2", "ok", "dim")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    best = (
        small.groupBy("h1", "h2")
        .agg(
            F.min(F.struct("key", "sample_id")).alias("m"),
            F.count(F.lit(1)).alias("size"),
            F.max("ok").alias("ok"),
            F.max("dim").alias("dim"),
        )
        .select("h1", "h2", F.col("m.sample_id").alias("rep"), "size", "ok", "dim")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    chosen = best.where("ok").select("h1", "h2", F.col("rep").alias("sample_id"))
    reps = keyed.where(ok).select("h1", "h2", "sample_id", "embedding")
    reps = reps.join(chosen.hint("shuffle_hash"), ["h1", "h2", "sample_id"], "left_semi")
    # on disk only: a cached partition of embeddings is read back as one buffer when its level
    # allows memory (1M x 768 in 8 shuffle partitions: ~350 MB each, two tasks at a time, heap out)
    return small, best, reps.persist(StorageLevel.DISK_ONLY), keyed


def semantic_pairs(
    spark: SparkSession,
    cfg: Config,
    emb: DataFrame,
    ranked: DataFrame,
    summary: Summary,
    state: SemanticState | None = None,
) -> SemanticPairs:
    """Steps 1-3 of the module docstring over `emb` (sample_id, embedding), any source.

    `ranked` holds the order columns (spark_jobs.dedup.rank_frame); the frames returned are
    persisted: call `.unpersist()`. Shared by the job and the Python API. With `state` (the
    job), stored centroids are reused and only touched coarse groups recomputed
    (spark_jobs.dedup_state); without it (the API), everything is computed here. The counts
    (usable, skipped, distinct, copies) come from one aggregate over the identical-vector
    groups, the fine clusters' from one over the fine stage's output.
    """
    d = cfg.dedup
    order = order_for("semantic", d.keep)
    element = cast(ArrayType, emb.schema["embedding"].dataType).elementType
    usable = usable_embedding(element)
    emb = emb.select("sample_id", F.when(usable, F.col("embedding")).alias("embedding"))
    keyed, best, reps, scan = _group_identical(emb, ranked, order)
    ok = F.col("ok")
    counts = best.agg(
        F.sum(F.when(ok, F.col("size"))).alias("n"),
        F.sum(F.when(~ok, F.col("size"))).alias("skipped"),
        F.count(F.when(ok, 1)).alias("reps"),
        F.max("dim").alias("dim"),
    ).first()
    assert counts is not None  # a global aggregate has exactly one row
    n, skipped = int(counts["n"] or 0), int(counts["skipped"] or 0)
    n_reps = int(counts["reps"] or 0)
    n_copies = n - n_reps
    summary.extra.update(embeddings=n, embeddings_skipped=skipped)
    if skipped:
        summary.extra["embeddings_note"] = (
            f"{skipped:,} scores rows have no usable embedding (NULL, empty, NaN or an "
            "error from the embed job): skipped"
        )
    summary.extra.update(distinct_embeddings=n_reps, identical_copies=n_copies)
    copies = (
        keyed.join(best.where(ok & (F.col("size") > 1)).select("h1", "h2", "rep"), ["h1", "h2"])
        .where(F.col("sample_id") != F.col("rep"))
        .select("sample_id", "rep")
    )
    copies = copies.persist(StorageLevel.MEMORY_AND_DISK)
    held: tuple[DataFrame, ...] = (keyed, best, reps)
    if n_reps < 2:
        summary.extra["semantic_note"] = (
            f"{n_reps} distinct embedding(s) of {n:,}: nothing to compare beyond identical "
            "copies; no k-means ran"
        )
        pairs = spark.createDataFrame([], PAIRS_SCHEMA)
    else:
        dim = int(counts["dim"] or 0)
        rep_keys = best.where(ok).select("h1", "h2", F.col("rep").alias("sample_id"))
        pairs, fine_held = _fine_pairs(spark, cfg, reps, n_reps, summary, state, dim, rep_keys)
        held += fine_held
    scan.unpersist()  # reps, the last frame read from it, is on disk after the fine stage
    return SemanticPairs(pairs=pairs, copies=copies, held=held)


def _fine_pairs(
    spark: SparkSession,
    cfg: Config,
    reps: DataFrame,
    n: int,
    summary: Summary,
    state: SemanticState | None = None,
    dim: int = 0,
    rep_keys: DataFrame | None = None,
) -> tuple[DataFrame, tuple[DataFrame, ...]]:
    """Coarse fit (or stored centroids), assignment and fine-cluster pairs of `n`
    representatives (`rep_keys`: their h1, h2, sample_id, from a small persisted frame):
    (unique pairs, lazily checkpointed; the persisted frames they are read from: the
    fine-stage output first)."""
    d = cfg.dedup
    t0 = time.perf_counter()
    if state is None:
        centroids, backend, _, sampled = coarse_centroids(reps.select(*_EMB), cfg, n)
        summary.extra["coarse_sample"] = sampled
    else:
        centroids, backend = state.centroids(
            n, dim, lambda: coarse_centroids(reps.select(*_EMB), cfg, n), summary
        )
    summary.extra.update(
        kmeans_backend=backend,
        coarse_k=int(centroids.shape[0]),
        coarse_fit_seconds=round(time.perf_counter() - t0, 3),
        second_margin=d.second_margin,
        coarse_assignments=d.coarse_assignments,
        fine_margin=d.fine_margin,
        fine_resplits=d.fine_resplits,
    )
    bc = spark.sparkContext.broadcast(centroids)
    coarse_ids = coarse_assign_udf(bc, d.second_margin, d.coarse_assignments)("embedding")
    params: dict[str, Any] = dict(
        thresholds=[1.0 - e for e in d.eps], max_cluster_size=d.max_cluster_size, seed=d.seed,
        backend=d.backend, block_size=d.block_size, fine_margin=d.fine_margin,
        fine_resplits=d.fine_resplits,
    )  # fmt: skip
    fine_fn = partial(fine_cluster_pairs, include_stats=True, **params)
    inc_fn = partial(increment_group_pairs, **params)
    held: tuple[DataFrame, ...] = ()
    if state is None:
        assigned = reps.select("sample_id", "embedding", F.explode(coarse_ids).alias("coarse"))
        fine = assigned.groupBy("coarse").applyInPandas(fine_fn, FINE_SCHEMA)
    else:
        known = state.stored_assignment()
        members, assigned, held, lost = _assigned_once(reps, coarse_ids, known, rep_keys)
        fine = state.fine_rows(
            members,
            assigned,
            lost,
            lambda df: df.groupBy("coarse").applyInPandas(fine_fn, FINE_SCHEMA),
            lambda df: df.groupBy("coarse").applyInPandas(inc_fn, FINE_SCHEMA),
            summary,
        )
    fine = fine.persist(StorageLevel.MEMORY_AND_DISK)
    stats = fine.agg(
        F.count(F.when(F.col("a").isNull(), 1)).alias("clusters"),
        F.max(F.when(F.col("a").isNull(), F.col("cluster_size"))).alias("largest"),
    ).first()
    assert stats is not None  # a global aggregate has exactly one row
    pairs = unique_pairs(fine.where(F.col("a").isNotNull()).drop("cluster_size"))
    pairs = pairs.localCheckpoint(eager=False)  # lineage cut; read by every later step
    summary.extra.update(
        fine_clusters=int(stats["clusters"] or 0),
        largest_fine_cluster=int(stats["largest"] or 0),
    )
    return pairs, (fine, *held)


def _assigned_once(
    reps: DataFrame,
    coarse_ids: Column,
    known: DataFrame | None = None,
    rep_keys: DataFrame | None = None,
) -> tuple[DataFrame, DataFrame, tuple[DataFrame, ...], DataFrame | None]:
    """(members: coarse, sample_id, embedding_hash, fresh; assigned: sample_id, embedding,
    coarse, embedding_hash; the persisted frames both are read from; lost: coarse, sample_id,
    embedding_hash of the stored members that are no representative now, None without `known`).

    The job reads the assignment twice (the state's membership pass, then the fine stage), so
    the pandas UDF runs once, into a small persisted frame without the embeddings (1M x 768
    exploded over two coarse groups would be 4+ GB), joined back to the representatives on
    their keys: the representatives are persisted partitioned by (h1, h2, sample_id), so the
    shuffled hash join reads them in place; only the small side is exchanged. h1 is the
    xxhash64 of the embedding that `dedup_members.embedding_hash` has always held.

    With `known` (coarse, sample_id, embedding_hash: the stored assignment under the same
    centroids and margins, one row per group, spark_jobs.dedup_state), a representative stored
    with the same embedding hash keeps its stored groups (the assignment is a function of the
    embedding), so the UDF, and the transfer of embeddings into Python, runs over the others
    only (`fresh` members). One full outer join of `rep_keys` (the representatives' keys,
    without their embeddings) with `known` tells the three apart: kept, fresh, and lost
    (stored only: a removed sample, a changed embedding, or a copy now); it is all the state
    needs to know which groups gained or lost members."""
    keys = ["h1", "h2", "sample_id"]
    lost: DataFrame | None = None
    held: tuple[DataFrame, ...] = ()
    fresh_ids = F.explode(coarse_ids).alias("coarse"), F.lit(True).alias("fresh")
    if known is None:
        ids = reps.select(*keys, *fresh_ids)
    else:
        rep_keys = rep_keys if rep_keys is not None else reps.select(*keys)
        stored = known.select(
            "sample_id", F.col("embedding_hash").alias("h1"), F.col("coarse").alias("was")
        )
        both = rep_keys.join(stored, ["sample_id", "h1"], "full_outer")
        both = both.persist(StorageLevel.MEMORY_AND_DISK)  # read 3 times: kept, fresh, lost
        held = (both,)
        now, was = F.col("h2").isNotNull(), F.col("was").isNotNull()  # h2: never NULL in reps
        kept = both.where(now & was).select(
            *keys, F.col("was").alias("coarse"), F.lit(False).alias("fresh")
        )
        fresh = both.where(~was).select(*keys)
        rest = reps.join(fresh.hint("shuffle_hash"), keys, "left_semi")
        ids = kept.unionByName(rest.select(*keys, *fresh_ids))
        lost = both.where(~now).select(
            F.col("was").alias("coarse"), "sample_id", F.col("h1").alias("embedding_hash")
        )
    ids = ids.persist(StorageLevel.MEMORY_AND_DISK)  # one row per representative and group
    members = ids.select("coarse", "sample_id", F.col("h1").alias("embedding_hash"), "fresh")
    assigned = reps.join(ids.hint("shuffle_hash"), keys).select(
        "sample_id", "embedding", "coarse", F.col("h1").alias("embedding_hash")
    )
    return members, assigned, (ids, *held), lost


def _copy_edges(
    sp: SemanticPairs, per_eps: DataFrame, ranks: DataFrame, order: str, eps_values: list[float]
) -> DataFrame:
    """Per eps, each copy → its representative and → the representative's best partner."""
    eps = literal_frame(
        per_eps.sparkSession, [(float(e),) for e in eps_values], [("eps", "double")]
    )
    to_rep = sp.copies.crossJoin(F.broadcast(eps)).select(
        F.col("sample_id").alias("a"),
        F.col("rep").alias("b"),
        F.lit(1.0).alias("similarity"),
        F.lit(None).cast("string").alias("cluster"),
        "eps",
    )
    nb = best_partners(per_eps, keyed_ids(per_eps, ranks, order), better_only=False)
    to_nb = sp.copies.join(nb.withColumnRenamed("sample_id", "rep"), "rep").select(
        F.col("sample_id").alias("a"),
        F.col("similar_to").alias("b"),
        "similarity",
        "cluster",
        "eps",
    )
    return to_rep.unionByName(to_nb)


def semantic_rows(
    sp: SemanticPairs,
    ranked: DataFrame,
    cfg: Config,
    summary: Summary,
    removed: dict[str, int] | None = None,
) -> DataFrame:
    """The `duplicates` rows (no run_id) of every `dedup.eps`, each eps resolved on its own
    (step 4 of the module docstring); counts per eps into `removed`, rounds into the summary."""
    order = order_for("semantic", cfg.dedup.keep)
    ranks = ranked
    if order == "farthest_from_centroid":  # a copy is as far from the centroid as its rep
        dist = centroid_distances(sp.pairs)
        copies = sp.copies.join(dist.withColumnRenamed("sample_id", "rep"), "rep")
        dist = dist.unionByName(copies.select("sample_id", DIST_COLUMN))
        ranks = ranked.join(dist, "sample_id", "left")
    eps_values = cfg.dedup.eps
    per_eps = eps_pairs(sp.pairs.select("a", "b", "similarity", "cluster"), eps_values)
    per_eps = per_eps.unionByName(_copy_edges(sp, per_eps, ranks, order, eps_values))
    res = resolve_counted(per_eps, ranks, order)  # every eps in the same rounds
    summary.extra.setdefault("resolve_rounds", {})["semantic"] = res.rounds
    if removed is not None:
        for e in eps_values:
            removed[f"semantic eps={e:g}"] = res.counts.get(float(e), 0)
    rows = res.rows
    return rows.withColumn("method", F.lit("semantic"))
