"""Resolution in Spark (spark_jobs.dedup_resolve) against the pandas reference of the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curator_udfs.resolve import DIST_COLUMN, resolve_duplicates
from spark_jobs.dedup_resolve import (
    ResolveError,
    centroid_distances,
    eps_pairs,
    follow_chains,
    resolve,
    unique_pairs,
)

PAIRS_DDL = "a STRING, b STRING, similarity DOUBLE, cluster STRING, eps DOUBLE"
FOUND_DDL = "a STRING, b STRING, similarity DOUBLE, cluster STRING, dist_a DOUBLE, dist_b DOUBLE"
RANK_DDL = "sample_id STRING, aesthetic_score DOUBLE, width INT, height INT, pixels DOUBLE"


def _rank(spark, **scores: float | None):
    rows = [(s, v, 10, 10, 100.0) for s, v in scores.items()]
    return spark.createDataFrame(rows, RANK_DDL)


def _pairs(spark, *rows: tuple, eps: float | None = None):
    full = [(a, b, float(s), (r[0] if r else None), eps) for a, b, s, *r in rows]
    return spark.createDataFrame(full, PAIRS_DDL)


def _got(rows) -> dict[str, tuple]:
    pdf = rows.toPandas()
    return {
        r.sample_id: (r.duplicate_of, r.similar_to, round(r.similarity, 6))
        for r in pdf.itertuples()
    }


def test_chain_resolves_to_kept_and_counts_rounds(spark) -> None:
    # a > b > c > d > e: a chain e~d~c~b~a; every duplicate_of is a
    rank = _rank(spark, a=9.0, b=8.0, c=7.0, d=6.0, e=5.0)
    pairs = _pairs(spark, ("e", "d", 0.95), ("d", "c", 0.97), ("b", "c", 0.98), ("a", "b", 0.99))
    rows, rounds = resolve(pairs, rank, "aesthetic")
    assert _got(rows) == {
        "b": ("a", "a", 0.99),
        "c": ("a", "b", 0.98),
        "d": ("a", "c", 0.97),
        "e": ("a", "d", 0.95),
    }
    # similar_to depths 1..4: pointer jumping needs 2 changing rounds + 1 that changes nothing
    assert rounds == 3


def test_star_takes_one_round_and_empty_takes_none(spark) -> None:
    rank = _rank(spark, a=9.0, b=1.0, c=2.0)
    rows, rounds = resolve(_pairs(spark, ("a", "b", 0.99), ("c", "a", 0.98)), rank, "aesthetic")
    assert _got(rows) == {"b": ("a", "a", 0.99), "c": ("a", "a", 0.98)} and rounds == 1
    rows, rounds = resolve(_pairs(spark, ("a", "a", 1.0)), rank, "aesthetic")  # self pair only
    assert rows.count() == 0 and rounds == 0


def test_round_bound_hit_is_an_error_not_a_wrong_answer(spark) -> None:
    n = 9  # a chain of 9 needs 4 changing rounds
    best = spark.createDataFrame(
        [(f"s{i}", f"s{i - 1}", 0.99, None, None) for i in range(1, n)],
        "sample_id STRING, similar_to STRING, similarity DOUBLE, cluster STRING, eps DOUBLE",
    )
    with pytest.raises(ResolveError, match="after 2 rounds"):
        follow_chains(best, max_rounds=2)
    rows, rounds = follow_chains(best, max_rounds=4)  # converged exactly at the bound
    assert set(rows.toPandas()["duplicate_of"]) == {"s0"} and rounds == 4


def test_nulls_and_nan_rank_last_ties_by_sample_id(spark) -> None:
    rank = _rank(spark, a=None, b=0.0, c=float("nan"), z=1.0, m=1.0)
    pairs = _pairs(spark, ("a", "b", 0.99), ("c", "a", 0.98), ("z", "m", 0.97))
    rows, _ = resolve(pairs, rank, "aesthetic")
    # a (null) and c (NaN) both rank below b; among the two missing scores a < c by id
    assert _got(rows) == {"a": ("b", "b", 0.99), "c": ("b", "a", 0.98), "z": ("m", "m", 0.97)}


def test_repeated_pairs_highest_similarity_then_smallest_cluster(spark) -> None:
    rank = _rank(spark, a=3.0, b=2.0, c=1.0)
    pairs = _pairs(spark, ("c", "b", 0.99, "k1"), ("a", "c", 0.95, "k2"), ("c", "a", 0.96, "k3"))
    pairs = pairs.union(_pairs(spark, ("a", "c", 0.96, "k0")))
    rows, _ = resolve(pairs, rank, "aesthetic")
    got = {r.sample_id: (r.similar_to, r.similarity, r.cluster) for r in rows.collect()}
    # c's best-ranked partner is a, found three times: highest similarity, then cluster k0;
    # b's only partner (c) ranks worse, so b stays
    assert got == {"c": ("a", 0.96, "k0")}


def test_eps_groups_resolve_independently(spark) -> None:
    found = spark.createDataFrame(
        [("a", "b", 0.995, "c1", 0.0, 0.0), ("c", "d", 0.975, "c1", 0.0, 0.0)], FOUND_DDL
    )
    rank = _rank(spark, a=4.0, b=3.0, c=2.0, d=1.0)
    rows, _ = resolve(eps_pairs(found.drop("dist_a", "dist_b"), [0.01, 0.03]), rank, "aesthetic")
    by_eps = rows.toPandas().groupby("eps")["sample_id"].apply(sorted).to_dict()
    assert by_eps == {0.01: ["b"], 0.03: ["b", "d"]}


def test_eps_threshold_is_inclusive_in_float32(spark) -> None:
    sim = float(np.float32(1.0 - 0.01))
    below = float(np.nextafter(np.float32(sim), np.float32(0)))
    found = spark.createDataFrame(
        [("a", "b", sim, "c"), ("c", "d", below, "c")],
        "a STRING, b STRING, similarity DOUBLE, cluster STRING",
    )
    assert [(r.a, r.eps) for r in eps_pairs(found, [0.01]).collect()] == [("a", 0.01)]


def test_unique_pairs_keeps_highest_similarity_then_smallest_cluster(spark) -> None:
    found = spark.createDataFrame(
        [
            ("x", "y", 0.95, "c2", 0.1, 0.2),
            ("x", "y", 0.97, "c3", 0.3, 0.4),  # best similarity wins
            ("a", "b", 0.99, "c9", 0.0, 0.0),
            ("a", "b", 0.99, "c1", 0.5, 0.6),  # same similarity: smaller cluster name
            ("a", "c", 0.98, "c1", 0.0, 0.0),
        ],
        FOUND_DDL,
    )
    out = unique_pairs(found).toPandas().sort_values(["a", "b"]).reset_index(drop=True)
    assert [tuple(r) for r in out.itertuples(index=False)] == [
        ("a", "b", 0.99, "c1", 0.5, 0.6),  # the whole row of the kept pair, not a mix
        ("a", "c", 0.98, "c1", 0.0, 0.0),
        ("x", "y", 0.97, "c3", 0.3, 0.4),
    ]


def test_centroid_distances_first_cluster_by_name_and_farthest_kept(spark) -> None:
    found = spark.createDataFrame(
        [
            ("a", "b", 0.99, "c2", 0.10, 0.20),
            ("a", "c", 0.98, "c1", 0.30, 0.40),  # a is in c1 and c2: c1's distance
            ("b", "d", 0.97, "c2", 0.20, 0.50),
        ],
        FOUND_DDL,
    )
    dist = {r.sample_id: r[DIST_COLUMN] for r in centroid_distances(found).collect()}
    assert dist == {"a": 0.30, "b": 0.20, "c": 0.40, "d": 0.50}
    one = spark.createDataFrame([("a", "b", 0.999, "c1", 0.05, 0.30)], FOUND_DDL)
    ranks = _rank(spark, a=9.0, b=1.0).join(centroid_distances(one), "sample_id", "left")
    rows, _ = resolve(
        eps_pairs(one.drop("dist_a", "dist_b"), [0.01]), ranks, "farthest_from_centroid"
    )
    assert [(r.sample_id, r.duplicate_of, r.cluster) for r in rows.collect()] == [("a", "b", "c1")]


@pytest.mark.parametrize("order", ["aesthetic", "resolution"])
def test_random_graphs_match_the_pandas_reference(spark, order: str) -> None:
    rng = np.random.default_rng(7)
    n, m = 300, 900
    ids = np.array([f"s{i:04d}" for i in range(n)], dtype=object)
    rank = pd.DataFrame(
        {
            "sample_id": ids,
            "aesthetic_score": rng.integers(0, 5, n).astype(float),  # many ties
            "width": rng.integers(1, 4, n),
            "height": rng.integers(1, 4, n),
        }
    )
    rank["pixels"] = (rank["width"] * rank["height"]).astype(float)
    rank.loc[rng.choice(n, 20, replace=False), "aesthetic_score"] = np.nan
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    pairs = pd.DataFrame({"a": ids[a], "b": ids[b], "similarity": rng.choice([0.9, 0.95, 0.99], m)})
    want = resolve_duplicates(pairs, rank, order=order)
    sp = spark.createDataFrame(pairs.assign(cluster=None, eps=None), PAIRS_DDL)
    cols = ["sample_id", "aesthetic_score", "width", "height", "pixels"]
    sr = spark.createDataFrame(rank[cols].astype(object).where(rank[cols].notna(), None), RANK_DDL)
    rows, rounds = resolve(sp, sr, order)
    got = rows.toPandas().sort_values("sample_id").reset_index(drop=True)
    cols = ["sample_id", "duplicate_of", "similar_to", "similarity"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    assert 1 <= rounds <= 12
