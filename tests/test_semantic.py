"""fine_cluster_pairs: recall/precision vs exact, size bound, determinism, order independence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.synthetic import mixture_embeddings
from curator_udfs.kmeans import FaissKMeans
from curator_udfs.semantic import (
    PAIR_COLUMNS,
    fine_cluster_pairs,
    fine_clusters,
    split_bounded,
)
from curator_udfs.similarity import pairs_above

THRESHOLDS = [0.97, 0.95]


def _frame(n: int = 3000, seed: int = 0, d: int = 64) -> tuple[pd.DataFrame, np.ndarray]:
    x, planted = mixture_embeddings(n, d=d, clusters=12, seed=seed, planted_fraction=0.05)
    ids = np.array([f"id{i:05d}" for i in range(n)], dtype=object)
    pdf = pd.DataFrame({"sample_id": ids, "embedding": list(x), "coarse": 3})
    return pdf, planted


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return _frame()


@pytest.fixture(scope="module")
def result(data: tuple[pd.DataFrame, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    pdf, _ = data
    return fine_clusters(pdf, thresholds=THRESHOLDS, max_cluster_size=400, seed=1)


def _pair_set(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["a"], df["b"], strict=True))


def _exact(pdf: pd.DataFrame) -> set[tuple[str, str]]:
    """Every pair at the lowest threshold, by exact all-pairs search."""
    x = np.stack(pdf["embedding"].to_numpy())
    ids = pdf["sample_id"].to_numpy()
    i, j, _ = pairs_above(ids, x, min(THRESHOLDS))
    return set(zip(ids[i], ids[j], strict=True))


def test_recall_precision_vs_exact(data, result) -> None:
    pdf, planted = data
    pairs, _ = result
    ids = pdf["sample_id"].to_numpy()
    exact = _exact(pdf)
    found = _pair_set(pairs)
    assert found <= exact  # precision 1: every emitted pair is a real one
    assert len(found & exact) / len(exact) >= 0.9
    planted_set = {tuple(sorted((ids[p], ids[q]))) for p, q in planted}
    assert len(found & planted_set) / len(planted_set) >= 0.9
    assert (pairs["a"] < pairs["b"]).all()
    assert (pairs["similarity"] >= min(THRESHOLDS) - 1e-6).all()
    assert list(pairs.columns) == PAIR_COLUMNS


def test_size_bound_and_cluster_names(result) -> None:
    pairs, stats = result
    assert stats["size"].max() <= 400
    assert stats["size"].sum() == 3000
    assert len(stats) >= 8  # ceil(3000 / 400)
    assert stats["cluster"].str.startswith("3-").all()
    assert set(pairs["cluster"]) <= set(stats["cluster"])
    assert ((pairs["dist_a"] >= 0) & (pairs["dist_a"] <= 2)).all()


def test_deterministic_and_input_order_independent(data, result) -> None:
    pdf, _ = data
    pairs, stats = result
    shuffled = pdf.sample(frac=1.0, random_state=5).reset_index(drop=True)
    again, stats2 = fine_clusters(shuffled, thresholds=THRESHOLDS, max_cluster_size=400, seed=1)
    pd.testing.assert_frame_equal(pairs, again)
    pd.testing.assert_frame_equal(stats, stats2)


def test_sklearn_backend_and_stats_rows() -> None:
    pdf, _ = _frame(n=600, seed=2, d=32)
    out = fine_cluster_pairs(
        pdf,
        thresholds=[0.95],
        max_cluster_size=150,
        seed=0,
        backend="sklearn",
        include_stats=True,
    )
    stats = out[out["a"].isna()]
    pairs = out[out["a"].notna()]
    assert stats["cluster_size"].sum() == 600 and stats["cluster_size"].max() <= 150
    assert len(pairs) > 0 and pairs["cluster_size"].le(150).all()


def test_identical_vectors_are_kept_whole_and_paired() -> None:
    v = np.ones(8, dtype=np.float32) / np.sqrt(8)
    pdf = pd.DataFrame(
        {"sample_id": [f"s{i:03d}" for i in range(30)], "embedding": [v] * 30, "coarse": 0}
    )
    pairs, stats = fine_clusters(pdf, thresholds=[0.99], max_cluster_size=10, seed=0)
    assert stats["size"].tolist() == [30]
    assert len(pairs) == 30 * 29 // 2


def test_split_bounded_guarantees_bound_on_hard_data() -> None:
    rng = np.random.default_rng(0)
    # a tight blob plus a few outliers: k-means tends to isolate outliers, not split the blob
    blob = rng.standard_normal((1, 16)) + 1e-2 * rng.standard_normal((500, 16))
    x = np.concatenate([blob, rng.standard_normal((5, 16))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    groups = split_bounded(x, 50, backend=FaissKMeans(), seed=0)
    assert max(g.size for g in groups) <= 50
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(len(x)))


def test_multiple_coarse_values_and_empty() -> None:
    pdf, _ = _frame(n=400, seed=3, d=16)
    pdf["coarse"] = np.arange(400) % 2
    pairs, stats = fine_clusters(pdf, thresholds=[0.95], max_cluster_size=100, seed=0)
    assert {c.split("-")[0] for c in stats["cluster"]} == {"0", "1"}
    empty, stats0 = fine_clusters(pdf.iloc[:0], thresholds=[0.95], max_cluster_size=100, seed=0)
    assert empty.empty and list(empty.columns) == PAIR_COLUMNS and stats0.empty


def test_fine_margin_finds_pairs_cut_by_a_fine_border(data, result) -> None:
    """Pairs the plain split loses at its borders are compared once rows near a border also
    join their second-nearest child: recall rises, precision stays 1, nothing found before is
    lost, and the overlap stays small (a row is in at most a few clusters)."""
    pdf, _ = data
    plain, _ = result
    exact = _exact(pdf)
    lost = exact - _pair_set(plain)
    assert lost, "the data must have pairs cut by a fine border, or the test proves nothing"

    pairs, stats = fine_clusters(
        pdf, thresholds=THRESHOLDS, max_cluster_size=400, seed=1, fine_margin=0.05
    )
    found = _pair_set(pairs)
    assert found <= exact and _pair_set(plain) <= found
    assert len(lost & found) >= len(lost) / 2, (len(lost), len(lost & found))
    assert 3000 < stats["size"].sum() < 2 * 3000  # overlapping, not duplicating everything
    assert stats["size"].max() <= 400
    again, _ = fine_clusters(  # still deterministic whatever the input order
        pdf.sample(frac=1.0, random_state=2).reset_index(drop=True),
        thresholds=THRESHOLDS, max_cluster_size=400, seed=1, fine_margin=0.05,
    )  # fmt: skip
    pd.testing.assert_frame_equal(pairs, again)


def test_resplits_recover_pairs_a_capped_split_loses() -> None:
    """Where the overlap cap binds (dense data: most rows near a border), more seeded splits of
    the same group find pairs the first split cut: a superset of its pairs, all real, every
    cluster within the bound, deterministic; where the cap does not bind, nothing changes."""
    pdf, _ = _frame(n=6000)
    exact = _exact(pdf)
    params = dict(thresholds=THRESHOLDS, max_cluster_size=400, seed=1, fine_margin=0.05)
    one, stats1 = fine_clusters(pdf, **params)
    three, stats3 = fine_clusters(pdf, fine_resplits=2, **params)
    assert exact - _pair_set(one), "the capped split must lose pairs, or the test proves nothing"
    assert _pair_set(one) < _pair_set(three) <= exact
    assert len(stats3) > len(stats1) and stats3["size"].max() <= 400
    pd.testing.assert_frame_equal(stats3.iloc[: len(stats1)], stats1)  # the first split first
    again, _ = fine_clusters(pdf.iloc[::-1].reset_index(drop=True), fine_resplits=2, **params)
    pd.testing.assert_frame_equal(three, again)

    tight = dict(params, fine_margin=1e-4)  # too narrow for the cap to bind
    plain, _ = fine_clusters(pdf, **tight)
    pd.testing.assert_frame_equal(plain, fine_clusters(pdf, fine_resplits=2, **tight)[0])
