"""Similar pairs → `duplicates` rows as Spark DataFrame operations: nothing per pair on the driver.

The rule (design, dedup step e): a sample is a duplicate if a better-ranked sample is similar
to it. The order is a total order over samples (:func:`curator_udfs.resolve.sort_spec`: nulls
and NaN worst, ties by sample_id), encoded as one comparable struct per sample
(:func:`rank_key`, smaller = better), so "better-ranked" is a column comparison and no global
sort or rank number is needed.

- :func:`best_partners`: per sample (and per `eps` group), its best-ranked better partner
  (`similar_to`) over the pairs in both directions, the highest similarity among repeated
  pairs, then the smallest cluster name; a min aggregation over a struct.
- :func:`follow_chains`: `duplicate_of` = the kept sample at the end of the `similar_to`
  chain, by pointer jumping: each round joins the rows with themselves and replaces
  duplicate_of by duplicate_of's duplicate_of, so a chain of length L takes about
  log2(L) + 1 rounds. Each round is one lazy self-join, local-checkpointed lazily (the
  lineage is cut, no extra Spark job) and one small aggregate (rows and changed rows per
  eps): the round that changes nothing is the convergence check, so a set without chains
  longer than one costs a single aggregate, which also gives the per-eps counts. All eps
  values go through the same rounds (eps is a grouping and join column). After `max_rounds`
  (32: chains of up to 2^32 samples) rows still pointing at a duplicate raise an error, never
  a silently wrong duplicate_of (the partner is strictly better-ranked, so chains cannot
  cycle; hitting the bound means a bug, and nothing is written).

This matches :func:`curator_udfs.resolve.resolve_duplicates` (the pandas reference the tests
compare with) row for row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from curator_udfs.resolve import DIST_COLUMN, sort_spec

__all__ = [
    "MAX_ROUNDS",
    "RESOLVED_COLUMNS",
    "Resolution",
    "ResolveError",
    "best_partners",
    "centroid_distances",
    "eps_pairs",
    "follow_chains",
    "follow_chains_counted",
    "keyed_ids",
    "order_columns",
    "rank_key",
    "resolve",
    "resolve_counted",
    "unique_pairs",
]

MAX_ROUNDS = 32


class ResolveError(RuntimeError):
    """duplicate_of chains still unresolved after the bounded number of rounds."""


def order_columns(order: str) -> list[Column]:
    """Spark sort expressions of :func:`curator_udfs.resolve.sort_spec` (best first)."""
    return [
        F.col(c).asc_nulls_last() if asc else F.col(c).desc_nulls_last()
        for c, asc in sort_spec(order)
    ]


def rank_key(order: str) -> Column:
    """One struct over the order's columns: smaller = better-ranked, unique per sample_id.

    Each order column becomes (is null or NaN, value or -value), so nulls and NaN are worst
    and struct comparison is the order of :func:`curator_udfs.resolve.rank_order`.
    """
    fields: list[Column] = []
    for i, (col, asc) in enumerate(sort_spec(order)):
        if col == "sample_id":
            fields.append(F.col("sample_id").cast("string").alias(f"k{i}"))
            continue
        v = F.col(col).cast("double")
        v = F.when(~F.isnan(v), v)  # NaN -> null: pandas ranks NaN as missing
        fields += [v.isNull().alias(f"n{i}"), (v if asc else -v).alias(f"k{i}")]
    return F.struct(*fields)


def keyed_ids(pairs: DataFrame, ranks: DataFrame, order: str) -> DataFrame:
    """`sample_id, key` of every sample in `pairs` (a, b); missing from `ranks` = null columns."""
    ids = (
        pairs.select(F.col("a").alias("sample_id"))
        .union(pairs.select(F.col("b").alias("sample_id")))
        .distinct()
    )
    return ids.join(ranks, "sample_id", "left").select("sample_id", rank_key(order).alias("key"))


def best_partners(pairs: DataFrame, keys: DataFrame, *, better_only: bool = True) -> DataFrame:
    """Per (eps, sample) with a better-ranked partner: `sample_id, similar_to, similarity,
    cluster, eps`. `pairs` has a, b, similarity, cluster, eps (any orientation, repeats fine);
    `keys` is :func:`keyed_ids`. `better_only=False`: the best-ranked partner, better or not."""
    p = pairs.where(F.col("a") != F.col("b"))
    rest = ["similarity", "cluster", "eps"]
    directed = p.select(F.col("a").alias("x"), F.col("b").alias("y"), *rest).unionByName(
        p.select(F.col("b").alias("x"), F.col("a").alias("y"), *rest)
    )
    kx = keys.select(F.col("sample_id").alias("x"), F.col("key").alias("kx"))
    ky = keys.select(F.col("sample_id").alias("y"), F.col("key").alias("ky"))
    better = directed.join(kx, "x").join(ky, "y")
    if better_only:
        better = better.where(F.col("ky") < F.col("kx"))
    best = better.groupBy("eps", "x").agg(
        F.min(
            F.struct(
                "ky",
                (-F.col("similarity")).alias("neg_sim"),
                F.col("cluster").isNull().alias("no_cluster"),
                "cluster",
                "y",
            )
        ).alias("m")
    )
    return best.select(
        F.col("x").alias("sample_id"),
        F.col("m.y").alias("similar_to"),
        (-F.col("m.neg_sim")).alias("similarity"),
        F.col("m.cluster").alias("cluster"),
        "eps",
    )


class Resolution(NamedTuple):
    """Resolved rows, the rounds run and the row count per eps (None for exact/perceptual)."""

    rows: DataFrame
    rounds: int
    counts: dict[float | None, int]


def _jump(cur: DataFrame) -> DataFrame:
    """One pointer-jumping round (lazy): duplicate_of → duplicate_of's duplicate_of, and
    `_changed` where that moved the pointer (it named a duplicate)."""
    parent = cur.select(
        F.col("eps").alias("_p_eps"),
        F.col("sample_id").alias("_p_id"),
        F.col("duplicate_of").alias("_p_dup"),
    )
    on = F.col("eps").eqNullSafe(F.col("_p_eps")) & (F.col("duplicate_of") == F.col("_p_id"))
    return (
        cur.join(parent, on, "left")
        .withColumn("_changed", F.col("_p_dup").isNotNull())
        .withColumn("duplicate_of", F.coalesce("_p_dup", "duplicate_of"))
        .drop("_p_eps", "_p_id", "_p_dup")
    )


def _round_stats(nxt: DataFrame) -> tuple[dict[float | None, int], int]:
    """(rows per eps, rows changed) of a round: one small aggregate, one row per eps value."""
    stats = nxt.groupBy("eps").agg(
        F.count(F.lit(1)).alias("n"), F.count(F.when(F.col("_changed"), 1)).alias("changed")
    )
    rows = stats.collect()  # one row per eps value (a handful), never per sample
    counts = {(None if r["eps"] is None else float(r["eps"])): int(r["n"]) for r in rows}
    return counts, sum(int(r["changed"]) for r in rows)


def follow_chains_counted(best: DataFrame, max_rounds: int = MAX_ROUNDS) -> Resolution:
    """`best` plus `duplicate_of` (the kept sample its chain ends at), the rounds run and the
    rows per eps.

    Cheap on purpose: each round is one lazy self-join whose result is local-checkpointed
    lazily (lineage cut, no extra job) and one aggregate that counts its rows per eps and the
    rows it changed. A round that changes nothing proves the previous rows final, so the
    common case (no chain longer than one, e.g. stars around a kept sample) is a single
    aggregate, which also gives the per-eps counts and tells an empty input (0 rounds).
    Raises :class:`ResolveError` if rows still point at a duplicate after `max_rounds`.
    """
    cur = best.withColumn("duplicate_of", F.col("similar_to")).localCheckpoint(eager=False)
    for rounds in range(1, max_rounds + 2):
        nxt = _jump(cur).localCheckpoint(eager=False)
        counts, changed = _round_stats(nxt)
        if not counts:
            return Resolution(cur, 0, {})
        if changed == 0:
            return Resolution(cur, min(rounds, max_rounds), counts)
        if rounds > max_rounds:
            raise ResolveError(
                f"dedup resolution: {changed:,} duplicate_of values still name a duplicate "
                f"after {max_rounds} rounds of pointer jumping (chains longer than "
                f"2^{max_rounds}, which a strict order cannot produce: a bug); nothing was "
                "written"
            )
        cur = nxt.drop("_changed")
    raise AssertionError("unreachable")  # the loop returns or raises


def follow_chains(best: DataFrame, max_rounds: int = MAX_ROUNDS) -> tuple[DataFrame, int]:
    """`best` plus `duplicate_of`, and the rounds run (:func:`follow_chains_counted`)."""
    res = follow_chains_counted(best, max_rounds)
    return res.rows, res.rounds


RESOLVED_COLUMNS = ["sample_id", "duplicate_of", "similar_to", "similarity", "cluster", "eps"]


def resolve_counted(
    pairs: DataFrame, ranks: DataFrame, order: str, *, max_rounds: int = MAX_ROUNDS
) -> Resolution:
    """`duplicates` rows (sample_id, duplicate_of, similar_to, similarity, cluster, eps) of
    `pairs` (a, b, similarity, cluster, eps) under `order`; `ranks` holds sample_id and the
    order's columns. All eps values resolve in the same pass (eps is a grouping column), each
    independently of the others. Rows are lazily local-checkpointed (reading them again does
    not redo the search); also the rounds and the rows per eps."""
    best = best_partners(pairs, keyed_ids(pairs, ranks, order))
    res = follow_chains_counted(best, max_rounds)
    return Resolution(res.rows.select(*RESOLVED_COLUMNS), res.rounds, res.counts)


def resolve(
    pairs: DataFrame, ranks: DataFrame, order: str, *, max_rounds: int = MAX_ROUNDS
) -> tuple[DataFrame, int]:
    """(rows, rounds) of :func:`resolve_counted`."""
    res = resolve_counted(pairs, ranks, order, max_rounds=max_rounds)
    return res.rows, res.rounds


# ---- semantic pairs ------------------------------------------------------------------------------
def unique_pairs(found: DataFrame) -> DataFrame:
    """One row per (a, b): highest similarity, then smallest cluster name (deterministic).

    A pair is found once per fine cluster holding both samples (an embedding near a coarse
    border is assigned to two coarse centroids), so the same (a, b) can come several times.
    """
    best = found.groupBy("a", "b").agg(
        F.min(
            F.struct(
                (-F.col("similarity")).alias("neg_sim"),
                F.col("cluster").isNull().alias("no_cluster"),
                "cluster",
                "dist_a",
                "dist_b",
            )
        ).alias("m")
    )
    return best.select(
        "a",
        "b",
        (-F.col("m.neg_sim")).alias("similarity"),
        F.col("m.cluster").alias("cluster"),
        F.col("m.dist_a").alias("dist_a"),
        F.col("m.dist_b").alias("dist_b"),
    )


def centroid_distances(pairs: DataFrame) -> DataFrame:
    """sample_id → `dist_to_centroid`, its distance to its fine centroid (first cluster by
    name when it is in several)."""
    long = pairs.select(
        F.col("a").alias("sample_id"), F.col("dist_a").alias("dist"), "cluster"
    ).union(pairs.select("b", "dist_b", "cluster"))
    first = long.groupBy("sample_id").agg(
        F.min(F.struct(F.col("cluster").isNull().alias("n"), "cluster", "dist")).alias("m")
    )
    return first.select("sample_id", F.col("m.dist").alias(DIST_COLUMN))


def eps_pairs(pairs: DataFrame, eps_values: Sequence[float]) -> DataFrame:
    """`pairs` once per eps they are within (similarity >= 1 - eps, compared in float32, the
    similarity's precision when it was computed), with an `eps` column; one pass over the
    pairs (an exploded array of the eps a pair is within), not one scan per eps."""
    bounds = F.array(
        *[
            F.struct(F.lit(float(e)).alias("eps"), F.lit(1.0 - float(e)).cast("float").alias("t"))
            for e in eps_values
        ]
    )
    sim = F.col("similarity").cast("float")
    within = F.filter(bounds, lambda x: sim >= x["t"])
    return pairs.select("*", F.explode(within).alias("_e")).select(
        *pairs.columns, F.col("_e.eps").alias("eps")
    )
