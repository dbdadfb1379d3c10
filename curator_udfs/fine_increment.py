"""Incremental fine stage of one coarse group: new members against their fine clusters only.

A full run splits each coarse group into bounded fine clusters ("leaves", curator_udfs.semantic)
and searches every leaf whole. An incremental run keeps what the last split found (its pairs,
and each leaf's centroid) and, for a group that gained members, compares only what is new:

- every member, old and new, is assigned to its nearest stored leaf centroid, and also to the
  second nearest when the cosine margin is below ``fine_margin`` (the border rule of the split);
- each new member is compared with the old members that share one of its leaves, and with every
  other new member of the group (new x new is small: an increment, not the table);
- a pair is named after a leaf (new x old: the first by name that both share; new x new: the
  nearest leaf of the pair's first member), and its ``dist_*`` are the cosine distances to
  that leaf's centroid, as in a full run;
- each leaf's size is recounted: the current members whose nearest leaf it is.

So the work is (new members) x (leaf size), not (group size) x (leaf size), and no k-means runs.
The old x old pairs are the stored ones (the job drops those of removed members). A group with
no stored leaves (a coarse centroid that had no members before) is split and searched whole.
Leaves are not re-split here: the job splits a group anew when a leaf outgrew twice
``max_cluster_size`` or the group gained more than ``max_cluster_size`` members
(spark_jobs.dedup_state). An old member whose nearest leaf is not the one it was split into
can miss a new partner that a full run would find: the bench measures the recall of
incremental runs (README).

Input rows (one coarse group, ``applyInPandas``), column ``kind``:
``member`` (sample_id, embedding, embedding_hash: every current member), ``stored`` (sample_id,
embedding_hash: the members the state was written with; a member is new unless its id and hash
are both stored) and ``leaf`` (leaf = the fine cluster's name, embedding = its centroid,
leaf_size = its stored size). Output: curator_udfs.semantic's fine rows with stats and centroids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from curator_udfs.kmeans import assign, l2_normalise
from curator_udfs.semantic import fine_cluster_pairs
from curator_udfs.similarity import pairs_above

__all__ = ["INPUT_COLUMNS", "increment_group_pairs"]

INPUT_COLUMNS = ("sample_id", "embedding", "coarse", "embedding_hash", "kind", "leaf", "leaf_size")


def _stack(values: pd.Series) -> np.ndarray:
    return l2_normalise(np.stack([np.asarray(v, dtype=np.float32) for v in values]))


def _leaf_sets(x: np.ndarray, centroids: np.ndarray, fine_margin: float | None) -> np.ndarray:
    """(n, 2) leaf indices per row: nearest, and second nearest within the margin (else -1)."""
    nearest, second, _ = assign(x, centroids, second_margin=fine_margin)
    return np.stack([nearest, second], axis=1)


def _cross_above(xa: np.ndarray, xb: np.ndarray, threshold: float, block_size: int) -> tuple:
    """Index pairs (i into xa, j into xb) with xa[i] . xb[j] >= threshold, in tiles of at most
    block_size x block_size (the memory bound of curator_udfs.similarity.pairs_above)."""
    out_i, out_j, out_s = [], [], []
    thr = np.float32(threshold)
    for bi in range(0, xa.shape[0], block_size):
        for bj in range(0, xb.shape[0], block_size):
            tile = xa[bi : bi + block_size] @ xb[bj : bj + block_size].T
            ii, jj = np.nonzero(tile >= thr)
            out_i.append(ii + bi)
            out_j.append(jj + bj)
            out_s.append(tile[ii, jj])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def increment_group_pairs(
    pdf: pd.DataFrame,
    *,
    thresholds: list[float],
    max_cluster_size: int,
    seed: int,
    backend: str = "auto",
    block_size: int = 4096,
    fine_margin: float | None = None,
    fine_resplits: int = 0,
) -> pd.DataFrame:
    """The ``applyInPandas`` entry point for a touched coarse group (module docstring):
    rows of :func:`curator_udfs.semantic.fine_cluster_pairs` with ``include_stats``."""
    kind = pdf["kind"]
    members = pdf[kind == "member"].sort_values("sample_id", kind="mergesort")
    members = members.drop_duplicates("sample_id").reset_index(drop=True)
    leaves = pdf[kind == "leaf"].sort_values("leaf", kind="mergesort").reset_index(drop=True)
    params: dict[str, Any] = dict(
        thresholds=thresholds, max_cluster_size=max_cluster_size, seed=seed, backend=backend,
        block_size=block_size, fine_margin=fine_margin, fine_resplits=fine_resplits,
    )  # fmt: skip
    if leaves.empty:  # a group without stored state: split and searched whole
        return fine_cluster_pairs(members, include_stats=True, **params)
    stored = pdf[kind == "stored"]
    known = set(zip(stored["sample_id"], stored["embedding_hash"], strict=True))
    pairs_of = zip(members["sample_id"], members["embedding_hash"], strict=True)
    new = np.fromiter((p not in known for p in pairs_of), dtype=bool, count=len(members))
    names = leaves["leaf"].to_numpy()
    centroids = _stack(leaves["embedding"])
    sizes = pd.to_numeric(leaves["leaf_size"]).fillna(0).to_numpy(dtype=np.int64)
    frames: list[pd.DataFrame] = []
    if new.any():
        ids = members["sample_id"].to_numpy().astype(str)
        x = _stack(members["embedding"])
        sets = _leaf_sets(x, centroids, fine_margin)
        new_idx, old_idx = np.flatnonzero(new), np.flatnonzero(~new)
        sizes = np.bincount(sets[:, 0], minlength=len(names)).astype(np.int64)
        threshold = float(min(thresholds))
        a, b, s, leaf = _new_new(x, ids, new_idx, sets, threshold, block_size)
        for li in np.unique(sets[new_idx]):
            if li < 0:
                continue
            n_in = new_idx[(sets[new_idx] == li).any(axis=1)]
            o_in = old_idx[(sets[old_idx] == li).any(axis=1)]
            if n_in.size == 0 or o_in.size == 0:
                continue
            i, j, sim = _cross_above(x[n_in], x[o_in], threshold, block_size)
            a, b = np.concatenate([a, n_in[i]]), np.concatenate([b, o_in[j]])
            s, leaf = np.concatenate([s, sim]), np.concatenate([leaf, np.full(i.size, li)])
        frames.append(_pair_rows(ids, x, centroids, names, sizes, a, b, s, leaf))
    stats = pd.DataFrame(
        {
            "a": pd.Series([None] * len(leaves), dtype=object),
            "b": pd.Series([None] * len(leaves), dtype=object),
            "similarity": np.nan,
            "cluster": names.astype(object),
            "dist_a": np.nan,
            "dist_b": np.nan,
            "cluster_size": sizes,
            "centroid": pd.Series(list(centroids), dtype=object),
        }
    )
    return pd.concat([*frames, stats], ignore_index=True)


def _new_new(
    x: np.ndarray, ids: np.ndarray, new_idx: np.ndarray, sets: np.ndarray, thr: float, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of new members at or above the threshold, named after a's nearest leaf."""
    i, j, s = pairs_above(ids[new_idx], x[new_idx], thr, block_size=block)
    a, b = new_idx[i], new_idx[j]
    return a, b, s, sets[a, 0]


def _pair_rows(
    ids: np.ndarray,
    x: np.ndarray,
    centroids: np.ndarray,
    names: np.ndarray,
    sizes: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    s: np.ndarray,
    leaf: np.ndarray,
) -> pd.DataFrame:
    """Pair rows (a < b by sample_id), one per pair: the smallest leaf name where found twice."""
    leaf = leaf.astype(np.int64)
    swap = ids[a] > ids[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    c = centroids[leaf]
    df = pd.DataFrame(
        {
            "a": ids[a].astype(object),
            "b": ids[b].astype(object),
            "similarity": s.astype(np.float64),
            "cluster": names[leaf].astype(object),
            "dist_a": np.maximum(1.0 - np.einsum("ij,ij->i", x[a], c), 0.0).astype(np.float64),
            "dist_b": np.maximum(1.0 - np.einsum("ij,ij->i", x[b], c), 0.0).astype(np.float64),
            "cluster_size": sizes[leaf],
        }
    )
    df = df.sort_values(["a", "b", "cluster"], kind="mergesort").drop_duplicates(["a", "b"])
    df["centroid"] = pd.Series([None] * len(df), dtype=object, index=df.index)
    return df.reset_index(drop=True)
