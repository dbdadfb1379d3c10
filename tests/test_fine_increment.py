"""increment_group_pairs: new members against their stored fine clusters, without Spark.

A coarse group is split by the full fine stage (fine_cluster_pairs), 10 % more rows arrive
(near copies of old rows, pairs among themselves, loners); the incremental stage must find the
exact search's new pairs (those touching a new row) and nothing else, name each after a
stored fine cluster, and count the new rows into the clusters' sizes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.synthetic import mixture_embeddings
from curator_udfs.fine_increment import increment_group_pairs
from curator_udfs.semantic import fine_cluster_pairs
from curator_udfs.similarity import pairs_above

PARAMS = dict(thresholds=[0.97, 0.95], max_cluster_size=300, seed=1, fine_margin=0.02)
THRESHOLD = 0.95


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _rows(
    ids: list[str], x: np.ndarray, kind: str, hashes: list[int] | None = None
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": ids,
            "embedding": list(x) if x is not None else [None] * len(ids),
            "coarse": 7,
            "embedding_hash": hashes if hashes is not None else list(range(len(ids))),
            "kind": kind,
            "leaf": None,
            "leaf_size": None,
        }
    )


def _group(seed: int = 0) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    x, _ = mixture_embeddings(2000, 32, clusters=6, seed=seed, planted_fraction=0.05)
    old_ids = [f"o{i:05d}" for i in range(len(x))]
    near_old = _unit(x[rng.choice(len(x), 100, replace=False)] + rng.normal(0, 0.01, (100, 32)))
    base = _unit(rng.normal(size=(50, 32)))
    near_new = _unit(base + rng.normal(0, 0.01, base.shape))
    new = np.vstack([near_old, base, near_new, _unit(rng.normal(size=(50, 32)))])
    new_ids = [f"n{i:05d}" for i in range(len(new))]
    return old_ids, x.astype(np.float32), new_ids, new.astype(np.float32)


def _leaf_rows(full: pd.DataFrame) -> pd.DataFrame:
    stats = full[full["a"].isna()]
    out = _rows([None] * len(stats), np.stack(stats["centroid"].to_list()), "leaf")
    return out.assign(leaf=stats["cluster"].to_numpy(), leaf_size=stats["cluster_size"].to_numpy())


def _exact_new(ids: np.ndarray, x: np.ndarray, new_ids: set[str]) -> set[tuple[str, str]]:
    i, j, _ = pairs_above(ids, x, THRESHOLD)
    pairs = {tuple(sorted((ids[p], ids[q]))) for p, q in zip(i, j, strict=True)}
    return {p for p in pairs if set(p) & new_ids}


def test_new_rows_are_compared_with_their_fine_clusters_only() -> None:
    old_ids, x, new_ids, new = _group()
    full = fine_cluster_pairs(_rows(old_ids, x, "member"), include_stats=True, **PARAMS)
    leaves = _leaf_rows(full)
    assert len(leaves) > 6  # the group was split
    hashes = list(range(len(old_ids)))
    pdf = pd.concat(
        [
            _rows(old_ids + new_ids, np.vstack([x, new]), "member", hashes + [-1] * len(new_ids)),
            _rows(old_ids, None, "stored", hashes),
            leaves,
        ],
        ignore_index=True,
    )
    out = increment_group_pairs(pdf.sample(frac=1.0, random_state=3), **PARAMS)
    pairs, stats = out[out["a"].notna()], out[out["a"].isna()]

    ids = np.array(old_ids + new_ids, dtype=object)
    want = _exact_new(ids, np.vstack([x, new]), set(new_ids))
    got = set(zip(pairs["a"], pairs["b"], strict=True))
    assert len(want) >= 150  # 100 near copies of old rows and 50 new pairs
    assert got <= want  # precision 1: only real pairs, and only pairs touching a new row
    assert len(got) / len(want) >= 0.98, (len(got), len(want))
    assert (pairs["a"] < pairs["b"]).all() and not pairs.duplicated(["a", "b"]).any()
    assert set(pairs["cluster"]) <= set(leaves["leaf"])
    assert pairs["similarity"].min() >= THRESHOLD - 1e-6
    assert ((pairs["dist_a"] >= 0) & (pairs["dist_b"] >= 0)).all()
    # every stored cluster comes back once, with its centroid; sizes recounted (nearest leaf)
    assert sorted(stats["cluster"]) == sorted(leaves["leaf"])
    assert int(stats["cluster_size"].sum()) == len(old_ids) + len(new_ids)
    assert all(len(c) == 32 for c in stats["centroid"])


def test_a_changed_embedding_counts_as_new_and_nothing_new_gives_stats_only() -> None:
    old_ids, x, _, _ = _group(1)
    full = fine_cluster_pairs(_rows(old_ids, x, "member"), include_stats=True, **PARAMS)
    leaves = _leaf_rows(full)
    hashes = list(range(len(old_ids)))
    same = pd.concat(
        [_rows(old_ids, x, "member", hashes), _rows(old_ids, None, "stored", hashes), leaves]
    )
    out = increment_group_pairs(same, **PARAMS)
    assert out["a"].isna().all() and len(out) == len(leaves)

    moved = x.copy()
    moved[0] = _unit(x[1] + 0.001)  # o00000 now nearly equals o00001: a new embedding
    changed = hashes.copy()
    changed[0] = 10**9
    pdf = pd.concat(
        [_rows(old_ids, moved, "member", changed), _rows(old_ids, None, "stored", hashes), leaves]
    )
    out = increment_group_pairs(pdf, **PARAMS)
    pairs = out[out["a"].notna()]
    assert ("o00000", "o00001") in set(zip(pairs["a"], pairs["b"], strict=True))
    assert set(pairs["a"]) | set(pairs["b"]) >= {"o00000"}
    assert all("o00000" in (a, b) for a, b in zip(pairs["a"], pairs["b"], strict=True))


def test_a_group_without_stored_clusters_is_split_whole() -> None:
    old_ids, x, _, _ = _group(2)
    rows = _rows(old_ids, x, "member")
    out = increment_group_pairs(rows, **PARAMS)
    full = fine_cluster_pairs(rows, include_stats=True, **PARAMS)
    cols = ["a", "b", "cluster", "cluster_size"]
    pd.testing.assert_frame_equal(
        out[cols].reset_index(drop=True), full[cols].reset_index(drop=True)
    )
