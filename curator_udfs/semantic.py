"""Per-partition semantic dedup stage: fine k-means under a size bound, then blocked pairs.

The Spark job groups embeddings by coarse centroid and calls :func:`fine_cluster_pairs` inside
``applyInPandas``. Each coarse group is split by k-means with ``k = ceil(n / max_cluster_size)``;
any fine cluster still above the bound is split again (recursively). If k-means makes no
progress (degenerate data) the cluster is cut at quantiles of its projection on the principal
direction, which always succeeds unless every member is the same vector. Such an unsplittable
cluster (all members within 1e-6 cosine distance of the centroid, e.g. identical embeddings) is
kept whole: it is the only case that may exceed the bound, ``pairs_above`` still bounds memory
by blocking, but its output holds all n(n-1)/2 pairs. The dedup job groups bit-identical
embeddings before this stage (spark_jobs.dedup_semantic: one representative per vector), so
only distinct vectors this close to each other can still form such a cluster. Then
``pairs_above`` at the lowest threshold runs inside each fine cluster.

Borders: with ``fine_margin``, a k-means split also puts a row into its second-nearest child
when ``cos_nearest - cos_second < fine_margin`` (the coarse stage's rule, one level down), so
a near-duplicate pair cut by a fine border is still compared in one of the two children. Fine
clusters then overlap; a pair found in both comes out twice (the job keeps one per (a, b)).
A split keeps at most a quarter of its rows' second assignments (those closest to the border),
so overlap grows a split's input by at most 25 %; one whose overlapping children would not be
smaller than their parent drops them, so the recursion always makes progress.
Where the cap binds a split loses pairs (in one dense coarse group of a 300k run, one split
kept 0.90 of them; README); with ``fine_resplits`` a group whose split tree hit the cap anywhere
is split again, whole, with other seeds, and the union of the splits' fine clusters is searched:
a pair cut by one split's borders is rarely cut by every split's (0.900 / 0.983 / 0.998 of that
group's pairs with 1 / 2 / 3 splits). At 300k the cap bound in about a third of all splits, so
about half the groups are split twice (recall 0.9987 -> 0.9997 for 33 % more time, README).

Determinism: members are sorted by sample_id before anything else and every k-means fit gets a
seed derived from (seed, split number, coarse, position in the split tree), so the output is
identical for a fixed seed whatever the input row order.

Stats for the job summary and the incremental state: :func:`fine_clusters` returns
``(pairs, stats)`` with one stats row per fine cluster (``cluster``, ``size``, ``centroid``: the
normalised member mean, which an incremental run assigns new members by,
curator_udfs.fine_increment). Inside ``applyInPandas`` (one output schema) call
``fine_cluster_pairs(..., include_stats=True)``: every row then has ``cluster_size`` and
``centroid`` columns, and one extra row per fine cluster has ``a = b = None``, ``similarity =
NaN`` and its centroid (filter on ``a IS NULL`` for stats, ``a IS NOT NULL`` for pairs).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from curator_udfs.kmeans import KMeansBackend, assign, l2_normalise, select_backend
from curator_udfs.similarity import pairs_above

__all__ = [
    "PAIR_COLUMNS",
    "STATS_COLUMNS",
    "coarse_group_splits",
    "fine_cluster_pairs",
    "fine_clusters",
    "split_bounded",
]

PAIR_COLUMNS = ["a", "b", "similarity", "cluster", "dist_a", "dist_b"]
STATS_COLUMNS = ["cluster", "size", "centroid"]
_SAME_POINT = 1e-6  # max 1 - cos to the centroid for a cluster to count as one point
_MAX_ITER = 20
_MAX_KMEANS_DEPTH = 32  # below this many nested k-means splits, cut by projection instead
_MAX_OVERLAP = 0.25  # fine_margin: second assignments per split, at most this share of its rows


def _sub_seed(seed: int, *parts: object) -> int:
    key = "/".join(str(p) for p in (seed, *parts)).encode()
    return zlib.crc32(key) & 0x7FFFFFFF


def _centroid(x: np.ndarray) -> np.ndarray:
    return l2_normalise(x.mean(axis=0, keepdims=True))[0]


def _projection_split(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Labels cutting ``x`` into ``k`` near-equal parts along its principal direction."""
    xc = x - x.mean(axis=0, keepdims=True)
    v = np.random.default_rng(seed).standard_normal(int(x.shape[1])).astype(np.float32)
    for _ in range(8):  # power iteration on the covariance, never forming it
        v = xc.T @ (xc @ v)
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            break
        v /= norm
    order = np.argsort(xc @ v, kind="stable")
    labels = np.empty(x.shape[0], dtype=np.int64)
    labels[order] = np.arange(x.shape[0]) * k // x.shape[0]
    return labels


def _cap_overlap(second: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, bool]:
    """``second`` with at most ``_MAX_OVERLAP`` x n second assignments kept, the rows closest
    to the border first (smallest margin): bounds how much a split can grow its input. The flag
    says whether the cap dropped any (the split lost border rows it wanted to share)."""
    extra = np.flatnonzero(second >= 0)
    cap = int(_MAX_OVERLAP * second.shape[0])
    if extra.size <= cap:
        return second, False
    keep = extra[np.argsort(margin[extra], kind="stable")[:cap]]
    out = np.full_like(second, -1)
    out[keep] = second[keep]
    return out, True


def split_bounded(
    x: np.ndarray,
    max_cluster_size: int,
    *,
    backend: KMeansBackend,
    seed: int,
    path: tuple[int, ...] = (),
    fine_margin: float | None = None,
    salt: str = "",
) -> list[np.ndarray]:
    """Split rows of unit vectors ``x`` into index groups of size <= ``max_cluster_size``.

    Groups come in a deterministic order (depth-first over the split tree, children by
    centroid index); each group's indices are ascending. See the module docstring for the
    one exception to the bound (a cluster of identical vectors) and for ``fine_margin``
    (groups may overlap near the borders of a k-means split). A non-empty ``salt`` gives
    every k-means fit of the tree other seeds (an independent split of the same rows).
    """
    return _split_tree(x, max_cluster_size, backend, seed, path, fine_margin, salt)[0]


def _split_tree(
    x: np.ndarray,
    max_cluster_size: int,
    backend: KMeansBackend,
    seed: int,
    path: tuple[int, ...],
    fine_margin: float | None,
    salt: str,
) -> tuple[list[np.ndarray], bool]:
    """:func:`split_bounded`'s groups, and whether the overlap cap bound in any split."""
    n = x.shape[0]
    if n <= max_cluster_size:
        return [np.arange(n)], False
    c = _centroid(x)
    if float(np.max(1.0 - x @ c)) <= _SAME_POINT:
        return [np.arange(n)], False
    k = math.ceil(n / max_cluster_size)
    sub_seed = _sub_seed(seed, *path) if not salt else _sub_seed(seed, salt, *path)
    centroids = backend.fit(x, k, seed=sub_seed, max_iter=_MAX_ITER)
    # float32 products: a split always sees the whole group (sorted), so the result is stable
    labels, second, margin = assign(x, centroids, second_margin=fine_margin, precise=False)
    if np.unique(labels).size < 2 or len(path) > _MAX_KMEANS_DEPTH:
        labels = _projection_split(x, k, sub_seed)
        second = np.full(n, -1, dtype=np.int64)
    second, capped = _cap_overlap(second, margin)
    children = [
        np.union1d(np.flatnonzero(labels == label), np.flatnonzero(second == label))
        for label in np.unique(labels)
    ]
    if max(c.size for c in children) >= n:  # the overlap would stall the split
        children = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    groups: list[np.ndarray] = []
    for label, idx in zip(np.unique(labels), children, strict=True):
        sub_groups, sub_capped = _split_tree(
            x[idx], max_cluster_size, backend, seed, (*path, int(label)), fine_margin, salt
        )
        capped = capped or sub_capped
        groups.extend(idx[sub] for sub in sub_groups)
    return groups, capped


def coarse_group_splits(
    x: np.ndarray,
    max_cluster_size: int,
    *,
    backend: KMeansBackend,
    seed: int,
    coarse: int,
    fine_margin: float | None = None,
    resplits: int = 0,
) -> list[np.ndarray]:
    """The fine clusters of one coarse group: its bounded split, then, if the overlap cap bound
    anywhere in that split, up to ``resplits`` more independently seeded splits of the whole
    group (module docstring: a dense group's pairs cut by one split's borders are rarely cut by
    every split's)."""
    groups, capped = _split_tree(x, max_cluster_size, backend, seed, (coarse,), fine_margin, "")
    if capped:
        for r in range(1, resplits + 1):
            groups += split_bounded(
                x, max_cluster_size, backend=backend, seed=seed, path=(coarse,),
                fine_margin=fine_margin, salt=f"resplit{r}",
            )  # fmt: skip
    return groups


def _prepare(pdf: pd.DataFrame) -> pd.DataFrame:
    missing = {"sample_id", "embedding", "coarse"} - set(pdf.columns)
    if missing:
        raise ValueError(
            f"fine_cluster_pairs needs columns sample_id, embedding, coarse: {missing}"
        )
    df = pdf[["sample_id", "embedding", "coarse"]].copy()
    df["sample_id"] = df["sample_id"].astype(str)
    df = df.sort_values(["coarse", "sample_id"], kind="mergesort")
    return df.drop_duplicates(["coarse", "sample_id"], keep="first").reset_index(drop=True)


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": pd.Series([], dtype=object),
            "b": pd.Series([], dtype=object),
            "similarity": pd.Series([], dtype="float64"),
            "cluster": pd.Series([], dtype=object),
            "dist_a": pd.Series([], dtype="float64"),
            "dist_b": pd.Series([], dtype="float64"),
        }
    )


def _stats_frame(names: list[str], sizes: list[int], centres: list[np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cluster": pd.Series(names, dtype=object),
            "size": np.asarray(sizes, dtype=np.int64),
            "centroid": pd.Series(centres, dtype=object),
        }
    )


def fine_clusters(
    pdf: pd.DataFrame,
    *,
    thresholds: list[float],
    max_cluster_size: int,
    seed: int,
    backend: str = "auto",
    block_size: int = 4096,
    fine_margin: float | None = None,
    fine_resplits: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs at or above ``min(thresholds)`` inside bounded fine clusters, plus stats.

    With ``fine_margin`` the fine clusters overlap at their borders (module docstring): a
    pair may then come once per cluster holding both; so may it with ``fine_resplits``.

    Returns ``(pairs, stats)``: ``pairs`` has :data:`PAIR_COLUMNS` (``a < b`` by sample_id,
    sorted by cluster then a, b; ``dist_*`` = 1 - cos to the fine cluster's centroid, the
    normalised member mean), ``stats`` has :data:`STATS_COLUMNS`, one row per fine cluster.
    Cluster names are ``f"{coarse}-{fine}"``.
    """
    if not thresholds:
        raise ValueError("thresholds must not be empty")
    if max_cluster_size < 2:
        raise ValueError(f"max_cluster_size must be >= 2, got {max_cluster_size}")
    threshold = float(min(thresholds))
    df = _prepare(pdf)
    if df.empty:
        return _empty_pairs(), _stats_frame([], [], [])
    km = select_backend(backend)
    frames: list[pd.DataFrame] = []
    names: list[str] = []
    sizes: list[int] = []
    centres: list[np.ndarray] = []
    for coarse, part in df.groupby("coarse", sort=True):
        ids = part["sample_id"].to_numpy()
        x = l2_normalise(np.stack([np.asarray(e, dtype=np.float32) for e in part["embedding"]]))
        groups = coarse_group_splits(
            x, max_cluster_size, backend=km, seed=seed, coarse=int(coarse),
            fine_margin=fine_margin, resplits=fine_resplits,
        )  # fmt: skip
        for fine, idx in enumerate(groups):
            name = f"{coarse}-{fine}"
            names.append(name)
            sizes.append(int(idx.size))
            xs = x[idx]
            centres.append(_centroid(xs))
            if idx.size < 2:
                continue
            i, j, s = pairs_above(ids[idx], xs, threshold, block_size=block_size)
            if i.size == 0:
                continue
            dist = np.maximum(1.0 - xs @ centres[-1], 0.0).astype(np.float64)
            frames.append(
                pd.DataFrame(
                    {
                        "a": ids[idx][i],
                        "b": ids[idx][j],
                        "similarity": s.astype(np.float64),
                        "cluster": name,
                        "dist_a": dist[i],
                        "dist_b": dist[j],
                    }
                )
            )
    pairs = pd.concat(frames, ignore_index=True) if frames else _empty_pairs()
    return pairs, _stats_frame(names, sizes, centres)


def fine_cluster_pairs(
    pdf: pd.DataFrame, *, include_stats: bool = False, **params: Any
) -> pd.DataFrame:
    """The ``applyInPandas`` entry point: pairs for one coarse group (see :func:`fine_clusters`,
    which takes ``params``: thresholds, max_cluster_size, seed, backend, block_size,
    fine_margin, fine_resplits).

    Input columns ``sample_id`` (str), ``embedding`` (float sequence), ``coarse`` (int).
    Output columns :data:`PAIR_COLUMNS`; with ``include_stats`` also ``cluster_size`` and one
    stats row per fine cluster with null ``a``/``b`` (module docstring).
    """
    pairs, stats = fine_clusters(pdf, **params)
    if not include_stats:
        return pairs
    size_of = dict(zip(stats["cluster"], stats["size"], strict=True))
    pairs = pairs.assign(cluster_size=pairs["cluster"].map(size_of).astype("int64"))
    stat_rows = pd.DataFrame(
        {
            "a": pd.Series([None] * len(stats), dtype=object),
            "b": pd.Series([None] * len(stats), dtype=object),
            "similarity": np.nan,
            "cluster": stats["cluster"].astype(object),
            "dist_a": np.nan,
            "dist_b": np.nan,
            "cluster_size": stats["size"].astype("int64"),
            "centroid": stats["centroid"],
        }
    )
    pairs = pairs.assign(centroid=pd.Series([None] * len(pairs), dtype=object))
    return pd.concat([pairs, stat_rows], ignore_index=True)
