"""Perceptual dedup's candidate pairs: equal pHashes grouped first, then a band join of groups.

Samples sharing a `phash` form a group whose representative is its best-ranked member (under
the resolution order, see :func:`spark_jobs.dedup_resolve.rank_key`). Only one row per
distinct hash goes into the band join (:func:`hash_pairs`), so a hash shared by 10^5 blank
images costs one row, not 10^10 pairs. The candidate edges handed to resolution are O(n):

1. each member → its group's representative (distance 0);
2. representative ↔ representative for every pair of hashes within the distance bound;
3. each member → the best-ranked representative among its group's neighbour hashes.

Exactness: for a member x of group h, every brute-force partner of x is another member of h
or a member of a neighbour group h'; the best-ranked of those is h's representative or some
neighbour's representative, i.e. the better of edges 1 and 3, both true pairs with their true
distance. A representative's best partner is a neighbour's representative (edge 2). So the
best-ranked partner of every sample, and with it `similar_to`, `similarity` and
`duplicate_of`, is the same as over all pairs (tests/test_dedup_perceptual.py checks it
against the all-pairs definition).

The full pair set (for `dedup.write_pairs`, a check table) is :func:`expand_pairs`: quadratic
in the group sizes by definition, computed only when asked; its size is counted without
building it (:func:`perceptual_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from curator_udfs.phash import band_layout
from spark_jobs.dedup_resolve import rank_key

__all__ = [
    "PerceptualCandidates",
    "expand_pairs",
    "hash_pairs",
    "pair_count",
    "perceptual_candidates",
]


def hash_pairs(hashes: DataFrame, max_distance: int, n_bands: int) -> DataFrame:
    """Pairs of distinct `phash` values (ha < hb) with Hamming distance <= max_distance.

    Candidates come from an equi-join on (band index, band value), never all pairs: every
    pair with distance < n_bands shares a band (pigeonhole), so n_bands = max_distance + 1
    finds all of them; fewer bands find most at far fewer candidates. Columns ha, hb, distance.
    """
    distinct = hashes.select("phash").distinct()
    banded = distinct.select(
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
    ).select("phash", "bv.band", "bv.value")
    left, right = banded.alias("l"), banded.alias("r")
    cand = left.join(
        right,
        (F.col("l.band") == F.col("r.band"))
        & (F.col("l.value") == F.col("r.value"))
        & (F.col("l.phash") < F.col("r.phash")),
    ).select(
        F.col("l.phash").alias("ha"),
        F.col("r.phash").alias("hb"),
        F.bit_count(F.col("l.phash").bitwiseXOR(F.col("r.phash"))).alias("distance"),
    )
    return cand.where(F.col("distance") <= max_distance).dropDuplicates(["ha", "hb"])


def _similarity(distance: str) -> Column:
    return (1.0 - F.col(distance) / 64.0).alias("similarity")


@dataclass(frozen=True)
class PerceptualCandidates:
    """The O(n) edges for resolution and the frames the full pair set is built from."""

    edges: DataFrame  # a, b, similarity
    members: DataFrame  # sample_id, phash, rep, size (persisted)
    hash_pairs: DataFrame  # ha, hb, distance, rep_a, rk_a, rep_b, rk_b (persisted)

    def unpersist(self) -> None:
        """Drop the persisted frames."""
        self.members.unpersist()
        self.hash_pairs.unpersist()


def perceptual_candidates(
    hashes: DataFrame, ranks: DataFrame, order: str, max_distance: int, n_bands: int
) -> PerceptualCandidates:
    """Candidate edges (module docstring) of `hashes` (sample_id, phash non-null); `ranks`
    holds sample_id and the columns of `order` (a sample missing there ranks with nulls).
    The members and hash pairs are persisted: call `.unpersist()` when done."""
    keyed = hashes.select("sample_id", "phash").join(ranks, "sample_id", "left")
    keyed = keyed.select("sample_id", "phash", rank_key(order).alias("key"))
    groups = keyed.groupBy("phash").agg(
        F.min(F.struct("key", "sample_id")).alias("m"), F.count(F.lit(1)).alias("size")
    )
    groups = groups.select(
        "phash", F.col("m.sample_id").alias("rep"), F.col("m.key").alias("rk"), "size"
    )
    members = keyed.join(groups, "phash").select("sample_id", "phash", "rep", "size")
    members = members.persist(StorageLevel.MEMORY_AND_DISK)
    hp = hash_pairs(hashes, max_distance, n_bands)
    ga = groups.select(
        F.col("phash").alias("ha"), F.col("rep").alias("rep_a"), F.col("rk").alias("rk_a")
    )
    gb = groups.select(
        F.col("phash").alias("hb"), F.col("rep").alias("rep_b"), F.col("rk").alias("rk_b")
    )
    rp = hp.join(ga, "ha").join(gb, "hb").persist(StorageLevel.MEMORY_AND_DISK)
    # best-ranked neighbour representative of each hash, over the hash pairs both ways
    nb = (
        rp.select(
            F.col("ha").alias("h"),
            F.struct(F.col("rk_b").alias("rk"), "distance", F.col("rep_b").alias("rep")).alias("s"),
        )
        .union(
            rp.select(
                F.col("hb").alias("h"),
                F.struct(F.col("rk_a").alias("rk"), "distance", F.col("rep_a").alias("rep")).alias(
                    "s"
                ),
            )
        )
        .groupBy("h")
        .agg(F.min("s").alias("m"))
        .select(
            F.col("h").alias("phash"),
            F.col("m.rep").alias("nb"),
            F.col("m.distance").alias("nb_distance"),
        )
    )
    non_rep = members.where(F.col("sample_id") != F.col("rep"))
    edges = (
        non_rep.select(
            F.col("sample_id").alias("a"), F.col("rep").alias("b"), F.lit(1.0).alias("similarity")
        )
        .unionByName(
            rp.select(F.col("rep_a").alias("a"), F.col("rep_b").alias("b"), _similarity("distance"))
        )
        .unionByName(
            non_rep.join(nb, "phash").select(
                F.col("sample_id").alias("a"), F.col("nb").alias("b"), _similarity("nb_distance")
            )
        )
    )
    return PerceptualCandidates(edges=edges, members=members, hash_pairs=rp)


def pair_count(cands: PerceptualCandidates) -> int:
    """How many pairs the full pair set holds, counted from group sizes (nothing expanded);
    one aggregate over the pairs within groups and across neighbour hashes."""
    sizes = cands.members.select("phash", "size").distinct()
    within = sizes.select((F.col("size") * (F.col("size") - 1) / 2).cast("long").alias("n"))
    sa = sizes.select(F.col("phash").alias("ha"), F.col("size").alias("sa"))
    sb = sizes.select(F.col("phash").alias("hb"), F.col("size").alias("sb"))
    across = cands.hash_pairs.join(sa, "ha").join(sb, "hb")
    across = across.select((F.col("sa") * F.col("sb")).cast("long").alias("n"))
    total = within.unionByName(across).agg(F.sum("n").alias("n")).first()
    return int((total["n"] if total else 0) or 0)


def expand_pairs(cands: PerceptualCandidates) -> DataFrame:
    """Every pair (a < b, similarity) within the distance bound: what the band join over all
    samples found before grouping. Quadratic in group sizes; only for `dedup.write_pairs`."""
    m = cands.members.select("sample_id", "phash")
    within = (
        m.alias("l")
        .join(
            m.alias("r"),
            (F.col("l.phash") == F.col("r.phash")) & (F.col("l.sample_id") < F.col("r.sample_id")),
        )
        .select(
            F.col("l.sample_id").alias("a"),
            F.col("r.sample_id").alias("b"),
            F.lit(1.0).alias("similarity"),
        )
    )
    ma = m.select(F.col("sample_id").alias("x"), F.col("phash").alias("ha"))
    mb = m.select(F.col("sample_id").alias("y"), F.col("phash").alias("hb"))
    across = (
        cands.hash_pairs.select("ha", "hb", "distance")
        .join(ma, "ha")
        .join(mb, "hb")
        .select(
            F.least("x", "y").alias("a"), F.greatest("x", "y").alias("b"), _similarity("distance")
        )
    )
    return within.unionByName(across)
