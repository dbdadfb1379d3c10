"""resolve_duplicates (the pandas reference of the rule): each order, ties by sample_id, chains
end at a kept sample; order_for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curator_udfs.resolve import order_for, rank_order, resolve_duplicates, sort_spec


def _pairs(*rows: tuple[str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["a", "b", "similarity"])


def _as_dict(out: pd.DataFrame) -> dict[str, tuple[str, str, float]]:
    return {
        r.sample_id: (r.duplicate_of, r.similar_to, round(r.similarity, 6))
        for r in out.itertuples()
    }


def test_aesthetic_keeps_highest_score() -> None:
    rank = pd.DataFrame({"sample_id": ["a", "b", "c"], "aesthetic_score": [5.0, 7.0, 6.0]})
    out = resolve_duplicates(_pairs(("a", "b", 0.99), ("a", "c", 0.97)), rank, order="aesthetic")
    assert _as_dict(out) == {"a": ("b", "b", 0.99)}
    assert list(out.columns) == ["sample_id", "duplicate_of", "similar_to", "similarity"]


def test_resolution_keeps_most_pixels() -> None:
    rank = pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "width": [100, 400, 300], "height": [100, 100, 200]}
    )
    out = resolve_duplicates(_pairs(("a", "b", 0.99), ("b", "c", 0.98)), rank, order="resolution")
    assert _as_dict(out) == {"a": ("c", "b", 0.99), "b": ("c", "c", 0.98)}


def test_farthest_from_centroid_is_kept() -> None:
    rank = pd.DataFrame({"sample_id": ["a", "b"], "dist_to_centroid": [0.1, 0.3]})
    out = resolve_duplicates(_pairs(("a", "b", 0.995)), rank, order="farthest_from_centroid")
    assert _as_dict(out) == {"a": ("b", "b", 0.995)}


@pytest.mark.parametrize("order", ["aesthetic", "farthest_from_centroid"])
def test_ties_break_by_sample_id(order: str) -> None:
    col = "aesthetic_score" if order == "aesthetic" else "dist_to_centroid"
    rank = pd.DataFrame({"sample_id": ["z", "m", "b"], col: [1.0, 1.0, 1.0]})
    out = resolve_duplicates(_pairs(("z", "m", 0.99), ("b", "z", 0.98)), rank, order=order)
    # b < m < z: z's best-ranked partner is b; m's only partner (z) ranks worse, m stays
    assert _as_dict(out) == {"z": ("b", "b", 0.98)}
    assert rank_order(rank, order).tolist() == [2, 1, 0]


def test_resolution_ties_by_sample_id() -> None:
    rank = pd.DataFrame({"sample_id": ["y", "x"], "width": [20, 10], "height": [10, 20]})
    out = resolve_duplicates(_pairs(("y", "x", 0.99)), rank, order="resolution")
    assert _as_dict(out) == {"y": ("x", "x", 0.99)}


def test_nulls_rank_last() -> None:
    rank = pd.DataFrame({"sample_id": ["a", "b"], "aesthetic_score": [np.nan, 0.0]})
    out = resolve_duplicates(_pairs(("a", "b", 0.99)), rank, order="aesthetic")
    assert _as_dict(out) == {"a": ("b", "b", 0.99)}
    assert sort_spec("aesthetic") == [("aesthetic_score", False), ("sample_id", True)]


def test_chain_duplicate_of_is_always_kept() -> None:
    # rank: a > b > c > d ; pairs c~d, b~c, a~b (a chain) plus e alone-ranked
    rank = pd.DataFrame({"sample_id": list("abcde"), "aesthetic_score": [9.0, 8.0, 7.0, 6.0, 1.0]})
    pairs = _pairs(("d", "c", 0.97), ("b", "c", 0.98), ("a", "b", 0.99), ("x", "d", 0.96))
    out = resolve_duplicates(pairs, rank, order="aesthetic")
    got = _as_dict(out)
    # x is unranked -> worst; it is a duplicate of d
    assert got == {
        "b": ("a", "a", 0.99),
        "c": ("a", "b", 0.98),
        "d": ("a", "c", 0.97),
        "x": ("a", "d", 0.96),
    }
    kept = set("abcdex") - set(out["sample_id"])
    assert set(out["duplicate_of"]) <= kept


def test_best_partner_and_repeated_pairs() -> None:
    rank = pd.DataFrame({"sample_id": list("abc"), "aesthetic_score": [3.0, 2.0, 1.0]})
    pairs = _pairs(("c", "b", 0.99), ("a", "c", 0.95), ("c", "a", 0.96), ("c", "c", 1.0))
    out = resolve_duplicates(pairs, rank, order="aesthetic")
    # c's best-ranked partner is a (seen twice: the higher similarity wins); no self pairs
    assert _as_dict(out) == {"c": ("a", "a", 0.96)}


def test_empty_and_bad_order() -> None:
    rank = pd.DataFrame({"sample_id": ["a"], "aesthetic_score": [1.0]})
    out = resolve_duplicates(_pairs(), rank, order="aesthetic")
    assert out.empty and list(out.columns) == [
        "sample_id",
        "duplicate_of",
        "similar_to",
        "similarity",
    ]
    with pytest.raises(ValueError, match="unknown dedup order"):
        resolve_duplicates(_pairs(("a", "b", 1.0)), rank, order="biggest")


def test_random_graph_invariants_and_scale() -> None:
    rng = np.random.default_rng(0)
    n, m = 20000, 200000
    ids = np.array([f"s{i:06d}" for i in range(n)], dtype=object)
    rank = pd.DataFrame({"sample_id": ids, "aesthetic_score": rng.integers(0, 50, n)})
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    pairs = pd.DataFrame({"a": ids[a], "b": ids[b], "similarity": rng.uniform(0.9, 1, m)})
    out = resolve_duplicates(pairs, rank, order="aesthetic")
    r = pd.Series(rank_order(rank, "aesthetic").to_numpy(), index=ids)
    dups = set(out["sample_id"])
    assert not (set(out["duplicate_of"]) & dups)  # duplicate_of is always kept
    assert (r[out["similar_to"]].to_numpy() < r[out["sample_id"]].to_numpy()).all()
    # brute-force rule check: duplicate iff some partner ranks better
    pa, pb = r[pairs["a"]].to_numpy(), r[pairs["b"]].to_numpy()
    worse = np.where(pa > pb, pairs["a"], pairs["b"])[pa != pb]
    assert dups == set(worse)


@pytest.mark.parametrize("keep", ["aesthetic", "resolution"])
@pytest.mark.parametrize("method", ["exact", "perceptual", "semantic"])
def test_order_for_keeps_the_configured_order(method: str, keep: str) -> None:
    assert order_for(method, keep) == keep


def test_order_for_farthest_from_centroid_only_for_semantic() -> None:
    assert order_for("semantic", "farthest_from_centroid") == "farthest_from_centroid"
    assert order_for("exact", "farthest_from_centroid") == "resolution"
    assert order_for("perceptual", "farthest_from_centroid") == "resolution"
