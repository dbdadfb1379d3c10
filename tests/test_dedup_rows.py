"""The dedup job's driver-side pandas steps: pairs → `duplicates` rows, no SparkSession."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curator_udfs.dedup_rows import (
    add_centroid_distances,
    centroid_distances,
    order_for,
    resolve_rows,
    semantic_eps_rows,
    unique_pairs,
)
from curator_udfs.resolve import DIST_COLUMN

PAIR_COLUMNS = ["a", "b", "similarity", "cluster", "dist_a", "dist_b"]


def _pairs(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=PAIR_COLUMNS)


def _rank(**scores: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": list(scores),
            "aesthetic_score": list(scores.values()),
            "width": [10] * len(scores),
            "height": [10] * len(scores),
        }
    )


@pytest.mark.parametrize("keep", ["aesthetic", "resolution"])
@pytest.mark.parametrize("method", ["exact", "perceptual", "semantic"])
def test_order_for_keeps_the_configured_order(method: str, keep: str) -> None:
    assert order_for(method, keep) == keep


def test_order_for_farthest_from_centroid_only_for_semantic() -> None:
    assert order_for("semantic", "farthest_from_centroid") == "farthest_from_centroid"
    assert order_for("exact", "farthest_from_centroid") == "resolution"
    assert order_for("perceptual", "farthest_from_centroid") == "resolution"


def test_unique_pairs_keeps_highest_similarity_then_smallest_cluster() -> None:
    pairs = _pairs(
        ("x", "y", 0.95, "c2", 0.1, 0.2),
        ("x", "y", 0.97, "c3", 0.3, 0.4),  # best similarity wins
        ("a", "b", 0.99, "c9", 0.0, 0.0),
        ("a", "b", 0.99, "c1", 0.5, 0.6),  # same similarity: smaller cluster name
        ("a", "c", 0.98, "c1", 0.0, 0.0),
    )
    out = unique_pairs(pairs)
    assert list(out.columns) == PAIR_COLUMNS
    assert out.index.tolist() == [0, 1, 2]
    assert [tuple(r) for r in out[["a", "b", "similarity", "cluster"]].itertuples(index=False)] == [
        ("a", "b", 0.99, "c1"),
        ("a", "c", 0.98, "c1"),
        ("x", "y", 0.97, "c3"),
    ]
    assert out.loc[0, "dist_a"] == 0.5  # the whole row of the kept pair, not a mix


def test_unique_pairs_is_independent_of_row_order() -> None:
    rng = np.random.default_rng(3)
    rows = [
        (f"s{a}", f"s{b}", float(rng.choice([0.9, 0.95, 1.0])), f"c{rng.integers(3)}", 0.0, 0.0)
        for a, b in rng.integers(0, 6, size=(60, 2))
        if a < b
    ]
    pairs = _pairs(*rows)
    shuffled = pairs.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(unique_pairs(pairs), unique_pairs(shuffled))
    assert not unique_pairs(pairs).duplicated(["a", "b"]).any()


def test_unique_pairs_empty_is_returned_as_is() -> None:
    empty = pd.DataFrame(columns=["a", "b", "similarity", "cluster"])
    assert unique_pairs(empty) is empty


def test_centroid_distances_one_row_per_sample_first_cluster_by_name() -> None:
    pairs = _pairs(
        ("a", "b", 0.99, "c2", 0.10, 0.20),
        ("a", "c", 0.98, "c1", 0.30, 0.40),  # a is in c1 and c2: c1's distance
        ("b", "d", 0.97, "c2", 0.20, 0.50),
    )
    out = centroid_distances(pairs)
    assert list(out.columns) == ["sample_id", DIST_COLUMN]
    assert dict(zip(out["sample_id"], out[DIST_COLUMN], strict=True)) == {
        "a": 0.30,
        "b": 0.20,
        "c": 0.40,
        "d": 0.50,
    }


def test_add_centroid_distances_merges_and_leaves_unpaired_nan() -> None:
    rank = _rank(a=1.0, b=2.0, z=3.0)
    pairs = _pairs(("a", "b", 0.99, "c1", 0.1, 0.2))
    out = add_centroid_distances(rank, pairs)
    dist = dict(zip(out["sample_id"], out[DIST_COLUMN], strict=True))
    assert dist["a"] == 0.1 and dist["b"] == 0.2 and np.isnan(dist["z"])
    assert out["aesthetic_score"].tolist() == [1.0, 2.0, 3.0]
    no_pairs = pairs.iloc[:0]
    assert add_centroid_distances(rank, no_pairs) is rank


def test_resolve_rows_adds_method_eps_and_cluster_of_the_pair() -> None:
    pairs = _pairs(
        ("a", "b", 0.99, "c1", 0.1, 0.2),
        ("b", "c", 0.98, "c2", 0.2, 0.3),
    )
    rank = _rank(a=1.0, b=5.0, c=3.0)  # b is best: a and c are its duplicates
    out = resolve_rows(pairs, rank, "aesthetic", "semantic", 0.02)
    assert list(out.columns) == [
        "sample_id",
        "duplicate_of",
        "similar_to",
        "similarity",
        "method",
        "eps",
        "cluster",
    ]
    got = {r.sample_id: (r.similar_to, r.cluster, r.method, r.eps) for r in out.itertuples()}
    # the cluster is found whichever side of the stored (a < b) pair the duplicate is on
    assert got == {"a": ("b", "c1", "semantic", 0.02), "c": ("b", "c2", "semantic", 0.02)}


def test_resolve_rows_without_cluster_column_sets_none() -> None:
    pairs = pd.DataFrame({"a": ["p"], "b": ["q"], "similarity": [0.9]})
    rank = _rank(p=2.0, q=1.0)
    out = resolve_rows(pairs, rank, "aesthetic", "perceptual", None)
    assert out[["sample_id", "duplicate_of", "method"]].values.tolist() == [
        ["q", "p", "perceptual"]
    ]
    assert out["cluster"].tolist() == [None] and out["eps"].isna().all()


def test_resolve_rows_empty_pairs_gives_empty_rows_with_all_columns() -> None:
    pairs = pd.DataFrame(columns=["a", "b", "similarity", "cluster"])
    out = resolve_rows(pairs, _rank(a=1.0), "aesthetic", "semantic", 0.01)
    assert out.empty
    assert {"sample_id", "duplicate_of", "method", "eps", "cluster"} <= set(out.columns)


def test_semantic_eps_rows_resolves_each_eps_and_counts() -> None:
    pairs = _pairs(
        ("a", "b", 0.995, "c1", 0.0, 0.0),  # within eps 0.01 and 0.03
        ("c", "d", 0.975, "c1", 0.0, 0.0),  # within eps 0.03 only
    )
    rank = _rank(a=4.0, b=3.0, c=2.0, d=1.0)
    removed: dict[str, int] = {}
    out = semantic_eps_rows(pairs, rank, "aesthetic", [0.01, 0.03], removed)
    assert removed == {"semantic eps=0.01": 1, "semantic eps=0.03": 2}
    by_eps = {e: sorted(g["sample_id"]) for e, g in out.groupby("eps")}
    assert by_eps == {0.01: ["b"], 0.03: ["b", "d"]}
    assert set(out["method"]) == {"semantic"} and out.index.tolist() == [0, 1, 2]


def test_semantic_eps_rows_threshold_is_inclusive_in_float32() -> None:
    # 1 - 0.01 as a float32 similarity (what the blocked join yields) is at the threshold
    sim = float(np.float32(1.0 - 0.01))
    pairs = _pairs(("a", "b", sim, "c1", 0.0, 0.0))
    out = semantic_eps_rows(pairs, _rank(a=2.0, b=1.0), "aesthetic", [0.01])
    assert out["sample_id"].tolist() == ["b"]
    below = _pairs(("a", "b", float(np.nextafter(np.float32(sim), np.float32(0))), "c", 0, 0))
    assert semantic_eps_rows(below, _rank(a=2.0, b=1.0), "aesthetic", [0.01]).empty


def test_semantic_eps_rows_farthest_from_centroid_keeps_the_farthest() -> None:
    pairs = _pairs(("a", "b", 0.999, "c1", 0.05, 0.30))
    rank = add_centroid_distances(_rank(a=9.0, b=1.0), pairs)
    out = semantic_eps_rows(pairs, rank, "farthest_from_centroid", [0.01])
    assert out[["sample_id", "duplicate_of"]].values.tolist() == [["a", "b"]]
