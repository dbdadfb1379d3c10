"""Perceptual candidates with equal hashes grouped: O(n) edges, same resolution as all pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curator_udfs.resolve import resolve_duplicates
from spark_jobs.dedup_perceptual import expand_pairs, pair_count, perceptual_candidates
from spark_jobs.dedup_resolve import resolve

HASH_DDL = "sample_id STRING, phash BIGINT"
RANK_DDL = "sample_id STRING, aesthetic_score DOUBLE, width INT, height INT, pixels DOUBLE"


def _brute_pairs(ids: np.ndarray, hashes: np.ndarray, max_distance: int) -> pd.DataFrame:
    """The old definition: every pair of samples (a < b) within the Hamming bound."""
    u = hashes.astype(np.uint64)
    rows = []
    for i in range(len(ids)):
        x = np.bitwise_xor(u[i], u[i + 1 :])
        d = np.array([bin(int(v)).count("1") for v in x], dtype=np.int64)
        for j in np.flatnonzero(d <= max_distance):
            a, b = sorted((ids[i], ids[i + 1 + j]))
            rows.append((a, b, 1.0 - d[j] / 64.0))
    return pd.DataFrame(rows, columns=["a", "b", "similarity"])


def _resolve_spark(spark, hashes: pd.DataFrame, rank: pd.DataFrame, order: str, bound: int):
    h = spark.createDataFrame(hashes, HASH_DDL)
    r = spark.createDataFrame(rank.astype(object).where(rank.notna(), None), RANK_DDL)
    cands = perceptual_candidates(h, r, order, bound, bound + 1)
    try:
        pairs = cands.edges.selectExpr(
            "*", "CAST(NULL AS STRING) AS cluster", "CAST(NULL AS DOUBLE) AS eps"
        )
        rows, _ = resolve(pairs, r, order)
        got = rows.toPandas().sort_values("sample_id").reset_index(drop=True)
        return got, cands.edges.count(), pair_count(cands), expand_pairs(cands).toPandas()
    finally:
        cands.unpersist()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("order", ["aesthetic", "resolution"])
def test_grouped_candidates_resolve_exactly_like_all_pairs(spark, seed: int, order: str) -> None:
    rng = np.random.default_rng(seed)
    bound = 3
    bases = rng.integers(-(2**62), 2**62, 12, dtype=np.int64)
    hashes = []
    for _ in range(150):  # near copies of a few bases: many equal hashes, many close ones
        h = int(bases[rng.integers(len(bases))]) % 2**64
        for bit in rng.choice(64, rng.choice([0, 0, 1, 2, 4]), replace=False):
            h ^= 1 << int(bit)
        hashes.append(h - 2**64 if h >= 2**63 else h)  # as the signed BIGINT stored
    ids = np.array([f"s{i:03d}" for i in range(len(hashes))], dtype=object)
    hv = np.array(hashes, dtype=np.int64)
    rank = pd.DataFrame(
        {
            "sample_id": ids,
            "aesthetic_score": rng.integers(0, 4, len(ids)).astype(float),  # ties
            "width": rng.integers(1, 3, len(ids)),
            "height": rng.integers(1, 3, len(ids)),
        }
    )
    rank["pixels"] = (rank["width"] * rank["height"]).astype(float)
    rank.loc[rng.choice(len(ids), 10, replace=False), "aesthetic_score"] = np.nan
    brute = _brute_pairs(ids, hv, bound)
    want = resolve_duplicates(brute, rank, order=order)
    got, n_edges, n_pairs, full = _resolve_spark(
        spark, pd.DataFrame({"sample_id": ids, "phash": hv}), rank, order, bound
    )
    cols = ["sample_id", "duplicate_of", "similar_to", "similarity"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    assert n_pairs == len(brute) > n_edges  # the brute set counted, never built for resolution
    full = full.sort_values(["a", "b"]).reset_index(drop=True)  # the write_pairs table
    pd.testing.assert_frame_equal(full, brute.sort_values(["a", "b"]).reset_index(drop=True))


def test_ten_thousand_identical_hashes_are_linear(spark) -> None:
    n = 10_000
    ids = [f"s{i:05d}" for i in range(n)]
    others = [0x0F0F0F0F0F0F0F0F, 0x00FF00FF00FF00FF, 0x0F0F0F0F0F0F0F0E]  # last two ~ first
    hashes = pd.DataFrame(
        {
            "sample_id": ids + ["o1", "o2", "o3"],
            "phash": [0x123456789ABCDEF] * n + others,
        }
    )
    scores = np.random.default_rng(0).uniform(0, 10, n + 3)
    scores[1234] = 11.0  # the best of the big group
    rank = pd.DataFrame(
        {"sample_id": hashes["sample_id"], "aesthetic_score": scores, "width": 1, "height": 1}
    ).assign(pixels=1.0)
    h = spark.createDataFrame(hashes, HASH_DDL)
    r = spark.createDataFrame(rank, RANK_DDL)
    cands = perceptual_candidates(h, r, "aesthetic", 4, 5)
    try:
        n_edges = cands.edges.count()
        assert n_edges < 3 * len(hashes), n_edges  # linear, not n^2 / 2 = 5 * 10^7
        assert pair_count(cands) == n * (n - 1) // 2 + 1  # o1 ~ o3 (one bit)
        pairs = cands.edges.selectExpr(
            "*", "CAST(NULL AS STRING) AS cluster", "CAST(NULL AS DOUBLE) AS eps"
        )
        rows, rounds = resolve(pairs, r, "aesthetic")
        got = rows.toPandas()
    finally:
        cands.unpersist()
    big = got[got["sample_id"].str.startswith("s")]
    assert len(big) == n - 1 and set(big["duplicate_of"]) == {"s01234"}
    assert (big["similarity"] == 1.0).all() and rounds == 1
    o1, o3 = scores[n], scores[n + 2]
    assert got[got["sample_id"].str.startswith("o")]["sample_id"].tolist() == (
        ["o3"] if o1 > o3 else ["o1"]
    )
