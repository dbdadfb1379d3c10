"""From similar pairs collected on the driver to `duplicates` rows: the dedup job's pandas steps.

The Spark side finds pairs (a < b, similarity, and for semantic pairs the fine cluster and each
member's distance to its centroid) and collects them with the order columns of the samples
involved. What follows is plain pandas, here: one row per pair (:func:`unique_pairs`), the
SemDeDup distance of each sample (:func:`add_centroid_distances`), then
:func:`curator_udfs.resolve.resolve_duplicates` under the method's order with the method, eps
and cluster attached (:func:`resolve_rows`), once per eps for semantic pairs
(:func:`semantic_eps_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from curator_udfs.resolve import DIST_COLUMN, resolve_duplicates

__all__ = [
    "add_centroid_distances",
    "centroid_distances",
    "order_for",
    "resolve_rows",
    "semantic_eps_rows",
    "unique_pairs",
]


def order_for(method: str, keep: str) -> str:
    """The total order a method resolves with: `keep`, but resolution where it is undefined.

    farthest_from_centroid needs a fine centroid, which only semantic pairs have.
    """
    if keep == "farthest_from_centroid" and method != "semantic":
        return "resolution"
    return keep


def unique_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (a, b): highest similarity, then smallest cluster name (deterministic).

    A pair is found once per fine cluster holding both samples (an embedding near a coarse
    border is assigned to two coarse centroids), so the same (a, b) can come several times.
    """
    if pairs.empty:
        return pairs
    out = pairs.sort_values(
        ["a", "b", "similarity", "cluster"], ascending=[True, True, False, True], kind="mergesort"
    )
    return out.drop_duplicates(["a", "b"], keep="first").reset_index(drop=True)


def centroid_distances(pairs: pd.DataFrame) -> pd.DataFrame:
    """sample_id → distance to its fine centroid (first cluster by name if it is in several)."""
    long = pd.concat(
        [
            pairs[["a", "dist_a", "cluster"]].set_axis(
                ["sample_id", DIST_COLUMN, "cluster"], axis=1
            ),
            pairs[["b", "dist_b", "cluster"]].set_axis(
                ["sample_id", DIST_COLUMN, "cluster"], axis=1
            ),
        ],
        ignore_index=True,
    )
    long = long.sort_values(["sample_id", "cluster"], kind="mergesort")
    return long.drop_duplicates("sample_id")[["sample_id", DIST_COLUMN]]


def add_centroid_distances(rank: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """`rank` plus the `dist_to_centroid` column the farthest_from_centroid order sorts by.

    Unchanged when there are no pairs; samples of `rank` in no pair get NaN (ranked worst).
    """
    if pairs.empty:
        return rank
    return rank.merge(centroid_distances(pairs), on="sample_id", how="left")


def resolve_rows(
    pairs: pd.DataFrame, rank: pd.DataFrame, order: str, method: str, eps: float | None
) -> pd.DataFrame:
    """`resolve_duplicates` plus method, eps and the cluster of each (sample, similar_to) pair.

    The cluster is looked up by the pair (min, max) of the two ids, as pairs are stored with
    a < b; without a `cluster` column in `pairs` (perceptual pairs) it is None.
    """
    out = resolve_duplicates(pairs, rank, order=order)
    out["method"] = method
    out["eps"] = eps
    if "cluster" in pairs.columns and not out.empty:
        lo = np.minimum(out["sample_id"].to_numpy(), out["similar_to"].to_numpy())
        hi = np.maximum(out["sample_id"].to_numpy(), out["similar_to"].to_numpy())
        look = pairs.set_index(["a", "b"])["cluster"]
        out["cluster"] = look.reindex(pd.MultiIndex.from_arrays([lo, hi])).to_numpy()
    else:
        out["cluster"] = None
    return out


def semantic_eps_rows(
    pairs: pd.DataFrame,
    rank: pd.DataFrame,
    order: str,
    eps_values: Sequence[float],
    removed: dict[str, int] | None = None,
) -> pd.DataFrame:
    """The semantic `duplicates` rows of every eps, from pairs found at the lowest threshold.

    Pairs with similarity >= 1 - eps (compared in float32, the similarity's precision when it
    was computed) are resolved independently per eps; `removed` gets each eps's row count.
    """
    frames = []
    for eps in eps_values:
        sel = pairs[pairs["similarity"].to_numpy(np.float32) >= np.float32(1.0 - eps)]
        out = resolve_rows(sel, rank, order, "semantic", float(eps))
        if removed is not None:
            removed[f"semantic eps={eps:g}"] = len(out)
        frames.append(out)
    return pd.concat(frames, ignore_index=True)
