"""Turn similar pairs into duplicate decisions under a total order over samples.

Rule (design, dedup step e): a sample is a duplicate if a better-ranked sample is similar to
it. ``similar_to`` is its best-ranked similar partner; ``duplicate_of`` follows ``similar_to``
pointers until it reaches a kept sample, so it always names a sample that stays.

The dedup job resolves in Spark (spark_jobs.dedup_resolve) with the order of :func:`sort_spec`;
:func:`resolve_duplicates` is the same rule in pandas/numpy (vectorised, pointer jumping for
the chains), the reference the job's results are checked against and a helper for small sets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "DIST_COLUMN",
    "ORDERS",
    "order_for",
    "rank_order",
    "resolve_duplicates",
    "sort_spec",
]

DIST_COLUMN = "dist_to_centroid"

# order -> (column, higher_is_better) in priority order; sample_id ascending always breaks ties.
ORDERS: dict[str, tuple[tuple[str, bool], ...]] = {
    "aesthetic": (("aesthetic_score", True),),
    "resolution": (("pixels", True),),
    "farthest_from_centroid": ((DIST_COLUMN, True),),
}


def order_for(method: str, keep: str) -> str:
    """The total order a method resolves with: `keep`, but resolution where it is undefined.

    farthest_from_centroid needs a fine centroid, which only semantic pairs have.
    """
    if keep == "farthest_from_centroid" and method != "semantic":
        return "resolution"
    return keep


def sort_spec(order: str) -> list[tuple[str, bool]]:
    """``[(column, ascending), ...]`` for the total order, best first, ending with sample_id.

    ``pixels`` means ``width * height``. Nulls sort last (worst) for every key, so the Spark
    job can build ``F.col(c).asc_nulls_last()`` / ``desc_nulls_last()`` from this list and
    get exactly the order ``rank_order`` uses.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown dedup order {order!r}: use one of {sorted(ORDERS)}")
    return [(col, not higher) for col, higher in ORDERS[order]] + [("sample_id", True)]


def _key_frame(df: pd.DataFrame, order: str) -> pd.DataFrame:
    keys = pd.DataFrame({"sample_id": df["sample_id"].astype(str).to_numpy()}, index=df.index)
    for col, _ in ORDERS[order]:
        if col == "pixels":
            missing = {"width", "height"} - set(df.columns)
            if missing:
                raise ValueError(
                    f"order 'resolution' needs columns width, height; missing {missing}"
                )
            w = pd.to_numeric(df["width"], errors="coerce").astype("float64")
            h = pd.to_numeric(df["height"], errors="coerce").astype("float64")
            keys[col] = w * h
        else:
            if col not in df.columns:
                raise ValueError(f"order {order!r} needs column {col!r}")
            keys[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return keys


def rank_order(df: pd.DataFrame, order: str) -> pd.Series:
    """Rank of each row under the total order (0 = best), aligned with ``df.index``.

    "aesthetic": higher ``aesthetic_score`` first; "resolution": larger ``width * height``
    first; "farthest_from_centroid": larger ``dist_to_centroid`` first (SemDeDup keeps the
    sample farthest from its cluster centroid). Nulls/NaN are worst; ties by ``sample_id``
    ascending. Rows with the same sample_id get distinct ranks (first one wins ties).
    """
    spec = sort_spec(order)
    keys = _key_frame(df, order)
    cols = [c for c, _ in spec]
    asc = [a for _, a in spec]
    pos = np.arange(len(keys))
    keys = keys.assign(_pos=pos)
    ordered = keys.sort_values(
        cols + ["_pos"], ascending=asc + [True], na_position="last", kind="mergesort"
    )
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[ordered["_pos"].to_numpy()] = np.arange(len(keys), dtype=np.int64)
    return pd.Series(ranks, index=df.index, name="rank")


_EMPTY = {
    "sample_id": pd.Series([], dtype=object),
    "duplicate_of": pd.Series([], dtype=object),
    "similar_to": pd.Series([], dtype=object),
    "similarity": pd.Series([], dtype="float64"),
}


def resolve_duplicates(pairs: pd.DataFrame, rank: pd.DataFrame, *, order: str) -> pd.DataFrame:
    """Duplicates implied by similar ``pairs`` (a, b, similarity) under the ``order``.

    ``rank`` holds one row per sample_id with the columns the order needs (see
    :func:`rank_order`). Samples in ``pairs`` but missing from ``rank`` count as worst-ranked
    (among themselves by sample_id). Repeated pairs (either orientation) are fine: the highest
    similarity is kept. Returns one row per duplicate, sorted by sample_id, with columns
    ``sample_id, duplicate_of, similar_to, similarity``.
    """
    if pairs.empty:
        return pd.DataFrame(_EMPTY)
    a = pairs["a"].astype(str).to_numpy()
    b = pairs["b"].astype(str).to_numpy()
    sim = pairs["similarity"].to_numpy(dtype=np.float64)
    not_self = a != b
    a, b, sim = a[not_self], b[not_self], sim[not_self]
    if a.size == 0:
        return pd.DataFrame(_EMPTY)

    # Global rank for every id in the pairs: ranked ids first, then unranked ids by sample_id.
    rank = rank.drop_duplicates("sample_id", keep="first")
    r = rank_order(rank, order)
    ranked_ids = rank["sample_id"].astype(str).to_numpy()[np.argsort(r.to_numpy())]
    ranked = pd.Index(ranked_ids)
    involved = pd.Index(pd.unique(np.concatenate([a, b])))
    unranked = np.sort(involved.difference(ranked).to_numpy().astype(str))
    all_ids = pd.Index(np.concatenate([ranked_ids, unranked]).astype(object))  # pos = rank
    ra = all_ids.get_indexer(a)
    rb = all_ids.get_indexer(b)
    all_ids = all_ids.to_numpy()

    # Orient each pair as (worse, better); the worse one is a duplicate.
    worse = np.maximum(ra, rb)
    better = np.minimum(ra, rb)
    # Best partner per duplicate: smallest better-rank, then highest similarity.
    order_idx = np.lexsort((-sim, better, worse))
    worse, better, sim = worse[order_idx], better[order_idx], sim[order_idx]
    first = np.ones(worse.size, dtype=bool)
    first[1:] = worse[1:] != worse[:-1]
    dup, partner, dup_sim = worse[first], better[first], sim[first]

    # Pointer jumping over compact node ids: parent has strictly smaller rank, so no cycles.
    nodes = np.unique(np.concatenate([dup, partner]))  # sorted by rank
    parent = np.arange(nodes.size)
    dup_node = np.searchsorted(nodes, dup)
    parent[dup_node] = np.searchsorted(nodes, partner)
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    root = nodes[parent[dup_node]]

    out = pd.DataFrame(
        {
            "sample_id": all_ids[dup],
            "duplicate_of": all_ids[root],
            "similar_to": all_ids[partner],
            "similarity": dup_sim,
        }
    )
    return out.sort_values("sample_id", kind="mergesort").reset_index(drop=True)
